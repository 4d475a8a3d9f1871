//! `y = x @ W^T + b` as one graph node whose backward computes only the gradients of tracked
//! inputs: with a frozen weight (every PEFT method), only `dx = dy @ W`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{product, MatRef};
use super::{add_into, contiguous, tensor, with_slice, Real};

/// Rows per partial sum of the bias gradient: fixed, so the summation order is too.
const BIAS_BLOCK_ROWS: usize = 256;

/// `x` `[rows, in]`, `weight` `[out, in]` (PyTorch's layout), optional `bias` `[out]`; all CPU
/// f32/f64 (see [`super::supports`]).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (_, in_features) = x.dims2()?;
    let (out_features, w_in) = weight.dims2()?;
    if w_in != in_features {
        candle_core::bail!(
            "linear: input has {in_features} features, weight {:?}",
            weight.dims()
        );
    }
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let op = Linear {
        in_features,
        out_features,
    };
    match bias {
        Some(b) => {
            if b.dims() != [out_features] {
                candle_core::bail!("linear: bias {:?} for {out_features} outputs", b.dims());
            }
            x.apply_op3(&weight, &b.contiguous()?, op)
        }
        None => x.apply_op2(&weight, op),
    }
}

/// `y[r, j] = b[j] + y[r, j]` for every row `r` of `y` `[rows, b.len()]`, in parallel: the bias
/// added to a finished product. (The same sum as a product accumulated onto rows holding the
/// bias, whose epilogue adds the product to them, without its scratch copy and serial pass.)
pub(super) fn add_bias<T: Real>(y: &mut [T], b: &[T]) {
    let width = b.len().max(1);
    y.par_chunks_mut(BIAS_BLOCK_ROWS * width).for_each(|rows| {
        super::simd::vectorized(
            #[inline(always)]
            || {
                for row in rows.chunks_mut(width) {
                    for (v, &bj) in row.iter_mut().zip(b) {
                        *v = bj + *v;
                    }
                }
            },
        )
    });
}

pub(super) struct Linear {
    pub(super) in_features: usize,
    pub(super) out_features: usize,
}

impl Linear {
    pub(super) fn forward<T: Real>(&self, x: &[T], w: &[T], b: Option<&[T]>) -> Vec<T> {
        let (i, o) = (self.in_features, self.out_features);
        let rows = x.len() / i.max(1);
        let mut y = product(
            MatRef::rows(x, 0, rows, i, i),
            MatRef::rows(w, 0, o, i, i).t(),
            true,
        );
        if let Some(b) = b {
            add_bias(&mut y, b);
        }
        y
    }

    pub(super) fn grad_input<T: Real>(&self, dy: &[T], w: &[T]) -> Vec<T> {
        let (i, o) = (self.in_features, self.out_features);
        let rows = dy.len() / o.max(1);
        product(
            MatRef::rows(dy, 0, rows, o, o),
            MatRef::rows(w, 0, o, i, i),
            true,
        )
    }

    pub(super) fn grad_weight<T: Real>(&self, dy: &[T], x: &[T]) -> Vec<T> {
        let (i, o) = (self.in_features, self.out_features);
        let rows = dy.len() / o.max(1);
        product(
            MatRef::rows(dy, 0, rows, o, o).t(),
            MatRef::rows(x, 0, rows, i, i),
            true,
        )
    }

    /// Column sums of `dy` `[rows, out]`: partial sums over fixed row blocks in parallel, then added
    /// in block order, so the rounding depends on neither the thread count nor work stealing.
    pub(super) fn grad_bias<T: Real>(&self, dy: &[T]) -> Vec<T> {
        let o = self.out_features.max(1);
        let partials: Vec<Vec<T>> = dy
            .par_chunks(BIAS_BLOCK_ROWS * o)
            .map(|chunk| {
                let mut acc = vec![T::ZERO; o];
                for row in chunk.chunks(o) {
                    add_into(&mut acc, row);
                }
                acc
            })
            .collect();
        let mut sum = vec![T::ZERO; o];
        for part in partials {
            add_into(&mut sum, &part);
        }
        sum
    }

