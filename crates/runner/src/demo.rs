//! The embedded demo backbone: a small ViT that this project pretrains itself, so `harness suite
//! demo` needs nothing downloaded. It is trained from scratch on the generated `shapes` task (which
//! shape is drawn, wherever it is), then stored in the Hugging Face hub-cache layout under
//! `$PEFTBENCH_CACHE/hub/models--peftbench--demo-vit/` and loaded back through the same checkpoint
//! code as a real download. Its snapshot name is a hash of everything that shapes the weights, so
//! changing the recipe retrains instead of reusing a stale cache.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use peftbench_backbones::{ResolvedCheckpoint, Vit, VitConfig};
use peftbench_core::SeededInit;
use peftbench_data_vision::{synthetic, Normalization, Preprocess, ShapeTask};
use peftbench_methods::PeftModel;
use peftbench_train::evaluate;

use crate::data::batch_source;
use crate::pretraining::{
    backbone_tensors, cached_or_pretrained, recipe_commit, run_pretraining, DemoSnapshot,
    PretrainSettings, Pretrained,
};
use crate::Paths;

/// The `backbone.checkpoint` value that selects this backbone in a suite.
pub const DEMO_CHECKPOINT: &str = "demo";
/// Its hub id in the project cache.
pub const DEMO_REPO_ID: &str = "peftbench/demo-vit";

/// Everything that determines the demo backbone's weights.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoRecipe {
    pub config: VitConfig,
    pub task: &'static str,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub seed: u64,
}

impl Default for DemoRecipe {
    fn default() -> Self {
        let mut config = VitConfig::new(64, 4, 4, 128, 32, 8);
        config.layer_norm_eps = 1e-6;
        Self {
            config,
            task: "shapes",
            train_examples: 4000,
            eval_examples: 500,
            epochs: 8,
            batch_size: 64,
            lr: 2e-3,
            weight_decay: 0.05,
            label_smoothing: 0.1,
            seed: 0,
        }
    }
}

impl DemoRecipe {
    /// The snapshot name: a hash of the recipe (and this file's format version).
    pub fn commit(&self) -> String {
        recipe_commit("demo-v1", self)
    }
}

/// The demo backbone's files, pretraining it first if the cache has no snapshot for the recipe.
pub fn ensure_demo_backbone(paths: &Paths, quiet: bool) -> anyhow::Result<ResolvedCheckpoint> {
    let recipe = DemoRecipe::default();
    let snapshot = DemoSnapshot {
        repo_id: DEMO_REPO_ID,
        commit: recipe.commit(),
        extra_files: &[],
        name: "demo backbone",
        upstream: format!("generated `{}` images", recipe.task),
    };
    cached_or_pretrained(paths, &snapshot, quiet, || {
        let (tensors, accuracy) = pretrain(&recipe, quiet)?;
        Ok(Pretrained {
            config: recipe.config.to_hf_json(),
            tensors,
            card: serde_json::json!({ "recipe": recipe, "held_out_accuracy": accuracy }),
            extra: Vec::new(),
            summary: format!(
                "{:.1}% accuracy on held-out `{}` images",
                100.0 * accuracy,
                recipe.task
            ),
        })
    })
}

/// Trains the ViT from scratch on the upstream task; returns its weights (HF `ViTModel` names) and
/// held-out accuracy.
fn pretrain(recipe: &DemoRecipe, quiet: bool) -> anyhow::Result<(HashMap<String, Tensor>, f64)> {
    let device = Device::Cpu;
    let task = ShapeTask::from_name(recipe.task).expect("upstream task exists");
    let size = recipe.config.image_size;
    let pre = Preprocess {
        normalization: Normalization::None,
        ..Preprocess::new(size)
    };
    let train_set = Arc::new(synthetic::generate(
        task,
        recipe.train_examples,
        recipe.seed ^ 0x7261_696e,
        size,
    ));
    let eval_set = Arc::new(synthetic::generate(
        task,
        recipe.eval_examples,
        recipe.seed ^ 0x6576_616c,
        size,
    ));
    let train_batches = batch_source(&train_set, &pre, &device)?;
    let eval_batches = batch_source(&eval_set, &pre, &device)?;

    let init = SeededInit::new(recipe.seed, &device);
    let vit = Vit::random(recipe.config.clone(), &init.fork("backbone"))?;
    let mut model = PeftModel::new(
        "full",
        &serde_json::json!({}),
        Box::new(vit),
        task.num_classes(),
        &init,
    )?;
    let cfg = PretrainSettings {
        epochs: recipe.epochs,
        batch_size: recipe.batch_size,
        lr: recipe.lr,
        weight_decay: recipe.weight_decay,
        label_smoothing: recipe.label_smoothing,
        seed: recipe.seed,
    }
    .train_config();
    run_pretraining("demo backbone", &model, train_batches.as_ref(), &cfg, quiet)?;
    let accuracy = evaluate(&model, eval_batches.as_ref(), 256)?.accuracy;
    let tensors = backbone_tensors(&mut model, "vit.")?;
    Ok((tensors, accuracy))
}
