//! SimpleCIL (Zhou, Cai, Ye, Zhan, "Revisiting Class-Incremental Learning with Pre-Trained Models:
//! Generalizability and Adaptivity are All You Need", IJCV 2024; PILOT's `simplecil`): no
//! training at all. Each class's prototype is the mean of the frozen backbone's pooled features
//! over its training images, computed when the class arrives; an image goes to the most
//! cosine-similar prototype among the classes seen (PILOT's cosine classifier with the prototypes
//! as its weights; its scale does not change the argmax). The entry's method must leave the
//! backbone as pretrained (`linear`). The features are the task's pretrained features, computed
//! once and shared by every run of the task ([`Stream::pretrained_features`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use peftbench_core::SeededInit;
use peftbench_data_vision::ImageDataset;
use peftbench_methods::PeftModel;
use peftbench_train::derive_seed;

use super::{
    class_means, exemplar_free, nearest_prototype, StageContext, StageLearner, StageOutcome, Stream,
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
        exemplar_free(spec, "simplecil")?;
        Ok(Self {
            model,
            prototypes: Prototypes::default(),
        })
    }
}

/// The prototypes of the classes seen so far, rows `[classes seen, features]`.
#[derive(Default)]
pub(crate) struct Prototypes {
    rows: Option<Tensor>,
}

/// The state key of the prototypes.
const PROTOTYPES: &str = "prototypes";

impl Prototypes {
    /// Adds the prototypes of `classes` from `features` `[examples, dim]` labelled `labels`.
    pub fn add(
        &mut self,
        features: &Tensor,
        labels: &[u32],
        classes: Range<usize>,
    ) -> anyhow::Result<()> {
        let new = class_means(features, labels, classes)?;
        self.rows = Some(match self.rows.take() {
            None => new,
            Some(old) => Tensor::cat(&[&old, &new], 0)?,
        });
        Ok(())
    }

    /// The prototypes so far, rows `[classes seen, features]` (none before the first stage).
    pub fn rows(&self) -> Option<&Tensor> {
        self.rows.as_ref()
    }

    /// The nearest prototype among the first `seen` for each row of `features`.
    pub fn predict(&self, features: &Tensor, seen: usize) -> anyhow::Result<Vec<u32>> {
        let rows = self
            .rows
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no prototypes before the first stage"))?;
        nearest_prototype(features, rows, seen)
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

/// Rows `rows` of `features`.
pub(crate) fn select(features: &Tensor, rows: &[u32]) -> anyhow::Result<Tensor> {
    let index = Tensor::new(rows, features.device())?;
    Ok(features.index_select(&index, 0)?)
}

impl StageLearner for SimpleCil {
    /// The new classes' prototypes from the task's pretrained features (shared by its runs).
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        _train: &Arc<ImageDataset>,
        stream: &Stream,
        _progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        let features = stream.pretrained_features(stage)?;
        self.prototypes.add(
            &features.train,
            &stream.train.labels,
            stream.stages[t].clone(),
        )?;
        Ok(StageOutcome::Untrained)
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        j: usize,
        _eval: &Arc<ImageDataset>,
        seen: usize,
        stream: &Stream,
    ) -> anyhow::Result<Vec<u32>> {
        let features = stream.pretrained_features(stage)?;
        let rows = stream.stage_rows(&stream.eval, j);
        self.prototypes
            .predict(&select(&features.eval, &rows)?, seen)
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
