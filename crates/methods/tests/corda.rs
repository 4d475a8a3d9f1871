//! CorDA: residual + adapter equals W at initialisation, the chosen components are the largest
//! (ipm) or smallest (kpm) of W·C, gradients, the PEFT LoRA export against the original weights,
//! training and bad configurations.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use nalgebra::DMatrix;
use peftbench_backbones::{Backbone, LinearSite};
use peftbench_core::ForwardCtx;
use peftbench_methods::corda::{decompose, CordaMode};
use peftbench_methods::peft_format;
use peftbench_methods::shira::to_f64_vec;
use serde_json::json;

/// A random weight and an ill-conditioned covariance of random data.
fn weight_and_covariance(out: usize, inp: usize) -> (Vec<f64>, Vec<f64>) {
    let mut init = peftbench_core::SeededInit::new(4, &Device::Cpu).with_dtype(DType::F64);
    let w = to_f64_vec(init.normal((out, inp), 0.5).unwrap().as_tensor()).unwrap();
    let x = init
        .normal((3 * inp, inp), 1.0)
        .unwrap()
        .as_tensor()
        .detach();
    let scale: Vec<f64> = (0..inp).map(|i| 1.0 + i as f64).collect();
    let x = x
        .broadcast_mul(&Tensor::new(scale, &Device::Cpu).unwrap())
        .unwrap();
    let c = (x.t().unwrap().matmul(&x).unwrap() / (3 * inp) as f64).unwrap();
    (w, to_f64_vec(&c).unwrap())
}

#[test]
fn residual_plus_adapter_is_w_and_the_right_components_are_chosen() {
    let (out, inp, r, scaling) = (12, 10, 3, 2.0);
    let (w, c) = weight_and_covariance(out, inp);
    let wc = DMatrix::from_row_slice(out, inp, &w) * DMatrix::from_row_slice(inp, inp, &c);
    let mut sigma: Vec<f64> = wc.singular_values().iter().copied().collect();
    sigma.sort_by(|a, b| b.total_cmp(a));
    for (mode, chosen) in [
        (CordaMode::Ipm, &sigma[..r]),
        (CordaMode::Kpm, &sigma[sigma.len() - r..]),
    ] {
        let init = decompose(&w, (out, inp), &c, r, scaling, mode);
        let a = DMatrix::from_row_slice(r, inp, &init.a);
        let b = DMatrix::from_row_slice(out, r, &init.b);
        let adapter = (&b * &a) * scaling;
        let rebuilt = DMatrix::from_row_slice(out, inp, &init.residual) + &adapter;
        let err = (rebuilt - DMatrix::from_row_slice(out, inp, &w))
            .abs()
            .max();
        assert!(
            err < 1e-12,
            "{mode:?}: residual + adapter differs from W by {err}"
        );
        // The adapter times C keeps exactly the chosen singular values of W C.
        let mut got: Vec<f64> = (adapter * DMatrix::from_row_slice(inp, inp, &c))
            .singular_values()
            .iter()
            .copied()
            .collect();
        got.sort_by(|a, b| b.total_cmp(a));
        for (g, e) in got[..r].iter().zip(chosen) {
            assert!(
                (g - e).abs() < 1e-9 * (1.0 + e),
                "{mode:?}: singular value {g} vs {e}"
            );
        }
    }
}

#[test]
fn counts_identity_after_calibration_and_gradients() {
    let task = toy_task(DType::F64);
    for mode in ["ipm", "kpm"] {
        let mut m = model(
            "corda",
            json!({"r": 2, "mode": mode, "target_modules": ["query", "value", "fc1"], "calibration_batches": 2}),
        );
        assert_eq!(
            m.trainable_count(),
            L * 2 * (2 * D + 2 * D + (D + F)) + D * CLASSES + CLASSES
        );
        calibrate(&mut m, &task);
        let x = pixels(DType::F64);
        let got = m.features(&x, &ForwardCtx::eval()).unwrap();
        let diff = max_abs(&(got - frozen_features(&x, DType::F64)).unwrap());
        assert!(
            diff < 1e-10,
            "{mode}: output changed by {diff} at initialisation"
        );
        // CorDA's A and B both start non-zero, so both have gradients at initialisation.
        check_gradient(
            &m,
            "vit.encoder.layer.0.attention.attention.query.lora_A.weight",
            &x,
            &ForwardCtx::eval,
        );
        check_gradient(
            &m,
            "vit.encoder.layer.1.intermediate.dense.lora_B.weight",
            &x,
            &ForwardCtx::eval,
        );
    }
}

#[test]
fn saved_lora_applies_to_the_original_weights() {
    let task = toy_task(DType::F64);
    let mut m = model(
        "corda",
        json!({"r": 2, "alpha": 4, "target_modules": ["value"]}),
    );
    calibrate(&mut m, &task);
    perturb(&m, 0.1);
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), "tiny").unwrap();
    let (config, tensors) = peft_format::read_adapter(dir.path()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    // Saved under transformers 5's ViT module names, which current Python PEFT loads.
    assert_eq!(config["target_modules"], json!(["v_proj"]));
    let scaling = config["lora_alpha"].as_f64().unwrap() / 4.0;
    // W + scaling B' A' (original weight, exported pair) == the trained model's projection.
    let vit = tiny_backbone(DType::F64);
    let path = peft_format::transformers5_module_key(&vit.module_path(1, LinearSite::Value));
    assert_eq!(path, "vit.layers.1.attention.v_proj");
    let a = &tensors[&format!("{path}.lora_A.weight")];
    let b = &tensors[&format!("{path}.lora_B.weight")];
    assert_eq!((a.dims(), b.dims()), ([4, D].as_slice(), [D, 4].as_slice()));
    let exported = (&vit.linear(1, LinearSite::Value).weight
        + (b.matmul(a).unwrap() * scaling).unwrap())
    .unwrap();
    let probe = Tensor::eye(D, DType::F64, &Device::Cpu).unwrap();
    let base = m.backbone().linear(1, LinearSite::Value).clone();
    let trained = m
        .adaptation()
        .linear(1, LinearSite::Value, &probe, &base, &ForwardCtx::eval())
        .unwrap();
    let direct = peftbench_core::ops::linear(
        &probe,
        &exported,
        vit.linear(1, LinearSite::Value).bias.as_ref(),
    )
    .unwrap();
    assert!(max_abs(&(trained - direct).unwrap()) < 1e-12);
}

#[test]
fn training_lowers_the_loss() {
    let (before, after, _) = train_briefly(
        "corda",
        json!({"r": 2, "target_modules": ["query", "value"]}),
    );
    assert!(after < 0.95 * before, "loss {before} -> {after}");
}

#[test]
fn bad_configurations_name_method_field_and_range() {
    rejects("corda", json!({"r": 0}), &["corda", "r must be at least 1"]);
    rejects("corda", json!({"mode": "fast"}), &["corda", "fast", "kpm"]);
    rejects(
        "corda",
        json!({"target_modules": ["proj"]}),
        &["corda", "proj", "query"],
    );
    let err = peftbench_methods::PeftModel::new(
        "corda",
        &json!({"r": 17}),
        Box::new(tiny_backbone(DType::F32)),
        3,
        &peftbench_core::SeededInit::new(0, &Device::Cpu),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("field `r` is 17 but `query` is 16 -> 16; allowed range: 1 to 16"),
        "{err}"
    );
}
