//! Poly and MHR on a tiny ViT (f64) and against Hugging Face PEFT: gradients equal finite
//! differences for skills and routing logits (evaluation and sampled training routing), the two
//! transfers to a new task do what MHR-z and MHR-μ promise, saved adapters load back, and PEFT's
//! own adapters give PyTorch's logits.
//!
//! `tests/fixtures/peft_poly/` (written by `ci/fixtures/peft_poly.py`) holds a Poly adapter (r 2,
//! 3 tasks, 4 skills, 1 split) and an MHR one (2 splits) made by PEFT 0.21.2 on q/v of the
//! `peft_vit` fixture ViT, with random non-zero skills, routing logits and classifier, and
//! `expected_logits.json`: PEFT's eval-mode logits of `peft_vit/pixels.safetensors` for the task
//! ids `2,0` and `1,1`.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{check_gradient, loss_with, max_abs, model, perturb, pixels, CLASSES};
use peftbench_backbones::Vit;
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::{PeftModel, Transfer};
use serde_json::json;

fn ids(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu).unwrap()
}

fn poly_params(splits: usize) -> serde_json::Value {
    json!({"r": 2, "n_tasks": 3, "n_skills": 3, "n_splits": splits,
           "target_modules": ["query", "value", "fc2"]})
}

fn logits(m: &PeftModel, x: &Tensor, ctx: &ForwardCtx) -> Tensor {
    m.logits(x, ctx).unwrap()
}

fn diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b).unwrap())
}

/// The parameter `name` of `m`'s method (skills and logits are found by suffix).
fn values(m: &PeftModel, suffix: &str) -> Vec<(String, Tensor)> {
    m.adaptation()
        .trainable()
        .iter()
        .filter(|p| p.name.ends_with(suffix))
        .map(|p| (p.name.clone(), p.var.as_tensor().copy().unwrap()))
        .collect()
}

#[test]
fn gradients_equal_finite_differences() {
    for (method, splits) in [("poly", 1), ("mhr", 2)] {
        let m = model(method, poly_params(splits));
        perturb(&m, 0.3);
        let x = pixels(DType::F64);
        let names: Vec<String> = m
            .adaptation()
            .trainable()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        // Three tensors per projection: both skill factors and the routing logits.
        assert_eq!(names.len(), 2 * 3 * 3, "{method}: {names:?}");
        for name in names
            .iter()
            .filter(|n| n.contains("layer.1.") || n.contains("layer.0.attention"))
        {
            // Evaluation: sigmoid routing, a batch mixing tasks.
            check_gradient(&m, name, &x, &|| {
                ForwardCtx::eval().with_task_ids(Some(ids(&[2, 1])))
            });
            // Training: the same seeded relaxed-Bernoulli sample on every evaluation.
            check_gradient(&m, name, &x, &|| {
                ForwardCtx::train(5, 0.0).with_task_ids(Some(ids(&[0, 2])))
            });
        }
        // Single-task data (no ids) trains task 0's row only.
        let logits_name = names.iter().find(|n| n.ends_with("module_logits")).unwrap();
        let p = m
            .trainable()
            .iter()
            .find(|p| &p.name == logits_name)
            .unwrap()
            .clone();
        let grads = loss_with(&m, &x, &ForwardCtx::train(5, 0.0))
            .backward()
            .unwrap();
        let g = grads.get(&p.var).unwrap();
        assert!(max_abs(&g.narrow(0, 0, 1).unwrap()) > 0.0);
        assert_eq!(max_abs(&g.narrow(0, 1, 2).unwrap()), 0.0);
        // Routing logits train at their own rate; skills at the recipe's.
        assert_eq!(m.adaptation().lr_multiplier(logits_name), 100.0);
        assert_eq!(m.adaptation().lr_multiplier(&names[0]), 1.0);
    }
}

