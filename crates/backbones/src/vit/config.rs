use peftbench_core::ops::Activation;
use serde::{Deserialize, Serialize};

/// `config.json` of a Hugging Face ViT checkpoint (field names as in `transformers.ViTConfig`).
/// Unknown fields are ignored: HF configs carry many that do not affect the encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_init")]
    pub initializer_range: f64,
}

fn default_model_type() -> String {
    "vit".into()
}
fn default_act() -> Activation {
    Activation::Gelu
}
fn default_eps() -> f64 {
    1e-12
}
fn default_channels() -> usize {
    3
}
fn default_true() -> bool {
    true
}
fn default_init() -> f64 {
    0.02
}

impl VitConfig {
    /// ViT-B/16 at 224x224 (`google/vit-base-patch16-224-in21k`).
    pub fn vit_base_patch16_224() -> Self {
        Self::new(768, 12, 12, 3072, 224, 16)
    }

    /// ViT-Tiny/16 at 224x224 (DeiT-Ti sizes: 192 wide, 12 deep, 3 heads).
    pub fn vit_tiny_patch16_224() -> Self {
        Self::new(192, 12, 3, 768, 224, 16)
    }

    pub fn new(
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
        image_size: usize,
        patch_size: usize,
    ) -> Self {
        Self {
            model_type: default_model_type(),
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            image_size,
            patch_size,
            num_channels: 3,
            qkv_bias: true,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            initializer_range: 0.02,
        }
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the sizes are consistent, with a message naming the offending fields.
    pub fn validate(&self) -> Result<(), String> {
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "image_size {} is not divisible by patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        Ok(())
    }

    /// The JSON written next to a checkpoint the project creates, in HF's format so that
    /// `transformers.ViTModel.from_pretrained` reads it too.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["architectures"] = serde_json::json!(["ViTModel"]);
        v["encoder_stride"] = serde_json::json!(self.patch_size);
        v
    }
}
