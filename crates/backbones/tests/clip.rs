//! CLIP against two references: candle-transformers' `clip::ClipModel` loaded through a
//! `VarBuilder` from the same safetensors file as a small random checkpoint written here, and
//! transformers' `CLIPModel` on the tiny checkpoint that ci/fixtures/clip_tiny.py writes (image and
//! text embeddings, both towers' token states, similarity logits, both text pooling rules). Also
//! the hook sites of both towers, parameter names and the configuration's defaults.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result, Tensor};
use candle_transformers::models::clip as reference;
use peftbench_backbones::clip::{ClipActivation, ClipTextConfig, ClipVisionConfig};
use peftbench_backbones::{Clip, ClipConfig, Hooks, Linear, LinearSite, NoHooks, Sublayer};
use peftbench_core::{ForwardCtx, SeededInit};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()
}

/// Vision: 24 wide, 2 blocks of 4 heads, 32x32 images in 8x8 patches; text: 16 wide, 3 blocks of 2
/// heads, 50 tokens, 10 positions, end token 49 (the highest id, so that candle-transformers'
/// arg-max pooling and the end-token rule agree); both projected to 12. candle-transformers fixes
/// the norms' epsilon at 1e-5, CLIP's.
fn tiny_config() -> ClipConfig {
    ClipConfig {
        vision_config: ClipVisionConfig {
            hidden_size: 24,
            intermediate_size: 40,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_channels: 3,
            image_size: 32,
            patch_size: 8,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
        },
        text_config: ClipTextConfig {
            vocab_size: 50,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 3,
            num_attention_heads: 2,
            max_position_embeddings: 10,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            pad_token_id: 1,
            bos_token_id: 48,
            eos_token_id: 49,
        },
        projection_dim: 12,
        logit_scale_init_value: 2.6592,
    }
}

/// Every tensor of a `CLIPModel` checkpoint for `cfg`, named as in HF files, drawn from a seeded
/// normal: norm weights around 1, projection and patch weights at `1/sqrt(fan_in)` (so that the
/// stream stays of order 1 and f32 rounding small), embeddings and biases at 0.3 so that no branch
/// is negligible.
fn random_checkpoint(cfg: &ClipConfig) -> Result<HashMap<String, Tensor>> {
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    let (vc, tc) = (&cfg.vision_config, &cfg.text_config);
    let (dv, dt, p) = (vc.hidden_size, tc.hidden_size, vc.patch_size);
    let mut add = |name: String, shape: Vec<usize>| shapes.push((name, shape));
    add("vision_model.embeddings.class_embedding".into(), vec![dv]);
    add(
        "vision_model.embeddings.patch_embedding.weight".into(),
        vec![dv, vc.num_channels, p, p],
    );
    add(
        "vision_model.embeddings.position_embedding.weight".into(),
        vec![vc.num_patches() + 1, dv],
    );
    add(
        "text_model.embeddings.token_embedding.weight".into(),
        vec![tc.vocab_size, dt],
    );
    add(
        "text_model.embeddings.position_embedding.weight".into(),
        vec![tc.max_position_embeddings, dt],
    );
    for (norm, d) in [
        ("vision_model.pre_layrnorm", dv),
        ("vision_model.post_layernorm", dv),
        ("text_model.final_layer_norm", dt),
    ] {
        add(format!("{norm}.weight"), vec![d]);
        add(format!("{norm}.bias"), vec![d]);
    }
    for (tower, layers, d, f) in [
        (
            "vision_model",
            vc.num_hidden_layers,
            dv,
            vc.intermediate_size,
        ),
        ("text_model", tc.num_hidden_layers, dt, tc.intermediate_size),
    ] {
        for l in 0..layers {
            let base = format!("{tower}.encoder.layers.{l}");
            for (name, out, inp) in [
                ("self_attn.q_proj", d, d),
                ("self_attn.k_proj", d, d),
                ("self_attn.v_proj", d, d),
                ("self_attn.out_proj", d, d),
                ("mlp.fc1", f, d),
                ("mlp.fc2", d, f),
            ] {
                add(format!("{base}.{name}.weight"), vec![out, inp]);
                add(format!("{base}.{name}.bias"), vec![out]);
            }
            for norm in ["layer_norm1", "layer_norm2"] {
                add(format!("{base}.{norm}.weight"), vec![d]);
                add(format!("{base}.{norm}.bias"), vec![d]);
            }
        }
    }
    add(
        "visual_projection.weight".into(),
        vec![cfg.projection_dim, dv],
    );
    add(
        "text_projection.weight".into(),
        vec![cfg.projection_dim, dt],
    );

    let init = SeededInit::new(20261201, &Device::Cpu);
    let mut tensors = HashMap::new();
    for (name, shape) in shapes {
        let is_norm = name.contains("norm") || name.contains("layrnorm");
        let is_matrix = !is_norm && name.ends_with(".weight") && !name.contains("embeddings.");
        let std = if is_matrix || name.contains("patch_embedding") {
            (shape[1..].iter().product::<usize>() as f32).powf(-0.5)
        } else {
            0.3
        };
        let noise = init
            .fork(&name)
            .normal(shape.as_slice(), std)?
            .as_tensor()
            .detach();
        let value = if is_norm && name.ends_with(".weight") {
            (noise + 1.0)?
        } else {
            noise
        };
        tensors.insert(name, value);
    }
    tensors.insert("logit_scale".into(), Tensor::new(2.6592f32, &Device::Cpu)?);
    Ok(tensors)
}

