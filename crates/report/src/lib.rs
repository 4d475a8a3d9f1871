//! Leaderboards from run records: a terminal table (comfy-table) and a GitHub markdown report.
//!
//! The runner describes the suite with a plain [`ReportLayout`] (task order, groups, averaging
//! conventions, optional published numbers) and hands over the [`RunRecord`]s; [`Leaderboard`]
//! does the rest. Output is deterministic (no timestamps), so it can be snapshot-tested and
//! committed.
//!
//! # Conventions
//!
//! * Rows are method labels ([`RunRecord::label`]) in first-seen order of the records, or an
//!   explicit order ([`Leaderboard::build_with_order`]). Columns are the layout's tasks, then one
//!   column per [`Averaging`], then trainable parameters.
//! * Only records of the layout's suite and tasks count. A cell is the mean ± sample standard
//!   deviation, in percent with one decimal, of the primary metric over the
//!   [`RunStatus::Completed`] runs (seeds) of that label and task, followed by the number of seeds:
//!   `72.3 ±0.4 (3)`; a single seed shows no spread: `72.3 (1)`. Seeds that diverged or failed
//!   beside completed ones are listed: `72.3 ±0.4 (3; 1 diverged)`. A cell with runs but none
//!   completed reads `diverged`, `failed` or `diverged/failed`; a cell without runs reads `—`.
//!   A completed record without its primary metric counts as failed.
//! * **Mean** is the plain mean of the task cells; **Group mean** the mean of the group means,
//!   each group mean over that group's tasks. Both use only the tasks that have a value for that
//!   row; an average over fewer tasks than the layout has is marked `63.2*` and footnoted
//!   (`* over 3 of 19 tasks`). Averages are of the per-task means (no spread).
//! * With groups, one column per group holds the group's mean (over the tasks with a value).
//! * **Avg rank** is each row's mean rank over the tasks it has a value for, ranking the rows with
//!   a value on that task (1 = best, ties share the mean of their ranks).
//! * Every cell has a 95% interval ([`Cell::ci95`]): Student t over seeds when there are at least
//!   two, else a percentile bootstrap over the test examples of the single run (1,000 resamples,
//!   from the per-example correctness in its record); the markdown lists them in a second table.
//! * The markdown's cost table gives, per row, trainable parameters, adapter bytes on disk (mean),
//!   peak memory (max over runs), training throughput and time (means over completed runs).
//! * Published numbers ([`PublishedTable`]) go in an extra row under ours, `lora (published)`,
//!   whose cells read `74.6 (Δ-2.3)`: the published value and ours minus published, in percentage
//!   points. Extra rows keep our cells short enough for 19-task suites, where
//!   `72.3 ±0.4 (3) (pub 74.6, -2.3)` in every cell would not fit a terminal. On a row with a partial
//!   average, the Δ of that average compares like with like: it is taken against the published
//!   average over the same tasks (marked `Δ*`), when published per-task values allow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use comfy_table::{
    presets::UTF8_FULL_CONDENSED, CellAlignment, ColumnConstraint, ContentArrangement, Table,
};
use peftbench_metrics::{bootstrap_ci95, summarize, Summary};
use peftbench_records::{RunRecord, RunStatus};
use serde::{Deserialize, Serialize};

pub mod compare;
pub mod continual;
mod export;
mod multi_task;
pub mod music;
pub mod plots;
mod select;
pub mod spread;

pub use compare::{compare, Comparison, Verdict};
pub use export::{csv, json};
pub use multi_task::per_task_records;
pub use plots::{write_figures, Figure};
pub use select::{RecordFilter, FILTER_KEYS};

/// Bootstrap resamples for single-seed intervals.
const BOOTSTRAP_RESAMPLES: usize = 1000;
/// Seed of the bootstrap (fixed: reports are deterministic).
const BOOTSTRAP_SEED: u64 = 0x7065_6674;

/// How to average task accuracies into one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Averaging {
    /// Plain mean over tasks (V-PETL convention).
    Mean,
    /// Mean of the group means (most VTAB papers).
    GroupMean,
}

impl Averaging {
    /// Column title: `"Mean"` or `"Group mean"`.
    pub fn title(self) -> &'static str {
        match self {
            Averaging::Mean => "Mean",
            Averaging::GroupMean => "Group mean",
        }
    }

    fn definition(self) -> &'static str {
        match self {
            Averaging::Mean => "Mean = plain mean of the task values",
            Averaging::GroupMean => {
                "Group mean = mean of the group means, each group mean over that group's tasks"
            }
        }
    }
}

/// The suite as far as reports need it; filled by the runner from its suite definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportLayout {
    /// Suite name; only records with this [`RunRecord::suite`] are used.
    pub suite: String,
    /// Task columns, in order.
    pub tasks: Vec<String>,
    /// Task groups `(name, tasks)`, in order; may be empty (then no group mean).
    pub groups: Vec<(String, Vec<String>)>,
    /// Average columns, in order.
    pub averaging: Vec<Averaging>,
    /// Published numbers to print beside ours.
    pub published: Option<PublishedTable>,
    /// Each task's chance level in percent (layout order; `None` where it has none, as ranking);
    /// empty when unknown. Tables show it in a `chance` row under the methods.
    pub chance: Vec<Option<f64>>,
}

/// Published results, in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedTable {
    /// Where the numbers come from (paper, README), shown in the footnotes.
    pub source: String,
    /// `label -> task -> percent`. Labels match a row by its label, else by its method, both
    /// case-insensitively (`"LoRA"` matches method `lora`).
    pub results: BTreeMap<String, BTreeMap<String, f64>>,
    /// `label -> published average` of kind [`means_averaging`](Self::means_averaging), as printed
    /// in the source. Averages not given here are computed from `results` when they cover every
    /// task of the layout.
    pub means: BTreeMap<String, f64>,
    /// Which average `means` holds (papers mostly quote the group mean).
    #[serde(default = "default_means_averaging")]
    pub means_averaging: Averaging,
}

fn default_means_averaging() -> Averaging {
    Averaging::GroupMean
}

