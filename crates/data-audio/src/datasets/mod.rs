//! Audio classification datasets in their published on-disk layouts, and Hugging Face parquet copies.
//!
//! Every reader returns an [`AudioDataset`]: sources and labels, nothing decoded, so listing is instant
//! and a bad clip is reported by path when its features are computed. Cross-validated datasets (ESC-50,
//! UrbanSound8K) take the held-out fold: split `train` is every other fold, `test` the held-out one.

pub mod esc50;
pub mod fluent;
pub mod hf_parquet;
pub mod speech_commands;
pub mod urbansound;

use std::path::{Path, PathBuf};

use crate::{AudioError, AudioSource};

/// A labelled list of clips: one split of one dataset.
#[derive(Clone, Debug)]
pub struct AudioDataset {
    /// Display name, e.g. `"esc50/fold1/test"`.
    pub name: String,
    pub items: Vec<AudioSource>,
    /// One label per item, each `< num_classes`.
    pub labels: Vec<u32>,
    pub num_classes: usize,
    /// Class names by label, when the dataset has them.
    pub class_names: Vec<String>,
}

impl AudioDataset {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keeps the first `n` examples (quick runs with `--limit`).
    pub fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
        self.labels.truncate(n);
    }

    fn non_empty(self) -> Result<Self, AudioError> {
        if self.items.is_empty() {
            return Err(AudioError::EmptyDataset { origin: self.name });
        }
        Ok(self)
    }
}

/// Which side of a cross-validation fold a split is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FoldSide {
    Train,
    Test,
}

/// `train` / `test` split names of the fold-based datasets.
pub(crate) fn fold_side(split: &str, origin: &Path) -> Result<FoldSide, AudioError> {
    match split {
        "train" => Ok(FoldSide::Train),
        "test" | "eval" | "valid" | "validation" => Ok(FoldSide::Test),
        other => Err(AudioError::BadMetadataLine {
            path: origin.to_path_buf(),
            line: 0,
            text: other.to_string(),
            reason: "cross-validated datasets have splits `train` (the other folds) and `test` \
                     (the held-out fold)"
                .into(),
        }),
    }
}

/// Reads a metadata file, or says where it was looked for and how to get the dataset.
pub(crate) fn read_metadata(path: &Path, hint: &str) -> Result<String, AudioError> {
    if !path.is_file() {
        return Err(AudioError::MissingDataset {
            looked_in: vec![path.to_path_buf()],
            hint: hint.to_string(),
        });
    }
    std::fs::read_to_string(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Splits one CSV line (RFC 4180 quoting: `"a, b"`, doubled quotes inside quotes).
pub(crate) fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches(['\r', '\n']).chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// A CSV file with a header: rows as `(1-based line number, raw line, fields)` and column lookup by name.
pub(crate) struct Csv {
    pub path: PathBuf,
    header: Vec<String>,
    pub rows: Vec<(usize, String, Vec<String>)>,
}

impl Csv {
    pub fn read(path: &Path, hint: &str) -> Result<Self, AudioError> {
        let text = read_metadata(path, hint)?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let header = lines.next().map(|(_, l)| csv_fields(l)).unwrap_or_default();
        let rows = lines
            .map(|(i, l)| (i + 1, l.to_string(), csv_fields(l)))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            header,
            rows,
        })
    }

    /// Index of column `name`, or an error naming the file and the columns it has.
    pub fn column(&self, name: &str) -> Result<usize, AudioError> {
        self.header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| AudioError::BadMetadataLine {
                path: self.path.clone(),
                line: 1,
                text: self.header.join(","),
                reason: format!("no column {name:?}"),
            })
    }

    /// Field `col` of a row, or an error naming the line.
    pub fn field<'a>(
        &self,
        row: &'a (usize, String, Vec<String>),
        col: usize,
    ) -> Result<&'a str, AudioError> {
        row.2
            .get(col)
            .map(|s| s.trim())
            .ok_or_else(|| self.bad(row, format!("missing field {}", col + 1)))
    }

    /// An integer field.
    pub fn int(&self, row: &(usize, String, Vec<String>), col: usize) -> Result<u32, AudioError> {
        let v = self.field(row, col)?;
        v.parse()
            .map_err(|_| self.bad(row, format!("field {:?} is not a non-negative integer", v)))
    }

    /// The number of classes an integer label column implies: its largest value plus one, over
    /// every row (all folds).
    pub fn num_classes(&self, col: usize) -> Result<usize, AudioError> {
        let mut largest = None;
        for row in &self.rows {
            largest = largest.max(Some(self.int(row, col)?));
        }
        Ok(largest.map_or(0, |l| l as usize + 1))
    }

    pub fn bad(&self, row: &(usize, String, Vec<String>), reason: String) -> AudioError {
        AudioError::BadMetadataLine {
            path: self.path.clone(),
            line: row.0,
            text: row.1.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::csv_fields;

    #[test]
    fn csv_quoting() {
        assert_eq!(
            csv_fields("a,\"b, c\",\"d \"\"e\"\"\"\r"),
            vec!["a", "b, c", "d \"e\""]
        );
        assert_eq!(csv_fields("x,,"), vec!["x", "", ""]);
    }
}
