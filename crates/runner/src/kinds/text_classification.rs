//! Text classification: one class per text (SIB-200, a suite's own tables, generated sentiment
//! and topics), tokenised with the backbone's tokenizer; zero-shot cross-lingual transfer when a
//! task evaluates in another language, with language modules for composing methods. Reports
//! macro-F1 beside accuracy, as text benchmarks do.

use peftbench_suite::RunSpec;
use peftbench_train::Evaluation;

use super::text_input::{TextKind, TextScoring};
use crate::classification::{accuracy_metric, Metrics};
use crate::run::PreparedTask;

pub(crate) type TextClassification = TextKind<ClassScores>;

/// Accuracy (the primary metric) and macro-F1.
pub(crate) struct ClassScores;

impl TextScoring for ClassScores {
    fn score(
        spec: &RunSpec,
        _: &PreparedTask,
        evaluation: &Evaluation,
        metrics: &mut Metrics,
    ) -> anyhow::Result<()> {
        metrics.insert(
            format!("{}_macro_f1", spec.protocol.eval_split),
            peftbench_metrics::macro_f1(&evaluation.predictions, &evaluation.labels),
        );
        Ok(())
    }

    fn primary_metric(spec: &RunSpec) -> String {
        accuracy_metric(spec)
    }
}
