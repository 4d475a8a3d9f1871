use peftbench_core::ops::Activation;
use serde::{Deserialize, Serialize};

/// The MLP activation (`hidden_act`): OpenAI's checkpoints use `quick_gelu`, `x * sigmoid(1.702 x)`;
/// other CLIP-style checkpoints name one of the activations the other backbones share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClipActivation {
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    #[serde(untagged)]
    Other(Activation),
}

impl ClipActivation {
    pub fn apply(self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            // Composed from primitives with a backward pass; `1 / (1 + exp(-z))` saturates to 0
            // (not NaN) for very negative inputs.
            Self::QuickGelu => x * ((x * -1.702)?.exp()? + 1.0)?.recip()?,
            Self::Other(act) => act.apply(x),
        }
    }
}

/// `vision_config` of a Hugging Face CLIP checkpoint (field names and defaults as in
/// `transformers.CLIPVisionConfig`, whose defaults are ViT-B/32's). Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: ClipActivation,
    pub layer_norm_eps: f64,
    pub attention_dropout: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
        }
    }
}

impl ClipVisionConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// `text_config` of a Hugging Face CLIP checkpoint (field names and defaults as in
/// `transformers.CLIPTextConfig`). Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: ClipActivation,
    pub layer_norm_eps: f64,
    pub attention_dropout: f64,
    pub pad_token_id: u32,
    pub bos_token_id: u32,
    /// Decides the pooled position (see [`super::Clip::text`]): `2`, the value checkpoints written
    /// before transformers fixed it carry (`openai/clip-vit-base-patch32` among them), selects
    /// the original rule (the highest token id); any other value is the end token to look for.
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            pad_token_id: 1,
            bos_token_id: 49406,
            eos_token_id: 49407,
        }
    }
}

/// The `eos_token_id` that selects pooling at the highest token id (see [`ClipTextConfig`]).
pub(crate) const LEGACY_EOS_TOKEN_ID: u32 = 2;

/// `config.json` of a Hugging Face `CLIPModel` checkpoint (`transformers.CLIPConfig`); the
/// defaults are `openai/clip-vit-base-patch32`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
    /// Width of the shared image-text embedding space (both projections' outputs).
    pub projection_dim: usize,
    /// `log` of the initial temperature; the checkpoint's `logit_scale` is used when present.
    pub logit_scale_init_value: f64,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

impl ClipConfig {
    /// `openai/clip-vit-base-patch32`: a ViT-B/32 image tower at 224x224 and a 12-layer, 512-wide
    /// text tower over a 49,408-token vocabulary with 77 positions, projected to 512.
    pub fn vit_base_patch32() -> Self {
        let mut cfg = Self::default();
        // Its config.json predates transformers' fix of the special token ids.
        cfg.text_config.bos_token_id = 0;
        cfg.text_config.eos_token_id = LEGACY_EOS_TOKEN_ID;
        cfg
    }

    /// Checks the sizes are consistent, with a message naming the offending fields.
    pub fn validate(&self) -> Result<(), String> {
        let (v, t) = (&self.vision_config, &self.text_config);
        for (tower, hidden, heads) in [
            ("vision_config", v.hidden_size, v.num_attention_heads),
            ("text_config", t.hidden_size, t.num_attention_heads),
        ] {
            if heads == 0 || hidden % heads != 0 {
                return Err(format!(
                    "{tower}: hidden_size {hidden} is not divisible by num_attention_heads {heads}"
                ));
            }
        }
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Err(format!(
                "vision_config: image_size {} is not divisible by patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if t.max_position_embeddings == 0 || t.vocab_size == 0 {
            return Err(
                "text_config: vocab_size and max_position_embeddings must be positive".into(),
            );
        }
        Ok(())
    }
}
