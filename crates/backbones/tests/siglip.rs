//! SigLIP's vision tower against two references on the tiny checkpoints that
//! ci/fixtures/siglip_tiny.py writes: transformers' `SiglipModel` vision outputs (patch tokens and
//! the attention-pooling head's output), and candle-transformers' `siglip::VisionModel` loaded
//! through a `VarBuilder` from the same safetensors file. Also the vision-only checkpoint layout,
//! every hook site, frozen-prefix resumption, parameter names and the configuration's parsing.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_transformers::models::siglip as reference;
use peftbench_backbones::{
    Backbone, Hooks, Linear, LinearSite, NoHooks, NormSite, SiglipVision, SiglipVisionConfig,
    Sublayer,
};
use peftbench_core::ops::Activation;
use peftbench_core::ForwardCtx;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip_tiny")
}

/// The `SiglipModel` checkpoint (`model/`, head on, text tower present) and the inputs and
/// transformers' outputs.
fn transformers_fixture() -> anyhow::Result<(SiglipVision, HashMap<String, Tensor>)> {
    let dir = fixture_dir();
    let model = SiglipVision::load(
        &dir.join("model/config.json"),
        &dir.join("model/model.safetensors"),
        &Device::Cpu,
    )?;
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)?;
    Ok((model, expected))
}

#[test]
fn siglip_matches_transformers_vision_model() -> anyhow::Result<()> {
    let (model, exp) = transformers_fixture()?;
    assert!(model.has_head());
    let cfg = model.config();
    assert_eq!(
        (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_patches()),
        (32, 2, 16)
    );
    assert_eq!(cfg.hidden_act, Activation::GeluTanh);
    let out = model.forward(&exp["pixel_values"], &NoHooks, &ForwardCtx::eval())?;
    assert_eq!(out.last_hidden_state.dims(), &[2, 16, 32]);
    let pooled = out.pooler_output.expect("the checkpoint has a head");
    let errors = [
        (
            "last_hidden_state",
            max_abs_diff(&out.last_hidden_state, &exp["last_hidden_state"])?,
        ),
        (
            "pooler_output",
            max_abs_diff(&pooled, &exp["pooler_output"])?,
        ),
    ];
    for (what, err) in errors {
        println!("transformers {what}: max |err| {err:.2e}");
        assert!(err < 1e-5, "{what} differs by {err}");
    }
    Ok(())
}

/// The `SiglipVisionModel` checkpoint (`vision_model/`): a top-level vision config without the
/// head, tensors without the `vision_model.` prefix; same tokens, and `forward_features` pools by
/// the mean of the patch tokens.
#[test]
fn siglip_loads_vision_only_checkpoints() -> anyhow::Result<()> {
    let dir = fixture_dir();
    let model = SiglipVision::load(
        &dir.join("vision_model/config.json"),
        &dir.join("vision_model/model.safetensors"),
        &Device::Cpu,
    )?;
    let (_, exp) = transformers_fixture()?;
    assert!(!model.has_head());
    let ctx = ForwardCtx::eval();
    let out = model.forward(&exp["pixel_values"], &NoHooks, &ctx)?;
    assert!(out.pooler_output.is_none());
    let err = max_abs_diff(&out.last_hidden_state, &exp["last_hidden_state"])?;
    println!("vision-only last_hidden_state: max |err| {err:.2e}");
    assert!(err < 1e-5, "last_hidden_state differs by {err}");
    let features = model.forward_features(&exp["pixel_values"], &NoHooks, &ctx)?;
    let mean = out.last_hidden_state.mean(1)?;
    assert_eq!(max_abs_diff(&features, &mean)?, 0.0);
    let sequence = model.forward_sequence(&exp["pixel_values"], &NoHooks, &ctx)?;
    assert_eq!(max_abs_diff(&sequence, &out.last_hidden_state)?, 0.0);
    Ok(())
}

#[test]
fn siglip_matches_candle_transformers_vision_model() -> anyhow::Result<()> {
    let (model, exp) = transformers_fixture()?;
    let file = candle_core::safetensors::load(
        fixture_dir().join("model/model.safetensors"),
        &Device::Cpu,
    )?;
    let vb = candle_nn::VarBuilder::from_tensors(file, DType::F32, &Device::Cpu);
    let cfg = model.config();
    let ref_cfg = reference::VisionConfig {
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        num_channels: cfg.num_channels,
        image_size: cfg.image_size,
        patch_size: cfg.patch_size,
        hidden_act: candle_nn::Activation::GeluPytorchTanh,
        layer_norm_eps: cfg.layer_norm_eps,
    };
    let pixels = &exp["pixel_values"];
    let out = model.forward(pixels, &NoHooks, &ForwardCtx::eval())?;
    let tokens = reference::VisionModel::new(&ref_cfg, false, vb.pp("vision_model"))?;
    let pooled = reference::VisionModel::new(&ref_cfg, true, vb.pp("vision_model"))?;
    let tokens_err = max_abs_diff(&out.last_hidden_state, &tokens.forward(pixels)?)?;
    let pooled_err = max_abs_diff(
        out.pooler_output.as_ref().expect("head"),
        &pooled.forward(pixels)?,
    )?;
    println!("candle-transformers: tokens {tokens_err:.2e}, pooled {pooled_err:.2e}");
    assert!(tokens_err < 1e-5, "patch tokens differ by {tokens_err}");
    assert!(pooled_err < 1e-5, "pooled output differs by {pooled_err}");
    Ok(())
}

