//! Training throughput on texts of mixed lengths, batched to the split's longest text (as before
//! per-batch padding), to each batch's own longest (as the runner does now), and with seeded
//! length bucketing (`text.length_buckets`), measured interleaved in one process:
//! `cargo bench -p peftbench-runner --bench text_padding`.
//!
//! The texts are generated reviews repeated one to sixteen times (about 8 to 130 tokens, cut at
//! 128), on a BERT of hidden 64, 2 layers, 4 heads with LoRA r 4, batch 16, one epoch per
//! measurement.

use std::time::Instant;

use candle_core::Device;
use peftbench_backbones::{Bert, BertConfig, TextEncoder};
use peftbench_core::SeededInit;
use peftbench_data_text::synthetic::review_topics;
use peftbench_data_text::LabelSet;
use peftbench_methods::PeftModel;
use peftbench_runner::demo_text::word_level_tokenizer;
use peftbench_runner::text::encode_classification;
use peftbench_train::{
    train, AdamWConfig, BatchSource, InMemoryBatches, Selection, TrainConfig, TrainOutcome,
};

fn main() -> anyhow::Result<()> {
    let mut examples = review_topics("en", 256, 11).expect("english");
    for (i, e) in examples.iter_mut().enumerate() {
        // A long tail: most texts short, some many times longer.
        let repeats = [1, 1, 1, 2, 2, 3, 4, 16][i % 8];
        e.text = std::iter::repeat_n(e.text.clone(), repeats)
            .collect::<Vec<_>>()
            .join(" ");
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tokenizer.json");
    word_level_tokenizer(&examples)?
        .save(&path, false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let encoder = TextEncoder::from_file(&path, 128)?;
    let labels = LabelSet::from_labels(examples.iter().map(|e| e.label.as_str()));
    let cut = encode_classification(&encoder, &examples, &labels, &Device::Cpu)?;
    let padded = InMemoryBatches::new(cut.inputs().clone(), cut.labels().clone())?;
    let bucketed = cut.clone().with_length_buckets()?;
    let mut cfg = BertConfig::new(encoder.vocab_size(), 64, 2, 4, 256);
    cfg.max_position_embeddings = 128;
    let bert = Bert::random(cfg, &SeededInit::new(0, &Device::Cpu))?;
    let train_cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        eval_batch_size: 64,
        lr: 1e-3,
        min_lr: 1e-5,
        warmup_epochs: 0,
        warmup_lr: 1e-3,
        adamw: AdamWConfig::default(),
        label_smoothing: 0.0,
        grad_clip: None,
        drop_path: 0.0,
        seed: 0,
        selection: Selection::Final,
    };
    let epoch = |data: &dyn BatchSource| -> anyhow::Result<f64> {
        let model = PeftModel::new(
            "lora",
            &serde_json::json!({"r": 4}),
            Box::new(bert.clone()),
            labels.len(),
            &SeededInit::new(1, &Device::Cpu),
        )?;
        let started = Instant::now();
        let outcome = train(&model, data, None, &train_cfg, &mut |_| {})?;
        anyhow::ensure!(matches!(outcome, TrainOutcome::Completed(_)), "diverged");
        Ok(data.num_examples() as f64 / started.elapsed().as_secs_f64())
    };
    println!(
        "{} texts, padded width {} tokens",
        examples.len(),
        cut.inputs().dim(1)?
    );
    let (mut before, mut after, mut buckets) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        before.push(epoch(&padded)?);
        after.push(epoch(&cut)?);
        buckets.push(epoch(&bucketed)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (b, a, k) = (
        median(&mut before),
        median(&mut after),
        median(&mut buckets),
    );
    println!("padded to the split's longest: {b:.1} examples/s (median of 3)");
    println!(
        "padded to each batch's longest: {a:.1} examples/s ({:.2}x)",
        a / b
    );
    println!("with length buckets: {k:.1} examples/s ({:.2}x)", k / b);
    Ok(())
}
