//! Multi-task records seen task by task. A multi-task run trains several tasks in one model and
//! writes one record holding each member's score as `<primary metric>@<task>` (and its
//! evaluation size as `eval_examples@<task>`, with the per-example correctness of all members
//! concatenated in task order). Reports show each member as its own column, as for single-task
//! suites, so such a record is split here into one record per member before tables are built.

use peftbench_records::{EvalCorrect, RunRecord};

/// `records` with every multi-task record replaced by one record per member task (its own
/// primary metric and per-example correctness; cost figures are the whole run's). Other records
/// are returned as they are.
pub fn per_task_records(records: &[RunRecord]) -> Vec<RunRecord> {
    records.iter().flat_map(split).collect()
}

fn split(record: &RunRecord) -> Vec<RunRecord> {
    let prefix = format!("{}@", record.primary_metric);
    let members: Vec<(&str, f64)> = record
        .metrics
        .iter()
        .filter_map(|(k, &v)| Some((k.strip_prefix(&prefix)?, v)))
        .collect();
    if members.is_empty() {
        return vec![record.clone()];
    }
    // The members in the run's task order (the config lists them), which the correctness follows.
    let order: Vec<String> = record
        .config
        .pointer("/multitask/tasks")
        .and_then(|t| t.as_array())
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_else(|| members.iter().map(|(t, _)| t.to_string()).collect());
    let correct = record.eval_correct.as_ref().and_then(|c| c.to_bools().ok());
    let mut offset = 0usize;
    let mut out = Vec::with_capacity(order.len());
    for task in &order {
        let Some(&(_, value)) = members.iter().find(|(t, _)| t == task) else {
            continue;
        };
        let examples = record
            .metrics
            .get(&format!("eval_examples@{task}"))
            .map(|&n| n as usize);
        let mut member = record.clone();
        member.task = task.clone();
        member.group = None;
        member.metrics = [(record.primary_metric.clone(), value)]
            .into_iter()
            .collect();
        member.eval_correct = match (&correct, examples) {
            (Some(all), Some(n)) if offset + n <= all.len() => {
                Some(EvalCorrect::from_bools(&all[offset..offset + n]))
            }
            _ => None,
        };
        offset += examples.unwrap_or(0);
        out.push(member);
    }
    out
}