    fn backward<T: Real>(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (i, o) = (self.in_features, self.out_features);
        let rows = grad.elem_count() / o.max(1);
        with_slice::<T, _>(grad, "linear backward", |dy| {
            let dx = if x.track_op() {
                let dx = with_slice::<T, _>(w, "linear backward", |w| self.grad_input(dy, w))?;
                Some(tensor(dx, &[rows, i])?)
            } else {
                None
            };
            let dw = if w.track_op() {
                let dw = with_slice::<T, _>(x, "linear backward", |x| self.grad_weight(dy, x))?;
                Some(tensor(dw, &[o, i])?)
            } else {
                None
            };
            let db = match b {
                Some(b) if b.track_op() => Some(tensor(self.grad_bias(dy), &[o])?),
                _ => None,
            };
            Ok((dx, dw, db))
        })?
    }

    fn run<T: Real>(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous::<T>(x.0, x.1, "linear")?;
        let ws = contiguous::<T>(w.0, w.1, "linear")?;
        let bs = match b {
            Some((s, l)) => Some(contiguous::<T>(s, l, "linear")?),
            None => None,
        };
        let rows = x.1.dims()[0];
        let y = self.forward(xs, ws, bs);
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((rows, self.out_features)),
        ))
    }
}

macro_rules! by_dtype {
    ($storage:expr, $f32:expr, $f64:expr) => {
        match $storage {
            CpuStorage::F32(_) => $f32,
            CpuStorage::F64(_) => $f64,
            _ => candle_core::bail!("fused kernels run on f32 and f64 only"),
        }
    };
}
pub(super) use by_dtype;

macro_rules! by_tensor_dtype {
    ($t:expr, $f32:expr, $f64:expr) => {
        match $t.dtype() {
            candle_core::DType::F32 => $f32,
            candle_core::DType::F64 => $f64,
            other => candle_core::bail!("fused kernels run on f32 and f64 only, not {other:?}"),
        }
    };
}
pub(super) use by_tensor_dtype;

/// `impl CustomOp3` for a kernel of three tensor inputs whose `run::<T>((storage, layout) x 3)`
/// computes the forward pass and `grads::<T>(in1, in2, in3, grad)` the backward pass, both
/// dispatched on f32 / f64.
macro_rules! custom_op3 {
    ($op:ty, $name:literal) => {
        impl candle_core::CustomOp3 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
                s3: &CpuStorage,
                l3: &Layout,
            ) -> Result<(CpuStorage, Shape)> {
                $crate::kernels::linear::by_dtype!(
                    s1,
                    self.run::<f32>((s1, l1), (s2, l2), (s3, l3)),
                    self.run::<f64>((s1, l1), (s2, l2), (s3, l3))
                )
            }

            fn bwd(
                &self,
                in1: &Tensor,
                in2: &Tensor,
                in3: &Tensor,
                _res: &Tensor,
                grad: &Tensor,
            ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
                $crate::kernels::linear::by_tensor_dtype!(
                    grad,
                    self.grads::<f32>(in1, in2, in3, grad),
                    self.grads::<f64>(in1, in2, in3, grad)
                )
            }
        }
    };
}
pub(super) use custom_op3;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "peftbench-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(
            s1,
            self.run::<f32>((s1, l1), (s2, l2), Some((s3, l3))),
            self.run::<f64>((s1, l1), (s2, l2), Some((s3, l3)))
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        by_tensor_dtype!(
            grad,
            self.backward::<f32>(x, w, Some(b), grad),
            self.backward::<f64>(x, w, Some(b), grad)
        )
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "peftbench-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(
            s1,
            self.run::<f32>((s1, l1), (s2, l2), None),
            self.run::<f64>((s1, l1), (s2, l2), None)
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = by_tensor_dtype!(
            grad,
            self.backward::<f32>(x, w, None, grad)?,
            self.backward::<f64>(x, w, None, grad)?
        );
        Ok((dx, dw))
    }
}
