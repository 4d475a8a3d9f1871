//! EnCodec against transformers' `EncodecModel` on a random miniature of the 32 kHz model that
//! `facebook/musicgen-small` carries (`ci/fixtures/encodec_random.py`): the codes of a test signal
//! are transformers', and decoding them gives transformers' audio within float rounding.

use std::path::PathBuf;

use candle_core::{DType, Device};
use peftbench_backbones::encodec::Encodec;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/encodec_random")
        .join(name)
}

#[test]
fn codes_and_audio_are_transformers() {
    let device = Device::Cpu;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("config.json")).unwrap()).unwrap();
    let codec = Encodec::load(&config, &fixture("model.safetensors"), "", &device).unwrap();
    assert_eq!(codec.codebooks(), 4);
    assert_eq!(codec.config().hop(), 640);
    let expected =
        candle_core::safetensors::load(fixture("expected.safetensors"), &device).unwrap();
    let audio = expected["audio"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let reference: Vec<Vec<u32>> = expected["codes"]
        .squeeze(0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let codes = codec.encode(&audio).unwrap();
    assert_eq!(codes, reference);

    let decoded = codec.decode(&reference).unwrap();
    let target = expected["decoded"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(decoded.len(), target.len());
    let peak = target.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = decoded
        .iter()
        .zip(&target)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("EnCodec decoding: largest difference {worst:e} (peak {peak})");
    assert!(
        worst <= 1e-4 * peak.max(1e-3),
        "{worst} against a peak of {peak}"
    );
}
