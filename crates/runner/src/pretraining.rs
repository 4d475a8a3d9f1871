//! What the three demo backbones (ViT, AST, BERT) share when this project pretrains them from
//! scratch: one optimiser recipe, a one-line-per-epoch progress display, divergence as an error,
//! the trained weights read back under their checkpoint names, and the snapshot in the project's
//! hub cache named by a hash of the recipe. Each demo keeps its own data, model and objective.

use std::collections::HashMap;
use std::io::Write;

use candle_core::Tensor;
use peftbench_backbones::checkpoint::write_to_cache;
use peftbench_backbones::{resolve_checkpoint, ResolvedCheckpoint};
use peftbench_methods::PeftModel;
use peftbench_train::{
    train, AdamWConfig, BatchSource, Selection, TrainConfig, TrainModel, TrainOutcome,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backbone::hub_caches;
use crate::Paths;

/// The settings that differ between the demo backbones' pretraining runs.
#[derive(Debug, Clone, Copy)]
pub struct PretrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub seed: u64,
}

impl PretrainSettings {
    /// AdamW without decay on 1-d parameters, one warm-up epoch from `lr / 100`, cosine decay to
    /// `lr / 100`, gradients clipped to norm 1, the final epoch's weights.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            eval_batch_size: 256,
            lr: self.lr,
            min_lr: self.lr / 100.0,
            warmup_epochs: 1,
            warmup_lr: self.lr / 100.0,
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                decay_1d: false,
                ..AdamWConfig::default()
            },
            label_smoothing: self.label_smoothing,
            grad_clip: Some(1.0),
            drop_path: 0.0,
            seed: self.seed,
            selection: Selection::Final,
        }
    }
}

/// Trains `model` on `data` with `cfg`, printing the loss after each epoch on one line unless
/// `quiet`; a diverged run is an error naming `what`.
pub fn run_pretraining(
    what: &str,
    model: &dyn TrainModel,
    data: &dyn BatchSource,
    cfg: &TrainConfig,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut progress = |p: peftbench_train::Progress| {
        if !quiet && p.step + 1 == p.steps_per_epoch {
            eprint!(
                "\r  pretraining epoch {}/{} loss {:.3}   ",
                p.epoch + 1,
                p.epochs,
                p.loss
            );
            let _ = std::io::stderr().flush();
        }
    };
    let outcome = train(model, data, None, cfg, &mut progress)?;
    if !quiet {
        eprintln!();
    }
    match outcome {
        TrainOutcome::Completed(_) => Ok(()),
        TrainOutcome::Diverged { epoch, loss, .. } => {
            anyhow::bail!("{what} pretraining diverged at epoch {epoch} (loss {loss})")
        }
    }
}

/// Detached copies of the backbone's weights under their checkpoint names, `strip_prefix`
/// removed where present.
pub fn backbone_tensors(
    model: &mut PeftModel,
    strip_prefix: &str,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    model.backbone_mut().visit_params(&mut |name, t| {
        tensors.insert(
            name.strip_prefix(strip_prefix).unwrap_or(name).to_string(),
            t.detach().copy()?,
        );
        Ok(())
    })?;
    Ok(tensors)
}

/// The snapshot name of a demo recipe: SHA-256 of `tag:<summation order>:<recipe as JSON>`,
/// first 20 bytes in hex (the length of a git commit, as the hub cache expects). `tag` versions
/// the file format, so a changed recipe, a changed format or another arithmetic
/// (`PEFTBENCH_GEMM`) retrains.
pub fn recipe_commit(tag: &str, recipe: &impl Serialize) -> String {
    commit_under(tag, peftbench_core::kernels::summation_order(), recipe)
}

/// [`recipe_commit`] under a given summation order.
fn commit_under(tag: &str, order: &str, recipe: &impl Serialize) -> String {
    let json = serde_json::to_string(recipe).expect("recipe serialises");
    let digest = Sha256::digest(format!("{tag}:{order}:{json}").as_bytes());
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// Where a demo backbone lives in the project's hub cache.
pub struct DemoSnapshot<'a> {
    /// Its hub id (`peftbench/demo-vit`).
    pub repo_id: &'a str,
    /// [`recipe_commit`] of its recipe.
    pub commit: String,
    /// Files a complete snapshot holds besides `config.json` and `model.safetensors`.
    pub extra_files: &'a [&'a str],
    /// What it is, for messages (`demo AST`).
    pub name: &'a str,
    /// What it is pretrained on, for messages (`generated tone glides`).
    pub upstream: String,
}

