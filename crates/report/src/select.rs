//! Choosing records for a report without the suite file: `--filter` terms over records, and a
//! layout (task order, groups) read off the records themselves.

use anyhow::{bail, Result};
use peftbench_records::RunRecord;

use crate::{Averaging, ReportLayout};

/// Keys a filter condition may name.
pub const FILTER_KEYS: &[&str] = &[
    "suite", "task", "method", "label", "group", "seed", "status",
];

/// `--filter` terms over records, with the syntax of `harness suite --filter`: a term is
/// `key=value` conditions joined by commas (all must hold) or a bare substring of the run id; a
/// record is kept when any term matches (no terms keep everything).
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    terms: Vec<Vec<(Option<String>, String)>>,
}

impl RecordFilter {
    /// Parses the terms; an unknown key is an error listing the valid ones.
    pub fn parse(terms: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        for term in terms {
            let mut conds = Vec::new();
            for part in term.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.split_once('=') {
                    Some((k, v)) => {
                        let k = k.trim();
                        if !FILTER_KEYS.contains(&k) {
                            bail!(
                                "invalid filter `{term}`: unknown key `{k}`; valid keys: {}",
                                FILTER_KEYS.join(", ")
                            );
                        }
                        conds.push((Some(k.to_string()), v.trim().to_string()));
                    }
                    None => conds.push((None, part.to_string())),
                }
            }
            if conds.is_empty() {
                bail!("invalid filter `{term}`: empty filter");
            }
            out.push(conds);
        }
        Ok(RecordFilter { terms: out })
    }

    /// Whether `r` passes.
    pub fn matches(&self, r: &RunRecord) -> bool {
        self.terms.is_empty()
            || self.terms.iter().any(|conds| {
                conds.iter().all(|(k, v)| match k.as_deref() {
                    None => r.run_id.contains(v.as_str()),
                    Some("suite") => &r.suite == v,
                    Some("task") => &r.task == v,
                    Some("method") => &r.method == v,
                    Some("label") => &r.label == v,
                    Some("group") => r.group.as_deref() == Some(v.as_str()),
                    Some("seed") => r.seed.to_string() == *v,
                    Some("status") => r.status.as_str() == v,
                    Some(_) => false,
                })
            })
    }
}

impl ReportLayout {
    /// The layout of `suite` as far as its records tell: tasks and groups in first-seen order of
    /// the records (sorted by run id, so by task), plain mean, and the group mean when every task
    /// has a group. No published numbers (those live in the suite file).
    pub fn from_records(suite: &str, records: &[RunRecord]) -> Self {
        let mut tasks: Vec<String> = Vec::new();
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        let mut ungrouped = false;
        // A multi-task record stands for its member tasks.
        let records = crate::per_task_records(records);
        for r in records.iter().filter(|r| r.suite == suite) {
            if tasks.contains(&r.task) {
                continue;
            }
            tasks.push(r.task.clone());
            match &r.group {
                Some(g) => match groups.iter_mut().find(|(name, _)| name == g) {
                    Some((_, members)) => members.push(r.task.clone()),
                    None => groups.push((g.clone(), vec![r.task.clone()])),
                },
                None => ungrouped = true,
            }
        }
        let mut averaging = vec![Averaging::Mean];
        if !groups.is_empty() && !ungrouped {
            averaging.push(Averaging::GroupMean);
        } else {
            groups.clear();
        }
        ReportLayout {
            suite: suite.to_string(),
            tasks,
            groups,
            averaging,
            published: None,
            chance: Vec::new(),
        }
    }
}
