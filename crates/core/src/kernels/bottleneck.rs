//! A residual branch's output `o` through a bottleneck adapter and back onto the stream `x`:
//! `x + (o + up(relu(down(o))))` as one graph node (Houlsby et al., 2019, arXiv:1902.00751;
//! Pfeiffer et al., 2021, arXiv:2005.00247, for the placement after the MLP alone).
//!
//! Composed, this is two projections, a ReLU and two adds: five graph nodes, and in the backward
//! pass candle gives the two adds' edges (the adapter's input, its output, the branch output
//! itself) zero-filled activation-sized gradient buffers and adds. Here the forward pass writes
//! the up-projection straight into the output and adds both residuals to it in one pass; the
//! backward pass returns `dy` for `x` and `dy + d_adapter_input` for `o`, and the four
//! parameters' gradients.
//!
//! The arithmetic is the composed path's, op for op and in the same order (the projections are
//! [`super::linear`]'s, the ReLU and its gradient candle's), so the results are the same bits;
//! the test below and the methods' `fused_sublayers` test hold the two paths to that.

use std::sync::Mutex;

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::linear::Linear;
use super::{contiguous, par_add_into, tensor, with_slice, Real, PAR_CHUNK};

/// A bottleneck adapter `up(relu(down(o)))` with biases, weights in PyTorch's `[out, in]`
/// layout: `down_weight` `[rank, hidden]`, `up_weight` `[hidden, rank]`.
#[derive(Debug, Clone, Copy)]
pub struct Bottleneck<'a> {
    pub down_weight: &'a Tensor,
    pub down_bias: &'a Tensor,
    pub up_weight: &'a Tensor,
    pub up_bias: &'a Tensor,
}

/// `x + (o + up(relu(down(o))))` for `x` and `o` of one shape `[..., hidden]`; CPU f32/f64, every
/// parameter of `x`'s dtype. The parameters enter the graph as one concatenation (their gradients
/// come back through it), so frozen and trained ones both work.
pub fn bottleneck_residual(x: &Tensor, o: &Tensor, adapter: Bottleneck<'_>) -> Result<Tensor> {
    let hidden = x.dim(candle_core::D::Minus1)?;
    let rank = adapter.down_weight.dim(0)?;
    if o.dims() != x.dims()
        || adapter.down_weight.dims() != [rank, hidden]
        || adapter.down_bias.dims() != [rank]
        || adapter.up_weight.dims() != [hidden, rank]
        || adapter.up_bias.dims() != [hidden]
    {
        candle_core::bail!(
            "bottleneck residual: stream {:?}, branch {:?}, down {:?} + {:?}, up {:?} + {:?}",
            x.dims(),
            o.dims(),
            adapter.down_weight.dims(),
            adapter.down_bias.dims(),
            adapter.up_weight.dims(),
            adapter.up_bias.dims()
        );
    }
    let params = Tensor::cat(
        &[
            adapter.down_weight.flatten_all()?,
            adapter.down_bias.clone(),
            adapter.up_weight.flatten_all()?,
            adapter.up_bias.clone(),
        ],
        0,
    )?;
    let op = BottleneckResidual {
        hidden,
        rank,
        keep: x.track_op() || o.track_op() || params.track_op(),
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op3(&o.contiguous()?, &params, op)
}

struct BottleneckResidual {
    hidden: usize,
    rank: usize,
    /// Whether to keep the down-projection's output for the backward pass (something is tracked).
    keep: bool,
    /// The down-projection's output, before the ReLU, `[rows, rank]`.
    saved: Mutex<Option<Tensor>>,
}

/// The four parameters' elements in their concatenation's order.
struct ParamSlices<'s, T> {
    down_weight: &'s [T],
    down_bias: &'s [T],
    up_weight: &'s [T],
    up_bias: &'s [T],
}

impl BottleneckResidual {
    fn down(&self) -> Linear {
        Linear {
            in_features: self.hidden,
            out_features: self.rank,
        }
    }

