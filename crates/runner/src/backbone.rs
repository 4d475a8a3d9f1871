//! Turning a suite's `backbone:` into a loaded model.

use candle_core::Device;
use peftbench_backbones::{resolve_checkpoint, Vit};
use peftbench_suite::BackboneSpec;

use crate::{demo, Paths};

/// The hub caches searched, in order: the project's own, then Hugging Face's.
pub fn hub_caches(paths: &Paths) -> Vec<hf_hub::Cache> {
    vec![
        hf_hub::Cache::new(paths.cache.join("hub")),
        peftbench_backbones::checkpoint::hf_cache(),
    ]
}

/// A loaded backbone and the name adapters record as their base model.
pub struct LoadedBackbone {
    pub vit: Vit,
    pub name: String,
}

/// Loads `spec`: the embedded demo backbone (pretrained on first use), a local folder or a hub id.
pub fn load_backbone(
    spec: &BackboneSpec,
    paths: &Paths,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<LoadedBackbone> {
    let (files, name) = if spec.checkpoint == demo::DEMO_CHECKPOINT {
        (
            demo::ensure_demo_backbone(paths, quiet)?,
            demo::DEMO_REPO_ID.to_string(),
        )
    } else {
        (
            resolve_checkpoint(
                &spec.checkpoint,
                spec.revision.as_deref(),
                &hub_caches(paths),
            )?,
            spec.checkpoint.clone(),
        )
    };
    let vit = Vit::load(&files.config, &files.weights, device)?;
    Ok(LoadedBackbone { vit, name })
}
