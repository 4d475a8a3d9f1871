//! Audio Spectrogram Transformer (Gong, Chung and Glass, 2021, "AST: Audio Spectrogram Transformer",
//! arXiv:2104.01778) with PEFT sites, loading Hugging Face `ASTModel` / `ASTForAudioClassification`
//! checkpoints such as `MIT/ast-finetuned-audioset-10-10-0.4593` (keys `audio_spectrogram_transformer.*`).
//!
//! A ViT encoder over overlapping 16x16 patches of the `[time, mel]` log-mel input (frequency and time
//! strides), with a CLS and a distillation token; the pooled output is the mean of the two tokens after
//! the final norm. The encoder blocks are ViT's ([`crate::encoder`]), so every method attaches through
//! the same sites.

mod config;
mod model;

pub use config::AstConfig;
pub use model::Ast;
