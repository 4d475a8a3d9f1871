//! Token tagging (named-entity recognition): one IOB2 tag per word from CoNLL or WikiANN files,
//! predicted on each word's first subword, scored at the entity level by seqeval's span F1 (the
//! primary metric); the per-word accuracy is kept beside it.

use peftbench_suite::RunSpec;
use peftbench_train::Evaluation;

use super::text_input::{TextKind, TextScoring};
use crate::classification::Metrics;
use crate::run::PreparedTask;

pub(crate) type TokenTagging = TextKind<SpanScores>;

/// seqeval's entity-level precision, recall and F1 (the primary metric).
pub(crate) struct SpanScores;

impl TextScoring for SpanScores {
    fn score(
        spec: &RunSpec,
        task: &PreparedTask,
        evaluation: &Evaluation,
        metrics: &mut Metrics,
    ) -> anyhow::Result<()> {
        let tagging = task
            .tagging
            .as_ref()
            .expect("tagged sentences prepare with their entity scoring");
        let eval_split = &spec.protocol.eval_split;
        let scores = tagging.score(&evaluation.predictions)?;
        metrics.insert(format!("{eval_split}_span_f1"), scores.f1);
        metrics.insert(format!("{eval_split}_span_precision"), scores.precision);
        metrics.insert(format!("{eval_split}_span_recall"), scores.recall);
        Ok(())
    }

    fn primary_metric(spec: &RunSpec) -> String {
        format!("{}_span_f1", spec.protocol.eval_split)
    }
}
