//! Hugging Face parquet copies of the audio datasets: an audio column holding the `Audio` feature (a
//! struct `{bytes, path}` of the encoded file) and an integer label column, `audio` and `label` unless
//! the task names others. Files are found and read by the same code as image parquet datasets
//! ([`peftbench_data_vision::parquet`]: `<root>/<task>/data/<split>-*.parquet` and the other layouts
//! listed there); the bytes are decoded as audio.
//!
//! Cross-validated copies ([`load_fold_split`]) publish every clip as one `train` split with an integer
//! fold column (the ESC-50 copy: `target` and `fold` 1 to 5; the UrbanSound8K copy: `classID` and
//! `fold` 1 to 10). Their files are those of split `train`; split `train` of a run is every row of the
//! other folds, `test` the rows of the held-out fold, as the folder readers ([`super::esc50`],
//! [`super::urbansound`]) do.

use std::fs::File;
use std::path::{Path, PathBuf};

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use ::parquet::arrow::ProjectionMask;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use peftbench_data_vision::parquet::{find_split_files, load_files};
use peftbench_data_vision::{DataError, ImageDataset, ImageSource, ParquetColumns};

use super::{fold_side, AudioDataset, FoldSide};
use crate::{AudioError, AudioSource};

const HINT: &str = "hint: put the parquet files of a Hugging Face copy under <data-dir>/<task>/data/ \
(e.g. data/train-00000-of-00002.parquet), and name its columns in the task when they are not `audio` \
and `label` (`columns: { label: target, fold: fold }` for the ESC-50 copy).";

/// Split `split` of task `task` under `root`, reading columns `audio_column` and `label_column`.
pub fn load_split(
    root: &Path,
    task: &str,
    split: &str,
    audio_column: &str,
    label_column: &str,
    num_classes: Option<usize>,
) -> Result<AudioDataset, AudioError> {
    let convert = converter(root, task);
    let files = find_split_files(root, task, split).map_err(&convert)?;
    let ds = load_files(
        &format!("parquet/{task}/{split}"),
        &files,
        &parquet_columns(audio_column, label_column),
        num_classes,
    )
    .map_err(&convert)?;
    audio_dataset(root, task, ds)
}

/// The fold column of a cross-validated parquet copy and the fold a run holds out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folds<'a> {
    /// The integer column holding each clip's fold (`fold` in the Hugging Face copies).
    pub column: &'a str,
    /// The held-out fold, 1-based.
    pub held_out: u32,
    /// How many folds there are: every row's fold must be one of `1..=count`.
    pub count: u32,
}

/// Split `train` (every fold but `folds.held_out`) or `test` (the held-out fold) of a cross-validated
/// copy of task `task` under `root`: the files of split `train`, columns `audio_column`,
/// `label_column` and `folds.column`. A fold outside `1..=folds.count` is an error naming the file and
/// row. `num_classes`: the value given, else the largest label over every fold plus one.
pub fn load_fold_split(
    root: &Path,
    task: &str,
    split: &str,
    audio_column: &str,
    label_column: &str,
    folds: Folds<'_>,
    num_classes: Option<usize>,
) -> Result<AudioDataset, AudioError> {
    let convert = converter(root, task);
    let files = find_split_files(root, task, "train").map_err(&convert)?;
    let side = fold_side(split, &root.join(task))?;
    if !(1..=folds.count).contains(&folds.held_out) {
        return Err(AudioError::InvalidSettings(format!(
            "task {task} has folds 1 to {}, not {}",
            folds.count, folds.held_out
        )));
    }
    // First the small integer columns of every file: which rows this split keeps, and the labels
    // of every fold (so that all folds and splits agree on the number of classes).
    let mut kept: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    let mut largest_label = None;
    for file in &files {
        let [labels, row_folds] = read_int_columns(file, [label_column, folds.column])?;
        let mut rows = Vec::new();
        for (row, (&label, &fold)) in labels.iter().zip(&row_folds).enumerate() {
            let bad = |reason: String| AudioError::Parquet {
                path: file.clone(),
                reason: format!("row {row}: {reason}"),
            };
            let fold =
                fold.ok_or_else(|| bad(format!("fold column {:?} is null", folds.column)))?;
            if !(1..=i64::from(folds.count)).contains(&fold) {
                return Err(bad(format!(
                    "fold {fold} in column {:?} is not one of 1 to {} (`protocol.folds`)",
                    folds.column, folds.count
                )));
            }
            if let Some(label) = label {
                largest_label = largest_label.max(Some(label));
            }
            if (fold == i64::from(folds.held_out)) == (side == FoldSide::Test) {
                rows.push(row);
            }
        }
        if !rows.is_empty() {
            kept.push((file.clone(), rows));
        }
    }
    let num_classes = num_classes.or(largest_label.map(|l| l.max(0) as usize + 1));
    let name = format!("parquet/{task}/fold{}/{split}", folds.held_out);
    let mut ds = AudioDataset {
        name: name.clone(),
        items: Vec::new(),
        labels: Vec::new(),
        num_classes: num_classes.unwrap_or(0),
        class_names: Vec::new(),
    };
    // Then the clips, one file at a time, keeping the selected rows only.
    for (file, rows) in kept {
        let part = load_files(
            &name,
            std::slice::from_ref(&file),
            &parquet_columns(audio_column, label_column),
            num_classes,
        )
        .map_err(&convert)?;
        let part = audio_dataset(root, task, part)?;
        let mut items: Vec<Option<AudioSource>> = part.items.into_iter().map(Some).collect();
        for row in rows {
            let item =
                items
                    .get_mut(row)
                    .and_then(Option::take)
                    .ok_or_else(|| AudioError::Parquet {
                        path: file.clone(),
                        reason: format!("row {row} of the fold column has no audio row"),
                    })?;
            ds.items.push(item);
            ds.labels.push(part.labels[row]);
        }
    }
    ds.non_empty()
}

