use peftbench_core::ops::Activation;
use serde::{Deserialize, Serialize};

/// The vision tower's configuration, field names and defaults as in
/// `transformers.SiglipVisionConfig` (whose defaults are `google/siglip-base-patch16-224`'s).
/// Unknown fields are ignored. A checkpoint's `config.json` holds it either at the top level (a
/// `SiglipVisionModel`, `model_type` `siglip_vision_model`) or under `vision_config` (a full
/// `SiglipModel`, `model_type` `siglip`): [`SiglipVisionConfig::from_hf_json`] reads both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiglipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    /// `gelu_pytorch_tanh` in SigLIP checkpoints (the tanh approximation of GELU).
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub attention_dropout: f64,
    /// Whether the tower ends in the multi-head attention-pooling head
    /// (`vision_model.head.*`), whose output is transformers' `pooler_output`.
    pub vision_use_head: bool,
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: Activation::GeluTanh,
            layer_norm_eps: 1e-6,
            attention_dropout: 0.0,
            vision_use_head: true,
        }
    }
}

/// The `model_type`s whose `config.json` [`SiglipVisionConfig::from_hf_json`] reads.
const MODEL_TYPES: [&str; 2] = ["siglip", "siglip_vision_model"];

impl SiglipVisionConfig {
    /// `google/siglip-base-patch16-224`'s vision tower: ViT-B/16 at 224x224 (196 patches, no
    /// class token), with the attention-pooling head.
    pub fn base_patch16_224() -> Self {
        Self::default()
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// The vision configuration of a Hugging Face `config.json`: its `vision_config` when it has
    /// one (a full `SiglipModel`; the text tower's configuration is ignored), else the whole
    /// object (a `SiglipVisionModel`). A `model_type` other than `siglip` or
    /// `siglip_vision_model` is refused.
    pub fn from_hf_json(value: &serde_json::Value) -> Result<Self, String> {
        if let Some(model_type) = value.get("model_type").and_then(|v| v.as_str()) {
            if !MODEL_TYPES.contains(&model_type) {
                return Err(format!(
                    "model_type `{model_type}` is not a SigLIP checkpoint (expected one of {})",
                    MODEL_TYPES.join(", ")
                ));
            }
        }
        let vision = value.get("vision_config").unwrap_or(value);
        serde_json::from_value(vision.clone()).map_err(|e| e.to_string())
    }

    /// Checks the sizes are consistent, with a message naming the offending fields.
    pub fn validate(&self) -> Result<(), String> {
        let (d, h) = (self.hidden_size, self.num_attention_heads);
        if h == 0 || d % h != 0 {
            return Err(format!(
                "hidden_size {d} is not divisible by num_attention_heads {h}"
            ));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "image_size {} is not divisible by patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        Ok(())
    }
}
