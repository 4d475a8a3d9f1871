//! T5 against transformers' `T5ForConditionalGeneration` on two small random checkpoints written by
//! ci/fixtures/t5_tiny.py: `relu` (ReLU feed-forward, separate head, 3 encoder + 2 decoder blocks,
//! the FLAN-T5 file layout) and `gated` (gated-GELU, tied head with the d_model^-0.5 output
//! scaling, the transformers 5 `save_pretrained` layout). Logits, loss, `_shift_right` and the
//! greedy and 3-beam generations are compared with transformers' own outputs.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;

use candle_core::{Device, Result, Tensor, Var};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite, NoHooks, T5};
use peftbench_core::ForwardCtx;
use serde::Deserialize;

const CONFIGS: [&str; 2] = ["relu", "gated"];

#[derive(Deserialize)]
struct Expected {
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u32>>,
    labels: Vec<Vec<i64>>,
    decoder_input_ids: Vec<Vec<i64>>,
    decoder_attention_mask: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
    loss: f64,
    max_length: usize,
    greedy: Vec<Vec<u32>>,
    beam3: Vec<Vec<u32>>,
}

fn fixture(name: &str) -> anyhow::Result<(T5, Expected)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/t5_tiny")
        .join(name);
    let model = T5::load(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        &Device::Cpu,
    )?;
    let expected = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
    Ok((model, expected))
}

fn tensor<T: candle_core::WithDType>(rows: &[Vec<T>]) -> Result<Tensor> {
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()
}

#[test]
fn logits_and_loss_match_transformers() -> anyhow::Result<()> {
    for name in CONFIGS {
        let (model, exp) = fixture(name)?;
        let labels = tensor(&exp.labels)?;
        let decoder_ids = model.shift_right(&labels)?;
        assert_eq!(
            decoder_ids.to_vec2::<i64>()?,
            exp.decoder_input_ids,
            "{name}"
        );
        let logits = model.forward(
            &tensor(&exp.input_ids)?,
            Some(&tensor(&exp.attention_mask)?),
            &decoder_ids,
            Some(&tensor(&exp.decoder_attention_mask)?),
            &NoHooks,
            &ForwardCtx::eval(),
        )?;
        let reference = Tensor::new(exp.logits.clone(), &Device::Cpu)?;
        let logits_err = max_abs_diff(&logits, &reference)?;
        let loss = T5::loss(&logits, &labels)?.to_scalar::<f32>()? as f64;
        let loss_err = (loss - exp.loss).abs();
        println!("{name}: logits max |err| {logits_err:.2e}, loss {loss} |err| {loss_err:.2e}");
        assert!(logits_err < 1e-4, "{name}: logits differ by {logits_err}");
        assert!(loss_err < 1e-5, "{name}: loss {loss} vs {}", exp.loss);
    }
    Ok(())
}

#[test]
fn generation_matches_transformers_generate() -> anyhow::Result<()> {
    for name in CONFIGS {
        let (model, exp) = fixture(name)?;
        let ids = tensor(&exp.input_ids)?;
        let mask = tensor(&exp.attention_mask)?;
        let greedy = model.greedy(&ids, Some(&mask), exp.max_length, &NoHooks)?;
        assert_eq!(greedy, exp.greedy, "{name}: greedy");
        let beam = model.beam_search(&ids, Some(&mask), 3, exp.max_length, 1.0, &NoHooks)?;
        assert_eq!(beam, exp.beam3, "{name}: beam search, 3 beams");
    }
    Ok(())
}

/// Decoding one token at a time through the cache gives the teacher-forced logits.
#[test]
fn cached_steps_equal_the_full_sequence() -> anyhow::Result<()> {
    for name in CONFIGS {
        let (model, exp) = fixture(name)?;
        let ctx = ForwardCtx::eval();
        let ids = tensor(&exp.input_ids)?;
        let mask = tensor(&exp.attention_mask)?;
        let decoder_ids = tensor(&exp.decoder_input_ids)?;
        let full = model.forward(&ids, Some(&mask), &decoder_ids, None, &NoHooks, &ctx)?;
        let states = model.encode(&ids, Some(&mask), &NoHooks, &ctx)?;
        let mut cache = model.start_decoding(&states, Some(&mask), &NoHooks, &ctx)?;
        let steps = (0..decoder_ids.dim(1)?)
            .map(|t| {
                let step = decoder_ids.narrow(1, t, 1)?;
                model.decode(&step, None, &mut cache, &NoHooks, &ctx)
            })
            .collect::<Result<Vec<_>>>()?;
        assert_eq!(cache.len(), decoder_ids.dim(1)?);
        let err = max_abs_diff(&Tensor::cat(&steps, 1)?, &full)?;
        println!("{name}: cached vs full max |err| {err:.2e}");
        assert!(err < 1e-5, "{name}: cached decoding differs by {err}");
    }
    Ok(())
}

