//! DoRA: weight-decomposed low-rank adaptation (Liu et al., 2024, "DoRA: Weight-Decomposed
//! Low-Rank Adaptation", ICML, arXiv:2402.09353).
//!
//! Each adapted weight is split into a magnitude and a direction, `W' = m · (W + s·BA) /
//! ||W + s·BA||` (norms per output row), with the direction updated by LoRA and the magnitude
//! `m` trained directly. `m` starts at the frozen rows' norms and `B` at zero, so the model is
//! unchanged at initialisation; `W'` can be merged. The configuration is LoRA's
//! ([`LoraConfig`]); the adapter is saved in Hugging Face PEFT's LoRA format with
//! `use_dora: true` and one `lora_magnitude_vector` per module.

mod layer;

pub use layer::DoraLayer;

use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, BackboneInfo, Hooks, Linear, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::lora::LoraConfig;
use crate::projections::ProjectionAdapters;
use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo};

pub struct Dora;

pub struct DoraAdaptation {
    config: LoraConfig,
    layers: ProjectionAdapters<DoraLayer>,
    params: NamedVars,
}

impl DoraAdaptation {
    pub fn new(config: LoraConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let mut params = NamedVars::default();
        let layers = ProjectionAdapters::build_in_layers(
            backbone,
            config.layers_to_transform.as_deref(),
            &config.target_modules,
            init,
            &mut params,
            |_, base, init| {
                let dora = DoraLayer::new(base, config.r, config.scaling(), config.dropout, init)?;
                let vars = vec![
                    ("lora_A.weight", dora.lora.a.clone()),
                    ("lora_B.weight", dora.lora.b.clone()),
                    ("lora_magnitude_vector", dora.magnitude.clone()),
                ];
                Ok((dora, vars))
            },
        )?;
        Ok(Self {
            config,
            layers,
            params,
        })
    }

    /// Replaces every adapted weight by `m · (W + s·BA) / ||W + s·BA||`.
    pub fn merge_into(&self, backbone: &mut dyn Backbone) -> Result<()> {
        let merged = self.layers.merged(backbone, |base, dora| {
            Ok(vec![("weight", dora.merged_weight(base)?)])
        })?;
        crate::replace_pretrained(backbone, merged)
    }
}

impl Hooks for DoraAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.layers
            .linear(layer, site, x, base, |dora| dora.forward(x, base, ctx))
    }
}

impl Adaptation for DoraAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn untouched_blocks(&self) -> usize {
        self.layers.untouched_blocks()
    }

    fn merge_into(&self, backbone: &mut dyn Backbone) -> anyhow::Result<()> {
        Ok(DoraAdaptation::merge_into(self, backbone)?)
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let tensors = self.params.tensors();
        let naming = peft_format::ModuleNaming::for_tensors(&tensors);
        let config = peft_format::lora_config(&self.config, true, base_model, naming);
        peft_format::write_adapter(dir, &config, tensors, head)
    }
}

impl Method for Dora {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "dora",
            summary: "DoRA: LoRA on the direction of each weight plus a trained magnitude per row; mergeable",
            paper: "Liu et al., DoRA: Weight-Decomposed Low-Rank Adaptation, ICML 2024 (arXiv:2402.09353)",
            params: crate::lora::PARAMS,
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<LoraConfig>("dora", params)?.check_as("dora")
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> std::result::Result<(), String> {
        parse_config::<LoraConfig>("dora", params)?.check_widths("dora", info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: LoraConfig = parse_config("dora", params).map_err(anyhow::Error::msg)?;
        config.check_as("dora").map_err(anyhow::Error::msg)?;
        Ok(Box::new(DoraAdaptation::new(config, backbone, init)?))
    }
}
