//! The crate's error type. Every variant names the file or in-memory origin it is about, so a message read
//! in a log is enough to find the offending input.

use std::path::PathBuf;

/// Errors from locating, listing, decoding or transforming audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// No dataset folder / metadata file was found in any of the places looked at.
    #[error("dataset not found; looked in:\n{}\n{hint}", fmt_paths(.looked_in))]
    MissingDataset {
        looked_in: Vec<PathBuf>,
        hint: String,
    },

    /// An I/O error while reading a file that exists (or was expected to).
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Audio that cannot be decoded (truncated, unsupported codec, empty, ...).
    #[error("corrupt or unsupported audio {origin}: {reason}")]
    CorruptAudio { origin: String, reason: String },

    /// A malformed line in a metadata file (CSV or list). `line` is 1-based.
    #[error("{}:{line}: {reason} (line: {text:?})", .path.display())]
    BadMetadataLine {
        path: PathBuf,
        line: usize,
        text: String,
        reason: String,
    },

    /// A parquet file that cannot be read or has unexpected columns.
    #[error("parquet file {}: {reason}", .path.display())]
    Parquet { path: PathBuf, reason: String },

    /// A split that exists but holds no examples.
    #[error("dataset split {origin} has no examples")]
    EmptyDataset { origin: String },

    /// Invalid feature settings (e.g. zero mel bins, a frame longer than its FFT).
    #[error("invalid audio feature settings: {0}")]
    InvalidSettings(String),
}

fn fmt_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "  (nowhere: no candidate paths)".to_string();
    }
    paths
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}
