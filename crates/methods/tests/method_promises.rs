//! Every method's promises on a tiny ViT, in f64: trainable counts equal closed forms, the output
//! at initialisation equals the frozen model where the method promises it, gradients reach every
//! trainable parameter and equal finite differences, and a training step changes only the
//! method's parameters.

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Backbone, NoHooks, Vit, VitConfig};
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::PeftModel;
use serde_json::json;

const CLASSES: usize = 3;

fn tiny_config() -> VitConfig {
    // hidden 16, 2 blocks, 2 heads, MLP 32, 16x16 images in 8x8 patches: 5 tokens.
    VitConfig::new(16, 2, 2, 32, 16, 8)
}

fn tiny_backbone() -> Vit {
    let init = SeededInit::new(42, &Device::Cpu);
    let mut vit = Vit::random(tiny_config(), &init).unwrap();
    // Non-trivial norms and biases, so BitFit's and the norms' gradients are generic.
    vit.visit_params(&mut |name, t| {
        let noise = init.fork(name).normal(t.shape(), 0.1)?.as_tensor().detach();
        *t = (t.clone() + noise)?;
        Ok(())
    })
    .unwrap();
    vit.cast(DType::F64).unwrap();
    vit
}

fn model(method: &str, params: serde_json::Value) -> PeftModel {
    let init = SeededInit::new(7, &Device::Cpu).with_dtype(DType::F64);
    PeftModel::new(method, &params, Box::new(tiny_backbone()), CLASSES, &init).unwrap()
}

fn pixels() -> Tensor {
    SeededInit::new(3, &Device::Cpu)
        .with_dtype(DType::F64)
        .normal((2, 3, 16, 16), 1.0)
        .unwrap()
        .as_tensor()
        .detach()
}

/// A scalar that depends on every logit differently.
fn loss(m: &PeftModel, x: &Tensor) -> Tensor {
    let logits = m.logits(x, &ForwardCtx::eval()).unwrap();
    let w: Vec<f64> = (0..logits.elem_count())
        .map(|i| ((i as f64) * 0.71).sin() + 0.3)
        .collect();
    let w = Tensor::from_vec(w, logits.shape(), &Device::Cpu).unwrap();
    (logits * w).unwrap().sum_all().unwrap()
}

/// The key projection's bias adds `q·b` to every score of a query, which softmax cancels: its
/// gradient is exactly zero in any attention layer, so it is the one parameter exempt from
/// "receives a non-zero gradient" (its finite differences are still checked, and are zero).
fn gradient_is_provably_zero(name: &str) -> bool {
    name.ends_with("attention.attention.key.bias")
}

/// Moves every trainable parameter away from its initial value (LoRA's B and adapters' up
/// projections start at zero, which would zero their partners' gradients).
fn perturb(m: &PeftModel) {
    let init = SeededInit::new(99, &Device::Cpu).with_dtype(DType::F64);
    for p in m.trainable().iter() {
        let noise = init.fork(&p.name).normal(p.var.shape(), 0.2).unwrap();
        p.var
            .set(&(p.var.as_tensor() + noise.as_tensor()).unwrap())
            .unwrap();
    }
}

const ALL: &[(&str, fn() -> serde_json::Value)] = &[
    ("full", || json!({})),
    ("linear", || json!({})),
    ("bitfit", || json!({})),
    (
        "lora",
        || json!({"r": 2, "alpha": 4, "target_modules": ["query", "value", "fc2"]}),
    ),
    (
        "adapter",
        || json!({"placement": "houlsby", "bottleneck": 3}),
    ),
    (
        "adaptformer",
        || json!({"bottleneck": 3, "scale": 0.5, "dropout": 0.0}),
    ),
    ("vpt-shallow", || json!({"prompts": 2, "dropout": 0.0})),
    ("vpt-deep", || json!({"prompts": 2, "dropout": 0.0})),
];

#[test]
fn trainable_counts_equal_closed_forms() {
    let (d, f, l, c) = (16usize, 32usize, 2usize, CLASSES);
    let head = d * c + c;
    let backbone = {
        let per_layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d;
        d * 3 * 64 + d + d + 5 * d + l * per_layer + 2 * d
    };
    let biases = 3 * d + l * (4 * d + f + d + 2 * d) - 2 * d + 2 * d - d;
    let expected = [
        ("full", backbone),
        ("linear", 0),
        ("bitfit", biases),
        // query, value: d->d; fc2: f->d; each r*(in + out)
        ("lora", l * (2 * (2 * d + 2 * d) + 2 * (f + d))),
        ("adapter", l * 2 * (2 * d * 3 + 3 + d)),
        ("adaptformer", l * (2 * d * 3 + 3 + d)),
        ("vpt-shallow", 2 * d),
        ("vpt-deep", l * 2 * d),
    ];
    for ((name, params), (ename, count)) in ALL.iter().zip(expected) {
        assert_eq!(*name, ename);
        let m = model(name, params());
        assert_eq!(m.trainable_count(), count + head, "{name}: trainable");
        let added = if matches!(*name, "full" | "linear" | "bitfit") {
            0
        } else {
            count
        };
        assert_eq!(m.total_count(), backbone + added + head, "{name}: total");
    }
}

