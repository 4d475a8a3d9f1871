//! What the three demo backbones (ViT, AST, BERT) share when this project pretrains them from
//! scratch: one optimiser recipe, a one-line-per-epoch progress display, divergence as an error,
//! and the trained weights read back under their checkpoint names. Each demo keeps its own data,
//! model and objective.

use std::collections::HashMap;
use std::io::Write;

use candle_core::Tensor;
use peftbench_methods::PeftModel;
use peftbench_train::{
    train, AdamWConfig, BatchSource, Selection, TrainConfig, TrainModel, TrainOutcome,
};

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
