//! The demo text backbone: pretrained on first use into the project's hub cache, loaded back from
//! it (encoder, tokenizer) without retraining, and good at its upstream task (masked words).

use candle_core::Device;
use peftbench_backbones::{Backbone, Bert, TextEncoder};
use peftbench_runner::demo_text::{ensure_demo_text_backbone, DEMO_TEXT_MAX_TOKENS};
use peftbench_runner::Paths;

#[test]
fn pretrained_once_cached_and_loaded_back() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        results: dir.path().join("results"),
        reports: dir.path().join("reports"),
        data_dir: None,
        cache: dir.path().join("cache"),
    };
    let files = ensure_demo_text_backbone(&paths, true).unwrap();
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            files
                .checkpoint
                .config
                .with_file_name("peftbench_pretraining.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let accuracy = card["held_out_masked_token_accuracy"].as_f64().unwrap();
    // Chance is about 1 / vocabulary (several hundred words); most masked words are function words
    // or topic words their context narrows down.
    assert!(accuracy > 0.5, "masked-token accuracy {accuracy}");

    let modified = std::fs::metadata(&files.checkpoint.weights)
        .unwrap()
        .modified()
        .unwrap();
    let again = ensure_demo_text_backbone(&paths, true).unwrap();
    assert_eq!(again.checkpoint.weights, files.checkpoint.weights);
    assert_eq!(
        std::fs::metadata(&again.checkpoint.weights)
            .unwrap()
            .modified()
            .unwrap(),
        modified,
        "the cached snapshot is reused, not retrained"
    );

    let encoder = TextEncoder::from_file(&files.tokenizer, DEMO_TEXT_MAX_TOKENS).unwrap();
    let bert = Bert::load(
        &files.checkpoint.config,
        &files.checkpoint.weights,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(bert.config().vocab_size, encoder.vocab_size());
    assert_eq!(bert.info().family, "bert");
}