#[test]
fn untrained_adapter_is_the_frozen_model_and_one_skill_is_lora() {
    let x = pixels(DType::F64);
    let ctx = || ForwardCtx::eval().with_task_ids(Some(ids(&[1, 0])));
    let frozen = model("linear", json!({}));
    let poly = model("mhr", poly_params(2));
    assert_eq!(
        diff(&logits(&poly, &x, &ctx()), &logits(&frozen, &x, &ctx())),
        0.0
    );

    // One skill, one split: LoRA with A = poly_lora_A^T, B = poly_lora_B^T and alpha 1 (PEFT's
    // Poly scales by 1 / r). In f64 the routing weight is 1 - O(1e-12), not exactly 1.
    let one = model(
        "poly",
        json!({"r": 2, "n_skills": 1, "target_modules": ["query", "value", "fc2"]}),
    );
    perturb(&one, 0.3);
    let lora = model(
        "lora",
        json!({"r": 2, "alpha": 1, "target_modules": ["query", "value", "fc2"]}),
    );
    for p in lora.trainable().iter() {
        let value = match p.name.strip_suffix(".lora_A.weight") {
            Some(path) => one_value(&one, &format!("{path}.poly_lora_A")).t().unwrap(),
            None => match p.name.strip_suffix(".lora_B.weight") {
                Some(path) => one_value(&one, &format!("{path}.poly_lora_B")).t().unwrap(),
                None => one_value(&one, &p.name),
            },
        };
        p.var.set(&value).unwrap();
    }
    let d = diff(
        &logits(&one, &x, &ForwardCtx::eval()),
        &logits(&lora, &x, &ForwardCtx::eval()),
    );
    assert!(d < 1e-10, "one-skill poly vs lora: {d}");
}

/// Parameter `name` of `m` as a matrix: a one-skill, one-split factor squeezed to 2-D.
fn one_value(m: &PeftModel, name: &str) -> Tensor {
    let t = m
        .trainable()
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .var
        .as_tensor()
        .copy()
        .unwrap();
    if t.rank() == 4 {
        let d = t.dims().to_vec();
        t.reshape((d[2], d[3])).unwrap()
    } else {
        t
    }
}

#[test]
fn routing_transfer_trains_only_a_fresh_logit_row() {
    let mut m = model("mhr", poly_params(2));
    perturb(&m, 0.3);
    let skills_before = [values(&m, "poly_lora_A"), values(&m, "poly_lora_B")].concat();
    let init = SeededInit::new(8, &Device::Cpu).with_dtype(DType::F64);
    m.transfer(Transfer::Routing, CLASSES, &init).unwrap();
    let method: Vec<_> = m.adaptation().trainable().iter().collect();
    assert_eq!(method.len(), 2 * 3, "one logits row per projection");
    for p in &method {
        assert!(p.name.ends_with("poly_router.module_logits"), "{}", p.name);
        assert_eq!(p.var.dims(), [1, 2 * 3]);
        assert!(max_abs(p.var.as_tensor()) <= 1e-3, "PEFT's router init");
    }
    // A training step's gradients reach the new logits; the skills are not trained any more and
    // keep their values; task ids of the new task's data are ignored (it is the only task).
    let x = pixels(DType::F64);
    let ctx = || ForwardCtx::train(1, 0.0).with_task_ids(Some(ids(&[7, 7])));
    let grads = loss_with(&m, &x, &ctx()).backward().unwrap();
    for p in &method {
        assert!(max_abs(grads.get(&p.var).unwrap()) > 0.0, "{}", p.name);
        check_gradient(&m, &p.name, &x, &ctx);
    }
    let adaptation = m.adaptation();
    assert!(adaptation.added_params() > adaptation.trainable().count());
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), "test").unwrap();
    let (config, tensors) = peftbench_methods::peft_format::read_adapter(dir.path()).unwrap();
    assert_eq!(config["n_tasks"], 1);
    assert_eq!(config["n_skills"], 3);
    for (name, before) in skills_before {
        let key = peftbench_methods::peft_format::transformers5_module_key(&name);
        assert_eq!(diff(&tensors[&key], &before), 0.0, "{name} changed");
    }
}

