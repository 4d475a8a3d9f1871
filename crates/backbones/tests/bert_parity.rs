//! The frozen BERT and XLM-R forwards equal candle-transformers' `BertModel` and
//! `XLMRobertaModel` on the same random weights, read from the same `config.json` +
//! `model.safetensors` through our checkpoint resolution, on a padded batch.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use peftbench_backbones::{resolve_checkpoint, Bert, BertConfig, NoHooks, Pooling};
use peftbench_core::{ForwardCtx, SeededInit};

fn small_config(model_type: &str) -> BertConfig {
    let mut cfg = BertConfig::new(50, 48, 3, 4, 96);
    cfg.model_type = model_type.into();
    cfg.max_position_embeddings = 24;
    if model_type == "xlm-roberta" {
        cfg.pad_token_id = 1;
        cfg.type_vocab_size = 1;
        cfg.layer_norm_eps = 1e-5;
    }
    cfg
}

/// Writes perturbed random weights (every bias and norm non-trivial) without a model prefix.
fn random_checkpoint(dir: &Path, cfg: &BertConfig) -> anyhow::Result<()> {
    let init = SeededInit::new(3, &Device::Cpu);
    let mut bert = Bert::random(cfg.clone(), &init)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in bert.named_tensors()? {
        let noise = init
            .fork(&name)
            .normal(t.shape(), 0.05)?
            .as_tensor()
            .detach();
        let key = name.split_once('.').unwrap().1.to_string();
        tensors.insert(key, (t + noise)?);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg.to_hf_json())?,
    )?;
    Ok(())
}

/// Three rows of different lengths, padded with `pad`.
fn padded_ids(pad: u32) -> anyhow::Result<(Tensor, Tensor)> {
    let rows: [&[u32]; 3] = [&[2, 7, 9, 11, 13, 3], &[2, 20, 3], &[2, 30, 31, 3]];
    let width = 6;
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for r in rows {
        for i in 0..width {
            ids.push(r.get(i).copied().unwrap_or(pad));
            mask.push(u32::from(i < r.len()));
        }
    }
    Ok((
        Tensor::from_vec(ids, (3, width), &Device::Cpu)?,
        Tensor::from_vec(mask, (3, width), &Device::Cpu)?,
    ))
}

fn max_diff_on_tokens(a: &Tensor, b: &Tensor, mask: &Tensor) -> anyhow::Result<(f32, f32)> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let diff = (a - b)?
        .abs()?
        .broadcast_mul(&m)?
        .max_all()?
        .to_scalar::<f32>()?;
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok((diff, scale))
}

fn var_builder(path: &Path) -> anyhow::Result<VarBuilder<'static>> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
}

/// A random BERT checkpoint read through our checkpoint resolution, loaded as ours and as
/// candle-transformers' `BertModel` (the folder lives as long as the returned guard).
fn bert_and_reference() -> anyhow::Result<(
    tempfile::TempDir,
    BertConfig,
    Bert,
    candle_transformers::models::bert::BertModel,
)> {
    let dir = tempfile::tempdir()?;
    let cfg = small_config("bert");
    random_checkpoint(dir.path(), &cfg)?;
    let files = resolve_checkpoint(dir.path().to_str().unwrap(), None, &[])?;
    let ours = Bert::load(&files.config, &files.weights, &Device::Cpu)?;
    let mut ref_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.config)?)?;
    ref_json["classifier_dropout"] = serde_json::Value::Null;
    let ref_cfg: candle_transformers::models::bert::Config = serde_json::from_value(ref_json)?;
    let reference =
        candle_transformers::models::bert::BertModel::load(var_builder(&files.weights)?, &ref_cfg)?;
    Ok((dir, cfg, ours, reference))
}

#[test]
fn frozen_bert_equals_candle_transformers_bert() -> anyhow::Result<()> {
    let (_dir, cfg, ours, reference) = bert_and_reference()?;

    let (ids, mask) = padded_ids(cfg.pad_token_id)?;
    let types = ids.zeros_like()?;
    let expected = reference.forward(&ids, &types, Some(&mask))?;
    let (got, got_mask) = ours.forward_tokens(&ids, None, None, &NoHooks, &ForwardCtx::eval())?;
    assert_eq!(
        got_mask.to_dtype(DType::U32)?.to_vec2::<u32>()?,
        mask.to_vec2::<u32>()?,
        "mask derived from pad_token_id"
    );
    let (diff, scale) = max_diff_on_tokens(&got, &expected, &mask)?;
    println!("BERT: max |ours - candle-transformers| = {diff:e} (scale {scale})");
    assert!(scale > 0.5, "states are not degenerate ({scale})");
    assert!(diff < 1e-5, "max |ours - candle-transformers| = {diff}");

    // Padding must not change the real tokens' states: row 1 alone equals row 1 in the batch.
    let alone = ids.narrow(0, 1, 1)?.narrow(1, 0, 3)?;
    let (single, _) = ours.forward_tokens(&alone, None, None, &NoHooks, &ForwardCtx::eval())?;
    let batched = got.narrow(0, 1, 1)?.narrow(1, 0, 3)?;
    let gap = (single - batched)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(gap < 1e-5, "padding leaks into attention: {gap}");
    Ok(())
}

