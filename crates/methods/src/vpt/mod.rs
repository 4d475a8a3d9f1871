//! Visual Prompt Tuning (Jia et al., 2022, "Visual Prompt Tuning", ECCV, arXiv:2203.12119).
//!
//! Learned prompt tokens are inserted between the CLS token and the patch tokens. VPT-shallow
//! inserts one set before the first block; VPT-deep gives every block its own set, replacing the
//! previous block's prompt outputs. Prompts are initialised uniformly in `±sqrt(6 / (3·p² + d))`
//! (Xavier over the patch dimension, as the paper's code) and pass through dropout in training.
//! VPT changes the output at initialisation (the prompts are attended to), by design.

use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use peftbench_backbones::{Backbone, Hooks, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

/// VPT hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VptConfig {
    /// Prompt tokens per inserted set.
    pub prompts: usize,
    /// Dropout on the prompt tokens during training (the paper's `PROMPT.DROPOUT`).
    pub dropout: f64,
    /// Patch size used in the init bound `sqrt(6 / (3·patch² + hidden))` (16 for ViT-B/16).
    pub init_patch_size: usize,
}

impl Default for VptConfig {
    fn default() -> Self {
        Self {
            prompts: 10,
            dropout: 0.1,
            init_patch_size: 16,
        }
    }
}

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "prompts",
        default: "10",
        doc: "number of prompt tokens per set",
    },
    ParamDoc {
        name: "dropout",
        default: "0.1",
        doc: "dropout on prompt tokens (training)",
    },
    ParamDoc {
        name: "init_patch_size",
        default: "16",
        doc: "patch size in the uniform init bound",
    },
];

/// VPT as a registry method: `deep: false` is VPT-shallow (prompts in front of the first block
/// only), `deep: true` VPT-deep (a prompt set for every block).
pub struct Vpt {
    deep: bool,
}

pub const VPT_SHALLOW: Vpt = Vpt { deep: false };
pub const VPT_DEEP: Vpt = Vpt { deep: true };

pub struct VptAdaptation {
    config: VptConfig,
    deep: bool,
    /// `[prompts, hidden]` per prompted block.
    prompts: Vec<Var>,
    params: NamedVars,
}

impl VptAdaptation {
    pub fn new(
        config: VptConfig,
        deep: bool,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> candle_core::Result<Self> {
        let hidden = backbone.info().hidden_size;
        let sets = if deep { backbone.info().num_layers } else { 1 };
        let bound = (6.0 / (3 * config.init_patch_size.pow(2) + hidden) as f32).sqrt();
        let mut prompts = Vec::with_capacity(sets);
        let mut params = NamedVars::default();
        for layer in 0..sets {
            let name = if deep {
                format!("prompt_embeddings.{layer}")
            } else {
                "prompt_embeddings".to_string()
            };
            let var = init
                .fork(&name)
                .uniform((config.prompts, hidden), -bound, bound)?;
            params.push(name, var.clone());
            prompts.push(var);
        }
        Ok(Self {
            config,
            deep,
            prompts,
            params,
        })
    }

    fn prompt_batch(
        &self,
        layer: usize,
        batch: usize,
        ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        let p = self.prompts[layer].as_tensor();
        let p = ctx.dropout(p, self.config.dropout)?;
        p.unsqueeze(0)?.broadcast_as((batch, p.dim(0)?, p.dim(1)?))
    }
}

impl Hooks for VptAdaptation {
    /// Prompts enter the token stream between blocks ([`Hooks::tokens`]).
    fn adapts_inside(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }

    fn adapts_output(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }

    fn tokens(
        &self,
        layer: usize,
        tokens: Tensor,
        ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = tokens.dims3()?;
        let n = self.config.prompts;
        if layer == 0 {
            // [CLS, patches] -> [CLS, prompts, patches]
            let prompts = self.prompt_batch(0, b, ctx)?;
            Tensor::cat(
                &[
                    &tokens.narrow(1, 0, 1)?,
                    &prompts,
                    &tokens.narrow(1, 1, t - 1)?,
                ],
                1,
            )
        } else if self.deep {
            // Replace the previous block's prompt outputs with this block's prompts.
            let prompts = self.prompt_batch(layer, b, ctx)?;
            Tensor::cat(
                &[
                    &tokens.narrow(1, 0, 1)?,
                    &prompts,
                    &tokens.narrow(1, 1 + n, t - 1 - n)?,
                ],
                1,
            )
        } else {
            Ok(tokens)
        }
    }
}

impl Adaptation for VptAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let method = if self.deep { "vpt-deep" } else { "vpt-shallow" };
        peft_format::write_native(dir, method, &self.config, base_model, &self.params, head)
    }
}

fn validate(name: &str, params: &serde_json::Value) -> Result<VptConfig, String> {
    let c: VptConfig = parse_config(name, params)?;
    if c.prompts == 0 {
        return Err(format!("method `{name}`: prompts must be at least 1"));
    }
    if !(0.0..1.0).contains(&c.dropout) {
        return Err(format!(
            "method `{name}`: dropout {} is not in [0, 1)",
            c.dropout
        ));
    }
    Ok(c)
}

impl Method for Vpt {
    fn info(&self) -> MethodInfo {
        let (name, summary) = if self.deep {
            ("vpt-deep", "VPT-deep: a learned prompt set for every block")
        } else {
            (
                "vpt-shallow",
                "VPT-shallow: learned prompt tokens inserted before the first block",
            )
        };
        MethodInfo {
            name,
            summary,
            paper: "Jia et al., Visual Prompt Tuning, ECCV 2022 (arXiv:2203.12119)",
            params: PARAMS,
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        validate(self.info().name, params).map(|_| ())
    }

    fn check_backbone(
        &self,
        _params: &serde_json::Value,
        info: &peftbench_backbones::BackboneInfo,
    ) -> Result<(), String> {
        info.check_prompt_sites(self.info().name)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config = validate(self.info().name, params).map_err(anyhow::Error::msg)?;
        Ok(Box::new(VptAdaptation::new(
            config, self.deep, backbone, init,
        )?))
    }
}