/// How a cell's 95% interval was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalKind {
    /// Student t over seeds (at least two seeds).
    TOverSeeds,
    /// Percentile bootstrap over the test examples of a single run.
    BootstrapOverExamples,
}

/// The runs of one label on one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// Primary-metric values of the completed runs, percent, ordered by seed.
    pub values: Vec<f64>,
    /// Seeds of those values.
    pub seeds: Vec<u64>,
    /// Summary of `values` (`None` when no run completed).
    pub summary: Option<Summary>,
    /// Runs that diverged.
    pub diverged: usize,
    /// Runs that failed (including completed runs without their primary metric).
    pub failed: usize,
    /// 95% interval of the mean, percent (see [`IntervalKind`]); `None` for one seed without
    /// per-example results.
    pub ci95: Option<(f64, f64)>,
    pub interval: Option<IntervalKind>,
}

impl Cell {
    /// The interval as printed: `[71.2, 73.4]`, with `b` appended for a bootstrap interval.
    pub fn interval_text(&self) -> String {
        match (self.ci95, self.interval) {
            (Some((lo, hi)), Some(kind)) => format!(
                "[{lo:.1}, {hi:.1}]{}",
                if kind == IntervalKind::BootstrapOverExamples {
                    "ᵇ"
                } else {
                    ""
                }
            ),
            _ if self.summary.is_some() => "n/a".into(),
            _ => "—".into(),
        }
    }

    /// Mean over completed seeds, percent.
    pub fn mean(&self) -> Option<f64> {
        self.summary.map(|s| s.mean)
    }

    /// The cell as printed (see the crate docs).
    pub fn text(&self) -> String {
        let mut problems = Vec::new();
        if self.diverged > 0 {
            problems.push(format!("{} diverged", self.diverged));
        }
        if self.failed > 0 {
            problems.push(format!("{} failed", self.failed));
        }
        match self.summary {
            Some(s) => {
                let mut text = if s.n >= 2 {
                    format!("{:.1} ±{:.1} ({}", s.mean, s.std, s.n)
                } else {
                    format!("{:.1} ({}", s.mean, s.n)
                };
                for p in problems {
                    text.push_str("; ");
                    text.push_str(&p);
                }
                text.push(')');
                text
            }
            None => match (self.diverged > 0, self.failed > 0) {
                (true, true) => "diverged/failed".into(),
                (true, false) => "diverged".into(),
                (false, true) => "failed".into(),
                (false, false) => "—".into(),
            },
        }
    }
}

/// One average of one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AverageCell {
    pub averaging: Averaging,
    /// The average, percent (`None` when no task has a value).
    pub value: Option<f64>,
    /// Tasks that contributed.
    pub tasks_used: usize,
    /// Tasks the average is defined over (all layout tasks for the mean, the grouped tasks for
    /// the group mean).
    pub tasks_total: usize,
    /// Groups with at least one value (group mean only; 0 for the mean).
    pub groups_used: usize,
    /// Groups in the layout (group mean only; 0 for the mean).
    pub groups_total: usize,
}

impl AverageCell {
    /// Whether the average leaves out tasks.
    pub fn is_partial(&self) -> bool {
        self.value.is_some() && self.tasks_used < self.tasks_total
    }

    /// `72.3`, `63.2*` (partial) or `—`.
    pub fn text(&self) -> String {
        match self.value {
            Some(v) if self.is_partial() => format!("{v:.1}*"),
            Some(v) => format!("{v:.1}"),
            None => "—".into(),
        }
    }
}

/// Published numbers for one of our rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishedRow {
    /// The label in the published table.
    pub label: String,
    /// Per task (layout order): published value, percent.
    pub cells: Vec<Option<f64>>,
    /// Per task: ours minus published, percentage points (where both exist).
    pub deltas: Vec<Option<f64>>,
    /// Per layout group: published group mean (when every task of the group is published).
    pub group_means: Vec<Option<f64>>,
    /// Per layout group: ours minus published (when our group is complete too).
    pub group_deltas: Vec<Option<f64>>,
    /// Per averaging column: published average (as quoted, or computed over all tasks).
    pub averages: Vec<Option<f64>>,
    /// Per averaging column: ours minus published, and whether it was computed over our subset of
    /// tasks (a partial average of ours).
    pub average_deltas: Vec<Option<(f64, bool)>>,
}

/// Trainable parameters of a row, averaged over its records (heads differ per task).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trainable {
    /// Mean trainable parameter count.
    pub params: f64,
    /// Mean of trainable / total, percent.
    pub percent: f64,
}

impl Trainable {
    /// E.g. `0.29M (0.34%)`.
    pub fn text(&self) -> String {
        let pct = if self.percent > 0.0 && self.percent < 0.01 {
            "<0.01%".to_string()
        } else {
            format!("{:.2}%", self.percent)
        };
        format!("{} ({pct})", format_params(self.params))
    }
}

/// What a row costs: storage, memory, speed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Cost {
    /// Mean adapter size on disk over completed runs, bytes.
    pub adapter_bytes: Option<f64>,
    /// Largest peak memory over the runs, bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Mean training throughput over completed runs, examples per second.
    pub train_examples_per_second: Option<f64>,
    /// Mean training time over completed runs, seconds.
    pub train_seconds: Option<f64>,
}

/// One method label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaderboardRow {
    pub label: String,
    /// Distinct [`RunRecord::method`]s under this label.
    pub methods: Vec<String>,
    /// Per task, layout order.
    pub cells: Vec<Cell>,
    /// Per layout group: mean of the group's task means with a value.
    pub group_means: Vec<Option<f64>>,
    /// Mean rank over the tasks this row has a value for (1 = best).
    pub avg_rank: Option<f64>,
    pub cost: Cost,
    /// Per averaging column (`Leaderboard::averaging` order).
    pub averages: Vec<AverageCell>,
    pub trainable: Option<Trainable>,
    pub published: Option<PublishedRow>,
}

