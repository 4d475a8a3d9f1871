//! Audio classification: one class per clip (ESC-50, Speech Commands, Fluent Speech Commands,
//! UrbanSound8K, parquet copies, generated keywords), as Kaldi filter banks the AST reads, shared
//! by every task, fold, method and seed of a sweep through one feature cache; SpecAugment on the
//! training split when the suite asks for it.

use std::sync::Arc;

use candle_core::Device;
use peftbench_backbones::TextEncoder;
use peftbench_data_audio::AstFeatures;
use peftbench_suite::{RunSpec, Suite};
use peftbench_train::BatchSource;

use super::Kind;
use crate::audio::{
    audio_batch_source, features_for, load_audio_task, spec_augment, AudioTaskData,
};
use crate::backbone::{BackboneModel, LoadedBackbone};
use crate::classification::{accuracy_metric, train_and_evaluate};
use crate::data::{generated_seed, root_on_disk};
use crate::run::{Finished, PreparedTask, RunContext};
use crate::Paths;

pub(crate) struct AudioClassification;

impl Kind for AudioClassification {
    /// The suite's filter-bank cache (memory plus `<cache>/audio-features`).
    type Encoders = Arc<AstFeatures>;
    type Located = AudioTaskData;
    type Prepared = PreparedTask;

    fn locate(spec: &RunSpec, paths: &Paths, _quiet: bool) -> anyhow::Result<AudioTaskData> {
        let task = spec.task.name.clone();
        load_audio_task(spec, root_on_disk(spec, paths)?, |split| {
            generated_seed(&task, split)
        })
    }

    fn check_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
        backbone.check_modality(spec)?;
        if let (BackboneModel::Ast(m), Some(audio)) = (backbone, &spec.audio) {
            anyhow::ensure!(
                m.config().num_mel_bins == audio.num_mel_bins,
                "suite `{}` computes {} mel bins but the AST takes {}",
                spec.suite,
                audio.num_mel_bins,
                m.config().num_mel_bins
            );
        }
        Ok(())
    }

    fn encoders(
        suite: &Suite,
        _: &mut LoadedBackbone,
        paths: &Paths,
    ) -> anyhow::Result<Arc<AstFeatures>> {
        let audio = suite
            .audio
            .as_ref()
            .expect("suite validation gives audio suites an `audio` section");
        features_for(audio, &paths.cache)
    }

    fn text_encoder(_: &Arc<AstFeatures>) -> Option<&TextEncoder> {
        None
    }

    fn prepare(
        spec: &RunSpec,
        data: &AudioTaskData,
        features: &Arc<AstFeatures>,
        device: &Device,
        quiet: bool,
    ) -> anyhow::Result<PreparedTask> {
        let audio = spec
            .audio
            .as_ref()
            .expect("suite validation gives audio suites an `audio` section");
        let on_error = spec.protocol.on_data_error;
        let augment = spec_augment(audio);
        let source =
            |ds, augment| audio_batch_source(ds, features, augment, on_error, device, quiet);
        let (train, skipped_train) = source(&data.train, augment)?;
        let (eval, skipped_eval) = source(&data.eval, None)?;
        let (val, skipped_val) = match &data.val {
            Some(v) => {
                let (v, n) = source(v, None)?;
                (Some(Box::new(v) as Box<dyn BatchSource>), n)
            }
            None => (None, 0),
        };
        Ok(PreparedTask {
            train: Box::new(train),
            eval: Box::new(eval),
            val,
            skipped_examples: skipped_train + skipped_eval + skipped_val,
            augmented_training: augment.is_some(),
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
