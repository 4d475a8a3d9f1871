//! The leaderboard as data: JSON (the whole [`Leaderboard`]) and CSV (one tidy row per method and
//! task, group or average), for spreadsheets and plotting scripts.

use crate::{IntervalKind, Leaderboard};

/// The leaderboard as pretty JSON (every field of [`Leaderboard`]; percentages as in the tables,
/// missing values `null`).
pub fn json(board: &Leaderboard) -> String {
    let mut s = serde_json::to_string_pretty(board).expect("leaderboard serialises to JSON");
    s.push('\n');
    s
}

const CSV_HEADER: &[&str] = &[
    "suite",
    "kind",
    "method",
    "name",
    "seeds",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "interval",
    "diverged",
    "failed",
    "published",
    "delta",
];

/// One row per (method, task) with `kind = task`, then per (method, group) with `kind = group`,
/// then per (method, average) with `kind = average` (`name` = `Mean` or `Group mean`). Values in
/// percent; empty fields where a value does not exist.
pub fn csv(board: &Leaderboard) -> String {
    let mut out = String::new();
    push_row(&mut out, CSV_HEADER.iter().map(|s| s.to_string()));
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    for row in &board.rows {
        let published = row.published.as_ref();
        for (t, cell) in board.tasks.iter().zip(&row.cells) {
            let i = board.tasks.iter().position(|x| x == t).expect("own task");
            push_row(
                &mut out,
                [
                    board.suite.clone(),
                    "task".into(),
                    row.label.clone(),
                    t.clone(),
                    cell.values.len().to_string(),
                    num(cell.summary.map(|s| s.mean)),
                    num(cell.summary.filter(|s| s.n >= 2).map(|s| s.std)),
                    num(cell.ci95.map(|c| c.0)),
                    num(cell.ci95.map(|c| c.1)),
                    match cell.interval {
                        Some(IntervalKind::TOverSeeds) => "t_over_seeds".into(),
                        Some(IntervalKind::BootstrapOverExamples) => {
                            "bootstrap_over_examples".into()
                        }
                        None => String::new(),
                    },
                    cell.diverged.to_string(),
                    cell.failed.to_string(),
                    num(published.and_then(|p| p.cells[i])),
                    num(published.and_then(|p| p.deltas[i])),
                ],
            );
        }
        for (gi, (g, _)) in board.groups.iter().enumerate() {
            push_row(
                &mut out,
                summary_row(
                    board,
                    "group",
                    &row.label,
                    g,
                    row.group_means[gi],
                    published.and_then(|p| p.group_means[gi]),
                    published.and_then(|p| p.group_deltas[gi]),
                ),
            );
        }
        for (ai, a) in row.averages.iter().enumerate() {
            push_row(
                &mut out,
                summary_row(
                    board,
                    "average",
                    &row.label,
                    a.averaging.title(),
                    a.value,
                    published.and_then(|p| p.averages[ai]),
                    published.and_then(|p| p.average_deltas[ai].map(|d| d.0)),
                ),
            );
        }
    }
    out
}

fn summary_row(
    board: &Leaderboard,
    kind: &str,
    label: &str,
    name: &str,
    value: Option<f64>,
    published: Option<f64>,
    delta: Option<f64>,
) -> Vec<String> {
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    vec![
        board.suite.clone(),
        kind.into(),
        label.into(),
        name.into(),
        String::new(),
        num(value),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        num(published),
        num(delta),
    ]
}

/// RFC 4180: fields with a comma, quote or newline are quoted, quotes doubled.
fn push_row(out: &mut String, fields: impl IntoIterator<Item = String>) {
    let fields: Vec<String> = fields
        .into_iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f
            }
        })
        .collect();
    out.push_str(&fields.join(","));
    out.push('\n');
}