/// A cross-encoder's input: `[CLS] query [SEP] document [SEP]` with segment 1 on the document,
/// passed as ids and segment ids stacked `[batch, 2, tokens]` through the `Backbone` interface,
/// equals candle-transformers' BERT given the same `token_type_ids`.
#[test]
fn sentence_pairs_read_their_segment_ids() -> anyhow::Result<()> {
    use peftbench_backbones::bert::split_pair_input;
    use peftbench_backbones::Backbone;
    let (_dir, cfg, ours, reference) = bert_and_reference()?;

    let (ids, mask) = padded_ids(cfg.pad_token_id)?;
    // The second segment starts at token 3 of row 0 and token 2 of rows 1 and 2.
    let types = Tensor::from_vec(
        vec![
            0u32, 0, 0, 1, 1, 1, //
            0, 0, 1, 0, 0, 0, //
            0, 0, 1, 1, 0, 0,
        ],
        (3, 6),
        &Device::Cpu,
    )?;
    let expected = reference.forward(&ids, &types, Some(&mask))?;
    let pairs = Tensor::stack(&[&ids, &types], 1)?;
    let (split_ids, split_types) = split_pair_input(&pairs)?;
    assert_eq!(split_ids.to_vec2::<u32>()?, ids.to_vec2::<u32>()?);
    assert_eq!(
        split_types.unwrap().to_vec2::<u32>()?,
        types.to_vec2::<u32>()?
    );
    let got = ours.forward_sequence(&pairs, &NoHooks, &ForwardCtx::eval())?;
    let (diff, _) = max_diff_on_tokens(&got, &expected, &mask)?;
    assert!(diff < 1e-5, "max |ours - candle-transformers| = {diff}");
    // The segments matter: the same ids as one segment give other states.
    let single = ours.forward_sequence(&ids, &NoHooks, &ForwardCtx::eval())?;
    let (gap, _) = max_diff_on_tokens(&single, &expected, &mask)?;
    assert!(gap > 1e-2, "segment ids were ignored ({gap})");
    assert!(split_pair_input(&Tensor::zeros((3, 3, 6), DType::U32, &Device::Cpu)?).is_err());
    Ok(())
}

#[test]
fn frozen_xlmr_equals_candle_transformers_xlm_roberta() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = small_config("xlm-roberta");
    random_checkpoint(dir.path(), &cfg)?;
    let files = resolve_checkpoint(dir.path().to_str().unwrap(), None, &[])?;
    let ours = Bert::load(&files.config, &files.weights, &Device::Cpu)?;
    let ref_cfg: candle_transformers::models::xlm_roberta::Config =
        serde_json::from_str(&std::fs::read_to_string(&files.config)?)?;
    let reference = candle_transformers::models::xlm_roberta::XLMRobertaModel::new(
        &ref_cfg,
        var_builder(&files.weights)?,
    )?;
    let (ids, mask) = padded_ids(cfg.pad_token_id)?;
    let types = ids.zeros_like()?;
    let expected = reference.forward(&ids, &mask, &types, None, None, None)?;
    let (got, _) = ours.forward_tokens(&ids, None, None, &NoHooks, &ForwardCtx::eval())?;
    let (diff, scale) = max_diff_on_tokens(&got, &expected, &mask)?;
    println!("XLM-R: max |ours - candle-transformers| = {diff:e} (scale {scale})");
    assert!(scale > 0.5, "states are not degenerate ({scale})");
    assert!(diff < 1e-5, "max |ours - candle-transformers| = {diff}");
    Ok(())
}

#[test]
fn mean_pooling_averages_attended_tokens_only() -> anyhow::Result<()> {
    let states = Tensor::new(&[[[1f32, 2.0], [3.0, 4.0], [100.0, 100.0]]], &Device::Cpu)?;
    let mask = Tensor::new(&[[1f32, 1.0, 0.0]], &Device::Cpu)?;
    let mean = Bert::pool(&states, &mask, Pooling::Mean)?.to_vec2::<f32>()?;
    assert_eq!(mean, vec![vec![2.0, 3.0]]);
    let cls = Bert::pool(&states, &mask, Pooling::Cls)?.to_vec2::<f32>()?;
    assert_eq!(cls, vec![vec![1.0, 2.0]]);
    Ok(())
}
