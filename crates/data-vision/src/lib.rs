//! Image datasets for peftbench, as plain `f32` buffers (no tensor library dependency).
//!
//! * [`noah`]: VTAB-1k in the NOAH / FacT / V-PETL list-file layout;
//! * [`fgvc`]: the FGVC datasets with VPT's json splits;
//! * [`imagefolder`]: the ImageFolder layout `<dataset>/{train,test}/<class>/*.jpg` (ImageNet-R/A, CUB,
//!   ObjectNet, OmniBenchmark as PILOT reads them), with the class names;
//! * [`cifar`]: CIFAR-100 and CIFAR-10 in their binary releases (decoded in memory);
//! * [`parquet`]: Hugging Face parquet datasets (`Image` feature + integer label);
//! * [`synthetic`]: generated shape tasks for fast demos;
//! * [`scenes`]: generated multi-attribute scenes (a pretraining corpus) and compositional two-skill tasks;
//! * [`splits`]: deterministic batch orders.
//!
//! Every reader returns an [`ImageDataset`] (sources + labels); files on disk are decoded when
//! batched, CIFAR's binary records and generated images are held decoded.
//! [`ImageDataset::load_batch`] decodes, resizes and normalises a batch according to a [`Preprocess`],
//! producing a [`Batch`] in NCHW layout; [`Prefetcher`] does that on a background thread.

pub mod cifar;
pub mod dataset;
pub mod error;
pub mod fgvc;
pub mod imagefolder;
pub mod noah;
pub mod parquet;
pub mod prefetch;
pub mod preprocess;
pub mod scenes;
pub mod splits;
pub mod synthetic;
pub mod vl_scenes;

pub use cifar::{load_cifar10, load_cifar100, CifarSplit, CifarVariant};
pub use dataset::{validate_images, Batch, ImageDataset, ImageSource};
pub use error::DataError;
pub use imagefolder::ImageFolderSplit;
pub use parquet::ParquetColumns;
pub use prefetch::Prefetcher;
pub use preprocess::{decode_rgb, Interpolation, Normalization, Preprocess};
pub use scenes::{
    generate_composition, generate_scenes, Attribute, SceneCorpus, SceneLabels, Skill,
};
pub use splits::{sequential_batches, shuffled_batches};
pub use synthetic::{generate, ShapeTask};
