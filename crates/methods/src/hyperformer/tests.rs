//! Hyperformer on a tiny f64 ViT: generated weights equal the formula by hand, closed-form
//! parameter count, finite-difference gradients for every parameter, mixed batches, round trips.

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Backbone, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use serde_json::json;

use super::*;
use crate::per_task::tests::{ids, pixels, tiny_backbone};
use crate::PeftModel;

const CLASSES: usize = 3;

fn config() -> serde_json::Value {
    json!({
        "n_tasks": 2, "reduction_factor": 4, "task_embedding_dim": 3, "task_hidden_dim": 5,
        "projected_task_embedding_dim": 2, "layer_norm_before": true, "layer_norm_after": true,
    })
}

fn f64_init(seed: u64) -> SeededInit {
    SeededInit::new(seed, &Device::Cpu).with_dtype(DType::F64)
}

fn model(params: &serde_json::Value) -> PeftModel {
    PeftModel::new(
        "hyperformer",
        params,
        Box::new(tiny_backbone()),
        CLASSES,
        &f64_init(7),
    )
    .unwrap()
}

fn perturb(m: &PeftModel, std: f32) {
    perturb_vars(m.trainable(), std);
}

fn perturb_vars(vars: &NamedVars, std: f32) {
    for p in vars.iter() {
        let noise = f64_init(99)
            .fork(&p.name)
            .normal(p.var.shape(), std)
            .unwrap();
        p.var
            .set(&(p.var.as_tensor() + noise.as_tensor()).unwrap())
            .unwrap();
    }
}

fn values(m: &NamedVars, name: &str) -> (Vec<usize>, Vec<f64>) {
    let p = m
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name}"));
    (
        p.var.dims().to_vec(),
        p.var.flatten_all().unwrap().to_vec1().unwrap(),
    )
}

/// `W x + b` for row-major `W` `[out, in]`.
fn affine(m: &NamedVars, prefix: &str, x: &[f64]) -> Vec<f64> {
    let (dims, w) = values(m, &format!("{prefix}.weight"));
    let (_, b) = values(m, &format!("{prefix}.bias"));
    (0..dims[0])
        .map(|o| b[o] + (0..dims[1]).map(|i| w[o * dims[1] + i] * x[i]).sum::<f64>())
        .collect()
}

fn layer_norm(x: &[f64], w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) / (var + eps).sqrt() * w[i] + b[i])
        .collect()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < 1e-12, "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn generated_weights_equal_the_hypernetwork_formula_by_hand() {
    let backbone = tiny_backbone();
    let a = HyperformerAdaptation::new(
        parse_config("hyperformer", &config()).unwrap(),
        &backbone,
        &f64_init(7),
    )
    .unwrap();
    perturb_vars(a.trainable(), 0.3);
    let m = a.trainable();
    let (e, p) = (3usize, 2usize);
    for (task, layer, kind, pos) in [
        (1usize, 0usize, Sublayer::Attention, "self_attention"),
        (0, 1, Sublayer::Mlp, "feed_forward"),
    ] {
        let (_, te) = values(m, "hyperformer.task_embeddings");
        let (_, le) = values(m, "hyperformer.layer_id_embeddings");
        let mut joint = te[task * e..(task + 1) * e].to_vec();
        joint.extend_from_slice(&le[layer * e..(layer + 1) * e]);
        let hidden: Vec<f64> = affine(m, "hyperformer.task_hypernet.0", &joint)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let z = affine(m, "hyperformer.task_hypernet.2", &hidden);
        let (_, lw) = values(m, "hyperformer.layer_norm.weight");
        let (_, lb) = values(m, "hyperformer.layer_norm.bias");
        let z = layer_norm(&z, &lw, &lb, EMBEDDING_NORM_EPS);
        assert_eq!(z.len(), p);
        let g = a.generated(task, layer, kind).unwrap();
        let gen = |part: &str| affine(m, &format!("hyperformer.{pos}.{part}"), &z);
        assert_eq!(g.down_weight.dims(), [1, 4, 16]);
        assert_eq!(g.up_weight.dims(), [1, 16, 4]);
        close(
            &flat(&g.down_weight),
            &gen("down.weight_generator"),
            "down weight",
        );
        close(
            &flat(&g.down_bias),
            &gen("down.bias_generator"),
            "down bias",
        );
        close(
            &flat(&g.up_weight),
            &gen("up.weight_generator"),
            "up weight",
        );
        close(&flat(&g.up_bias), &gen("up.bias_generator"), "up bias");
        let (w, b) = g.pre_norm.as_ref().unwrap();
        close(
            &flat(w),
            &gen("pre_layernorm.weight_generator"),
            "pre-norm weight",
        );
        close(
            &flat(b),
            &gen("pre_layernorm.bias_generator"),
            "pre-norm bias",
        );
        let (w, b) = g.post_norm.as_ref().unwrap();
        close(
            &flat(w),
            &gen("post_layernorm.weight_generator"),
            "post-norm weight",
        );
        close(
            &flat(b),
            &gen("post_layernorm.bias_generator"),
            "post-norm bias",
        );

        // The sublayer hook computes y + LN_post(up(act(down(LN_pre(y))))) with them, by hand
        // on one token.
        let y = f64_init(4)
            .normal((1, 1, 16), 1.0)
            .unwrap()
            .as_tensor()
            .detach();
        let ctx = ForwardCtx::eval().with_task_ids(Some(ids(&[task as u32])));
        let out = flat(&a.sublayer(layer, kind, &y, y.clone(), &ctx).unwrap());
        let yv = flat(&y);
        let x = layer_norm(
            &yv,
            &gen("pre_layernorm.weight_generator"),
            &gen("pre_layernorm.bias_generator"),
            ADAPTER_NORM_EPS,
        );
        let (dw, db) = (gen("down.weight_generator"), gen("down.bias_generator"));
        let h: Vec<f64> = (0..4)
            .map(|o| db[o] + (0..16).map(|i| dw[o * 16 + i] * x[i]).sum::<f64>())
            .map(|v| {
                0.5 * v
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
            })
            .collect();
        let (uw, ub) = (gen("up.weight_generator"), gen("up.bias_generator"));
        let u: Vec<f64> = (0..16)
            .map(|o| ub[o] + (0..4).map(|i| uw[o * 4 + i] * h[i]).sum::<f64>())
            .collect();
        let u = layer_norm(
            &u,
            &gen("post_layernorm.weight_generator"),
            &gen("post_layernorm.bias_generator"),
            ADAPTER_NORM_EPS,
        );
        let expected: Vec<f64> = yv.iter().zip(&u).map(|(a, b)| a + b).collect();
        for (i, (x, y)) in out.iter().zip(&expected).enumerate() {
            assert!((x - y).abs() < 1e-9, "adapter output [{i}]: {x} vs {y}");
        }
    }
}

