//! Compacter and Compacter++ (Karimi Mahabadi, Henderson & Ruder, 2021, "Compacter: Efficient
//! Low-Rank Hypercomplex Adapter Layers", NeurIPS, arXiv:2106.04647).
//!
//! Bottleneck adapters whose down- and up-projections are PHM layers: each weight is a sum of `n`
//! Kronecker products `Σ_i A_i ⊗ B_i`, the "rules" `A_i` (`n x n`) shared by every adapter of the
//! model and the blocks `B_i = s_i t_i` low-rank (rank 1 in the paper). Compacter places an adapter
//! after the attention and after the feed-forward sublayer of every block; Compacter++ only after
//! the feed-forward one. The up-projection's left factors start at zero, so the adapters output
//! zero and the model is unchanged at initialisation. Rules start `N(0, 0.01)`
//! (the paper's code: `phm_init_range 0.01`).

mod config;
mod layer;

pub use config::CompacterConfig;
pub use layer::{CompacterAdapter, PhmLinear};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, BackboneInfo, Hooks, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

/// Compacter (`plus_plus: false`, adapters after both sublayers) or Compacter++ (after the
/// feed-forward sublayer only).
pub struct Compacter {
    plus_plus: bool,
}

pub const COMPACTER: Compacter = Compacter { plus_plus: false };
pub const COMPACTER_PLUS_PLUS: Compacter = Compacter { plus_plus: true };

impl Compacter {
    fn name(&self) -> &'static str {
        if self.plus_plus {
            "compacter++"
        } else {
            "compacter"
        }
    }
}

pub struct CompacterAdaptation {
    config: CompacterConfig,
    name: &'static str,
    /// `[n, n, n]`: the shared rules.
    rules: Var,
    /// Keyed by (block, after-MLP?).
    adapters: BTreeMap<(usize, bool), CompacterAdapter>,
    params: NamedVars,
}

impl CompacterAdaptation {
    pub fn new(
        config: CompacterConfig,
        plus_plus: bool,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        let name = if plus_plus {
            "compacter++"
        } else {
            "compacter"
        };
        let hidden = backbone.info().hidden_size;
        let k = config
            .bottleneck(name, hidden)
            .map_err(anyhow::Error::msg)?;
        let n = config.phm_dim;
        let mut params = NamedVars::default();
        let rules = init.fork("phm_rule").normal((n, n, n), 0.01)?;
        params.push("compacter.phm_rule", rules.clone());
        let mut adapters = BTreeMap::new();
        let sites: &[(bool, &str)] = if plus_plus {
            &[(true, "output_adapter")]
        } else {
            &[(false, "attention_adapter"), (true, "output_adapter")]
        };
        for layer in 0..backbone.info().num_layers {
            for &(after_mlp, site) in sites {
                let prefix = format!("{}.{site}", backbone.block_path(layer));
                let init = init.fork(&crate::init_stream(layer, site));
                let adapter = CompacterAdapter {
                    down: PhmLinear::new(hidden, k, n, config.phm_rank, false, &init.fork("down"))?,
                    up: PhmLinear::new(k, hidden, n, config.phm_rank, true, &init.fork("up"))?,
                    activation: config.activation,
                };
                adapter
                    .down
                    .push_params(&format!("{prefix}.down"), &mut params);
                adapter.up.push_params(&format!("{prefix}.up"), &mut params);
                adapters.insert((layer, after_mlp), adapter);
            }
        }
        Ok(Self {
            config,
            name,
            rules,
            adapters,
            params,
        })
    }
}

impl Hooks for CompacterAdaptation {
    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        _input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match self.adapters.get(&(layer, kind == Sublayer::Mlp)) {
            Some(adapter) => &output + adapter.forward(&output, self.rules.as_tensor())?,
            None => Ok(output),
        }
    }
}

impl Adaptation for CompacterAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(dir, self.name, &self.config, base_model, &self.params, head)
    }
}

impl Method for Compacter {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: self.name(),
            summary: if self.plus_plus {
                "Compacter++: one PHM (Kronecker-product, shared rules, low-rank) adapter after each FFN"
            } else {
                "Compacter: PHM (Kronecker-product, shared rules, low-rank) adapters after attention and FFN"
            },
            paper: "Karimi Mahabadi, Henderson & Ruder, Compacter, NeurIPS 2021 (arXiv:2106.04647)",
            params: &[
                ParamDoc {
                    name: "reduction_factor",
                    default: "32",
                    doc: "bottleneck = hidden / reduction_factor",
                },
                ParamDoc {
                    name: "phm_dim",
                    default: "4",
                    doc: "n: Kronecker products per weight; divides hidden and bottleneck",
                },
                ParamDoc {
                    name: "phm_rank",
                    default: "1",
                    doc: "rank of each block s_i t_i",
                },
                ParamDoc {
                    name: "activation",
                    default: "gelu",
                    doc: "relu, gelu or silu",
                },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<CompacterConfig>(self.name(), params)?.check(self.name())
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> std::result::Result<(), String> {
        parse_config::<CompacterConfig>(self.name(), params)?
            .bottleneck(self.name(), info.hidden_size)
            .map(|_| ())
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: CompacterConfig =
            parse_config(self.name(), params).map_err(anyhow::Error::msg)?;
        config.check(self.name()).map_err(anyhow::Error::msg)?;
        Ok(Box::new(CompacterAdaptation::new(
            config,
            self.plus_plus,
            backbone,
            init,
        )?))
    }
}
