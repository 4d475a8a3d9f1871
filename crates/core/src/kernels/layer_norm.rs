//! Layer normalisation over the last dimension, as `torch.nn.LayerNorm` (biased variance), with a
//! backward that recomputes the row statistics from the input instead of keeping them.

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::linear::custom_op3;
use super::{add_into, contiguous, tensor, with_slice, Real};

/// `x` `[rows, dim]`, `weight` and `bias` `[dim]`; CPU f32/f64.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let (_, dim) = x.dims2()?;
    if weight.dims() != [dim] || bias.dims() != [dim] {
        candle_core::bail!(
            "layer_norm: weight {:?} / bias {:?} for rows of {dim}",
            weight.dims(),
            bias.dims()
        );
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNorm { dim, eps },
    )
}

pub(super) struct LayerNorm {
    pub(super) dim: usize,
    pub(super) eps: f64,
}

/// Rows per parallel task: enough work to amortise the task, few enough partial sums.
const BLOCK_ROWS: usize = 64;

impl LayerNorm {
    /// Mean and `1 / sqrt(var + eps)` of one row, accumulated in f64.
    fn stats<T: Real>(&self, row: &[T]) -> (T, T) {
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| v.to_f64()).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&v| {
                let c = v.to_f64() - mean;
                c * c
            })
            .sum::<f64>()
            / n;
        (T::of(mean), T::of(1.0 / (var + self.eps).sqrt()))
    }

    pub(super) fn forward<T: Real>(&self, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
        let d = self.dim.max(1);
        let mut y = vec![T::ZERO; x.len()];
        y.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(out, row)| {
                let (mean, rstd) = self.stats(row);
                Self::normalise_row(out, row, (mean, rstd), w, b);
            });
        y
    }

    /// [`LayerNorm::forward`], also returning each row's mean and `1 / sqrt(var + eps)`
    /// (interleaved, `[rows, 2]`) for [`LayerNorm::backward`].
    pub(super) fn forward_keeping_stats<T: Real>(
        &self,
        x: &[T],
        w: &[T],
        b: &[T],
    ) -> (Vec<T>, Vec<T>) {
        let d = self.dim.max(1);
        let mut y = vec![T::ZERO; x.len()];
        let mut stats = vec![T::ZERO; 2 * (x.len() / d)];
        y.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .zip(stats.par_chunks_mut(2))
            .for_each(|((out, row), kept)| {
                let (mean, rstd) = self.stats(row);
                kept.copy_from_slice(&[mean, rstd]);
                Self::normalise_row(out, row, (mean, rstd), w, b);
            });
        (y, stats)
    }

    #[inline]
    fn normalise_row<T: Real>(out: &mut [T], row: &[T], (mean, rstd): (T, T), w: &[T], b: &[T]) {
        for j in 0..row.len() {
            out[j] = (row[j] - mean) * rstd * w[j] + b[j];
        }
    }

    /// `(dx, dw, db)`; `dx` is `None` when not wanted, `dw` and `db` are zeros unless
    /// `want_params` (a frozen norm's are never accumulated). `stats`, when given, are the forward
    /// pass's ([`LayerNorm::forward_keeping_stats`]); otherwise they are computed again from `x`.
    pub(super) fn backward<T: Real>(
        &self,
        (x, stats): (&[T], Option<&[T]>),
        w: &[T],
        dy: &[T],
        want_dx: bool,
        want_params: bool,
    ) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
        let d = self.dim.max(1);
        let mut dx = vec![T::ZERO; if want_dx { x.len() } else { 0 }];
        let block = BLOCK_ROWS * d;
        let zeros = || (vec![T::ZERO; d], vec![T::ZERO; d]);
        let per_block = |(b, (xb, dyb)): (usize, (&[T], &[T])), mut dxb: Option<&mut [T]>| {
            let (mut dw, mut db) = zeros();
            let mut g = vec![T::ZERO; d];
            for (r, (row, dyr)) in xb.chunks(d).zip(dyb.chunks(d)).enumerate() {
                let (mean, rstd) = match stats {
                    Some(s) => {
                        let at = 2 * (b * BLOCK_ROWS + r);
                        (s[at], s[at + 1])
                    }
                    None => self.stats(row),
                };
                let (mut sum_g, mut sum_gx) = (T::ZERO, T::ZERO);
                for j in 0..d {
                    let xhat = (row[j] - mean) * rstd;
                    if want_params {
                        dw[j] += dyr[j] * xhat;
                        db[j] += dyr[j];
                    }
                    g[j] = dyr[j] * w[j];
                    sum_g += g[j];
                    sum_gx += g[j] * xhat;
                }
                if let Some(dxb) = dxb.as_deref_mut() {
                    let n = T::of(d as f64);
                    let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
                    let out = &mut dxb[r * d..(r + 1) * d];
                    for j in 0..d {
                        let xhat = (row[j] - mean) * rstd;
                        out[j] = rstd * (g[j] - mean_g - xhat * mean_gx);
                    }
                }
            }
            (dw, db)
        };
        // The per-block partial sums are collected in block order and added sequentially: a rayon
        // `reduce` groups them by how work was stolen, which changes the rounding from run to run.
        let inputs = x.par_chunks(block).zip(dy.par_chunks(block)).enumerate();
        let partials: Vec<(Vec<T>, Vec<T>)> = if want_dx {
            inputs
                .zip(dx.par_chunks_mut(block))
                .map(|(pair, dxb)| per_block(pair, Some(dxb)))
                .collect()
        } else {
            inputs.map(|pair| per_block(pair, None)).collect()
        };
        let (mut dw, mut db) = zeros();
        for (bw, bb) in partials {
            add_into(&mut dw, &bw);
            add_into(&mut db, &bb);
        }
        (want_dx.then_some(dx), dw, db)
    }

    fn run<T: Real>(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let y = self.forward(
            contiguous::<T>(x.0, x.1, "layer_norm")?,
            contiguous::<T>(w.0, w.1, "layer_norm")?,
            contiguous::<T>(b.0, b.1, "layer_norm")?,
        );
        Ok((T::to_cpu_storage_owned(y), x.1.shape().clone()))
    }

    fn grads<T: Real>(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = with_slice::<T, _>(x, "layer_norm backward", |xs| {
            with_slice::<T, _>(w, "layer_norm backward", |ws| {
                with_slice::<T, _>(grad, "layer_norm backward", |dy| {
                    self.backward(
                        (xs, None),
                        ws,
                        dy,
                        x.track_op(),
                        w.track_op() || b.track_op(),
                    )
                })
            })
        })???;
        let dx = dx.map(|v| tensor(v, x.dims())).transpose()?;
        let dw = w.track_op().then(|| tensor(dw, &[self.dim])).transpose()?;
        let db = b.track_op().then(|| tensor(db, &[self.dim])).transpose()?;
        Ok((dx, dw, db))
    }
}

custom_op3!(LayerNorm, "peftbench-layer-norm");
