//! MAD-X: the invertible adapter inverts, language and task adapters train in their phases and
//! stack, the language adapter is swapped at inference, gradients, training, bad configurations.

mod common;

use candle_core::DType;
use common::*;
use peftbench_backbones::Backbone;
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::madx::{
    InvertibleAdapter, MadxAdaptation, MadxConfig, LANGUAGE_ADAPTER_FILE,
};
use peftbench_methods::Adaptation;
use peftbench_methods::PeftModel;
use serde_json::json;

#[test]
fn the_invertible_adapter_inverts() {
    let inv = InvertibleAdapter::new(
        D,
        4,
        &SeededInit::new(2, &candle_core::Device::Cpu).with_dtype(DType::F64),
    )
    .unwrap();
    let x = SeededInit::new(3, &candle_core::Device::Cpu)
        .with_dtype(DType::F64)
        .normal((2, 5, D), 1.0)
        .unwrap()
        .as_tensor()
        .detach();
    let y = inv.forward(&x).unwrap();
    assert!(
        max_abs(&(&y - &x).unwrap()) > 1e-3,
        "the coupling is not the identity"
    );
    assert!(max_abs(&(inv.inverse(&y).unwrap() - &x).unwrap()) < 1e-12);
}

#[test]
fn phases_train_the_language_side_then_the_task_adapter() {
    let mut m = model(
        "madx",
        json!({"language_reduction": 2, "task_reduction": 4, "invertible_reduction": 2}),
    );
    let head = D * CLASSES + CLASSES;
    // Invertible: F and G map 8 -> 4 -> 8; language: 16 -> 8 -> 16; task: 16 -> 4 -> 16.
    let invertible = 2 * (8 * 4 + 4 + 4 * 8 + 8);
    let language = L * (2 * D * 8 + 8 + D);
    let task = L * (2 * D * 4 + 4 + D);
    assert_eq!(
        m.phases().iter().map(|p| p.name).collect::<Vec<_>>(),
        ["language", "task"]
    );
    m.enter_phase(0).unwrap();
    assert_eq!(m.trainable_count(), invertible + language + head);
    m.enter_phase(1).unwrap();
    assert_eq!(m.trainable_count(), task + head);
    let pretrained = tiny_backbone(DType::F64).num_params_of();
    assert_eq!(
        m.total_count(),
        pretrained + invertible + language + task + head
    );
}

/// The three language adapters of the low-resource comparison: a sequential bottleneck (no
/// invertible adapter), an invertible bottleneck (MAD-X) and LoRA on query and value; each counts
/// what its closed form says, starts as the identity (the model equals the frozen backbone plus the
/// zero-initialised task adapter), and is swapped like MAD-X's.
#[test]
fn sequential_invertible_and_lora_language_modules() {
    let head = D * CLASSES + CLASSES;
    let invertible = 2 * (8 * 4 + 4 + 4 * 8 + 8);
    let bottleneck = L * (2 * D * 8 + 8 + D);
    // r 2 on query and value (D -> D): A [2, D] and B [D, 2] each.
    let lora = L * 2 * (2 * D + D * 2);
    let x = pixels(DType::F64);
    let ctx = ForwardCtx::eval();
    let frozen = tiny_backbone(DType::F64)
        .forward_features(&x, &peftbench_backbones::NoHooks, &ctx)
        .unwrap();
    for (params, language) in [
        (json!({"invertible": false}), bottleneck),
        (json!({}), invertible + bottleneck),
        (
            json!({"language_module": "lora", "language_lora_r": 2, "invertible": false}),
            lora,
        ),
        (
            json!({"language_module": "lora", "language_lora_r": 2}),
            invertible + lora,
        ),
    ] {
        let mut m = model("madx", params.clone());
        m.enter_phase(0).unwrap();
        assert_eq!(m.trainable_count(), language + head, "{params}");
        // Identity at init for the sequential and LoRA modules; the invertible coupling is not.
        if params.get("invertible") == Some(&json!(false)) {
            let got = m.features(&x, &ctx).unwrap();
            assert!(max_abs(&(got - &frozen).unwrap()) < 1e-12, "{params}");
        }
        // Trained language sides swap under the task adapter.
        perturb(&m, 0.3);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), "tiny").unwrap();
        let before = m.features(&x, &ctx).unwrap();
        let other = model_in_seed("madx", params.clone(), 11);
        perturb(&other, 0.3);
        let other_dir = tempfile::tempdir().unwrap();
        other.save(other_dir.path(), "tiny").unwrap();
        m.adaptation()
            .swap_language_module(other_dir.path())
            .unwrap();
        let swapped = m.features(&x, &ctx).unwrap();
        assert!(max_abs(&(&swapped - &before).unwrap()) > 1e-6, "{params}");
        m.adaptation().swap_language_module(dir.path()).unwrap();
        let back = m.features(&x, &ctx).unwrap();
        assert_eq!(max_abs(&(back - before).unwrap()), 0.0, "{params}");
    }
}

