//! The crate's error type. Every variant names the file (and line, 1-based, where there is one),
//! so a message read in a log is enough to find the offending input.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TextDataError {
    /// A data file that is not where the suite says.
    #[error("{}: not found{hint}", .path.display())]
    Missing { path: PathBuf, hint: String },

    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Bytes that do not decode as UTF-8.
    #[error("{}:{line}: text is not valid UTF-8", .path.display())]
    NotUtf8 { path: PathBuf, line: usize },

    /// A malformed record: a missing column or tag, a wrong field count, bad JSON.
    #[error("{}:{line}: {reason}", .path.display())]
    BadRecord {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl TextDataError {
    pub(crate) fn bad(path: &std::path::Path, line: usize, reason: impl Into<String>) -> Self {
        Self::BadRecord {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, TextDataError>;

/// Reads a file as bytes, reporting a missing file with `hint`.
pub(crate) fn read_bytes(path: &std::path::Path, hint: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TextDataError::Missing {
                path: path.to_path_buf(),
                hint: if hint.is_empty() {
                    String::new()
                } else {
                    format!(" ({hint})")
                },
            }
        } else {
            TextDataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Splits bytes into lines (`\n`, an optional `\r` removed), each checked to be UTF-8; yields
/// `(1-based line number, text)`.
pub(crate) fn utf8_lines<'a>(
    path: &'a std::path::Path,
    bytes: &'a [u8],
) -> impl Iterator<Item = Result<(usize, &'a str)>> + 'a {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = bytes.is_empty();
    trimmed
        .split(|&b| b == b'\n')
        .take(if empty { 0 } else { usize::MAX })
        .enumerate()
        .map(move |(i, raw)| {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            std::str::from_utf8(raw)
                .map(|s| (i + 1, s))
                .map_err(|_| TextDataError::NotUtf8 {
                    path: path.to_path_buf(),
                    line: i + 1,
                })
        })
}
