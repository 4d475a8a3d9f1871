//! Adapters made by Hugging Face PEFT 0.21.2 (transformers 5.24, torch 2.11) on a small random
//! `ViTForImageClassification` (hidden 16, 2 blocks, 2 heads, MLP 32, 16x16 images, 8x8 patches,
//! 3 labels) give the logits PyTorch computed, within 1e-4.
//!
//! `tests/fixtures/peft_vit/` holds the model (`backbone/`, saved with `save_pretrained`), two
//! input images (`pixels.safetensors`), six adapters saved with `PeftModel.save_pretrained`
//! (`lora`: r 2 on q/v; `lora_top`: r 2 on q, v, fc1 of the second block only,
//! `layers_to_transform: [1]`; `dora`: r 2, `use_dora` on all six projections; `ia3`: k, v, fc2 with fc2
//! feed-forward; `prefix`: 3 virtual tokens through an 8-wide projection MLP; `shira`: r 2 (a
//! LoRA-r-2 budget of entries) on q, v, fc2 with PEFT's random mask, seed 5), each with random
//! non-zero weights and a trained-looking classifier, and `expected_logits.json`: PEFT's eval-mode
//! logits (for prefix tuning, which PEFT cannot run on ViT, PyTorch's eager attention with PEFT's
//! saved `prompt_embeddings` prepended to every layer's keys and values in PEFT's `get_prompt`
//! layout). The adapters carry transformers 5 module names (`vit.layers.0.attention.q_proj`).
//! Everything in the folder is written by `ci/fixtures/peft_vit.py` (regenerate every fixture with
//! `ci/fixtures/regenerate.sh`).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftbench_backbones::{Backbone, NoHooks, Vit};
use peftbench_core::{ops, ForwardCtx};
use peftbench_methods::PeftModel;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft_vit")
}