/// Records every site the model calls a hook at, and optionally scales one projection's output,
/// inserts a prompt token before block 1 and prepends prefix keys and values in block 0.
#[derive(Default)]
struct Recorder {
    linear: RefCell<BTreeSet<(usize, LinearSite)>>,
    sublayer: RefCell<BTreeSet<(usize, bool)>>,
    norm: RefCell<Vec<(Option<usize>, NormSite)>>,
    tokens: RefCell<Vec<(usize, usize)>>,
    prefix: RefCell<Vec<usize>>,
    scale: Option<(usize, LinearSite)>,
    prompt: bool,
    prefix_kv: bool,
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
        self.linear.borrow_mut().insert((layer, site));
        let y = base.forward(x)?;
        if self.scale == Some((layer, site)) {
            y * 2.0
        } else {
            Ok(y)
        }
    }

    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        _input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.sublayer
            .borrow_mut()
            .insert((layer, kind == Sublayer::Attention));
        Ok(output)
    }

    fn tokens(&self, layer: usize, tokens: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        self.tokens.borrow_mut().push((layer, tokens.dim(1)?));
        if self.prompt && layer == 1 {
            let (b, _, d) = tokens.dims3()?;
            let prompt = Tensor::ones((b, 1, d), tokens.dtype(), tokens.device())?;
            return Tensor::cat(&[&prompt, &tokens], 1);
        }
        Ok(tokens)
    }

    fn prefix(
        &self,
        layer: usize,
        batch: usize,
        _ctx: &ForwardCtx,
    ) -> Result<Option<(Tensor, Tensor)>> {
        self.prefix.borrow_mut().push(layer);
        if self.prefix_kv && layer == 0 {
            let kv = Tensor::ones((batch, 2, 32), DType::F32, &Device::Cpu)?;
            return Ok(Some((kv.clone(), kv)));
        }
        Ok(None)
    }

    fn norm(
        &self,
        layer: Option<usize>,
        site: NormSite,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.norm.borrow_mut().push((layer, site));
        Ok(output)
    }
}

/// Every projection, branch, norm, token-stream and prefix site of every block is called, in
/// block order; a hook at a site changes both outputs; an inserted prompt leaves the patch tokens'
/// shape.
#[test]
fn siglip_hooks_reach_every_site() -> anyhow::Result<()> {
    let (model, exp) = transformers_fixture()?;
    let pixels = &exp["pixel_values"];
    let ctx = ForwardCtx::eval();
    let recorder = Recorder::default();
    let base = model.forward(pixels, &recorder, &ctx)?;
    let all: BTreeSet<_> = (0..2)
        .flat_map(|l| LinearSite::ALL.map(|s| (l, s)))
        .collect();
    assert_eq!(*recorder.linear.borrow(), all);
    let branches: BTreeSet<_> = (0..2).flat_map(|l| [(l, true), (l, false)]).collect();
    assert_eq!(*recorder.sublayer.borrow(), branches);
    assert_eq!(
        *recorder.norm.borrow(),
        vec![
            (Some(0), NormSite::BeforeAttention),
            (Some(0), NormSite::BeforeMlp),
            (Some(1), NormSite::BeforeAttention),
            (Some(1), NormSite::BeforeMlp),
            (None, NormSite::Final),
        ]
    );
    assert_eq!(*recorder.tokens.borrow(), vec![(0, 16), (1, 16)]);
    assert_eq!(*recorder.prefix.borrow(), vec![0, 1]);

    let changed = |hooks: &Recorder| -> anyhow::Result<(f32, f32)> {
        let out = model.forward(pixels, hooks, &ctx)?;
        assert_eq!(out.last_hidden_state.dims(), &[2, 16, 32]);
        Ok((
            max_abs_diff(&out.last_hidden_state, &base.last_hidden_state)?,
            max_abs_diff(
                out.pooler_output.as_ref().unwrap(),
                base.pooler_output.as_ref().unwrap(),
            )?,
        ))
    };
    for hooks in [
        Recorder {
            scale: Some((1, LinearSite::Value)),
            ..Recorder::default()
        },
        Recorder {
            scale: Some((0, LinearSite::Fc1)),
            ..Recorder::default()
        },
        Recorder {
            prompt: true,
            ..Recorder::default()
        },
        Recorder {
            prefix_kv: true,
            ..Recorder::default()
        },
    ] {
        let (tokens, pooled) = changed(&hooks)?;
        assert!(
            tokens > 1e-3 && pooled > 1e-3,
            "a hook had no effect ({tokens}, {pooled})"
        );
    }
    Ok(())
}

