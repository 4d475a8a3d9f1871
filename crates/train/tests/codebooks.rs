//! MusicGen's delay pattern and per-codebook loss against transformers' `MusicgenForCausalLM`
//! on a random configuration (`ci/fixtures/musicgen_codebooks.py`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use peftbench_train::{delay_codebooks, per_codebook_cross_entropy};

fn fixture() -> (HashMap<String, Tensor>, u32) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/musicgen_codebooks.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let pad = tensors["logits"].dim(3).unwrap() as u32;
    (tensors, pad)
}

fn rows(t: &Tensor) -> Vec<Vec<Vec<u32>>> {
    t.to_dtype(DType::U32).unwrap().to_vec3::<u32>().unwrap()
}

/// The labels transformers' recipe makes from codes are the codes delayed by codebook.
#[test]
fn delayed_codes_are_transformers_training_labels() {
    let (t, pad) = fixture();
    for (codes, labels) in rows(&t["codes"]).iter().zip(rows(&t["labels"])) {
        assert_eq!(delay_codebooks(codes, pad), labels);
    }
}

/// Per-codebook cross-entropy over non-pad labels, and its mean is the model's loss.
#[test]
fn per_codebook_losses_match_transformers() {
    let (t, pad) = fixture();
    let losses = per_codebook_cross_entropy(&t["logits"], &t["labels"], pad).unwrap();
    let got = losses.to_vec1::<f32>().unwrap();
    let want = t["per_codebook"].to_vec1::<f32>().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{got:?} against {want:?}");
    }
    let mean = losses.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let loss = t["loss"].to_vec1::<f32>().unwrap()[0];
    assert!((mean - loss).abs() < 1e-5, "{mean} against {loss}");
    // A codebook with nothing but padding is an error, not a NaN.
    let all_pad = Tensor::full(pad, t["labels"].shape(), &Device::Cpu).unwrap();
    assert!(per_codebook_cross_entropy(&t["logits"], &all_pad, pad).is_err());
}
