//! Hugging Face parquet datasets (e.g. parquet copies of VTAB-1k).
//!
//! The files of a split are looked for, in this order, under the task folder `<root>/<task>/` (task folder
//! aliases as in [`crate::noah::task_aliases`]):
//!
//! ```text
//! <root>/<task>/data/<split>-*.parquet      the Hugging Face hub layout (data/train-00000-of-00002.parquet)
//! <root>/<task>/data/<split>.parquet
//! <root>/<task>/<split>-*.parquet
//! <root>/<task>/<split>.parquet
//! <root>/<task>/<split>/*.parquet
//! ```
//!
//! The first pattern that matches wins; its files are read in sorted order. Two columns are read (names
//! configurable with [`ParquetColumns`], default `image` and `label`):
//!
//! * image: the Hugging Face `Image` feature, a struct `{bytes: binary, path: string}` whose `bytes` hold
//!   the encoded file (PNG/JPEG/...), or a plain binary column of encoded bytes;
//! * label: any integer type (Hugging Face `ClassLabel` is int64), non-negative, no nulls.
//!
//! A missing column is an error listing the columns that are present. Encoded bytes are kept in memory
//! ([`ImageSource::Encoded`], origin `"<file> row <n>"`, `n` counted from 0 within the file) and decoded
//! when a batch is loaded. `num_classes` is the value passed in, else the VTAB-1k class count of the
//! task if it is one, else the largest label + 1.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use ::parquet::arrow::ProjectionMask;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use serde::{Deserialize, Serialize};

use crate::error::VTAB_HINT;
use crate::noah::{canonical_task, task_aliases, vtab_num_classes};
use crate::{DataError, ImageDataset, ImageSource};

/// Names of the image and label columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetColumns {
    pub image_column: String,
    pub label_column: String,
}

impl Default for ParquetColumns {
    fn default() -> Self {
        ParquetColumns {
            image_column: "image".to_string(),
            label_column: "label".to_string(),
        }
    }
}

fn sorted_parquet_files(dir: &Path, prefix: Option<&str>) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                return false;
            };
            name.ends_with(".parquet") && prefix.is_none_or(|pre| name.starts_with(pre))
        })
        .collect();
    files.sort();
    files
}

/// The parquet files of `split` of `task` (see the module docs for the patterns tried).
pub fn find_split_files(root: &Path, task: &str, split: &str) -> Result<Vec<PathBuf>, DataError> {
    let mut looked = Vec::new();
    for alias in task_aliases(task) {
        let dir = root.join(&alias);
        if !dir.is_dir() {
            looked.push(dir);
            continue;
        }
        let data = dir.join("data");
        let dash = format!("{split}-");
        let candidates: [(PathBuf, Vec<PathBuf>); 5] = [
            (
                data.join(format!("{split}-*.parquet")),
                sorted_parquet_files(&data, Some(&dash)),
            ),
            (
                data.join(format!("{split}.parquet")),
                exact(&data.join(format!("{split}.parquet"))),
            ),
            (
                dir.join(format!("{split}-*.parquet")),
                sorted_parquet_files(&dir, Some(&dash)),
            ),
            (
                dir.join(format!("{split}.parquet")),
                exact(&dir.join(format!("{split}.parquet"))),
            ),
            (
                dir.join(split).join("*.parquet"),
                sorted_parquet_files(&dir.join(split), None),
            ),
        ];
        for (pattern, files) in candidates {
            if !files.is_empty() {
                return Ok(files);
            }
            looked.push(pattern);
        }
    }
    Err(DataError::MissingDataset {
        looked_in: looked,
        hint: VTAB_HINT.to_string(),
    })
}

fn exact(p: &Path) -> Vec<PathBuf> {
    if p.is_file() {
        vec![p.to_path_buf()]
    } else {
        Vec::new()
    }
}

/// Lists one split of a parquet dataset found under `<root>/<task>/`.
pub fn load_split(
    root: &Path,
    task: &str,
    split: &str,
    columns: &ParquetColumns,
    num_classes: Option<usize>,
) -> Result<ImageDataset, DataError> {
    let files = find_split_files(root, task, split)?;
    let canon = canonical_task(task).unwrap_or(task);
    load_files(
        &format!("parquet/{canon}/{split}"),
        &files,
        columns,
        num_classes.or_else(|| vtab_num_classes(task)),
    )
}

