//! Image datasets for peftbench, as plain `f32` buffers (no tensor library dependency).
//!
//! * [`noah`]: VTAB-1k in the NOAH / FacT / V-PETL list-file layout;
//! * [`fgvc`]: the FGVC datasets with VPT's json splits;
//! * [`parquet`]: Hugging Face parquet datasets (`Image` feature + integer label);
//! * [`synthetic`]: generated shape tasks for fast demos;
//! * [`scenes`]: generated multi-attribute scenes (a pretraining corpus) and compositional two-skill tasks;
//! * [`splits`]: deterministic batch orders.
//!
//! Every reader returns an [`ImageDataset`] (sources + labels; nothing decoded yet).
//! [`ImageDataset::load_batch`] decodes, resizes and normalises a batch according to a [`Preprocess`],
//! producing a [`Batch`] in NCHW layout; [`Prefetcher`] does that on a background thread.

pub mod dataset;
pub mod error;
pub mod fgvc;
pub mod noah;
pub mod parquet;
pub mod prefetch;
pub mod preprocess;
pub mod scenes;
pub mod splits;
pub mod synthetic;

pub use dataset::{validate_images, Batch, ImageDataset, ImageSource};
pub use error::DataError;
pub use parquet::ParquetColumns;
pub use prefetch::Prefetcher;
pub use preprocess::{decode_rgb, Interpolation, Normalization, Preprocess};
pub use scenes::{
    generate_composition, generate_scenes, Attribute, SceneCorpus, SceneLabels, Skill,
};
pub use splits::{sequential_batches, shuffled_batches};
pub use synthetic::{generate, ShapeTask};
