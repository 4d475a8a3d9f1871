//! The fused CPU kernels against the composite ops (forward and every gradient, f32) and against
//! central finite differences (f64), including the cases PEFT relies on: frozen inputs get no
//! gradient at all, and gradients still reach everything that is trainable.

use candle_core::{DType, Device, Result, Tensor, Var};
use peftbench_core::ops::composite;
use peftbench_core::{kernels, ForwardCtx};

fn values(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 + seed) * 0.731).sin() * 1.3)
        .collect()
}

fn var(shape: &[usize], seed: f64, dtype: DType) -> Result<Var> {
    let n = shape.iter().product();
    Var::from_tensor(&Tensor::from_vec(values(n, seed), shape, &Device::Cpu)?.to_dtype(dtype)?)
}

/// A reduction that weighs every output element differently.
fn weighted_sum(y: &Tensor) -> Result<Tensor> {
    let w = Tensor::from_vec(values(y.elem_count(), 0.37), y.shape(), y.device())?
        .to_dtype(y.dtype())?;
    (y * w)?.sum_all()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

/// Forward outputs and the gradients of every var agree between `fused` and `reference`.
fn agree(
    vars: &[&Var],
    fused: impl Fn() -> Result<Tensor>,
    reference: impl Fn() -> Result<Tensor>,
    tol: f64,
) -> Result<()> {
    let (yf, yr) = (fused()?, reference()?);
    assert_eq!(yf.dims(), yr.dims());
    let d = max_abs_diff(&yf, &yr)?;
    assert!(d < tol, "forward differs by {d}");
    let (gf, gr) = (
        weighted_sum(&yf)?.backward()?,
        weighted_sum(&yr)?.backward()?,
    );
    for (i, v) in vars.iter().enumerate() {
        let a = gf.get(v).expect("fused gradient");
        let b = gr.get(v).expect("reference gradient");
        let d = max_abs_diff(a, b)?;
        assert!(d < tol, "gradient of input {i} differs by {d}");
    }
    Ok(())
}

/// Central differences of `f` w.r.t. every element of `v` (f64) against autograd.
fn finite_differences(v: &Var, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
    let loss = weighted_sum(&f(v.as_tensor())?)?;
    let grads = loss.backward()?;
    let analytic = grads
        .get(v)
        .expect("gradient")
        .flatten_all()?
        .to_vec1::<f64>()?;
    let base = v.as_tensor().flatten_all()?.to_vec1::<f64>()?;
    let shape = v.as_tensor().shape().clone();
    let h = 1e-6;
    for i in 0..base.len() {
        let eval = |delta: f64| -> Result<f64> {
            let mut x = base.clone();
            x[i] += delta;
            weighted_sum(&f(&Tensor::from_vec(x, &shape, &Device::Cpu)?)?)?.to_scalar::<f64>()
        };
        let numeric = (eval(h)? - eval(-h)?) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "element {i}: finite difference {numeric} vs analytic {}",
            analytic[i]
        );
    }
    Ok(())
}

#[test]
fn linear_matches_composite_and_skips_frozen_weights() -> Result<()> {
    let x = var(&[37, 24], 0.0, DType::F32)?;
    let w = var(&[19, 24], 1.0, DType::F32)?;
    let b = var(&[19], 2.0, DType::F32)?;
    agree(
        &[&x, &w, &b],
        || kernels::linear(&x, &w, Some(&b)),
        || composite::linear_2d(&x, &w, Some(&b)),
        1e-4,
    )?;
    agree(
        &[&x, &w],
        || kernels::linear(&x, &w, None),
        || composite::linear_2d(&x, &w, None),
        1e-4,
    )?;
    // A frozen weight and bias (plain tensors): only the input gets a gradient.
    let (wt, bt) = (w.as_tensor().detach(), b.as_tensor().detach());
    let grads = weighted_sum(&kernels::linear(&x, &wt, Some(&bt))?)?.backward()?;
    assert!(grads.get(&x).is_some());
    assert!(grads.get(&wt).is_none() && grads.get(&bt).is_none());
    // Frozen input, trainable weight (the first layer of full fine-tuning).
    let xt = x.as_tensor().detach();
    let grads = weighted_sum(&kernels::linear(&xt, &w, Some(&b))?)?.backward()?;
    assert!(grads.get(&xt).is_none() && grads.get(&w).is_some() && grads.get(&b).is_some());
    Ok(())
}

