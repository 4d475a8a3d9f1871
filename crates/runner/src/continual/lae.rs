//! LAE (Gao, Cen, Ye, Wang, Ji, Zhou, Liu, "A Unified Continual Learning Framework with General
//! Parameter-Efficient Tuning", ICCV 2023): any parameter-efficient method (the entry's: LoRA,
//! an adapter, prefix tuning) as two experts over one classifier.
//!
//! - The online expert trains on each stage's classes, its logits masked to them (as L2P and
//!   DualPrompt, whose code LAE builds on).
//! - The offline expert is the exponential moving average of the online one's method parameters,
//!   updated after every optimizer step: `offline = m * offline + (1 - m) * online`, `m` =
//!   [`EMA_MOMENTUM`] (the authors' 0.9999); it starts equal to the online expert.
//! - Calibration of the learning speed: in every stage after the first, the method is frozen for
//!   the first [`FROZEN_EPOCHS`] epochs (the authors' 3) and only the classifier trains, so the
//!   new classes' random classifier rows do not drag the method; then both train. Here the two
//!   parts run as two trainings of the stage (each with its own schedule) where LAE runs one.
//! - Prediction: the elementwise maximum of the two experts' class probabilities over the
//!   classes seen, then the argmax.
//!
//! Exemplar-free: a stream with `memory_per_class` is refused.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor, Var, D};
use peftbench_core::{ForwardCtx, NamedVars};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::PeftModel;
use peftbench_train::{derive_seed, train, TrainConfig, TrainModel, TrainOutcome};

use super::finetune::{attached_model, method_params};
use super::{
    exemplar_free, joined, stage_cross_entropy, StageContext, StageLearner, StageOutcome, Stream,
    STAGE,
};
use crate::run::train_config;

/// The offline expert's momentum per optimizer step (LAE's configs).
pub(crate) const EMA_MOMENTUM: f64 = 0.9999;
/// Epochs of every stage after the first in which only the classifier trains (LAE's configs;
/// fewer when the recipe has fewer epochs, one always left for the method).
pub(crate) const FROZEN_EPOCHS: usize = 3;

pub(crate) struct Lae {
    online: PeftModel,
    offline: PeftModel,
    /// Pairs of (online, offline) method parameters, the classifier left out.
    pairs: Vec<(Var, Var)>,
    base_model: String,
}

impl Lae {
    pub fn new(
        stage: &StageContext<'_, '_>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Self> {
        exemplar_free(stage.spec, "lae")?;
        let online = attached_model(stage, stream, progress)?;
        let offline = attached_model(stage, stream, progress)?;
        let offline_vars: BTreeMap<&str, &Var> = offline
            .trainable()
            .iter()
            .map(|p| (p.name.as_str(), &p.var))
            .collect();
        let pairs: Vec<(Var, Var)> = method_params(&online)
            .iter()
            .map(|p| (p.var.clone(), offline_vars[p.name.as_str()].clone()))
            .collect();
        anyhow::ensure!(
            !pairs.is_empty(),
            "learner `lae` averages a method's parameters, and method `{}` trains none besides \
             the classifier",
            stage.spec.method
        );
        Ok(Self {
            online,
            offline,
            pairs,
            base_model: stage.ctx.backbone.name.clone(),
        })
    }

    fn ema_step(&self) -> candle_core::Result<()> {
        ema_update(&self.pairs, EMA_MOMENTUM)
    }

    /// Trains `trainable` of the online expert on `train` for `epochs`, logits masked to
    /// `classes`, the offline expert following after every step.
    fn train_part(
        &self,
        trainable: &NamedVars,
        classes: Range<usize>,
        train_data: &dyn peftbench_train::BatchSource,
        cfg: &TrainConfig,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<TrainOutcome> {
        let model = StageClasses {
            model: &self.online,
            trainable,
            classes,
        };
        let mut ema_error = None;
        let outcome = train(&model, train_data, None, cfg, &mut |p| {
            if ema_error.is_none() {
                ema_error = self.ema_step().err();
            }
            progress(p);
        })?;
        if let Some(e) = ema_error {
            return Err(e.into());
        }
        Ok(outcome)
    }
}

/// `offline = m * offline + (1 - m) * online` for every (online, offline) pair.
fn ema_update(pairs: &[(Var, Var)], momentum: f64) -> candle_core::Result<()> {
    for (online, offline) in pairs {
        let updated =
            ((offline.as_tensor() * momentum)? + (online.as_tensor() * (1.0 - momentum))?)?;
        offline.set(&updated)?;
    }
    Ok(())
}

/// The online expert trained on one stage's classes: logits cut to them, labels shifted to match.
struct StageClasses<'m> {
    model: &'m PeftModel,
    trainable: &'m NamedVars,
    classes: Range<usize>,
}

impl TrainModel for StageClasses<'_> {
    fn trainable(&self) -> &NamedVars {
        self.trainable
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.model
            .logits(input, ctx)?
            .narrow(1, self.classes.start, self.classes.len())
    }