    fn up(&self) -> Linear {
        Linear {
            in_features: self.rank,
            out_features: self.hidden,
        }
    }

    fn split<'s, T>(&self, params: &'s [T]) -> ParamSlices<'s, T> {
        let (down_weight, rest) = params.split_at(self.rank * self.hidden);
        let (down_bias, rest) = rest.split_at(self.rank);
        let (up_weight, up_bias) = rest.split_at(self.hidden * self.rank);
        ParamSlices {
            down_weight,
            down_bias,
            up_weight,
            up_bias,
        }
    }

    fn run<T: Real>(
        &self,
        x: (&CpuStorage, &Layout),
        o: (&CpuStorage, &Layout),
        params: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let name = "bottleneck residual";
        let xs = contiguous::<T>(x.0, x.1, name)?;
        let os = contiguous::<T>(o.0, o.1, name)?;
        let p = self.split(contiguous::<T>(params.0, params.1, name)?);
        let pre = self.down().forward(os, p.down_weight, Some(p.down_bias));
        // candle's ReLU, `max(v, 0)`.
        let activated: Vec<T> = pre.iter().map(|&v| v.maximum(T::ZERO)).collect();
        let mut y = self.up().forward(&activated, p.up_weight, Some(p.up_bias));
        // `x + (o + a)`: the composed path's two adds, in its order, in one pass.
        y.par_chunks_mut(PAR_CHUNK)
            .zip(xs.par_chunks(PAR_CHUNK).zip(os.par_chunks(PAR_CHUNK)))
            .for_each(|(ys, (xs, os))| {
                super::simd::vectorized(
                    #[inline(always)]
                    || {
                        for ((y, &x), &o) in ys.iter_mut().zip(xs).zip(os) {
                            *y = x + (o + *y);
                        }
                    },
                )
            });
        if self.keep {
            let rows = pre.len() / self.rank.max(1);
            *self.saved.lock().expect("bottleneck residual lock") =
                Some(tensor(pre, &[rows, self.rank])?);
        }
        Ok((T::to_cpu_storage_owned(y), x.1.shape().clone()))
    }

    fn grads<T: Real>(
        &self,
        x: &Tensor,
        o: &Tensor,
        params: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = "bottleneck residual backward";
        let Some(pre) = self.saved.lock().expect("bottleneck residual lock").take() else {
            candle_core::bail!("{name}: no saved forward pass (backward ran twice?)");
        };
        let (down, up) = (self.down(), self.up());
        let (d_o, d_params) = with_slice::<T, _>(grad, name, |dy| {
            with_slice::<T, _>(o, name, |os| {
                with_slice::<T, _>(&pre, name, |pre| {
                    with_slice::<T, _>(params, name, |ps| {
                        let p = self.split(ps);
                        // The adapter's output gradient is `dy` itself (candle's `0 + dy`).
                        let dh = up.grad_input(dy, p.up_weight);
                        // candle's ReLU gradient: `0 + dh * (pre >= 0)`.
                        let d_pre: Vec<T> = dh
                            .iter()
                            .zip(pre)
                            .map(|(&g, &v)| {
                                T::ZERO + g * if v >= T::ZERO { T::ONE } else { T::ZERO }
                            })
                            .collect();
                        let d_o = o.track_op().then(|| {
                            let mut d = down.grad_input(&d_pre, p.down_weight);
                            // The branch output's two uses: the residual add's `dy` and the
                            // adapter's input gradient.
                            par_add_into(&mut d, dy);
                            d
                        });
                        let d_params = params.track_op().then(|| {
                            let activated: Vec<T> =
                                pre.iter().map(|&v| v.maximum(T::ZERO)).collect();
                            let mut all = down.grad_weight(&d_pre, os);
                            all.extend(down.grad_bias(&d_pre));
                            all.extend(up.grad_weight(dy, &activated));
                            all.extend(up.grad_bias(dy));
                            all
                        });
                        (d_o, d_params)
                    })
                })
            })
        })????;
        let d_o = d_o.map(|d| tensor(d, o.dims())).transpose()?;
        let d_params = d_params.map(|d| tensor(d, params.dims())).transpose()?;
        // The stream's gradient is `dy` (candle's `0 + dy` for the composed add).
        let d_x = x.track_op().then(|| grad.clone());
        Ok((d_x, d_o, d_params))
    }
}

