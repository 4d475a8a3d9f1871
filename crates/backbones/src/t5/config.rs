use serde::{Deserialize, Serialize};

/// The feed-forward block of each layer (`feed_forward_proj` in HF configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedForwardProj {
    /// `wo(relu(wi x))`: the original T5 (`t5-base`).
    #[serde(rename = "relu")]
    Relu,
    /// `wo(gelu_new(wi_0 x) * wi_1 x)` with the tanh approximation of GELU: T5 v1.1 and FLAN-T5.
    #[serde(rename = "gated-gelu")]
    GatedGelu,
}

impl FeedForwardProj {
    /// The checkpoint name of the activated input projection.
    pub(crate) fn wi_name(self) -> &'static str {
        match self {
            Self::Relu => "wi",
            Self::GatedGelu => "wi_0",
        }
    }
}

/// `config.json` of a Hugging Face T5 checkpoint (field names as in `transformers.T5Config`).
/// Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Width of one attention head; `num_heads * d_kv` need not equal `d_model`.
    pub d_kv: usize,
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Decoder blocks; `None` = as many as the encoder (HF's default).
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_dropout")]
    pub dropout_rate: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_ff")]
    pub feed_forward_proj: FeedForwardProj,
    /// Whether the LM head is the embedding matrix, with the decoder output scaled by
    /// `d_model^-0.5` first (checkpoints written before transformers 5).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// transformers 5 always ties the head and records the scaling separately here; when present
    /// it decides the scaling instead of `tie_word_embeddings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default)]
    pub decoder_start_token_id: u32,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> FeedForwardProj {
    FeedForwardProj::Relu
}
fn default_true() -> bool {
    true
}
fn default_eos() -> u32 {
    1
}

impl T5Config {
    /// Decoder blocks.
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// Width of the attention projections' outputs (`num_heads * d_kv`).
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Whether the decoder output is multiplied by `d_model^-0.5` before the LM head, as
    /// transformers does for checkpoints with tied embeddings (T5 v1.0).
    pub fn scales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings)
    }

    /// Checks the sizes are usable, with a message naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.decoder_layers()),
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
        ] {
            if value == 0 {
                return Err(format!("field `{name}` is 0"));
            }
        }
        if self.relative_attention_max_distance < self.relative_attention_num_buckets / 2 {
            return Err(format!(
                "relative_attention_max_distance {} is below the exact buckets ({})",
                self.relative_attention_max_distance,
                self.relative_attention_num_buckets / 2
            ));
        }
        Ok(())
    }
}
