use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use super::{LoraConfig, LoraLayer};
use crate::{peft_format, Adaptation, ClassifierHead};

/// LoRA attached to a backbone: one [`LoraLayer`] per (block, targeted projection).
pub struct LoraAdaptation {
    config: LoraConfig,
    layers: BTreeMap<(usize, LinearSite), LoraLayer>,
    /// Module paths by site, for PEFT keys.
    paths: BTreeMap<(usize, LinearSite), String>,
    params: NamedVars,
}

impl LoraAdaptation {
    pub fn new(config: LoraConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let mut layers = BTreeMap::new();
        let mut paths = BTreeMap::new();
        let mut params = NamedVars::default();
        for layer in 0..backbone.info().num_layers {
            for &site in &config.target_modules {
                let (inp, out) = backbone.linear_dims(site);
                let path = backbone.module_path(layer, site);
                let lora = LoraLayer::new(
                    inp,
                    out,
                    config.r,
                    config.scaling(),
                    config.dropout,
                    &init.fork(&path),
                )?;
                params.push(format!("{path}.lora_A.weight"), lora.a.clone());
                params.push(format!("{path}.lora_B.weight"), lora.b.clone());
                layers.insert((layer, site), lora);
                paths.insert((layer, site), path);
            }
        }
        Ok(Self {
            config,
            layers,
            paths,
            params,
        })
    }

    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Folds every update into the backbone's weights (`W += scaling * B A`): afterwards the
    /// backbone alone computes what backbone + LoRA computed, at the frozen model's cost.
    pub fn merge_into(&self, backbone: &mut dyn Backbone) -> Result<()> {
        let mut merged = BTreeMap::new();
        for (&(layer, site), lora) in &self.layers {
            merged.insert(
                format!("{}.weight", self.paths[&(layer, site)]),
                lora.merged_weight(backbone.linear(layer, site))?,
            );
        }
        crate::replace_pretrained(backbone, merged)
    }
}

impl Hooks for LoraAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match self.layers.get(&(layer, site)) {
            Some(lora) => lora.forward(x, base, ctx),
            None => base.forward(x),
        }
    }
}

impl Adaptation for LoraAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn merge_into(&self, backbone: &mut dyn Backbone) -> anyhow::Result<()> {
        Ok(LoraAdaptation::merge_into(self, backbone)?)
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let tensors: BTreeMap<String, Tensor> = self.params.tensors();
        let naming = peft_format::ModuleNaming::for_tensors(&tensors);
        let config = peft_format::lora_config(&self.config, false, base_model, naming);
        peft_format::write_adapter(dir, &config, tensors, head)
    }
}
