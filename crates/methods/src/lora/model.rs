use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite, LowRank, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use super::{LoraConfig, LoraLayer};
use crate::projections::ProjectionAdapters;
use crate::{peft_format, Adaptation, ClassifierHead};

/// LoRA attached to a backbone: one [`LoraLayer`] per (block, targeted projection).
pub struct LoraAdaptation {
    config: LoraConfig,
    layers: ProjectionAdapters<LoraLayer>,
    params: NamedVars,
}

impl LoraAdaptation {
    pub fn new(config: LoraConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let mut params = NamedVars::default();
        let layers = ProjectionAdapters::build_in_layers(
            backbone,
            config.layers_to_transform.as_deref(),
            &config.target_modules,
            init,
            &mut params,
            |_, base, init| {
                let (out, inp) = base.weight.dims2()?;
                let lora =
                    LoraLayer::new(inp, out, config.r, config.scaling(), config.dropout, init)?;
                let vars = vec![
                    ("lora_A.weight", lora.a.clone()),
                    ("lora_B.weight", lora.b.clone()),
                ];
                Ok((lora, vars))
            },
        )?;
        Ok(Self {
            config,
            layers,
            params,
        })
    }

    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Folds every update into the backbone's weights (`W += scaling * B A`): afterwards the
    /// backbone alone computes what backbone + LoRA computed, at the frozen model's cost.
    pub fn merge_into(&self, backbone: &mut dyn Backbone) -> Result<()> {
        let merged = self.layers.merged(backbone, |base, lora| {
            Ok(vec![("weight", lora.merged_weight(base)?)])
        })?;
        crate::replace_pretrained(backbone, merged)
    }
}

impl Hooks for LoraAdaptation {
    /// Without dropout every adapted projection is a LoRA update that a fused branch runs itself
    /// ([`Hooks::low_rank`]).
    fn adapts_inside(&self, layer: usize, kind: Sublayer) -> bool {
        self.config.dropout > 0.0 && self.layers.adapts_inside(layer, kind)
    }

    fn low_rank(&self, layer: usize, site: LinearSite) -> Option<LowRank<'_>> {
        let lora = self.layers.get(layer, site)?;
        (lora.dropout == 0.0).then(|| LowRank {
            a: lora.a.as_tensor(),
            b: lora.b.as_tensor(),
            scaling: lora.scaling,
        })
    }

    fn adapts_output(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }

    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.layers
            .linear(layer, site, x, base, |lora| lora.forward(x, base, ctx))
    }
}

impl Adaptation for LoraAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn untouched_blocks(&self) -> usize {
        self.layers.untouched_blocks()
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
