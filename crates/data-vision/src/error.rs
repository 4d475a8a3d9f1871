//! The crate's error type. Every variant names the file, folder or in-memory origin it is about, so a
//! message read in a log is enough to find the offending input.

use std::path::PathBuf;

/// Errors from locating, listing, decoding or preprocessing images.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No dataset folder / list file / parquet file was found in any of the places looked at.
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

    /// An image that cannot be decoded (truncated, wrong format, empty, ...).
    #[error("corrupt or unreadable image {origin}: {reason}")]
    CorruptImage { origin: String, reason: String },

    /// A malformed line in a list file (NOAH `train800.txt` etc.). `line` is 1-based.
    #[error("{}:{line}: {reason} (line: {text:?})", .path.display())]
    BadListLine {
        path: PathBuf,
        line: usize,
        text: String,
        reason: String,
    },

    /// A json split file (VPT FGVC) that is not an object of `"path": integer-label`.
    #[error("bad json split file {}: {reason}", .path.display())]
    BadJson { path: PathBuf, reason: String },

    /// A parquet file that cannot be read or has unexpected column types.
    #[error("parquet file {}: {reason}", .path.display())]
    Parquet { path: PathBuf, reason: String },

    /// A requested column is absent from a parquet file.
    #[error("parquet file {}: no column {column:?}; available columns: {available:?}", .path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: Vec<String>,
    },

    /// A label that is negative, null or not below the declared number of classes.
    #[error("bad label in {origin}: {reason}")]
    BadLabel { origin: String, reason: String },

    /// A split that exists but holds no examples.
    #[error("dataset split {origin} has no examples")]
    EmptyDataset { origin: String },

    /// An index passed to `load_batch` beyond the dataset's length.
    #[error("index {index} out of range for dataset {dataset:?} of {len} examples")]
    IndexOutOfRange {
        dataset: String,
        index: usize,
        len: usize,
    },

    /// Invalid preprocessing settings (e.g. `image_size` 0).
    #[error("invalid preprocessing: {0}")]
    InvalidPreprocess(String),

    /// The prefetch worker thread panicked or vanished.
    #[error("prefetch worker stopped unexpectedly: {0}")]
    Worker(String),
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

/// The hint shown with [`DataError::MissingDataset`] for VTAB-1k style data.
pub(crate) const VTAB_HINT: &str = "hint: VTAB-1k in the NOAH/FacT layout can be prepared with the \
scripts in NOAH's README (https://github.com/ZhangYuanhan-AI/NOAH#data-preparation), or use a Hugging Face \
parquet copy of VTAB-1k (read with the parquet reader). Point peftbench at the folder that contains the task \
folders with --data-dir or the PEFTBENCH_DATA environment variable.";

/// The hint shown with [`DataError::MissingDataset`] for FGVC data.
pub(crate) const FGVC_HINT: &str = "hint: FGVC datasets use VPT's json splits (train.json/val.json/test.json \
per dataset, see https://github.com/KMnP/vpt#datasets-preperation); download the images from the datasets' \
sites and the split files from VPT, then point peftbench at the parent folder with --data-dir or the \
PEFTBENCH_DATA environment variable.";
