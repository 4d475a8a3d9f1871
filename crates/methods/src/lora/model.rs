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
        backbone.visit_params(&mut |name, t| {
            if let Some(w) = merged.remove(name) {
                *t = w;
            }
            Ok(())
        })
    }

    /// PEFT's `target_modules`: module-name suffixes, or a regex where a suffix would be ambiguous
    /// (fc2's `output.dense` is also a suffix of `attention.output.dense`).
    fn peft_target_modules(&self) -> serde_json::Value {
        let suffix = |s: LinearSite| match s {
            LinearSite::Query => "query",
            LinearSite::Key => "key",
            LinearSite::Value => "value",
            LinearSite::AttentionOutput => "attention.output.dense",
            LinearSite::Fc1 => "intermediate.dense",
            LinearSite::Fc2 => "output.dense",
        };
        let sites = &self.config.target_modules;
        let ambiguous =
            sites.contains(&LinearSite::Fc2) && !sites.contains(&LinearSite::AttentionOutput);
        if ambiguous {
            let alts: Vec<String> = sites
                .iter()
                .map(|&s| match s {
                    LinearSite::Fc2 => r"(?<!attention\.)output\.dense".to_string(),
                    other => suffix(other).replace('.', r"\."),
                })
                .collect();
            serde_json::Value::from(format!(r".*\.layer\.\d+\..*({})", alts.join("|")))
        } else {
            let mut names: Vec<&str> = sites.iter().map(|&s| suffix(s)).collect();
            names.sort_unstable();
            names.dedup();
            serde_json::json!(names)
        }
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

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let mut config = peft_format::base_config("LORA", base_model);
        let c = &self.config;
        for (k, v) in [
            ("r", serde_json::json!(c.r)),
            ("lora_alpha", serde_json::json!(c.alpha)),
            ("lora_dropout", serde_json::json!(c.dropout)),
            ("use_rslora", serde_json::json!(c.use_rslora)),
            ("use_dora", serde_json::json!(false)),
            ("bias", serde_json::json!("none")),
            ("fan_in_fan_out", serde_json::json!(false)),
            ("init_lora_weights", serde_json::json!(true)),
            ("target_modules", self.peft_target_modules()),
            ("exclude_modules", serde_json::Value::Null),
            ("layers_to_transform", serde_json::Value::Null),
            ("layers_pattern", serde_json::Value::Null),
            ("rank_pattern", serde_json::json!({})),
            ("alpha_pattern", serde_json::json!({})),
        ] {
            config.insert(k.into(), v);
        }
        let tensors: BTreeMap<String, Tensor> = self.params.tensors();
        peft_format::write_adapter(dir, &serde_json::Value::Object(config), tensors, head)
    }
}
