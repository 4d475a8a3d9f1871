//! Vision-language annotation files: the text side of VQAv2, GQA, NLVR2 and the Karpathy caption
//! splits of COCO and Flickr30k, in the layouts their authors ship (images are read elsewhere).
//!
//! - [`vqa`]: VQAv2's official question and annotation files, joined per question.
//! - [`gqa`]: GQA's balanced question files (one JSON object keyed by question id).
//! - [`nlvr2`]: NLVR2's JSON-lines files, with the two image file names of each example.
//! - [`captions`]: Karpathy's `dataset_coco.json` / `dataset_flickr30k.json`, filtered by split.
//! - [`parquet`]: the Hugging Face parquet copies of VQAv2 (validation), GQA and Flickr30k, with
//!   their images' bytes.
//!
//! Every error names the file, and the line (JSON lines) or serde's line and column (one JSON
//! document) where there is one ([`VlDataError`]). Nothing is guessed or skipped silently.

pub mod captions;
pub mod gqa;
pub mod nlvr2;
pub mod parquet;
pub mod vqa;

pub use captions::{read_karpathy_captions, CaptionImage};
pub use gqa::{gqa_questions_file, read_gqa_balanced, GqaQuestion};
pub use nlvr2::{read_nlvr2, Nlvr2Example};
pub use vqa::{
    read_vqa, read_vqa_karpathy, vqa_annotations_file, vqa_karpathy_file, vqa_questions_file,
    KarpathyVqaQuestion, VqaQuestion,
};

use std::path::{Path, PathBuf};

/// The error of the vision-language readers.
#[derive(Debug, thiserror::Error)]
pub enum VlDataError {
    /// A data file that is not where the suite says.
    #[error("{}: not found", .path.display())]
    Missing { path: PathBuf },

    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON document that does not parse or does not have the format's fields; `line` and
    /// `column` are serde's position (1-based).
    #[error("{}:{line}:{column}: {reason}", .path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },

    /// A malformed record of a JSON-lines file (1-based line).
    #[error("{}:{line}: {reason}", .path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    /// A parquet file that cannot be read, lacks a column, or holds a bad value (`row` counted
    /// from 0 within the file).
    #[error("{}{}: {reason}", .path.display(), .row.map(|r| format!(" row {r}")).unwrap_or_default())]
    Parquet {
        path: PathBuf,
        row: Option<usize>,
        reason: String,
    },

    /// Records that parse but do not fit together (a question without its annotation, an
    /// annotation without 10 answers).
    #[error("{}: {reason}", .path.display())]
    Bad { path: PathBuf, reason: String },
}

impl VlDataError {
    fn bad(path: &Path, reason: impl Into<String>) -> Self {
        Self::Bad {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, VlDataError>;

/// Reads a file as bytes, without a UTF-8 byte-order mark.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            VlDataError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            VlDataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    Ok(bytes)
}

/// Reads one JSON document, its parse and shape errors placed at serde's line and column.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_bytes(path)?;
    serde_json::from_slice(&bytes).map_err(|e| json_error(path, &e))
}

fn json_error(path: &Path, e: &serde_json::Error) -> VlDataError {
    let (line, column) = (e.line(), e.column());
    let text = e.to_string();
    let reason = text
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&text)
        .to_string();
    VlDataError::Json {
        path: path.to_path_buf(),
        line,
        column,
        reason,
    }
}

#[cfg(test)]
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing file and a document that is not JSON name the file; the JSON error carries
    /// serde's position and no repeated "at line" suffix.
    #[test]
    fn missing_and_unparsable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = read_json::<serde_json::Value>(&missing).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: not found", missing.display()));

        let broken = write(dir.path(), "broken.json", "{\n  \"a\": [1,\n}");
        let err = read_json::<serde_json::Value>(&broken).unwrap_err();
        let VlDataError::Json { line, reason, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*line, 3);
        assert!(!reason.contains("at line"), "{reason}");
        assert!(err
            .to_string()
            .starts_with(&format!("{}:3:", broken.display())));
    }
}