fn reference_config(cfg: &ClipConfig) -> reference::ClipConfig {
    let (vc, tc) = (&cfg.vision_config, &cfg.text_config);
    reference::ClipConfig {
        text_config: reference::text_model::ClipTextConfig {
            vocab_size: tc.vocab_size,
            embed_dim: tc.hidden_size,
            activation: reference::text_model::Activation::QuickGelu,
            intermediate_size: tc.intermediate_size,
            max_position_embeddings: tc.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: tc.num_hidden_layers,
            num_attention_heads: tc.num_attention_heads,
            projection_dim: cfg.projection_dim,
        },
        vision_config: reference::vision_model::ClipVisionConfig {
            embed_dim: vc.hidden_size,
            activation: reference::text_model::Activation::QuickGelu,
            intermediate_size: vc.intermediate_size,
            num_hidden_layers: vc.num_hidden_layers,
            num_attention_heads: vc.num_attention_heads,
            projection_dim: cfg.projection_dim,
            num_channels: vc.num_channels,
            image_size: vc.image_size,
            patch_size: vc.patch_size,
        },
        logit_scale_init_value: cfg.logit_scale_init_value as f32,
        image_size: vc.image_size,
    }
}

/// Writes the random checkpoint for `cfg` into `dir` and loads it back with [`Clip::load`].
fn write_and_load(cfg: &ClipConfig, dir: &Path) -> anyhow::Result<Clip> {
    candle_core::safetensors::save(&random_checkpoint(cfg)?, dir.join("model.safetensors"))?;
    std::fs::write(dir.join("config.json"), serde_json::to_string(cfg)?)?;
    Ok(Clip::load(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        &Device::Cpu,
    )?)
}

/// Three images and three texts; the texts end with the end token 49 and the shorter ones are
/// right-padded with the pad token after it.
fn tiny_inputs() -> Result<(Tensor, Tensor)> {
    let mut init = SeededInit::new(7, &Device::Cpu);
    let pixels = init.normal((3, 3, 32, 32), 1.0)?.as_tensor().detach();
    let ids: Vec<u32> = [
        [48, 5, 17, 33, 2, 40, 11, 9, 49, 1],
        [48, 21, 7, 49, 1, 1, 1, 1, 1, 1],
        [48, 30, 12, 44, 3, 49, 1, 1, 1, 1],
    ]
    .concat();
    let ids = Tensor::from_vec(ids, (3, 10), &Device::Cpu)?;
    Ok((pixels, ids))
}