super::linear::custom_op3!(BottleneckResidual, "peftbench-bottleneck-residual");

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    fn bits(t: &Tensor) -> Vec<u64> {
        let t = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        t.to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(f64::to_bits)
            .collect()
    }

    /// Deterministic values of any sign (a fixed function of the seed and the index).
    fn var(seed: u64, shape: &[usize], dtype: DType) -> Var {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i as f64 + 1.0) * (seed as f64 + 0.37)).sin())
            .collect();
        let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
    }

    /// The fused node against the composed ops, forward and every gradient, bit for bit; with the
    /// branch output tracked or not (a frozen block below), in f32 and f64.
    #[test]
    fn equals_the_composed_ops_bit_for_bit() {
        let (hidden, rank) = (20, 3);
        for dtype in [DType::F32, DType::F64] {
            for o_tracked in [true, false] {
                let x = var(1, &[2, 7, hidden], dtype);
                let o = var(2, &[2, 7, hidden], dtype);
                let dw = var(3, &[rank, hidden], dtype);
                let db = var(4, &[rank], dtype);
                let uw = var(5, &[hidden, rank], dtype);
                let ub = var(6, &[hidden], dtype);
                let o_in = if o_tracked {
                    o.as_tensor().clone()
                } else {
                    o.as_tensor().detach()
                };
                let adapter = Bottleneck {
                    down_weight: dw.as_tensor(),
                    down_bias: db.as_tensor(),
                    up_weight: uw.as_tensor(),
                    up_bias: ub.as_tensor(),
                };
                let fused = bottleneck_residual(x.as_tensor(), &o_in, adapter).unwrap();
                let pre = crate::ops::linear(&o_in, dw.as_tensor(), Some(db.as_tensor())).unwrap();
                // The ReLU both passes and blocks units here, so both sides of it are checked.
                let signs: Vec<f64> = pre
                    .flatten_all()
                    .and_then(|p| p.to_dtype(DType::F64))
                    .and_then(|p| p.to_vec1())
                    .unwrap();
                assert!(signs.iter().any(|&v| v < 0.0) && signs.iter().any(|&v| v > 0.0));
                let composed = {
                    let a = crate::ops::linear(
                        &pre.relu().unwrap(),
                        uw.as_tensor(),
                        Some(ub.as_tensor()),
                    )
                    .unwrap();
                    (x.as_tensor() + (&o_in + a).unwrap()).unwrap()
                };
                assert_eq!(bits(&fused), bits(&composed), "{dtype:?} forward");
                // A loss that weights every output differently.
                let weights = var(7, fused.dims(), dtype).as_tensor().detach();
                let gf = (&fused * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gc = (&composed * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let mut checked = vec![x.as_tensor(), dw.as_tensor(), db.as_tensor()];
                checked.extend([uw.as_tensor(), ub.as_tensor()]);
                if o_tracked {
                    checked.push(o.as_tensor());
                }
                for t in checked {
                    let (f, c) = (gf.get(t).unwrap(), gc.get(t).unwrap());
                    assert_eq!(bits(f), bits(c), "{dtype:?} gradient of {:?}", t.dims());
                }
                if !o_tracked {
                    assert!(gf.get(o.as_tensor()).is_none());
                }
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let t = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        let (x, o) = (t(&[4, 6]), t(&[4, 6]));
        let (dw, db, uw, ub) = (t(&[2, 6]), t(&[2]), t(&[6, 3]), t(&[6]));
        let adapter = Bottleneck {
            down_weight: &dw,
            down_bias: &db,
            up_weight: &uw,
            up_bias: &ub,
        };
        let err = bottleneck_residual(&x, &o, adapter)
            .unwrap_err()
            .to_string();
        assert!(err.contains("up [6, 3]"), "{err}");
    }
}