/// A suite's results table. Fields are public for programmatic use; see the crate docs for the
/// conventions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaderboard {
    pub suite: String,
    pub tasks: Vec<String>,
    pub groups: Vec<(String, Vec<String>)>,
    /// Average columns shown (a group mean is dropped when the layout has no groups).
    pub averaging: Vec<Averaging>,
    pub rows: Vec<LeaderboardRow>,
    /// Source of the published numbers, if any.
    pub published_source: Option<String>,
    /// Distinct primary metrics of the records used.
    pub metrics: Vec<String>,
    /// Model-selection rules found, with run counts.
    pub selection_rules: Vec<(String, usize)>,
    /// Distinct seeds.
    pub seeds: Vec<u64>,
    /// Distinct held-out folds of cross-validated suites (`protocol.folds`); empty otherwise. A cell
    /// then summarises every (seed, fold) run: mean and sample std over the folds (and seeds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub folds: Vec<u64>,
    /// Environment summary lines (git revisions, devices, versions), deterministic.
    pub environment: Vec<String>,
    /// Records of this suite whose task is not in the layout (ignored), by task.
    pub ignored_tasks: Vec<(String, usize)>,
    /// Number of records used.
    pub runs: usize,
    /// Ranking suites: per task (layout order), the queries its scores are over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_counts: Vec<(String, QueryCounts)>,
    /// Manifest artifacts some run read without a `harness fetch` receipt (as found on disk,
    /// unverified against the pins), by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unverified_data: Vec<String>,
    /// Each task's chance level in percent, where known (layout order; empty when unknown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chance: Vec<Option<f64>>,
    /// Multi-task runs: per row label, the mean over its runs of each [`DIAGNOSTICS`] metric
    /// its records have.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<(String, BTreeMap<String, f64>)>,
    /// Class-incremental runs: Ā, A_T, forgetting and the accuracy curve per row and task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continual: Option<continual::ContinualTable>,
    /// Music-generation runs: likelihoods and generated-clip measures per row and task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub music: Option<music::MusicTable>,
}

/// Run-level metrics of multi-task runs that a report lists beside the table: name, column title.
pub const DIAGNOSTICS: &[(&str, &str)] = &[
    ("allocation_recovery", "Allocation recovery"),
    ("allocation_recovery_chance", "Chance"),
    ("gradient_cosine", "Gradient cosine"),
];

/// The queries a ranking task's averages are over, as its records count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueryCounts {
    /// Queries with judgements.
    pub judged: u64,
    /// Judged queries the first stage found candidates for.
    pub retrieved: u64,
    /// Queries every average divides by.
    pub evaluated: u64,
}

impl QueryCounts {
    /// The counts a ranking run's record keeps (`queries_judged`, `queries_retrieved`,
    /// `queries_evaluated`); `None` for other records.
    fn of(record: &RunRecord) -> Option<Self> {
        let count = |name: &str| record.metrics.get(name).map(|&v| v as u64);
        Some(Self {
            judged: count("queries_judged")?,
            retrieved: count("queries_retrieved")?,
            evaluated: count("queries_evaluated")?,
        })
    }
}

/// Per label (in `order`, then first seen), the mean of each [`DIAGNOSTICS`] metric over the
/// suite's completed records that have it.
fn diagnostics(
    records: &[RunRecord],
    suite: &str,
    order: &[String],
) -> Vec<(String, BTreeMap<String, f64>)> {
    let mut sums: BTreeMap<String, BTreeMap<String, (f64, usize)>> = BTreeMap::new();
    let mut seen: Vec<String> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.suite == suite && r.status == RunStatus::Completed)
    {
        for (name, _) in DIAGNOSTICS {
            if let Some(&v) = r.metrics.get(*name) {
                let entry = sums
                    .entry(r.label.clone())
                    .or_default()
                    .entry(name.to_string())
                    .or_default();
                entry.0 += v;
                entry.1 += 1;
                if !seen.contains(&r.label) {
                    seen.push(r.label.clone());
                }
            }
        }
    }
    let mut labels: Vec<&String> = order.iter().filter(|l| seen.contains(l)).collect();
    labels.extend(seen.iter().filter(|l| !order.contains(l)));
    labels
        .into_iter()
        .map(|label| {
            let means = sums[label]
                .iter()
                .map(|(name, (sum, n))| (name.clone(), sum / *n as f64))
                .collect();
            (label.clone(), means)
        })
        .collect()
}

/// Each task's query counts, from the first of its records that has them (every run of a task
/// reranks the same first stage against the same judgements).
fn query_counts(records: &[&RunRecord], tasks: &[String]) -> Vec<(String, QueryCounts)> {
    tasks
        .iter()
        .filter_map(|task| {
            records
                .iter()
                .filter(|r| &r.task == task)
                .find_map(|r| QueryCounts::of(r))
                .map(|counts| (task.clone(), counts))
        })
        .collect()
}

impl Leaderboard {
    /// Builds the table; rows in first-seen order of labels in `records`.
    pub fn build(records: &[RunRecord], layout: &ReportLayout) -> Self {
        Self::build_with_order(records, layout, &[])
    }