#[test]
fn linear_gradients_match_finite_differences() -> Result<()> {
    let x = var(&[5, 4], 0.0, DType::F64)?;
    let w = var(&[3, 4], 1.0, DType::F64)?;
    let b = var(&[3], 2.0, DType::F64)?;
    finite_differences(&x, |x| kernels::linear(x, &w, Some(&b)))?;
    finite_differences(&w, |w| kernels::linear(&x, w, Some(&b)))?;
    finite_differences(&b, |b| kernels::linear(&x, &w, Some(b)))
}

/// The LoRA branch as composed ops, the path the fused kernel replaces.
fn lora_composite(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    s: f64,
) -> Result<Tensor> {
    let delta = composite::linear_2d(&composite::linear_2d(x, a, None)?, b, None)?;
    composite::linear_2d(x, w, bias)? + (delta * s)?
}

#[test]
fn lora_linear_matches_composite_and_finite_differences() -> Result<()> {
    let x = var(&[37, 24], 0.0, DType::F32)?;
    let w = var(&[19, 24], 1.0, DType::F32)?.as_tensor().detach();
    let bias = var(&[19], 2.0, DType::F32)?.as_tensor().detach();
    let a = var(&[4, 24], 3.0, DType::F32)?;
    let b = var(&[19, 4], 4.0, DType::F32)?;
    agree(
        &[&x, &a, &b],
        || kernels::lora_linear(&x, &w, Some(&bias), &a, &b, 0.75),
        || lora_composite(&x, &w, Some(&bias), &a, &b, 0.75),
        // B's gradient sums 37 rows of products of sums: entries near 1e3, so 1e-3 is f32 rounding.
        1e-3,
    )?;
    agree(
        &[&x, &a, &b],
        || kernels::lora_linear(&x, &w, None, &a, &b, 2.0),
        || lora_composite(&x, &w, None, &a, &b, 2.0),
        1e-2,
    )?;
    // Identity at initialisation: with B = 0 the output is the frozen projection, bit for bit.
    let zero_b = b.as_tensor().zeros_like()?;
    let y = kernels::lora_linear(&x, &w, Some(&bias), &a, &zero_b, 0.75)?;
    let base = kernels::linear(&x, &w, Some(&bias))?;
    assert_eq!(
        y.flatten_all()?.to_vec1::<f32>()?,
        base.flatten_all()?.to_vec1::<f32>()?
    );
    // A trainable base weight is refused rather than silently left without a gradient.
    let trained = var(&[19, 24], 1.0, DType::F32)?;
    assert!(kernels::lora_linear(&x, &trained, None, &a, &b, 1.0).is_err());
    // f64 finite differences for every trainable input.
    let x = var(&[5, 4], 0.0, DType::F64)?;
    let w = var(&[3, 4], 1.0, DType::F64)?.as_tensor().detach();
    let bias = var(&[3], 2.0, DType::F64)?.as_tensor().detach();
    let a = var(&[2, 4], 3.0, DType::F64)?;
    let b = var(&[3, 2], 4.0, DType::F64)?;
    finite_differences(&x, |x| {
        kernels::lora_linear(x, &w, Some(&bias), &a, &b, 0.5)
    })?;
    finite_differences(&a, |a| {
        kernels::lora_linear(&x, &w, Some(&bias), a, &b, 0.5)
    })?;
    finite_differences(&b, |b| {
        kernels::lora_linear(&x, &w, Some(&bias), &a, b, 0.5)
    })
}

#[test]
fn layer_norm_matches_composite_and_finite_differences() -> Result<()> {
    let x = var(&[70, 48], 0.0, DType::F32)?;
    let w = var(&[48], 1.0, DType::F32)?;
    let b = var(&[48], 2.0, DType::F32)?;
    agree(
        &[&x, &w, &b],
        || kernels::layer_norm(&x, &w, &b, 1e-6),
        || composite::layer_norm(&x, &w, &b, 1e-6),
        1e-4,
    )?;
    let x = var(&[3, 5], 0.0, DType::F64)?;
    let w = var(&[5], 1.0, DType::F64)?;
    let b = var(&[5], 2.0, DType::F64)?;
    finite_differences(&x, |x| kernels::layer_norm(x, &w, &b, 1e-5))?;
    finite_differences(&w, |w| kernels::layer_norm(&x, w, &b, 1e-5))?;
    finite_differences(&b, |b| kernels::layer_norm(&x, &w, b, 1e-5))
}