fn backbone() -> Vit {
    let dir = fixtures().join("backbone");
    Vit::load(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn pixels() -> Tensor {
    candle_core::safetensors::load(fixtures().join("pixels.safetensors"), &Device::Cpu).unwrap()
        ["pixel_values"]
        .clone()
}

fn expected(name: &str) -> Vec<f32> {
    let text = std::fs::read_to_string(fixtures().join("expected_logits.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[name]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect()
}

fn max_error(got: &Tensor, want: &[f32]) -> f32 {
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_frozen_backbone_matches_transformers() {
    let weights =
        candle_core::safetensors::load(fixtures().join("backbone/model.safetensors"), &Device::Cpu)
            .unwrap();
    let features = backbone()
        .forward_features(&pixels(), &NoHooks, &ForwardCtx::eval())
        .unwrap();
    let logits = ops::linear(
        &features,
        &weights["classifier.weight"],
        Some(&weights["classifier.bias"]),
    )
    .unwrap();
    let err = max_error(&logits, &expected("frozen"));
    assert!(err < 1e-4, "frozen: max error {err}");
}

#[test]
fn peft_adapters_give_pytorchs_logits() {
    for (folder, method) in [
        ("lora", "lora"),
        ("lora_top", "lora"),
        ("dora", "dora"),
        ("ia3", "ia3"),
        ("prefix", "prefix-tuning"),
        ("shira", "shira"),
    ] {
        let model = PeftModel::from_adapter(&fixtures().join(folder), Box::new(backbone()))
            .unwrap_or_else(|e| panic!("{folder}: {e:#}"));
        assert_eq!(model.method(), method);
        let logits = model.logits(&pixels(), &ForwardCtx::eval()).unwrap();
        let err = max_error(&logits, &expected(folder));
        eprintln!("{folder}: max |logit - PyTorch| = {err:.2e}");
        assert!(err < 1e-4, "{folder}: max error {err}");
    }
}

/// One training step of the fixture's DoRA adapter: the mean cross-entropy against the fixture's
/// labels and its gradient w.r.t. every trainable tensor (LoRA factors, magnitude vectors and the
/// classifier) equal what PEFT computed (`dora_step.safetensors`; both detach the weight norm).
#[test]
fn dora_gradients_equal_pefts() {
    let model = PeftModel::from_adapter(&fixtures().join("dora"), Box::new(backbone())).unwrap();
    let step =
        candle_core::safetensors::load(fixtures().join("dora_step.safetensors"), &Device::Cpu)
            .unwrap();
    let labels = step["labels"].to_dtype(candle_core::DType::U32).unwrap();
    let logits = model.logits(&pixels(), &ForwardCtx::eval()).unwrap();
    let loss = peftbench_train::cross_entropy(&logits, &labels, 0.0).unwrap();
    let loss_err =
        (loss.to_scalar::<f32>().unwrap() - step["loss"].to_vec1::<f32>().unwrap()[0]).abs();
    let grads = loss.backward().unwrap();
    let mut worst = 0.0f32;
    let mut checked = 0;
    for p in model.trainable().iter() {
        let key = format!(
            "base_model.model.{}",
            peftbench_methods::peft_format::transformers5_module_key(&p.name)
        );
        let want = step
            .get(&key)
            .unwrap_or_else(|| panic!("{}: no PEFT gradient under {key}", p.name));
        let got = grads
            .get(&p.var)
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        assert_eq!(got.dims(), want.dims(), "{}", p.name);
        let scale = max_error(want, &vec![0.0; want.elem_count()]).max(1e-3);
        let err = max_error(got, &want.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert!(
            err < 1e-4 * scale.max(1.0),
            "{}: max |ours - PEFT| = {err}",
            p.name
        );
        worst = worst.max(err);
        checked += 1;
    }
    eprintln!("dora step: |loss - PEFT| = {loss_err:.2e}, max |grad - PEFT| = {worst:.2e} over {checked} tensors");
    assert!(loss_err < 1e-5, "loss differs by {loss_err}");
    assert_eq!(checked, step.len() - 2, "every tensor PEFT trains");
}

#[test]
fn a_peft_adapter_saved_here_again_keeps_its_logits() {
    for folder in ["lora", "lora_top", "dora", "ia3", "prefix", "shira"] {
        let model =
            PeftModel::from_adapter(&fixtures().join(folder), Box::new(backbone())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path(), "fixture").unwrap();
        let again = PeftModel::from_adapter(dir.path(), Box::new(backbone())).unwrap();
        let x = pixels();
        let a: Vec<f32> = model
            .logits(&x, &ForwardCtx::eval())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = again
            .logits(&x, &ForwardCtx::eval())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b, "{folder}");
    }
}

/// Writes the fixture adapters as peftbench saves them into `$PEFTBENCH_EXPORT_DIR/<name>`, for
/// `ci/peft-python-interop.sh`, which loads them with Python PEFT and compares the logits with
/// `expected_logits.json` (the other direction of the test above).
#[test]
#[ignore = "run by ci/peft-python-interop.sh"]
fn export_adapters_for_python() {
    let out =
        PathBuf::from(std::env::var_os("PEFTBENCH_EXPORT_DIR").expect("set PEFTBENCH_EXPORT_DIR"));
    for folder in ["lora", "lora_top", "dora", "ia3", "shira"] {
        let model =
            PeftModel::from_adapter(&fixtures().join(folder), Box::new(backbone())).unwrap();
        model.save(&out.join(folder), "fixture").unwrap();
    }
    // Poly and MHR (tests/fixtures/peft_poly, made on the same ViT; see tests/poly.rs).
    let poly = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft_poly");
    for folder in ["poly", "mhr"] {
        let model = PeftModel::from_adapter(&poly.join(folder), Box::new(backbone())).unwrap();
        model.save(&out.join(folder), "fixture").unwrap();
    }
    // The MHR fixture carried to a new task (MHR-z and MHR-μ, fresh head): saved as one-task Poly
    // adapters, with the logits peftbench computes for them beside (`peftbench_logits.json`).
    for (folder, transfer) in [
        ("mhr_routing", peftbench_methods::Transfer::Routing),
        ("mhr_average", peftbench_methods::Transfer::AverageSkills),
    ] {
        let mut model = PeftModel::from_adapter(&poly.join("mhr"), Box::new(backbone())).unwrap();
        let init = peftbench_core::SeededInit::new(1, &Device::Cpu);
        model.transfer(transfer, 3, &init).unwrap();
        model.save(&out.join(folder), "fixture").unwrap();
        let logits: Vec<Vec<f32>> = model
            .logits(&pixels(), &ForwardCtx::eval())
            .unwrap()
            .to_vec2()
            .unwrap();
        std::fs::write(
            out.join(folder).join("peftbench_logits.json"),
            serde_json::to_string(&logits).unwrap(),
        )
        .unwrap();
    }
}
