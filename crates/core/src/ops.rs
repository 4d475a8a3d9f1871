//! Differentiable tensor ops whose gradients are known to flow.
//!
//! candle-nn 0.11's fused kernels (`ops::layer_norm`, `ops::softmax_last_dim`, `ops::rms_norm`,
//! `ops::sdpa`, and `candle_nn::LayerNorm` on contiguous input) record no backward op: a model built
//! from them trains only the parameters after the last fused op, silently. The ops here run our
//! own fused CPU kernels ([`crate::kernels`], each with its own backward) for f32/f64 on the CPU,
//! and otherwise the [`composite`] versions built only from candle primitives that implement
//! backward. `tests` check both paths against each other and against finite differences.

use candle_core::{Result, Tensor, D};

use crate::{kernels, ForwardCtx};

/// Layer normalisation over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`,
/// with the biased variance, as `torch.nn.LayerNorm` computes it.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !(kernels::supports(x) && same_dtype(x, &[weight, bias])) {
        return composite::layer_norm(x, weight, bias, eps);
    }
    let dims = x.dims().to_vec();
    let dim = *dims
        .last()
        .ok_or_else(|| candle_core::Error::Msg("layer_norm: input is a scalar".into()))?;
    let rows = x.elem_count() / dim.max(1);
    kernels::layer_norm(&x.reshape((rows, dim))?, weight, bias, eps)?.reshape(dims)
}

/// Softmax over the last dimension (composite: it is only used on small logits).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    composite::softmax_last_dim(x)
}

/// Log-softmax over the last dimension (max detached, as in [`composite::softmax_last_dim`]).
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&log_sum)
}

/// `x @ weight^T + bias` for `x` of any rank >= 1 and a `[out, in]` weight (PyTorch's layout).
///
/// Leading dimensions are flattened into one 2-D matmul: a batched matmul against a broadcast
/// weight would make the backward pass build a `[batch, out, in]` weight gradient and then sum it.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let fused = kernels::supports(x)
        && same_dtype(x, &[weight])
        && bias.is_none_or(|b| b.dtype() == x.dtype());
    on_rows(x, weight, "linear", |x2| {
        if fused {
            kernels::linear(x2, weight, bias)
        } else {
            composite::linear_2d(x2, weight, bias)
        }
    })
}

/// `project` applied to `x` flattened to `[rows, in]`, its `[rows, out]` result reshaped back to
/// `x`'s leading dimensions with `weight`'s `out` last.
fn on_rows(
    x: &Tensor,
    weight: &Tensor,
    op: &str,
    project: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (in_features, lead) = match dims.split_last() {
        Some((&last, lead)) => (last, lead.to_vec()),
        None => candle_core::bail!("{op}: input is a scalar"),
    };
    let rows: usize = lead.iter().product();
    let y = project(&x.reshape((rows, in_features))?)?;
    let mut out_dims = lead;
    out_dims.push(weight.dim(0)?);
    y.reshape(out_dims)
}

/// A LoRA-adapted projection `x @ weight^T + bias + scaling * (x @ a^T) @ b^T` for `x` of rank at
/// least 1, `a` `[r, in]`, `b` `[out, r]`. With a frozen weight and bias on the CPU this is one fused
/// node ([`kernels::lora_linear`]); otherwise (a trained base, CUDA, half precision) the same sum
/// from [`linear`]s.
pub fn lora_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scaling: f64,
) -> Result<Tensor> {
    let fused = kernels::supports(x)
        && same_dtype(x, &[weight, a, b])
        && bias.is_none_or(|bias| same_dtype(x, &[bias]) && !bias.track_op())
        && !weight.track_op();
    if !fused {
        let delta = linear(&linear(x, a, None)?, b, None)?;
        return linear(x, weight, bias)? + (delta * scaling)?;
    }
    on_rows(x, weight, "lora_linear", |x2| {
        kernels::lora_linear(x2, weight, bias, a, b, scaling)
    })
}

/// Multi-head attention `softmax(q k^T / sqrt(head_dim) + mask) v` on `[batch, tokens, hidden]`
/// projections, `heads` heads of `hidden / heads` columns each; `mask` `[batch, keys]` is added to
/// the scores (0 = attend; a large negative value = ignore). Dropout `dropout_p` on the
/// probabilities in training mode. Returns `[batch, queries, hidden]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
    dropout_p: f64,
    ctx: &ForwardCtx,
) -> Result<Tensor> {
    let dropout = dropout_p > 0.0 && ctx.is_train();
    let fused = !dropout
        && kernels::supports(q)
        && same_dtype(q, &[k, v])
        && mask.is_none_or(|m| m.dtype() == q.dtype());
    if fused {
        kernels::attention(q, k, v, heads, mask)
    } else {
        composite::attention(q, k, v, heads, mask, dropout_p, ctx)
    }
}

