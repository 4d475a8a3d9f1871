//! Fluent Speech Commands (Lugosch et al., 2019): spoken commands labelled with an intent, the triple
//! (action, object, location); 31 distinct intents.
//!
//! Layout of the published archive: `<root>/data/{train,valid,test}_data.csv` with columns
//! `(index),path,speakerId,transcription,action,object,location`, `path` relative to `<root>`
//! (`wavs/speakers/<id>/<file>.wav`). Intent labels are numbered in the sorted order of the training
//! split's `action|object|location` strings, so every split uses the same numbering.

use std::collections::BTreeSet;
use std::path::Path;

use super::{AudioDataset, Csv};
use crate::{AudioError, AudioSource};

pub const NUM_CLASSES: usize = 31;

const HINT: &str = "hint: Fluent Speech Commands is distributed by Fluent.ai \
(https://fluent.ai/fluent-speech-commands-a-dataset-for-spoken-language-understanding-research/); extract \
it so that <data-dir>/fluent_speech_commands/data/train_data.csv and wavs/ exist.";

fn split_file(split: &str) -> Result<&'static str, AudioError> {
    match split {
        "train" => Ok("train_data.csv"),
        "valid" | "validation" | "val" => Ok("valid_data.csv"),
        "test" => Ok("test_data.csv"),
        other => Err(AudioError::InvalidSettings(format!(
            "Fluent Speech Commands has splits train, valid and test, not {other:?}"
        ))),
    }
}

/// `(intent, path)` rows of one split's CSV.
fn rows(root: &Path, split: &str) -> Result<Vec<(String, String)>, AudioError> {
    let csv = Csv::read(&root.join("data").join(split_file(split)?), HINT)?;
    let cols = [
        csv.column("path")?,
        csv.column("action")?,
        csv.column("object")?,
        csv.column("location")?,
    ];
    csv.rows
        .iter()
        .map(|row| {
            let f = |c| csv.field(row, c);
            Ok((
                format!("{}|{}|{}", f(cols[1])?, f(cols[2])?, f(cols[3])?),
                f(cols[0])?.to_string(),
            ))
        })
        .collect()
}

/// Split `train`, `valid` or `test` of Fluent Speech Commands at `root`.
pub fn load_split(root: &Path, split: &str) -> Result<AudioDataset, AudioError> {
    let intents: Vec<String> = rows(root, "train")?
        .into_iter()
        .map(|(intent, _)| intent)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut ds = AudioDataset {
        name: format!("fluent_speech_commands/{split}"),
        items: Vec::new(),
        labels: Vec::new(),
        num_classes: intents.len(),
        class_names: intents.clone(),
    };
    for (intent, path) in rows(root, split)? {
        let label = intents.binary_search(&intent).map_err(|_| {
            AudioError::InvalidSettings(format!(
                "{}: intent {intent:?} of {path} does not occur in the training split",
                root.join("data")
                    .join(split_file(split).unwrap_or(""))
                    .display()
            ))
        })?;
        ds.items.push(AudioSource::File(root.join(path)));
        ds.labels.push(label as u32);
    }
    ds.non_empty()
}