    /// Like [`build`](Self::build), with the labels in `order` first (those that have records),
    /// then any others in first-seen order.
    pub fn build_with_order(
        records: &[RunRecord],
        layout: &ReportLayout,
        order: &[String],
    ) -> Self {
        let diagnostics = diagnostics(records, &layout.suite, order);
        // A multi-task run's record counts once per member task.
        let records = per_task_records(records);
        let suite_records: Vec<&RunRecord> =
            records.iter().filter(|r| r.suite == layout.suite).collect();
        let task_set: BTreeSet<&str> = layout.tasks.iter().map(String::as_str).collect();
        let mut ignored: BTreeMap<String, usize> = BTreeMap::new();
        let used: Vec<&RunRecord> = suite_records
            .into_iter()
            .filter(|r| {
                let keep = task_set.contains(r.task.as_str());
                if !keep {
                    *ignored.entry(r.task.clone()).or_default() += 1;
                }
                keep
            })
            .collect();

        // Row order.
        let mut labels: Vec<String> = Vec::new();
        for l in order {
            if used.iter().any(|r| &r.label == l) && !labels.contains(l) {
                labels.push(l.clone());
            }
        }
        for r in &used {
            if !labels.contains(&r.label) {
                labels.push(r.label.clone());
            }
        }

        let averaging: Vec<Averaging> = layout
            .averaging
            .iter()
            .copied()
            .filter(|a| *a != Averaging::GroupMean || !layout.groups.is_empty())
            .collect();

        let mut rows: Vec<LeaderboardRow> = labels
            .iter()
            .map(|label| {
                let mine: Vec<&RunRecord> =
                    used.iter().copied().filter(|r| &r.label == label).collect();
                build_row(label, &mine, layout, &averaging)
            })
            .collect();
        assign_average_ranks(&mut rows, layout.tasks.len());

        let metrics: BTreeSet<String> = used.iter().map(|r| r.primary_metric.clone()).collect();
        let mut selection: BTreeMap<String, usize> = BTreeMap::new();
        for r in &used {
            *selection.entry(r.selection.clone()).or_default() += 1;
        }
        let seeds: BTreeSet<u64> = used.iter().map(|r| r.seed).collect();
        let folds: BTreeSet<u64> = used
            .iter()
            .filter_map(|r| r.config.get("fold").and_then(|f| f.as_u64()))
            .collect();

        Leaderboard {
            suite: layout.suite.clone(),
            tasks: layout.tasks.clone(),
            groups: layout.groups.clone(),
            averaging,
            rows,
            published_source: layout.published.as_ref().map(|p| p.source.clone()),
            metrics: metrics.into_iter().collect(),
            selection_rules: selection.into_iter().collect(),
            seeds: seeds.into_iter().collect(),
            folds: folds.into_iter().collect(),
            environment: environment_summary(&used),
            ignored_tasks: ignored.into_iter().collect(),
            // A multi-task run is one run, whatever the number of its member columns.
            runs: used
                .iter()
                .map(|r| r.run_id.as_str())
                .collect::<BTreeSet<_>>()
                .len(),
            query_counts: query_counts(&used, &layout.tasks),
            unverified_data: used
                .iter()
                .flat_map(|r| r.data.iter().filter(|a| !a.receipt).map(|a| a.id.clone()))
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect(),
            diagnostics,
            chance: layout.chance.clone(),
            continual: continual::continual_table(&used, &labels, &layout.tasks),
            music: music::music_table(&used, &labels, &layout.tasks),
        }
    }

    fn header(&self) -> Vec<String> {
        let mut h = vec!["method".to_string()];
        h.extend(self.tasks.iter().cloned());
        h.extend(self.groups.iter().map(|(g, _)| title_case(g)));
        h.extend(self.averaging.iter().map(|a| a.title().to_string()));
        h.push("Avg rank".into());
        h.push("Trainable".into());
        h
    }

    /// Table rows as text: ours, each followed by its published row if any.
    fn body(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for row in &self.rows {
            let mut cells = vec![row.label.clone()];
            cells.extend(row.cells.iter().map(Cell::text));
            cells.extend(
                row.group_means
                    .iter()
                    .map(|g| g.map_or("—".into(), |v| format!("{v:.1}"))),
            );
            cells.extend(row.averages.iter().map(AverageCell::text));
            cells.push(row.avg_rank.map_or("—".into(), |r| format!("{r:.2}")));
            cells.push(row.trainable.map_or("—".into(), |t| t.text()));
            out.push(cells);
            if let Some(p) = &row.published {
                let mut cells = vec![format!("{} (published)", p.label)];
                for (v, d) in p.cells.iter().zip(&p.deltas) {
                    cells.push(published_text(*v, d.map(|d| (d, false))));
                }
                for (v, d) in p.group_means.iter().zip(&p.group_deltas) {
                    cells.push(published_text(*v, d.map(|d| (d, false))));
                }
                for (v, d) in p.averages.iter().zip(&p.average_deltas) {
                    cells.push(published_text(*v, *d));
                }
                cells.push(String::new());
                cells.push(String::new());
                out.push(cells);
            }
        }
        if self.chance.iter().any(Option::is_some) && !self.rows.is_empty() {
            let mut cells = vec!["chance".to_string()];
            cells.extend(
                self.chance
                    .iter()
                    .map(|c| c.map_or(String::new(), |v| format!("{v:.1}"))),
            );
            let width = out.first().map_or(cells.len(), Vec::len);
            cells.resize(width, String::new());
            out.push(cells);
        }
        out
    }

