//! The embedded demo backbone: a small ViT that this project pretrains itself, so `harness suite
//! demo` needs nothing downloaded. It is trained from scratch on generated multi-attribute scenes
//! ([`peftbench_data_vision::scenes`]: a primary shape among up to three tiny distractors) with one
//! head per attribute of the primary (its type, hue, size and quadrant), the loss the mean of the
//! heads' cross-entropies on the pooled feature. Several attributes at once make the features know
//! where things are and what colour and size, not only which shape: pretrained on shape alone,
//! every method sat at chance on the downstream `position` task. No head is a downstream demo
//! label (quadrants, not the 3x3 cells of `position`; no orientation; no count), so adaptation
//! still has work to do. The heads are discarded; the backbone is stored in the Hugging Face
//! hub-cache layout under `$PEFTBENCH_CACHE/hub/models--peftbench--demo-vit/` and loaded back
//! through the same checkpoint code as a real download. Its snapshot name is a hash of everything
//! that shapes the weights, so changing the recipe retrains instead of reusing a stale cache.

use std::collections::HashMap;

use candle_core::{Device, Tensor, D};
use peftbench_backbones::{ResolvedCheckpoint, Vit, VitConfig};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_vision::scenes::{generate_scenes, Attribute, SceneCorpus};
use peftbench_data_vision::{sequential_batches, Normalization, Preprocess};
use peftbench_methods::PeftModel;
use peftbench_train::{cross_entropy, BatchSource, InMemoryBatches, TrainModel};

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
    /// The scene attributes with a pretraining head (names of [`Attribute`]).
    pub attributes: Vec<&'static str>,
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
            // No `count` head: with one (1-4 shapes; 5000 scenes x 12 epochs) the downstream
            // `count` task came out flat, every method within its interval of the linear probe
            // (66-72%, probe 65.8%); without it the methods spread (probe 36%, LoRA 48%, full
            // 54%). Scenes still hold 1-4 shapes, and the heads must single out the largest.
            attributes: vec!["shape", "colour", "size", "quadrant"],
            train_examples: 8000,
            eval_examples: 500,
            epochs: 15,
            batch_size: 64,
            lr: 2e-3,
            weight_decay: 0.05,
            label_smoothing: 0.1,
            seed: 0,
        }
    }
}

impl DemoRecipe {
    /// The snapshot name: a hash of the recipe (and this file's format version: v2 pretrains on
    /// multi-attribute scenes).
    pub fn commit(&self) -> String {
        recipe_commit("demo-v2", self)
    }

    /// The attributes with a head, in order.
    fn heads(&self) -> Vec<Attribute> {
        self.attributes
            .iter()
            .map(|name| {
                *Attribute::ALL
                    .iter()
                    .find(|a| a.name() == *name)
                    .expect("recipe attributes are scene attributes")
            })
            .collect()
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
        upstream: format!("generated scenes ({})", recipe.attributes.join(", ")),
    };
    cached_or_pretrained(paths, &snapshot, quiet, || {
        let (tensors, accuracies) = pretrain(&recipe, quiet)?;
        let held_out: serde_json::Map<String, serde_json::Value> = recipe
            .attributes
            .iter()
            .zip(&accuracies)
            .map(|(name, acc)| (name.to_string(), serde_json::json!(acc)))
            .collect();
        let summary = recipe
            .attributes
            .iter()
            .zip(&accuracies)
            .map(|(name, acc)| format!("{name} {:.1}%", 100.0 * acc))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Pretrained {
            config: recipe.config.to_hf_json(),
            tensors,
            card: serde_json::json!({ "recipe": recipe, "held_out_accuracy": held_out }),
            extra: Vec::new(),
            summary: format!("held-out accuracy {summary}"),
        })
    })
}

/// A scene corpus as tensors: images `[N, 3, S, S]` and the heads' labels `[N, heads]`.
fn scene_batches(
    corpus: &SceneCorpus,
    heads: &[Attribute],
    pre: &Preprocess,
    device: &Device,
) -> anyhow::Result<InMemoryBatches> {
    // Pixels only: the dataset's own labels (the first head's) are not used.
    let images = corpus.dataset(heads[0]);
    let mut pixels = Vec::with_capacity(images.len() * pre.values_per_image());
    for chunk in sequential_batches(images.len(), 256) {
        pixels.extend_from_slice(&images.load_batch(&chunk, pre)?.pixels);
    }
    let s = pre.image_size;
    let n = corpus.len();
    InMemoryBatches::new(
        Tensor::from_vec(pixels, (n, 3, s, s), device)?,
        Tensor::from_vec(corpus.label_matrix(heads), (n, heads.len()), device)?,
    )
}