trait NumParams {
    fn num_params_of(self) -> usize;
}
impl NumParams for peftbench_backbones::Vit {
    fn num_params_of(mut self) -> usize {
        peftbench_backbones::Backbone::num_params(&mut self)
    }
}

#[test]
fn the_language_adapter_is_swapped_under_a_task_adapter() {
    let x = pixels(DType::F64);
    let params = json!({"task_reduction": 4});
    // Two trained language sides ("source" A and "target" C), saved.
    let save = |seed: u64| {
        let m = model_in_seed("madx", params.clone(), seed);
        perturb(&m, 0.3);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), "tiny").unwrap();
        dir
    };
    let (dir_a, dir_c) = (save(7), save(5));
    // A run reusing A's language side trains only the task adapter, in one phase.
    let b = model(
        "madx",
        json!({"task_reduction": 4, "language_adapter": dir_a.path()}),
    );
    assert!(b.phases().is_empty());
    assert!(b
        .trainable()
        .iter()
        .all(|p| p.name.contains(".task.") || p.name.starts_with("classifier")));
    // Swapping at inference: the task adapter stays, the language adapter under it changes.
    let vit = tiny_backbone(DType::F64);
    let config: MadxConfig =
        serde_json::from_value(json!({"task_reduction": 4, "language_adapter": dir_a.path()}))
            .unwrap();
    let init = SeededInit::new(1, &candle_core::Device::Cpu).with_dtype(DType::F64);
    let madx = MadxAdaptation::new(config, &vit, &init).unwrap();
    let saved = candle_core::safetensors::load(
        dir_a.path().join(LANGUAGE_ADAPTER_FILE),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for (name, t) in madx.language_tensors() {
        assert_eq!(
            max_abs(&(t - &saved[&name]).unwrap()),
            0.0,
            "{name} not loaded"
        );
    }
    for p in madx.trainable().iter() {
        let noise = init.fork(&p.name).normal(p.var.shape(), 0.3).unwrap();
        p.var.set(noise.as_tensor()).unwrap();
    }
    let ctx = ForwardCtx::eval();
    let with_a = vit.forward_features(&x, &madx, &ctx).unwrap();
    madx.swap_language_adapter(dir_c.path()).unwrap();
    let with_c = vit.forward_features(&x, &madx, &ctx).unwrap();
    assert!(max_abs(&(&with_c - &with_a).unwrap()) > 1e-6);
    madx.swap_language_adapter(dir_a.path()).unwrap();
    let back = vit.forward_features(&x, &madx, &ctx).unwrap();
    assert_eq!(max_abs(&(back - with_a).unwrap()), 0.0);
}

fn model_in_seed(method: &str, params: serde_json::Value, seed: u64) -> PeftModel {
    let init = SeededInit::new(seed, &candle_core::Device::Cpu).with_dtype(DType::F64);
    PeftModel::new(
        method,
        &params,
        Box::new(tiny_backbone(DType::F64)),
        CLASSES,
        &init,
    )
    .unwrap()
}

#[test]
fn gradient_equals_finite_differences() {
    let mut m = model("madx", json!({"task_reduction": 4}));
    perturb(&m, 0.2);
    let x = pixels(DType::F64);
    check_gradient(
        &m,
        "invertible_adapter.F.down.weight",
        &x,
        &ForwardCtx::eval,
    );
    m.enter_phase(1).unwrap();
    perturb(&m, 0.2);
    check_gradient(
        &m,
        "vit.encoder.layer.1.output_adapter.task.up.weight",
        &x,
        &ForwardCtx::eval,
    );
}

#[test]
fn training_both_phases_lowers_the_loss() {
    let (before, after, _) = train_briefly("madx", json!({"task_reduction": 4}));
    assert!(after < 0.97 * before, "loss {before} -> {after}");
}

#[test]
fn bad_configurations_name_method_field_and_range() {
    rejects(
        "madx",
        json!({"task_reduction": 0}),
        &["madx", "task_reduction"],
    );
    rejects(
        "madx",
        json!({"language_epochs": 0}),
        &["madx", "language_epochs"],
    );
    let err = PeftModel::new(
        "madx",
        &json!({"task_reduction": 32}),
        Box::new(tiny_backbone(DType::F32)),
        3,
        &SeededInit::new(0, &candle_core::Device::Cpu),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("allowed: language/task 1..=16"),
        "{err}"
    );
    let err = PeftModel::new(
        "madx",
        &json!({"language_adapter": "/nonexistent"}),
        Box::new(tiny_backbone(DType::F32)),
        3,
        &SeededInit::new(0, &candle_core::Device::Cpu),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("/nonexistent/language_adapter.safetensors"),
        "{err}"
    );
}
