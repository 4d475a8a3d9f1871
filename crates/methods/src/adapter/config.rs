use serde::{Deserialize, Serialize};

/// Where the adapters go in each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// After the attention and after the MLP sublayer (Houlsby et al.).
    Houlsby,
    /// After the MLP sublayer only (Pfeiffer et al.).
    Pfeiffer,
}

/// The bottleneck's non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterActivation {
    Relu,
    Gelu,
    Silu,
}

/// Bottleneck adapter hyper-parameters. Defaults: the Houlsby paper's two adapters per block, ReLU,
/// an 8-wide bottleneck. (NOAH's VTAB-1k "Adapter" baseline, 0.16M parameters on ViT-B/16, is one
/// 8-wide adapter after the MLP: `placement: pfeiffer`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterConfig {
    pub placement: Placement,
    /// Width of the bottleneck.
    pub bottleneck: usize,
    pub activation: AdapterActivation,
    /// Blocks to adapt, counted from the input (0 = the first block), one index or a list, as
    /// LoRA's `layers_to_transform`; `None` = every block. Blocks below the lowest one stay
    /// pretrained, so the runner trains from their cached output (frozen-prefix caching).
    #[serde(
        deserialize_with = "crate::lora::config::adapter_layers",
        skip_serializing_if = "Option::is_none"
    )]
    pub layers: Option<Vec<usize>>,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            placement: Placement::Houlsby,
            bottleneck: 8,
            activation: AdapterActivation::Relu,
            layers: None,
        }
    }
}

impl AdapterConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.bottleneck == 0 {
            return Err("method `adapter`: bottleneck must be at least 1".into());
        }
        if self.layers.as_ref().is_some_and(Vec::is_empty) {
            return Err("method `adapter`: field `layers` is empty; allowed: block indices from 0, or leave it out to adapt every block".into());
        }
        Ok(())
    }
}