    fn lr_multiplier(&self, name: &str) -> f64 {
        TrainModel::lr_multiplier(self.model, name)
    }

    fn loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        stage_cross_entropy(logits, labels, &self.classes, label_smoothing)
    }
}

impl StageLearner for Lae {
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train_data: &Arc<ImageDataset>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        let source = stage.source(train_data)?;
        let base = train_config(stage.spec);
        let classes = stream.stages[t].clone();
        let frozen = if t == 0 {
            0
        } else {
            FROZEN_EPOCHS.min(base.epochs.saturating_sub(1))
        };
        let mut reports = Vec::new();
        let parts = [
            (self.online.head().params().clone(), frozen, 0u64),
            (self.online.trainable().clone(), base.epochs - frozen, 1u64),
        ];
        for (trainable, epochs, part) in parts {
            if epochs == 0 {
                continue;
            }
            let cfg = TrainConfig {
                epochs,
                seed: derive_seed(&[base.seed, STAGE, t as u64, part]),
                ..base.clone()
            };
            match self.train_part(&trainable, classes.clone(), source.as_ref(), &cfg, progress)? {
                TrainOutcome::Completed(report) => reports.push(report),
                diverged => return Ok(diverged.into()),
            }
        }
        let mut reports = reports.into_iter();
        let first = reports.next().expect("at least one epoch trains");
        Ok(StageOutcome::Trained(match reports.next() {
            Some(second) => joined(first, second),
            None => first,
        }))
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        _j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        _stream: &Stream,
    ) -> anyhow::Result<Vec<u32>> {
        let source = stage.source(eval)?;
        let ctx = ForwardCtx::eval();
        let head = self.online.head();
        let mut predictions = Vec::new();
        for batch in source.batches(stage.spec.recipe.eval_batch_size, None) {
            let x = batch?.inputs;
            let probabilities = |features: Tensor| -> candle_core::Result<Tensor> {
                candle_nn::ops::softmax_last_dim(
                    &head.forward(&features)?.narrow(1, 0, seen)?.contiguous()?,
                )
            };
            let online = probabilities(self.online.features(&x, &ctx)?)?;
            let offline = probabilities(self.offline.features(&x, &ctx)?)?;
            let best = online.maximum(&offline)?.argmax(D::Minus1)?;
            predictions.extend(best.to_dtype(DType::U32)?.to_vec1::<u32>()?);
        }
        Ok(predictions)
    }

    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        let mut state = self.online.trainable().tensors();
        for (name, tensor) in self.offline.trainable().tensors() {
            state.insert(format!("offline.{name}"), tensor);
        }
        Ok(state)
    }

    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        self.online.trainable().load(state)?;
        let offline: BTreeMap<String, Tensor> = state
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("offline.")?.to_string(), v.clone())))
            .collect();
        Ok(self.offline.trainable().load(&offline)?)
    }

    /// What the optimizer trains (the online expert and the classifier); the offline expert's
    /// copy of the method is counted in the total.
    fn counts(&self) -> (u64, u64) {
        let offline = self.offline.trainable_count() - self.offline.head().params().count();
        (
            self.online.trainable_count() as u64,
            (self.online.total_count() + offline) as u64,
        )
    }

    /// The online expert (with the classifier) in `dir`, the offline one in `dir/offline`.
    fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        Ok(self.online.save(dir, &self.base_model)?
            + self.offline.save(&dir.join("offline"), &self.base_model)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Two steps of the offline update follow the momentum formula.
    #[test]
    fn the_offline_expert_is_the_moving_average_of_the_online_one() {
        let online = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let offline = Var::new(&[0.0f32, 0.0], &Device::Cpu).unwrap();
        let m = 0.9;
        let pairs = [(online.clone(), offline.clone())];
        ema_update(&pairs, m).unwrap();
        online
            .set(&Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap())
            .unwrap();
        ema_update(&pairs, m).unwrap();
        // (1 - m) * m * first + (1 - m) * second.
        let want = |first: f64, second: f64| (1.0 - m) * m * first + (1.0 - m) * second;
        let got = offline.as_tensor().to_vec1::<f32>().unwrap();
        assert!((f64::from(got[0]) - want(1.0, 3.0)).abs() < 1e-6, "{got:?}");
        assert!(
            (f64::from(got[1]) - want(-2.0, 0.0)).abs() < 1e-6,
            "{got:?}"
        );
        // The online parameter is untouched.
        assert_eq!(online.as_tensor().to_vec1::<f32>().unwrap(), [3.0, 0.0]);
    }
}
