//! APER (Zhou, Cai, Ye, Zhan, "Revisiting Class-Incremental Learning with Pre-Trained Models:
//! Generalizability and Adaptivity are All You Need", IJCV 2024; PILOT's `aper_adapter`,
//! `aper_ssf`, `aper_vpt`, ...): the run's method adapts the backbone on the first stage only
//! (with a classifier over its classes), then is frozen. From then on an image's feature is the
//! pretrained backbone's pooled feature and the adapted one's, concatenated, and classes are
//! prototypes of it, as in SimpleCIL: adaptivity from the first stage, generalizability from the
//! pretrained half, no training after the first stage. The pretrained half is the task's shared
//! pretrained features ([`Stream::pretrained_features`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use peftbench_core::ForwardCtx;
use peftbench_data_vision::ImageDataset;
use peftbench_methods::PeftModel;

use super::finetune::{attached_model, train_stage};
use super::simplecil::{select, Prototypes};
use super::{exemplar_free, features_of, StageContext, StageLearner, StageOutcome, Stream};

pub(crate) struct Aper {
    adapted: PeftModel,
    prototypes: Prototypes,
    /// The adapted features of each stage's test images (the adapted model no longer changes
    /// once the first stage is learned).
    eval_features: BTreeMap<usize, Tensor>,
    base_model: String,
}

impl Aper {
    pub fn new(
        stage: &StageContext<'_, '_>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Self> {
        exemplar_free(stage.spec, "aper")?;
        Ok(Self {
            adapted: attached_model(stage, stream, progress)?,
            prototypes: Prototypes::default(),
            eval_features: BTreeMap::new(),
            base_model: stage.ctx.backbone.name.clone(),
        })
    }

    /// `[pretrained, adapted]` features of the examples `rows` of `ds`: the pretrained half from
    /// the task's shared features (`pretrained`, every example of `ds`), the adapted half
    /// computed from `subset` (those rows, in that order).
    fn joint(
        &self,
        stage: &StageContext<'_, '_>,
        pretrained: &Tensor,
        rows: &[u32],
        subset: &Arc<ImageDataset>,
    ) -> anyhow::Result<Tensor> {
        let adapted = &self.adapted;
        let (adapted, _) =
            features_of(stage, subset, &|x| adapted.features(x, &ForwardCtx::eval()))?;
        Ok(Tensor::cat(&[&select(pretrained, rows)?, &adapted], 1)?)
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
        // Prototypes of the new classes' own examples.
        let pretrained = stream.pretrained_features(stage)?;
        let rows = stream.stage_rows(&stream.train, t);
        let joint = self.joint(stage, &pretrained.train, &rows, &stream.stage_train(t, &[]))?;
        let labels: Vec<u32> = rows
            .iter()
            .map(|&i| stream.train.labels[i as usize])
            .collect();
        self.prototypes
            .add(&joint, &labels, stream.stages[t].clone())?;
        Ok(outcome)
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        stream: &Stream,
    ) -> anyhow::Result<Vec<u32>> {
        if !self.eval_features.contains_key(&j) {
            let pretrained = stream.pretrained_features(stage)?;
            let rows = stream.stage_rows(&stream.eval, j);
            let joint = self.joint(stage, &pretrained.eval, &rows, eval)?;
            self.eval_features.insert(j, joint);
        }
        self.prototypes.predict(&self.eval_features[&j], seen)
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