fn parquet_columns(audio_column: &str, label_column: &str) -> ParquetColumns {
    ParquetColumns {
        image_column: audio_column.to_string(),
        label_column: label_column.to_string(),
    }
}

fn converter(root: &Path, task: &str) -> impl Fn(DataError) -> AudioError {
    let path = root.join(task);
    move |e: DataError| match e {
        DataError::MissingDataset { looked_in, .. } => AudioError::MissingDataset {
            looked_in,
            hint: HINT.to_string(),
        },
        other => AudioError::Parquet {
            path: path.clone(),
            reason: other.to_string(),
        },
    }
}

/// The image reader's dataset as clips: every item must be encoded bytes.
fn audio_dataset(root: &Path, task: &str, ds: ImageDataset) -> Result<AudioDataset, AudioError> {
    let items = ds
        .items
        .into_iter()
        .map(|item| match item {
            ImageSource::Encoded { origin, bytes } => Ok(AudioSource::Encoded {
                origin,
                bytes,
                ext: None,
            }),
            other => Err(AudioError::Parquet {
                path: root.join(task),
                reason: format!("{} is not encoded bytes", other.origin()),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AudioDataset {
        name: ds.name,
        items,
        labels: ds.labels,
        num_classes: ds.num_classes,
        class_names: Vec::new(),
    })
}

/// The values of integer columns `names` of one parquet file, row by row (`None`: null). A missing
/// column is an error listing the columns present.
fn read_int_columns<const N: usize>(
    path: &Path,
    names: [&str; N],
) -> Result<[Vec<Option<i64>>; N], AudioError> {
    let err = |reason: String| AudioError::Parquet {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(e.to_string()))?;
    let available: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut indices = Vec::with_capacity(N);
    for name in names {
        indices.push(available.iter().position(|c| c == name).ok_or_else(|| {
            err(format!(
                "no column {name:?} (columns: {})",
                available.join(", ")
            ))
        })?);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut out: [Vec<Option<i64>>; N] = std::array::from_fn(|_| Vec::new());
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        for (values, name) in out.iter_mut().zip(names) {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| err(format!("column {name:?} missing from a record batch")))?;
            if !column.data_type().is_integer() {
                return Err(err(format!(
                    "column {name:?} has type {}, expected an integer type",
                    column.data_type()
                )));
            }
            let column = arrow::compute::cast(column, &DataType::Int64)
                .map_err(|e| err(format!("column {name:?}: {e}")))?;
            let column = column.as_primitive::<Int64Type>();
            values.extend((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i))));
        }
    }
    Ok(out)
}