/// What pretraining a demo backbone produced.
pub struct Pretrained {
    /// Its Hugging Face `config.json`.
    pub config: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
    /// `peftbench_pretraining.json`: the recipe and the held-out result.
    pub card: serde_json::Value,
    /// Further files of the snapshot, by name (the text demo's `tokenizer.json`).
    pub extra: Vec<(&'static str, String)>,
    /// The held-out result for the log (`65.0% accuracy on held-out tone glides`).
    pub summary: String,
}

/// The demo backbone's files from the project cache, or, when the cache has no complete snapshot
/// for its recipe, `pretrain` run and written there (atomically: a killed run leaves nothing).
pub fn cached_or_pretrained(
    paths: &Paths,
    snapshot: &DemoSnapshot<'_>,
    quiet: bool,
    pretrain: impl FnOnce() -> anyhow::Result<Pretrained>,
) -> anyhow::Result<ResolvedCheckpoint> {
    let caches = hub_caches(paths);
    if let Ok(found) = resolve_checkpoint(snapshot.repo_id, Some(&snapshot.commit), &caches[..1]) {
        let complete = snapshot
            .extra_files
            .iter()
            .all(|f| found.config.with_file_name(f).is_file());
        if complete {
            return Ok(found);
        }
    }
    let cache = &caches[0];
    if !quiet {
        eprintln!(
            "Pretraining the {} on {} (first use; cached in {})",
            snapshot.name,
            snapshot.upstream,
            cache.path().display()
        );
    }
    let started = std::time::Instant::now();
    let made = pretrain()?;
    if !quiet {
        let mut name = snapshot.name.to_string();
        if let Some(first) = name.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        eprintln!(
            "{name}: {} after {:.0} s",
            made.summary,
            started.elapsed().as_secs_f64()
        );
    }
    write_to_cache(
        cache,
        snapshot.repo_id,
        &snapshot.commit,
        &snapshot.commit,
        |dir| {
            std::fs::write(
                dir.join("config.json"),
                serde_json::to_string_pretty(&made.config)?,
            )?;
            candle_core::safetensors::save(&made.tensors, dir.join("model.safetensors"))?;
            for (file, text) in &made.extra {
                std::fs::write(dir.join(file), text)?;
            }
            std::fs::write(
                dir.join("peftbench_pretraining.json"),
                serde_json::to_string_pretty(&made.card)?,
            )?;
            Ok(())
        },
    )
}

/// Publishes a folder atomically: `fill` writes it under a temporary name beside `dir`, which is
/// then renamed to `dir`, so a killed run leaves nothing half-written that a later run would
/// read. When another process published `dir` first, its folder is kept (both computed the same
/// thing) and ours is dropped, so a folder another process may be reading is never replaced.
pub fn publish_dir(
    dir: &std::path::Path,
    fill: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let staging = dir.with_extension(format!("staging-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    fill(&staging)?;
    if dir.exists() || std::fs::rename(&staging, dir).is_err() && dir.exists() {
        std::fs::remove_dir_all(&staging)?;
        return Ok(());
    }
    anyhow::ensure!(dir.exists(), "could not publish {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backbone cached under one arithmetic is never found under another: the snapshot name
    /// is SHA-256 of `tag:order:recipe` (checked against the digest computed here by hand), and
    /// differs between the two orders.
    #[test]
    fn snapshot_names_separate_summation_orders() {
        let recipe = serde_json::json!({ "epochs": 3 });
        let fixed = commit_under("demo-v2", "fixed-order", &recipe);
        let upstream = commit_under("demo-v2", "upstream", &recipe);
        assert_ne!(fixed, upstream);
        let expected: String = Sha256::digest(br#"demo-v2:fixed-order:{"epochs":3}"#)
            .iter()
            .take(20)
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(fixed, expected);
        assert_eq!(fixed.len(), 40);
        assert_eq!(
            recipe_commit("demo-v2", &recipe),
            commit_under(
                "demo-v2",
                peftbench_core::kernels::summation_order(),
                &recipe
            )
        );
    }
}
