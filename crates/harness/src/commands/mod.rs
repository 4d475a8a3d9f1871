//! One file per subcommand.

pub mod bench;
pub mod compare;
pub mod inspect;
pub mod list;
pub mod merge;
pub mod predict;
pub mod report;
pub mod slurm;
pub mod suite;
pub mod workers;

use std::path::PathBuf;

use crate::Locations;

/// Writes `text` to stdout; a closed pipe (`harness list methods | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The suites directory: `--suites-dir`, else `./suites` when it exists, else the one shipped with
/// this build (so `harness suite demo` works from any directory).
pub fn suites_dir(loc: &Locations) -> PathBuf {
    if let Some(dir) = &loc.suites_dir {
        return dir.clone();
    }
    let local = PathBuf::from("suites");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../suites")
}

pub fn paths(loc: &Locations) -> peftbench_runner::Paths {
    peftbench_runner::Paths {
        results: loc.results.clone(),
        reports: loc.reports.clone(),
        data_dir: loc.data_dir.clone(),
        cache: peftbench_runner::Paths::default_cache(),
    }
}
