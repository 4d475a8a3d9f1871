//! Training for peftbench: AdamW as PyTorch computes it, timm's cosine learning-rate schedule,
//! cross-entropy with label smoothing, gradient clipping and a model- and data-agnostic training loop;
//! [`ranking_loss`] holds the pointwise, pairwise and listwise objectives of cross-encoder rerankers.
//!
//! Everything here is built from candle primitives with a backward pass (through
//! [`peftbench_core::ops`]); nothing uses candle-nn's fused kernels, which silently stop gradients.
//! Runs are deterministic: the same [`TrainConfig::seed`] gives bit-identical losses on one device.

pub mod clip;
pub mod codebooks;
pub mod contrastive;
pub mod data;
pub mod loss;
pub mod mixture;
pub mod optim;
pub mod ranking_loss;
pub mod schedule;
pub mod trainer;

pub use clip::clip_grad_norm;
pub use codebooks::{delay_codebooks, per_codebook_cross_entropy, undelay_codebooks};
pub use contrastive::{clip_contrastive_loss, clip_logits, symmetric_contrastive_loss};
pub use data::InMemoryBatches;
pub use loss::{cross_entropy, masked_cross_entropy, IGNORE_LABEL};
pub use mixture::{Mixing, TaskMixture, WithTaskId};
pub use optim::{AdamW, AdamWConfig};
pub use ranking_loss::{listwise_softmax, pairwise_margin, pointwise_bce, ranknet};
pub use schedule::CosineSchedule;
pub use trainer::{
    derive_seed, evaluate, train, Batch, BatchSource, EpochLog, Evaluation, Progress, Selection,
    TrainConfig, TrainModel, TrainOutcome, TrainReport,
};
