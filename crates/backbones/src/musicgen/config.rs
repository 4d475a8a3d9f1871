//! `config.json` of a Hugging Face MusicGen checkpoint (`MusicgenConfig`: the text encoder's,
//! the audio codec's and the decoder's configurations, field names as in transformers).

use serde::{Deserialize, Serialize};

use crate::t5::T5Config;

/// The whole model's configuration. The audio codec's (EnCodec) is kept as written: the
/// decoder reads and writes its tokens, not its audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MusicgenConfig {
    pub text_encoder: T5Config,
    pub decoder: MusicgenDecoderConfig,
    #[serde(default)]
    pub audio_encoder: serde_json::Value,
}

/// `MusicgenDecoderConfig`: the autoregressive decoder over `num_codebooks` parallel token streams.
/// Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MusicgenDecoderConfig {
    /// Codes per codebook (2048 in the released models); token `vocab_size` is the pad and start
    /// token, so each codebook's embedding has `vocab_size + 1` rows.
    pub vocab_size: usize,
    /// Length of the sinusoidal position table (transformers grows it on demand; so does this).
    pub max_position_embeddings: usize,
    pub num_hidden_layers: usize,
    pub ffn_dim: usize,
    pub num_attention_heads: usize,
    pub hidden_size: usize,
    pub num_codebooks: usize,
    #[serde(default = "one")]
    pub audio_channels: usize,
    pub pad_token_id: u32,
    pub bos_token_id: u32,
    /// The start token of teacher forcing (the pad token in the released models).
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default = "gelu")]
    pub activation_function: String,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub activation_dropout: f64,
    /// The std of the decoder's normal initialisation (transformers' default 0.02).
    #[serde(default = "initializer_factor")]
    pub initializer_factor: f64,
    /// Width of the text states the cross-attention reads; `None`: the decoder's own, reached
    /// through `enc_to_dec_proj` when the text encoder's width differs.
    #[serde(default)]
    pub cross_attention_hidden_size: Option<usize>,
}

fn one() -> usize {
    1
}

fn gelu() -> String {
    "gelu".into()
}

fn initializer_factor() -> f64 {
    0.02
}

impl MusicgenDecoderConfig {
    /// The token that starts every codebook's stream in teacher forcing.
    pub fn start_token(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or(self.bos_token_id)
    }

    /// Checks the sizes are usable and the variant is one this implementation runs, with a
    /// message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("ffn_dim", self.ffn_dim),
            ("num_attention_heads", self.num_attention_heads),
            ("hidden_size", self.hidden_size),
            ("num_codebooks", self.num_codebooks),
        ] {
            if value == 0 {
                return Err(format!("decoder field `{name}` is 0"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "decoder `hidden_size` {} is not a multiple of `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (name, id) in [
            ("pad_token_id", self.pad_token_id),
            ("decoder_start_token_id", self.start_token()),
        ] {
            if id as usize > self.vocab_size {
                return Err(format!(
                    "decoder `{name}` {id} is outside the embeddings' {} rows",
                    self.vocab_size + 1
                ));
            }
        }
        if self.activation_function != "gelu" {
            return Err(format!(
                "decoder `activation_function` `{}`: only `gelu` (the released models') is \
                 implemented",
                self.activation_function
            ));
        }
        if self.audio_channels != 1 {
            return Err(format!(
                "decoder `audio_channels` {}: only mono models are implemented",
                self.audio_channels
            ));
        }
        if self.cross_attention_hidden_size.is_some() {
            return Err(
                "decoder `cross_attention_hidden_size` is set: only the released layout (text \
                 states projected by `enc_to_dec_proj`) is implemented"
                    .into(),
            );
        }
        Ok(())
    }
}
