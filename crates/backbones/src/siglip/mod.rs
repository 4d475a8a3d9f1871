//! SigLIP (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training", ICCV,
//! arXiv:2303.15343): the image tower, a ViT without a class token, with PEFT sites, loading the
//! vision tower of Hugging Face `SiglipModel` checkpoints such as `google/siglip-base-patch16-224`
//! (the text tower, if present, is ignored) and `SiglipVisionModel` checkpoints.
//!
//! [`SiglipVision::forward`] gives the patch tokens after `post_layernorm` (transformers'
//! `last_hidden_state`) and, when the checkpoint has it, the attention-pooling head's output
//! (`pooler_output`).

mod config;
mod model;

pub use config::SiglipVisionConfig;
pub use model::{SiglipVision, SiglipVisionOutput};
