//! CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
//! Supervision", ICML, arXiv:2103.00020): a ViT image tower and a causal text transformer, each
//! projected into a shared embedding space, with PEFT sites, loading Hugging Face `CLIPModel`
//! checkpoints such as `openai/clip-vit-base-patch32`.
//!
//! [`Clip::vision`] gives the image tower's token states (for grid features) and its projected
//! image embedding; [`Clip::text`] the text tower's token states and its projected text
//! embedding; [`Clip::logits_per_image`] their scaled cosine similarities.

mod backbone;
mod config;
mod init;
mod model;

pub use backbone::{
    clip_towers, text_info, vision_info, ClipTextBackbone, ClipTowerOutput, ClipVisionBackbone,
    CLIP_TEXT_FAMILY, CLIP_VISION_FAMILY,
};
pub use config::{ClipActivation, ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use model::{Clip, ClipTextOutput, ClipVisionOutput};
