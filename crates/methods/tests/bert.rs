//! Every registered method on a BERT-family encoder reading sentence pairs (a cross-encoder's
//! `[batch, 2, tokens]` input of ids and segment ids): it attaches, calibrates where it asks to,
//! and its saved adapter (HF PEFT's format under BERT's module names, or peftbench's own) loads
//! back into a model with bit-identical scores, which is how a reranking sweep reuses one trained
//! cross-encoder for every task.

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Backbone, Bert, BertConfig};
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::{registry, PeftModel};
use peftbench_train::cross_entropy;
use serde_json::json;

/// hidden 16, 2 blocks, 2 heads, 30 tokens of vocabulary, two segments.
fn tiny_bert() -> Bert {
    let mut cfg = BertConfig::new(30, 16, 2, 2, 32);
    cfg.max_position_embeddings = 16;
    cfg.type_vocab_size = 2;
    Bert::random(cfg, &SeededInit::new(42, &Device::Cpu)).unwrap()
}

/// Four padded pairs `[CLS] a b [SEP] c d e [SEP]` with their segment ids, stacked `[4, 2, 9]`.
fn pairs() -> Tensor {
    let rows: [(&[u32], usize); 4] = [
        (&[2, 5, 6, 3, 7, 8, 9, 3], 4),
        (&[2, 10, 3, 11, 12, 3], 3),
        (&[2, 13, 14, 15, 3, 16, 3], 5),
        (&[2, 17, 3, 18, 19, 20, 21, 22, 3], 3),
    ];
    let width = 9;
    let (mut ids, mut types) = (Vec::new(), Vec::new());
    for (row, second) in rows {
        for i in 0..width {
            ids.push(row.get(i).copied().unwrap_or(0));
            types.push(u32::from(i >= second && i < row.len()));
        }
    }
    let ids = Tensor::from_vec(ids, (4, width), &Device::Cpu).unwrap();
    let types = Tensor::from_vec(types, (4, width), &Device::Cpu).unwrap();
    Tensor::stack(&[ids, types], 1).unwrap()
}

/// Sizes for a 16-wide encoder.
fn params(method: &str) -> serde_json::Value {
    match method {
        "lora" | "dora" => json!({"r": 2, "alpha": 2, "target_modules": ["query", "value", "fc2"]}),
        "bi-lora" => json!({"r": 2, "target_modules": ["query", "key"]}),
        "adapter" => json!({"placement": "pfeiffer", "bottleneck": 4}),
        "adaptformer" | "bi-adaptformer" => json!({"bottleneck": 4}),
        "vpt-shallow" | "vpt-deep" => json!({"prompts": 2}),
        "prefix-tuning" => json!({"num_virtual_tokens": 2}),
        "compacter" | "compacter++" => json!({"reduction_factor": 4}),
        _ => json!({}),
    }
}

/// Moves every trainable value, so the checks see more than initial values.
fn perturb(m: &PeftModel) {
    let noise = SeededInit::new(99, &Device::Cpu);
    for p in m.trainable().iter().filter(|p| p.var.elem_count() > 0) {
        let n = noise.fork(&p.name).normal(p.var.shape(), 0.1).unwrap();
        p.var
            .set(&(p.var.as_tensor() + n.as_tensor()).unwrap())
            .unwrap();
    }
}

/// Scores equal bit for bit, except CorDA's: it is saved as PEFT converts CorDA adapters, a
/// rank-`2r` LoRA against the original weight, and reloads as `W + s B'A'` rather than the
/// trained `W_residual + s B A`: the same weight, rounded differently.
fn check_scores(when: &str, got: &Tensor, expected: &[f32], method: &str) -> anyhow::Result<()> {
    let got = got.flatten_all()?.to_vec1::<f32>()?;
    let tolerance = if method == "corda" { 1e-5 } else { 0.0 };
    let worst = got
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    anyhow::ensure!(
        got.len() == expected.len() && worst <= tolerance,
        "scores after {when} {got:?} != {expected:?}"
    );
    Ok(())
}

#[test]
fn every_method_scores_pairs_and_its_saved_adapter_loads_back() {
    let x = pairs();
    let labels = Tensor::from_vec(vec![0u32, 1, 0, 1], 4, &Device::Cpu).unwrap();
    let ctx = ForwardCtx::eval();
    let mut failures = Vec::new();
    for method in registry() {
        let name = method.info().name;
        // Methods of another family's (MusicGen's adapters) do not attach here.
        if method
            .backbone_families()
            .is_some_and(|f| !f.contains(&tiny_bert().info().family.as_str()))
        {
            continue;
        }
        let init = SeededInit::new(7, &Device::Cpu).with_dtype(DType::F32);
        let attempt = || -> anyhow::Result<()> {
            let mut m = PeftModel::new(name, &params(name), Box::new(tiny_bert()), 1, &init)?;
            let mut calibration =
                std::iter::repeat_with(|| Ok((x.clone(), labels.clone()))).take(2);
            m.calibrate(&mut calibration, &|l, y| {
                let two = Tensor::cat(&[&l.zeros_like()?, l], 1)?;
                cross_entropy(&two, y, 0.0)
            })?;
            // Saved after training: multi-phase methods are in their last phase.
            let phases = m.phases().len();
            for phase in 0..phases {
                m.enter_phase(phase)?;
                perturb(&m);
            }
            // Every trainable value moved, so the check sees more than the initial values.
            perturb(&m);
            let expected = m.logits(&x, &ctx)?.flatten_all()?.to_vec1::<f32>()?;
            anyhow::ensure!(expected.len() == 4, "one score per pair: {expected:?}");
            let dir = tempfile::tempdir()?;
            m.save(dir.path(), "tiny-bert")?;
            let loaded = PeftModel::from_adapter(dir.path(), Box::new(tiny_bert()))?;
            check_scores("save/load", &loaded.logits(&x, &ctx)?, &expected, name)?;
            // A loaded adapter saved again loads to the same scores.
            let again = tempfile::tempdir()?;
            loaded.save(again.path(), "tiny-bert")?;
            let reloaded = PeftModel::from_adapter(again.path(), Box::new(tiny_bert()))?;
            check_scores(
                "a second save/load",
                &reloaded.logits(&x, &ctx)?,
                &expected,
                name,
            )?;
            Ok(())
        };
        if let Err(e) = attempt() {
            failures.push(format!("{name}: {e:#}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
