//! The frozen ViT forward equals candle-transformers' ViT on the same weights, loaded from the same
//! `config.json` + `model.safetensors` through our checkpoint resolution.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use peftbench_backbones::{resolve_checkpoint, Backbone, NoHooks, Vit, VitConfig};
use peftbench_core::{ForwardCtx, SeededInit};

fn small_config() -> VitConfig {
    let mut cfg = VitConfig::new(48, 3, 4, 96, 32, 8);
    cfg.layer_norm_eps = 1e-12;
    cfg
}

/// Random weights with non-trivial norms and biases (so a wrong bias or norm would show).
fn random_checkpoint(dir: &std::path::Path, num_labels: usize) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let init = SeededInit::new(11, &device);
    let mut vit = Vit::random(small_config(), &init)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    vit.visit_params(&mut |name, t| {
        // Perturb every tensor (biases and norms included) so each parameter matters.
        let noise = init
            .fork(name)
            .normal(t.shape(), 0.05)?
            .as_tensor()
            .detach();
        tensors.insert(name.to_string(), (t.clone() + noise)?);
        Ok(())
    })?;
    let d = small_config().hidden_size;
    tensors.insert(
        "classifier.weight".into(),
        init.fork("cw")
            .normal((num_labels, d), 0.1)?
            .as_tensor()
            .detach(),
    );
    tensors.insert(
        "classifier.bias".into(),
        init.fork("cb")
            .normal(num_labels, 0.1)?
            .as_tensor()
            .detach(),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&small_config().to_hf_json())?,
    )?;
    Ok(())
}

#[test]
fn frozen_forward_equals_candle_transformers_vit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let num_labels = 5;
    random_checkpoint(dir.path(), num_labels)?;
    let files = resolve_checkpoint(dir.path().to_str().unwrap(), None, &[])?;
    let device = Device::Cpu;

    let ours = Vit::load(&files.config, &files.weights, &device)?;
    let tensors = candle_core::safetensors::load(&files.weights, &device)?;
    let cw = &tensors["classifier.weight"];
    let cb = &tensors["classifier.bias"];

    let cfg: candle_transformers::models::vit::Config =
        serde_json::from_str(&std::fs::read_to_string(&files.config)?)?;
    let vb = unsafe_free_var_builder(&files.weights, &device)?;
    let reference = candle_transformers::models::vit::Model::new(&cfg, num_labels, vb)?;

    let pixels = SeededInit::new(5, &device)
        .normal((3, 3, 32, 32), 1.0)?
        .as_tensor()
        .detach();
    let expected = reference.forward(&pixels)?;
    let features = ours.forward_features(&pixels, &NoHooks, &ForwardCtx::eval())?;
    let got = features.matmul(&cw.t()?)?.broadcast_add(cb)?;
    let diff = (got - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = expected.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(scale > 0.1, "logits are not degenerate ({scale})");
    assert!(diff < 1e-4, "max |ours - candle-transformers| = {diff}");
    Ok(())
}

/// VarBuilder over tensors read into memory (no mmap, hence no `unsafe`).
fn unsafe_free_var_builder(
    path: &std::path::Path,
    device: &Device,
) -> anyhow::Result<VarBuilder<'static>> {
    let tensors = candle_core::safetensors::load(path, device)?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

#[test]
fn parameter_count_matches_vit_b16_closed_form() -> anyhow::Result<()> {
    // ViT-B/16 (google/vit-base-patch16-224-in21k) has 85,798,656 encoder parameters: the published
    // full-model count 85,876,325 minus the 101-class head (768*101 + 101 = 77,669).
    let cfg = VitConfig::vit_base_patch16_224();
    let (d, f, p, n) = (768usize, 3072usize, 16usize, 196usize);
    let per_layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d;
    let closed_form = d * 3 * p * p + d + d + (n + 1) * d + 12 * per_layer + 2 * d;
    assert_eq!(closed_form, 85_798_656);
    assert_eq!(closed_form + 768 * 101 + 101, 85_876_325);
    // Build a full-size model cheaply from zeros to count through the real visitor.
    let device = Device::Cpu;
    let mut vit = Vit::random(cfg, &SeededInit::new(0, &device))?;
    assert_eq!(vit.num_params(), closed_form);
    Ok(())
}
