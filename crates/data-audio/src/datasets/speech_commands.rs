//! Speech Commands V2 (Warden, 2018): one-second keyword clips in one folder per word.
//!
//! Layout of the published archive: `<root>/<word>/<speaker>_nohash_<n>.wav`, plus `validation_list.txt`
//! and `testing_list.txt` listing `<word>/<file>.wav` paths (one per line). The 35-class task (as in AST and
//! PETL-for-AST) uses every word folder except `_background_noise_`, labelled in sorted order; split
//! `train` is every clip in neither list, `validation` and `test` the listed ones.

use std::collections::HashSet;
use std::path::Path;

use super::{read_metadata, AudioDataset};
use crate::{AudioError, AudioSource};

pub const NUM_CLASSES: usize = 35;

const HINT: &str = "hint: download speech_commands_v0.02.tar.gz \
(http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz) and extract it into \
<data-dir>/speech_commands_v2 (word folders plus validation_list.txt and testing_list.txt).";

/// Split `train`, `validation` or `test` of Speech Commands V2 at `root`.
pub fn load_split(root: &Path, split: &str) -> Result<AudioDataset, AudioError> {
    let read_list = |name: &str| -> Result<HashSet<String>, AudioError> {
        Ok(read_metadata(&root.join(name), HINT)?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    };
    let validation = read_list("validation_list.txt")?;
    let testing = read_list("testing_list.txt")?;
    let io = |source| AudioError::Io {
        path: root.to_path_buf(),
        source,
    };
    let mut words: Vec<String> = std::fs::read_dir(root)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|w| !w.starts_with('_'))
        .collect();
    words.sort();
    let mut ds = AudioDataset {
        name: format!("speech_commands_v2/{split}"),
        items: Vec::new(),
        labels: Vec::new(),
        num_classes: words.len(),
        class_names: words.clone(),
    };
    for (label, word) in words.iter().enumerate() {
        let dir = root.join(word);
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|source| AudioError::Io {
                path: dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".wav"))
            .collect();
        files.sort();
        for file in files {
            let rel = format!("{word}/{file}");
            let in_split = match split {
                "train" => !validation.contains(&rel) && !testing.contains(&rel),
                "validation" | "valid" | "val" => validation.contains(&rel),
                "test" | "testing" => testing.contains(&rel),
                other => {
                    return Err(AudioError::InvalidSettings(format!(
                        "Speech Commands has splits train, validation and test, not {other:?}"
                    )))
                }
            };
            if in_split {
                ds.items.push(AudioSource::File(dir.join(&file)));
                ds.labels.push(label as u32);
            }
        }
    }
    ds.non_empty()
}
