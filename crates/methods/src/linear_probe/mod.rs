//! Linear probing: the backbone stays frozen and only a linear head is trained on its features
//! (the "Linear" row of VTAB-1k tables; e.g. Jia et al., 2022, VPT, arXiv:2203.12119).

use peftbench_backbones::Backbone;
use peftbench_core::{NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use crate::full::Unfrozen;
use crate::{parse_config, Adaptation, Method, MethodInfo};

/// Linear probing has no hyper-parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearProbeConfig {}

pub struct LinearProbe;

impl Method for LinearProbe {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "linear",
            summary: "Linear probe: frozen backbone, trains the classification head only",
            paper: "Standard baseline (e.g. Jia et al., VPT, ECCV 2022; Zhai et al., VTAB, 2019)",
            params: &[],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        parse_config::<LinearProbeConfig>("linear", params).map(|_| ())
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        _backbone: &mut dyn Backbone,
        _init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: LinearProbeConfig =
            parse_config("linear", params).map_err(anyhow::Error::msg)?;
        Ok(Box::new(Unfrozen {
            method: "linear",
            config,
            params: NamedVars::default(),
        }))
    }
}