/// The runner's frozen-prefix path: the stream after block 1 without hooks, resumed, equals the
/// full forward pass.
#[test]
fn siglip_resumes_from_a_frozen_prefix() -> anyhow::Result<()> {
    let (model, exp) = transformers_fixture()?;
    let pixels = &exp["pixel_values"];
    let ctx = ForwardCtx::eval();
    let full = model.forward_features(pixels, &NoHooks, &ctx)?;
    let stream = model
        .forward_frozen_prefix(pixels, 1, &ctx)?
        .expect("SigLIP caches its stream");
    let resumed = model.forward_features_from(&stream, 1, &NoHooks, &ctx)?;
    assert_eq!(full.dims(), &[2, 32]);
    assert_eq!(max_abs_diff(&full, &resumed)?, 0.0);
    let pooled = model
        .forward(pixels, &NoHooks, &ctx)?
        .pooler_output
        .unwrap();
    assert_eq!(max_abs_diff(&full, &pooled)?, 0.0);
    Ok(())
}

/// Every vision tensor of the `SiglipModel` file is visited once under its name; the text tower
/// and the logit scale and bias are not part of the model.
#[test]
fn siglip_parameters_are_visited_under_checkpoint_names() -> anyhow::Result<()> {
    let (mut model, _) = transformers_fixture()?;
    let file = candle_core::safetensors::load(
        fixture_dir().join("model/model.safetensors"),
        &Device::Cpu,
    )?;
    let mut visited = Vec::new();
    model.visit_params(&mut |name, t| {
        assert_eq!(t.dims(), file[name].dims(), "{name}");
        visited.push(name.to_string());
        Ok(())
    })?;
    let unique: BTreeSet<_> = visited.iter().cloned().collect();
    assert_eq!(unique.len(), visited.len(), "a tensor is visited twice");
    let vision: BTreeSet<_> = file
        .keys()
        .filter(|k| k.starts_with("vision_model."))
        .cloned()
        .collect();
    assert_eq!(unique, vision);
    assert!(file.keys().any(|k| k.starts_with("text_model.")));

    let info = model.info().clone();
    assert_eq!(
        (info.family.as_str(), info.num_layers, info.num_tokens),
        ("siglip", 2, 16)
    );
    assert_eq!(model.linear_dims(LinearSite::Fc1), (32, 48));
    assert_eq!(model.linear(1, LinearSite::Fc2).weight.dims(), &[32, 48]);
    assert_eq!(
        model.module_path(1, LinearSite::Query),
        "vision_model.encoder.layers.1.self_attn.q_proj"
    );
    assert_eq!(model.block_path(0), "vision_model.encoder.layers.0");
    assert_eq!(
        model.final_norm_path().as_deref(),
        Some("vision_model.post_layernorm")
    );
    Ok(())
}

/// Missing fields take transformers' defaults (`google/siglip-base-patch16-224`'s), both
/// `config.json` layouts parse, and other model types are refused.
#[test]
fn siglip_configuration_follows_transformers() -> anyhow::Result<()> {
    let full = serde_json::json!({"model_type": "siglip", "text_config": {"hidden_size": 16},
                                  "vision_config": {}});
    let cfg = SiglipVisionConfig::from_hf_json(&full).map_err(anyhow::Error::msg)?;
    assert_eq!(cfg, SiglipVisionConfig::base_patch16_224());
    assert_eq!(
        (cfg.num_patches(), cfg.hidden_act, cfg.layer_norm_eps),
        (196, Activation::GeluTanh, 1e-6)
    );
    assert!(cfg.vision_use_head);
    let vision = serde_json::json!({"model_type": "siglip_vision_model", "patch_size": 14,
                                    "hidden_act": "gelu_pytorch_tanh", "vision_use_head": false});
    let cfg = SiglipVisionConfig::from_hf_json(&vision).map_err(anyhow::Error::msg)?;
    assert_eq!((cfg.patch_size, cfg.vision_use_head), (14, false));
    assert_eq!(cfg.validate(), Ok(()));
    let bad = SiglipVisionConfig {
        image_size: 100,
        ..cfg
    };
    assert!(bad.validate().unwrap_err().contains("patch_size 14"));
    let err =
        SiglipVisionConfig::from_hf_json(&serde_json::json!({"model_type": "clip"})).unwrap_err();
    assert!(err.contains("model_type `clip`"), "{err}");
    // The fixture's two config.json files describe the same tower, up to the head.
    let read = |p: &str| -> anyhow::Result<SiglipVisionConfig> {
        let text = std::fs::read_to_string(fixture_dir().join(p))?;
        SiglipVisionConfig::from_hf_json(&serde_json::from_str(&text)?).map_err(anyhow::Error::msg)
    };
    let (mut with_head, without) = (
        read("model/config.json")?,
        read("vision_model/config.json")?,
    );
    with_head.vision_use_head = false;
    assert_eq!(with_head, without);
    Ok(())
}