/// Records every `(block, site)` the model calls `linear` at, and scales one site's output.
struct Recorder {
    seen: RefCell<BTreeSet<(usize, LinearSite)>>,
    scale: Option<(usize, LinearSite)>,
}

impl Hooks for Recorder {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.seen.borrow_mut().insert((layer, site));
        let y = base.forward(x)?;
        if self.scale == Some((layer, site)) {
            y * 2.0
        } else {
            Ok(y)
        }
    }
}

/// Both stacks' self-attention and feed-forward projections are sites, decoder blocks numbered
/// after the encoder's, and a hook at a decoder site changes the logits.
#[test]
fn hooks_reach_both_stacks() -> anyhow::Result<()> {
    let (model, exp) = fixture("relu")?;
    let ctx = ForwardCtx::eval();
    let ids = tensor(&exp.input_ids)?;
    let decoder_ids = tensor(&exp.decoder_input_ids)?;
    let run = |hooks: &dyn Hooks| model.forward(&ids, None, &decoder_ids, None, hooks, &ctx);
    let recorder = Recorder {
        seen: RefCell::default(),
        scale: None,
    };
    let plain = run(&recorder)?;
    assert_eq!(model.num_blocks(), 5);
    // Decoder blocks (3 and 4) also have the cross-attention sites.
    let all: BTreeSet<_> = (0..model.num_blocks())
        .flat_map(|l| LinearSite::ALL.map(|s| (l, s)))
        .chain((3..5).flat_map(|l| LinearSite::CROSS_ATTENTION.map(|s| (l, s))))
        .collect();
    assert_eq!(*recorder.seen.borrow(), all);
    assert_eq!(
        model.module_path(3, LinearSite::Value),
        "decoder.block.0.layer.0.SelfAttention.v"
    );
    assert_eq!(
        model.module_path(1, LinearSite::Fc2),
        "encoder.block.1.layer.1.DenseReluDense.wo"
    );
    assert_eq!(model.linear(4, LinearSite::Fc1).weight.dims(), &[32, 16]);

    let scaled = Recorder {
        seen: RefCell::default(),
        scale: Some((4, LinearSite::Fc2)),
    };
    let changed = max_abs_diff(&run(&scaled)?, &plain)?;
    assert!(changed > 1e-3, "the hook had no effect ({changed})");
    Ok(())
}

/// Every tensor of the checkpoint is visited under its file name (the FLAN-T5 layout's copies of
/// the embeddings under the stacks' names aside).
#[test]
fn parameters_are_visited_under_checkpoint_names() -> anyhow::Result<()> {
    for name in CONFIGS {
        let (mut model, _) = fixture(name)?;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/t5_tiny")
            .join(name);
        let file = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
        let in_file: BTreeSet<String> = file
            .keys()
            .filter(|k| !k.ends_with("embed_tokens.weight"))
            .cloned()
            .collect();
        let mut visited = BTreeSet::new();
        model.visit_params(&mut |key, t| {
            assert_eq!(t.dims(), file[key].dims(), "{key}");
            visited.insert(key.to_string());
            Ok(())
        })?;
        assert_eq!(visited, in_file, "{name}");
    }
    Ok(())
}

/// The teacher-forced loss reaches every pretrained tensor (no op on the way drops gradients), so
/// full fine-tuning and methods that train inside the blocks can use it.
#[test]
fn loss_gradients_reach_every_tensor() -> anyhow::Result<()> {
    for name in CONFIGS {
        let (mut model, exp) = fixture(name)?;
        let mut vars = Vec::new();
        model.visit_params(&mut |key, t| {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            vars.push((key.to_string(), var));
            Ok(())
        })?;
        let labels = tensor(&exp.labels)?;
        let logits = model.forward(
            &tensor(&exp.input_ids)?,
            Some(&tensor(&exp.attention_mask)?),
            &model.shift_right(&labels)?,
            Some(&tensor(&exp.decoder_attention_mask)?),
            &NoHooks,
            &ForwardCtx::train(3, 0.0),
        )?;
        let grads = T5::loss(&logits, &labels)?.backward()?;
        for (key, var) in &vars {
            let grad = grads
                .get(var)
                .ok_or_else(|| anyhow::anyhow!("{name}: no gradient for {key}"))?;
            let norm = grad.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0, "{name}: zero gradient for {key}");
        }
    }
    Ok(())
}

