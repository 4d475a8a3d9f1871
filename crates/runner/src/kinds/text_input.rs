//! What the two text-classifying kinds share: their data (read or generated, in the training and
//! evaluation languages), the suite's tokenizer and the tokenised splits. They differ only in what
//! a run is scored by ([`TextScoring`]).

use std::marker::PhantomData;

use candle_core::Device;
use peftbench_backbones::TextEncoder;
use peftbench_suite::{RunSpec, Suite};
use peftbench_train::Evaluation;

use super::Kind;
use crate::backbone::{BackboneModel, LoadedBackbone};
use crate::classification::{train_and_evaluate, Metrics};
use crate::run::{Finished, PreparedTask, RunContext};
use crate::text::{
    check_text_backbone, locate_text_task, prepare_text_task, suite_text_encoder, TextTaskData,
};
use crate::Paths;

/// How a text kind scores its evaluation split beyond accuracy.
pub(crate) trait TextScoring {
    /// Adds the kind's metrics from the evaluation of `task`'s evaluation split.
    fn score(
        spec: &RunSpec,
        task: &PreparedTask,
        evaluation: &Evaluation,
        metrics: &mut Metrics,
    ) -> anyhow::Result<()>;

    /// The metric the leaderboard ranks by.
    fn primary_metric(spec: &RunSpec) -> String;
}

/// A kind that classifies texts (or their words), scored by `S`.
pub(crate) struct TextKind<S>(PhantomData<S>);

impl<S: TextScoring> Kind for TextKind<S> {
    type Encoders = TextEncoder;
    type Located = TextTaskData;
    type Prepared = PreparedTask;

    fn locate(spec: &RunSpec, paths: &Paths, _quiet: bool) -> anyhow::Result<TextTaskData> {
        locate_text_task(spec, paths)
    }

    fn check_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
        check_text_backbone(spec, backbone)
    }

    fn encoders(
        suite: &Suite,
        backbone: &mut LoadedBackbone,
        _: &Paths,
    ) -> anyhow::Result<TextEncoder> {
        suite_text_encoder(suite, backbone)
    }

    fn text_encoder(encoder: &TextEncoder) -> Option<&TextEncoder> {
        Some(encoder)
    }

    fn prepare(
        spec: &RunSpec,
        data: &TextTaskData,
        encoder: &TextEncoder,
        device: &Device,
        _quiet: bool,
    ) -> anyhow::Result<PreparedTask> {
        prepare_text_task(spec, data, encoder, device)
    }

    fn run(
        spec: &RunSpec,
        task: &PreparedTask,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished> {
        train_and_evaluate(spec, task, ctx, progress, &|evaluation, metrics| {
            S::score(spec, task, evaluation, metrics)
        })
    }

    fn primary_metric(spec: &RunSpec) -> String {
        S::primary_metric(spec)
    }
}