/// A pre-norm block's attention branch `out(attention(q(h), k(h), v(h)))`, `h = LN(x)` (plus `x`
/// when `residual`), as one fused node ([`kernels::attention_sublayer`]) when it can be: CPU
/// f32/f64, fused sublayers not turned off. `None` when it cannot: the caller then composes the
/// branch from [`layer_norm`], [`linear`] and [`attention`], which give the same numbers.
pub fn fused_attention_sublayer(
    x: &Tensor,
    norm: kernels::NormParams<'_>,
    projections: [kernels::Projection<'_>; 4],
    heads: usize,
    residual: bool,
) -> Result<Option<Tensor>> {
    if !fits_fused_kernel(x, norm, &projections) {
        return Ok(None);
    }
    kernels::attention_sublayer(x, norm, projections, heads, residual).map(Some)
}

/// A pre-norm block's MLP branch `fc2(act(fc1(LN(x))))` (plus `x` when `residual`) as one fused node
/// ([`kernels::mlp_sublayer`]) when it can be: as [`fused_attention_sublayer`], and `act` is the
/// exact GELU. `None` when it cannot.
pub fn fused_mlp_sublayer(
    x: &Tensor,
    norm: kernels::NormParams<'_>,
    fc1: kernels::Projection<'_>,
    fc2: kernels::Projection<'_>,
    act: Activation,
    residual: bool,
) -> Result<Option<Tensor>> {
    if act != Activation::Gelu || !fits_fused_kernel(x, norm, &[fc1, fc2]) {
        return Ok(None);
    }
    kernels::mlp_sublayer(x, norm, fc1, fc2, residual).map(Some)
}

/// `x + (o + up(relu(down(o))))`, a branch output `o` through a bottleneck adapter and back onto
/// the stream `x`, as one fused node ([`kernels::bottleneck_residual`]) when it can be: CPU
/// f32/f64, every parameter of `x`'s dtype, fused sublayers not turned off. `None` when it
/// cannot: the caller then composes it from [`linear`], ReLU and two adds, the same numbers.
pub fn fused_bottleneck_residual(
    x: &Tensor,
    o: &Tensor,
    adapter: kernels::Bottleneck<'_>,
) -> Result<Option<Tensor>> {
    let others = [
        o,
        adapter.down_weight,
        adapter.down_bias,
        adapter.up_weight,
        adapter.up_bias,
    ];
    if !(kernels::fused_sublayers() && kernels::supports(x) && same_dtype(x, &others)) {
        return Ok(None);
    }
    kernels::bottleneck_residual(x, o, adapter).map(Some)
}

/// Whether a fused sublayer can run on `x` with these parameters: the kernels support `x`, every
/// parameter matches its dtype and device, a LoRA's base weight and bias are frozen (as
/// [`lora_linear`] needs to fuse), and fused sublayers are on.
fn fits_fused_kernel(
    x: &Tensor,
    norm: kernels::NormParams<'_>,
    projections: &[kernels::Projection<'_>],
) -> bool {
    let mut params = vec![norm.weight, norm.bias];
    for p in projections {
        params.push(p.weight);
        params.extend(p.bias);
        if let Some(lr) = p.low_rank {
            if p.weight.track_op() || p.bias.is_some_and(Tensor::track_op) {
                return false;
            }
            params.extend([lr.a, lr.b]);
        }
    }
    kernels::fused_sublayers() && kernels::supports(x) && same_dtype(x, &params)
}

fn same_dtype(x: &Tensor, others: &[&Tensor]) -> bool {
    others
        .iter()
        .all(|o| o.dtype() == x.dtype() && o.device().same_device(x.device()))
}

/// The same ops composed from candle primitives that implement backward: the path for CUDA and
/// half precision, and the reference the fused kernels are tested against.
pub mod composite {
    use candle_core::{Result, Tensor, D};

    use crate::ForwardCtx;

    pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed.broadcast_mul(weight)?.broadcast_add(bias)
    }

    /// The row maximum is subtracted for stability and detached: softmax is invariant to it, so
    /// its gradient is exactly zero and need not be traced.
    pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let exp = x.broadcast_sub(&max)?.exp()?;
        let sum = exp.sum_keepdim(D::Minus1)?;
        exp.broadcast_div(&sum)
    }

    /// `x` `[rows, in]` times the transposed `[out, in]` weight, plus the bias.
    pub fn linear_2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = x.matmul(&weight.t()?)?;
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
        x.gelu_erf()
    }

    pub fn attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        mask: Option<&Tensor>,
        dropout_p: f64,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (b, t, d) = q.dims3()?;
        let s = k.dim(1)?;
        if heads == 0 || d % heads != 0 {
            candle_core::bail!("attention: {heads} heads do not divide hidden size {d}");
        }
        let hd = d / heads;
        let split =
            |x: &Tensor, n: usize| x.reshape((b, n, heads, hd))?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (split(q, t)?, split(k, s)?, split(v, s)?);
        let mut scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(&m.reshape((b, 1, 1, s))?)?;
        }
        let probs = softmax_last_dim(&scores)?;
        let probs = ctx.dropout(&probs, dropout_p)?;
        probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))
    }
}