#[test]
fn average_skills_transfer_is_lora_of_the_skill_averages() {
    for splits in [1, 2] {
        let mut m = model("mhr", poly_params(2));
        if splits == 1 {
            m = model("poly", poly_params(1));
        }
        perturb(&m, 0.3);
        let a_before = values(&m, "poly_lora_A");
        let b_before = values(&m, "poly_lora_B");
        let init = SeededInit::new(8, &Device::Cpu).with_dtype(DType::F64);
        m.transfer(Transfer::AverageSkills, CLASSES, &init).unwrap();
        let trainable: Vec<_> = m.adaptation().trainable().iter().collect();
        assert_eq!(
            trainable.len(),
            2 * 3 * 2,
            "A and B per projection, no router"
        );
        assert!(trainable.iter().all(|p| !p.name.contains("router")));

        // The LoRA whose factors are the per-split averages, laid out as PEFT's reshape does.
        let lora = model(
            "lora",
            json!({"r": 2, "alpha": 1, "target_modules": ["query", "value", "fc2"]}),
        );
        for p in lora.trainable().iter() {
            let value = if let Some(path) = p.name.strip_suffix(".lora_A.weight") {
                let a = &find(&a_before, &format!("{path}.poly_lora_A"));
                let (s, _, d, r) = a.dims4().unwrap();
                let avg = a.mean(1).unwrap(); // [S, d, r]
                avg.reshape((s * d, r)).unwrap().t().unwrap()
            } else if let Some(path) = p.name.strip_suffix(".lora_B.weight") {
                let b = &find(&b_before, &format!("{path}.poly_lora_B"));
                let (s, _, r, d) = b.dims4().unwrap();
                let avg = b.mean(1).unwrap(); // [S, r, d]
                let full = avg.permute((1, 0, 2)).unwrap().reshape((r, s * d)).unwrap();
                full.t().unwrap()
            } else {
                m.head()
                    .params()
                    .iter()
                    .find(|h| h.name == p.name)
                    .unwrap()
                    .var
                    .as_tensor()
                    .copy()
                    .unwrap()
            };
            p.var.set(&value.contiguous().unwrap()).unwrap();
        }
        let x = pixels(DType::F64);
        for ctx in [
            ForwardCtx::eval(),
            ForwardCtx::train(3, 0.0).with_task_ids(Some(ids(&[2, 0]))),
        ] {
            let d = diff(
                &logits(&m, &x, &ctx),
                &logits(&lora, &x, &ForwardCtx::eval()),
            );
            assert!(d < 1e-12, "splits {splits}: averaged poly vs lora {d}");
        }
        for p in &trainable {
            check_gradient(&m, &p.name, &x, &ForwardCtx::eval);
        }
        // Saved as a one-skill, one-task Poly adapter that loads back with the same logits.
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), "test").unwrap();
        let again =
            PeftModel::from_adapter(dir.path(), Box::new(common::tiny_backbone(DType::F64)))
                .unwrap();
        let d = diff(
            &logits(&m, &x, &ForwardCtx::eval()),
            &logits(&again, &x, &ForwardCtx::eval()),
        );
        assert!(d < 1e-10, "reloaded averaged adapter: {d}");
    }
}

fn find(list: &[(String, Tensor)], name: &str) -> Tensor {
    list.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
        .clone()
}

#[test]
fn a_saved_adapter_loads_back_with_its_outputs() {
    for (method, splits) in [("poly", 1), ("mhr", 2)] {
        let m = model(method, poly_params(splits));
        perturb(&m, 0.3);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), "test").unwrap();
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["peft_type"], "POLY");
        assert_eq!(config["poly_type"], "poly");
        assert_eq!(config["n_splits"], splits);
        let again =
            PeftModel::from_adapter(dir.path(), Box::new(common::tiny_backbone(DType::F64)))
                .unwrap();
        assert_eq!(again.method(), method);
        let x = pixels(DType::F64);
        let ctx = || ForwardCtx::eval().with_task_ids(Some(ids(&[2, 1])));
        assert_eq!(
            diff(&logits(&m, &x, &ctx()), &logits(&again, &x, &ctx())),
            0.0
        );
    }
}

fn vit_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft_vit")
}

fn poly_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft_poly")
}

