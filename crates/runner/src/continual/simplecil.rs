//! SimpleCIL (Zhou, Cai, Ye, Zhan, "Revisiting Class-Incremental Learning with Pre-Trained Models:
//! Generalizability and Adaptivity are All You Need", IJCV 2024; PILOT's `simplecil`): no
//! training at all. Each class's prototype is the mean of the frozen backbone's pooled features
//! over its training images, computed when the class arrives; an image goes to the most
//! cosine-similar prototype among the classes seen (PILOT's cosine classifier with the prototypes
//! as its weights; its scale does not change the argmax). The entry's method must leave the
//! backbone as pretrained (`linear`).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::PeftModel;
use peftbench_train::derive_seed;

use super::{
    class_means, features_of, nearest_prototype, StageContext, StageLearner, StageOutcome, Stream,
};
use crate::run::MODEL_INIT;

pub(crate) struct SimpleCil {
    model: PeftModel,
    prototypes: Prototypes,
}

impl SimpleCil {
    pub fn new(stage: &StageContext<'_, '_>) -> anyhow::Result<Self> {
        let spec = stage.spec;
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), stage.device());
        let model = PeftModel::new(
            &spec.method,
            &spec.params,
            stage.ctx.backbone.model.boxed(),
            spec.task.num_classes,
            &init,
        )?;
        anyhow::ensure!(
            model.adaptation().leaves_backbone_unchanged(),
            "learner `simplecil` classifies the pretrained backbone's features, and method `{}` \
             changes the backbone; give its entry `method: linear`",
            spec.method
        );
        Ok(Self {
            model,
            prototypes: Prototypes::default(),
        })
    }
}

/// Prototypes of the classes seen, and the evaluation features of each stage (the feature
/// extractor no longer changes once prototypes are taken, so each stage's are computed once).
#[derive(Default)]
pub(crate) struct Prototypes {
    rows: Option<Tensor>,
    eval_features: BTreeMap<usize, Tensor>,
}

/// The state key of the prototypes.
const PROTOTYPES: &str = "prototypes";

impl Prototypes {
    /// Adds the prototypes of stage `t`'s classes from `train` under `features`.
    pub fn add_stage(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train: &Arc<ImageDataset>,
        stream: &Stream,
        features: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> anyhow::Result<()> {
        let (train_features, labels) = features_of(stage, train, features)?;
        let new = class_means(&train_features, &labels, stream.stages[t].clone())?;
        self.rows = Some(match self.rows.take() {
            None => new,
            Some(old) => Tensor::cat(&[&old, &new], 0)?,
        });
        Ok(())
    }

    /// The nearest prototype among the first `seen` for each test image of stage `j`.
    pub fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        features: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> anyhow::Result<Vec<u32>> {
        let rows = self
            .rows
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no prototypes before the first stage"))?;
        let eval_features = match self.eval_features.entry(j) {
            Entry::Occupied(cached) => cached.into_mut(),
            Entry::Vacant(slot) => slot.insert(features_of(stage, eval, features)?.0),
        };
        nearest_prototype(eval_features, rows, seen)
    }

    pub fn state(&self) -> BTreeMap<String, Tensor> {
        self.rows
            .iter()
            .map(|rows| (PROTOTYPES.to_string(), rows.clone()))
            .collect()
    }

    pub fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        self.rows = Some(
            state
                .get(PROTOTYPES)
                .ok_or_else(|| anyhow::anyhow!("the checkpoint holds no prototypes"))?
                .clone(),
        );
        Ok(())
    }

    /// Writes `prototypes.safetensors` into `dir`; returns its bytes.
    pub fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("prototypes.safetensors");
        let tensors: std::collections::HashMap<String, Tensor> = self.state().into_iter().collect();
        candle_core::safetensors::save(&tensors, &path)?;
        Ok(std::fs::metadata(&path)?.len())
    }
}

impl StageLearner for SimpleCil {
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train: &Arc<ImageDataset>,
        stream: &Stream,
        _progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        let model = &self.model;
        self.prototypes.add_stage(stage, t, train, stream, &|x| {
            model.features(x, &ForwardCtx::eval())
        })?;
        Ok(StageOutcome::Untrained)
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
    ) -> anyhow::Result<Vec<u32>> {
        let model = &self.model;
        self.prototypes.predict(stage, j, eval, seen, &|x| {
            model.features(x, &ForwardCtx::eval())
        })
    }

    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        Ok(self.prototypes.state())
    }

    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        self.prototypes.restore(state)
    }

    /// Nothing trains; the total is the backbone's (the unused head left out).
    fn counts(&self) -> (u64, u64) {
        let head = self.model.head().params().count();
        (0, (self.model.total_count() - head) as u64)
    }

    fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        self.prototypes.save(dir)
    }
}
