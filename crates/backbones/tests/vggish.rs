//! VGGish computes what PyPI torchvggish 0.2 computes: its input (`waveform_to_examples`, the
//! log-mel examples of AudioSet's numpy code) and, on a seeded miniature of the released layout
//! saved under torchvggish's state-dict names, its embedding (before the final ReLU, as
//! frechet_audio_distance uses it). Fixture: `fixtures/vggish/`, computed on CPU by
//! `ci/fixtures/vggish_torchvggish.py` (regenerate every fixture with `ci/fixtures/regenerate.sh`).
//! Needs nothing installed: the miniature's weights are committed (the release's are not
//! redistributable here and are 288 MB).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::vggish::Vggish;
use peftbench_data_audio::vggish_input::{examples, log_mel, EXAMPLE_FRAMES, MEL_BANDS};

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vggish/expected.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).expect("the VGGish fixture")
}

/// The largest absolute value of `t`.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.flatten_all())
        .and_then(|a| a.max(0))
        .and_then(|a| a.to_scalar::<f32>())
        .unwrap()
}

#[test]
fn log_mel_examples_equal_torchvggish() {
    let fixture = fixture();
    let audio = fixture["audio"].to_vec1::<f32>().unwrap();
    let expected = fixture["examples"].to_vec3::<f64>().unwrap();
    let frames = log_mel(&audio);
    assert_eq!(frames.len() / EXAMPLE_FRAMES, expected.len());
    let mut worst = 0f64;
    for (e, example) in expected.iter().enumerate() {
        for (f, row) in example.iter().enumerate() {
            for (b, &want) in row.iter().enumerate() {
                let got = frames[e * EXAMPLE_FRAMES + f][b];
                worst = worst.max((got - want).abs());
            }
        }
    }
    println!("log-mel: max |ours - torchvggish| {worst:.2e}");
    // Both in f64 from the same f32 samples; only the FFT's and the dot product's summation
    // orders differ.
    assert!(worst < 1e-9, "log-mel examples differ by {worst}");
    let ours = examples(&audio);
    assert_eq!(ours.len(), expected.len());
    assert_eq!(ours[0].len(), EXAMPLE_FRAMES * MEL_BANDS);
}

#[test]
fn miniature_embedding_equals_torchvggish() {
    let fixture = fixture();
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vggish/vggish_mini.pth");
    let model = Vggish::load(&weights, &Device::Cpu).unwrap();
    assert_eq!(model.embedding_size(), 128);
    // The network reads torchvggish's own examples (float32, as `torch.tensor(...).float()`).
    let rows: Vec<Vec<f32>> = fixture["examples"]
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let ours = model.embed(&rows).unwrap();
    let expected = &fixture["embedding"];
    assert_eq!(ours.dims(), expected.dims());
    let diff = max_abs(&(ours.clone() - expected).unwrap());
    let scale = max_abs(expected);
    println!("embedding: max |ours - torchvggish| {diff:.2e} (largest value {scale:.3})");
    assert!(diff < 1e-5 * scale.max(1.0), "embedding differs by {diff}");
    // Before the final ReLU: negative values survive (the fixture's embedding has them), and
    // clamping them gives torchvggish's forward output.
    let negatives = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .filter(|&&v| v < 0.0)
            .count()
    };
    assert!(
        negatives(expected) > 0,
        "the fixture cannot tell the ReLU apart"
    );
    assert!(
        negatives(&ours) > 0,
        "our embedding lost its negative values"
    );
    let diff = max_abs(&(ours.relu().unwrap() - &fixture["embedding_after_relu"]).unwrap());
    assert!(diff < 1e-5 * scale.max(1.0), "after the ReLU: {diff}");
}