#[test]
fn gelu_matches_composite_and_finite_differences() -> Result<()> {
    let x = Var::from_tensor(&(var(&[3000], 0.0, DType::F32)?.as_tensor() * 4.0)?)?;
    agree(
        &[&x],
        || kernels::gelu_erf(&x),
        || composite::gelu_erf(&x),
        2e-6,
    )?;
    let x = var(&[2, 7], 0.0, DType::F64)?;
    finite_differences(&x, kernels::gelu_erf)
}

#[test]
fn attention_matches_composite_with_prefixes_and_masks() -> Result<()> {
    let ctx = ForwardCtx::eval();
    // 3 heads of 4; 5 queries attend over 7 keys (2 prefix tokens, as prefix tuning adds).
    let q = var(&[2, 5, 12], 0.0, DType::F32)?;
    let k = var(&[2, 7, 12], 1.0, DType::F32)?;
    let v = var(&[2, 7, 12], 2.0, DType::F32)?;
    agree(
        &[&q, &k, &v],
        || kernels::attention(&q, &k, &v, 3, None),
        || composite::attention(&q, &k, &v, 3, None, 0.0, &ctx),
        1e-5,
    )?;
    // Padding mask: the second example ignores its last three keys.
    let mask: Vec<f32> = (0..14).map(|i| if i >= 11 { -1e9 } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, (2, 7), &Device::Cpu)?;
    agree(
        &[&q, &k, &v],
        || kernels::attention(&q, &k, &v, 3, Some(&mask)),
        || composite::attention(&q, &k, &v, 3, Some(&mask), 0.0, &ctx),
        1e-5,
    )?;
    // Frozen keys and values: no gradient is made for them.
    let (kt, vt) = (k.as_tensor().detach(), v.as_tensor().detach());
    let grads = weighted_sum(&kernels::attention(&q, &kt, &vt, 3, None)?)?.backward()?;
    assert!(grads.get(&q).is_some() && grads.get(&kt).is_none() && grads.get(&vt).is_none());
    Ok(())
}

#[test]
fn attention_gradients_match_finite_differences() -> Result<()> {
    let q = var(&[2, 3, 4], 0.0, DType::F64)?;
    let k = var(&[2, 4, 4], 1.0, DType::F64)?;
    let v = var(&[2, 4, 4], 2.0, DType::F64)?;
    finite_differences(&q, |q| kernels::attention(q, &k, &v, 2, None))?;
    finite_differences(&k, |k| kernels::attention(&q, k, &v, 2, None))?;
    finite_differences(&v, |v| kernels::attention(&q, &k, v, 2, None))
}

/// The weight and bias gradients sum partial results over row blocks. Under a pool with more
/// threads than blocks are split at first, rayon steals work in a different pattern every time;
/// the sums must still be bit-for-bit the same, or two runs of one seed drift apart.
#[test]
fn parameter_gradients_do_not_depend_on_scheduling() -> Result<()> {
    let x = var(&[4099, 32], 0.0, DType::F32)?;
    let w = var(&[32], 1.0, DType::F32)?;
    let b = var(&[32], 2.0, DType::F32)?;
    let wl = var(&[16, 32], 3.0, DType::F32)?;
    let bl = var(&[16], 4.0, DType::F32)?;
    let gradients = || -> Result<Vec<Vec<f32>>> {
        let xt = x.as_tensor().detach();
        let y = kernels::layer_norm(&xt, &w, &b, 1e-6)?;
        let grads = weighted_sum(&kernels::linear(&y, &wl, Some(&bl))?)?.backward()?;
        [&w, &b, &wl, &bl]
            .iter()
            .map(|v| grads.get(v).expect("gradient").flatten_all()?.to_vec1())
            .collect()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(8)
        .build()
        .expect("thread pool");
    let first = pool.install(gradients)?;
    for _ in 0..20 {
        let again = pool.install(gradients)?;
        for (a, b) in first.iter().zip(&again) {
            let (a, b): (Vec<u32>, Vec<u32>) = (
                a.iter().map(|v| v.to_bits()).collect(),
                b.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(a, b, "a parameter gradient changed between identical runs");
        }
    }
    // And with a different thread count.
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool")
        .install(gradients)?;
    assert_eq!(first, single);
    Ok(())
}
