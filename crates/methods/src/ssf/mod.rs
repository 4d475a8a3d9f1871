//! SSF: Scaling & Shifting your Features (Lian et al., 2022, "Scaling & Shifting Your Features: A
//! New Baseline for Efficient Model Tuning", NeurIPS, arXiv:2210.08823).
//!
//! After every linear projection and every layer norm, features are scaled and shifted per
//! channel: `y = γ ⊙ x + β`. Both are linear in the output of an affine op, so they fold into its
//! weight and bias (`W' = diag(γ) W`, `b' = γ ⊙ b + β`) and merged inference costs nothing. The
//! paper initialises `γ ~ N(1, σ)`, `β ~ N(0, σ)` with `σ = 0.02`, so the output at initialisation
//! is close to, not equal to, the frozen model's (`init_std: 0` makes it exact). The patch
//! embedding's scale-shift of the paper is not applied: the backbone exposes no site there.

mod config;
mod layer;

pub use config::SsfConfig;
pub use layer::ScaleShift;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite, NormSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

pub struct Ssf;

/// Where a scale-shift sits: after a projection or after a norm (`None` layer = the final norm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SsfSite {
    Linear(usize, LinearSite),
    NormBeforeAttention(usize),
    NormBeforeMlp(usize),
    FinalNorm,
}

pub struct SsfAdaptation {
    config: SsfConfig,
    /// Each scale-shift with the checkpoint path of the op it follows.
    ops: BTreeMap<SsfSite, (String, ScaleShift)>,
    params: NamedVars,
}

impl SsfAdaptation {
    pub fn new(config: SsfConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let info = backbone.info();
        let hidden = info.hidden_size;
        let mut ops = BTreeMap::new();
        let mut params = NamedVars::default();
        let mut add = |site: SsfSite, path: String, features: usize| -> Result<()> {
            let op = ScaleShift::new(features, config.init_std, &init.fork(&path))?;
            op.push_params(&path, &mut params);
            ops.insert(site, (path, op));
            Ok(())
        };
        for layer in 0..info.num_layers {
            for &site in &config.target_modules {
                let (_, out) = backbone.linear_dims(site);
                add(
                    SsfSite::Linear(layer, site),
                    backbone.module_path(layer, site),
                    out,
                )?;
            }
            if config.norms {
                let block = backbone.block_path(layer);
                add(
                    SsfSite::NormBeforeAttention(layer),
                    format!("{block}.layernorm_before"),
                    hidden,
                )?;
                add(
                    SsfSite::NormBeforeMlp(layer),
                    format!("{block}.layernorm_after"),
                    hidden,
                )?;
            }
        }
        if let (true, Some(path)) = (config.norms, backbone.final_norm_path()) {
            add(SsfSite::FinalNorm, path, hidden)?;
        }
        Ok(Self {
            config,
            ops,
            params,
        })
    }

    /// Folds every scale-shift into the weights and biases of the op it follows (the projection or
    /// the norm's affine parameters).
    pub fn merge_into(&self, backbone: &mut dyn Backbone) -> Result<()> {
        let mut current: BTreeMap<String, Tensor> = BTreeMap::new();
        backbone.visit_params(&mut |name, t| {
            current.insert(name.to_string(), t.clone());
            Ok(())
        })?;
        let mut merged = BTreeMap::new();
        for (path, op) in self.ops.values() {
            let bias = current.get(&format!("{path}.bias")).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "method `ssf`: cannot merge into `{path}`, it has no bias to hold the shift"
                ))
            })?;
            let (w, b) = op.fold(&current[&format!("{path}.weight")], Some(bias))?;
            merged.insert(format!("{path}.weight"), w);
            merged.insert(format!("{path}.bias"), b);
        }
        crate::replace_pretrained(backbone, merged)
    }
}

impl Hooks for SsfAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let y = base.forward(x)?;
        match self.ops.get(&SsfSite::Linear(layer, site)) {
            Some((_, op)) => op.forward(&y),
            None => Ok(y),
        }
    }

    fn norm(
        &self,
        layer: Option<usize>,
        site: NormSite,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let key = match (layer, site) {
            (Some(l), NormSite::BeforeAttention) => SsfSite::NormBeforeAttention(l),
            (Some(l), NormSite::BeforeMlp) => SsfSite::NormBeforeMlp(l),
            _ => SsfSite::FinalNorm,
        };
        match self.ops.get(&key) {
            Some((_, op)) => op.forward(&output),
            None => Ok(output),
        }
    }
}

impl Adaptation for SsfAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn merge_into(&self, backbone: &mut dyn Backbone) -> anyhow::Result<()> {
        Ok(SsfAdaptation::merge_into(self, backbone)?)
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(dir, "ssf", &self.config, base_model, &self.params, head)
    }
}

impl Method for Ssf {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "ssf",
            summary:
                "SSF: per-channel scale and shift after every projection and layer norm; mergeable",
            paper: "Lian et al., Scaling & Shifting Your Features, NeurIPS 2022 (arXiv:2210.08823)",
            params: &[
                ParamDoc {
                    name: "target_modules",
                    default: "[query, key, value, attention_output, fc1, fc2]",
                    doc: "projections followed by a scale-shift",
                },
                ParamDoc {
                    name: "norms",
                    default: "true",
                    doc: "also scale-shift after every layer norm",
                },
                ParamDoc {
                    name: "init_std",
                    default: "0.02",
                    doc: "init std of scales around 1 and shifts around 0 (0 = exact identity)",
                },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<SsfConfig>("ssf", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &peftbench_backbones::BackboneInfo,
    ) -> std::result::Result<(), String> {
        let config = parse_config::<SsfConfig>("ssf", params)?;
        crate::check_sites("ssf", &config.target_modules, info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: SsfConfig = parse_config("ssf", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(SsfAdaptation::new(config, backbone, init)?))
    }
}
