//! Multi-head scaled dot-product attention, `softmax(Q K^T / sqrt(d) + mask) V`, as one graph node.
//!
//! Inputs stay in the projections' `[batch, tokens, hidden]` layout: head `h` is the column block
//! `h * d .. (h + 1) * d`, read and written through strided views, so no transpose is ever copied.
//! The forward pass keeps the attention probabilities (`[batch, heads, queries, keys]`) for the
//! backward pass, which computes, per head, `dV = P^T dO`, `dP = dO V^T`,
//! `dS = P * (dP - rowsum(dP * P)) / sqrt(d)`, `dQ = dS K`, `dK = dS^T Q`.
//!
//! Each head's scores, softmax and `P V` run in a buffer of one head that stays in cache; the
//! probabilities then go to the kept tensor with non-temporal stores. Computed in place in the
//! kept tensor (15 MB a layer for ViT-Tiny at batch 32), the two products ran from memory: the
//! forward pass of a ViT-Tiny's 12 attention layers took 8% longer on two threads.

use std::sync::Mutex;

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, MatMut, MatRef};
use super::linear::custom_op3;
use super::simd::{stream_copy, vectorized};
use super::{contiguous, tensor, with_slice, Real};

/// `q` `[batch, queries, hidden]`, `k` and `v` `[batch, keys, hidden]`, `heads` dividing `hidden`;
/// `mask`, when given, is added to every head's scores: `[batch, keys]` (0 to attend, a large
/// negative number to ignore a key, e.g. padding). CPU f32/f64.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, tq, d) = q.dims3()?;
    let (bk, tk, dk) = k.dims3()?;
    if bk != b || dk != d || v.dims() != k.dims() || heads == 0 || d % heads != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} with {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if let Some(m) = mask {
        if m.dims() != [b, tk] {
            candle_core::bail!("attention: mask {:?} for {b} x {tk} keys", m.dims());
        }
    }
    let op = Attention {
        batch: b,
        queries: tq,
        keys: tk,
        hidden: d,
        heads,
        mask: mask.map(|m| m.contiguous()).transpose()?,
        probs: Mutex::new(None),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

pub(super) struct Attention {
    pub(super) batch: usize,
    pub(super) queries: usize,
    pub(super) keys: usize,
    pub(super) hidden: usize,
    pub(super) heads: usize,
    pub(super) mask: Option<Tensor>,
    /// The forward pass's probabilities, taken by the backward pass.
    pub(super) probs: Mutex<Option<Tensor>>,
}

impl Attention {
    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    fn scale(&self) -> f64 {
        1.0 / (self.head_dim() as f64).sqrt()
    }

    /// Output `[batch, queries, hidden]` and probabilities `[batch, heads, queries, keys]`.
    pub(super) fn forward<T: Real>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        mask: Option<&[T]>,
    ) -> (Vec<T>, Vec<T>) {
        let (tq, tk, d, hd) = (self.queries, self.keys, self.hidden, self.head_dim());
        let scale = T::of(self.scale());
        let mut out = vec![T::ZERO; self.batch * tq * d];
        let mut probs = vec![T::ZERO; self.batch * self.heads * tq * tk];
        out.par_chunks_mut(tq * d)
            .zip(probs.par_chunks_mut(self.heads * tq * tk))
            .enumerate()
            .for_each(|(b, (out_b, probs_b))| {
                let mut head = vec![T::ZERO; tq * tk];
                for h in 0..self.heads {
                    let p = &mut head[..];
                    matmul(
                        MatMut::rows(p, 0, tq, tk, tk),
                        MatRef::rows(q, b * tq * d + h * hd, tq, hd, d),
                        MatRef::rows(k, b * tk * d + h * hd, tk, hd, d).t(),
                        false,
                        false,
                    );
                    let mask_b = mask.map(|m| &m[b * tk..(b + 1) * tk]);
                    vectorized(
                        #[inline(always)]
                        || {
                            for row in p.chunks_mut(tk) {
                                softmax_row(row, scale, mask_b);
                            }
                        },
                    );
                    matmul(
                        MatMut::rows(out_b, h * hd, tq, hd, d),
                        MatRef::rows(p, 0, tq, tk, tk),
                        MatRef::rows(v, b * tk * d + h * hd, tk, hd, d),
                        false,
                        false,
                    );
                    stream_copy(&mut probs_b[h * tq * tk..(h + 1) * tq * tk], &head);
                }
            });
        (out, probs)
    }

    /// `(dq, dk, dv)`, each `None` when not wanted.
    #[allow(clippy::type_complexity)]
    pub(super) fn backward<T: Real>(
        &self,
        (q, k, v): (&[T], &[T], &[T]),
        probs: &[T],
        dout: &[T],
        want: (bool, bool, bool),
    ) -> (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>) {
        let (tq, tk, d, hd) = (self.queries, self.keys, self.hidden, self.head_dim());
        let scale = T::of(self.scale());
        let alloc = |want: bool, n: usize| vec![T::ZERO; if want { self.batch * n * d } else { 0 }];
        let (mut dq, mut dk, mut dv) = (alloc(want.0, tq), alloc(want.1, tk), alloc(want.2, tk));
        let batch = self.batch;
        let (dq_c, dk_c, dv_c) = (
            per_batch(&mut dq, batch, tq * d),
            per_batch(&mut dk, batch, tk * d),
            per_batch(&mut dv, batch, tk * d),
        );
        dq_c.into_par_iter()
            .zip(dk_c)
            .zip(dv_c)
            .enumerate()
            .for_each(|(b, ((dq_b, dk_b), dv_b))| {
                let mut ds = vec![T::ZERO; tq * tk];
                for h in 0..self.heads {
                    let p = &probs[(b * self.heads + h) * tq * tk..][..tq * tk];
                    let q_bh = MatRef::rows(q, b * tq * d + h * hd, tq, hd, d);
                    let k_bh = MatRef::rows(k, b * tk * d + h * hd, tk, hd, d);
                    let v_bh = MatRef::rows(v, b * tk * d + h * hd, tk, hd, d);
                    let do_bh = MatRef::rows(dout, b * tq * d + h * hd, tq, hd, d);
                    if want.2 {
                        matmul(
                            MatMut::rows(dv_b, h * hd, tk, hd, d),
                            MatRef::rows(p, 0, tq, tk, tk).t(),
                            do_bh,
                            false,
                            false,
                        );
                    }
                    if !(want.0 || want.1) {
                        continue;
                    }
                    matmul(
                        MatMut::rows(&mut ds, 0, tq, tk, tk),
                        do_bh,
                        v_bh.t(),
                        false,
                        false,
                    );
                    vectorized(
                        #[inline(always)]
                        || {
                            for (ds_row, p_row) in ds.chunks_mut(tk).zip(p.chunks(tk)) {
                                let dot: T = ds_row.iter().zip(p_row).map(|(&g, &p)| g * p).sum();
                                for (g, &p) in ds_row.iter_mut().zip(p_row) {
                                    *g = p * (*g - dot) * scale;
                                }
                            }
                        },
                    );
                    let ds_m = MatRef::rows(&ds, 0, tq, tk, tk);
                    if want.0 {
                        matmul(
                            MatMut::rows(dq_b, h * hd, tq, hd, d),
                            ds_m,
                            k_bh,
                            false,
                            false,
                        );
                    }
                    if want.1 {
                        matmul(
                            MatMut::rows(dk_b, h * hd, tk, hd, d),
                            ds_m.t(),
                            q_bh,
                            false,
                            false,
                        );
                    }
                }
            });
        (
            want.0.then_some(dq),
            want.1.then_some(dk),
            want.2.then_some(dv),
        )
    }

    fn run<T: Real>(
        &self,
        q: (&CpuStorage, &Layout),
        k: (&CpuStorage, &Layout),
        v: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let name = "attention";
        let (qs, ks, vs) = (
            contiguous::<T>(q.0, q.1, name)?,
            contiguous::<T>(k.0, k.1, name)?,
            contiguous::<T>(v.0, v.1, name)?,
        );
        let (out, probs) = match &self.mask {
            Some(m) => with_slice::<T, _>(m, name, |m| self.forward(qs, ks, vs, Some(m)))?,
            None => self.forward(qs, ks, vs, None),
        };
        let probs = tensor(probs, &[self.batch, self.heads, self.queries, self.keys])?;
        *self.probs.lock().expect("attention probabilities lock") = Some(probs);
        Ok((T::to_cpu_storage_owned(out), q.1.shape().clone()))
    }

    fn grads<T: Real>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = "attention backward";
        let probs = match self
            .probs
            .lock()
            .expect("attention probabilities lock")
            .take()
        {
            Some(p) => p,
            None => candle_core::bail!("attention: backward ran twice on one forward pass"),
        };
        let want = (q.track_op(), k.track_op(), v.track_op());
        let (dq, dk, dv) = with_slice::<T, _>(q, name, |qs| {
            with_slice::<T, _>(k, name, |ks| {
                with_slice::<T, _>(v, name, |vs| {
                    with_slice::<T, _>(&probs, name, |ps| {
                        with_slice::<T, _>(grad, name, |dy| {
                            self.backward((qs, ks, vs), ps, dy, want)
                        })
                    })
                })
            })
        })?????;
        let to_tensor =
            |g: Option<Vec<T>>, like: &Tensor| g.map(|g| tensor(g, like.dims())).transpose();
        Ok((to_tensor(dq, q)?, to_tensor(dk, k)?, to_tensor(dv, v)?))
    }
}

