//! `harness inspect audio`: the written .npy equals HF `ASTFeatureExtractor(max_length=100)` on the
//! fixture clip (values computed with transformers 5.24 and torchaudio 2.11, see
//! crates/data-audio/tests/parity.rs), with --frames or from the checkpoint's
//! preprocessor_config.json, and a corrupt file is an error naming it. `harness inspect image`: the
//! input equals the pixel values of the checkpoint's own image processor
//! (ci/fixtures/predict_inception_vit.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use peftbench_data_audio::npy::read_npy;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data-audio/tests/fixtures")
        .join(name)
}

#[test]
fn inspect_audio_writes_the_model_input_as_npy() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("features.npy");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["inspect", "audio"])
        .arg(fixture("speech_yes_16k.wav"))
        .args(["--frames", "100", "--out"])
        .arg(&out_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[100, 128] (zero-padded from 61 frames)"),
        "{stdout}"
    );
    let (shape, ours) = read_npy(&out_path).unwrap();
    let (_, reference) = read_npy(&fixture("speech_yes_16k.ast100.npy")).unwrap();
    assert_eq!(shape, vec![100, 128]);
    let err = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-4, "max error {err}");

    let bad = dir.path().join("not-audio.wav");
    std::fs::write(&bad, b"hello").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["inspect", "audio"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-audio.wav"));
}

/// The image fixture of ci/fixtures/predict_inception_vit.py.
fn image_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/predict_inception_vit")
        .join(name)
}

#[test]
fn inspect_image_writes_the_checkpoints_processor_output() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("pixels.npy");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .env("PEFTBENCH_CACHE", dir.path().join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .args(["inspect", "image"])
        .arg(image_fixture("exact_32x32.png"))
        .arg("--backbone")
        .arg(image_fixture("backbone"))
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What was applied, and that it came from the checkpoint's preprocessor_config.json.
    assert!(
        stdout.contains("mean [0.5, 0.5, 0.5], over std [0.5, 0.5, 0.5]")
            && stdout.contains("preprocessor_config.json"),
        "{stdout}"
    );
    let (shape, ours) = read_npy(&out_path).unwrap();
    let (_, reference) = read_npy(&image_fixture("exact_32x32.pixel_values.npy")).unwrap();
    assert_eq!(shape, vec![3, 32, 32]);
    let err = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-6, "max error {err}");
}

#[test]
fn inspect_audio_takes_frames_and_statistics_from_the_checkpoint() {
    // An AST checkpoint folder whose feature extractor keeps 100 frames (as HF's Speech Commands
    // ASTs do): no --frames needed to get the HF output for max_length=100.
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("ast");
    std::fs::create_dir_all(&checkpoint).unwrap();
    std::fs::write(checkpoint.join("config.json"), "{}").unwrap();
    std::fs::write(checkpoint.join("model.safetensors"), "").unwrap();
    std::fs::write(
        checkpoint.join("preprocessor_config.json"),
        r#"{"feature_extractor_type": "ASTFeatureExtractor", "max_length": 100,
            "num_mel_bins": 128, "mean": -4.2677393, "std": 4.5689974,
            "sampling_rate": 16000, "do_normalize": true}"#,
    )
    .unwrap();
    let out_path = dir.path().join("features.npy");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .env("HF_HUB_OFFLINE", "1")
        .args(["inspect", "audio"])
        .arg(fixture("speech_yes_16k.wav"))
        .arg("--backbone")
        .arg(&checkpoint)
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("100 frames, 128 mel bins") && stdout.contains("preprocessor_config.json"),
        "{stdout}"
    );
    let (shape, ours) = read_npy(&out_path).unwrap();
    let (_, reference) = read_npy(&fixture("speech_yes_16k.ast100.npy")).unwrap();
    assert_eq!(shape, vec![100, 128]);
    let err = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-4, "max error {err}");
}
