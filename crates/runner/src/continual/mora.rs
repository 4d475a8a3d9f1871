//! MoRA, "Little by Little" (Lu et al., 2025: continual learning via self-activated sparse
//! mixture-of-rank adaptation): LoRA on the attention's query and value projections of the
//! frozen backbone, split into rank-1 experts `b_i a_iᵀ`. An expert is activated by its own
//! projection `a_iᵀ x` (no separate router). Every stage adds [`EXPERTS_PER_STAGE`] new experts
//! per projection (`a` as LoRA's A, `b` zero) and trains only those and the classifier; earlier
//! experts stay frozen. Sparsity is per stage's group: per token, only the [`TOP_K`] experts of
//! each group with the largest `|a_iᵀ x|` contribute, `Δ(x) = scale · Σ_groups Σ_{i in top-k}
//! b_i (a_iᵀ x)`. So new experts never take an old expert's place: a new stage starts from exactly
//! the previous function (its `b` is zero), and old knowledge changes only by what the new experts
//! add where they activate. Logits are masked to the stage's classes in training. With every
//! expert active the sum is exactly LoRA's `B A x` (tested).
//!
//! Not here: the paper's pruning of rarely activated experts and its activation-budget schedule;
//! the budget is a fixed top-k per group.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Tensor, Var, D};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::ClassifierHead;
use peftbench_train::{derive_seed, TrainModel};

use super::{
    exemplar_free, stage_cross_entropy, StageContext, StageLearner, StageOutcome, Stream, STAGE,
};
use crate::run::MODEL_INIT;

/// Rank-1 experts added per adapted projection at every stage.
pub(crate) const EXPERTS_PER_STAGE: usize = 4;
/// Experts active per token in each stage's group.
pub(crate) const TOP_K: usize = 2;
/// LoRA's `alpha / r` scale of the experts' sum (alpha = r).
pub(crate) const SCALE: f64 = 1.0;
/// The projections that get experts.
const SITES: [LinearSite; 2] = [LinearSite::Query, LinearSite::Value];

/// The experts of one projection: `a` rows `[experts, in]`, `b` columns `[out, experts]`, one
/// pair of variables per stage.
#[derive(Default)]
struct Experts {
    stages: Vec<(Var, Var)>,
}

impl Experts {
    /// `Δ(x)`: in each stage's group, the `top_k` experts of largest `|a_iᵀ x|` per token (all of
    /// the group when it has no more).
    fn delta(&self, x: &Tensor, top_k: usize) -> candle_core::Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for (a, b) in &self.stages {
            let z = x.broadcast_matmul(&a.as_tensor().t()?)?;
            let experts = a.dim(0)?;
            let z = if top_k < experts {
                // Keep |z| at or above the k-th largest of its token (ties keep more).
                let magnitude = z.abs()?.detach();
                let (sorted, _) = magnitude.sort_last_dim(false)?;
                let kth = sorted.narrow(D::Minus1, top_k - 1, 1)?;
                let keep = magnitude.broadcast_ge(&kth)?.to_dtype(z.dtype())?;
                (z * keep)?
            } else {
                z
            };
            let part = z.broadcast_matmul(&b.as_tensor().t()?)?;
            total = Some(match total {
                None => part,
                Some(sum) => (sum + part)?,
            });
        }
        total.map(|t| t * SCALE).transpose()
    }
}

/// Every adapted projection's experts, as the backbone's linear hook.
struct ExpertHooks {
    sites: BTreeMap<(usize, LinearSite), Experts>,
    top_k: usize,
}

impl Hooks for ExpertHooks {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        let out = base.forward(x)?;
        match self.sites.get(&(layer, site)) {
            Some(experts) => match experts.delta(x, self.top_k)? {
                Some(delta) => out + delta,
                None => Ok(out),
            },
            None => Ok(out),
        }
    }
}

pub(crate) struct Mora {
    backbone: Box<dyn Backbone>,
    hooks: ExpertHooks,
    head: ClassifierHead,
    seed: u64,
    pretrained: u64,
}

