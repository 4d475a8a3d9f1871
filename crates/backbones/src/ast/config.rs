use peftbench_core::ops::Activation;
use serde::{Deserialize, Serialize};

use crate::encoder::EncoderDims;

/// `config.json` of a Hugging Face AST checkpoint (field names as in `transformers.ASTConfig`).
/// Unknown fields are ignored: HF configs carry many that do not affect the encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AstConfig {
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
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    /// Hop between patch rows along the mel axis (10 in AudioSet checkpoints: overlapping patches).
    #[serde(default = "default_stride")]
    pub frequency_stride: usize,
    /// Hop between patch columns along the time axis.
    #[serde(default = "default_stride")]
    pub time_stride: usize,
    /// Input frames (1024 for AudioSet's 10 s clips).
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    #[serde(default = "default_mel_bins")]
    pub num_mel_bins: usize,
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
    "audio-spectrogram-transformer".into()
}
fn default_act() -> Activation {
    Activation::Gelu
}
fn default_eps() -> f64 {
    1e-12
}
fn default_patch() -> usize {
    16
}
fn default_stride() -> usize {
    10
}
fn default_max_length() -> usize {
    1024
}
fn default_mel_bins() -> usize {
    128
}
fn default_true() -> bool {
    true
}
fn default_init() -> f64 {
    0.02
}

impl AstConfig {
    /// AST-Base (ViT-B sizes) over 128 mel bins, strides 10, for `max_length` frames.
    pub fn ast_base(max_length: usize) -> Self {
        Self::new(768, 12, 12, 3072, max_length, 128)
    }

    pub fn new(
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
        max_length: usize,
        num_mel_bins: usize,
    ) -> Self {
        Self {
            model_type: default_model_type(),
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            patch_size: 16,
            frequency_stride: 10,
            time_stride: 10,
            max_length,
            num_mel_bins,
            qkv_bias: true,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            initializer_range: 0.02,
        }
    }

    /// Patch rows along the mel axis: `(num_mel_bins - patch) / frequency_stride + 1`.
    pub fn frequency_out(&self) -> usize {
        (self.num_mel_bins - self.patch_size) / self.frequency_stride + 1
    }

    /// Patch columns along the time axis: `(max_length - patch) / time_stride + 1`.
    pub fn time_out(&self) -> usize {
        (self.max_length - self.patch_size) / self.time_stride + 1
    }

    pub fn num_patches(&self) -> usize {
        self.frequency_out() * self.time_out()
    }

    /// Checks the sizes are consistent, with a message naming the offending fields.
    pub fn validate(&self) -> Result<(), String> {
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size > self.num_mel_bins || self.patch_size > self.max_length {
            return Err(format!(
                "patch_size {} exceeds num_mel_bins {} or max_length {}",
                self.patch_size, self.num_mel_bins, self.max_length
            ));
        }
        if self.frequency_stride == 0 || self.time_stride == 0 {
            return Err("frequency_stride and time_stride must be positive".into());
        }
        Ok(())
    }

    pub(crate) fn encoder_dims(&self) -> EncoderDims {
        EncoderDims {
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
            qkv_bias: self.qkv_bias,
            hidden_dropout: self.hidden_dropout_prob,
            attention_dropout: self.attention_probs_dropout_prob,
        }
    }

    /// The JSON written next to a checkpoint the project creates, in HF's format so that
    /// `transformers.ASTModel.from_pretrained` reads it too.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        v["architectures"] = serde_json::json!(["ASTModel"]);
        v
    }
}
