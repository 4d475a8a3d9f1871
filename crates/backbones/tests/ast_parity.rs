//! AST forward pass against Hugging Face transformers 5.24's `ASTModel`.
//!
//! Fixture (`tests/fixtures/ast_tiny/`): an `ASTForAudioClassification` with a small random config
//! (hidden 32, 2 layers, 2 heads, 32 mel bins, 40 frames, strides 10: 2 x 3 overlapping patches), every
//! tensor re-drawn from a normal so none is trivially zero, saved with `save_pretrained`; and its
//! `audio_spectrogram_transformer(x)` outputs for a random `[2, 40, 32]` input. Written by
//! `ci/fixtures/ast_tiny.py` (regenerate every fixture with `ci/fixtures/regenerate.sh`).

use std::path::Path;

use candle_core::{Device, IndexOp, Tensor};
use peftbench_backbones::{Ast, Backbone, LinearSite, NoHooks};
use peftbench_core::ForwardCtx;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ast_tiny")
}

fn load(max_length: Option<usize>) -> Ast {
    let dir = fixture().join("model");
    Ast::load(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        &Device::Cpu,
        max_length,
    )
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn matches_hf_ast_model() {
    let expected =
        candle_core::safetensors::load(fixture().join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let ast = load(None);
    let ctx = ForwardCtx::eval();
    let x = &expected["input_values"];
    let tokens = ast.forward_tokens(x, &NoHooks, &ctx).unwrap();
    let err = max_abs_diff(&tokens, &expected["last_hidden_state"]);
    eprintln!("last_hidden_state max error {err:e}");
    assert!(err < 1e-4, "last_hidden_state max error {err}");
    let pooled = ast.forward_features(x, &NoHooks, &ctx).unwrap();
    let err = max_abs_diff(&pooled, &expected["pooler_output"]);
    eprintln!("pooler_output max error {err:e}");
    assert!(err < 1e-4, "pooler_output max error {err}");
}

#[test]
fn checkpoint_names_and_sites_follow_hf() {
    let mut ast = load(None);
    assert_eq!(
        ast.module_path(1, LinearSite::Value),
        "audio_spectrogram_transformer.encoder.layer.1.attention.attention.value"
    );
    assert_eq!(ast.info().num_tokens, 2 + 6);
    let mut names = Vec::new();
    ast.visit_params(&mut |n, _| {
        names.push(n.to_string());
        Ok(())
    })
    .unwrap();
    // Every encoder tensor of the checkpoint, the classifier head excluded.
    let file =
        candle_core::safetensors::load(fixture().join("model/model.safetensors"), &Device::Cpu)
            .unwrap();
    let mut in_file: Vec<_> = file
        .keys()
        .filter(|k| !k.starts_with("classifier."))
        .cloned()
        .collect();
    in_file.sort();
    names.sort();
    assert_eq!(names, in_file);
}

#[test]
fn position_embeddings_adapt_to_other_frame_counts() {
    let ast = load(None);
    let pos = |a: &Ast| {
        let mut out = None;
        a.clone()
            .visit_params(&mut |n, t| {
                if n.ends_with("position_embeddings") {
                    out = Some(t.clone());
                }
                Ok(())
            })
            .unwrap();
        out.unwrap()
    };
    // 40 -> 26 frames: time_out 3 -> 2; AST's crop keeps columns from t_old/2 - t_new/2 = 0, i.e. (0, 1),
    // in each frequency row (ast_models.py: `oringal_hw/2 - t_dim/2`).
    let short = ast.clone().with_max_length(26).unwrap();
    let (p0, p1) = (pos(&ast), pos(&short));
    assert_eq!(p1.dims(), &[1, 2 + 4, 32]);
    for (f, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let a = p1.i((0, 2 + f * 2 + j)).unwrap();
        let b = p0.i((0, 2 + f * 3 + j)).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }
    // Longer inputs run, and the same length is the identity.
    let long = ast.clone().with_max_length(100).unwrap();
    let x = Tensor::zeros((1, 100, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let out = long
        .forward_features(&x, &NoHooks, &ForwardCtx::eval())
        .unwrap();
    assert_eq!(out.dims(), &[1, 32]);
    assert_eq!(
        max_abs_diff(&pos(&ast.clone().with_max_length(40).unwrap()), &p0),
        0.0
    );
}