impl Mora {
    pub fn new(stage: &StageContext<'_, '_>) -> anyhow::Result<Self> {
        let spec = stage.spec;
        anyhow::ensure!(
            spec.method == "linear",
            "learner `mora` adds its own rank-1 experts to the frozen backbone, and method `{}` \
             would change it too; give its entry `method: linear`",
            spec.method
        );
        exemplar_free(spec, "mora")?;
        let mut backbone = stage.ctx.backbone.model.boxed();
        let mut pretrained = 0u64;
        backbone.visit_params(&mut |_, t| {
            pretrained += t.elem_count() as u64;
            Ok(())
        })?;
        let layers = backbone.info().num_layers;
        let hidden = backbone.info().hidden_size;
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), stage.device());
        let head = ClassifierHead::new(hidden, spec.task.num_classes, &init.fork("head"))?;
        let sites = (0..layers)
            .flat_map(|l| SITES.map(|s| ((l, s), Experts::default())))
            .collect();
        Ok(Self {
            backbone,
            hooks: ExpertHooks {
                sites,
                top_k: TOP_K,
            },
            head,
            seed: spec.seed,
            pretrained,
        })
    }

    /// Adds stage `t`'s experts to every adapted projection (once; their initial values derive
    /// from the run seed and `t`).
    fn grow_to(&mut self, stages: usize, device: &candle_core::Device) -> anyhow::Result<()> {
        for ((layer, site), experts) in self.hooks.sites.iter_mut() {
            while experts.stages.len() < stages {
                let t = experts.stages.len();
                let (d_in, d_out) = self.backbone.linear_dims(*site);
                let init = SeededInit::new(
                    derive_seed(&[self.seed, MODEL_INIT, STAGE, t as u64, *layer as u64]),
                    device,
                );
                let a = init
                    .fork(site.name())
                    .kaiming_uniform((EXPERTS_PER_STAGE, d_in), d_in)?;
                let b = init.zeros((d_out, EXPERTS_PER_STAGE))?;
                experts.stages.push((a, b));
            }
        }
        Ok(())
    }

    /// Stage `t`'s experts and the classifier: what trains in stage `t`.
    fn stage_params(&self, t: usize) -> NamedVars {
        let mut params = NamedVars::default();
        for ((layer, site), experts) in &self.hooks.sites {
            let (a, b) = &experts.stages[t];
            params.push(format!("experts.{layer}.{}.{t}.a", site.name()), a.clone());
            params.push(format!("experts.{layer}.{}.{t}.b", site.name()), b.clone());
        }
        params.extend(self.head.params().clone());
        params
    }

    /// Every expert and the classifier.
    fn all_params(&self) -> NamedVars {
        let stages = self
            .hooks
            .sites
            .values()
            .next()
            .map_or(0, |e| e.stages.len());
        let mut params = NamedVars::default();
        for ((layer, site), experts) in &self.hooks.sites {
            for (t, (a, b)) in experts.stages.iter().enumerate().take(stages) {
                params.push(format!("experts.{layer}.{}.{t}.a", site.name()), a.clone());
                params.push(format!("experts.{layer}.{}.{t}.b", site.name()), b.clone());
            }
        }
        params.extend(self.head.params().clone());
        params
    }
}

/// MoRA reading the classes `classes`, training `trainable`.
struct Routed<'a> {
    mora: &'a Mora,
    trainable: NamedVars,
    classes: Range<usize>,
}

impl TrainModel for Routed<'_> {
    fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let features = self
            .mora
            .backbone
            .forward_features(input, &self.mora.hooks, ctx)?;
        self.mora
            .head
            .forward(&features)?
            .narrow(1, self.classes.start, self.classes.len())
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

