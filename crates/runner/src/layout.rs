//! A suite's shape as the report crate needs it (task order, groups, averages, published numbers).

use peftbench_report::{Averaging, PublishedTable, ReportLayout};
use peftbench_suite::{Suite, TaskKind};

pub fn report_layout(suite: &Suite) -> ReportLayout {
    let tasks: Vec<String> = suite.tasks.iter().map(|t| t.name.clone()).collect();
    // Groups in the order their first task appears.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for task in &tasks {
        if let Some((group, _)) = suite
            .groups
            .iter()
            .find(|(_, members)| members.contains(task))
        {
            match groups.iter_mut().find(|(g, _)| g == group) {
                Some((_, members)) => members.push(task.clone()),
                None => groups.push((group.clone(), vec![task.clone()])),
            }
        }
    }
    let averaging = suite
        .averaging
        .iter()
        .map(|a| match a {
            peftbench_suite::Averaging::Mean => Averaging::Mean,
            peftbench_suite::Averaging::GroupMean => Averaging::GroupMean,
        })
        .collect();
    let published = suite.published.as_ref().map(|p| {
        let (means, means_averaging) = if p.group_means.is_empty() {
            (p.means.clone(), Averaging::Mean)
        } else {
            (p.group_means.clone(), Averaging::GroupMean)
        };
        PublishedTable {
            source: p.source.clone(),
            results: p.results.clone(),
            means,
            means_averaging,
        }
    });
    // Classification tasks' labels are balanced in the generated data and near enough in the
    // real suites for 1/classes to be the level a constant guess reaches; ranking and tagging
    // have no such level.
    let chance = suite
        .tasks
        .iter()
        .map(|t| match suite.kind {
            TaskKind::TokenTagging
            | TaskKind::Reranking
            | TaskKind::VisionLanguage
            | TaskKind::ImageTextRetrieval
            // Average incremental accuracy averages over ever more classes: no one level.
            | TaskKind::ClassIncremental
            // The unadapted model is the level (a reduction of 0).
            | TaskKind::MusicGeneration => None,
            TaskKind::ImageClassification
            | TaskKind::AudioClassification
            | TaskKind::TextClassification
            | TaskKind::ImageMultiTask
            | TaskKind::TextMultiTask => Some(100.0 / t.num_classes as f64),
        })
        .collect();
    ReportLayout {
        suite: suite.name.clone(),
        tasks,
        groups,
        averaging,
        published,
        chance,
    }
}
