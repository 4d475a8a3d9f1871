//! MoSA: the sparse modules partition the adapter, training touches one module (or pair) per
//! step, the merged adapter is a standard adapter (same parameters, same FLOPs, same output as the
//! mixture at evaluation), gradients, training and bad configurations.

mod common;

use candle_core::{DType, Device};
use common::*;
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::shira::to_f64_vec;
use peftbench_methods::PeftModel;
use serde_json::json;

const H: usize = 4;

#[test]
fn modules_partition_every_adapter_weight() {
    let init = SeededInit::new(1, &Device::Cpu).with_dtype(DType::F64);
    let vit = tiny_backbone(DType::F64);
    let mosa = peftbench_methods::mosa::MosaAdaptation::new(
        serde_json::from_value(json!({"modules": 4, "bottleneck": H, "placement": "houlsby"}))
            .unwrap(),
        &vit,
        &init,
    )
    .unwrap();
    for layer in 0..L {
        for after_mlp in [false, true] {
            let a = mosa.adapter(layer, after_mlp).unwrap();
            for masks in [&a.down_masks, &a.up_masks] {
                let values: Vec<Vec<f64>> = masks.iter().map(|m| to_f64_vec(m).unwrap()).collect();
                let n = values[0].len();
                for i in 0..n {
                    let owners = values.iter().filter(|v| v[i] == 1.0).count();
                    assert_eq!(owners, 1, "entry {i} belongs to {owners} modules");
                }
                for v in &values {
                    let size = v.iter().filter(|&&x| x == 1.0).count();
                    assert_eq!(size, n / 4, "unbalanced module");
                }
            }
        }
    }
}

#[test]
fn merged_mosa_is_a_standard_adapter_with_the_same_output() {
    let params = json!({"modules": 4, "bottleneck": H, "placement": "houlsby"});
    let mosa = model_in("mosa", params, DType::F32);
    let adapter = model_in(
        "adapter",
        json!({"bottleneck": H, "placement": "houlsby"}),
        DType::F32,
    );
    // Same parameters, names and shapes: merged inference has exactly an adapter's size and FLOPs.
    let shapes = |m: &PeftModel| {
        m.trainable()
            .iter()
            .map(|p| (p.name.clone(), p.var.dims().to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shapes(&mosa), shapes(&adapter));
    assert_eq!(
        mosa.trainable_count(),
        L * 2 * (2 * D * H + H + D) + D * CLASSES + CLASSES
    );
    assert_eq!(mosa.total_count(), adapter.total_count());
    let x = pixels(DType::F32);
    let got = mosa.features(&x, &ForwardCtx::eval()).unwrap();
    assert_eq!(
        max_abs(&(got - frozen_features(&x, DType::F32)).unwrap()),
        0.0,
        "identity at init"
    );
    perturb(&mosa, 0.3);
    for (a, b) in adapter.trainable().iter().zip(mosa.trainable().iter()) {
        a.var.set(b.var.as_tensor()).unwrap();
    }
    // Evaluation runs the mixture of all modules; the adapter runs the merged dense weights.
    let mixture = mosa.logits(&x, &ForwardCtx::eval()).unwrap();
    let merged = adapter.logits(&x, &ForwardCtx::eval()).unwrap();
    assert!(max_abs(&(mixture - merged).unwrap()) < 1e-5);
    // Saved as the standard adapter: same bytes as the adapter's files.
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bytes = mosa.save(d1.path(), "tiny").unwrap();
    assert_eq!(bytes, adapter.save(d2.path(), "tiny").unwrap());
}

#[test]
fn a_training_step_updates_one_sparse_module_per_weight() {
    for hierarchical in [false, true] {
        let m = model(
            "mosa",
            json!({"modules": 4, "hierarchical": hierarchical, "bottleneck": H}),
        );
        perturb(&m, 0.3);
        let x = pixels(DType::F64);
        let mut densities = std::collections::BTreeSet::new();
        for seed in 0..6 {
            let grads = loss_with(&m, &x, &ForwardCtx::train(seed, 0.0))
                .backward()
                .unwrap();
            for p in m
                .trainable()
                .iter()
                .filter(|p| p.name.ends_with("down.weight") || p.name.ends_with("up.weight"))
            {
                let g = to_f64_vec(grads.get(&p.var).unwrap()).unwrap();
                let nonzero = g.iter().filter(|v| **v != 0.0).count();
                let n = g.len();
                // One module (n/4 entries) or, hierarchically, a pair (n/2); never more.
                assert!(
                    nonzero <= if hierarchical { n / 2 } else { n / 4 },
                    "{}: {nonzero} of {n}",
                    p.name
                );
                densities.insert(if nonzero > n / 4 { 2 } else { 1 });
            }
        }
        if hierarchical {
            assert_eq!(densities.len(), 2, "both levels are drawn");
        }
    }
}

#[test]
fn gradient_equals_finite_differences_in_a_training_step() {
    let m = model(
        "mosa",
        json!({"modules": 2, "hierarchical": false, "bottleneck": H}),
    );
    perturb(&m, 0.3);
    let x = pixels(DType::F64);
    // The same seed draws the same modules in every evaluation of the loss.
    check_gradient(
        &m,
        "vit.encoder.layer.0.output_adapter.down.weight",
        &x,
        &|| ForwardCtx::train(3, 0.0),
    );
    check_gradient(
        &m,
        "vit.encoder.layer.1.output_adapter.up.weight",
        &x,
        &|| ForwardCtx::train(3, 0.0),
    );
}

#[test]
fn training_lowers_the_loss() {
    let (before, after, _) = train_briefly("mosa", json!({"bottleneck": 8}));
    assert!(after < 0.97 * before, "loss {before} -> {after}");
}

#[test]
fn bad_configurations_name_method_field_and_range() {
    rejects(
        "mosa",
        json!({"modules": 1}),
        &["mosa", "modules 1", "2..=64"],
    );
    rejects(
        "mosa",
        json!({"modules": 3}),
        &["mosa", "modules 3", "even"],
    );
    rejects("mosa", json!({"bottleneck": 0}), &["mosa", "bottleneck"]);
}
