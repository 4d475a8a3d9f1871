//! SHiRA: exact sparsity, masks, identity at init, merge, gradients, PEFT format, training.

mod common;

use candle_core::DType;
use common::*;
use peftbench_backbones::{Backbone, LinearSite, NoHooks};
use peftbench_core::ForwardCtx;
use peftbench_methods::shira::to_f64_vec;
use peftbench_methods::{peft_format, PeftModel};
use peftbench_train::Batch;
use serde_json::json;

fn weights(m: &mut PeftModel, site: LinearSite) -> Vec<f64> {
    to_f64_vec(&m.backbone().linear(0, site).weight).unwrap()
}

/// The adapted weights with the update merged, read back through `merge_into`.
fn merged(m: &PeftModel, mask: &str) -> Vec<(String, Vec<f64>, Vec<f64>)> {
    let mut vit = tiny_backbone(DType::F64);
    let init = peftbench_core::SeededInit::new(7, &candle_core::Device::Cpu).with_dtype(DType::F64);
    let shira = peftbench_methods::shira::ShiraAdaptation::new(
        peftbench_methods::shira::ShiraConfig {
            sparsity: 0.1,
            mask: serde_json::from_value(json!(mask)).unwrap(),
            ..Default::default()
        },
        &vit,
        &init.fork("shira"),
    )
    .unwrap();
    for ((_, a), b) in shira.deltas().zip(m.trainable().iter()) {
        a.values.set(b.var.as_tensor()).unwrap();
    }
    let before: Vec<(String, Vec<f64>)> = LinearSite::ALL
        .iter()
        .map(|&s| {
            (
                vit.module_path(1, s),
                to_f64_vec(&vit.linear(1, s).weight).unwrap(),
            )
        })
        .collect();
    shira.merge_into(&mut vit).unwrap();
    before
        .into_iter()
        .zip(LinearSite::ALL)
        .map(|((path, b), s)| (path, b, to_f64_vec(&vit.linear(1, s).weight).unwrap()))
        .collect()
}

#[test]
fn trainable_count_equals_the_closed_form() {
    let head = D * CLASSES + CLASSES;
    // sparsity 0.1: round(0.1 * 256) = 26 for the four d x d projections, round(51.2) = 51 for fc1/fc2.
    let m = model("shira", json!({"sparsity": 0.1}));
    assert_eq!(m.trainable_count(), L * (4 * 26 + 2 * 51) + head);
    // PEFT's budget: r (in + out) per projection.
    let m = model("shira", json!({"r": 1}));
    assert_eq!(m.trainable_count(), L * (4 * 2 * D + 2 * (D + F)) + head);
}

#[test]
fn the_update_is_exactly_as_sparse_as_the_mask_and_merges_exactly() {
    let m = model("shira", json!({"sparsity": 0.1}));
    perturb(&m, 0.5);
    for (path, before, after) in merged(&m, "random") {
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let k = ((0.1 * before.len() as f64).round()) as usize;
        assert_eq!(
            changed, k,
            "{path}: {changed} entries changed, mask has {k}"
        );
    }
}

#[test]
fn identity_at_init_and_merge_equals_unmerged_in_f32() {
    let x = pixels(DType::F32);
    let m = model_in("shira", json!({"sparsity": 0.05}), DType::F32);
    let got = m.features(&x, &ForwardCtx::eval()).unwrap();
    assert_eq!(
        max_abs(&(got - frozen_features(&x, DType::F32)).unwrap()),
        0.0
    );

    let mut vit = tiny_backbone(DType::F32);
    let init = peftbench_core::SeededInit::new(5, &candle_core::Device::Cpu);
    let shira = peftbench_methods::shira::ShiraAdaptation::new(
        peftbench_methods::shira::ShiraConfig {
            sparsity: 0.05,
            ..Default::default()
        },
        &vit,
        &init,
    )
    .unwrap();
    for (path, d) in shira.deltas() {
        let noise = init.fork(path).normal(d.values.shape(), 0.3).unwrap();
        d.values.set(noise.as_tensor()).unwrap();
    }
    let ctx = ForwardCtx::eval();
    let unmerged = vit.forward_features(&x, &shira, &ctx).unwrap();
    shira.merge_into(&mut vit).unwrap();
    let fused = vit.forward_features(&x, &NoHooks, &ctx).unwrap();
    assert!(max_abs(&(unmerged - fused).unwrap()) < 1e-5);
}

#[test]
fn weight_magnitude_mask_keeps_the_largest_weights() {
    let mut m = model(
        "shira",
        json!({"sparsity": 0.1, "mask": "weight_magnitude"}),
    );
    perturb(&m, 0.5);
    let w = weights(&mut m, LinearSite::Query);
    let rows = merged(&m, "weight_magnitude");
    let (_, before, after) = &rows[0];
    assert_eq!(before.len(), w.len());
    let chosen: Vec<bool> = before.iter().zip(after).map(|(a, b)| a != b).collect();
    let min_in = (0..w.len())
        .filter(|&i| chosen[i])
        .map(|i| before[i].abs())
        .fold(f64::MAX, f64::min);
    let max_out = (0..w.len())
        .filter(|&i| !chosen[i])
        .map(|i| before[i].abs())
        .fold(0.0, f64::max);
    assert!(
        min_in >= max_out,
        "mask misses a larger weight: {min_in} < {max_out}"
    );
}

