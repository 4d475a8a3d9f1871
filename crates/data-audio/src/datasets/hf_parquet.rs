//! Hugging Face parquet copies of the audio datasets: an `audio` column holding the `Audio` feature (a
//! struct `{bytes, path}` of the encoded file) and an integer `label` column. Files are found and read by
//! the same code as image parquet datasets ([`peftbench_data_vision::parquet`]: `<root>/<task>/data/
//! <split>-*.parquet` and the other layouts listed there); the bytes are decoded as audio.

use peftbench_data_vision::parquet::{find_split_files, load_files};
use peftbench_data_vision::{DataError, ImageSource, ParquetColumns};
use std::path::Path;

use super::AudioDataset;
use crate::{AudioError, AudioSource};

/// Split `split` of task `task` under `root`, reading columns `audio_column` and `label_column`.
pub fn load_split(
    root: &Path,
    task: &str,
    split: &str,
    audio_column: &str,
    label_column: &str,
    num_classes: Option<usize>,
) -> Result<AudioDataset, AudioError> {
    let convert = |e: DataError| match e {
        DataError::MissingDataset { looked_in, hint } => {
            AudioError::MissingDataset { looked_in, hint }
        }
        other => AudioError::Parquet {
            path: root.join(task),
            reason: other.to_string(),
        },
    };
    let files = find_split_files(root, task, split).map_err(convert)?;
    let columns = ParquetColumns {
        image_column: audio_column.to_string(),
        label_column: label_column.to_string(),
    };
    let ds = load_files(
        &format!("parquet/{task}/{split}"),
        &files,
        &columns,
        num_classes,
    )
    .map_err(convert)?;
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
