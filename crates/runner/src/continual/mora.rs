//! MoRA, "Little by Little" (Lu, Zhao, Xue, Yao, Moore, Gong, 2025: continual learning via
//! self-activated sparse mixture-of-rank adaptation; its code, `Artificer-AI-Lab/MoRAM`): LoRA on
//! the attention's query and value projections of the frozen backbone, split into rank-1
//! experts `b_i a_iᵀ`. Every stage adds [`EXPERTS_PER_STAGE`] experts per projection (`a` as
//! LoRA's A, `b` zero) and trains only those and the classifier; earlier experts stay frozen.
//!
//! - **Self-activation**: an expert's relevance is its own activation `z_i = a_iᵀ x`, normalised
//!   over the projection's experts, `s_i = z_i / ‖z‖` (no router).
//! - **Activation budget**: per token, the [`TOP_K`] largest `s_i` (signed, as the reference
//!   code) are kept, weighted `w = softmax(s / τ)` over them, `τ` = [`TEMPERATURE`], and
//!   `Δ(x) = Σ_i w_i z_i b_i`. Old and new experts compete for the budget, as in the paper.
//! - **Rank pruning**: at inference, experts with `s_i` below `δ` = [`PRUNE_BELOW`] are dropped
//!   from the token's mixture (the others keep their weights), as the reference code and the
//!   project page do it.
//!
//! Logits are masked to the stage's classes in training. The reference code adapts CLIP's image
//! and text encoders and classifies by class-prompt embeddings; on an image backbone the
//! classifier is a linear head, as for the other learners here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Tensor, Var, D};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::ClassifierHead;
use peftbench_train::derive_seed;

use super::{
    exemplar_free, HookedClassifier, StageContext, StageLearner, StageOutcome, Stream, STAGE,
};
use crate::run::MODEL_INIT;

/// Rank-1 experts added per adapted projection at every stage.
pub(crate) const EXPERTS_PER_STAGE: usize = 4;
/// Experts active per token: the activation budget `k` (MoRAM's default: the ranks a stage adds).
pub(crate) const TOP_K: usize = EXPERTS_PER_STAGE;
/// Temperature `τ` of the gate's softmax (MoRAM's CLIP runs: 0.01).
pub(crate) const TEMPERATURE: f64 = 0.01;
/// Rank pruning at inference: an expert whose normalised score is below `δ` is dropped from
/// the token's mixture (MoRAM's run scripts: 0.2).
pub(crate) const PRUNE_BELOW: f64 = 0.2;
/// The projections that get experts.
const SITES: [LinearSite; 2] = [LinearSite::Query, LinearSite::Value];
/// Far below any scaled score: the logit of an expert outside the budget.
const OUTSIDE: f64 = -1e9;

/// The experts of one projection: `a` rows `[experts, in]`, `b` columns `[out, experts]`, one
/// pair of variables per stage.
#[derive(Default)]
struct Experts {
    stages: Vec<(Var, Var)>,
}

/// How a token's experts are weighed (see the module documentation).
#[derive(Debug, Clone, Copy)]
struct Gate {
    top_k: usize,
    temperature: f64,
    prune_below: f64,
}

impl Experts {
    /// `Δ(x) = Σ_i w_i (a_iᵀ x) b_i` over every stage's experts: `s = z / ‖z‖` of the
    /// activations `z = A x`, the `top_k` largest `s` per token kept (signed, as MoRAM), `w =
    /// softmax(s / τ)` over them; at inference (`training` false) experts with `s < δ` are also
    /// dropped, the others keeping their weights.
    fn delta(
        &self,
        x: &Tensor,
        gate: &Gate,
        training: bool,
    ) -> candle_core::Result<Option<Tensor>> {
        if self.stages.is_empty() {
            return Ok(None);
        }
        let a: Vec<&Tensor> = self.stages.iter().map(|(a, _)| a.as_tensor()).collect();
        let b: Vec<&Tensor> = self.stages.iter().map(|(_, b)| b.as_tensor()).collect();
        let (a, b) = (Tensor::cat(&a, 0)?, Tensor::cat(&b, 1)?);
        let z = x.broadcast_matmul(&a.t()?)?;
        let norm = (z.sqr()?.sum_keepdim(D::Minus1)?.sqrt()? + 1e-12)?;
        let s = z.broadcast_div(&norm)?;
        let experts = a.dim(0)?;
        let scores = s.detach();
        let keep = if gate.top_k < experts {
            // At or above the k-th largest score of its token (ties keep more).
            let (sorted, _) = scores.sort_last_dim(false)?;
            let kth = sorted.narrow(D::Minus1, gate.top_k - 1, 1)?;
            scores.broadcast_ge(&kth)?.to_dtype(z.dtype())?
        } else {
            scores.ones_like()?
        };
        // Logits s / τ inside the budget, far below outside it.
        let logits =
            ((s / gate.temperature)? * &keep)?.add(&((keep.ones_like()? - &keep)? * OUTSIDE)?)?;
        let mut weights = candle_nn::ops::softmax_last_dim(&logits)?;
        if !training {
            let kept = scores.ge(gate.prune_below)?.to_dtype(z.dtype())?;
            weights = (weights * kept)?;
        }
        (weights * z)?.broadcast_matmul(&b.t()?).map(Some)
    }
}

