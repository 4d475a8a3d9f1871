use serde::{Deserialize, Serialize};

use crate::adapter::{AdapterActivation, Placement};

/// MoSA hyper-parameters. Defaults: 4 sparse modules per adapter weight with the hierarchical
/// strategy, over the standard adapter this project defaults to elsewhere (8-wide bottleneck, ReLU)
/// in the Pfeiffer placement (after the MLP), as in MoSA's VTAB-1k setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MosaConfig {
    /// Non-overlapping sparse modules each adapter weight is split into (2..=64).
    pub modules: usize,
    /// Also activate pairs of modules (a coarser level), see the module docs.
    pub hierarchical: bool,
    pub bottleneck: usize,
    pub placement: Placement,
    pub activation: AdapterActivation,
}

impl Default for MosaConfig {
    fn default() -> Self {
        Self {
            modules: 4,
            hierarchical: true,
            bottleneck: 8,
            placement: Placement::Pfeiffer,
            activation: AdapterActivation::Relu,
        }
    }
}

impl MosaConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(2..=64).contains(&self.modules) {
            return Err(format!(
                "method `mosa`: modules {} is outside the allowed range 2..=64",
                self.modules
            ));
        }
        if self.hierarchical && !self.modules.is_multiple_of(2) {
            return Err(format!("method `mosa`: modules {} must be even with hierarchical: true (modules are paired)", self.modules));
        }
        if self.bottleneck == 0 {
            return Err("method `mosa`: bottleneck must be at least 1".into());
        }
        Ok(())
    }
}