fn fixture_vit() -> Vit {
    let dir = vit_fixtures().join("backbone");
    Vit::load(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn fixture_pixels() -> Tensor {
    candle_core::safetensors::load(vit_fixtures().join("pixels.safetensors"), &Device::Cpu).unwrap()
        ["pixel_values"]
        .clone()
}

/// PEFT's eval-mode logits of the fixture images under `key` (`poly/2,0`, ...).
fn expected(key: &str) -> Tensor {
    let text = std::fs::read_to_string(poly_fixtures().join("expected_logits.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<Vec<f32>> = serde_json::from_value(all[key].clone()).unwrap();
    let n = rows.len();
    Tensor::from_vec(rows.concat(), (n, CLASSES), &Device::Cpu).unwrap()
}

/// The fixture adapters' logits for task ids `2,0` and `1,1`, loaded here and compared with
/// PyTorch's; saved again by peftbench, they give the same logits.
#[test]
fn peft_poly_adapters_give_pytorchs_logits() {
    for (folder, method) in [("poly", "poly"), ("mhr", "mhr")] {
        let model = PeftModel::from_adapter(&poly_fixtures().join(folder), Box::new(fixture_vit()))
            .unwrap_or_else(|e| panic!("{folder}: {e:#}"));
        assert_eq!(model.method(), method);
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path(), "fixture").unwrap();
        let again = PeftModel::from_adapter(dir.path(), Box::new(fixture_vit())).unwrap();
        for (key, tasks) in [("2,0", [2u32, 0]), ("1,1", [1, 1])] {
            let ctx = || ForwardCtx::eval().with_task_ids(Some(ids(&tasks)));
            let got = logits(&model, &fixture_pixels(), &ctx());
            let err = diff(&got, &expected(&format!("{folder}/{key}")));
            eprintln!("{folder} tasks {key}: max |logit - PyTorch| = {err:.2e}");
            assert!(err < 1e-4, "{folder} tasks {key}: max error {err}");
            assert_eq!(diff(&got, &logits(&again, &fixture_pixels(), &ctx())), 0.0);
        }
    }
}

/// Single-task data (no task ids) trains through the trainer as task 0, with sampled routing and
/// the routing logits at their own learning rate: the loss falls, also with the head frozen.
#[test]
fn trains_on_single_task_data() {
    for method in ["poly", "mhr"] {
        let (before, after, m) = common::train_briefly(
            method,
            json!({"r": 2, "n_skills": 2, "n_splits": if method == "mhr" { 2 } else { 1 }}),
        );
        assert!(after < before, "{method}: loss {before} -> {after}");
        let logits = values(&m, "module_logits");
        assert!(
            logits.iter().all(|(_, t)| max_abs(t) > 1e-3),
            "{method}: routing trained"
        );
    }
}

/// The allocation reported for allocation recovery is each task's evaluation-mode routing weight
/// per skill: sigmoid of its logits, normalised per head, averaged over heads and projections,
/// computed here by hand from known logits.
#[test]
fn task_allocation_is_the_normalised_sigmoid_averaged_over_heads_and_layers() {
    let m = model("mhr", poly_params(2));
    // Two heads x three skills per task; layer k's logits are the base ones shifted by k (the
    // shift changes the weights, so the average over layers is tested too).
    let base = [
        [0.5, -1.0, 2.0, 0.0, 1.0, -0.5],
        [-2.0, 0.3, 0.7, 1.5, -1.5, 0.2],
        [0.0, 0.0, 0.0, 3.0, -3.0, 1.0],
    ];
    let layers: Vec<_> = m
        .adaptation()
        .trainable()
        .iter()
        .filter(|p| p.name.ends_with("poly_router.module_logits"))
        .map(|p| p.var.clone())
        .collect();
    assert!(layers.len() > 1);
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut expected = vec![vec![0.0; 3]; 3];
    for (k, var) in layers.iter().enumerate() {
        let shifted: Vec<f64> = base.iter().flatten().map(|v| v + k as f64 * 0.25).collect();
        var.set(&Tensor::from_vec(shifted.clone(), (3, 6), &Device::Cpu).unwrap())
            .unwrap();
        for task in 0..3 {
            for head in 0..2 {
                let z: Vec<f64> = (0..3)
                    .map(|s| sigmoid(shifted[task * 6 + head * 3 + s]))
                    .collect();
                let total: f64 = z.iter().sum::<f64>() + 1e-12;
                for s in 0..3 {
                    expected[task][s] += z[s] / total / 2.0 / layers.len() as f64;
                }
            }
        }
    }
    let allocation = m.adaptation().task_allocation().unwrap().unwrap();
    for (row, want) in allocation.iter().zip(&expected) {
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{allocation:?} vs {expected:?}");
        }
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
    // Methods without skills report none.
    assert!(model("lora", json!({"r": 2}))
        .adaptation()
        .task_allocation()
        .unwrap()
        .is_none());
}