    /// Footnotes shared by the terminal and markdown output (plain text, one per line).
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for row in &self.rows {
            let partial: Vec<String> = row
                .averages
                .iter()
                .filter(|a| a.is_partial())
                .map(|a| match a.averaging {
                    Averaging::Mean => {
                        format!("mean over {} of {} tasks", a.tasks_used, a.tasks_total)
                    }
                    Averaging::GroupMean => format!(
                        "group mean over {} of {} tasks in {} of {} groups",
                        a.tasks_used, a.tasks_total, a.groups_used, a.groups_total
                    ),
                })
                .collect();
            if !partial.is_empty() {
                notes.push(format!("* {}: {}", row.label, partial.join("; ")));
            }
        }
        if !self.folds.is_empty() {
            notes.push(format!(
                "Cross-validated over {} folds: cells are mean ±std over folds x seeds (runs).",
                self.folds.len()
            ));
        }
        if !self.unverified_data.is_empty() {
            notes.push(format!(
                "Warning: read without a `harness fetch` receipt, so unverified against the \
                 manifest's pins: {} (`harness verify SUITE` checks a copy of your own)",
                self.unverified_data.join(", ")
            ));
        }
        if !self.query_counts.is_empty() {
            let counts: Vec<String> = self
                .query_counts
                .iter()
                .map(|(task, c)| format!("{task} {}/{}/{}", c.judged, c.retrieved, c.evaluated))
                .collect();
            notes.push(format!(
                "Queries judged / with first-stage candidates / averaged over: {}",
                counts.join(", ")
            ));
        }
        if let Some(source) = &self.published_source {
            if self.rows.iter().any(|r| r.published.is_some()) {
                notes.push(format!(
                    "(published) rows quote {source}; Δ = ours − published, percentage points; \
                     Δ* = against the published average over the same tasks as our partial average"
                ));
            }
        }
        notes
    }

    /// The leaderboard for a terminal: comfy-table (UTF-8 preset, dynamic arrangement to the
    /// terminal width when there is one), then the notes.
    pub fn terminal(&self) -> String {
        self.render_terminal(None)
    }

    /// [`terminal`](Self::terminal) at a fixed width (for logs and tests).
    pub fn terminal_with_width(&self, width: u16) -> String {
        self.render_terminal(Some(width))
    }

    fn render_terminal(&self, width: Option<u16>) -> String {
        let mut table = new_table(width);
        table.set_header(self.header());
        for row in self.body() {
            table.add_row(row);
        }
        keep_first_column_whole(&mut table);
        for i in 1..table.column_count() {
            if let Some(c) = table.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        let mut out = format!(
            "{} — {} (percent)\n{table}\n",
            self.suite,
            self.metric_title()
        );
        for n in self.notes() {
            out.push_str(&n);
            out.push('\n');
        }
        out
    }

    fn metric_title(&self) -> String {
        if self.metrics.is_empty() {
            "no runs".into()
        } else {
            self.metrics.join(", ")
        }
    }

    /// GitHub markdown: title, table, then footnotes (averaging definitions, partial averages,
    /// published source, model-selection rules, seeds, environment).
    pub fn markdown(&self) -> String {
        self.markdown_with_figures(&[])
    }

    /// [`markdown`](Self::markdown) with the 95% interval and cost tables and links to `figures`
    /// (paths relative to the markdown file).
    pub fn markdown_with_figures(&self, figures: &[Figure]) -> String {
        let mut out = format!("# {} leaderboard\n\n", self.suite);
        let over = if self.folds.is_empty() {
            "seeds (number of completed seeds)".to_string()
        } else {
            format!(
                "{} cross-validation folds x seeds (number of completed runs)",
                self.folds.len()
            )
        };
        out.push_str(&format!(
            "Metric: {} (percent). Cells: mean ±sample std over {over}; \
             `diverged`/`failed`: no seed completed; —: not run.\n\n",
            self.metric_title()
        ));
        let header = self.header();
        out.push_str(&md_row(&header));
        let align: Vec<String> = (0..header.len())
            .map(|i| if i == 0 { "---" } else { "---:" }.to_string())
            .collect();
        out.push_str(&format!("|{}|\n", align.join("|")));
        for row in self.body() {
            out.push_str(&md_row(&row));
        }
        out.push('\n');
        if let Some(table) = &self.continual {
            out.push_str(&table.markdown());
        }
        if let Some(table) = &self.music {
            out.push_str(&table.markdown());
        }
        out.push_str(&self.markdown_intervals());
        out.push_str(&self.markdown_cost());
        out.push_str(&self.markdown_diagnostics());
        if !figures.is_empty() {
            out.push_str("## Figures\n\n");
            for f in figures {
                out.push_str(&format!("![{}]({}) ([PNG]({}))\n\n", f.title, f.svg, f.png));
            }
        }

        let mut foot: Vec<String> = Vec::new();
        for a in &self.averaging {
            foot.push(format!("{}.", a.definition()));
        }
        if self.averaging.contains(&Averaging::GroupMean) {
            let groups: Vec<String> = self
                .groups
                .iter()
                .map(|(g, t)| format!("{g} ({}): {}", t.len(), t.join(", ")))
                .collect();
            foot.push(format!("Groups: {}.", groups.join("; ")));
        }
        foot.push(
            "Averages use only the tasks with a value for that row; trainable parameters are \
             averaged over the row's runs (percent of total parameters)."
                .into(),
        );
        for n in self.notes() {
            foot.push(md_escape(&n));
        }
        if !self.selection_rules.is_empty() {
            let rules: Vec<String> = self
                .selection_rules
                .iter()
                .map(|(rule, n)| format!("{rule} ({n} run{})", plural(*n)))
                .collect();
            foot.push(format!("Model selection: {}.", rules.join("; ")));
        }
        if !self.seeds.is_empty() {
            let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
            foot.push(format!("Seeds: {}.", seeds.join(", ")));
        }
        if !self.folds.is_empty() {
            let folds: Vec<String> = self.folds.iter().map(u64::to_string).collect();
            foot.push(format!(
                "Cross-validated: each of folds {} held out once; a cell averages its task's folds and seeds.",
                folds.join(", ")
            ));
        }
        for e in &self.environment {
            foot.push(format!("{e}."));
        }
        if !self.ignored_tasks.is_empty() {
            let t: Vec<String> = self
                .ignored_tasks
                .iter()
                .map(|(t, n)| format!("{t} ({n})"))
                .collect();
            foot.push(format!(
                "Ignored runs of tasks not in the layout: {}.",
                t.join(", ")
            ));
        }
        foot.push(format!("{} run{} in total.", self.runs, plural(self.runs)));
        for f in foot {
            out.push_str("- ");
            out.push_str(&f);
            out.push('\n');
        }
        out
    }

    fn markdown_intervals(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "## 95% intervals\n\nStudent t over seeds; ᵇ: one seed, percentile bootstrap over its test examples \
             (1,000 resamples); n/a: one seed without per-example results.\n\n",
        );
        let mut header = vec!["method".to_string()];
        header.extend(self.tasks.iter().cloned());
        out.push_str(&md_row(&header));
        out.push_str(&md_align(header.len()));
        for row in &self.rows {
            let mut cells = vec![row.label.clone()];
            cells.extend(row.cells.iter().map(Cell::interval_text));
            out.push_str(&md_row(&cells));
        }
        out.push('\n');
        out
    }

    fn markdown_diagnostics(&self) -> String {
        if self.diagnostics.is_empty() {
            return String::new();
        }
        let shown: Vec<&(&str, &str)> = DIAGNOSTICS
            .iter()
            .filter(|(name, _)| self.diagnostics.iter().any(|(_, m)| m.contains_key(*name)))
            .collect();
        let mut out = String::from(
            "## Multi-task diagnostics\n\nAllocation recovery: the fraction of tasks whose two \
             most-weighted learned skills are their two true skills, under the best naming of \
             learned skills by true ones (chance: the same score of random allocations). Gradient \
             cosine: the mean over task pairs of the cosine between their loss gradients on the \
             method's parameters, after training. Means over runs.\n\n",
        );
        let mut header = vec!["method".to_string()];
        header.extend(shown.iter().map(|(_, title)| title.to_string()));
        out.push_str(&md_row(&header));
        out.push_str(&md_align(header.len()));
        for (label, metrics) in &self.diagnostics {
            let mut row = vec![label.clone()];
            row.extend(
                shown.iter().map(|(name, _)| {
                    metrics.get(*name).map_or("—".into(), |v| format!("{v:.3}"))
                }),
            );
            out.push_str(&md_row(&row));
        }
        out.push('\n');
        out
    }

    fn markdown_cost(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let mut out = String::from("## Cost\n\n");
        let header: Vec<String> = [
            "method",
            "Trainable",
            "Adapter on disk",
            "Peak memory",
            "Train examples/s",
            "Train time",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        out.push_str(&md_row(&header));
        out.push_str(&md_align(header.len()));
        for row in &self.rows {
            let c = &row.cost;
            out.push_str(&md_row(&[
                row.label.clone(),
                row.trainable.map_or("—".into(), |t| t.text()),
                c.adapter_bytes.map_or("—".into(), format_bytes),
                c.peak_memory_bytes.map_or("—".into(), format_memory),
                c.train_examples_per_second
                    .map_or("—".into(), |v| format!("{v:.1}")),
                c.train_seconds.map_or("—".into(), |v| format!("{v:.1} s")),
            ]));
        }
        out.push('\n');
        out
    }

    /// Writes [`markdown`](Self::markdown) atomically to `<reports_dir>/<suite>.md` (characters
    /// other than letters, digits, `.`, `_`, `-` in the suite name become `_`) and returns the path.
    pub fn write_markdown(&self, reports_dir: &Path) -> Result<PathBuf> {
        self.write_markdown_with_figures(reports_dir, &[])
    }

    /// [`write_markdown`](Self::write_markdown) linking `figures`.
    pub fn write_markdown_with_figures(
        &self,
        reports_dir: &Path,
        figures: &[Figure],
    ) -> Result<PathBuf> {
        let path = reports_dir.join(format!("{}.md", self.file_stem()));
        peftbench_records::write_atomic(&path, self.markdown_with_figures(figures).as_bytes())?;
        Ok(path)
    }

    /// The suite name as a file name: characters other than letters, digits, `.`, `_`, `-`
    /// become `_`.
    pub fn file_stem(&self) -> String {
        let mut name: String = self
            .suite
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || name.starts_with('.') {
            name.insert(0, '_');
        }
        name
    }

    /// The average a single-number summary of a row uses: the group mean when shown (most
    /// papers), else the plain mean.
    pub fn headline_averaging(&self) -> Option<Averaging> {
        if self.averaging.contains(&Averaging::GroupMean) {
            Some(Averaging::GroupMean)
        } else {
            self.averaging.first().copied()
        }
    }
}