/// `buf` split into `batch` chunks of `len`; an unwanted (empty) gradient yields empty chunks that
/// are never written.
fn per_batch<T>(buf: &mut [T], batch: usize, len: usize) -> Vec<&mut [T]> {
    if buf.is_empty() {
        (0..batch).map(|_| <&mut [T]>::default()).collect()
    } else {
        buf.chunks_mut(len.max(1)).collect()
    }
}

/// `row = softmax(row * scale + mask)` in place (max subtracted first).
#[inline(always)]
fn softmax_row<T: Real>(row: &mut [T], scale: T, mask: Option<&[T]>) {
    if row.is_empty() {
        return;
    }
    match mask {
        Some(m) => {
            for (s, &m) in row.iter_mut().zip(m) {
                *s = *s * scale + m;
            }
        }
        None => {
            for s in row.iter_mut() {
                *s *= scale;
            }
        }
    }
    let max = row.iter().copied().fold(row[0], T::maximum);
    // The exponentials in a loop of their own vectorise; the sum then adds them in the same order.
    for s in row.iter_mut() {
        *s = (*s - max).exp();
    }
    let sum = row.iter().fold(T::ZERO, |sum, &s| sum + s);
    let inv = T::ONE / sum;
    for s in row.iter_mut() {
        *s *= inv;
    }
}

custom_op3!(Attention, "peftbench-attention");

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax rows computed inside [`vectorized`] (AVX2 where the CPU has it) equal the baseline
    /// build bit for bit, with and without a mask.
    #[test]
    fn avx2_and_baseline_softmax_agree_bit_for_bit() {
        let scores: Vec<f32> = (0..197 * 197)
            .map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0)
            .collect();
        let mask: Vec<f32> = (0..197)
            .map(|j| if j % 5 == 0 { -1e9 } else { 0.0 })
            .collect();
        for mask in [None, Some(&mask[..])] {
            let (mut base, mut fast) = (scores.clone(), scores.clone());
            for row in base.chunks_mut(197) {
                softmax_row(row, 0.125, mask);
            }
            vectorized(
                #[inline(always)]
                || {
                    for row in fast.chunks_mut(197) {
                        softmax_row(row, 0.125, mask);
                    }
                },
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&base));
        }
    }
}