impl StageLearner for Mora {
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train_data: &Arc<ImageDataset>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        self.grow_to(t + 1, stage.device())?;
        let model = Routed {
            mora: self,
            trainable: self.stage_params(t),
            classes: stream.stages[t].clone(),
        };
        stage.train_stage(&model, train_data, t, progress)
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        _j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        _stream: &Stream,
    ) -> anyhow::Result<Vec<u32>> {
        let model = Routed {
            mora: self,
            trainable: NamedVars::default(),
            classes: 0..seen,
        };
        stage.predictions(&model, eval)
    }

    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        Ok(self.all_params().tensors())
    }

    /// Grows to the checkpoint's stages, then loads every expert and the classifier.
    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        let stages = state
            .keys()
            .filter_map(|k| k.strip_prefix("experts.0.query.")?.strip_suffix(".a"))
            .filter_map(|t| t.parse::<usize>().ok())
            .max()
            .map_or(0, |t| t + 1);
        let device = self.head.params().vars()[0].device().clone();
        self.grow_to(stages, &device)?;
        Ok(self.all_params().load(state)?)
    }

    /// Every expert added so far and the classifier; the backbone is frozen.
    fn counts(&self) -> (u64, u64) {
        let trainable = self.all_params().count() as u64;
        (trainable, self.pretrained + trainable)
    }

    fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("mora.safetensors");
        self.all_params().save_safetensors(&path)?;
        Ok(std::fs::metadata(&path)?.len())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn experts(stages: usize, seed: u64) -> Experts {
        let init = SeededInit::new(seed, &Device::Cpu);
        Experts {
            stages: (0..stages)
                .map(|t| {
                    let mut fork = init.fork(&format!("{t}"));
                    (
                        fork.uniform((EXPERTS_PER_STAGE, 6), -1.0, 1.0).unwrap(),
                        init.fork(&format!("b{t}"))
                            .uniform((5, EXPERTS_PER_STAGE), -1.0, 1.0)
                            .unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// With every expert active the rank-1 experts sum to LoRA's `B A x`.
    #[test]
    fn all_experts_active_is_the_lora_delta() {
        let e = experts(2, 3);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6), &Device::Cpu).unwrap();
        let delta = e.delta(&x, EXPERTS_PER_STAGE).unwrap().unwrap();
        let a = Tensor::cat(&[e.stages[0].0.as_tensor(), e.stages[1].0.as_tensor()], 0).unwrap();
        let b = Tensor::cat(&[e.stages[0].1.as_tensor(), e.stages[1].1.as_tensor()], 1).unwrap();
        let lora = x
            .broadcast_matmul(&b.matmul(&a).unwrap().t().unwrap())
            .unwrap();
        assert!(max_diff(&delta, &lora) < 1e-5);
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// With a budget of k, each token's delta sums, in every stage's group, exactly its k experts
    /// of largest |a_iᵀ x|, computed one by one.
    #[test]
    fn a_token_uses_the_k_most_activated_experts_of_each_group() {
        let e = experts(2, 4);
        let x = Tensor::randn(0f32, 1.0, (1, 2, 6), &Device::Cpu).unwrap();
        let k = 3;
        let got = e.delta(&x, k).unwrap().unwrap().to_vec3::<f32>().unwrap();
        let xs = x.to_vec3::<f32>().unwrap();
        for (token, xt) in xs[0].iter().enumerate() {
            for o in 0..5 {
                let mut want = 0f32;
                for (a, b) in &e.stages {
                    let a = a.as_tensor().to_vec2::<f32>().unwrap();
                    let b = b.as_tensor().to_vec2::<f32>().unwrap();
                    let z: Vec<f32> = a
                        .iter()
                        .map(|row| row.iter().zip(xt).map(|(p, q)| p * q).sum())
                        .collect();
                    let mut order: Vec<usize> = (0..z.len()).collect();
                    order.sort_by(|&i, &j| z[j].abs().total_cmp(&z[i].abs()));
                    want += order[..k].iter().map(|&i| b[o][i] * z[i]).sum::<f32>();
                }
                assert!(
                    (got[0][token][o] - want).abs() < 1e-5,
                    "{} vs {want}",
                    got[0][token][o]
                );
            }
        }
    }

    /// A new stage's experts (b zero) leave the function exactly as it was, whatever they
    /// activate: they take no old expert's place.
    #[test]
    fn a_new_stage_starts_from_the_previous_function() {
        let mut e = experts(1, 5);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6), &Device::Cpu).unwrap();
        let before = e.delta(&x, TOP_K).unwrap().unwrap();
        let init = SeededInit::new(9, &Device::Cpu);
        e.stages.push((
            init.fork("a")
                .uniform((EXPERTS_PER_STAGE, 6), -10.0, 10.0)
                .unwrap(),
            init.zeros((5, EXPERTS_PER_STAGE)).unwrap(),
        ));
        let after = e.delta(&x, TOP_K).unwrap().unwrap();
        assert_eq!(max_diff(&before, &after), 0.0);
    }
}
