//! Finding a checkpoint's files: a local folder, the Hugging Face hub cache, or a download.
//!
//! Resolution order for `spec`:
//! 1. an existing folder holding `config.json` and `model.safetensors`;
//! 2. a hub id (`org/name`) found in one of the given hub caches (the project's own cache, then
//!    `$HF_HOME/hub` or `~/.cache/huggingface/hub`), at `revision` (a branch/tag ref or a commit);
//! 3. a download through `hf-hub` into the HF cache, unless `HF_HUB_OFFLINE=1`.
//!
//! Failing all three, the error lists every place looked at and how to provide the files.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

/// The two files a backbone needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCheckpoint {
    pub config: PathBuf,
    pub weights: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "checkpoint `{spec}` not found. Looked for config.json and model.safetensors in:\n{}\n{hint}",
        .looked_in.iter().map(|p| format!("  - {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    NotFound {
        spec: String,
        looked_in: Vec<PathBuf>,
        hint: String,
    },
    #[error(
        "checkpoint `{spec}` is not in a local cache and downloading it failed: {reason}\nLooked in:\n{}",
        .looked_in.iter().map(|p| format!("  - {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    Download {
        spec: String,
        reason: String,
        looked_in: Vec<PathBuf>,
    },
}

const FILES: [&str; 2] = ["config.json", "model.safetensors"];

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false)
}

/// The default Hugging Face cache (`$HF_HOME/hub` or `~/.cache/huggingface/hub`).
pub fn hf_cache() -> Cache {
    Cache::from_env()
}

/// Finds the files in one hub cache, at a ref (`refs/<revision>`) or a commit (`snapshots/<hash>`).
fn from_cache(
    cache: &Cache,
    id: &str,
    revision: &str,
    looked_in: &mut Vec<PathBuf>,
) -> Option<ResolvedCheckpoint> {
    let repo = cache.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let folder = cache.path().join(Repo::model(id.to_string()).folder_name());
    looked_in.push(folder.join("snapshots").join(format!("<refs/{revision}>")));
    if let (Some(config), Some(weights)) = (repo.get(FILES[0]), repo.get(FILES[1])) {
        return Some(ResolvedCheckpoint { config, weights });
    }
    let pinned = folder.join("snapshots").join(revision);
    if pinned.join(FILES[0]).is_file() && pinned.join(FILES[1]).is_file() {
        return Some(ResolvedCheckpoint {
            config: pinned.join(FILES[0]),
            weights: pinned.join(FILES[1]),
        });
    }
    None
}

/// Resolves `spec` (a folder or a hub id) to its files; see the module docs for the order.
pub fn resolve_checkpoint(
    spec: &str,
    revision: Option<&str>,
    caches: &[Cache],
) -> Result<ResolvedCheckpoint, CheckpointError> {
    let revision = revision.unwrap_or("main");
    let mut looked_in = Vec::new();
    let dir = Path::new(spec);
    if dir.is_dir() {
        let (config, weights) = (dir.join(FILES[0]), dir.join(FILES[1]));
        if config.is_file() && weights.is_file() {
            return Ok(ResolvedCheckpoint { config, weights });
        }
        looked_in.push(dir.to_path_buf());
        let hint = if dir.join("pytorch_model.bin").is_file() {
            "The folder has pytorch_model.bin only: convert it to model.safetensors (e.g. \
             `transformers` save_pretrained(..., safe_serialization=True))."
        } else {
            "The folder must contain config.json and model.safetensors (Hugging Face layout)."
        };
        return Err(CheckpointError::NotFound {
            spec: spec.into(),
            looked_in,
            hint: hint.into(),
        });
    }
    for cache in caches {
        if let Some(found) = from_cache(cache, spec, revision, &mut looked_in) {
            return Ok(found);
        }
    }
    if offline() || !spec.contains('/') {
        return Err(CheckpointError::NotFound {
            spec: spec.into(),
            looked_in,
            hint: format!(
                "Download it where a network is available with `huggingface-cli download {spec} \
                 config.json model.safetensors` and point HF_HOME at that cache, or pass a local folder.{}",
                if offline() { " (HF_HUB_OFFLINE is set, so no download was tried.)" } else { "" }
            ),
        });
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| CheckpointError::Download {
            spec: spec.into(),
            reason: e.to_string(),
            looked_in: looked_in.clone(),
        })?;
    let repo = api.repo(Repo::with_revision(
        spec.into(),
        RepoType::Model,
        revision.into(),
    ));
    let get = |f: &str| {
        repo.get(f).map_err(|e| CheckpointError::Download {
            spec: spec.into(),
            looked_in: looked_in.clone(),
            reason: format!(
                "{f}: {e}. Without network access, download it elsewhere with \
                 `huggingface-cli download {spec}` and set HF_HOME, or pass a local folder."
            ),
        })
    };
    Ok(ResolvedCheckpoint {
        config: get(FILES[0])?,
        weights: get(FILES[1])?,
    })
}

/// Writes files into a hub-cache layout (`models--org--name/snapshots/<commit>/` plus
/// `refs/<revision>`), so a checkpoint the project creates loads through the same code as a
/// downloaded one. `write` receives the snapshot folder.
pub fn write_to_cache(
    cache: &Cache,
    id: &str,
    revision: &str,
    commit: &str,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<ResolvedCheckpoint> {
    let folder = cache.path().join(Repo::model(id.to_string()).folder_name());
    let snapshot = folder.join("snapshots").join(commit);
    // Write into a temporary sibling and rename, so a killed process never leaves a half checkpoint.
    let staging = folder.join(format!(".staging-{commit}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    write(&staging)?;
    if snapshot.exists() {
        std::fs::remove_dir_all(&snapshot)?;
    }
    std::fs::create_dir_all(snapshot.parent().expect("snapshot has a parent"))?;
    std::fs::rename(&staging, &snapshot)?;
    cache
        .repo(Repo::with_revision(
            id.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
        .create_ref(commit)?;
    Ok(ResolvedCheckpoint {
        config: snapshot.join(FILES[0]),
        weights: snapshot.join(FILES[1]),
    })
}

/// Reads tensor `key` of a checkpoint, checking its shape, as f32; errors name `origin` and the
/// tensor (every model's `from_tensors` reads through this).
pub(crate) fn get_tensor(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    key: &str,
    shape: &[usize],
    origin: &str,
) -> candle_core::Result<candle_core::Tensor> {
    let t = tensors
        .get(key)
        .ok_or_else(|| candle_core::Error::Msg(format!("{origin}: missing tensor `{key}`")))?;
    if t.dims() != shape {
        candle_core::bail!(
            "{origin}: tensor `{key}` has shape {:?}, expected {shape:?}",
            t.dims()
        );
    }
    t.to_dtype(candle_core::DType::F32)
}