/// The backbone with one linear head per attribute, stored as one head over the attributes'
/// classes side by side: logits `[B, sum of classes]`, labels `[B, heads]`.
struct MultiHead<'a> {
    model: &'a PeftModel,
    /// Each head's class count, in the logits' order.
    classes: Vec<usize>,
}

impl MultiHead<'_> {
    /// Each head's logits `[B, classes]`.
    fn split(&self, logits: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let mut offset = 0;
        self.classes
            .iter()
            .map(|&c| {
                let part = logits.narrow(1, offset, c);
                offset += c;
                part
            })
            .collect()
    }
}

impl TrainModel for MultiHead<'_> {
    fn trainable(&self) -> &NamedVars {
        self.model.trainable()
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.model.logits(input, ctx)
    }

    /// The mean of the heads' cross-entropies: their sum scaled by a constant, so the single-task
    /// recipe's learning rate and gradient clipping keep their meaning.
    fn loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for (h, part) in self.split(logits)?.iter().enumerate() {
            let target = labels.narrow(1, h, 1)?.squeeze(1)?.contiguous()?;
            let loss = cross_entropy(part, &target, label_smoothing)?;
            total = Some(match total {
                Some(t) => (t + loss)?,
                None => loss,
            });
        }
        let total = total.expect("at least one head");
        total / self.classes.len() as f64
    }
}

/// Each head's accuracy on `data`.
fn head_accuracies(model: &MultiHead<'_>, data: &InMemoryBatches) -> anyhow::Result<Vec<f64>> {
    let mut right = vec![0usize; model.classes.len()];
    for batch in data.batches(256, None) {
        let batch = batch?;
        let logits = model.logits(&batch.inputs, &ForwardCtx::eval())?.detach();
        for (h, part) in model.split(&logits)?.iter().enumerate() {
            let predicted = part.argmax(D::Minus1)?.to_vec1::<u32>()?;
            let labels = batch.labels.narrow(1, h, 1)?.squeeze(1)?.to_vec1::<u32>()?;
            right[h] += predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
        }
    }
    let n = data.num_examples() as f64;
    Ok(right.into_iter().map(|r| r as f64 / n).collect())
}

/// Trains the ViT from scratch on the scene attributes; returns its weights (HF `ViTModel` names)
/// and each head's held-out accuracy.
fn pretrain(
    recipe: &DemoRecipe,
    quiet: bool,
) -> anyhow::Result<(HashMap<String, Tensor>, Vec<f64>)> {
    let device = Device::Cpu;
    let heads = recipe.heads();
    let size = recipe.config.image_size;
    let pre = Preprocess {
        normalization: Normalization::None,
        ..Preprocess::new(size)
    };
    let train_set = generate_scenes(recipe.train_examples, recipe.seed ^ 0x7261_696e, size);
    let eval_set = generate_scenes(recipe.eval_examples, recipe.seed ^ 0x6576_616c, size);
    let train_batches = scene_batches(&train_set, &heads, &pre, &device)?;
    let eval_batches = scene_batches(&eval_set, &heads, &pre, &device)?;

    let init = SeededInit::new(recipe.seed, &device);
    let vit = Vit::random(recipe.config.clone(), &init.fork("backbone"))?;
    let classes: Vec<usize> = heads.iter().map(Attribute::num_classes).collect();
    // Full fine-tuning makes every backbone weight trainable; its head, over all attributes'
    // classes, is the heads side by side.
    let mut model = PeftModel::new(
        "full",
        &serde_json::json!({}),
        Box::new(vit),
        classes.iter().sum(),
        &init,
    )?;
    let multi = MultiHead {
        model: &model,
        classes,
    };
    let cfg = PretrainSettings {
        epochs: recipe.epochs,
        batch_size: recipe.batch_size,
        lr: recipe.lr,
        weight_decay: recipe.weight_decay,
        label_smoothing: recipe.label_smoothing,
        seed: recipe.seed,
    }
    .train_config();
    run_pretraining("demo backbone", &multi, &train_batches, &cfg, quiet)?;
    let accuracies = head_accuracies(&multi, &eval_batches)?;
    let tensors = backbone_tensors(&mut model, "vit.")?;
    Ok((tensors, accuracies))
}
