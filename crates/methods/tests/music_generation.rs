//! Registry methods on MusicGen through [`MusicModel`], on the backbones crate's random
//! miniature (`tests/fixtures/musicgen_random`, made by `ci/fixtures/musicgen_random.py`): the
//! training loss is transformers' `MusicgenForConditionalGeneration` loss; every method that
//! promises identity at initialisation keeps it; the study's adapters are sized by parameter
//! count and refuse other backbones; LoRA saves under MusicGen's module names.

use std::path::PathBuf;

use candle_core::{DType, Device};
use peftbench_backbones::{Backbone, BackboneInfo, Musicgen};
use peftbench_core::SeededInit;
use peftbench_methods::music_adapters::{
    width_for_params, AdapterKind, MusicAdapterConfig, Placement,
};
use peftbench_methods::music_generation::delayed_labels;
use peftbench_methods::{find_method, MusicModel};
use peftbench_train::{Batch, TrainModel};
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../backbones/tests/fixtures/musicgen_random")
        .join(name)
}

fn miniature() -> Musicgen {
    Musicgen::load(
        &fixture("config.json"),
        &fixture("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

/// The fixture's prompts and delay-padded labels as a batch (labels `[B, K, T]`).
fn fixture_batch() -> (Batch, f64) {
    let expected =
        candle_core::safetensors::load(fixture("expected.safetensors"), &Device::Cpu).unwrap();
    let u32_of = |name: &str| expected[name].to_dtype(DType::U32).unwrap();
    let labels = u32_of("labels")
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    let mut batch = Batch::new(u32_of("input_ids"), labels);
    batch.mask = Some(u32_of("attention_mask"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    (batch, json["loss"].as_f64().unwrap())
}

fn loss(model: &MusicModel, batch: &Batch) -> f64 {
    let ctx = peftbench_core::ForwardCtx::eval();
    f64::from(
        model
            .batch_loss(batch, &ctx, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    )
}

/// The training loss is transformers' (mean of the per-codebook cross-entropies over the
/// delay-valid positions), and every identity-at-initialisation method leaves it unchanged.
#[test]
fn the_loss_is_transformers_and_methods_start_at_the_base_model() {
    let (batch, expected) = fixture_batch();
    let init = SeededInit::new(1, &Device::Cpu);
    for (method, params) in [
        ("full", json!({})),
        (
            "lora",
            json!({"r": 4, "target_modules": ["query", "value", "cross_query", "fc1"]}),
        ),
        ("ia3", json!({})),
        ("dora", json!({"r": 2})),
        ("music-linear", json!({"placement": "block", "width": 4})),
        (
            "music-conv",
            json!({"placement": "post", "width": 4, "depth": 2}),
        ),
        (
            "music-transformer",
            json!({"placement": "conditioning", "width": 8}),
        ),
    ] {
        let model = MusicModel::new(method, &params, miniature(), &init)
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let got = loss(&model, &batch);
        assert!(
            (got - expected).abs() < 1e-5,
            "{method}: loss {got}, transformers {expected}"
        );
        let per = model
            .per_codebook_loss(&batch)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(per.len(), 4);
        let mean = per.iter().map(|&l| f64::from(l)).sum::<f64>() / 4.0;
        assert!((mean - got).abs() < 1e-6, "{method}");
        assert!(model.trainable_count() > 0, "{method}");
    }
    // Full fine-tuning trains the decoder and the projection, not the frozen text encoder.
    let mut base = miniature();
    let decoder = Backbone::num_params(&mut base);
    let full = MusicModel::new("full", &json!({}), miniature(), &init).unwrap();
    assert_eq!(full.trainable_count(), decoder);
}

/// The study's adapters: `params` picks the width whose closed-form count is nearest, and the
/// count trained is that closed form; they refuse a backbone that is not MusicGen, and a
/// misplaced `depth` names its field.
#[test]
fn music_adapters_are_sized_by_count_and_checked() {
    let init = SeededInit::new(2, &Device::Cpu);
    let (hidden, layers) = (16, 2);
    for (method, kind) in [
        ("music-linear", AdapterKind::Linear),
        ("music-conv", AdapterKind::Conv),
        ("music-transformer", AdapterKind::Transformer),
    ] {
        let params = json!({"placement": "post", "depth": 2, "params": 3000});
        let model = MusicModel::new(method, &params, miniature(), &init).unwrap();
        let shape = MusicAdapterConfig {
            kind,
            placement: Placement::Post,
            width: 1,
            depth: 2,
        };
        let width = width_for_params(&shape, 3000, hidden, layers);
        let expected = MusicAdapterConfig { width, ..shape }.count(hidden, layers);
        assert_eq!(model.trainable_count(), expected, "{method}");
    }
    let m = find_method("music-conv").unwrap();
    let vit = BackboneInfo {
        family: "vit".into(),
        ..miniature().info().clone()
    };
    let e = m.check_backbone(&json!({}), &vit).unwrap_err();
    assert!(e.contains("adapts MusicGen"), "{e}");
    let e = m
        .validate(&json!({"placement": "block", "depth": 3}))
        .unwrap_err();
    assert!(e.contains("field `depth`"), "{e}");
    let e = m.validate(&json!({"width": 4, "params": 100})).unwrap_err();
    assert!(e.contains("give one"), "{e}");
}

/// Delayed labels follow transformers' delay pattern over `frames + K - 1` steps: codebook `k`
/// starts `k` steps late and is padded after its last frame.
#[test]
fn delayed_labels_pad_before_and_after() {
    let codes = vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]];
    assert_eq!(
        delayed_labels(&codes, 0),
        vec![
            vec![1, 2, 3, 0, 0],
            vec![0, 4, 5, 6, 0],
            vec![0, 0, 7, 8, 9]
        ]
    );
}

/// LoRA on MusicGen saves in PEFT's layout under transformers' module names.
#[test]
fn lora_saves_under_musicgen_module_names() {
    let init = SeededInit::new(3, &Device::Cpu);
    let model = MusicModel::new("lora", &json!({"r": 2}), miniature(), &init).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bytes = model.save(dir.path(), "facebook/musicgen-small").unwrap();
    assert!(bytes > 0);
    let tensors =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(
        tensors
            .keys()
            .any(|k| k.contains("decoder.model.decoder.layers.1.self_attn.q_proj.lora_A")),
        "{:?}",
        tensors.keys().collect::<Vec<_>>()
    );
}