/// The decoder's cross-attention projections are sites of every decoder block, under their HF
/// module names; a hook at each one changes the logits, and hooks that change nothing (the
/// recorder) still give transformers' logits and generations, through the cache as well.
#[test]
fn cross_attention_sites_are_hooked() -> anyhow::Result<()> {
    for name in CONFIGS {
        let (model, exp) = fixture(name)?;
        let ctx = ForwardCtx::eval();
        let ids = tensor(&exp.input_ids)?;
        let mask = tensor(&exp.attention_mask)?;
        let labels = tensor(&exp.labels)?;
        let decoder_ids = model.shift_right(&labels)?;
        let decoder_mask = tensor(&exp.decoder_attention_mask)?;
        let run = |hooks: &dyn Hooks| {
            model.forward(
                &ids,
                Some(&mask),
                &decoder_ids,
                Some(&decoder_mask),
                hooks,
                &ctx,
            )
        };
        let encoder_blocks = model.config().num_layers;
        let decoder_blocks: Vec<usize> = (encoder_blocks..model.num_blocks()).collect();

        // No-op hooks at every site still match transformers.
        let recorder = Recorder {
            seen: RefCell::default(),
            scale: None,
        };
        let plain = run(&recorder)?;
        let reference = Tensor::new(exp.logits.clone(), &Device::Cpu)?;
        let err = max_abs_diff(&plain, &reference)?;
        assert!(
            err < 1e-4,
            "{name}: logits differ by {err} with no-op hooks"
        );
        let seen = recorder.seen.borrow();
        for site in LinearSite::CROSS_ATTENTION {
            let blocks: Vec<usize> = seen
                .iter()
                .filter(|(_, s)| *s == site)
                .map(|(l, _)| *l)
                .collect();
            assert_eq!(blocks, decoder_blocks, "{name}: blocks calling {site:?}");
        }
        drop(seen);
        let greedy = model.greedy(&ids, Some(&mask), exp.max_length, &recorder)?;
        assert_eq!(greedy, exp.greedy, "{name}: greedy with no-op hooks");
        let beam = model.beam_search(&ids, Some(&mask), 3, exp.max_length, 1.0, &recorder)?;
        assert_eq!(beam, exp.beam3, "{name}: beam search with no-op hooks");

        // A hook at each cross-attention site of each decoder block changes the logits, in the
        // teacher-forced pass and through the cache (keys and values computed once per cache).
        for &l in &decoder_blocks {
            for site in LinearSite::CROSS_ATTENTION {
                let scaled = Recorder {
                    seen: RefCell::default(),
                    scale: Some((l, site)),
                };
                let changed = max_abs_diff(&run(&scaled)?, &plain)?;
                assert!(
                    changed > 1e-4,
                    "{name}: a hook at block {l} {site:?} had no effect ({changed})"
                );
                let states = model.encode(&ids, Some(&mask), &scaled, &ctx)?;
                let mut cache = model.start_decoding(&states, Some(&mask), &scaled, &ctx)?;
                let steps = (0..decoder_ids.dim(1)?)
                    .map(|t| {
                        let step = decoder_ids.narrow(1, t, 1)?;
                        model.decode(&step, None, &mut cache, &scaled, &ctx)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let full = model.forward(&ids, Some(&mask), &decoder_ids, None, &scaled, &ctx)?;
                let err = max_abs_diff(&Tensor::cat(&steps, 1)?, &full)?;
                assert!(
                    err < 1e-5,
                    "{name}: cached decoding with a hook at block {l} {site:?} differs by {err}"
                );
            }
        }
    }

    let (model, _) = fixture("relu")?;
    assert_eq!(
        model.module_path(3, LinearSite::CrossQuery),
        "decoder.block.0.layer.1.EncDecAttention.q"
    );
    assert_eq!(
        model.module_path(4, LinearSite::CrossAttentionOutput),
        "decoder.block.1.layer.1.EncDecAttention.o"
    );
    assert_eq!(
        model.module_path(4, LinearSite::Query),
        "decoder.block.1.layer.0.SelfAttention.q"
    );
    assert!(model.has_linear(3, LinearSite::CrossKey));
    assert!(!model.has_linear(2, LinearSite::CrossKey));
    assert!(model.has_linear(2, LinearSite::Key));
    // The cross-attention's own weights, not the self-attention's.
    let cross = &model.linear(3, LinearSite::CrossValue).weight;
    let own = &model.linear(3, LinearSite::Value).weight;
    assert!(max_abs_diff(cross, own)? > 0.0);
    Ok(())
}
