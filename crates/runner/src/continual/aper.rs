//! APER (Zhou, Cai, Ye, Zhan, "Revisiting Class-Incremental Learning with Pre-Trained Models:
//! Generalizability and Adaptivity are All You Need", IJCV 2024; PILOT's `aper_adapter`,
//! `aper_ssf`, `aper_vpt`, ...): the run's method adapts the backbone on the first stage only
//! (with a classifier over its classes), then is frozen. From then on an image's feature is the
//! pretrained backbone's pooled feature and the adapted one's, concatenated, and classes are
//! prototypes of it, as in SimpleCIL: adaptivity from the first stage, generalizability from the
//! pretrained half, no training after the first stage.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::PeftModel;
use peftbench_train::derive_seed;

use super::finetune::{attached_model, train_stage};
use super::simplecil::Prototypes;
use super::{StageContext, StageLearner, StageOutcome, Stream};
use crate::run::MODEL_INIT;

pub(crate) struct Aper {
    adapted: PeftModel,
    pretrained: PeftModel,
    prototypes: Prototypes,
    base_model: String,
}

impl Aper {
    pub fn new(
        stage: &StageContext<'_, '_>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Self> {
        let spec = stage.spec;
        let adapted = attached_model(stage, stream, progress)?;
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), stage.device());
        let pretrained = PeftModel::new(
            "linear",
            &serde_json::json!({}),
            stage.ctx.backbone.model.boxed(),
            spec.task.num_classes,
            &init,
        )?;
        Ok(Self {
            adapted,
            pretrained,
            prototypes: Prototypes::default(),
            base_model: stage.ctx.backbone.name.clone(),
        })
    }

    /// `[pretrained, adapted]` pooled features of a batch of pixels.
    fn features(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let ctx = ForwardCtx::eval();
        Tensor::cat(
            &[
                &self.pretrained.features(pixels, &ctx)?,
                &self.adapted.features(pixels, &ctx)?,
            ],
            1,
        )
    }
}

impl StageLearner for Aper {
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train: &Arc<ImageDataset>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        let outcome = if t == 0 {
            let seen = stream.stages[0].end;
            match train_stage(&mut self.adapted, stage, 0, train, seen, progress)? {
                StageOutcome::Trained(report) => StageOutcome::Trained(report),
                other => return Ok(other),
            }
        } else {
            StageOutcome::Untrained
        };
        let mut prototypes = std::mem::take(&mut self.prototypes);
        prototypes.add_stage(stage, t, train, stream, &|x| self.features(x))?;
        self.prototypes = prototypes;
        Ok(outcome)
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
    ) -> anyhow::Result<Vec<u32>> {
        let mut prototypes = std::mem::take(&mut self.prototypes);
        let predicted = prototypes.predict(stage, j, eval, seen, &|x| self.features(x));
        self.prototypes = prototypes;
        predicted
    }

    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        let mut state = self.adapted.trainable().tensors();
        state.extend(self.prototypes.state());
        Ok(state)
    }

    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        self.adapted.trainable().load(state)?;
        self.prototypes.restore(state)
    }

    /// What trained on the first stage, and the two feature extractors' scalars.
    fn counts(&self) -> (u64, u64) {
        (
            self.adapted.trainable_count() as u64,
            self.adapted.total_count() as u64,
        )
    }

    fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        Ok(self.adapted.save(dir, &self.base_model)? + self.prototypes.save(dir)?)
    }
}
