//! Bi-LoRA (Jie, Wang, Tang & Deng, 2023, arXiv:2307.16867, the paper's LoRA variant): LoRA on
//! the query and value projections with both factors quantised to 1 or 2 bits,
//! `y = W x + b + s · Q(B) dropout(Q(A) x)`.
//!
//! As in the paper's code, the branch is scaled by a plain `s` (not `alpha / r`) and dropout sits
//! between the two factors. One deliberate difference: the paper draws `B` from a truncated normal
//! (std 1e-3); here `B` starts at zero, which the quantiser maps to exactly zero (a zero row has a
//! zero step), so the model is unchanged at initialisation like every other LoRA here. The
//! straight-through estimator still passes `B` its gradient, so training starts the same way.
//! Mergeable: `W + s · Q(B) Q(A)` is the frozen projection's new weight.

use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, BackboneInfo, Hooks, Linear, LinearSite};
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use super::{check_bits, low_bit, restore_packed, write_packed};
use crate::lora::config::target_modules_or_preset;
use crate::projections::ProjectionAdapters;
use crate::{parse_config, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

/// Bi-LoRA hyper-parameters. Defaults: the paper's 1-bit configuration (rank 32 on query and
/// value, scale 1.0, dropout 0.1 on the rank-`r` activations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BiLoraConfig {
    /// Bits per weight of `A` and `B`: 1 or 2.
    pub bits: u8,
    /// Rank of the update.
    pub r: usize,
    /// Scale `s` of the branch output (the paper tunes it per task).
    pub scale: f64,
    /// Dropout on `Q(A) x`.
    pub dropout: f64,
    /// Projections to adapt (site names or a preset `qv`, `qkv`, `all-linear`).
    #[serde(deserialize_with = "target_modules_or_preset")]
    pub target_modules: Vec<LinearSite>,
}

impl Default for BiLoraConfig {
    fn default() -> Self {
        Self {
            bits: 1,
            r: 32,
            scale: 1.0,
            dropout: 0.1,
            target_modules: vec![LinearSite::Query, LinearSite::Value],
        }
    }
}

impl BiLoraConfig {
    pub fn check(&self) -> std::result::Result<(), String> {
        check_bits("bi-lora", self.bits)?;
        if self.r == 0 {
            return Err(
                "method `bi-lora`: field `r` is 0; allowed range: 1 to the adapted layer's width"
                    .into(),
            );
        }
        if self.target_modules.is_empty() {
            return Err("method `bi-lora`: field `target_modules` is empty; allowed: a non-empty subset of query, key, value, attention_output, fc1, fc2".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "method `bi-lora`: field `dropout` is {}; allowed range [0, 1)",
                self.dropout
            ));
        }
        Ok(())
    }

    /// A rank above `min(in, out)` of an adapted projection adds parameters without adding rank.
    pub fn check_widths(&self, info: &BackboneInfo) -> std::result::Result<(), String> {
        crate::check_rank_widths("bi-lora", "r", self.r, &self.target_modules, info)
    }
}

/// One adapted projection: latent full-precision factors, quantised in every forward pass.
struct BiLoraLayer {
    /// `[r, in]`, Kaiming-uniform.
    a: Var,
    /// `[out, r]`, zero.
    b: Var,
}

impl BiLoraLayer {
    /// `Q(B) Q(A)`, differentiable through the straight-through estimator (the factors as they
    /// are when `restored` from a saved adapter).
    fn factors(&self, bits: u8, restored: bool) -> Result<(Tensor, Tensor)> {
        Ok((
            low_bit(self.a.as_tensor(), bits, restored)?,
            low_bit(self.b.as_tensor(), bits, restored)?,
        ))
    }
}

/// Bi-LoRA attached to a backbone.
pub struct BiLoraAdaptation {
    config: BiLoraConfig,
    layers: ProjectionAdapters<BiLoraLayer>,
    params: NamedVars,
    /// A saved adapter's packed codes and steps, once its factors hold the low-bit values read
    /// from them.
    restored: Option<std::collections::BTreeMap<String, Tensor>>,
}

impl BiLoraAdaptation {
    pub fn new(config: BiLoraConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let mut params = NamedVars::default();
        let layers = ProjectionAdapters::build(
            backbone,
            &config.target_modules,
            init,
            &mut params,
            |_, base, init| {
                let (out, inp) = base.weight.dims2()?;
                let lora = BiLoraLayer {
                    a: init.fork("lora_A").kaiming_uniform((config.r, inp), inp)?,
                    b: init.zeros((out, config.r))?,
                };
                let vars = vec![
                    ("lora_A.weight", lora.a.clone()),
                    ("lora_B.weight", lora.b.clone()),
                ];
                Ok((lora, vars))
            },
        )?;
        Ok(Self {
            config,
            layers,
            params,
            restored: None,
        })
    }
}

impl Hooks for BiLoraAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.layers.linear(layer, site, x, base, |lora| {
            let (a, b) = lora.factors(self.config.bits, self.restored.is_some())?;
            let h = ctx.dropout(&ops::linear(x, &a, None)?, self.config.dropout)?;
            base.forward(x)? + (ops::linear(&h, &b, None)? * self.config.scale)?
        })
    }
}

impl Adaptation for BiLoraAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    /// `W += s · Q(B) Q(A)`: exact, since the quantised factors are what the forward pass uses.
    fn merge_into(&self, backbone: &mut dyn Backbone) -> anyhow::Result<()> {
        let merged = self.layers.merged(backbone, |base, lora| {
            let (a, b) = lora.factors(self.config.bits, self.restored.is_some())?;
            let delta = (b.matmul(&a)? * self.config.scale)?;
            Ok(vec![("weight", base.weight.add(&delta)?)])
        })?;
        Ok(crate::replace_pretrained(backbone, merged)?)
    }

    fn restore(
        &mut self,
        _dir: &Path,
        tensors: &std::collections::BTreeMap<String, Tensor>,
    ) -> anyhow::Result<crate::Restored> {
        let (restored, packed) = restore_packed(&self.params, self.config.bits, tensors)?;
        self.restored = Some(packed);
        Ok(restored)
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        write_packed(
            dir,
            "bi-lora",
            &self.config,
            base_model,
            &self.params,
            self.config.bits,
            self.restored.as_ref(),
            head,
        )
    }
}

pub struct BiLora;

impl Method for BiLora {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "bi-lora",
            summary: "Bi-LoRA: LoRA on query and value with 1- or 2-bit factors (STE), saved bit-packed; mergeable",
            paper: "Jie et al., Revisiting the Parameter Efficiency of Adapters from the Perspective of Precision Redundancy, ICCV 2023 (arXiv:2307.16867)",
            params: &[
                ParamDoc { name: "bits", default: "1", doc: "bits per weight of A and B: 1 or 2" },
                ParamDoc { name: "r", default: "32", doc: "rank of the update" },
                ParamDoc { name: "scale", default: "1.0", doc: "scale s of the branch output" },
                ParamDoc { name: "dropout", default: "0.1", doc: "dropout on the rank-r activations Q(A) x" },
                ParamDoc { name: "target_modules", default: "[query, value]", doc: "projections to adapt, or a preset qv, qkv, all-linear" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<BiLoraConfig>("bi-lora", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> std::result::Result<(), String> {
        parse_config::<BiLoraConfig>("bi-lora", params)?.check_widths(info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: BiLoraConfig = parse_config("bi-lora", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(BiLoraAdaptation::new(config, backbone, init)?))
    }
}
