//! T5 (Raffel et al., 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
//! Transformer", JMLR 21(140), arXiv:1910.10683): an encoder-decoder with PEFT sites, loading
//! Hugging Face `T5ForConditionalGeneration` checkpoints such as `t5-base` (ReLU feed-forward, head
//! tied to the embeddings) and `google/flan-t5-base` (T5 v1.1: gated-GELU, separate head).
//!
//! Teacher-forced training uses [`T5::forward`] (full-sequence logits), [`T5::shift_right`] and
//! [`T5::loss`]; inference uses [`T5::greedy`] or [`T5::beam_search`], which decode step by step
//! through a [`DecoderCache`] and follow transformers' `generate(do_sample=False)`.

mod config;
mod init;
mod model;

pub use config::{FeedForwardProj, T5Config};
pub use model::{DecoderCache, T5};