/// Activation functions by their Hugging Face `hidden_act` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU with erf (`"gelu"` in HF configs, `nn.GELU()` in PyTorch).
    Gelu,
    /// Tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Gelu if kernels::supports(x) => kernels::gelu_erf(x),
            Self::Gelu => composite::gelu_erf(x),
            Self::GeluTanh => x.gelu(),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Central finite differences of `f` w.r.t. every element of `var`, against autograd.
    fn check_grad(var: &Var, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        let loss = f(var.as_tensor())?;
        let grads = loss.backward()?;
        let analytic = grads
            .get(var)
            .expect("gradient reaches the input")
            .flatten_all()?;
        let analytic = analytic.to_vec1::<f64>()?;
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let shape = var.as_tensor().shape().clone();
        let h = 1e-6;
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let fp = f(&Tensor::from_vec(plus, &shape, &Device::Cpu)?)?.to_scalar::<f64>()?;
            let fm = f(&Tensor::from_vec(minus, &shape, &Device::Cpu)?)?.to_scalar::<f64>()?;
            let numeric = (fp - fm) / (2.0 * h);
            assert!(
                (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                "element {i}: finite difference {numeric} vs autograd {}",
                analytic[i]
            );
        }
        Ok(())
    }

    fn input() -> Result<Var> {
        let values: Vec<f64> = (0..24)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0)
            .collect();
        Var::from_vec(values, (2, 3, 4), &Device::Cpu)
    }

    fn weighted_sum(y: &Tensor) -> Result<Tensor> {
        // A non-symmetric reduction so that every output element matters differently.
        let n = y.elem_count();
        let w: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let w = Tensor::from_vec(w, y.shape(), y.device())?;
        (y * w)?.sum_all()
    }

    #[test]
    fn layer_norm_matches_definition_and_finite_differences() -> Result<()> {
        let x = input()?;
        let w = Tensor::new(&[1.0f64, 2.0, -1.0, 0.5], &Device::Cpu)?;
        let b = Tensor::new(&[0.1f64, 0.0, -0.2, 0.3], &Device::Cpu)?;
        // Reference: torch.nn.functional.layer_norm on row [0,1,2,3] with the weights above.
        let row = Tensor::new(&[[0.0f64, 1.0, 2.0, 3.0]], &Device::Cpu)?;
        let got = layer_norm(&row, &w, &b, 1e-5)?.to_vec2::<f64>()?;
        let expected = [-1.2416355, -0.8944245, -0.6472118, 0.9708177];
        for (g, e) in got[0].iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{g} vs {e}");
        }
        check_grad(&x, |t| weighted_sum(&layer_norm(t, &w, &b, 1e-5)?))
    }

    #[test]
    fn softmax_and_log_softmax_have_exact_gradients() -> Result<()> {
        let x = input()?;
        let sm = softmax_last_dim(x.as_tensor())?
            .sum(D::Minus1)?
            .flatten_all()?;
        for s in sm.to_vec1::<f64>()? {
            assert!((s - 1.0).abs() < 1e-12);
        }
        check_grad(&x, |t| weighted_sum(&softmax_last_dim(t)?))?;
        check_grad(&x, |t| weighted_sum(&log_softmax_last_dim(t)?))
    }

    #[test]
    fn activations_have_gradients() -> Result<()> {
        let x = input()?;
        for act in [Activation::Gelu, Activation::GeluTanh, Activation::Silu] {
            check_grad(&x, |t| weighted_sum(&act.apply(t)?))?;
        }
        Ok(())
    }

    #[test]
    fn linear_matches_matmul_for_every_rank() -> Result<()> {
        let w = Tensor::new(
            &[[1.0f32, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]],
            &Device::Cpu,
        )?;
        let b = Tensor::new(&[0.25f32, -0.5], &Device::Cpu)?;
        let x4 = Tensor::arange(0f32, 48.0, &Device::Cpu)?.reshape((2, 3, 2, 4))?;
        let y4 = linear(&x4, &w, Some(&b))?;
        let y2 = linear(&x4.reshape((12, 4))?, &w, Some(&b))?;
        assert_eq!(y4.dims(), &[2, 3, 2, 2]);
        assert_eq!(
            y4.flatten_all()?.to_vec1::<f32>()?,
            y2.flatten_all()?.to_vec1::<f32>()?
        );
        assert_eq!(y2.get(0)?.to_vec1::<f32>()?, vec![20.25, 4.5]);
        Ok(())
    }
}
