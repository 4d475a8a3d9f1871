//! Records from wherever they were left: results directories (one per machine or shard), Parquet
//! exports, single record files, combined without double counting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{read_parquet, RecordStore, RunRecord, RunStatus};

/// Where records come from: a results directory (holding `records/`), a `.parquet` export or one
/// record `.json` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSource {
    Directory(PathBuf),
    Parquet(PathBuf),
    RecordFile(PathBuf),
}

impl RecordSource {
    /// Classifies `path`: a directory, else by extension. A directory must hold `records/` (a
    /// `records` folder itself is accepted too, as its parent).
    pub fn from_path(path: &Path) -> Result<Self> {
        if path.is_dir() {
            if path.join("records").is_dir() {
                return Ok(RecordSource::Directory(path.to_path_buf()));
            }
            if path.file_name().is_some_and(|n| n == "records") {
                let parent = path.parent().unwrap_or(Path::new("."));
                return Ok(RecordSource::Directory(parent.to_path_buf()));
            }
            bail!(
                "{} is a directory without a records/ folder; expected a results directory (as written by `harness suite --results DIR`)",
                path.display()
            );
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") if path.is_file() => Ok(RecordSource::Parquet(path.to_path_buf())),
            Some("json") if path.is_file() => Ok(RecordSource::RecordFile(path.to_path_buf())),
            _ if !path.exists() => bail!("{} does not exist", path.display()),
            _ => bail!(
                "{}: expected a results directory, a .parquet export or a record .json file",
                path.display()
            ),
        }
    }

    /// All records of the source, sorted by run id.
    pub fn load(&self) -> Result<Vec<RunRecord>> {
        match self {
            RecordSource::Directory(dir) => RecordStore::open(dir)?.load_all(),
            RecordSource::Parquet(path) => read_parquet(path),
            RecordSource::RecordFile(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(vec![RunRecord::from_json(&text).with_context(|| {
                    format!("invalid run record {}", path.display())
                })?])
            }
        }
    }
}

/// The records of several sources combined (see [`merge_records`]).
pub fn load_records(paths: &[PathBuf]) -> Result<Vec<RunRecord>> {
    let mut all = Vec::new();
    for p in paths {
        let source = RecordSource::from_path(p)?;
        all.push((p.display().to_string(), source.load()?));
    }
    merge_records(all)
}

/// Combines records of several sources (`(name, records)`, the name used in messages), one per
/// run id, sorted by run id. A run id found twice keeps the better record: a completed run beats a
/// diverged or failed one, and of two unfinished ones the later. Two completed records of the same
/// run id must agree on configuration and metrics (the same run copied twice); otherwise the run
/// was trained twice with different results, and that is an error naming both sources rather
/// than a silent choice.
pub fn merge_records(sources: Vec<(String, Vec<RunRecord>)>) -> Result<Vec<RunRecord>> {
    Ok(merge_sourced(sources)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// [`merge_records`], keeping the name of the source each record was taken from.
pub fn merge_sourced(sources: Vec<(String, Vec<RunRecord>)>) -> Result<Vec<(String, RunRecord)>> {
    let mut merged: BTreeMap<String, (String, RunRecord)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (name, records) in sources {
        for r in records {
            let Some((prev_name, prev)) = merged.get(&r.run_id) else {
                merged.insert(r.run_id.clone(), (name.clone(), r));
                continue;
            };
            let replace = match (prev.status, r.status) {
                (RunStatus::Completed, RunStatus::Completed) => {
                    if prev.config_hash != r.config_hash || !same_metrics(prev, &r) {
                        conflicts.push(format!(
                            "{}: {prev_name} has {}, {name} has {}",
                            r.run_id,
                            describe(prev),
                            describe(&r)
                        ));
                    }
                    false
                }
                (RunStatus::Completed, _) => false,
                (_, RunStatus::Completed) => true,
                _ => r.finished_at > prev.finished_at,
            };
            if replace {
                merged.insert(r.run_id.clone(), (name.clone(), r));
            }
        }
    }
    if !conflicts.is_empty() {
        bail!(
            "{} run(s) were completed twice with different results; keep one results folder for them:\n  {}",
            conflicts.len(),
            conflicts.join("\n  ")
        );
    }
    Ok(merged.into_values().collect())
}

fn same_metrics(a: &RunRecord, b: &RunRecord) -> bool {
    a.metrics.len() == b.metrics.len()
        && a.metrics
            .iter()
            .zip(&b.metrics)
            .all(|((ka, va), (kb, vb))| ka == kb && (va == vb || (va.is_nan() && vb.is_nan())))
}

fn describe(r: &RunRecord) -> String {
    format!(
        "config {} {}={} (finished {})",
        &r.config_hash[..r.config_hash.len().min(10)],
        r.primary_metric,
        r.primary_value()
            .map_or("none".to_string(), |v| format!("{v:.4}")),
        r.finished_at
    )
}
