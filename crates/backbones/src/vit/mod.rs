//! Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words",
//! arXiv:2010.11929) with PEFT sites, loading Hugging Face `ViTModel` /
//! `ViTForImageClassification` checkpoints such as `google/vit-base-patch16-224-in21k`.

mod config;
mod model;

pub use config::VitConfig;
pub use model::Vit;
