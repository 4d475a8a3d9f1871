//! One Poly layer against its definition: LoRA with one skill, normalised routing, task ids
//! reaching the router; and the configuration's checks.

use candle_core::{DType, Device, Result, Tensor};
use peftbench_backbones::{BackboneInfo, Linear};
use peftbench_core::{ForwardCtx, SeededInit};

use super::layer::{PolyLayer, EPS};
use super::{PolyConfig, MHR, POLY};
use crate::lora::LoraLayer;
use crate::Method;

const IN: usize = 8;
const OUT: usize = 6;

fn base(dtype: DType) -> Linear {
    let mut init = SeededInit::new(1, &Device::Cpu).with_dtype(dtype);
    Linear {
        weight: init.normal((OUT, IN), 0.5).unwrap().as_tensor().detach(),
        bias: Some(init.normal(OUT, 0.5).unwrap().as_tensor().detach()),
    }
}

/// `[3 examples, 4 tokens, IN]`.
fn input(dtype: DType) -> Tensor {
    SeededInit::new(2, &Device::Cpu)
        .with_dtype(dtype)
        .normal((3, 4, IN), 1.0)
        .unwrap()
        .as_tensor()
        .detach()
}

/// A layer with non-zero B and routing logits spread over a few units.
fn layer(tasks: usize, skills: usize, splits: usize, dtype: DType) -> PolyLayer {
    let init = SeededInit::new(5, &Device::Cpu).with_dtype(dtype);
    let l = PolyLayer::new(IN, OUT, 2, tasks, skills, splits, false, &init).unwrap();
    let logits = l.logits().unwrap();
    let spread = init.fork("spread").normal(logits.shape(), 2.0).unwrap();
    logits.set(spread.as_tensor()).unwrap();
    l
}

fn ids(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// With one skill and one split the routing weight is `s / (s + 1e-12)`, `s` the sigmoid: exactly
/// 1 in f32 (1e-12 is far below half an ulp of any `s` above ~1e-5), `1 - O(1e-12)` in f64. The
/// layer then equals LoRA with `A = poly_lora_A^T`, `B = poly_lora_B^T` and scaling `1 / r`.
#[test]
fn one_skill_equals_lora_with_the_same_factors() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        let poly = layer(2, 1, 1, dtype);
        for ctx in [
            ForwardCtx::eval(),
            ForwardCtx::eval().with_task_ids(Some(ids(&[1, 0, 1]))),
            ForwardCtx::train(3, 0.0),
        ] {
            let w = poly.routing_weights(3, &ctx)?.to_dtype(DType::F64)?;
            let gap = (1.0 - w.flatten_all()?.min(0)?.to_scalar::<f64>()?).abs();
            match dtype {
                DType::F32 => assert_eq!(gap, 0.0, "f32 weight is exactly 1"),
                _ => assert!(gap < 1e-11, "f64 weight 1 - {gap}"),
            }
        }
        let lora = LoraLayer {
            a: candle_core::Var::from_tensor(&poly.a.as_tensor().reshape((IN, 2))?.t()?)?,
            b: candle_core::Var::from_tensor(&poly.b.as_tensor().reshape((2, OUT))?.t()?)?,
            scaling: 0.5,
            dropout: 0.0,
        };
        let (x, base) = (input(dtype), base(dtype));
        let ctx = ForwardCtx::eval().with_task_ids(Some(ids(&[1, 0, 1])));
        let want = lora.forward(&x, &base, &ctx)?;
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        for ctx in [ForwardCtx::eval(), ctx] {
            let d = max_diff(&poly.forward(&x, &base, &ctx)?, &want);
            assert!(d < tol, "{dtype:?}: max |poly - lora| = {d}");
        }
    }
    Ok(())
}

