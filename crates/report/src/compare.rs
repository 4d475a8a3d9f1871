//! Regression tables: the records of a baseline against those of a current run, per task and
//! method, with each task's tolerance.
//!
//! A comparison is only made between like and like. It is refused, with a message naming what
//! differs, when the two sides hold different suites, when a (task, method) pair was run with
//! different configurations (compared without the seed and the data folder, which do not change
//! what is measured), or when the primary metric or model-selection rule differ.
//!
//! Verdicts, per (suite, task, label), on the mean of the primary metric over completed seeds, in
//! percentage points: `regression` when current < baseline − tolerance, `improved` when current >
//! baseline + tolerance, else `ok`. The tolerance is the task's (the suite file's), widened to what
//! the seeds support when both sides have at least two: the half-width of a 95% Welch interval of
//! the difference of the two means, so that rounding which the seeds already spread over (another
//! CPU, CUDA) is not reported as a regression, while one-seed comparisons keep the fixed value.
//! A multi-task run's record is compared task by task. `missing` when the current side has no run of a baseline
//! pair, `failed` when it has runs but none completed (both count as regressions); `new` for pairs
//! only the current side has.

use std::collections::{BTreeMap, BTreeSet};

use peftbench_metrics::summarize;
use peftbench_records::{canonical_json, RunRecord, RunStatus};
use serde::Serialize;

/// The outcome for one (task, method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Improved,
    Regression,
    Missing,
    Failed,
    New,
}

impl Verdict {
    /// Whether this verdict fails a regression check.
    pub fn is_regression(self) -> bool {
        matches!(
            self,
            Verdict::Regression | Verdict::Missing | Verdict::Failed
        )
    }

    fn text(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Improved => "improved",
            Verdict::Regression => "**REGRESSION**",
            Verdict::Missing => "**MISSING**",
            Verdict::Failed => "**FAILED**",
            Verdict::New => "new",
        }
    }
}

/// One side's runs of a (task, method): mean over completed seeds, percent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub seeds: Vec<u64>,
    /// Runs that diverged or failed.
    pub unfinished: usize,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    pub suite: String,
    pub task: String,
    pub label: String,
    pub baseline: Option<Side>,
    pub current: Option<Side>,
    /// Current minus baseline, percentage points.
    pub delta: Option<f64>,
    /// Allowed drop, percentage points.
    pub tolerance: f64,
    /// Whether the seeds' spread set the tolerance (wider than the task's own).
    pub tolerance_from_seeds: bool,
    pub verdict: Verdict,
}

/// A finished comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub rows: Vec<ComparisonRow>,
    /// Primary metric(s) compared.
    pub metrics: Vec<String>,
}

impl Comparison {
    /// Whether any row fails the check.
    pub fn has_regression(&self) -> bool {
        self.rows.iter().any(|r| r.verdict.is_regression())
    }

    fn count(&self, f: impl Fn(Verdict) -> bool) -> usize {
        self.rows.iter().filter(|r| f(r.verdict)).count()
    }

    /// A markdown table for CI logs and job summaries, regressions first.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# Regression check\n\n");
        out.push_str(&format!(
            "{} regression(s), {} improvement(s), {} within tolerance, {} new; metric: {} (percent); \
             Δ = current − baseline, percentage points; a drop larger than the tolerance is a regression \
             (the task's, or ˢ: the 95% Welch half-width of the difference of the means over seeds, when wider).\n\n",
            self.count(Verdict::is_regression),
            self.count(|v| v == Verdict::Improved),
            self.count(|v| v == Verdict::Ok),
            self.count(|v| v == Verdict::New),
            if self.metrics.is_empty() {
                "none".to_string()
            } else {
                self.metrics.join(", ")
            }
        ));
        out.push_str("| suite | task | method | baseline | current | Δ | tolerance | verdict |\n");
        out.push_str("|---|---|---|---:|---:|---:|---:|---|\n");
        let mut rows: Vec<&ComparisonRow> = self.rows.iter().collect();
        rows.sort_by_key(|r| !r.verdict.is_regression());
        for r in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | ±{:.1}{} | {} |\n",
                r.suite,
                r.task,
                r.label,
                side_text(r.baseline.as_ref()),
                side_text(r.current.as_ref()),
                r.delta.map_or("—".into(), |d| format!("{d:+.2}")),
                r.tolerance,
                if r.tolerance_from_seeds { "ˢ" } else { "" },
                r.verdict.text()
            ));
        }
        out
    }
}

