//! Bi-AdaptFormer (Jie, Wang, Tang & Deng, 2023, arXiv:2307.16867): an AdaptFormer branch
//! (parallel to each MLP, scaled by `s`) whose down- and up-projection weights are quantised to 1
//! or 2 bits in every forward pass. Biases stay in full precision, as in the paper. The
//! up-projection starts at zero, which quantises to exactly zero: the model is unchanged at
//! initialisation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, Hooks, Sublayer};
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use super::{check_bits, low_bit, packed_tensors, restore_packed, write_packed};
use crate::{parse_config, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

/// Bi-AdaptFormer hyper-parameters. Defaults: the paper's 1-bit adapters with a 32-wide bottleneck
/// (the width it finds best at 1 bit), AdaptFormer's scale 0.1 and dropout 0.1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowBitConfig {
    /// Bits per adapter weight: 1 or 2.
    pub bits: u8,
    pub bottleneck: usize,
    pub scale: f64,
    pub dropout: f64,
}

impl Default for LowBitConfig {
    fn default() -> Self {
        Self {
            bits: 1,
            bottleneck: 32,
            scale: 0.1,
            dropout: 0.1,
        }
    }
}

impl LowBitConfig {
    pub fn check(&self) -> std::result::Result<(), String> {
        check_bits("bi-adaptformer", self.bits)?;
        if self.bottleneck == 0 {
            return Err("method `bi-adaptformer`: bottleneck must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "method `bi-adaptformer`: dropout {} is not in [0, 1)",
                self.dropout
            ));
        }
        Ok(())
    }
}

/// One low-bit bottleneck branch.
pub struct LowBitBranch {
    pub down_weight: Var,
    pub down_bias: Var,
    pub up_weight: Var,
    pub up_bias: Var,
}

impl LowBitBranch {
    fn new(hidden: usize, bottleneck: usize, init: &SeededInit) -> Result<Self> {
        Ok(Self {
            down_weight: init
                .fork("down")
                .kaiming_uniform((bottleneck, hidden), hidden)?,
            down_bias: init.zeros(bottleneck)?,
            up_weight: init.zeros((hidden, bottleneck))?,
            up_bias: init.zeros(hidden)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        bits: u8,
        restored: bool,
        dropout: f64,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let down = low_bit(self.down_weight.as_tensor(), bits, restored)?;
        let h = ops::linear(x, &down, Some(self.down_bias.as_tensor()))?.relu()?;
        let h = ctx.dropout(&h, dropout)?;
        let up = low_bit(self.up_weight.as_tensor(), bits, restored)?;
        ops::linear(&h, &up, Some(self.up_bias.as_tensor()))
    }
}

pub struct BiAdaptFormer;

pub struct LowBitAdaptation {
    config: LowBitConfig,
    branches: BTreeMap<usize, LowBitBranch>,
    params: NamedVars,
    /// A saved adapter's packed codes and steps, once its weights hold the low-bit values read
    /// from them.
    restored: Option<BTreeMap<String, Tensor>>,
}

impl LowBitAdaptation {
    pub fn new(config: LowBitConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let hidden = backbone.info().hidden_size;
        let mut branches = BTreeMap::new();
        let mut params = NamedVars::default();
        for layer in 0..backbone.info().num_layers {
            let prefix = format!("{}.adaptmlp", backbone.block_path(layer));
            let b = LowBitBranch::new(
                hidden,
                config.bottleneck,
                &init.fork(&crate::init_stream(layer, "adaptmlp")),
            )?;
            params.push(format!("{prefix}.down.weight"), b.down_weight.clone());
            params.push(format!("{prefix}.down.bias"), b.down_bias.clone());
            params.push(format!("{prefix}.up.weight"), b.up_weight.clone());
            params.push(format!("{prefix}.up.bias"), b.up_bias.clone());
            branches.insert(layer, b);
        }
        Ok(Self {
            config,
            branches,
            params,
            restored: None,
        })
    }

    /// The tensors written to disk: weights as packed codes and per-row steps, biases as they are.
    pub fn packed_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        packed_tensors(&self.params, self.config.bits)
    }
}

impl Hooks for LowBitAdaptation {
    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        input: &Tensor,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match (kind, self.branches.get(&layer)) {
            (Sublayer::Mlp, Some(b)) => {
                // Parallel to the MLP: reads the stream entering it (AdaptFormer's placement).
                let branch = b.forward(
                    input,
                    self.config.bits,
                    self.restored.is_some(),
                    self.config.dropout,
                    ctx,
                )?;
                output + (branch * self.config.scale)?
            }
            _ => Ok(output),
        }
    }
}

impl Adaptation for LowBitAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn restore(
        &mut self,
        _dir: &Path,
        tensors: &BTreeMap<String, Tensor>,
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
            "bi-adaptformer",
            &self.config,
            base_model,
            &self.params,
            self.config.bits,
            self.restored.as_ref(),
            head,
        )
    }
}

impl Method for BiAdaptFormer {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "bi-adaptformer",
            summary: "Bi-AdaptFormer: AdaptFormer branch with 1- or 2-bit weights (STE), saved bit-packed",
            paper: "Jie et al., Revisiting the Parameter Efficiency of Adapters from the Perspective of Precision Redundancy, ICCV 2023 (arXiv:2307.16867)",
            params: &[
                ParamDoc { name: "bits", default: "1", doc: "bits per adapter weight: 1 or 2" },
                ParamDoc { name: "bottleneck", default: "32", doc: "width of the parallel bottleneck" },
                ParamDoc { name: "scale", default: "0.1", doc: "scale s of the branch output" },
                ParamDoc { name: "dropout", default: "0.1", doc: "dropout on the bottleneck activations" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<LowBitConfig>("bi-adaptformer", params)?.check()
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: LowBitConfig =
            parse_config("bi-adaptformer", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(LowBitAdaptation::new(config, backbone, init)?))
    }
}
