//! Every registered method attaches to the Audio Spectrogram Transformer through the same sites as to
//! ViT (the shared encoder blocks), calibrates where it asks to, and trains: on a tiny random AST over
//! `[batch, frames, mel]` inputs, a few AdamW steps on a fixed batch lower the loss, and the adapter
//! names the AST's module paths in the PEFT format (transformers 5 names, as for ViT).

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Ast, AstConfig, Backbone};
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::{registry, PeftModel};
use peftbench_train::{cross_entropy, AdamW, AdamWConfig};
use serde_json::json;

const CLASSES: usize = 3;

/// hidden 16, 2 blocks, 2 heads, 32 frames x 32 mel bins in 16x16 patches with stride 8: 3 x 3
/// overlapping patches plus the CLS and distillation tokens.
fn tiny_ast() -> Ast {
    let mut cfg = AstConfig::new(16, 2, 2, 32, 32, 32);
    cfg.frequency_stride = 8;
    cfg.time_stride = 8;
    Ast::random(cfg, &SeededInit::new(42, &Device::Cpu)).unwrap()
}

/// A separable batch: the class shifts the log-mel level of a band of bins.
fn batch() -> (Tensor, Tensor) {
    let n = 12;
    let noise = SeededInit::new(3, &Device::Cpu)
        .normal((n, 32, 32), 0.3)
        .unwrap()
        .as_tensor()
        .detach();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % CLASSES as u32).collect();
    let mut level = vec![0f32; n * 32 * 32];
    for (i, &l) in labels.iter().enumerate() {
        for t in 0..32 {
            for m in (l as usize * 10)..(l as usize * 10 + 10) {
                level[(i * 32 + t) * 32 + m] = 1.0;
            }
        }
    }
    let level = Tensor::from_vec(level, (n, 32, 32), &Device::Cpu).unwrap();
    (
        (noise + level).unwrap(),
        Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
    )
}

/// Parameters for methods whose defaults are sized for ViT-B (widths larger than 16, ranks).
fn params(method: &str) -> serde_json::Value {
    match method {
        "lora" | "dora" => {
            json!({"r": 2, "alpha": 2, "target_modules": ["query", "key"]})
        }
        "bi-lora" => json!({"r": 2, "target_modules": ["query", "key"]}),
        "adapter" => json!({"placement": "pfeiffer", "bottleneck": 4}),
        "adaptformer" | "bi-adaptformer" => json!({"bottleneck": 4}),
        "vpt-shallow" | "vpt-deep" => json!({"prompts": 2}),
        "prefix-tuning" => json!({"num_virtual_tokens": 2}),
        "compacter" | "compacter++" => json!({"reduction_factor": 4}),
        _ => json!({}),
    }
}

#[test]
fn every_method_attaches_to_ast_and_trains() {
    let (x, y) = batch();
    let mut failures = Vec::new();
    for method in registry() {
        let name = method.info().name;
        // Methods of another family's (MusicGen's adapters) do not attach here.
        if method
            .backbone_families()
            .is_some_and(|f| !f.contains(&tiny_ast().info().family.as_str()))
        {
            continue;
        }
        let init = SeededInit::new(7, &Device::Cpu).with_dtype(DType::F32);
        let mut m = match PeftModel::new(name, &params(name), Box::new(tiny_ast()), CLASSES, &init)
        {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: attach: {e:#}"));
                continue;
            }
        };
        let mut calibration = std::iter::repeat_with(|| Ok((x.clone(), y.clone()))).take(4);
        if let Err(e) = m.calibrate(&mut calibration, &|l, y| cross_entropy(l, y, 0.0)) {
            failures.push(format!("{name}: calibrate: {e:#}"));
            continue;
        }
        // Multi-phase methods train their first phase here.
        if !m.phases().is_empty() {
            m.enter_phase(0).unwrap();
        }
        let mut opt = AdamW::new(
            m.trainable(),
            AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        )
        .unwrap();
        let loss = |m: &PeftModel| {
            cross_entropy(&m.logits(&x, &ForwardCtx::train(0, 0.0)).unwrap(), &y, 0.0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let first = loss(&m);
        for _ in 0..10 {
            let l =
                cross_entropy(&m.logits(&x, &ForwardCtx::train(0, 0.0)).unwrap(), &y, 0.0).unwrap();
            opt.step(&l.backward().unwrap(), 1e-2).unwrap();
        }
        let last = loss(&m);
        if !(last.is_finite() && last < first) {
            failures.push(format!("{name}: loss {first} -> {last}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn lora_on_ast_saves_peft_module_paths() {
    let init = SeededInit::new(7, &Device::Cpu);
    let m = PeftModel::new(
        "lora",
        &params("lora"),
        Box::new(tiny_ast()),
        CLASSES,
        &init,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), "tiny-ast").unwrap();
    let saved =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(
        saved.keys().any(|k| k
            == "base_model.model.audio_spectrogram_transformer.layers.1.attention.k_proj.lora_A.weight"),
        "{:?}",
        saved.keys().collect::<Vec<_>>()
    );
}

/// What a method adds to an AST is named after the AST's modules (`audio_spectrogram_transformer.
/// encoder.layer.N...`), never after ViT's.
#[test]
fn added_modules_are_named_after_the_ast() {
    let mut wrong = Vec::new();
    for method in registry() {
        let name = method.info().name;
        // Methods of another family's (MusicGen's adapters) do not attach here.
        if method
            .backbone_families()
            .is_some_and(|f| !f.contains(&tiny_ast().info().family.as_str()))
        {
            continue;
        }
        let init = SeededInit::new(7, &Device::Cpu);
        let m = PeftModel::new(name, &params(name), Box::new(tiny_ast()), CLASSES, &init).unwrap();
        for v in m.trainable().iter() {
            if v.name.starts_with("vit.") {
                wrong.push(format!("{name}: {}", v.name));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "ViT names on an AST:\n{}",
        wrong.join("\n")
    );
}