#[test]
fn matches_candle_transformers_clip_model() -> anyhow::Result<()> {
    let cfg = tiny_config();
    let dir = tempfile::tempdir()?;
    let model = write_and_load(&cfg, dir.path())?;
    // The same file, read into the reference's loader.
    let file = candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)?;
    let vb = candle_nn::VarBuilder::from_tensors(file, DType::F32, &Device::Cpu);
    let ref_cfg = reference_config(&cfg);
    let clip = reference::ClipModel::new(vb.clone(), &ref_cfg)?;
    let (pixels, ids) = tiny_inputs()?;
    let ctx = ForwardCtx::eval();

    let image = model.vision(&pixels, &NoHooks, &ctx)?;
    let text = model.text(&ids, None, &NoHooks, &ctx)?;
    let image_err = max_abs_diff(&image.image_embeds, &clip.get_image_features(&pixels)?)?;
    let text_err = max_abs_diff(&text.text_embeds, &clip.get_text_features(&ids)?)?;
    let (_, ref_logits) = clip.forward(&pixels, &ids)?;
    let logits = model.logits_per_image(&image.image_embeds, &text.text_embeds)?;
    let logits_err = max_abs_diff(&logits, &ref_logits)?;

    let vision_tower = reference::vision_model::ClipVisionTransformer::new(
        vb.pp("vision_model"),
        &ref_cfg.vision_config,
    )?;
    let states = vision_tower.output_hidden_states(&pixels)?;
    // One state per block, then the pooled class token.
    let vision_states_err = max_abs_diff(&image.last_hidden_state, &states[states.len() - 2])?;
    let text_tower =
        reference::text_model::ClipTextTransformer::new(vb.pp("text_model"), &ref_cfg.text_config)?;
    let text_states = text_tower.forward_with_mask(&ids, usize::MAX)?;
    let text_states_err = max_abs_diff(&text.last_hidden_state, &text_states)?;

    println!(
        "image_embeds {image_err:.2e}, text_embeds {text_err:.2e}, logits {logits_err:.2e}, \
         vision states {vision_states_err:.2e}, text states {text_states_err:.2e}"
    );
    for (what, err) in [
        ("image_embeds", image_err),
        ("text_embeds", text_err),
        ("vision last_hidden_state", vision_states_err),
        ("text last_hidden_state", text_states_err),
    ] {
        assert!(err < 1e-5, "{what} differ by {err}");
    }
    assert!(logits_err < 1e-4, "logits differ by {logits_err}");
    Ok(())
}

/// Right padding after the end token changes only the padded positions' states, not the
/// pooled embedding.
#[test]
fn padding_mask_leaves_the_pooled_embedding() -> anyhow::Result<()> {
    let cfg = tiny_config();
    let dir = tempfile::tempdir()?;
    let model = write_and_load(&cfg, dir.path())?;
    let (_, ids) = tiny_inputs()?;
    let mask = ids.ne(1u32)?.to_dtype(DType::U32)?;
    let ctx = ForwardCtx::eval();
    let plain = model.text(&ids, None, &NoHooks, &ctx)?;
    let masked = model.text(&ids, Some(&mask), &NoHooks, &ctx)?;
    let err = max_abs_diff(&plain.text_embeds, &masked.text_embeds)?;
    assert!(
        err < 1e-6,
        "the padding mask moved the text embedding by {err}"
    );
    let changed = max_abs_diff(&plain.last_hidden_state, &masked.last_hidden_state)?;
    assert!(changed > 1e-3, "the padding mask had no effect ({changed})");
    Ok(())
}

/// Records every `(block, site)` and `(block, branch)` the model calls a hook at, and scales one
/// site's output.
struct Recorder {
    linear: RefCell<BTreeSet<(usize, LinearSite)>>,
    sublayer: RefCell<BTreeSet<(usize, bool)>>,
    scale: Option<(usize, LinearSite)>,
}

