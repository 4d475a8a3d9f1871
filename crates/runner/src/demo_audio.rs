//! The embedded demo AST: a small Audio Spectrogram Transformer that this project pretrains itself,
//! so `harness suite demo-audio` needs nothing downloaded. It is trained from scratch on generated
//! tone-glide "words" (ten pitch contours, one second each, see
//! [`peftbench_data_audio::synthetic`]), then stored in the Hugging Face hub-cache layout under
//! `$PEFTBENCH_CACHE/hub/models--peftbench--demo-ast/` and loaded back through the same checkpoint
//! code as a real download, exactly like the vision demo backbone ([`crate::demo`]). Its snapshot
//! name is a hash of everything that shapes the weights.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use peftbench_backbones::{Ast, AstConfig, ResolvedCheckpoint};
use peftbench_core::SeededInit;
use peftbench_data_audio::synthetic::{keyword_task, Voice};
use peftbench_methods::PeftModel;
use peftbench_suite::{AudioSpec, OnDataError};
use peftbench_train::evaluate;

use crate::audio::{audio_batch_source, features_for, spec_augment};
use crate::pretraining::{
    backbone_tensors, cached_or_pretrained, recipe_commit, run_pretraining, DemoSnapshot,
    PretrainSettings, Pretrained,
};
use crate::Paths;

/// The `backbone.checkpoint` value that selects this backbone in a suite.
pub const DEMO_AUDIO_CHECKPOINT: &str = "demo-ast";
/// Its hub id in the project cache.
pub const DEMO_AUDIO_REPO_ID: &str = "peftbench/demo-ast";

/// Everything that determines the demo AST's weights.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoAstRecipe {
    pub config: AstConfig,
    /// Input pipeline of the upstream clips (the demo suite uses the same).
    pub audio: AudioSpec,
    pub task: &'static str,
    pub num_classes: usize,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub seed: u64,
}

impl Default for DemoAstRecipe {
    fn default() -> Self {
        // One second of audio is 98 frames; 100 frames and non-overlapping 16x16 patches give an
        // 8 x 6 patch grid, small enough to train on two cores in about a minute.
        let mut config = AstConfig::new(64, 4, 4, 128, 100, 128);
        config.frequency_stride = 16;
        config.time_stride = 16;
        Self {
            config,
            audio: AudioSpec {
                target_frames: 100,
                num_mel_bins: 128,
                mean: f64::from(peftbench_data_audio::AUDIOSET_MEAN),
                std: f64::from(peftbench_data_audio::AUDIOSET_STD),
                freq_mask: 24,
                time_mask: 10,
            },
            task: "tone glides",
            num_classes: 10,
            train_examples: 3000,
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

impl DemoAstRecipe {
    /// The snapshot name: a hash of the recipe (and this file's format version).
    pub fn commit(&self) -> String {
        recipe_commit("demo-ast-v1", self)
    }
}

/// The demo AST's files, pretraining it first if the cache has no snapshot for the recipe.
pub fn ensure_demo_ast(paths: &Paths, quiet: bool) -> anyhow::Result<ResolvedCheckpoint> {
    let recipe = DemoAstRecipe::default();
    let snapshot = DemoSnapshot {
        repo_id: DEMO_AUDIO_REPO_ID,
        commit: recipe.commit(),
        extra_files: &[],
        name: "demo AST",
        upstream: format!("generated {}", recipe.task),
    };
    cached_or_pretrained(paths, &snapshot, quiet, || {
        let (tensors, accuracy) = pretrain(&recipe, paths, quiet)?;
        Ok(Pretrained {
            config: recipe.config.to_hf_json(),
            tensors,
            card: serde_json::json!({ "recipe": recipe, "held_out_accuracy": accuracy }),
            extra: Vec::new(),
            summary: format!(
                "{:.1}% accuracy on held-out {}",
                100.0 * accuracy,
                recipe.task
            ),
        })
    })
}

/// Trains the AST from scratch on the upstream task; returns its weights (HF `ASTModel` names) and
/// held-out accuracy.
fn pretrain(
    recipe: &DemoAstRecipe,
    paths: &Paths,
    quiet: bool,
) -> anyhow::Result<(HashMap<String, Tensor>, f64)> {
    let device = Device::Cpu;
    let features = features_for(&recipe.audio, &paths.cache)?;
    let clips =
        |n, purpose: u64| keyword_task(n, recipe.num_classes, recipe.seed ^ purpose, &Voice::Tones);
    let train_set = clips(recipe.train_examples, 0x7261_696e)?;
    let eval_set = clips(recipe.eval_examples, 0x6576_616c)?;
    let (train_batches, _) = audio_batch_source(
        &train_set,
        &features,
        spec_augment(&recipe.audio),
        OnDataError::Stop,
        &device,
        quiet,
    )?;
    let (eval_batches, _) = audio_batch_source(
        &eval_set,
        &features,
        None,
        OnDataError::Stop,
        &device,
        quiet,
    )?;

    let init = SeededInit::new(recipe.seed, &device);
    let ast = Ast::random(recipe.config.clone(), &init.fork("backbone"))?;
    let mut model = PeftModel::new(
        "full",
        &serde_json::json!({}),
        Box::new(ast),
        recipe.num_classes,
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
    run_pretraining("demo AST", &model, &train_batches, &cfg, quiet)?;
    let accuracy = evaluate(&model, &eval_batches, 256)?.accuracy;
    let tensors = backbone_tensors(&mut model, "")?;
    Ok((tensors, accuracy))
}
