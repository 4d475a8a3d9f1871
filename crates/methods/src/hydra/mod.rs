//! Hydra: parallel and sequential low-rank branches on the same layer (Kim, Lee & Lee, 2024,
//! "Hydra: Multi-head Low-rank Adaptation for Parameter Efficient Fine-tuning", Neural Networks,
//! arXiv:2309.06922).
//!
//! A parallel branch (LoRA: `B_p A_p x`) learns features the frozen layer misses; a sequential
//! branch (`B_s A_s y` on the frozen output `y = W x + b`) recombines what the layer already
//! computes. `h = y + s (B_p A_p x + B_s A_s y)`. Both are linear, so they merge:
//! `W' = W + s (B_p A_p + B_s A_s W)`, `b' = b + s B_s A_s b`. Both `B`s start at zero, so the model
//! is unchanged at initialisation.

mod config;
mod layer;

pub use config::HydraConfig;
pub use layer::HydraLayer;

use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, BackboneInfo, Hooks, Linear, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::projections::ProjectionAdapters;
use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

pub struct Hydra;

pub struct HydraAdaptation {
    config: HydraConfig,
    layers: ProjectionAdapters<HydraLayer>,
    params: NamedVars,
}

impl HydraAdaptation {
    pub fn new(config: HydraConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let mut params = NamedVars::default();
        let layers = ProjectionAdapters::build(
            backbone,
            &config.target_modules,
            init,
            &mut params,
            |_, base, init| {
                let hydra = HydraLayer::new(
                    base,
                    config.parallel_r,
                    config.sequential_r,
                    config.scale,
                    config.dropout,
                    init,
                )?;
                let vars = vec![
                    ("hydra_parallel.A.weight", hydra.parallel.a.clone()),
                    ("hydra_parallel.B.weight", hydra.parallel.b.clone()),
                    ("hydra_sequential.A.weight", hydra.sequential.a.clone()),
                    ("hydra_sequential.B.weight", hydra.sequential.b.clone()),
                ];
                Ok((hydra, vars))
            },
        )?;
        Ok(Self {
            config,
            layers,
            params,
        })
    }

    /// Folds both branches into every adapted projection's weight and bias.
    pub fn merge_into(&self, backbone: &mut dyn Backbone) -> Result<()> {
        let merged = self.layers.merged(backbone, |base, hydra| {
            let m = hydra.merged(base)?;
            let mut out = vec![("weight", m.weight)];
            out.extend(m.bias.map(|b| ("bias", b)));
            Ok(out)
        })?;
        crate::replace_pretrained(backbone, merged)
    }
}

impl Hooks for HydraAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.layers
            .linear(layer, site, x, base, |hydra| hydra.forward(x, base, ctx))
    }
}

impl Adaptation for HydraAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn merge_into(&self, backbone: &mut dyn Backbone) -> anyhow::Result<()> {
        Ok(HydraAdaptation::merge_into(self, backbone)?)
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(dir, "hydra", &self.config, base_model, &self.params, head)
    }
}

impl Method for Hydra {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "hydra",
            summary: "Hydra: parallel (on the input) and sequential (on the output) low-rank branches per layer; mergeable",
            paper: "Kim, Lee & Lee, Hydra: Multi-head Low-rank Adaptation, Neural Networks 2024 (arXiv:2309.06922)",
            params: &[
                ParamDoc { name: "parallel_r", default: "8", doc: "rank of the parallel branch B_p A_p x" },
                ParamDoc { name: "sequential_r", default: "8", doc: "rank of the sequential branch B_s A_s (Wx + b)" },
                ParamDoc { name: "scale", default: "1.0", doc: "factor on both branches" },
                ParamDoc { name: "dropout", default: "0.0", doc: "dropout on the branch inputs (training)" },
                ParamDoc { name: "target_modules", default: "[attention_output]", doc: "projections to adapt" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<HydraConfig>("hydra", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> std::result::Result<(), String> {
        parse_config::<HydraConfig>("hydra", params)?.check_widths(info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: HydraConfig = parse_config("hydra", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(HydraAdaptation::new(config, backbone, init)?))
    }
}
