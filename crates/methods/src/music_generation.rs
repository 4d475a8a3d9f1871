//! A MusicGen model with a registry method attached, trained as MusicGen is fine-tuned
//! (transformers' `MusicgenForConditionalGeneration` with labels; AudioCraft's `ce`): the prompt
//! through the frozen text encoder, the codec tokens teacher-forced with codebook `k` delayed by
//! `k` steps, the loss the mean over codebooks of each codebook's cross-entropy on its real
//! (not delay-padded) positions. The same model generates with the method's hooks.
//!
//! A batch ([`Batch`]) holds the prompt's token ids in `inputs` `[B, S]` with its 0/1 `mask`, and
//! the delayed codes in `labels` `[B, K, T]` (u32), the pad token wherever a codebook has not
//! started or has ended ([`delayed_labels`]).

use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::musicgen::GenerationOptions;
use peftbench_backbones::{Backbone, Hooks, Musicgen};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_train::codebooks::{delay_codebooks, per_codebook_cross_entropy};
use peftbench_train::{Batch, TrainModel};

use crate::registry::find_method;
use crate::{Adaptation, ClassifierHead};

/// MusicGen adapted by one registry method.
pub struct MusicModel {
    model: Musicgen,
    adaptation: Box<dyn Adaptation>,
    pretrained_params: usize,
}

/// One clip's codes `[K][frames]` as delayed labels `[K][frames + K - 1]`: every frame of every
/// codebook is a target, the delay pattern's gaps are `pad` (transformers'
/// `build_delay_pattern_mask` over `frames + K - 1` steps).
pub fn delayed_labels(codes: &[Vec<u32>], pad: u32) -> Vec<Vec<u32>> {
    let extra = codes.len().saturating_sub(1);
    let padded: Vec<Vec<u32>> = codes
        .iter()
        .map(|row| {
            let mut row = row.clone();
            row.extend(std::iter::repeat_n(pad, extra));
            row
        })
        .collect();
    delay_codebooks(&padded, pad)
}

impl MusicModel {
    /// Attaches registry method `method` with `params` to `model`, its initial values from `init`.
    pub fn new(
        method: &str,
        params: &serde_json::Value,
        mut model: Musicgen,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        let found = find_method(method).map_err(anyhow::Error::msg)?;
        found
            .check_backbone(params, model.info())
            .map_err(anyhow::Error::msg)?;
        let pretrained_params = Backbone::num_params(&mut model);
        let forked;
        let stream = if found.forks_own_init() {
            forked = init.fork(method);
            &forked
        } else {
            init
        };
        let adaptation = found.attach(params, &mut model, stream)?;
        Ok(Self {
            model,
            adaptation,
            pretrained_params,
        })
    }

    pub fn model(&self) -> &Musicgen {
        &self.model
    }

    pub fn adaptation(&self) -> &dyn Adaptation {
        self.adaptation.as_ref()
    }

    /// Scalars the method trains.
    pub fn trainable_count(&self) -> usize {
        self.adaptation.trainable().count()
    }

    /// The decoder's pretrained scalars plus what the method adds.
    pub fn total_count(&self) -> usize {
        self.pretrained_params + self.adaptation.added_params()
    }

    /// Teacher-forced logits `[B, K, T, vocab]` of a batch.
    fn batch_logits_of(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        let tokens = self.model.shift_right(&batch.labels)?;
        let hooks: &dyn Hooks = self.adaptation.as_ref();
        self.model
            .forward(&batch.inputs, batch.mask.as_ref(), &tokens, hooks, ctx)
    }

    /// Each codebook's cross-entropy `[K]` on a batch, in evaluation mode.
    pub fn per_codebook_loss(&self, batch: &Batch) -> Result<Tensor> {
        let logits = self.batch_logits_of(batch, &ForwardCtx::eval())?;
        per_codebook_cross_entropy(&logits, &batch.labels, self.pad())
    }

    fn pad(&self) -> u32 {
        self.model.config().decoder.pad_token_id
    }

    /// Codes `[B, K, frames]` for prompts `input_ids` (0/1 `mask`) with the method's hooks.
    pub fn generate(
        &self,
        input_ids: &Tensor,
        mask: Option<&Tensor>,
        options: &GenerationOptions,
    ) -> Result<Tensor> {
        self.model
            .generate(input_ids, mask, options, self.adaptation.as_ref())
    }

    /// Saves the method's adapter (HF PEFT's format where PEFT has the method); returns the bytes
    /// written.
    pub fn save(&self, dir: &Path, base_model: &str) -> anyhow::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let files: Vec<PathBuf> = self.adaptation.save(
            dir,
            &ClassifierHead::modules_to_save(NamedVars::default()),
            base_model,
        )?;
        let mut bytes = 0;
        for f in files {
            bytes += std::fs::metadata(&f)?.len();
        }
        Ok(bytes)
    }
}

impl TrainModel for MusicModel {
    fn trainable(&self) -> &NamedVars {
        self.adaptation.trainable()
    }

    fn logits(&self, _input: &Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        candle_core::bail!("a music model reads whole batches (prompts and codes)")
    }

    fn lr_multiplier(&self, name: &str) -> f64 {
        self.adaptation.lr_multiplier(name)
    }

    fn batch_logits(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        self.batch_logits_of(batch, ctx)
    }

    /// The mean over codebooks of each codebook's cross-entropy (no label smoothing, as
    /// MusicGen trains).
    fn batch_loss(&self, batch: &Batch, ctx: &ForwardCtx, _label_smoothing: f64) -> Result<Tensor> {
        let logits = self.batch_logits_of(batch, ctx)?;
        per_codebook_cross_entropy(&logits, &batch.labels, self.pad())?.mean_all()
    }
}