#[test]
fn gradient_mask_keeps_the_entries_of_largest_accumulated_gradient() {
    let task = toy_task(DType::F64);
    let mut m = model(
        "shira",
        json!({"sparsity": 0.1, "mask": "gradient_magnitude", "calibration_batches": 2}),
    );
    assert_eq!(
        m.trainable_count(),
        D * CLASSES + CLASSES,
        "no entries before calibration"
    );
    calibrate(&mut m, &task);
    assert_eq!(
        m.trainable_count(),
        L * (4 * 26 + 2 * 51) + D * CLASSES + CLASSES
    );
    // Reference: dL/dW of full fine-tuning (same head initialisation) on the same two batches.
    let full = model("full", json!({}));
    let query = full
        .trainable()
        .iter()
        .find(|p| p.name == "vit.encoder.layer.0.attention.attention.query.weight")
        .unwrap()
        .var
        .clone();
    let mut magnitude = vec![0.0; D * D];
    use peftbench_train::BatchSource;
    for batch in task.batches(16, Some(1)).take(2) {
        let Batch {
            inputs: x,
            labels: y,
            ..
        } = batch.unwrap();
        let logits = full.logits(&x, &ForwardCtx::eval()).unwrap();
        let g = peftbench_train::cross_entropy(&logits, &y, 0.0)
            .unwrap()
            .backward()
            .unwrap();
        for (m, g) in magnitude
            .iter_mut()
            .zip(to_f64_vec(g.get(&query).unwrap()).unwrap())
        {
            *m += g.abs();
        }
    }
    let expected = peftbench_methods::shira::top_k_positions(&magnitude, 26);
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), "tiny").unwrap();
    let (_, tensors) = peft_format::read_adapter(dir.path()).unwrap();
    let coords: Vec<i32> = tensors["vit.layers.0.attention.q_proj.shira_indices"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let flat: Vec<u32> = (0..26)
        .map(|i| (coords[i] as u32) * D as u32 + coords[26 + i] as u32)
        .collect();
    assert_eq!(flat, expected);
}

#[test]
fn gradient_equals_finite_differences() {
    let m = model("shira", json!({"sparsity": 0.1}));
    perturb(&m, 0.3);
    let x = pixels(DType::F64);
    check_gradient(
        &m,
        "vit.encoder.layer.0.output.dense.shira_weight",
        &x,
        &ForwardCtx::eval,
    );
    check_gradient(
        &m,
        "vit.encoder.layer.1.attention.attention.query.shira_weight",
        &x,
        &ForwardCtx::eval,
    );
}

#[test]
fn saves_hugging_face_peft_shira_format() {
    let m = model_in(
        "shira",
        json!({"r": 1, "target_modules": ["query", "value"]}),
        DType::F32,
    );
    perturb(&m, 0.3);
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), "tiny").unwrap();
    let (config, tensors) = peft_format::read_adapter(dir.path()).unwrap();
    assert_eq!(config["peft_type"], "SHIRA");
    assert_eq!(config["r"], 1);
    assert_eq!(config["mask_type"], "random");
    // transformers 5's ViT module names, which current Python PEFT matches and loads.
    assert_eq!(config["target_modules"], json!(["q_proj", "v_proj"]));
    let w = &tensors["vit.layers.0.attention.q_proj.shira_weight"];
    let idx = &tensors["vit.layers.0.attention.q_proj.shira_indices"];
    assert_eq!(w.dims(), [2 * D]);
    assert_eq!(idx.dims(), [2, 2 * D]);
    assert_eq!(idx.dtype(), DType::I32);
    let saved: Vec<f32> = w.to_vec1().unwrap();
    let live: Vec<f32> = m
        .trainable()
        .iter()
        .find(|p| {
            p.name
                .ends_with("layer.0.attention.attention.query.shira_weight")
        })
        .unwrap()
        .var
        .to_vec1()
        .unwrap();
    assert_eq!(saved, live, "round trip is bit-exact");
    assert!(tensors.contains_key("classifier.weight"));
}

#[test]
fn training_lowers_the_loss() {
    let (before, after, _) = train_briefly("shira", json!({"sparsity": 0.05}));
    assert!(after < 0.95 * before, "loss {before} -> {after}");
    let (before, after, _) = train_briefly(
        "shira",
        json!({"sparsity": 0.05, "mask": "gradient_magnitude"}),
    );
    assert!(
        after < 0.95 * before,
        "gradient mask: loss {before} -> {after}"
    );
}

#[test]
fn bad_configurations_name_method_field_and_range() {
    rejects(
        "shira",
        json!({"sparsity": 0.0}),
        &["shira", "sparsity", "(0, 1)"],
    );
    rejects(
        "shira",
        json!({"sparsity": 1.5}),
        &["shira", "sparsity", "(0, 1)"],
    );
    rejects("shira", json!({"r": 0}), &["shira", "r"]);
    rejects(
        "shira",
        json!({"target_modules": ["qkv"]}),
        &["shira", "qkv", "query"],
    );
    let err = PeftModel::new(
        "shira",
        &json!({"r": 20}),
        Box::new(tiny_backbone(DType::F32)),
        3,
        &peftbench_core::SeededInit::new(0, &candle_core::Device::Cpu),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("allowed r: 1..=8"), "{err}");
}
