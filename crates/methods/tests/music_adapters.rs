//! The study's music adapters on MusicGen's random miniature (the backbones crate's
//! `tests/fixtures/musicgen_random`, checked there against transformers): at every placement the
//! model is unchanged at initialisation and changed once the adapters are not zero; in the
//! decoder (`block`, `post`) the model stays causal, so teacher-forced likelihoods never see the
//! future; generation runs through them.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::musicgen::{GenerationOptions, Musicgen};
use peftbench_backbones::NoHooks;
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::music_adapters::{
    AdapterKind, MusicAdapterConfig, MusicAdapters, Placement,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../backbones/tests/fixtures/musicgen_random")
        .join(name)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The backbones crate's MusicGen miniature and its expected values.
fn miniature() -> (Musicgen, std::collections::HashMap<String, Tensor>) {
    let device = Device::Cpu;
    let model = Musicgen::load(
        &fixture("config.json"),
        &fixture("model.safetensors"),
        &device,
    )
    .unwrap();
    let expected =
        candle_core::safetensors::load(fixture("expected.safetensors"), &device).unwrap();
    (model, expected)
}

/// Random up-projections: the adapters no longer start at zero.
fn wake(adapters: &MusicAdapters) {
    for p in adapters
        .trainable()
        .iter()
        .filter(|p| p.name.ends_with("up.weight"))
    {
        let values = SeededInit::new(5, &Device::Cpu)
            .fork(&p.name)
            .uniform(p.var.shape().clone(), -0.5, 0.5)
            .unwrap();
        p.var.set(values.as_tensor()).unwrap();
    }
}

#[test]
fn adapters_attach_at_every_placement_and_keep_the_decoder_causal() {
    let device = Device::Cpu;
    let (model, expected) = miniature();
    let ids = expected["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = expected["attention_mask"].to_dtype(DType::U32).unwrap();
    let tokens = expected["decoder_input_ids"].to_dtype(DType::U32).unwrap();
    let (b, k, t) = tokens.dims3().unwrap();
    // The same first 4 steps, different tokens after.
    let changed = Tensor::cat(
        &[
            &tokens.narrow(2, 0, 4).unwrap(),
            &((tokens.narrow(2, 4, t - 4).unwrap() + 1.0)
                .unwrap()
                .clamp(0u32, 31u32)
                .unwrap()),
        ],
        2,
    )
    .unwrap();
    assert_eq!(changed.dims3().unwrap(), (b, k, t));
    let ctx = ForwardCtx::eval();
    let base = model
        .forward(&ids, Some(&mask), &tokens, &NoHooks, &ctx)
        .unwrap();
    let hidden = model.config().decoder.hidden_size;
    let layers = model.config().decoder.num_hidden_layers;
    for kind in [
        AdapterKind::Linear,
        AdapterKind::Conv,
        AdapterKind::Transformer,
    ] {
        for (placement, depth) in [
            (Placement::Conditioning, 2),
            (Placement::Block, 1),
            (Placement::Post, 2),
        ] {
            let config = MusicAdapterConfig {
                kind,
                placement,
                width: 4,
                depth,
            };
            let what = format!("{kind:?} at {placement:?}");
            let adapters =
                MusicAdapters::new(config, hidden, layers, &SeededInit::new(3, &device)).unwrap();
            let at_init = model
                .forward(&ids, Some(&mask), &tokens, &adapters, &ctx)
                .unwrap();
            assert_eq!(
                max_abs(&(&at_init - &base).unwrap()),
                0.0,
                "{what}: not zero at init"
            );

            wake(&adapters);
            let awake = model
                .forward(&ids, Some(&mask), &tokens, &adapters, &ctx)
                .unwrap();
            assert!(
                max_abs(&(&awake - &base).unwrap()) > 1e-3,
                "{what}: no effect"
            );

            if placement != Placement::Conditioning {
                let other = model
                    .forward(&ids, Some(&mask), &changed, &adapters, &ctx)
                    .unwrap();
                let early = |x: &Tensor| x.narrow(2, 0, 4).unwrap();
                let diff = max_abs(&(early(&other) - early(&awake)).unwrap());
                assert!(diff < 1e-6, "{what}: steps 0-3 see later tokens ({diff})");
            }

            let options = GenerationOptions {
                max_new_tokens: 8,
                top_k: Some(4),
                seed: 1,
                ..GenerationOptions::default()
            };
            let codes = model
                .generate(&ids, Some(&mask), &options, &adapters)
                .unwrap();
            assert_eq!(codes.dims3().unwrap(), (2, 4, 5), "{what}");
        }
    }
}

/// Generation steps through the decoder's cache, one step a pass: every adapter in the decoder,
/// including those that read earlier steps (convolutional and transformer ones, through
/// `ForwardCtx::steps_so_far`), gives each step the logits that teacher forcing gives it. On the
/// text, the transformer adapter leaves padded positions out: a padded prompt conditions exactly
/// as the same prompt without its padding.
#[test]
fn stepping_through_the_cache_runs_the_trained_model_and_text_padding_is_ignored() {
    let device = Device::Cpu;
    let (model, expected) = miniature();
    let ids = expected["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = expected["attention_mask"].to_dtype(DType::U32).unwrap();
    let tokens = expected["decoder_input_ids"].to_dtype(DType::U32).unwrap();
    let steps = tokens.dim(2).unwrap();
    let (hidden, layers) = (
        model.config().decoder.hidden_size,
        model.config().decoder.num_hidden_layers,
    );
    let woken = |kind, placement| {
        let adapters = MusicAdapters::new(
            MusicAdapterConfig {
                kind,
                placement,
                width: 4,
                depth: if placement == Placement::Block { 1 } else { 2 },
            },
            hidden,
            layers,
            &SeededInit::new(3, &device),
        )
        .unwrap();
        wake(&adapters);
        adapters
    };
    for kind in [
        AdapterKind::Linear,
        AdapterKind::Conv,
        AdapterKind::Transformer,
    ] {
        for placement in [Placement::Block, Placement::Post] {
            let adapters = woken(kind, placement);
            let eval = ForwardCtx::eval();
            let states = model
                .encode_text(&ids, Some(&mask), &adapters, &eval)
                .unwrap();
            let forced = model
                .decode(&tokens, &states, Some(&mask), &adapters, &eval)
                .unwrap();
            // Each step's largest difference from teacher forcing, through a context that keeps
            // the earlier steps or (as a check that this test can fail) one that does not.
            let step_by_step = |ctx: &ForwardCtx| -> Vec<f32> {
                let mut cache = model
                    .start_decoding(&states, Some(&mask), &adapters, ctx)
                    .unwrap();
                (0..steps)
                    .map(|t| {
                        let step = tokens.narrow(2, t, 1).unwrap();
                        let logits = model
                            .decode_step(&step, &mut cache, &adapters, ctx)
                            .unwrap();
                        max_abs(&(logits - forced.narrow(2, t, 1).unwrap()).unwrap())
                    })
                    .collect()
            };
            let what = format!("{kind:?} at {placement:?}");
            let stepped = step_by_step(&ForwardCtx::stepping());
            assert!(stepped.iter().all(|&d| d < 1e-5), "{what}: {stepped:?}");
            let blind = step_by_step(&ForwardCtx::eval());
            let reads_earlier_steps = kind != AdapterKind::Linear;
            assert_eq!(
                blind.iter().any(|&d| d > 1e-3),
                reads_earlier_steps,
                "{what}: {blind:?}"
            );
        }
    }
    let on_text = woken(AdapterKind::Transformer, Placement::Conditioning);
    // Row 1's prompt is 4 tokens and a pad: alone and unpadded, it conditions the same.
    let ctx = ForwardCtx::eval();
    let padded = model
        .encode_text(&ids, Some(&mask), &on_text, &ctx)
        .unwrap();
    let alone = model
        .encode_text(
            &ids.narrow(0, 1, 1).unwrap().narrow(1, 0, 4).unwrap(),
            None,
            &on_text,
            &ctx,
        )
        .unwrap();
    let real = padded.narrow(0, 1, 1).unwrap().narrow(1, 0, 4).unwrap();
    assert!(max_abs(&(real - alone).unwrap()) < 1e-5);
    assert_eq!(
        max_abs(&padded.narrow(0, 1, 1).unwrap().narrow(1, 4, 1).unwrap()),
        0.0
    );
}
