//! Errors of loading and planning suites. Every message names the file and, where known, the line.

use std::path::PathBuf;

/// An error loading a suite file or planning its runs.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A suite name that is not a file and not `<suites_dir>/<name>.yaml`.
    #[error("no suite `{name}` (looked for {}); valid suites: {}", .looked.display(), list(.available))]
    NotFound {
        /// The name or path asked for.
        name: String,
        /// The file looked for.
        looked: PathBuf,
        /// Suite names in the suites directory.
        available: Vec<String>,
    },
    /// The file could not be read.
    #[error("{}: cannot read suite: {source}", .path.display())]
    Io {
        /// The suite file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Malformed YAML, or YAML that does not fit the schema (unknown field, wrong type).
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Parse {
        /// The suite file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Well-formed YAML with a semantic error (unknown method, unknown task in a group, ...).
    #[error("{}{}: {message}", .path.display(), .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The suite file.
        path: PathBuf,
        /// 1-based line, where known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A bad `--filter` term.
    #[error("invalid filter `{term}`: {message}")]
    Filter {
        /// The term as given.
        term: String,
        /// What is wrong.
        message: String,
    },
    /// A bad `--override`.
    #[error("invalid override `{spec}`: {message}")]
    Override {
        /// The override as given.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// Any other planning problem (bad `--epochs`/`--limit`, a filter that selects nothing, ...).
    #[error("{suite}: {message}")]
    Plan {
        /// The suite name.
        suite: String,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
