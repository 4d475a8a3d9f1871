//! `harness predict` on adapters made with Python PEFT: the logits it prints are PyTorch's
//! (fixtures of crates/methods/tests/peft_interop.rs), and bad input is an error naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

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