/// Ranks rows per task (1 = best, ties share their mean rank) and stores each row's mean rank
/// over the tasks it has a value for.
fn assign_average_ranks(rows: &mut [LeaderboardRow], tasks: usize) {
    let mut sums = vec![(0.0f64, 0usize); rows.len()];
    for t in 0..tasks {
        let values: Vec<(usize, f64)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.cells[t].mean().map(|m| (i, m)))
            .collect();
        for &(i, v) in &values {
            let better = values.iter().filter(|(_, w)| *w > v).count();
            let equal = values.iter().filter(|(_, w)| *w == v).count();
            // Ranks better+1 ..= better+equal, averaged.
            let rank = better as f64 + (equal as f64 + 1.0) / 2.0;
            sums[i].0 += rank;
            sums[i].1 += 1;
        }
    }
    for (row, (sum, n)) in rows.iter_mut().zip(sums) {
        row.avg_rank = (n > 0).then(|| sum / n as f64);
    }
}

fn title_case(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `512 B`, `4.8 kB`, `1.2 MB`, `3.40 GB` (decimal units, as file sizes are quoted in papers).
pub fn format_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

/// `512 MiB`, `1.50 GiB` (binary units, as memory is reported by tools).
pub fn format_memory(b: u64) -> String {
    let mib = b as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

fn md_align(n: usize) -> String {
    let align: Vec<&str> = (0..n)
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    format!("|{}|\n", align.join("|"))
}

fn build_row(
    label: &str,
    records: &[&RunRecord],
    layout: &ReportLayout,
    averaging: &[Averaging],
) -> LeaderboardRow {
    let methods: Vec<String> = {
        let mut m: Vec<String> = Vec::new();
        for r in records {
            if !m.contains(&r.method) {
                m.push(r.method.clone());
            }
        }
        m
    };
    let cells: Vec<Cell> = layout
        .tasks
        .iter()
        .map(|task| {
            let mut runs: Vec<&RunRecord> = records
                .iter()
                .copied()
                .filter(|r| &r.task == task)
                .collect();
            runs.sort_by(|a, b| a.seed.cmp(&b.seed).then_with(|| a.run_id.cmp(&b.run_id)));
            let mut cell = Cell {
                values: Vec::new(),
                seeds: Vec::new(),
                summary: None,
                diverged: 0,
                failed: 0,
                ci95: None,
                interval: None,
            };
            let mut single_correct = None;
            for r in runs {
                match (r.status, r.primary_value()) {
                    (RunStatus::Completed, Some(v)) if v.is_finite() => {
                        cell.values.push(v * 100.0);
                        cell.seeds.push(r.seed);
                        single_correct = r.eval_correct.as_ref();
                    }
                    (RunStatus::Diverged, _) => cell.diverged += 1,
                    _ => cell.failed += 1,
                }
            }
            if !cell.values.is_empty() {
                let summary = summarize(&cell.values);
                cell.summary = Some(summary);
                if let Some((lo, hi)) = summary.ci95 {
                    // Every primary metric is a fraction (accuracy, F1, MAP, nDCG, ...): a Student
                    // t interval over few seeds can reach past it, so it is clipped to [0, 100].
                    cell.ci95 = Some((lo.max(0.0), hi.min(100.0)));
                    cell.interval = Some(IntervalKind::TOverSeeds);
                } else if let Some(flags) = single_correct.and_then(|c| c.to_bools().ok()) {
                    // The bootstrap is of accuracy; only meaningful when the primary metric is the
                    // accuracy those flags give.
                    let acc = peftbench_metrics::accuracy_from_correct(&flags) * 100.0;
                    if (acc - summary.mean).abs() < 1e-6 {
                        let (lo, hi) = bootstrap_ci95(&flags, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
                        cell.ci95 = Some((lo * 100.0, hi * 100.0));
                        cell.interval = Some(IntervalKind::BootstrapOverExamples);
                    }
                }
            }
            cell
        })
        .collect();

    let ours: BTreeMap<&str, f64> = layout
        .tasks
        .iter()
        .zip(&cells)
        .filter_map(|(t, c)| c.mean().map(|m| (t.as_str(), m)))
        .collect();
    let averages: Vec<AverageCell> = averaging
        .iter()
        .map(|&a| average(a, &ours, layout))
        .collect();
    let group_means: Vec<Option<f64>> = layout
        .groups
        .iter()
        .map(|(_, tasks)| {
            let present: Vec<f64> = tasks
                .iter()
                .filter_map(|t| ours.get(t.as_str()).copied())
                .collect();
            mean(&present)
        })
        .collect();

    let completed: Vec<&&RunRecord> = records.iter().filter(|r| r.is_completed()).collect();
    let mean_of = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
        let v: Vec<f64> = completed
            .iter()
            .filter_map(|r| f(r))
            .filter(|v| v.is_finite())
            .collect();
        mean(&v)
    };
    let cost = Cost {
        adapter_bytes: mean_of(&|r| r.adapter_bytes.map(|b| b as f64)),
        peak_memory_bytes: records.iter().filter_map(|r| r.peak_memory_bytes).max(),
        train_examples_per_second: mean_of(&|r| Some(r.train_examples_per_second)),
        train_seconds: mean_of(&|r| Some(r.train_seconds)),
    };

    let trainable = {
        let with_total: Vec<&&RunRecord> = records.iter().filter(|r| r.total_params > 0).collect();
        (!with_total.is_empty()).then(|| {
            let n = with_total.len() as f64;
            Trainable {
                params: with_total
                    .iter()
                    .map(|r| r.trainable_params as f64)
                    .sum::<f64>()
                    / n,
                percent: with_total
                    .iter()
                    .map(|r| r.trainable_params as f64 / r.total_params as f64 * 100.0)
                    .sum::<f64>()
                    / n,
            }
        })
    };

    let published = layout
        .published
        .as_ref()
        .and_then(|p| published_row(p, label, &methods, &cells, &ours, &averages, layout));

    LeaderboardRow {
        label: label.to_string(),
        methods,
        cells,
        group_means,
        avg_rank: None,
        cost,
        averages,
        trainable,
        published,
    }
}

/// An average over the tasks present in `values`.
fn average(a: Averaging, values: &BTreeMap<&str, f64>, layout: &ReportLayout) -> AverageCell {
    match a {
        Averaging::Mean => {
            let present: Vec<f64> = layout
                .tasks
                .iter()
                .filter_map(|t| values.get(t.as_str()).copied())
                .collect();
            AverageCell {
                averaging: a,
                value: mean(&present),
                tasks_used: present.len(),
                tasks_total: layout.tasks.len(),
                groups_used: 0,
                groups_total: 0,
            }
        }
        Averaging::GroupMean => {
            let grouped: BTreeSet<&str> = layout
                .groups
                .iter()
                .flat_map(|(_, t)| t.iter().map(String::as_str))
                .collect();
            let mut tasks_used = 0;
            let group_means: Vec<f64> = layout
                .groups
                .iter()
                .filter_map(|(_, tasks)| {
                    let present: Vec<f64> = tasks
                        .iter()
                        .filter_map(|t| values.get(t.as_str()).copied())
                        .collect();
                    tasks_used += present.len();
                    mean(&present)
                })
                .collect();
            AverageCell {
                averaging: a,
                value: mean(&group_means),
                tasks_used,
                tasks_total: grouped.len(),
                groups_used: group_means.len(),
                groups_total: layout.groups.len(),
            }
        }
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn published_row(
    table: &PublishedTable,
    label: &str,
    methods: &[String],
    cells: &[Cell],
    ours: &BTreeMap<&str, f64>,
    averages: &[AverageCell],
    layout: &ReportLayout,
) -> Option<PublishedRow> {
    let keys: BTreeSet<&String> = table.results.keys().chain(table.means.keys()).collect();
    let find = |name: &str| {
        keys.iter()
            .find(|k| k.as_str() == name)
            .or_else(|| keys.iter().find(|k| k.eq_ignore_ascii_case(name)))
            .map(|k| k.to_string())
    };
    let key = find(label).or_else(|| methods.iter().find_map(|m| find(m)))?;
    let results = table.results.get(&key);
    let value = |task: &str| results.and_then(|r| r.get(task)).copied();

    let pub_cells: Vec<Option<f64>> = layout.tasks.iter().map(|t| value(t)).collect();
    let deltas = cells
        .iter()
        .zip(&pub_cells)
        .map(|(c, p)| Some(c.mean()? - (*p)?))
        .collect();

    let all_pub: BTreeMap<&str, f64> = layout
        .tasks
        .iter()
        .filter_map(|t| value(t).map(|v| (t.as_str(), v)))
        .collect();
    let complete_group = |values: &BTreeMap<&str, f64>, tasks: &[String]| {
        let v: Vec<f64> = tasks
            .iter()
            .filter_map(|t| values.get(t.as_str()).copied())
            .collect();
        (v.len() == tasks.len()).then(|| mean(&v)).flatten()
    };
    let mut pub_groups = Vec::new();
    let mut group_deltas = Vec::new();
    for (_, tasks) in &layout.groups {
        let p = complete_group(&all_pub, tasks);
        pub_groups.push(p);
        group_deltas.push(complete_group(ours, tasks).zip(p).map(|(o, p)| o - p));
    }
    let mut pub_averages = Vec::new();
    let mut average_deltas = Vec::new();
    for ours_avg in averages {
        let a = ours_avg.averaging;
        let quoted = (table.means_averaging == a)
            .then(|| table.means.get(&key).copied())
            .flatten();
        let computed = average(a, &all_pub, layout);
        let full = quoted.or_else(|| {
            (computed.tasks_used == computed.tasks_total && computed.tasks_total > 0)
                .then_some(computed.value)
                .flatten()
        });
        pub_averages.push(full);
        let delta = match ours_avg.value {
            None => None,
            Some(v) if !ours_avg.is_partial() => full.map(|f| (v - f, false)),
            Some(v) => {
                // Same tasks as ours, when the published table has them all.
                let same: BTreeMap<&str, f64> = ours
                    .keys()
                    .filter_map(|t| all_pub.get(t).map(|p| (*t, *p)))
                    .collect();
                (same.len() == ours.len())
                    .then(|| average(a, &same, layout).value.map(|p| (v - p, true)))
                    .flatten()
            }
        };
        average_deltas.push(delta);
    }
    Some(PublishedRow {
        label: key,
        cells: pub_cells,
        deltas,
        group_means: pub_groups,
        group_deltas,
        averages: pub_averages,
        average_deltas,
    })
}

fn published_text(value: Option<f64>, delta: Option<(f64, bool)>) -> String {
    match (value, delta) {
        (Some(v), Some((d, partial))) => {
            format!("{v:.1} (Δ{}{})", signed(d), if partial { "*" } else { "" })
        }
        (Some(v), None) => format!("{v:.1}"),
        // Published value of a partial average is absent but a same-task Δ exists.
        (None, Some((d, partial))) => format!("(Δ{}{})", signed(d), if partial { "*" } else { "" }),
        (None, None) => "—".into(),
    }
}

/// `+1.2`, `-2.3`; never `-0.0`.
fn signed(d: f64) -> String {
    let s = format!("{d:+.1}");
    if s == "-0.0" {
        "+0.0".into()
    } else {
        s
    }
}

/// `512`, `9999`, `0.29M`, `85.80M`, `1.23B`.
pub fn format_params(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e4 {
        format!("{:.2}M", n / 1e6)
    } else {
        format!("{n:.0}")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn environment_summary(records: &[&RunRecord]) -> Vec<String> {
    let mut revisions: BTreeSet<String> = BTreeSet::new();
    let mut devices: BTreeSet<String> = BTreeSet::new();
    let mut versions: BTreeSet<String> = BTreeSet::new();
    let mut kernels: BTreeSet<String> = BTreeSet::new();
    let mut crates: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        let e = &r.environment;
        revisions.insert(match (&e.git_revision, e.git_dirty) {
            (Some(rev), dirty) => format!(
                "{}{}",
                &rev[..rev.len().min(12)],
                if dirty == Some(true) { " (dirty)" } else { "" }
            ),
            (None, _) => "unknown".into(),
        });
        devices.insert(e.device.clone());
        versions.insert(e.peftbench_version.clone());
        kernels.extend(e.kernels.clone());
        for (k, v) in &e.crate_versions {
            crates.entry(k.clone()).or_default().insert(v.clone());
        }
    }
    let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
    let mut lines = Vec::new();
    if records.is_empty() {
        return lines;
    }
    lines.push(format!("Git revision: {}", join(&revisions)));
    lines.push(format!("Device: {}", join(&devices)));
    // Records made before the field existed have none; a line only when some run says.
    if !kernels.is_empty() {
        lines.push(format!("CPU kernels: {}", join(&kernels)));
    }
    let mut v = vec![format!("peftbench {}", join(&versions))];
    v.extend(crates.iter().map(|(k, s)| format!("{k} {}", join(s))));
    lines.push(format!("Versions: {}", v.join("; ")));
    lines
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('*', "\\*")
}

fn md_row(cells: &[String]) -> String {
    let cells: Vec<String> = cells.iter().map(|c| md_escape(c)).collect();
    format!("| {} |\n", cells.join(" | "))
}

fn new_table(width: Option<u16>) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(w) = width {
        table.set_width(w);
    }
    table
}

/// Labels and run ids are not wrapped; the other columns share the remaining width.
fn keep_first_column_whole(table: &mut Table) {
    if let Some(c) = table.column_mut(0) {
        c.set_constraint(ColumnConstraint::ContentWidth);
    }
}

/// Per-run details for the end of a sweep: run id, status, primary metric (percent), trainable
/// parameters, training seconds, training examples per second, peak memory (MiB); errors of failed
/// runs are listed under the table. Rows in the given order. Dynamic arrangement to the terminal
/// width when there is one.
pub fn runs_table(records: &[RunRecord]) -> String {
    render_runs_table(records, None)
}

/// [`runs_table`] at a fixed width.
pub fn runs_table_with_width(records: &[RunRecord], width: u16) -> String {
    render_runs_table(records, Some(width))
}

fn render_runs_table(records: &[RunRecord], width: Option<u16>) -> String {
    let mut table = new_table(width);
    table.set_header(vec![
        "run id",
        "status",
        "accuracy",
        "trainable",
        "train s",
        "examples/s",
        "peak MiB",
    ]);
    for r in records {
        table.add_row(vec![
            r.run_id.clone(),
            r.status.to_string(),
            r.primary_value()
                .filter(|v| v.is_finite())
                .map_or("—".into(), |v| format!("{:.2}", v * 100.0)),
            format_params(r.trainable_params as f64),
            format!("{:.1}", r.train_seconds),
            format!("{:.1}", r.train_examples_per_second),
            r.peak_memory_bytes.map_or("—".into(), |b| {
                format!("{:.0}", b as f64 / (1024.0 * 1024.0))
            }),
        ]);
    }
    keep_first_column_whole(&mut table);
    for i in 2..table.column_count() {
        if let Some(c) = table.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = format!("{table}\n");
    for r in records {
        if let Some(e) = &r.error {
            let first = e.lines().next().unwrap_or_default();
            out.push_str(&format!("{} ({}): {first}\n", r.run_id, r.status));
        }
    }
    out
}