fn side_text(side: Option<&Side>) -> String {
    match side {
        None => "—".into(),
        Some(s) => match s.mean {
            None => format!("none of {} completed", s.unfinished),
            Some(m) => match s.std {
                Some(sd) => format!("{m:.2} ±{sd:.2} ({})", s.seeds.len()),
                None => format!("{m:.2} ({})", s.seeds.len()),
            },
        },
    }
}

type Key = (String, String, String);

fn key(r: &RunRecord) -> Key {
    (r.suite.clone(), r.task.clone(), r.label.clone())
}

/// The configuration with what does not change the measurement removed: the seed (sides may
/// run different seeds) and the data folder (machines keep data in different places).
fn comparable_config(r: &RunRecord) -> serde_json::Value {
    let mut c = r.config.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("seed");
        if let Some(d) = o.get_mut("data").and_then(|d| d.as_object_mut()) {
            d.remove("root");
        }
    }
    c
}

/// Paths where two JSON values differ, with both values (`recipe.lr: 0.001 vs 0.0005`).
fn json_diff(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => json_diff(u, v, &p, out),
                    (u, v) => out.push(format!(
                        "{p}: {} vs {}",
                        u.map_or("(absent)".into(), |u| u.to_string()),
                        v.map_or("(absent)".into(), |v| v.to_string())
                    )),
                }
            }
        }
        _ if a != b => out.push(format!(
            "{}: {a} vs {b}",
            if path.is_empty() { "(root)" } else { path }
        )),
        _ => {}
    }
}

fn side(records: &[&RunRecord]) -> Side {
    let mut done: Vec<(u64, f64)> = records
        .iter()
        .filter(|r| r.status == RunStatus::Completed)
        .filter_map(|r| Some((r.seed, r.primary_value().filter(|v| v.is_finite())? * 100.0)))
        .collect();
    done.sort_by_key(|d| d.0);
    let values: Vec<f64> = done.iter().map(|d| d.1).collect();
    let summary = (!values.is_empty()).then(|| summarize(&values));
    Side {
        mean: summary.map(|s| s.mean),
        std: summary.filter(|s| s.n >= 2).map(|s| s.std),
        seeds: done.iter().map(|d| d.0).collect(),
        unfinished: records.len() - values.len(),
    }
}

/// The half-width of a 95% Welch interval of the difference of the two sides' means (percentage
/// points), when both have at least two completed seeds.
fn seed_tolerance(base: &Side, current: &Side) -> Option<f64> {
    let (sb, sc) = (base.std?, current.std?);
    let (nb, nc) = (base.seeds.len() as f64, current.seeds.len() as f64);
    let (vb, vc) = (sb * sb / nb, sc * sc / nc);
    let variance = vb + vc;
    if variance == 0.0 {
        return Some(0.0);
    }
    // Welch–Satterthwaite degrees of freedom, rounded down (the more cautious quantile).
    let df = variance * variance / (vb * vb / (nb - 1.0) + vc * vc / (nc - 1.0));
    Some(peftbench_metrics::t_quantile_975(df.floor().max(1.0) as usize) * variance.sqrt())
}

fn by_key(rs: &[RunRecord]) -> BTreeMap<Key, Vec<&RunRecord>> {
    let mut m: BTreeMap<Key, Vec<&RunRecord>> = BTreeMap::new();
    for r in rs {
        m.entry(key(r)).or_default().push(r);
    }
    m
}

