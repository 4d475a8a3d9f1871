//! Exact GELU, `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))` (PyTorch's `nn.GELU()`), one pass forward
//! and one backward: `d/dx = Phi(x) + x phi(x)`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::linear::{by_dtype, by_tensor_dtype};
use super::simd::vectorized;
use super::{contiguous, tensor, with_slice, Real};

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// Exact (erf) GELU of a CPU f32/f64 tensor of any shape.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluErf)
}

struct GeluErf;

impl GeluErf {
    fn forward<T: Real>(x: &[T]) -> Vec<T> {
        let (half, inv_sqrt2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
        let mut y = vec![T::ZERO; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                vectorized(|| {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = half * x * (T::ONE + (x * inv_sqrt2).erf());
                    }
                })
            });
        y
    }

    fn backward<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
        let half = T::of(0.5);
        let inv_sqrt2 = T::of(std::f64::consts::FRAC_1_SQRT_2);
        let inv_sqrt_2pi = T::of(1.0 / (2.0 * std::f64::consts::PI).sqrt());
        let mut dx = vec![T::ZERO; x.len()];
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(|(dx, (x, dy))| {
                vectorized(|| {
                    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                        let cdf = half * (T::ONE + (x * inv_sqrt2).erf());
                        let pdf = (-half * x * x).exp() * inv_sqrt_2pi;
                        *dx = g * (cdf + x * pdf);
                    }
                })
            });
        dx
    }

    fn run<T: Real>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = Self::forward(contiguous::<T>(s, l, "gelu")?);
        Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
    }

    fn grad<T: Real>(x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let dx = with_slice::<T, _>(x, "gelu backward", |xs| {
            with_slice::<T, _>(grad, "gelu backward", |dy| Self::backward(xs, dy))
        })??;
        tensor(dx, x.dims())
    }
}

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "peftbench-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s, Self::run::<f32>(s, l), Self::run::<f64>(s, l))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = by_tensor_dtype!(
            grad,
            Self::grad::<f32>(x, grad)?,
            Self::grad::<f64>(x, grad)?
        );
        Ok(Some(dx))
    }
}
