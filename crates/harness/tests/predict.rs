//! `harness predict` on adapters made with Python PEFT: the logits it prints are PyTorch's
//! (fixtures of crates/methods/tests/peft_interop.rs and ci/fixtures/predict_inception_vit.py),
//! images preprocessed as the checkpoint's preprocessor_config.json or the adapter's run record
//! says without any flag, and bad input is an error naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../methods/tests/fixtures/peft_vit")
}

fn predict(adapter: &str, files: &[PathBuf]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(dir.path())
        .env("PEFTBENCH_CACHE", dir.path().join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .arg("predict")
        .arg("--backbone")
        .arg(fixtures().join("backbone"))
        .arg("--adapter")
        .arg(fixtures().join(adapter))
        .args(files)
        .output()
        .unwrap()
}

#[test]
fn prints_pytorchs_classes_and_logits_as_json() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected_logits.json")).unwrap(),
    )
    .unwrap();
    for adapter in ["lora", "dora", "ia3", "prefix"] {
        let out = predict(adapter, &[fixtures().join("pixels.safetensors")]);
        assert!(
            out.status.success(),
            "{adapter}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows.len(), 2);
        for (row, want) in rows.iter().zip(expected[adapter].as_array().unwrap()) {
            let got: Vec<f64> = serde_json::from_value(row["logits"].clone()).unwrap();
            let want: Vec<f64> = serde_json::from_value(want.clone()).unwrap();
            let argmax = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
            assert_eq!(row["class"], argmax(&want), "{adapter}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{adapter}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn a_corrupt_image_is_reported_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let out = predict("lora", &[bad]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.png"), "{stderr}");
}

/// The fixture of ci/fixtures/predict_inception_vit.py: a tiny HF ViT whose
/// preprocessor_config.json normalises with mean = std = 0.5, a Python-PEFT LoRA adapter, two PNGs
/// and PyTorch's logits for them.
fn inception_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/predict_inception_vit")
}

fn predict_images(
    dir: &Path,
    adapter: &Path,
    files: &[&str],
    flags: &[&str],
) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(dir)
        .env("PEFTBENCH_CACHE", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .arg("predict")
        .arg("--backbone")
        .arg(inception_fixture().join("backbone"))
        .arg("--adapter")
        .arg(adapter)
        .args(files.iter().map(|f| inception_fixture().join(f)))
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn logits(row: &serde_json::Value) -> Vec<f64> {
    serde_json::from_value(row["logits"].clone()).unwrap()
}

fn max_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn a_hugging_face_checkpoints_preprocessor_config_is_applied_without_flags() {
    let dir = tempfile::tempdir().unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(inception_fixture().join("expected_logits.json")).unwrap(),
    )
    .unwrap();
    let adapter = inception_fixture().join("lora");
    // One image at the model's size, one resized (bilinear, as the processor says).
    let images = ["exact_32x32.png", "resized_48x40.png"];
    let rows = predict_images(dir.path(), &adapter, &images, &[]);
    for (row, image) in rows.iter().zip(images) {
        let want: Vec<f64> = serde_json::from_value(expected["logits"][image].clone()).unwrap();
        let error = max_difference(&logits(row), &want);
        assert!(error < 1e-4, "{image}: max |logit - PyTorch's| = {error}");
    }
    // The output says what was applied, and from where.
    let applied = &rows[0]["preprocessing"];
    assert_eq!(applied["image_mean"], serde_json::json!([0.5, 0.5, 0.5]));
    assert_eq!(applied["image_std"], serde_json::json!([0.5, 0.5, 0.5]));
    assert_eq!(applied["image_size"], 32);
    assert_eq!(applied["interpolation"], "bilinear");
    let source = applied["sources"]["normalization"].as_str().unwrap();
    assert!(
        source.ends_with("backbone/preprocessor_config.json"),
        "{source}"
    );

    // A flag still overrides: ImageNet statistics move the logits far from PyTorch's.
    let rows = predict_images(
        dir.path(),
        &adapter,
        &["exact_32x32.png"],
        &["--normalization", "imagenet"],
    );
    let want: Vec<f64> =
        serde_json::from_value(expected["logits"]["exact_32x32.png"].clone()).unwrap();
    assert!(max_difference(&logits(&rows[0]), &want) > 0.1);
    let applied = &rows[0]["preprocessing"];
    assert_eq!(
        applied["image_mean"],
        serde_json::json!([0.485, 0.456, 0.406])
    );
    assert_eq!(
        applied["sources"]["normalization"],
        "--normalization imagenet"
    );
    assert!(applied["sources"]["interpolation"]
        .as_str()
        .unwrap()
        .ends_with("preprocessor_config.json"));
}

#[test]
fn an_adapter_of_ours_is_read_with_its_run_records_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    // A run trained with ImageNet statistics on a checkpoint whose processor says 0.5/0.5: the
    // record, which says how the adapter was trained, wins.
    let suite = dir.path().join("record.yaml");
    std::fs::write(
        &suite,
        format!(
            "name: record
description: predict reads the run record
backbone: {{ checkpoint: {} }}
data: {{ format: generated, image_size: 32, train_examples: 16, eval_examples: 16 }}
preprocess: {{ image_size: 32, interpolation: bicubic, normalization: imagenet }}
protocol: {{ train_split: train, eval_split: test, selection: final }}
recipe: {{ epochs: 1, batch_size: 16, lr: 1.0e-3, warmup_epochs: 0, drop_path: 0.0 }}
seeds: [0]
tasks:
  - {{ name: position, num_classes: 9, generator: position }}
methods:
  - method: lora
    params: {{ r: 2 }}
",
            inception_fixture().join("backbone").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(dir.path())
        .env("PEFTBENCH_CACHE", dir.path().join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .arg("suite")
        .arg(&suite)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = &common::records(dir.path())[0];
    let adapter = dir
        .path()
        .join("results")
        .join(record["adapter_dir"].as_str().unwrap());
    let run_id = record["run_id"].as_str().unwrap();

    let rows = predict_images(dir.path(), &adapter, &["resized_48x40.png"], &[]);
    let applied = &rows[0]["preprocessing"];
    let source = applied["sources"]["normalization"].as_str().unwrap();
    assert!(
        source.starts_with("run record ") && source.ends_with(&format!("records/{run_id}.json")),
        "{source}"
    );
    assert_eq!(applied["interpolation"], "bicubic");
    let flagged = predict_images(
        dir.path(),
        &adapter,
        &["resized_48x40.png"],
        &["--normalization", "imagenet", "--interpolation", "bicubic"],
    );
    assert_eq!(logits(&rows[0]), logits(&flagged[0]));
    let checkpoints = predict_images(
        dir.path(),
        &adapter,
        &["resized_48x40.png"],
        &["--normalization", "inception"],
    );
    assert!(max_difference(&logits(&rows[0]), &logits(&checkpoints[0])) > 1e-3);
}
