//! Class-incremental records seen as the papers show them: average incremental accuracy Ā (the
//! records' primary metric, the leaderboard's cells) beside last accuracy A_T and forgetting,
//! and the accuracy curve against the number of classes seen, one line per method.

use std::collections::BTreeMap;

use peftbench_records::{RunRecord, RunStatus};
use serde::Serialize;

pub use crate::spread::Spread;

/// The primary metric of class-incremental records.
pub const AVERAGE_INCREMENTAL_ACCURACY: &str = "avg_incremental_accuracy";

/// One method on one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContinualRow {
    pub label: String,
    pub task: String,
    /// Completed runs (seeds).
    pub runs: usize,
    pub stages: usize,
    /// Ā.
    pub average: Spread,
    /// A_T.
    pub last: Spread,
    pub forgetting: Option<Spread>,
    /// The mean accuracy (percent) after each stage, by the number of classes seen.
    pub curve: Vec<(usize, f64)>,
}

/// Every method's stream scores, in row order then task order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContinualTable {
    pub rows: Vec<ContinualRow>,
}

/// The table of the completed class-incremental runs among `records` (rows in `labels` order,
/// tasks in `tasks` order); `None` when there are none.
pub fn continual_table(
    records: &[&RunRecord],
    labels: &[String],
    tasks: &[String],
) -> Option<ContinualTable> {
    let streams: Vec<&RunRecord> = records
        .iter()
        .copied()
        .filter(|r| {
            r.status == RunStatus::Completed && r.primary_metric == AVERAGE_INCREMENTAL_ACCURACY
        })
        .collect();
    let mut rows = Vec::new();
    for label in labels {
        for task in tasks {
            let mine: Vec<&RunRecord> = streams
                .iter()
                .copied()
                .filter(|r| &r.label == label && &r.task == task)
                .collect();
            let values = |key: &str| -> Vec<f64> {
                mine.iter()
                    .filter_map(|r| r.metrics.get(key).map(|v| 100.0 * v))
                    .collect()
            };
            let (Some(average), Some(last)) = (
                Spread::of(&values(AVERAGE_INCREMENTAL_ACCURACY)),
                Spread::of(&values("last_accuracy")),
            ) else {
                continue;
            };
            // The curve's points are `accuracy@<classes seen>`.
            let mut points: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
            for r in &mine {
                for (key, value) in &r.metrics {
                    if let Some(seen) = key
                        .strip_prefix("accuracy@")
                        .and_then(|s| s.parse::<usize>().ok())
                    {
                        points.entry(seen).or_default().push(100.0 * value);
                    }
                }
            }
            let curve = points
                .into_iter()
                .map(|(seen, v)| (seen, v.iter().sum::<f64>() / v.len() as f64))
                .collect::<Vec<_>>();
            rows.push(ContinualRow {
                label: label.clone(),
                task: task.clone(),
                runs: mine.len(),
                stages: curve.len(),
                average,
                last,
                forgetting: Spread::of(&values("forgetting")),
                curve,
            });
        }
    }
    (!rows.is_empty()).then_some(ContinualTable { rows })
}

impl ContinualTable {
    /// Ā, A_T and forgetting side by side, as continual-learning papers print them.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "## Class-incremental: Ā, A_T and forgetting\n\nĀ: average incremental accuracy \
             (mean of the accuracy on all classes seen, after each stage); A_T: accuracy on \
             every class after the last stage; forgetting: mean over earlier stages of the best \
             accuracy on a stage's classes before the last stage minus the last (lower is \
             better). Percent, mean ±sample std over seeds.\n\n\
             | method | task | Ā | A_T | forgetting | stages | seeds |\n\
             |---|---|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                row.label,
                row.task,
                row.average.text(1),
                row.last.text(1),
                row.forgetting.map_or("—".into(), |f| f.text(1)),
                row.stages,
                row.runs
            ));
        }
        out.push('\n');
        out
    }
}