#[test]
fn bitfit_trains_exactly_the_biases() {
    let m = model("bitfit", json!({}));
    let names: Vec<_> = m.trainable().iter().map(|p| p.name.clone()).collect();
    assert!(names
        .iter()
        .filter(|n| !n.starts_with("classifier"))
        .all(|n| n.ends_with(".bias")));
    // patch embedding + per block (q, k, v, out, fc1, fc2, 2 norms) + final norm, + head
    assert_eq!(names.len(), 1 + 2 * 8 + 1 + 2);
}

#[test]
fn output_at_initialisation_equals_the_frozen_model_where_promised() {
    let x = pixels();
    let frozen = tiny_backbone()
        .forward_features(&x, &NoHooks, &ForwardCtx::eval())
        .unwrap();
    for (name, params) in ALL {
        let m = model(name, params());
        let got = m.features(&x, &ForwardCtx::eval()).unwrap();
        let diff = (got - &frozen)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        if name.starts_with("vpt") {
            // Prompts are attended to from the start: VPT promises no identity.
            assert!(diff > 1e-6, "{name} should change the output");
        } else {
            assert_eq!(diff, 0.0, "{name} changes the output at initialisation");
        }
    }
}

#[test]
fn every_trainable_parameter_gets_a_gradient_equal_to_finite_differences() {
    let x = pixels();
    for (name, params) in ALL {
        let m = model(name, params());
        perturb(&m);
        let grads = loss(&m, &x).backward().unwrap();
        for p in m.trainable().iter() {
            let g = grads
                .get(&p.var)
                .unwrap_or_else(|| panic!("{name}: no gradient for {}", p.name));
            let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
            let max = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            if gradient_is_provably_zero(&p.name) {
                assert!(
                    max < 1e-12,
                    "{name}: {} should have a zero gradient, got {max}",
                    p.name
                );
            } else {
                assert!(max > 1e-8, "{name}: zero gradient for {}", p.name);
            }
            // Check the largest entry and two fixed ones against central differences.
            let argmax = g.iter().position(|v| v.abs() == max).unwrap();
            let values: Vec<f64> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for i in [argmax, 0, values.len() / 2] {
                let h = 1e-5;
                let eval_at = |delta: f64| {
                    let mut v = values.clone();
                    v[i] += delta;
                    p.var
                        .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss(&m, &x).to_scalar::<f64>().unwrap()
                };
                let numeric = (eval_at(h) - eval_at(-h)) / (2.0 * h);
                eval_at(0.0);
                assert!(
                    (numeric - g[i]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "{name}: {}[{i}] autograd {} vs finite difference {numeric}",
                    p.name,
                    g[i]
                );
            }
        }
    }
}

#[test]
fn a_training_step_changes_only_the_methods_parameters() {
    let x = pixels();
    for (name, params) in ALL {
        let mut m = model(name, params());
        perturb(&m);
        let trainable: std::collections::BTreeSet<String> =
            m.trainable().iter().map(|p| p.name.clone()).collect();
        let snapshot = |m: &mut PeftModel| {
            let mut out = Vec::new();
            m.backbone_mut()
                .visit_params(&mut |n, t| {
                    out.push((n.to_string(), t.flatten_all()?.to_vec1::<f64>()?));
                    Ok(())
                })
                .unwrap();
            out.extend(m.trainable().iter().map(|p| {
                (
                    p.name.clone(),
                    p.var.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                )
            }));
            out
        };
        let before = snapshot(&mut m);
        let grads = loss(&m, &x).backward().unwrap();
        for p in m.trainable().iter() {
            let g = grads.get(&p.var).unwrap();
            p.var
                .set(&(p.var.as_tensor() - (g * 0.01).unwrap()).unwrap())
                .unwrap();
        }
        let after = snapshot(&mut m);
        for ((n, a), (_, b)) in before.iter().zip(&after) {
            if trainable.contains(n) && !gradient_is_provably_zero(n) {
                assert_ne!(a, b, "{name}: trainable {n} did not change");
            } else if !trainable.contains(n) {
                assert_eq!(a, b, "{name}: frozen {n} changed");
            }
        }
    }
}
