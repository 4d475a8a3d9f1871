//! Checkpoint resolution: hub-cache layout round trip and the errors a user sees.

use candle_core::Device;
use peftbench_backbones::checkpoint::write_to_cache;
use peftbench_backbones::{resolve_checkpoint, Backbone, Vit, VitConfig};
use peftbench_core::SeededInit;

#[test]
fn a_checkpoint_written_to_a_hub_cache_loads_back_by_id() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let cache = hf_hub::Cache::new(root.path().to_path_buf());
    let mut vit = Vit::random(
        VitConfig::new(16, 1, 2, 32, 16, 8),
        &SeededInit::new(1, &Device::Cpu),
    )?;
    let written = write_to_cache(&cache, "peftbench/test-vit", "main", "abc123", |dir| {
        Ok(vit.save(dir)?)
    })?;
    assert!(written
        .weights
        .ends_with("models--peftbench--test-vit/snapshots/abc123/model.safetensors"));

    let found = resolve_checkpoint("peftbench/test-vit", None, std::slice::from_ref(&cache))?;
    assert_eq!(found, written);
    let mut loaded = Vit::load(&found.config, &found.weights, &Device::Cpu)?;
    let mut a = Vec::new();
    vit.visit_params(&mut |n, t| {
        a.push((n.to_string(), t.flatten_all()?.to_vec1::<f32>()?));
        Ok(())
    })?;
    let mut b = Vec::new();
    loaded.visit_params(&mut |n, t| {
        b.push((n.to_string(), t.flatten_all()?.to_vec1::<f32>()?));
        Ok(())
    })?;
    assert_eq!(a, b, "save/load is bit-exact");
    // A pinned commit resolves too.
    assert_eq!(
        resolve_checkpoint("peftbench/test-vit", Some("abc123"), &[cache])?,
        written
    );
    Ok(())
}

#[test]
fn a_missing_checkpoint_lists_where_it_looked_and_how_to_get_it() {
    let root = tempfile::tempdir().unwrap();
    let cache = hf_hub::Cache::new(root.path().to_path_buf());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let err = resolve_checkpoint("google/vit-base-patch16-224-in21k", None, &[cache])
        .unwrap_err()
        .to_string();
    assert!(err.contains("google/vit-base-patch16-224-in21k"), "{err}");
    assert!(
        err.contains("models--google--vit-base-patch16-224-in21k"),
        "{err}"
    );
    assert!(err.contains("huggingface-cli download"), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = resolve_checkpoint(empty.path().to_str().unwrap(), None, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json and model.safetensors"), "{err}");
}