#[test]
fn parameter_count_equals_the_closed_form() {
    let (hidden, layers) = (16usize, 2usize);
    for (params, (n, e, h, p, r, norms)) in [
        (config(), (2usize, 3usize, 5usize, 2usize, 4usize, 2usize)),
        (json!({"n_tasks": 3}), (3, 512, 128, 8, 8, 0)),
    ] {
        let m = model(&params);
        let d = hidden / r;
        let expected = n * e + layers * e          // task and layer-id embeddings
            + (2 * e * h + h) + (h * p + p)        // task projector
            + 2 * p                                // embedding layer norm
            // per position (attention, MLP): down and up weight and bias generators
            + 2 * (p + 1) * (d * hidden + d + hidden * d + hidden)
            // per position and enabled generated norm: weight and bias generators
            + 2 * norms * 2 * (p + 1) * hidden;
        assert_eq!(m.adaptation().added_params(), expected, "{params}");
        assert_eq!(m.trainable_count(), expected + hidden * CLASSES + CLASSES);
    }
}

#[test]
fn starts_near_identity() {
    // With the defaults' widths on a 16-wide model: generated weights are about 0.01 sqrt(P) in
    // size and the biases zero, so each adapter changes its sublayer's output by well under 5%.
    let backbone = tiny_backbone();
    let a = HyperformerAdaptation::new(
        parse_config("hyperformer", &json!({"reduction_factor": 4})).unwrap(),
        &backbone,
        &f64_init(7),
    )
    .unwrap();
    let y = f64_init(4)
        .normal((2, 5, 16), 1.0)
        .unwrap()
        .as_tensor()
        .detach();
    for layer in 0..2 {
        for kind in [Sublayer::Attention, Sublayer::Mlp] {
            let out = a
                .sublayer(layer, kind, &y, y.clone(), &ForwardCtx::eval())
                .unwrap();
            let change = flat(&(&out - &y).unwrap())
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt();
            let size = flat(&y).iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(
                change > 0.0 && change < 0.05 * size,
                "layer {layer}: {change} of {size}"
            );
        }
    }
}

/// A scalar depending on every logit differently.
fn loss(m: &PeftModel, x: &Tensor, tasks: &[u32]) -> Tensor {
    let ctx = ForwardCtx::eval().with_task_ids(Some(ids(tasks)));
    let logits = m.logits(x, &ctx).unwrap();
    let w: Vec<f64> = (0..logits.elem_count())
        .map(|i| ((i as f64) * 0.71).sin() + 0.3)
        .collect();
    let w = Tensor::from_vec(w, logits.shape(), &Device::Cpu).unwrap();
    (logits * w).unwrap().sum_all().unwrap()
}