/// Every adapted projection's experts, as the backbone's linear hook.
struct ExpertHooks {
    sites: BTreeMap<(usize, LinearSite), Experts>,
    gate: Gate,
}

impl Hooks for ExpertHooks {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        let out = base.forward(x)?;
        match self.sites.get(&(layer, site)) {
            Some(experts) => match experts.delta(x, &self.gate, ctx.is_train())? {
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
                gate: Gate {
                    top_k: TOP_K,
                    temperature: TEMPERATURE,
                    prune_below: PRUNE_BELOW,
                },
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
        let model = HookedClassifier {
            backbone: self.backbone.as_ref(),
            hooks: &self.hooks,
            head: &self.head,
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
        let model = HookedClassifier {
            backbone: self.backbone.as_ref(),
            hooks: &self.hooks,
            head: &self.head,
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

    const GATE: Gate = Gate {
        top_k: 3,
        temperature: 0.5,
        prune_below: 0.2,
    };

    /// Token by token, the gate follows its definition computed by hand: normalised scores,
    /// the k largest (signed) kept, softmax of the scores over the temperature, pruning below δ
    /// at inference only, then `Σ w_i z_i b_i` over every stage's experts.
    #[test]
    fn the_gate_follows_its_definition() {
        let e = experts(2, 4);
        let x = Tensor::randn(0f32, 1.0, (1, 3, 6), &Device::Cpu).unwrap();
        let xs = x.to_vec3::<f32>().unwrap();
        let a: Vec<Vec<f32>> = e
            .stages
            .iter()
            .flat_map(|(a, _)| a.as_tensor().to_vec2::<f32>().unwrap())
            .collect();
        let b: Vec<Vec<Vec<f32>>> = e
            .stages
            .iter()
            .map(|(_, b)| b.as_tensor().to_vec2::<f32>().unwrap())
            .collect();
        let b_of = |o: usize, i: usize| b[i / EXPERTS_PER_STAGE][o][i % EXPERTS_PER_STAGE];
        for training in [true, false] {
            let got = e
                .delta(&x, &GATE, training)
                .unwrap()
                .unwrap()
                .to_vec3::<f32>()
                .unwrap();
            for (token, xt) in xs[0].iter().enumerate() {
                let z: Vec<f64> = a
                    .iter()
                    .map(|row| row.iter().zip(xt).map(|(p, q)| f64::from(p * q)).sum())
                    .collect();
                let norm = z.iter().map(|v| v * v).sum::<f64>().sqrt();
                let s: Vec<f64> = z.iter().map(|v| v / norm).collect();
                let mut order: Vec<usize> = (0..s.len()).collect();
                order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
                let top = &order[..GATE.top_k];
                let exp: Vec<f64> = top
                    .iter()
                    .map(|&i| (s[i] / GATE.temperature).exp())
                    .collect();
                let total: f64 = exp.iter().sum();
                for (o, got_o) in got[0][token].iter().enumerate() {
                    let mut want = 0.0;
                    for (&i, e) in top.iter().zip(&exp) {
                        if !training && s[i] < GATE.prune_below {
                            continue;
                        }
                        want += e / total * z[i] * f64::from(b_of(o, i));
                    }
                    let g = f64::from(*got_o);
                    assert!(
                        (g - want).abs() < 1e-4,
                        "training {training}: {g} vs {want}"
                    );
                }
            }
        }
    }

    /// Without experts there is no delta; a new stage's experts (b zero) compete for the budget
    /// but add nothing of their own.
    #[test]
    fn new_experts_start_silent() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6), &Device::Cpu).unwrap();
        assert!(Experts::default().delta(&x, &GATE, true).unwrap().is_none());
        let mut e = experts(1, 5);
        let init = SeededInit::new(9, &Device::Cpu);
        e.stages.push((
            init.fork("a")
                .uniform((EXPERTS_PER_STAGE, 6), -1.0, 1.0)
                .unwrap(),
            init.zeros((5, EXPERTS_PER_STAGE)).unwrap(),
        ));
        let only_new = Experts {
            stages: vec![e.stages[1].clone()],
        };
        let silent = only_new.delta(&x, &GATE, false).unwrap().unwrap();
        assert_eq!(
            silent
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        assert!(e.delta(&x, &GATE, false).unwrap().is_some());
    }
}
