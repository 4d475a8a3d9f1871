//! MoSA: Mixture of Sparse Adapters (Zhang, Zou, An, Liu & Zhang, 2024, "MoSA: Mixture of Sparse
//! Adapters for Visual Efficient Tuning", arXiv:2312.02923).
//!
//! *Split*: each weight matrix of a standard bottleneck adapter is split into `n` non-overlapping
//! sparse modules (a seeded, balanced random partition of its entries). *Train*: every training
//! forward pass activates one module of the down- and one of the up-projection, drawn
//! independently, so each step trains a sparse sub-adapter. *Merge*: the modules are summed back
//! into one dense adapter ([`MosaAdaptation::merged`]), which is what evaluation runs and what is
//! saved, so merged inference costs exactly a standard adapter.
//!
//! Hierarchical sparse strategy: the paper adds a coarser level of sparsity to use scarce data
//! better. Our reading: modules are also grouped in neighbouring pairs, and each step activates,
//! with probability 1/2 each, a single module (density 1/n) or a pair (density 2/n).

mod config;
mod layer;

pub use config::MosaConfig;
pub use layer::SparseMixtureAdapter;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, Hooks, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::adapter::{AdapterConfig, Bottleneck, Placement};
use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

pub struct Mosa;

pub struct MosaAdaptation {
    config: MosaConfig,
    /// By (block, 0 = after attention / 1 = after MLP).
    adapters: BTreeMap<(usize, u8), SparseMixtureAdapter>,
    params: NamedVars,
}

impl MosaAdaptation {
    pub fn new(config: MosaConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let hidden = backbone.info().hidden_size;
        let sites: &[(u8, &str)] = match config.placement {
            Placement::Houlsby => &[(0, "attention_adapter"), (1, "output_adapter")],
            Placement::Pfeiffer => &[(1, "output_adapter")],
        };
        let mut adapters = BTreeMap::new();
        let mut params = NamedVars::default();
        for layer in 0..backbone.info().num_layers {
            for &(site, name) in sites {
                let prefix = format!("{}.{name}", backbone.block_path(layer));
                let init = init.fork(&crate::init_stream(layer, name));
                let dense = Bottleneck::new(hidden, config.bottleneck, config.activation, &init)?;
                dense.push_params(&prefix, &mut params);
                adapters.insert(
                    (layer, site),
                    SparseMixtureAdapter::new(dense, config.modules, config.hierarchical, &init)?,
                );
            }
        }
        Ok(Self {
            config,
            adapters,
            params,
        })
    }

    /// The merged adapter of each site: the dense standard adapter the modules sum to.
    pub fn merged(&self) -> impl Iterator<Item = (&(usize, u8), &Bottleneck)> {
        self.adapters.iter().map(|(k, a)| (k, &a.adapter))
    }

    pub fn adapter(&self, layer: usize, after_mlp: bool) -> Option<&SparseMixtureAdapter> {
        self.adapters.get(&(layer, u8::from(after_mlp)))
    }

    /// The standard adapter configuration the merged MoSA equals.
    pub fn merged_config(&self) -> AdapterConfig {
        AdapterConfig {
            placement: self.config.placement,
            bottleneck: self.config.bottleneck,
            activation: self.config.activation,
            layers: None,
        }
    }
}

impl Hooks for MosaAdaptation {
    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        _input: &Tensor,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let site = match kind {
            Sublayer::Attention => 0,
            Sublayer::Mlp => 1,
        };
        match self.adapters.get(&(layer, site)) {
            Some(adapter) => &output + adapter.forward(&output, ctx)?,
            None => Ok(output),
        }
    }
}

impl Adaptation for MosaAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    /// Saves the merged adapter: a standard bottleneck adapter (`method: adapter`), the same bytes.
    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(
            dir,
            "adapter",
            &self.merged_config(),
            base_model,
            &self.params,
            head,
        )
    }
}

impl Method for Mosa {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "mosa",
            summary: "MoSA: adapter split into sparse modules trained stochastically, merged into one dense adapter",
            paper: "Zhang et al., MoSA: Mixture of Sparse Adapters for Visual Efficient Tuning (arXiv:2312.02923)",
            params: &[
                ParamDoc { name: "modules", default: "4", doc: "non-overlapping sparse modules per weight (2..=64)" },
                ParamDoc { name: "hierarchical", default: "true", doc: "also activate pairs of modules (coarse level)" },
                ParamDoc { name: "bottleneck", default: "8", doc: "width of the adapter" },
                ParamDoc { name: "placement", default: "pfeiffer", doc: "houlsby (after attention and MLP) or pfeiffer (after MLP)" },
                ParamDoc { name: "activation", default: "relu", doc: "relu, gelu or silu" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<MosaConfig>("mosa", params)?.check()
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: MosaConfig = parse_config("mosa", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(MosaAdaptation::new(config, backbone, init)?))
    }
}
