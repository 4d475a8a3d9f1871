//! A LoRA-adapted projection, `x @ W^T + b + s (x @ A^T) @ B^T` (Hu et al., 2021), as one graph
//! node over a frozen `W` and `b`.
//!
//! Composed from ops, the low-rank branch costs as much as the projection beside it: two thin
//! products (inner size `r`), a scale and an add, each writing a `[rows, out]` tensor, and in the
//! backward pass zero-filled gradient buffers for each of them. Here the forward pass and the
//! input gradient each run one product against the merged weight `W + s B A` (the low-rank
//! product of an `[out, in]` matrix is tiny next to a batch of rows), so the branch costs only the
//! parameter gradients: `dA = s (dy B)^T x` and `dB = s dy^T (x A^T)`, thin products of `rows`.
//! Merging changes the rounding, not the value: the result matches the composed ops within float
//! tolerance, and at initialisation (`B = 0`) the merged weight is `W` exactly.

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, product, MatMut, MatRef};
use super::linear::{add_bias, custom_op3};
use super::{contiguous, tensor, with_slice, Real};

/// `x` `[rows, in]`, frozen `weight` `[out, in]` and `bias` `[out]`, `a` `[r, in]`, `b` `[out, r]`;
/// all CPU f32/f64 of one dtype (see [`super::supports`]). Gradients flow to `x`, `a` and `b`
/// only: a tracked `weight` or `bias` is an error (use the composed ops there).
pub fn lora_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scaling: f64,
) -> Result<Tensor> {
    let (_, in_features) = x.dims2()?;
    let (out_features, w_in) = weight.dims2()?;
    let (rank, a_in) = a.dims2()?;
    if w_in != in_features || a_in != in_features || b.dims() != [out_features, rank] {
        candle_core::bail!(
            "lora_linear: x {:?}, weight {:?}, A {:?}, B {:?}",
            x.dims(),
            weight.dims(),
            a.dims(),
            b.dims()
        );
    }
    if weight.track_op() || bias.is_some_and(|b| b.track_op()) {
        candle_core::bail!("lora_linear: the base weight and bias must be frozen");
    }
    if let Some(bias) = bias {
        if bias.dims() != [out_features] {
            candle_core::bail!(
                "lora_linear: bias {:?} for {out_features} outputs",
                bias.dims()
            );
        }
    }
    let op = LoraLinear {
        in_features,
        out_features,
        rank,
        scaling,
        weight: weight.contiguous()?,
        bias: bias.map(|b| b.contiguous()).transpose()?,
    };
    x.contiguous()?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

pub(super) struct LoraLinear {
    pub(super) in_features: usize,
    pub(super) out_features: usize,
    pub(super) rank: usize,
    pub(super) scaling: f64,
    pub(super) weight: Tensor,
    pub(super) bias: Option<Tensor>,
}

impl LoraLinear {
    /// `W + s B A`, `[out, in]`.
    fn merged<T: Real>(&self, w: &[T], a: &[T], b: &[T]) -> Vec<T> {
        let (i, o, r) = (self.in_features, self.out_features, self.rank);
        let mut ba = vec![T::ZERO; o * i];
        matmul(
            MatMut::rows(&mut ba, 0, o, i, i),
            MatRef::rows(b, 0, o, r, r),
            MatRef::rows(a, 0, r, i, i),
            false,
            true,
        );
        let s = T::of(self.scaling);
        ba.par_iter_mut()
            .zip(w.par_iter())
            .for_each(|(m, &w)| *m = w + s * *m);
        ba
    }

    pub(super) fn forward<T: Real>(
        &self,
        x: &[T],
        a: &[T],
        b: &[T],
        w: &[T],
        bias: Option<&[T]>,
    ) -> Vec<T> {
        let (i, o) = (self.in_features, self.out_features);
        let rows = x.len() / i.max(1);
        let merged = self.merged(w, a, b);
        let mut y = product(
            MatRef::rows(x, 0, rows, i, i),
            MatRef::rows(&merged, 0, o, i, i).t(),
            true,
        );
        if let Some(bias) = bias {
            add_bias(&mut y, bias);
        }
        y
    }

    /// `(dx, dA, dB)`, each `None` when its input is not tracked.
    #[allow(clippy::type_complexity)]
    pub(super) fn backward<T: Real>(
        &self,
        (x, a, b): (&[T], &[T], &[T]),
        w: &[T],
        dy: &[T],
        want: (bool, bool, bool),
    ) -> (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>) {
        let (i, o, r) = (self.in_features, self.out_features, self.rank);
        let rows = dy.len() / o.max(1);
        let s = T::of(self.scaling);
        let dx = want.0.then(|| {
            // Recomputed rather than kept from the forward pass: `r out in` multiply-adds are
            // nothing next to the products over the batch's rows, and the op stays stateless.
            let merged = self.merged(w, a, b);
            product(
                MatRef::rows(dy, 0, rows, o, o),
                MatRef::rows(&merged, 0, o, i, i),
                true,
            )
        });
        let da = want.1.then(|| {
            // dA = s (dy B)^T x
            let mut g = vec![T::ZERO; rows * r];
            matmul(
                MatMut::rows(&mut g, 0, rows, r, r),
                MatRef::rows(dy, 0, rows, o, o),
                MatRef::rows(b, 0, o, r, r),
                false,
                true,
            );
            let mut da = vec![T::ZERO; r * i];
            matmul(
                MatMut::rows(&mut da, 0, r, i, i),
                MatRef::rows(&g, 0, rows, r, r).t(),
                MatRef::rows(x, 0, rows, i, i),
                false,
                true,
            );
            da.iter_mut().for_each(|v| *v *= s);
            da
        });
        let db = want.2.then(|| {
            // dB = s dy^T (x A^T)
            let mut u = vec![T::ZERO; rows * r];
            matmul(
                MatMut::rows(&mut u, 0, rows, r, r),
                MatRef::rows(x, 0, rows, i, i),
                MatRef::rows(a, 0, r, i, i).t(),
                false,
                true,
            );
            let mut db = vec![T::ZERO; o * r];
            matmul(
                MatMut::rows(&mut db, 0, o, r, r),
                MatRef::rows(dy, 0, rows, o, o).t(),
                MatRef::rows(&u, 0, rows, r, r),
                false,
                true,
            );
            db.iter_mut().for_each(|v| *v *= s);
            db
        });
        (dx, da, db)
    }

    fn run<T: Real>(
        &self,
        x: (&CpuStorage, &Layout),
        a: (&CpuStorage, &Layout),
        b: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous::<T>(x.0, x.1, "lora_linear")?;
        let as_ = contiguous::<T>(a.0, a.1, "lora_linear")?;
        let bs = contiguous::<T>(b.0, b.1, "lora_linear")?;
        let rows = x.1.dims()[0];
        let y = with_slice::<T, _>(&self.weight, "lora_linear", |w| match &self.bias {
            Some(bias) => with_slice::<T, _>(bias, "lora_linear", |bias| {
                self.forward(xs, as_, bs, w, Some(bias))
            }),
            None => Ok(self.forward(xs, as_, bs, w, None)),
        })??;
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((rows, self.out_features)),
        ))
    }

    #[allow(clippy::type_complexity)]
    fn grads<T: Real>(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (i, o, r) = (self.in_features, self.out_features, self.rank);
        let rows = grad.elem_count() / o.max(1);
        let want = (x.track_op(), a.track_op(), b.track_op());
        let (dx, da, db) = with_slice::<T, _>(grad, "lora_linear backward", |dy| {
            with_slice::<T, _>(x, "lora_linear backward", |xs| {
                with_slice::<T, _>(a, "lora_linear backward", |as_| {
                    with_slice::<T, _>(b, "lora_linear backward", |bs| {
                        with_slice::<T, _>(&self.weight, "lora_linear backward", |w| {
                            self.backward((xs, as_, bs), w, dy, want)
                        })
                    })
                })
            })
        })?????;
        Ok((
            dx.map(|v| tensor(v, &[rows, i])).transpose()?,
            da.map(|v| tensor(v, &[r, i])).transpose()?,
            db.map(|v| tensor(v, &[o, r])).transpose()?,
        ))
    }
}

custom_op3!(LoraLinear, "peftbench-lora-linear");
