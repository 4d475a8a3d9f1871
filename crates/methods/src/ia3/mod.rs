//! IA3: "Infused Adapter by Inhibiting and Amplifying Inner Activations" (Liu et al., 2022,
//! "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning",
//! NeurIPS, arXiv:2205.05638).
//!
//! Learned vectors rescale the keys and values of every attention (`k = l_k ⊙ (W_k x + b_k)`) and
//! the intermediate activation of every FFN (`fc2(l_ff ⊙ act(fc1 x))`). The vectors start at one,
//! so the model is unchanged at initialisation, and fold into the frozen weights (rows for
//! output scaling, columns for input scaling), so merged inference is free. Saved in Hugging Face
//! PEFT's format (`peft_type: IA3`, one `ia3_l` tensor per module: `[out, 1]`, or `[1, in]` for
//! feed-forward modules).

mod config;

pub use config::Ia3Config;

use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::projections::ProjectionAdapters;
use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

pub struct Ia3;

/// One learned vector: it scales a projection's output, or a feed-forward projection's input.
struct Ia3Vector {
    /// `[out, 1]` (output scaling) or `[1, in]` (input scaling), PEFT's shapes.
    scale: Var,
    feedforward: bool,
}

/// IA3 attached to a backbone: one scaling vector per (block, targeted projection).
pub struct Ia3Adaptation {
    config: Ia3Config,
    vectors: ProjectionAdapters<Ia3Vector>,
    params: NamedVars,
}

impl Ia3Adaptation {
    pub fn new(config: Ia3Config, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let mut params = NamedVars::default();
        let vectors = ProjectionAdapters::build(
            backbone,
            &config.target_modules,
            init,
            &mut params,
            |site, base, init| {
                let feedforward = config.is_feedforward(site);
                let (out, inp) = base.weight.dims2()?;
                let shape = if feedforward { (1, inp) } else { (out, 1) };
                let scale = init.constant(shape, 1.0)?;
                let vars = vec![("ia3_l", scale.clone())];
                Ok((Ia3Vector { scale, feedforward }, vars))
            },
        )?;
        Ok(Self {
            config,
            vectors,
            params,
        })
    }

    pub fn config(&self) -> &Ia3Config {
        &self.config
    }

    /// Folds every vector into the backbone's weights: afterwards the backbone alone computes what
    /// backbone + IA3 computed.
    pub fn merge_into(&self, backbone: &mut dyn Backbone) -> Result<()> {
        let merged = self.vectors.merged(backbone, |base, v| {
            let s = v.scale.as_tensor();
            // [out, 1] scales rows (and the bias); [1, in] scales columns.
            let mut out = vec![("weight", base.weight.broadcast_mul(s)?)];
            if !v.feedforward {
                if let Some(b) = &base.bias {
                    out.push(("bias", (b * s.flatten_all()?)?));
                }
            }
            Ok(out)
        })?;
        crate::replace_pretrained(backbone, merged)
    }
}

impl Hooks for Ia3Adaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.vectors.linear(layer, site, x, base, |v| {
            let s = v.scale.as_tensor().flatten_all()?;
            if v.feedforward {
                base.forward(&x.broadcast_mul(&s)?)
            } else {
                base.forward(x)?.broadcast_mul(&s)
            }
        })
    }
}

impl Adaptation for Ia3Adaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn merge_into(&self, backbone: &mut dyn Backbone) -> anyhow::Result<()> {
        Ok(Ia3Adaptation::merge_into(self, backbone)?)
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let tensors = self.params.tensors();
        let naming = peft_format::ModuleNaming::for_tensors(&tensors);
        let mut config = peft_format::base_config("IA3", base_model);
        config.insert(
            "target_modules".into(),
            peft_format::target_modules_value(&self.config.target_modules, naming),
        );
        config.insert(
            "feedforward_modules".into(),
            peft_format::target_modules_value(&self.config.feedforward_modules, naming),
        );
        config.insert("fan_in_fan_out".into(), serde_json::json!(false));
        config.insert("init_ia3_weights".into(), serde_json::json!(true));
        config.insert("exclude_modules".into(), serde_json::Value::Null);
        config.insert("layers_to_transform".into(), serde_json::Value::Null);
        config.insert("layers_pattern".into(), serde_json::Value::Null);
        peft_format::write_adapter(dir, &serde_json::Value::Object(config), tensors, head)
    }
}

impl Method for Ia3 {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "ia3",
            summary: "IA3: learned vectors rescale keys, values and FFN activations; mergeable",
            paper: "Liu et al., Few-Shot PEFT is Better and Cheaper than In-Context Learning, NeurIPS 2022 (arXiv:2205.05638)",
            params: &[
                ParamDoc {
                    name: "target_modules",
                    default: "[key, value, fc2]",
                    doc: "projections whose output (or input, see feedforward_modules) is rescaled",
                },
                ParamDoc {
                    name: "feedforward_modules",
                    default: "[fc2]",
                    doc: "targets whose input is rescaled (fc2's input is the FFN activation)",
                },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<Ia3Config>("ia3", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &peftbench_backbones::BackboneInfo,
    ) -> std::result::Result<(), String> {
        let config = parse_config::<Ia3Config>("ia3", params)?;
        crate::check_sites("ia3", &config.target_modules, info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: Ia3Config = parse_config("ia3", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(Ia3Adaptation::new(config, backbone, init)?))
    }
}
