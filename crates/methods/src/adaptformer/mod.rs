//! AdaptFormer: a bottleneck branch parallel to each MLP, scaled by `s` (Chen et al., 2022,
//! "AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition", NeurIPS,
//! arXiv:2205.13535). The branch reads the same residual stream as the MLP sublayer and its output
//! is added to the MLP's; its up-projection starts at zero (the paper's LoRA-style init), so the
//! model is unchanged at initialisation. Defaults from the paper's VTAB setting: bottleneck 64 on
//! video / 8 on VTAB (we default to 8), scale 0.1, ReLU, dropout 0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use peftbench_backbones::{Backbone, Hooks, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use crate::adapter::{AdapterActivation, Bottleneck};
use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

/// AdaptFormer hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptFormerConfig {
    /// Width of the parallel bottleneck.
    pub bottleneck: usize,
    /// Scale `s` of the branch output.
    pub scale: f64,
    /// Dropout on the bottleneck's hidden activations during training.
    pub dropout: f64,
}

impl Default for AdaptFormerConfig {
    fn default() -> Self {
        Self {
            bottleneck: 8,
            scale: 0.1,
            dropout: 0.1,
        }
    }
}

pub struct AdaptFormer;

pub struct AdaptFormerAdaptation {
    config: AdaptFormerConfig,
    branches: BTreeMap<usize, Bottleneck>,
    params: NamedVars,
}

impl AdaptFormerAdaptation {
    pub fn new(
        config: AdaptFormerConfig,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> candle_core::Result<Self> {
        let hidden = backbone.info().hidden_size;
        let mut branches = BTreeMap::new();
        let mut params = NamedVars::default();
        for layer in 0..backbone.info().num_layers {
            let prefix = format!("{}.adaptmlp", backbone.block_path(layer));
            let branch = Bottleneck::new(
                hidden,
                config.bottleneck,
                AdapterActivation::Relu,
                &init.fork(&crate::init_stream(layer, "adaptmlp")),
            )?;
            branch.push_params(&prefix, &mut params);
            branches.insert(layer, branch);
        }
        Ok(Self {
            config,
            branches,
            params,
        })
    }
}

impl Hooks for AdaptFormerAdaptation {
    /// The parallel branch reads the MLP branch's input and joins its output, outside it.
    fn adapts_inside(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }

    fn adapts_output(&self, layer: usize, kind: Sublayer) -> bool {
        kind == Sublayer::Mlp && self.branches.contains_key(&layer)
    }

    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        input: &Tensor,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        match (kind, self.branches.get(&layer)) {
            (Sublayer::Mlp, Some(branch)) => {
                let parallel = branch.forward_with_dropout(input, self.config.dropout, ctx)?;
                output + (parallel * self.config.scale)?
            }
            _ => Ok(output),
        }
    }
}

impl Adaptation for AdaptFormerAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(
            dir,
            "adaptformer",
            &self.config,
            base_model,
            &self.params,
            head,
        )
    }
}

impl Method for AdaptFormer {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "adaptformer",
            summary: "AdaptFormer: scaled bottleneck branch parallel to each MLP",
            paper: "Chen et al., AdaptFormer, NeurIPS 2022 (arXiv:2205.13535)",
            params: &[
                ParamDoc {
                    name: "bottleneck",
                    default: "8",
                    doc: "width of the parallel bottleneck",
                },
                ParamDoc {
                    name: "scale",
                    default: "0.1",
                    doc: "scale s of the branch output",
                },
                ParamDoc {
                    name: "dropout",
                    default: "0.1",
                    doc: "dropout inside the branch (training only)",
                },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        let c: AdaptFormerConfig = parse_config("adaptformer", params)?;
        if c.bottleneck == 0 {
            return Err("method `adaptformer`: bottleneck must be at least 1".into());
        }
        Ok(())
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        self.validate(params).map_err(anyhow::Error::msg)?;
        let config: AdaptFormerConfig =
            parse_config("adaptformer", params).map_err(anyhow::Error::msg)?;
        Ok(Box::new(AdaptFormerAdaptation::new(
            config, backbone, init,
        )?))
    }
}
