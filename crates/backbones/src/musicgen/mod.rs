//! MusicGen (Copet, Kreuk, Gat, Remez, Kant, Synnaeve, Adi, Défossez, "Simple and Controllable
//! Music Generation", NeurIPS 2023; checkpoint `facebook/musicgen-small`, transformers'
//! `MusicgenForConditionalGeneration`): a T5 encoder reads the text prompt (frozen, the same
//! [`T5`](crate::T5) as the vision-language models', holding only its encoder), `enc_to_dec_proj`
//! carries its states to the decoder's width, and a decoder over `num_codebooks` parallel streams
//! of codec tokens predicts every codebook's next token: each step's input is the sum of its
//! codebooks' embeddings plus a sinusoidal position; pre-norm layers run causal self-attention,
//! cross-attention to the text and a GELU feed-forward; one head per codebook. Projections have no
//! biases. The codebooks' delay pattern and per-codebook loss are in `peftbench_train::codebooks`.
//!
//! Checked against transformers on a random miniature (`tests/musicgen.rs`): logits, loss, and
//! generated codes with and without classifier-free guidance.

mod config;
mod model;

pub use config::{MusicgenConfig, MusicgenDecoderConfig};
pub use model::{
    sinusoidal_positions, GenerationOptions, Musicgen, MusicgenCache, MUSICGEN_FAMILY,
};