/// Compares `current` against `baseline`; `tolerance(suite, task)` gives the allowed drop in
/// percentage points. `Err` explains why the two cannot be compared.
pub fn compare(
    baseline: &[RunRecord],
    current: &[RunRecord],
    tolerance: &dyn Fn(&str, &str) -> f64,
) -> Result<Comparison, String> {
    let suites = |rs: &[RunRecord]| rs.iter().map(|r| r.suite.clone()).collect::<BTreeSet<_>>();
    let (bs, cs) = (suites(baseline), suites(current));
    if bs.is_empty() {
        return Err("the baseline holds no run records".into());
    }
    if cs.is_empty() {
        return Err("the current side holds no run records".into());
    }
    if bs != cs {
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        return Err(format!(
            "different suites: the baseline has {}, the current side has {}; compare one suite at a time (--filter suite=NAME)",
            list(&bs),
            list(&cs)
        ));
    }

    let (baseline, current) = (
        crate::per_task_records(baseline),
        crate::per_task_records(current),
    );
    let (b, c) = (by_key(&baseline), by_key(&current));

    // Like with like: same configuration (but seed), metric and selection rule.
    let mut problems = Vec::new();
    for (k, brs) in &b {
        let Some(crs) = c.get(k) else { continue };
        let name = format!("{}/{}/{}", k.0, k.1, k.2);
        let (bref, cref) = (brs[0], crs[0]);
        for (what, x, y) in [
            ("primary metric", &bref.primary_metric, &cref.primary_metric),
            ("model selection", &bref.selection, &cref.selection),
        ] {
            if x != y {
                problems.push(format!(
                    "{name}: {what} `{x}` (baseline) vs `{y}` (current)"
                ));
            }
        }
        let bc = comparable_config(bref);
        let cc = comparable_config(cref);
        if canonical_json(&bc) != canonical_json(&cc) {
            let mut diffs = Vec::new();
            json_diff(&bc, &cc, "", &mut diffs);
            problems.push(format!(
                "{name}: configuration differs (baseline vs current): {}",
                diffs.join("; ")
            ));
        }
        for side_records in [brs, crs] {
            let configs: BTreeSet<String> = side_records
                .iter()
                .map(|r| canonical_json(&comparable_config(r)))
                .collect();
            if configs.len() > 1 {
                problems.push(format!(
                    "{name}: one side mixes {} configurations of this method",
                    configs.len()
                ));
            }
        }
    }
    if !problems.is_empty() {
        let shown = problems.len().min(20);
        return Err(format!(
            "refusing to compare different experiments ({} difference(s)):\n  {}{}",
            problems.len(),
            problems[..shown].join("\n  "),
            if problems.len() > shown {
                format!("\n  ... and {} more", problems.len() - shown)
            } else {
                String::new()
            }
        ));
    }

    let keys: BTreeSet<&Key> = b.keys().chain(c.keys()).collect();
    let mut rows = Vec::new();
    for k in keys {
        let base = b.get(k).map(|rs| side(rs));
        let cur = c.get(k).map(|rs| side(rs));
        let fixed = tolerance(&k.0, &k.1);
        let from_seeds = match (&base, &cur) {
            (Some(x), Some(y)) => seed_tolerance(x, y),
            _ => None,
        };
        let tol = from_seeds.map_or(fixed, |s| s.max(fixed));
        let delta = match (&base, &cur) {
            (Some(x), Some(y)) => y.mean.zip(x.mean).map(|(y, x)| y - x),
            _ => None,
        };
        let verdict = match (&base, &cur) {
            (None, _) => Verdict::New,
            (Some(_), None) => Verdict::Missing,
            (Some(x), Some(y)) => match (x.mean, y.mean) {
                (_, None) => Verdict::Failed,
                (None, Some(_)) => Verdict::Improved,
                (Some(_), Some(_)) => {
                    let d = delta.expect("both means exist");
                    if d < -tol {
                        Verdict::Regression
                    } else if d > tol {
                        Verdict::Improved
                    } else {
                        Verdict::Ok
                    }
                }
            },
        };
        rows.push(ComparisonRow {
            suite: k.0.clone(),
            task: k.1.clone(),
            label: k.2.clone(),
            baseline: base,
            current: cur,
            delta,
            tolerance: tol,
            tolerance_from_seeds: from_seeds.is_some_and(|s| s > fixed),
            verdict,
        });
    }
    let metrics: BTreeSet<String> = baseline
        .iter()
        .chain(&current)
        .map(|r| r.primary_metric.clone())
        .collect();
    Ok(Comparison {
        rows,
        metrics: metrics.into_iter().collect(),
    })
}
