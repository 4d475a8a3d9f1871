//! BitFit: train only the bias terms (Ben Zaken, Ravfogel & Goldberg, 2022, "BitFit: Simple
//! Parameter-efficient Fine-tuning for Transformer-based Masked Language-models", ACL,
//! arXiv:2106.10199). In ViT that is every linear, patch-embedding and LayerNorm bias.

use peftbench_backbones::Backbone;
use peftbench_core::SeededInit;
use serde::{Deserialize, Serialize};

use crate::full::{unfreeze, Unfrozen};
use crate::{parse_config, Adaptation, Method, MethodInfo};

/// BitFit has no hyper-parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitFitConfig {}

pub struct BitFit;

impl Method for BitFit {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "bitfit",
            summary: "BitFit: trains only the bias terms of the backbone",
            paper: "Ben Zaken et al., BitFit, ACL 2022 (arXiv:2106.10199)",
            params: &[],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        parse_config::<BitFitConfig>("bitfit", params).map(|_| ())
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        _init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: BitFitConfig = parse_config("bitfit", params).map_err(anyhow::Error::msg)?;
        let params = unfreeze(backbone, |name| name.ends_with(".bias"))?;
        Ok(Box::new(Unfrozen {
            method: "bitfit",
            config,
            params,
        }))
    }
}