impl Recorder {
    fn new(scale: Option<(usize, LinearSite)>) -> Self {
        Self {
            linear: RefCell::default(),
            sublayer: RefCell::default(),
            scale,
        }
    }
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
}

/// Both towers' projections and branches are sites, text blocks numbered after the vision
/// blocks; a hook at a text site changes the text embedding and not the image embedding.
#[test]
fn hooks_reach_both_towers() -> anyhow::Result<()> {
    let cfg = tiny_config();
    let dir = tempfile::tempdir()?;
    let model = write_and_load(&cfg, dir.path())?;
    let (pixels, ids) = tiny_inputs()?;
    let ctx = ForwardCtx::eval();
    let run = |hooks: &dyn Hooks| -> Result<(Tensor, Tensor)> {
        let image = model.vision(&pixels, hooks, &ctx)?;
        let text = model.text(&ids, None, hooks, &ctx)?;
        Ok((image.image_embeds, text.text_embeds))
    };
    let recorder = Recorder::new(None);
    let (image, text) = run(&recorder)?;
    assert_eq!((model.num_vision_blocks(), model.num_blocks()), (2, 5));
    let all: BTreeSet<_> = (0..5)
        .flat_map(|l| LinearSite::ALL.map(|s| (l, s)))
        .collect();
    assert_eq!(*recorder.linear.borrow(), all);
    let branches: BTreeSet<_> = (0..5).flat_map(|l| [(l, true), (l, false)]).collect();
    assert_eq!(*recorder.sublayer.borrow(), branches);

    assert_eq!(
        model.module_path(1, LinearSite::Query),
        "vision_model.encoder.layers.1.self_attn.q_proj"
    );
    assert_eq!(
        model.module_path(2, LinearSite::AttentionOutput),
        "text_model.encoder.layers.0.self_attn.out_proj"
    );
    assert_eq!(model.block_path(4), "text_model.encoder.layers.2");
    assert_eq!(model.linear_dims(0, LinearSite::Fc1), (24, 40));
    assert_eq!(model.linear_dims(3, LinearSite::Fc2), (32, 16));
    assert_eq!(model.linear(3, LinearSite::Fc2).weight.dims(), &[16, 32]);

    let (image2, text2) = run(&Recorder::new(Some((3, LinearSite::Value))))?;
    assert_eq!(max_abs_diff(&image2, &image)?, 0.0);
    let changed = max_abs_diff(&text2, &text)?;
    assert!(changed > 1e-3, "the text hook had no effect ({changed})");
    let (image3, _) = run(&Recorder::new(Some((0, LinearSite::Fc1))))?;
    let changed = max_abs_diff(&image3, &image)?;
    assert!(changed > 1e-3, "the vision hook had no effect ({changed})");
    Ok(())
}

/// Every tensor of the checkpoint is visited once under its file name.
#[test]
fn parameters_are_visited_under_checkpoint_names() -> anyhow::Result<()> {
    let cfg = tiny_config();
    let dir = tempfile::tempdir()?;
    let mut model = write_and_load(&cfg, dir.path())?;
    let file = candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)?;
    let mut visited = Vec::new();
    model.visit_params(&mut |name, t| {
        assert_eq!(t.dims(), file[name].dims(), "{name}");
        visited.push(name.to_string());
        Ok(())
    })?;
    let unique: BTreeSet<_> = visited.iter().cloned().collect();
    assert_eq!(unique.len(), visited.len(), "a tensor is visited twice");
    assert_eq!(unique, file.keys().cloned().collect::<BTreeSet<_>>());
    Ok(())
}

