//! One file per subcommand.

pub mod bench;
pub mod compare;
pub mod fetch;
pub mod inspect;
pub mod list;
pub mod merge;
pub mod predict;
pub mod report;
pub mod score;
pub mod slurm;
pub mod suite;
pub mod workers;

use std::path::{Path, PathBuf};

use anyhow::Context;
use peftbench_records::RunRecord;
use peftbench_runner::backbone::resolve_files;
use peftbench_suite::BackboneSpec;

use crate::{Locations, SuitesDir};

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
pub fn suites_dir(flag: &impl AsRef<SuitesDir>) -> PathBuf {
    if let Some(dir) = &flag.as_ref().suites_dir {
        return dir.clone();
    }
    let local = PathBuf::from("suites");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../suites")
}

/// What loading a backbone outside a sweep (`predict`, `inspect`) reads: the cache only
/// (`PEFTBENCH_CACHE`); nothing is written to results or reports, so they are left empty.
pub fn backbone_paths() -> peftbench_runner::Paths {
    peftbench_runner::Paths {
        results: PathBuf::new(),
        reports: PathBuf::new(),
        data_dir: None,
        cache: peftbench_runner::Paths::default_cache(),
    }
}

pub fn paths(loc: &Locations) -> peftbench_runner::Paths {
    peftbench_runner::Paths {
        results: loc.outputs.results.clone(),
        reports: loc.outputs.reports.clone(),
        data_dir: loc.data_dir.clone(),
        cache: peftbench_runner::Paths::default_cache(),
    }
}

/// The run record of the run that saved an adapter of ours, with its path: the adapter of run `ID`
/// is saved in `<results>/artifacts/ID/` and its record is `<results>/records/ID.json`. `None` for
/// an adapter elsewhere (Python PEFT's, or one copied out of its results directory).
pub fn run_record_of(adapter: &Path) -> anyhow::Result<Option<(PathBuf, RunRecord)>> {
    let adapter = std::fs::canonicalize(adapter)
        .with_context(|| format!("adapter folder {}", adapter.display()))?;
    let Some(artifacts) = adapter
        .ancestors()
        .skip(1)
        .find(|dir| dir.file_name().is_some_and(|n| n == "artifacts"))
    else {
        return Ok(None);
    };
    let run_id = adapter
        .strip_prefix(artifacts)
        .expect("an ancestor is a prefix");
    let mut path = artifacts.with_file_name("records").join(run_id);
    path.as_mut_os_string().push(".json");
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let record = RunRecord::from_json(&text)
        .with_context(|| format!("parsing run record {}", path.display()))?;
    Ok(Some((path, record)))
}

/// The file `name` beside a checkpoint's `config.json` (`preprocessor_config.json`), if it has one.
/// Generated demo backbones have none: their run records hold their preprocessing.
pub fn checkpoint_file(backbone: &str, name: &str) -> anyhow::Result<Option<PathBuf>> {
    if [
        peftbench_runner::demo::DEMO_CHECKPOINT,
        peftbench_runner::demo_audio::DEMO_AUDIO_CHECKPOINT,
    ]
    .contains(&backbone)
    {
        return Ok(None);
    }
    let spec = BackboneSpec {
        checkpoint: backbone.to_string(),
        revision: None,
    };
    let path = resolve_files(&spec, &backbone_paths())?
        .config
        .with_file_name(name);
    Ok(path.is_file().then_some(path))
}
