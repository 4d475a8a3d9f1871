//! `harness inspect audio`: the written .npy equals HF `ASTFeatureExtractor(max_length=100)` on the
//! fixture clip (values computed with transformers 5.24 and torchaudio 2.11, see
//! crates/data-audio/tests/parity.rs), and a corrupt file is an error naming it.

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
