//! MusicGen against transformers' `MusicgenForConditionalGeneration` on a random miniature (T5
//! text encoder 24 wide, decoder 16 wide with 4 codebooks, so `enc_to_dec_proj` is used; a padded
//! prompt): teacher-forced logits and the per-codebook loss on delay-padded labels. Fixture and
//! the script that wrote it: `tests/fixtures/musicgen_random/`, `ci/fixtures/musicgen_random.py`.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::musicgen::{GenerationOptions, Musicgen, MusicgenConfig};
use peftbench_backbones::NoHooks;
use peftbench_core::ForwardCtx;
use peftbench_train::codebooks::per_codebook_cross_entropy;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/musicgen_random")
        .join(name)
}

fn load() -> (Musicgen, HashMap<String, Tensor>) {
    let model = Musicgen::load(
        &fixture("config.json"),
        &fixture("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let expected =
        candle_core::safetensors::load(fixture("expected.safetensors"), &Device::Cpu).unwrap();
    (model, expected)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn musicgen_matches_transformers_on_a_random_miniature() {
    let (model, expected) = load();
    let input_ids = expected["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = expected["attention_mask"].to_dtype(DType::U32).unwrap();
    // transformers' labels are [batch, steps, codebooks]; ours [batch, codebooks, steps].
    let labels = expected["labels"]
        .to_dtype(DType::U32)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    let tokens = model.shift_right(&labels).unwrap();
    assert_eq!(
        tokens.to_vec3::<u32>().unwrap(),
        expected["decoder_input_ids"]
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec3::<u32>()
            .unwrap()
    );
    let logits = model
        .forward(
            &input_ids,
            Some(&mask),
            &tokens,
            &NoHooks,
            &ForwardCtx::eval(),
        )
        .unwrap();
    let (b, k, t, v) = logits.dims4().unwrap();
    assert_eq!((b, k, t, v), (2, 4, 7, 32));
    // transformers returns them as [batch * codebooks, steps, vocab].
    let want = expected["logits"].reshape((b, k, t, v)).unwrap();
    let diff = max_diff(&logits, &want);
    assert!(diff < 1e-4, "max |logit difference| {diff}");

    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let want_loss = serde_json::from_str::<serde_json::Value>(&text).unwrap()["loss"]
        .as_f64()
        .unwrap();
    let pad = model.config().decoder.pad_token_id;
    let loss = per_codebook_cross_entropy(&logits, &labels, pad)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("max |logit difference| {diff:.2e}; loss {loss} against transformers' {want_loss}");
    assert!(
        (f64::from(loss) - want_loss).abs() < 1e-5,
        "{loss} vs {want_loss}"
    );

    // The padded prompt position changes nothing: a prompt cut before it gives the same logits.
    let short_ids = input_ids.narrow(0, 1, 1).unwrap().narrow(1, 0, 4).unwrap();
    let short = model
        .forward(
            &short_ids,
            None,
            &tokens.narrow(0, 1, 1).unwrap(),
            &NoHooks,
            &ForwardCtx::eval(),
        )
        .unwrap();
    assert!(max_diff(&short, &logits.narrow(0, 1, 1).unwrap()) < 1e-5);
}

/// A configuration this implementation does not run, or a checkpoint missing a tensor, is an
/// error that names the field or the tensor.
#[test]
fn musicgen_refuses_what_it_cannot_run() {
    let text = std::fs::read_to_string(fixture("config.json")).unwrap();
    let cfg: MusicgenConfig = serde_json::from_str(&text).unwrap();
    let mut tensors =
        candle_core::safetensors::load(fixture("model.safetensors"), &Device::Cpu).unwrap();

    let mut relu = cfg.clone();
    relu.decoder.activation_function = "relu".into();
    let err = Musicgen::from_tensors(relu, &tensors, "fixture")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`activation_function` `relu`"), "{err}");

    let mut stereo = cfg.clone();
    stereo.decoder.audio_channels = 2;
    let err = Musicgen::from_tensors(stereo, &tensors, "fixture")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`audio_channels` 2"), "{err}");

    // The text encoder is T5's encoder alone: it encodes, and refuses to decode.
    let model = Musicgen::from_tensors(cfg.clone(), &tensors, "fixture").unwrap();
    let ids = Tensor::new(&[[5u32, 9, 3]], &Device::Cpu).unwrap();
    let states = model
        .encode_text(&ids, None, &NoHooks, &ForwardCtx::eval())
        .unwrap();
    assert_eq!(states.dims(), [1, 3, 16]);
    let text_states = model
        .text_encoder()
        .encode(&ids, None, &NoHooks, &ForwardCtx::eval())
        .unwrap();
    let err = model
        .text_encoder()
        .start_decoding(&text_states, None, &NoHooks, &ForwardCtx::eval())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("holds only its encoder"), "{err}");

    tensors.remove("decoder.lm_heads.3.weight");
    let err = Musicgen::from_tensors(cfg, &tensors, "fixture")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing tensor `decoder.lm_heads.3.weight`"),
        "{err}"
    );
}

/// transformers' table: cos of the position times each frequency in the first half, sin in the
/// second; position 0 is (1, ..., 1, 0, ..., 0).
#[test]
fn sinusoidal_positions_follow_transformers_layout() {
    let table = peftbench_backbones::musicgen::sinusoidal_positions(0, 3, 6, &Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(table[0], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    // Rows from an offset (a cached step's) are the same rows.
    let later = peftbench_backbones::musicgen::sinusoidal_positions(2, 1, 6, &Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(later[0], table[2]);
    // half = 3 frequencies: 10000^(-i / 2).
    for (i, f) in [1.0f32, 0.01, 0.0001].into_iter().enumerate() {
        assert!((table[2][i] - (2.0 * f).cos()).abs() < 1e-6);
        assert!((table[2][3 + i] - (2.0 * f).sin()).abs() < 1e-6);
    }
}

/// Decoding one step at a time through the cache gives the teacher-forced logits.
#[test]
fn cached_steps_equal_teacher_forcing() {
    let (model, expected) = load();
    let input_ids = expected["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = expected["attention_mask"].to_dtype(DType::U32).unwrap();
    let tokens = expected["decoder_input_ids"].to_dtype(DType::U32).unwrap();
    let ctx = ForwardCtx::eval();
    let states = model
        .encode_text(&input_ids, Some(&mask), &NoHooks, &ForwardCtx::eval())
        .unwrap();
    let whole = model
        .decode(&tokens, &states, Some(&mask), &NoHooks, &ctx)
        .unwrap();
    let mut cache = model
        .start_decoding(&states, Some(&mask), &NoHooks, &ctx)
        .unwrap();
    let steps: Vec<Tensor> = (0..tokens.dim(2).unwrap())
        .map(|t| {
            model
                .decode_step(&tokens.narrow(2, t, 1).unwrap(), &mut cache, &NoHooks, &ctx)
                .unwrap()
        })
        .collect();
    assert_eq!(cache.len(), 7);
    let stepped = Tensor::cat(&steps, 2).unwrap();
    let diff = max_diff(&stepped, &whole);
    assert!(diff < 1e-5, "{diff}");
}

/// Greedy generation, with classifier-free guidance 3 and without, gives transformers'
/// `generate` codes (delay pattern applied while generating and undone after); sampling is a
/// function of the seed; too few steps for the delay pattern is an error.
#[test]
fn generation_matches_transformers() {
    let (model, expected) = load();
    let input_ids = expected["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = expected["attention_mask"].to_dtype(DType::U32).unwrap();
    for (name, guidance_scale, mask) in [
        ("generated_cfg3", 3.0, Some(&mask)),
        ("generated_greedy", 1.0, Some(&mask)),
        ("generated_cfg3_no_mask", 3.0, None),
    ] {
        let options = GenerationOptions {
            max_new_tokens: 8,
            guidance_scale,
            top_k: None,
            ..GenerationOptions::default()
        };
        let codes = model
            .generate(&input_ids, mask, &options, &NoHooks)
            .unwrap();
        assert_eq!(
            codes.to_vec3::<u32>().unwrap(),
            expected[name]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec3::<u32>()
                .unwrap(),
            "{name}"
        );
    }
    let sampled = |seed: u64| {
        let options = GenerationOptions {
            max_new_tokens: 8,
            top_k: Some(5),
            seed,
            ..GenerationOptions::default()
        };
        model
            .generate(&input_ids, Some(&mask), &options, &NoHooks)
            .unwrap()
            .to_vec3::<u32>()
            .unwrap()
    };
    assert_eq!(sampled(1), sampled(1));
    assert_ne!(sampled(1), sampled(2));
    let short = GenerationOptions {
        max_new_tokens: 5,
        ..GenerationOptions::default()
    };
    let err = model
        .generate(&input_ids, Some(&mask), &short, &NoHooks)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("too few for 4 delayed codebooks"), "{err}");
}

/// `visit_params` names exactly the checkpoint's decoder and projection tensors (the text encoder
/// stays frozen); the random miniature the demo pretrains has the same names and shapes, and
/// its decoder learns: a few AdamW steps on one batch through variables swapped in by
/// `visit_params` bring the per-codebook loss far down, with the gradient of one weight equal to
/// finite differences.
#[test]
fn the_decoder_is_trainable_through_its_parameters() {
    use peftbench_core::{NamedVars, SeededInit};
    use peftbench_train::{AdamW, AdamWConfig};

    let (mut loaded, expected) = load();
    let file = candle_core::safetensors::load(fixture("model.safetensors"), &Device::Cpu).unwrap();
    let mut visited = std::collections::BTreeMap::new();
    loaded
        .visit_params(&mut |name, t| {
            visited.insert(name.to_string(), t.dims().to_vec());
            Ok(())
        })
        .unwrap();
    let want: std::collections::BTreeMap<String, Vec<usize>> = file
        .iter()
        .filter(|(k, _)| !k.starts_with("text_encoder."))
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    assert_eq!(visited, want);

    let mut model =
        Musicgen::random(loaded.config().clone(), &SeededInit::new(1, &Device::Cpu)).unwrap();
    let mut random_names = std::collections::BTreeMap::new();
    let mut params = NamedVars::default();
    model
        .visit_params(&mut |name, t| {
            random_names.insert(name.to_string(), t.dims().to_vec());
            let var = candle_core::Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            params.push(name, var);
            Ok(())
        })
        .unwrap();
    assert_eq!(random_names, want);

    let input_ids = expected["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = expected["attention_mask"].to_dtype(DType::U32).unwrap();
    let labels = expected["labels"]
        .to_dtype(DType::U32)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    let tokens = model.shift_right(&labels).unwrap();
    let pad = model.config().decoder.pad_token_id;
    let ctx = ForwardCtx::eval();
    let loss = |model: &Musicgen| {
        let logits = model
            .forward(&input_ids, Some(&mask), &tokens, &NoHooks, &ctx)
            .unwrap();
        per_codebook_cross_entropy(&logits, &labels, pad)
            .unwrap()
            .mean_all()
            .unwrap()
    };

    // One weight's gradient against central differences.
    let target = params
        .iter()
        .find(|p| p.name.ends_with("layers.0.fc1.weight"))
        .unwrap()
        .var
        .clone();
    let grads = loss(&model).backward().unwrap();
    let analytic = grads
        .get(target.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[5];
    let values = target
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let at = |delta: f32| {
        let mut v = values.clone();
        v[5] += delta;
        target
            .set(&Tensor::from_vec(v, target.shape(), &Device::Cpu).unwrap())
            .unwrap();
        f64::from(loss(&model).to_scalar::<f32>().unwrap())
    };
    let eps = 1e-2;
    let numeric = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
    target
        .set(&Tensor::from_vec(values, target.shape(), &Device::Cpu).unwrap())
        .unwrap();
    assert!(
        (numeric - f64::from(analytic)).abs() < 1e-3 + 2e-2 * numeric.abs(),
        "finite differences {numeric}, autograd {analytic}"
    );

    let first = loss(&model).to_scalar::<f32>().unwrap();
    let mut optimizer = AdamW::new(
        &params,
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    for _ in 0..40 {
        let grads = loss(&model).backward().unwrap();
        optimizer.step(&grads, 1e-2).unwrap();
    }
    let last = loss(&model).to_scalar::<f32>().unwrap();
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}
