//! Fused CPU kernels with their own backward pass, for the ops a transformer spends its time in.
//!
//! candle's autograd differentiates every primitive separately: a softmax built from max, sub,
//! exp, sum and div is five graph nodes, each with its own gradient tensors, and a matmul always
//! computes the gradient of both operands, so a frozen weight still gets a full-size gradient that
//! nobody reads. Each op here is one graph node (a candle custom op) whose backward computes exactly
//! the gradients of the inputs that are tracked, in one or two passes:
//!
//! - [`linear`]: `x @ W^T + b`; frozen weights and biases get no gradient, the bias gradient is a
//!   direct column sum.
//! - [`layer_norm`]: mean and inverse deviation kept from the forward pass.
//! - [`gelu_erf`]: exact (erf) GELU in one pass each way.
//! - [`lora_linear`]: a LoRA-adapted frozen projection; forward and input gradient run against the
//!   merged weight `W + s B A`, so the low-rank branch costs only its own parameter gradients.
//! - [`attention`]: `softmax(Q K^T / sqrt(d) + mask) V` per head, reading heads in place from
//!   `[batch, tokens, hidden]` (no transposes), keeping the probabilities for the backward pass.
//! - [`attention_sublayer`], [`mlp_sublayer`]: a pre-norm block's residual branch as one node
//!   built from the kernels above, so that the backward pass skips candle's zero-filled buffer and
//!   add on every edge inside it; same arithmetic, same bits.
//! - [`bottleneck_residual`]: a branch's output through a bottleneck adapter (down, ReLU, up) and
//!   back onto the stream, `x + (o + up(relu(down(o))))`, as one node for the same reason.
//!
//! They run on the CPU for f32 and f64; `crate::ops` falls back to composite candle ops elsewhere
//! (CUDA, half precision) so results never depend on which path ran, beyond float rounding. Every
//! kernel is tested against the composite path and against finite differences.

mod attention;
mod bottleneck;
mod gelu;
mod gemm;
mod layer_norm;
mod linear;
mod lora;
mod real;
mod simd;
mod sublayer;

pub use attention::attention;
pub use bottleneck::{bottleneck_residual, Bottleneck};
pub use gelu::gelu_erf;
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use lora::lora_linear;
pub use simd::{check_kernels_env, instruction_sets, summation_order};
pub use sublayer::{
    attention_sublayer, fused_sublayers, mlp_sublayer, set_fused_sublayers, LowRank, NormParams,
    Projection, FUSED_SUBLAYERS_ENV,
};

use candle_core::{CpuStorage, DType, Device, Layout, Result, Storage, Tensor};

use real::Real;

/// Whether the fused kernels can run on `t`: CPU tensors of f32 or f64.
pub fn supports(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The contiguous elements of a CPU storage under `layout`, or an error naming `op`.
fn contiguous<'a, T: Real>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [T]> {
    let data = T::slice(storage)
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: unsupported dtype")))?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the kernel needs a contiguous input"),
    }
}

/// Runs `f` on the contiguous elements of CPU tensor `t` (made contiguous first if needed).
fn with_slice<T: Real, R>(t: &Tensor, op: &str, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(contiguous::<T>(cpu, layout, op)?)),
        _ => candle_core::bail!("{op}: the kernel runs on the CPU only"),
    }
}

/// A CPU tensor owning `data` (no copy).
fn tensor<T: Real>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Elements per parallel task of the elementwise passes (64 KiB of f32).
const PAR_CHUNK: usize = 1 << 14;

/// `acc[i] += part[i]`, in parallel (each element's sum is the same whatever the split).
fn par_add_into<T: Real>(acc: &mut [T], part: &[T]) {
    use rayon::prelude::*;
    acc.par_chunks_mut(PAR_CHUNK)
        .zip(part.par_chunks(PAR_CHUNK))
        .for_each(|(a, p)| add_into(a, p));
}

/// `acc[i] += part[i]`: how the kernels add per-block partial sums, always in block order so that
/// a gradient's rounding never depends on how rayon scheduled the blocks.
fn add_into<T: Real>(acc: &mut [T], part: &[T]) {
    for (a, &p) in acc.iter_mut().zip(part) {
        *a += p;
    }
}