/// Each split's weights sum to 1 (up to the EPS in the denominator) over its skills, in
/// evaluation (sigmoid) and in every training sample (relaxed Bernoulli), and lie in [0, 1].
#[test]
fn routing_weights_are_normalised_per_split() -> Result<()> {
    let poly = layer(3, 4, 2, DType::F32);
    let task_ids = ids(&[0, 2, 1]);
    let mut samples = Vec::new();
    for seed in 0..20 {
        samples.push(ForwardCtx::train(seed, 0.0).with_task_ids(Some(task_ids.clone())));
    }
    samples.push(ForwardCtx::eval().with_task_ids(Some(task_ids.clone())));
    samples.push(ForwardCtx::eval());
    for ctx in &samples {
        let w = poly.routing_weights(3, ctx)?;
        assert_eq!(w.dims()[1..], [2, 4]);
        let sums: Vec<f32> = w.sum(2)?.flatten_all()?.to_vec1()?;
        for s in sums {
            assert!((s - 1.0).abs() < 1e-6, "split sum {s}");
        }
        let all: Vec<f32> = w.flatten_all()?.to_vec1()?;
        assert!(all.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    // Training samples differ from one another and from the evaluation weights: noise reaches them.
    let a = poly.routing_weights(3, &samples[0])?;
    let b = poly.routing_weights(3, &samples[1])?;
    assert!(max_diff(&a, &b) > 1e-3);
    // Evaluation is sigmoid(logits) / (sum + EPS), computed here by hand for task 2.
    let eval = poly.routing_weights(3, &samples[20])?;
    let row: Vec<f64> = poly
        .logits()
        .unwrap()
        .as_tensor()
        .get(2)?
        .to_dtype(DType::F64)?
        .to_vec1()?;
    let sig: Vec<f64> = row.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
    let got: Vec<f32> = eval.get(1)?.flatten_all()?.to_vec1()?;
    for split in 0..2 {
        let z = &sig[split * 4..split * 4 + 4];
        let total: f64 = z.iter().sum::<f64>() + EPS;
        for k in 0..4 {
            let want = z[k] / total;
            assert!((f64::from(got[split * 4 + k]) - want).abs() < 1e-6);
        }
    }
    Ok(())
}

/// Different tasks route differently, and a batch mixing tasks equals running each task's
/// examples alone (the routing is per example, nothing mixes across the batch).
#[test]
fn task_ids_reach_the_routing() -> Result<()> {
    for splits in [1, 2] {
        let poly = layer(3, 4, splits, DType::F64);
        let (x, base) = (input(DType::F64), base(DType::F64));
        let run = |x: &Tensor, t: &[u32]| {
            poly.forward(x, &base, &ForwardCtx::eval().with_task_ids(Some(ids(t))))
        };
        let mixed = run(&x, &[2, 0, 1])?;
        for (i, t) in [2u32, 0, 1].into_iter().enumerate() {
            let alone = run(&x.narrow(0, i, 1)?, &[t])?;
            assert!(max_diff(&mixed.narrow(0, i, 1)?, &alone) < 1e-12);
        }
        let same_input = Tensor::cat(&[x.narrow(0, 0, 1)?, x.narrow(0, 0, 1)?], 0)?;
        let two = run(&same_input, &[0, 1])?;
        let d = max_diff(&two.narrow(0, 0, 1)?, &two.narrow(0, 1, 1)?);
        assert!(d > 1e-3, "tasks 0 and 1 give the same output ({d})");
        // No task ids: every example is task 0.
        let none = poly.forward(&x, &base, &ForwardCtx::eval())?;
        assert!(max_diff(&none, &run(&x, &[0, 0, 0])?) < 1e-12);
        // A task the adapter does not have is an error naming `n_tasks`.
        let err = run(&x, &[0, 3, 1]).unwrap_err().to_string();
        assert!(err.contains("n_tasks"), "{err}");
    }
    Ok(())
}

/// PEFT's initialisation: B zero, so the layer starts as the frozen projection.
#[test]
fn initialisation_is_the_identity() -> Result<()> {
    let init = SeededInit::new(5, &Device::Cpu).with_dtype(DType::F64);
    let poly = PolyLayer::new(IN, OUT, 2, 3, 4, 2, true, &init)?;
    let (x, base) = (input(DType::F64), base(DType::F64));
    let ctx = ForwardCtx::train(1, 0.0).with_task_ids(Some(ids(&[0, 1, 2])));
    assert_eq!(
        max_diff(&poly.forward(&x, &base, &ctx)?, &base.forward(&x)?),
        0.0
    );
    let logits = poly
        .logits()
        .unwrap()
        .as_tensor()
        .abs()?
        .max_keepdim(1)?
        .max(0)?;
    assert!(logits.to_vec1::<f64>()?[0] <= 1e-3);
    Ok(())
}

/// A ViT's widths: query/value 16 -> 16, fc1 16 -> 24.
fn info() -> BackboneInfo {
    use peftbench_backbones::{Backbone, Vit, VitConfig};
    let init = SeededInit::new(0, &Device::Cpu);
    let vit = Vit::random(VitConfig::new(16, 1, 2, 24, 16, 8), &init).unwrap();
    vit.info().clone()
}

#[test]
fn defaults_are_valid_and_errors_name_fields() {
    for m in [&POLY, &MHR] {
        m.validate(&serde_json::json!({})).unwrap();
        m.check_backbone(&serde_json::json!({}), &info()).unwrap();
    }
    assert_eq!(
        PolyConfig::parse("mhr", &serde_json::json!({}))
            .unwrap()
            .n_splits,
        8
    );
    assert_eq!(
        PolyConfig::parse("poly", &serde_json::json!({}))
            .unwrap()
            .n_splits,
        1
    );
    let err = |m: &dyn Method, p: serde_json::Value| m.validate(&p).unwrap_err();
    assert!(err(&MHR, serde_json::json!({"n_splits": 1})).contains("`n_splits`"));
    assert!(err(&POLY, serde_json::json!({"n_skills": 0})).contains("`n_skills`"));
    assert!(err(&POLY, serde_json::json!({"poly_type": "mlp"})).contains("`poly_type`"));
    assert!(err(&POLY, serde_json::json!({"n_task": 2})).contains("n_task"));
    assert!(err(&POLY, serde_json::json!({"router_lr_multiplier": 0})).contains("router_lr"));
    let widths = |m: &dyn Method, p: serde_json::Value| m.check_backbone(&p, &info()).unwrap_err();
    let e = widths(&MHR, serde_json::json!({"n_splits": 5}));
    assert!(e.contains("`n_splits`") && e.contains("query"), "{e}");
    let e = widths(
        &MHR,
        serde_json::json!({"n_splits": 16, "target_modules": ["fc1"]}),
    );
    assert!(e.contains("output width of `fc1` is 24"), "{e}");
    let e = widths(&POLY, serde_json::json!({"r": 17}));
    assert!(e.contains("`r`"), "{e}");
}
