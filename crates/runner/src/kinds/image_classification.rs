//! Image classification: one class per image, from NOAH / FGVC / parquet folders or the shape
//! generators, preprocessed as the suite's `preprocess` section says (resize, normalise), decoded
//! into memory or streamed by a prefetcher.

use candle_core::Device;
use peftbench_backbones::TextEncoder;
use peftbench_suite::{RunSpec, Suite};

use super::Kind;
use crate::backbone::LoadedBackbone;
use crate::classification::{accuracy_metric, train_and_evaluate};
use crate::data::{batch_source, load_task_data, preprocess, TaskData};
use crate::run::{Finished, PreparedTask, RunContext};
use crate::Paths;

pub(crate) struct ImageClassification;

impl Kind for ImageClassification {
    /// Images need nothing shared beyond each task's preprocessing.
    type Encoders = ();
    type Located = TaskData;
    type Prepared = PreparedTask;

    fn locate(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<TaskData> {
        load_task_data(spec, paths, quiet)
    }

    fn encoders(_: &Suite, _: &mut LoadedBackbone, _: &Paths) -> anyhow::Result<()> {
        Ok(())
    }

    fn text_encoder(_: &()) -> Option<&TextEncoder> {
        None
    }

    fn prepare(
        spec: &RunSpec,
        data: &TaskData,
        _: &(),
        device: &Device,
        _quiet: bool,
    ) -> anyhow::Result<PreparedTask> {
        let pre = preprocess(spec);
        Ok(PreparedTask {
            train: batch_source(&data.train, &pre, device)?,
            eval: batch_source(&data.eval, &pre, device)?,
            val: data
                .val
                .as_ref()
                .map(|v| batch_source(v, &pre, device))
                .transpose()?,
            skipped_examples: data.skipped,
            augmented_training: false,
            features: Default::default(),
            prefixes: Default::default(),
            tagging: None,
        })
    }

    fn run(
        spec: &RunSpec,
        task: &PreparedTask,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished> {
        train_and_evaluate(spec, task, ctx, progress, &|_, _| Ok(()))
    }

    fn primary_metric(spec: &RunSpec) -> String {
        accuracy_metric(spec)
    }
}