/// Reads the given parquet files (in the given order) into one dataset named `name`.
pub fn load_files(
    name: &str,
    files: &[PathBuf],
    columns: &ParquetColumns,
    num_classes: Option<usize>,
) -> Result<ImageDataset, DataError> {
    let mut items = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        read_file(f, columns, &mut items, &mut labels)?;
    }
    if items.is_empty() {
        return Err(DataError::EmptyDataset {
            origin: files
                .first()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| name.to_string()),
        });
    }
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    let ds = ImageDataset {
        name: name.to_string(),
        items,
        labels,
        num_classes: num_classes.unwrap_or(max + 1),
    };
    ds.check_labels()?;
    Ok(ds)
}

fn read_file(
    path: &Path,
    columns: &ParquetColumns,
    items: &mut Vec<ImageSource>,
    labels: &mut Vec<u32>,
) -> Result<(), DataError> {
    let err = |reason: String| DataError::Parquet {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(e.to_string()))?;
    let schema = builder.schema().clone();
    let available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let find = |column: &str| {
        available
            .iter()
            .position(|c| c == column)
            .ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_string(),
                available: available.clone(),
            })
    };
    let image_idx = find(&columns.image_column)?;
    let label_idx = find(&columns.label_column)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [image_idx, label_idx]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(1024)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let image = batch.column_by_name(&columns.image_column).ok_or_else(|| {
            err(format!(
                "column {:?} missing from a record batch",
                columns.image_column
            ))
        })?;
        let label = batch.column_by_name(&columns.label_column).ok_or_else(|| {
            err(format!(
                "column {:?} missing from a record batch",
                columns.label_column
            ))
        })?;

        // Encoded bytes: struct {bytes, path} or plain binary.
        let (bytes_col, struct_nulls) = match image.data_type() {
            DataType::Struct(_) => {
                let s = image.as_struct();
                let b = s.column_by_name("bytes").ok_or_else(|| {
                    err(format!(
                        "image column {:?} is a struct without a `bytes` field (fields: {:?})",
                        columns.image_column,
                        s.column_names()
                    ))
                })?;
                (b.clone(), s.nulls().cloned())
            }
            _ => (image.clone(), None),
        };
        let bytes_col = arrow::compute::cast(&bytes_col, &DataType::LargeBinary).map_err(|e| {
            err(format!(
                "image column {:?} of type {} does not hold encoded image bytes: {e}",
                columns.image_column,
                bytes_col.data_type()
            ))
        })?;
        let bytes_col = bytes_col.as_binary::<i64>();
        let label_col = arrow::compute::cast(label, &DataType::Int64).map_err(|e| {
            err(format!(
                "label column {:?} of type {} is not an integer: {e}",
                columns.label_column,
                label.data_type()
            ))
        })?;
        if !matches!(
            label.data_type(),
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
        ) {
            return Err(err(format!(
                "label column {:?} has type {}, expected an integer type",
                columns.label_column,
                label.data_type()
            )));
        }
        let label_col = label_col.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let origin = format!("{} row {}", path.display(), row);
            if struct_nulls.as_ref().is_some_and(|n| n.is_null(i)) || bytes_col.is_null(i) {
                return Err(DataError::CorruptImage {
                    origin,
                    reason: "image bytes are null".to_string(),
                });
            }
            if label_col.is_null(i) {
                return Err(DataError::BadLabel {
                    origin,
                    reason: "label is null".to_string(),
                });
            }
            let l = label_col.value(i);
            let l = u32::try_from(l).map_err(|_| DataError::BadLabel {
                origin: origin.clone(),
                reason: format!("label {l} out of range"),
            })?;
            items.push(ImageSource::Encoded {
                origin,
                bytes: Arc::from(bytes_col.value(i)),
            });
            labels.push(l);
            row += 1;
        }
    }
    Ok(())
}