#[test]
fn every_parameter_gets_a_gradient_equal_to_finite_differences() {
    let x = pixels(3, 5);
    // A mixed batch (the per-row path) and a one-task batch (the shared path).
    for tasks in [[1u32, 0, 1], [1, 1, 1]] {
        let m = model(&config());
        perturb(&m, 0.3);
        let grads = loss(&m, &x, &tasks).backward().unwrap();
        let mut names = Vec::new();
        for p in m
            .trainable()
            .iter()
            .filter(|p| p.name.starts_with("hyperformer."))
        {
            names.push(p.name.clone());
            let g = flat(
                grads
                    .get(&p.var)
                    .unwrap_or_else(|| panic!("no gradient for {}", p.name)),
            );
            let max = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(max > 1e-9, "{tasks:?}: zero gradient for {}", p.name);
            let argmax = g.iter().position(|v| v.abs() == max).unwrap();
            let values = flat(p.var.as_tensor());
            for i in [argmax, 0, values.len() / 2, values.len() - 1] {
                let h = 1e-5;
                let eval_at = |delta: f64| {
                    let mut v = values.clone();
                    v[i] += delta;
                    p.var
                        .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss(&m, &x, &tasks).to_scalar::<f64>().unwrap()
                };
                let numeric = (eval_at(h) - eval_at(-h)) / (2.0 * h);
                eval_at(0.0);
                assert!(
                    (numeric - g[i]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "{tasks:?}: {}[{i}] autograd {} vs finite difference {numeric}",
                    p.name,
                    g[i]
                );
            }
        }
        // Task embeddings, layer embeddings, projector, embedding norm and every generator.
        assert_eq!(names.len(), 2 + 4 + 2 + 2 * 16, "{names:?}");
    }
}

#[test]
fn mixed_batches_give_each_example_its_tasks_output() {
    let m = model(&config());
    perturb(&m, 0.3);
    let x = pixels(4, 9);
    let tasks = [1u32, 0, 0, 1];
    let mixed = m
        .logits(&x, &ForwardCtx::eval().with_task_ids(Some(ids(&tasks))))
        .unwrap();
    for (i, &t) in tasks.iter().enumerate() {
        let alone = m
            .logits(
                &x.narrow(0, i, 1).unwrap(),
                &ForwardCtx::eval().with_task_ids(Some(ids(&[t]))),
            )
            .unwrap();
        close(&flat(&mixed.narrow(0, i, 1).unwrap()), &flat(&alone), "row");
    }
    // Tasks differ, and no task ids means task 0.
    let other = m
        .logits(
            &x,
            &ForwardCtx::eval().with_task_ids(Some(ids(&[0, 1, 1, 0]))),
        )
        .unwrap();
    assert!(flat(&(&other - &mixed).unwrap().abs().unwrap())
        .iter()
        .any(|v| *v > 1e-6));
    let plain = m
        .logits(&x.narrow(0, 1, 2).unwrap(), &ForwardCtx::eval())
        .unwrap();
    close(
        &flat(&plain),
        &flat(&mixed.narrow(0, 1, 2).unwrap()),
        "task 0",
    );
}

#[test]
fn save_and_from_adapter_round_trip() {
    let m = model(&config());
    perturb(&m, 0.3);
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), "tiny").unwrap();
    let loaded = PeftModel::from_adapter(dir.path(), Box::new(tiny_backbone())).unwrap();
    assert_eq!(loaded.method(), "hyperformer");
    let x = pixels(3, 2);
    let ctx = || ForwardCtx::eval().with_task_ids(Some(ids(&[1, 0, 1])));
    let a = flat(&m.logits(&x, &ctx()).unwrap());
    let b = flat(&loaded.logits(&x, &ctx()).unwrap());
    assert_eq!(a, b);
}

#[test]
fn defaults_validate_and_bad_values_name_the_field() {
    Hyperformer.validate(&json!({})).unwrap();
    assert!(Hyperformer
        .validate(&json!({"n_tasks": 0}))
        .unwrap_err()
        .contains("n_tasks"));
    assert!(Hyperformer.validate(&json!({"rank": 2})).is_err());
    let info = tiny_backbone().info().clone();
    let err = Hyperformer
        .check_backbone(&json!({"reduction_factor": 32}), &info)
        .unwrap_err();
    assert!(err.contains("reduction_factor"), "{err}");
}