/// Missing fields take transformers' defaults (ViT-B/32's), and other activations parse.
#[test]
fn configuration_defaults_follow_transformers() -> anyhow::Result<()> {
    let cfg: ClipConfig = serde_json::from_str(
        r#"{"text_config": {"eos_token_id": 2, "bos_token_id": 0}, "vision_config": {}}"#,
    )?;
    assert_eq!(cfg, ClipConfig::vit_base_patch32());
    assert_eq!(cfg.vision_config.num_patches(), 49);
    let cfg: ClipConfig =
        serde_json::from_str(r#"{"vision_config": {"hidden_act": "gelu", "patch_size": 14}}"#)?;
    assert_eq!(
        cfg.vision_config.hidden_act,
        ClipActivation::Other(peftbench_core::ops::Activation::Gelu)
    );
    assert_eq!(cfg.text_config.eos_token_id, 49407);
    let bad: ClipConfig = serde_json::from_str(r#"{"vision_config": {"patch_size": 30}}"#)?;
    assert!(bad.validate().unwrap_err().contains("patch_size 30"));
    Ok(())
}

/// The tiny checkpoint written by ci/fixtures/clip_tiny.py (transformers' `save_pretrained`
/// layout and config.json), and its inputs and transformers' outputs.
fn transformers_fixture() -> anyhow::Result<(Clip, HashMap<String, Tensor>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_tiny");
    let model = Clip::load(
        &dir.join("model/config.json"),
        &dir.join("model/model.safetensors"),
        &Device::Cpu,
    )?;
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)?;
    Ok((model, expected))
}

#[test]
fn matches_transformers_clip_model() -> anyhow::Result<()> {
    let (model, exp) = transformers_fixture()?;
    let ctx = ForwardCtx::eval();
    let (ids, mask) = (&exp["input_ids"], &exp["attention_mask"]);
    let image = model.vision(&exp["pixel_values"], &NoHooks, &ctx)?;
    let text = model.text(ids, Some(mask), &NoHooks, &ctx)?;
    let logits = model.logits_per_image(&image.image_embeds, &text.text_embeds)?;
    let errors = [
        (
            "image_embeds",
            max_abs_diff(&image.image_embeds, &exp["image_embeds"])?,
        ),
        (
            "vision_last_hidden_state",
            max_abs_diff(&image.last_hidden_state, &exp["vision_last_hidden_state"])?,
        ),
        (
            "text_embeds",
            max_abs_diff(&text.text_embeds, &exp["text_embeds"])?,
        ),
        (
            "text_last_hidden_state",
            max_abs_diff(&text.last_hidden_state, &exp["text_last_hidden_state"])?,
        ),
        (
            "logits_per_image",
            max_abs_diff(&logits, &exp["logits_per_image"])?,
        ),
    ];
    for (what, err) in errors {
        println!("{what}: max |err| {err:.2e}");
        assert!(err < 1e-5, "{what} differs by {err}");
    }
    Ok(())
}

/// transformers' two pooling rules: the first end token (`eos_token_id` 40 here) and, with the
/// legacy `eos_token_id` 2, the highest id; the fixture's first text has a token above the end
/// token, so the rules pool different positions there.
#[test]
fn text_pooling_follows_both_transformers_rules() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_tiny");
    let (model, exp) = transformers_fixture()?;
    let mut cfg = model.config().clone();
    cfg.text_config.eos_token_id = 2;
    let tensors =
        candle_core::safetensors::load(dir.join("model/model.safetensors"), &Device::Cpu)?;
    let legacy = Clip::from_tensors(cfg, &tensors, "clip_tiny")?;
    let ctx = ForwardCtx::eval();
    let (ids, mask) = (&exp["input_ids"], &exp["attention_mask"]);
    let embeds = |m: &Clip| {
        m.text(ids, Some(mask), &NoHooks, &ctx)
            .map(|o| o.text_embeds)
    };
    let legacy_err = max_abs_diff(&embeds(&legacy)?, &exp["text_embeds_legacy"])?;
    assert!(legacy_err < 1e-5, "legacy pooling differs by {legacy_err}");
    let rules_differ = max_abs_diff(&exp["text_embeds_legacy"], &exp["text_embeds"])?;
    assert!(
        rules_differ > 1e-3,
        "the fixture does not tell the rules apart"
    );
    Ok(())
}
