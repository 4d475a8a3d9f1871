//! Runs peftbench configurations end to end: resolves the backbone (downloading nothing the user did
//! not ask for; the embedded demo backbone is pretrained here on first use), loads the data, attaches
//! the method, trains, evaluates, saves the adapter and leaves one atomic run record. A sweep runs a
//! suite's plan, skipping runs whose record already exists, and ends with the leaderboard.
//!
//! # How a run flows
//! A suite's kind of task ([`peftbench_suite::TaskKind`]) is decided when it loads. [`sweep`] plans
//! the runs and hands the kind to `kinds::with_kind`, which picks the module implementing it
//! behind the `kinds::Kind` interface. Then, in order:
//! 1. preflight: `Kind::locate` finds every task's data (errors say where they looked), the backbone
//!    is loaded ([`backbone`]) and checked against the kind's input (`Kind::check_backbone`) and
//!    every method configuration against its sizes ([`preflight`]); `--dry-run` stops after the
//!    sizes and the same data lookup;
//! 2. `Kind::encoders` builds what all runs share (a filter-bank cache, a tokenizer);
//! 3. per task, `Kind::prepare` decodes its inputs once for all its runs;
//! 4. per run, [`run::execute`] calls `Kind::run` (classification kinds share
//!    `classification::train_and_evaluate`: calibration, frozen features or prefixes, phases,
//!    language modules) and writes the record, naming `Kind::primary_metric`.
//!
//! # Adding a kind
//! Add the variant to [`peftbench_suite::TaskKind`] (and how a suite file declares it), write one
//! module under `kinds/` implementing `Kind`, and add its arm to `kinds::with_kind`. The compiler
//! then lists every exhaustive match that must learn the new kind (its input modality, its name).

pub mod audio;
pub mod audio_embedding;
pub mod backbone;
pub mod bench;
pub mod catalog;
mod classification;
mod continual;
pub mod data;
pub mod demo;
pub mod demo_audio;
pub mod demo_clip;
pub mod demo_music;
pub mod demo_t5;
pub mod demo_text;
pub mod demo_vl;
pub mod features;
pub mod frozen_prefix;
mod kinds;
pub mod language_adapters;
pub mod layout;
pub mod music;
pub mod preflight;
pub mod pretraining;
pub mod provenance;
pub mod rerank;
pub mod run;
pub mod sweep;
#[cfg(test)]
mod test_support;
pub mod text;
pub mod vl_data;

pub use catalog::RegistryCatalog;
pub use sweep::{sweep, SweepOptions, SweepSummary};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where things live for a harness invocation.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Run records and artifacts (`--results`, default `results/`).
    pub results: PathBuf,
    /// Markdown leaderboards (`--reports`, default `reports/`).
    pub reports: PathBuf,
    /// Dataset root (`--data-dir` / `PEFTBENCH_DATA`) when a suite gives none.
    pub data_dir: Option<PathBuf>,
    /// The project's cache (`PEFTBENCH_CACHE`, default the platform cache dir + `peftbench`).
    pub cache: PathBuf,
}

impl Paths {
    /// Results, reports and cache all under `root` (tests, scratch runs), no data root.
    pub fn under(root: &std::path::Path) -> Self {
        Self {
            results: root.join("results"),
            reports: root.join("reports"),
            data_dir: None,
            cache: root.join("cache"),
        }
    }
}

impl Paths {
    /// The project cache: `$PEFTBENCH_CACHE`, else e.g. `~/.cache/peftbench`.
    pub fn default_cache() -> PathBuf {
        std::env::var_os("PEFTBENCH_CACHE")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("peftbench")))
            .unwrap_or_else(|| PathBuf::from(".peftbench-cache"))
    }
}

/// Versions of the numeric dependencies recorded in every result (peftbench's own is
/// `Environment::peftbench_version`).
pub fn crate_versions() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in env!("PEFTBENCH_DEP_VERSIONS")
        .split(',')
        .filter(|s| !s.is_empty())
    {
        if let Some((k, v)) = pair.split_once('=') {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}
