//! Sequential fine-tuning: every stage trains the run's method and one classifier over the
//! classes seen so far on the new classes' data, as PILOT's `finetune` learner does (its
//! classifier grows by the new classes; here the head holds every class from the start and its
//! logits are cut to the classes seen, which trains and predicts the same). Nothing protects the
//! old classes, so with `full` or `lora` it is the forgetting lower bound the other learners are
//! measured against; with `memory_per_class` it replays stored examples.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::PeftModel;
use peftbench_train::{cross_entropy, derive_seed, TrainModel};

use super::{StageContext, StageLearner, StageOutcome, Stream};
use crate::language_adapters;
use crate::run::{train_config, train_phases, Objective, CALIBRATION, MODEL_INIT};

pub(crate) struct Finetune {
    model: PeftModel,
    base_model: String,
}

impl Finetune {
    pub fn new(
        stage: &StageContext<'_, '_>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Self> {
        Ok(Self {
            model: attached_model(stage, stream, progress)?,
            base_model: stage.ctx.backbone.name.clone(),
        })
    }
}

/// The run's method attached to the backbone with a head over every class, calibrated (for
/// data-dependent methods) on the first stage's data, the only data a stream has at its start.
pub(crate) fn attached_model(
    stage: &StageContext<'_, '_>,
    stream: &Stream,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<PeftModel> {
    let spec = stage.spec;
    let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), stage.device());
    let mut model = language_adapters::composed_model(
        spec,
        None,
        spec.task.num_classes,
        &init,
        stage.ctx,
        progress,
    )?;
    anyhow::ensure!(
        model.phases().is_empty(),
        "method `{}` trains in phases, which a class-incremental stream does not take: a stage's \
         checkpoint holds the parameters of one phase",
        spec.method
    );
    let cfg = train_config(spec);
    let first = stage.source(&stream.stage_train(0, &[]))?;
    let seen = stream.stages[0].end;
    let mut batches = first
        .batches(cfg.batch_size, Some(derive_seed(&[spec.seed, CALIBRATION])))
        .map(|batch| batch.map(|b| (b.inputs, b.labels)));
    model.calibrate(&mut batches, &|logits, labels| {
        cross_entropy(&logits.narrow(1, 0, seen)?, labels, cfg.label_smoothing)
    })?;
    Ok(model)
}

/// The method's parameters of `model`: its trainable variables but the classifier's (views of
/// the same variables), what LAE averages and MOS keeps per stage.
pub(crate) fn method_params(model: &PeftModel) -> NamedVars {
    let head: Vec<&str> = model
        .head()
        .params()
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut method = NamedVars::default();
    for p in model.trainable().iter() {
        if !head.contains(&p.name.as_str()) {
            method.push(p.name.clone(), p.var.clone());
        }
    }
    method
}

/// Trains `model` on stage `t`'s data with logits over the first `seen` classes; every stage
/// starts a fresh optimizer and draws its randomness from the run seed and `t`.
pub(crate) fn train_stage(
    model: &mut PeftModel,
    stage: &StageContext<'_, '_>,
    t: usize,
    train: &Arc<ImageDataset>,
    seen: usize,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<StageOutcome> {
    let source = stage.source(train)?;
    let cfg = stage.stage_config(t);
    Ok(StageOutcome::from(train_phases(
        model,
        &SeenClasses(seen),
        source.as_ref(),
        None,
        &cfg,
        progress,
    )?))
}

/// The model's logits cut to the first `.0` classes: those seen so far.
pub(crate) struct SeenClasses(pub usize);

impl Objective for SeenClasses {
    fn trainee<'m>(&self, model: &'m PeftModel) -> Box<dyn TrainModel + 'm> {
        Box::new(FirstClasses {
            model,
            seen: self.0,
        })
    }
}

struct FirstClasses<'m> {
    model: &'m PeftModel,
    seen: usize,
}

impl TrainModel for FirstClasses<'_> {
    fn trainable(&self) -> &NamedVars {
        self.model.trainable()
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.model.logits(input, ctx)?.narrow(1, 0, self.seen)
    }

    fn lr_multiplier(&self, name: &str) -> f64 {
        TrainModel::lr_multiplier(self.model, name)
    }
}

impl StageLearner for Finetune {
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train: &Arc<ImageDataset>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        train_stage(
            &mut self.model,
            stage,
            t,
            train,
            stream.stages[t].end,
            progress,
        )
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        _j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        _stream: &Stream,
    ) -> anyhow::Result<Vec<u32>> {
        let model = FirstClasses {
            model: &self.model,
            seen,
        };
        stage.predictions(&model, eval)
    }

    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        Ok(self.model.trainable().tensors())
    }

    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        Ok(self.model.trainable().load(state)?)
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.model.trainable_count() as u64,
            self.model.total_count() as u64,
        )
    }

    fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        self.model.save(dir, &self.base_model)
    }
}
