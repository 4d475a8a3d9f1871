//! Bottleneck adapters: a down-projection, a non-linearity and an up-projection inserted in each
//! block with their own residual connection (Houlsby et al., 2019, "Parameter-Efficient Transfer
//! Learning for NLP", ICML, arXiv:1902.00751; Pfeiffer et al., 2021, "AdapterFusion", EACL,
//! arXiv:2005.00247, for the single after-FFN placement).
//!
//! Placements: `houlsby` adapts the output of both the attention and the MLP sublayer,
//! `pfeiffer` the MLP sublayer only. The up-projection starts at zero, so the model is unchanged at
//! initialisation.

mod config;
mod layer;

pub use config::{AdapterActivation, AdapterConfig, Placement};
pub use layer::Bottleneck;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use peftbench_backbones::{Backbone, Hooks, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

pub struct BottleneckAdapter;

/// Sequential bottleneck adapters attached to a backbone.
pub struct AdapterAdaptation {
    config: AdapterConfig,
    adapters: BTreeMap<(usize, SublayerKey), Bottleneck>,
    params: NamedVars,
}

/// `Sublayer` as an ordered map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SublayerKey {
    Attention,
    Mlp,
}

impl From<Sublayer> for SublayerKey {
    fn from(s: Sublayer) -> Self {
        match s {
            Sublayer::Attention => Self::Attention,
            Sublayer::Mlp => Self::Mlp,
        }
    }
}

impl AdapterAdaptation {
    pub fn new(
        config: AdapterConfig,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> candle_core::Result<Self> {
        let hidden = backbone.info().hidden_size;
        let mut adapters = BTreeMap::new();
        let mut params = NamedVars::default();
        let sites: &[(SublayerKey, &str)] = match config.placement {
            Placement::Houlsby => &[
                (SublayerKey::Attention, "attention_adapter"),
                (SublayerKey::Mlp, "output_adapter"),
            ],
            Placement::Pfeiffer => &[(SublayerKey::Mlp, "output_adapter")],
        };
        let num_layers = backbone.info().num_layers;
        crate::check_layer_indices("adapter", "layers", config.layers.as_deref(), num_layers)
            .map_err(candle_core::Error::msg)?;
        let adapted = |layer: &usize| config.layers.as_ref().is_none_or(|l| l.contains(layer));
        for layer in (0..num_layers).filter(adapted) {
            for &(key, name) in sites {
                let prefix = format!("{}.{name}", backbone.block_path(layer));
                let adapter = Bottleneck::new(
                    hidden,
                    config.bottleneck,
                    config.activation,
                    &init.fork(&crate::init_stream(layer, name)),
                )?;
                adapter.push_params(&prefix, &mut params);
                adapters.insert((layer, key), adapter);
            }
        }
        Ok(Self {
            config,
            adapters,
            params,
        })
    }
}

impl Hooks for AdapterAdaptation {
    /// The adapters sit on the branches' outputs ([`Hooks::sublayer`]), outside them.
    fn adapts_inside(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }

    fn adapts_output(&self, layer: usize, kind: Sublayer) -> bool {
        self.adapters.contains_key(&(layer, kind.into()))
    }

    /// ReLU adapters (the default) run fused with the residual add where the backbone can.
    fn output_bottleneck(
        &self,
        layer: usize,
        kind: Sublayer,
    ) -> Option<peftbench_backbones::Bottleneck<'_>> {
        self.adapters.get(&(layer, kind.into()))?.fused()
    }

    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        _input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        match self.adapters.get(&(layer, kind.into())) {
            Some(adapter) => &output + adapter.forward(&output)?,
            None => Ok(output),
        }
    }
}

impl Adaptation for AdapterAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn untouched_blocks(&self) -> usize {
        self.adapters.keys().next().map_or(0, |&(layer, _)| layer)
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(dir, "adapter", &self.config, base_model, &self.params, head)
    }
}

impl Method for BottleneckAdapter {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "adapter",
            summary: "Bottleneck adapter (down-act-up, residual) after sublayers: Houlsby or Pfeiffer placement",
            paper: "Houlsby et al., ICML 2019 (arXiv:1902.00751); Pfeiffer et al., EACL 2021 (arXiv:2005.00247)",
            params: &[
                ParamDoc { name: "placement", default: "houlsby", doc: "houlsby (after attention and MLP) or pfeiffer (after MLP only)" },
                ParamDoc { name: "bottleneck", default: "8", doc: "width of the bottleneck" },
                ParamDoc { name: "activation", default: "relu", doc: "relu, gelu or silu" },
                ParamDoc { name: "layers", default: "every block", doc: "blocks to adapt (0 = first), a list or one index; the frozen blocks below are computed once per example" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        parse_config::<AdapterConfig>("adapter", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &peftbench_backbones::BackboneInfo,
    ) -> Result<(), String> {
        let config = parse_config::<AdapterConfig>("adapter", params)?;
        crate::check_layer_indices(
            "adapter",
            "layers",
            config.layers.as_deref(),
            info.num_layers,
        )
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: AdapterConfig = parse_config("adapter", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(AdapterAdaptation::new(config, backbone, init)?))
    }
}
