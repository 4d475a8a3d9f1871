//! Shared building blocks of peftbench: tensor ops whose gradients are known to flow, seeded
//! initialisation, the per-forward context (train mode, dropout randomness) and device selection.
//!
//! Every other crate builds on these so that two things hold everywhere: gradients reach every
//! trainable parameter (candle-nn 0.11's fused `layer_norm`, `softmax_last_dim`, `rms_norm` and `sdpa`
//! have no backward and silently stop them), and the same seed gives the same numbers.

pub mod ctx;
pub mod device;
pub mod init;
pub mod kernels;
pub mod ops;
pub mod optional;
pub mod params;
pub mod shuffle;

pub use ctx::ForwardCtx;
pub use device::DeviceSpec;
pub use init::SeededInit;
pub use params::{NamedVar, NamedVars};
