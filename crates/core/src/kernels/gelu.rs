//! Exact GELU, `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))` (PyTorch's `nn.GELU()`), one pass forward
//! and one backward: `d/dx = Phi(x) + x phi(x)`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::linear::{by_dtype, by_tensor_dtype};
use super::simd::vectorized;
use super::{contiguous, tensor, with_slice, Real, PAR_CHUNK};

/// Exact (erf) GELU of a CPU f32/f64 tensor of any shape.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluErf)
}

pub(super) struct GeluErf;

impl GeluErf {
    pub(super) fn forward<T: Real>(x: &[T]) -> Vec<T> {
        let mut y = vec![T::ZERO; x.len()];
        y.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(y, x)| {
                vectorized(
                    #[inline(always)]
                    || forward_chunk(y, x),
                )
            });
        y
    }

    fn backward<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
        let mut dx = vec![T::ZERO; x.len()];
        dx.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK).zip(dy.par_chunks(PAR_CHUNK)))
            .for_each(|(dx, (x, dy))| {
                vectorized(
                    #[inline(always)]
                    || backward_chunk(dx, x, dy),
                )
            });
        dx
    }

    /// `g = dL/dy` becomes `dL/dx` in place (the same arithmetic as [`GeluErf::backward`]).
    pub(super) fn backward_in_place<T: Real>(x: &[T], g: &mut [T]) {
        g.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(g, x)| {
                vectorized(
                    #[inline(always)]
                    || backward_in_place_chunk(g, x),
                )
            });
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

/// `y = x Phi(x)`. Inlined into [`vectorized`]'s AVX2 function, hence `inline(always)` (as is the
/// closure that calls it: a closure left out of line would be compiled for the baseline).
#[inline(always)]
fn forward_chunk<T: Real>(y: &mut [T], x: &[T]) {
    let (half, inv_sqrt2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
    for (y, &x) in y.iter_mut().zip(x) {
        *y = half * x * (T::ONE + (x * inv_sqrt2).erf());
    }
}

/// `dx = dy (Phi(x) + x phi(x))`.
#[inline(always)]
fn backward_chunk<T: Real>(dx: &mut [T], x: &[T], dy: &[T]) {
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
        *dx = g * derivative(x);
    }
}

/// `g = g (Phi(x) + x phi(x))` in place: [`backward_chunk`]'s arithmetic on a gradient the caller owns.
#[inline(always)]
fn backward_in_place_chunk<T: Real>(g: &mut [T], x: &[T]) {
    for (g, &x) in g.iter_mut().zip(x) {
        *g *= derivative(x);
    }
}

/// `Phi(x) + x phi(x)`, GELU's derivative.
#[inline(always)]
fn derivative<T: Real>(x: T) -> T {
    let half = T::of(0.5);
    let inv_sqrt2 = T::of(std::f64::consts::FRAC_1_SQRT_2);
    let inv_sqrt_2pi = T::of(1.0 / (2.0 * std::f64::consts::PI).sqrt());
    let cdf = half * (T::ONE + (x * inv_sqrt2).erf());
    let pdf = (-half * x * x).exp() * inv_sqrt_2pi;
    cdf + x * pdf
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build of the loops gives the baseline build's results bit for bit, over the
    /// range GELU sees (and beyond, where exp and erf saturate).
    #[test]
    fn avx2_and_baseline_loops_agree_bit_for_bit() {
        let x: Vec<f32> = (0..40_001).map(|i| (i as f32 - 20_000.0) * 1e-3).collect();
        let dy: Vec<f32> = (0..x.len())
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let (mut y_base, mut dx_base) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        forward_chunk(&mut y_base, &x);
        backward_chunk(&mut dx_base, &x, &dy);
        let (y, dx) = (GeluErf::forward(&x), GeluErf::backward(&x, &dy));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&y_base));
        assert_eq!(bits(&dx), bits(&dx_base));
    }
}
