//! Errors of the readers: every malformed line is reported with its file and line number, and
//! nothing is guessed (no skipped fields, no default ids, no lossy decoding).

use std::io;
use std::path::{Path, PathBuf};

/// Why a retrieval file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A line is not in the expected format.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming the expected layout.
        message: String,
    },
}

impl ReadError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        ReadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn malformed(path: &Path, line: usize, message: impl Into<String>) -> Self {
        ReadError::Malformed {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// The non-blank lines of a UTF-8 text file with their 1-based numbers. A line that is not valid
/// UTF-8 is an error naming the line; a trailing `\r` (Windows line ends) is removed.
pub(crate) fn text_lines(path: &Path) -> Result<Vec<(usize, String)>, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::io(path, e))?;
    let mut lines = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| {
            ReadError::malformed(
                path,
                number,
                format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1),
            )
        })?;
        if !line.trim().is_empty() {
            lines.push((number, line.to_string()));
        }
    }
    Ok(lines)
}
