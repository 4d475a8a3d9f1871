//! SEMA (Wang, Lu, Yao, Gong, "Self-Expansion of Pre-trained Models with Mixture of Adapters for
//! Continual Learning", CVPR 2025; its code, `huiyiwang01/SEMA-CL`): the frozen backbone grows
//! adapters only where the data has shifted.
//!
//! - **Functional adapters**: `up(ReLU(down(x)))`, [`BOTTLENECK`] wide, parallel to each block's
//!   MLP and reading the same post-attention stream (`down` Kaiming, `up` zero, no scale: the
//!   reference code's forward uses none). Every block gets one in the first stage; only the last
//!   `expandable_blocks` blocks (`learner_params`, default 3: SEMA's blocks 9-11 of 12) can add
//!   more later.
//! - **Representation descriptors**: each adapter of an expandable block has a linear
//!   autoencoder (hidden / [`DESCRIPTOR_RATIO`] wide: 128 on ViT-B) over the block's
//!   token-mean input, trained after its adapter to reconstruct the stage's data; the mean and
//!   standard deviation of its per-example reconstruction error on that data are kept.
//! - **Expansion**: in every stage after the first, the stage's training data passes through in
//!   batches of [`DETECT_BATCH`]. A block's shift score for a batch is the smallest, over its
//!   adapters, of the batch mean of `|error - mean| / std`; the shallowest block whose score
//!   passes `threshold` (`learner_params`, default 2: SEMA's on CIFAR-100 and ImageNet-R; 1 on
//!   ImageNet-A and VTAB) and has not expanded this stage gets a new adapter, descriptor and
//!   router row, which train at once (adapter, row and classifier; then the descriptor), and the
//!   pass goes on. Passes repeat until one adds nothing. A stage that adds nothing trains the
//!   classifier only.
//! - **Expandable weighting router**: per expandable block, a linear map of the token-mean input
//!   to one logit per adapter; the adapters' outputs are mixed by its softmax. A new adapter adds
//!   one row; old rows, adapters and descriptors stay frozen.
//! - **Classifier**: one linear head over every class, trained in every stage with logits masked
//!   to the stage's classes (SEMA's `-inf` on earlier classes); prediction is its argmax over the
//!   classes seen.
//!
//! Differences from the reference code: the descriptor's statistics come from one pass over
//! the stage's training data after it trains (the code keeps the errors of the last 500
//! training-mode forwards); descriptors train at [`DESCRIPTOR_LR_FACTOR`] times the recipe's
//! learning rate for the recipe's epochs (the code: lr 0.01 against 0.005, 20 epochs); the
//! optimizer is the recipe's; the classifier starts as every learner's here (truncated normal,
//! std 0.02, as ViT's head), where the code keeps PyTorch's `nn.Linear` default (Kaiming
//! uniform): on `demo-cl` that default costs 28 points of Ā (23.4 against 51.3), because the
//! rows of classes not yet trained start large and the masked loss never evens them out.
//! Exemplar-free; the entry's method must be `linear`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Tensor, Var, D};
use peftbench_backbones::{Backbone, Hooks, Sublayer};
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::adapter::{AdapterActivation, Bottleneck};
use peftbench_methods::ClassifierHead;
use peftbench_train::{
    derive_seed, train, Batch, BatchSource, TrainConfig, TrainModel, TrainOutcome, TrainReport,
};

use super::{
    continual, exemplar_free, joined, HookedClassifier, StageContext, StageLearner, StageOutcome,
    Stream, STAGE,
};
use crate::run::{train_config, MODEL_INIT};

/// Width of every functional adapter (SEMA's `ffn_num`).
pub(crate) const BOTTLENECK: usize = 16;
/// The last blocks that may expand unless `learner_params` say otherwise (SEMA: blocks 9-11 of 12).
pub(crate) const DEFAULT_EXPANDABLE_BLOCKS: usize = 3;
/// The descriptor's width is the hidden size over this (SEMA's `rd_dim` 128 on ViT-B's 768).
pub(crate) const DESCRIPTOR_RATIO: usize = 6;
/// Examples per batch of the shift detection (SEMA's `detect_batch_size`).
pub(crate) const DETECT_BATCH: usize = 128;
/// The descriptors' learning rate relative to the recipe's (SEMA: `rd_lr` 0.01 / `init_lr` 0.005).
pub(crate) const DESCRIPTOR_LR_FACTOR: f64 = 2.0;
/// Purpose mixed into the detection passes' shuffle ("DTCT").
const DETECT: u64 = 0x4454_4354;

/// A linear autoencoder of a block's token-mean input, with its error statistics.
struct Descriptor {
    encoder_weight: Var,
    encoder_bias: Var,
    decoder_weight: Var,
    decoder_bias: Var,
    /// Mean and standard deviation of the per-example error on the data it learned: `[2]`.
    statistics: Var,
}

impl Descriptor {
    fn new(hidden: usize, init: &SeededInit) -> candle_core::Result<Self> {
        let width = (hidden / DESCRIPTOR_RATIO).max(1);
        Ok(Self {
            encoder_weight: init
                .fork("encoder")
                .kaiming_uniform((width, hidden), hidden)?,
            encoder_bias: init.zeros(width)?,
            decoder_weight: init
                .fork("decoder")
                .kaiming_uniform((hidden, width), width)?,
            decoder_bias: init.zeros(hidden)?,
            statistics: init.zeros(2)?,
        })
    }

    /// Per-example reconstruction error `[B]` (mean squared over the features) of `summary`
    /// `[B, hidden]`.
    fn error(&self, summary: &Tensor) -> candle_core::Result<Tensor> {
        let code = ops::linear(
            summary,
            self.encoder_weight.as_tensor(),
            Some(self.encoder_bias.as_tensor()),
        )?;
        let reconstruction = ops::linear(
            &code,
            self.decoder_weight.as_tensor(),
            Some(self.decoder_bias.as_tensor()),
        )?;
        (reconstruction - summary)?.sqr()?.mean(D::Minus1)
    }

    /// The batch mean of `|error - mean| / std`; 0 when the spread is 0 (fewer than two errors
    /// calibrated it: the reference code's z-score is 0 until its buffer holds three).
    fn shift(&self, errors: &[f32]) -> candle_core::Result<f64> {
        let stats = self.statistics.as_tensor().to_vec1::<f32>()?;
        let (mean, std) = (f64::from(stats[0]), f64::from(stats[1]));
        if std <= 0.0 {
            return Ok(0.0);
        }
        let total: f64 = errors
            .iter()
            .map(|&e| (f64::from(e) - mean).abs() / std)
            .sum();
        Ok(total / errors.len().max(1) as f64)
    }

    fn learnable(&self, prefix: &str, params: &mut NamedVars) {
        params.push(
            format!("{prefix}.encoder.weight"),
            self.encoder_weight.clone(),
        );
        params.push(format!("{prefix}.encoder.bias"), self.encoder_bias.clone());
        params.push(
            format!("{prefix}.decoder.weight"),
            self.decoder_weight.clone(),
        );
        params.push(format!("{prefix}.decoder.bias"), self.decoder_bias.clone());
    }
}

/// One block's adapters; in an expandable block also their descriptors and router rows.
#[derive(Default)]
struct Block {
    adapters: Vec<Bottleneck>,
    descriptors: Vec<Descriptor>,
    /// Router row `k`: weight `[1, hidden]` and bias `[1]`, adapter `k`'s logit.
    router: Vec<(Var, Var)>,
}

impl Block {
    /// The softmax of the router's logits `[B, adapters]` for token means `summary`; the rows
    /// `k` with `trains(k)` false enter detached.
    fn weights(
        &self,
        summary: &Tensor,
        trains: &dyn Fn(usize) -> bool,
    ) -> candle_core::Result<Tensor> {
        let part = |k: usize, v: &Var| {
            if trains(k) {
                v.as_tensor().clone()
            } else {
                v.as_tensor().detach()
            }
        };
        let rows: Vec<Tensor> = self
            .router
            .iter()
            .enumerate()
            .map(|(k, (w, _))| part(k, w))
            .collect();
        let biases: Vec<Tensor> = self
            .router
            .iter()
            .enumerate()
            .map(|(k, (_, b))| part(k, b))
            .collect();
        let logits = ops::linear(
            summary,
            &Tensor::cat(&rows, 0)?,
            Some(&Tensor::cat(&biases, 0)?),
        )?;
        candle_nn::ops::softmax_last_dim(&logits)
    }

    /// Adapter `k`'s parameters (with its router row in an expandable block).
    fn adapter_params(&self, layer: usize, k: usize, params: &mut NamedVars) {
        self.adapters[k].push_params(&format!("blocks.{layer}.adapter.{k}"), params);
        if let Some((w, b)) = self.router.get(k) {
            params.push(format!("blocks.{layer}.router.{k}.weight"), w.clone());
            params.push(format!("blocks.{layer}.router.{k}.bias"), b.clone());
        }
    }

    fn descriptor_params(&self, layer: usize, k: usize, params: &mut NamedVars) {
        self.descriptors[k].learnable(&format!("blocks.{layer}.descriptor.{k}"), params);
    }
}

/// Reconstruction errors of the descriptors in one forward pass: `(layer, adapter, [B])`.
type Errors = Vec<(usize, usize, Tensor)>;

/// Every block's adapters as the backbone's hooks.
struct Modules {
    blocks: Vec<Block>,
    first_expandable: usize,
    /// When on, the forward pass records every descriptor's errors here.
    recorded: Mutex<Option<Errors>>,
    /// The adapters (block, number) training now, with their router rows: every other one
    /// enters the forward pass detached, so backward stops where training starts.
    training: Mutex<BTreeSet<(usize, usize)>>,
}

impl Modules {
    /// `forward()` with the descriptors' errors recorded.
    fn recording<T>(
        &self,
        forward: impl FnOnce() -> candle_core::Result<T>,
    ) -> candle_core::Result<(T, Errors)> {
        *self.recorded.lock().expect("not poisoned") = Some(Vec::new());
        let out = forward();
        let errors = self
            .recorded
            .lock()
            .expect("not poisoned")
            .take()
            .unwrap_or_default();
        Ok((out?, errors))
    }
}

/// `up(ReLU(down(x)))` of `adapter`, its weights detached unless `trains`.
fn branch(adapter: &Bottleneck, x: &Tensor, trains: bool) -> candle_core::Result<Tensor> {
    if trains {
        return adapter.forward(x);
    }
    let w = |v: &Var| v.as_tensor().detach();
    let h = ops::linear(x, &w(&adapter.down_weight), Some(&w(&adapter.down_bias)))?.relu()?;
    ops::linear(&h, &w(&adapter.up_weight), Some(&w(&adapter.up_bias)))
}

impl Hooks for Modules {
    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        let block = &self.blocks[layer];
        if kind != Sublayer::Mlp || block.adapters.is_empty() {
            return Ok(output);
        }
        let training = self.training.lock().expect("not poisoned").clone();
        let trains = |k: usize| training.contains(&(layer, k));
        if layer < self.first_expandable {
            return output + branch(&block.adapters[0], input, trains(0))?;
        }
        let summary = input.mean(1)?;
        if let Some(errors) = self.recorded.lock().expect("not poisoned").as_mut() {
            // The descriptors learn the stream as it is; nothing flows back into the blocks.
            let summary = summary.detach();
            for (k, descriptor) in block.descriptors.iter().enumerate() {
                errors.push((layer, k, descriptor.error(&summary)?));
            }
        }
        let weights = block.weights(&summary, &trains)?;
        let mut mixed: Option<Tensor> = None;
        for (k, adapter) in block.adapters.iter().enumerate() {
            let weight = weights.narrow(1, k, 1)?.unsqueeze(2)?;
            let part = branch(adapter, input, trains(k))?.broadcast_mul(&weight)?;
            mixed = Some(match mixed {
                None => part,
                Some(sum) => (sum + part)?,
            });
        }
        output + mixed.expect("a block with adapters")
    }
}

pub(crate) struct Sema {
    backbone: Box<dyn Backbone>,
    modules: Modules,
    head: ClassifierHead,
    seed: u64,
    pretrained: u64,
    hidden: usize,
    threshold: f64,
}

impl Sema {
    pub fn new(stage: &StageContext<'_, '_>) -> anyhow::Result<Self> {
        let spec = stage.spec;
        anyhow::ensure!(
            spec.method == "linear",
            "learner `sema` adds its own adapters to the frozen backbone, and method `{}` would \
             change it too; give its entry `method: linear`",
            spec.method
        );
        exemplar_free(spec, "sema")?;
        let options = continual(spec).sema_params();
        let mut backbone = stage.ctx.backbone.model.boxed();
        let mut pretrained = 0u64;
        backbone.visit_params(&mut |_, t| {
            pretrained += t.elem_count() as u64;
            Ok(())
        })?;
        let layers = backbone.info().num_layers;
        let hidden = backbone.info().hidden_size;
        let expandable = match options.expandable_blocks {
            None => DEFAULT_EXPANDABLE_BLOCKS.min(layers),
            Some(n) => {
                anyhow::ensure!(
                    (1..=layers).contains(&n),
                    "learner `sema`: `learner_params.expandable_blocks` {n} must be 1 to {layers}, \
                     the backbone's blocks"
                );
                n
            }
        };
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), stage.device());
        let head = ClassifierHead::new(hidden, spec.task.num_classes, &init.fork("head"))?;
        Ok(Self {
            backbone,
            modules: Modules {
                blocks: (0..layers).map(|_| Block::default()).collect(),
                first_expandable: layers - expandable,
                recorded: Mutex::new(None),
                training: Mutex::new(BTreeSet::new()),
            },
            head,
            seed: spec.seed,
            pretrained,
            hidden,
            threshold: options.threshold,
        })
    }

    /// Adds adapter number `adapters` to block `layer` (with a descriptor and a router row in an
    /// expandable block); its initial values derive from the run seed, the block and the number.
    fn add_adapter(&mut self, layer: usize) -> anyhow::Result<()> {
        let device = self.head.params().vars()[0].device().clone();
        let block = &mut self.modules.blocks[layer];
        let k = block.adapters.len();
        let init = SeededInit::new(
            derive_seed(&[self.seed, MODEL_INIT, layer as u64, k as u64]),
            &device,
        );
        block.adapters.push(Bottleneck::new(
            self.hidden,
            BOTTLENECK,
            AdapterActivation::Relu,
            &init.fork("adapter"),
        )?);
        if layer >= self.modules.first_expandable {
            block
                .descriptors
                .push(Descriptor::new(self.hidden, &init.fork("descriptor"))?);
            let mut router = init.fork("router");
            let bound = 1.0 / (self.hidden as f32).sqrt();
            block.router.push((
                router.kaiming_uniform((1, self.hidden), self.hidden)?,
                router.uniform(1, -bound, bound)?,
            ));
        }
        Ok(())
    }

    /// Every adapter, router row, descriptor (with its statistics) and the classifier.
    fn all_params(&self) -> NamedVars {
        let mut params = NamedVars::default();
        for (layer, block) in self.modules.blocks.iter().enumerate() {
            for k in 0..block.adapters.len() {
                block.adapter_params(layer, k, &mut params);
            }
            for (k, descriptor) in block.descriptors.iter().enumerate() {
                block.descriptor_params(layer, k, &mut params);
                params.push(
                    format!("blocks.{layer}.descriptor.{k}.statistics"),
                    descriptor.statistics.clone(),
                );
            }
        }
        params.extend(self.head.params().clone());
        params
    }

    /// Adapters per block.
    fn adapter_counts(&self) -> Vec<usize> {
        self.modules
            .blocks
            .iter()
            .map(|b| b.adapters.len())
            .collect()
    }

    /// Trains the adapters `adapters` (block, number; with their router rows) and the
    /// classifier for the classes `classes` (logits masked to them) for the recipe's epochs.
    fn train_classifier(
        &self,
        stage: &StageContext<'_, '_>,
        data: &dyn BatchSource,
        adapters: &[(usize, usize)],
        classes: Range<usize>,
        seed: u64,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<TrainOutcome> {
        let mut trainable = NamedVars::default();
        for &(layer, k) in adapters {
            self.modules.blocks[layer].adapter_params(layer, k, &mut trainable);
        }
        trainable.extend(self.head.params().clone());
        let model = HookedClassifier {
            backbone: self.backbone.as_ref(),
            hooks: &self.modules,
            head: &self.head,
            trainable,
            classes,
        };
        let cfg = TrainConfig {
            seed,
            ..train_config(stage.spec)
        };
        *self.modules.training.lock().expect("not poisoned") = adapters.iter().copied().collect();
        let outcome = train(&model, data, None, &cfg, progress);
        self.modules.training.lock().expect("not poisoned").clear();
        outcome
    }

    /// Trains the descriptors `targets` to reconstruct `data`, then sets their statistics.
    fn train_descriptors(
        &self,
        stage: &StageContext<'_, '_>,
        data: &dyn BatchSource,
        targets: Vec<(usize, usize)>,
        seed: u64,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<TrainOutcome> {
        let mut trainable = NamedVars::default();
        for &(layer, k) in &targets {
            self.modules.blocks[layer].descriptor_params(layer, k, &mut trainable);
        }
        let base = train_config(stage.spec);
        let cfg = TrainConfig {
            seed,
            lr: base.lr * DESCRIPTOR_LR_FACTOR,
            min_lr: base.min_lr * DESCRIPTOR_LR_FACTOR,
            ..base
        };
        let model = Describe {
            sema: self,
            trainable,
            targets: targets.clone(),
        };
        let outcome = train(&model, data, None, &cfg, progress)?;
        if matches!(outcome, TrainOutcome::Completed(_)) {
            self.calibrate(stage, data, &targets)?;
        }
        Ok(outcome)
    }

    /// Sets the statistics of descriptors `targets` to the mean and (unbiased) standard
    /// deviation of their errors over `data`.
    fn calibrate(
        &self,
        stage: &StageContext<'_, '_>,
        data: &dyn BatchSource,
        targets: &[(usize, usize)],
    ) -> anyhow::Result<()> {
        let mut errors: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
        for batch in data.batches(stage.spec.recipe.eval_batch_size, None) {
            for (layer, k, e) in self.errors(&batch?.inputs)? {
                if targets.contains(&(layer, k)) {
                    let values = e.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
                    errors.entry((layer, k)).or_default().extend(values);
                }
            }
        }
        for &(layer, k) in targets {
            let values = errors.get(&(layer, k)).cloned().unwrap_or_default();
            let (mean, std) = mean_and_std(&values);
            let statistics = Tensor::new(
                &[mean as f32, std as f32],
                self.head.params().vars()[0].device(),
            )?;
            self.modules.blocks[layer].descriptors[k]
                .statistics
                .set(&statistics)?;
        }
        Ok(())
    }

    /// Every descriptor's errors `(layer, adapter, [B])` for `pixels`, in evaluation mode.
    fn errors(&self, pixels: &Tensor) -> candle_core::Result<Errors> {
        let (_, errors) = self.modules.recording(|| {
            self.backbone
                .forward_features(pixels, &self.modules, &ForwardCtx::eval())
        })?;
        Ok(errors)
    }

    /// The shallowest block not in `expanded` whose shift score for `pixels` passes the
    /// threshold: for each expandable block, the smallest over its descriptors of the batch
    /// mean of `|error - mean| / std`.
    fn shifted_block(
        &self,
        pixels: &Tensor,
        expanded: &BTreeSet<usize>,
    ) -> anyhow::Result<Option<usize>> {
        let mut scores: BTreeMap<usize, f64> = BTreeMap::new();
        for (layer, k, errors) in self.errors(pixels)? {
            let shift =
                self.modules.blocks[layer].descriptors[k].shift(&errors.to_vec1::<f32>()?)?;
            let score = scores.entry(layer).or_insert(f64::INFINITY);
            *score = score.min(shift);
        }
        Ok(shallowest_shifted(&scores, expanded, self.threshold))
    }
}

/// The shallowest block of `scores` (block -> shift score) not in `expanded` whose score passes
/// `threshold`.
fn shallowest_shifted(
    scores: &BTreeMap<usize, f64>,
    expanded: &BTreeSet<usize>,
    threshold: f64,
) -> Option<usize> {
    scores
        .iter()
        .find(|(layer, score)| !expanded.contains(layer) && **score > threshold)
        .map(|(layer, _)| *layer)
}

/// Mean and unbiased standard deviation (0 for fewer than two values).
fn mean_and_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance.sqrt())
}

/// Descriptors `targets` learning to reconstruct their blocks' token means: the loss is the sum
/// over them of the batch's mean error.
struct Describe<'a> {
    sema: &'a Sema,
    trainable: NamedVars,
    targets: Vec<(usize, usize)>,
}

impl TrainModel for Describe<'_> {
    fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let features = self
            .sema
            .backbone
            .forward_features(input, &self.sema.modules, ctx)?;
        self.sema.head.forward(&features)
    }

    fn batch_loss(
        &self,
        batch: &Batch,
        ctx: &ForwardCtx,
        _label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        let (_, errors) = self.sema.modules.recording(|| {
            self.sema
                .backbone
                .forward_features(&batch.inputs, &self.sema.modules, ctx)
        })?;
        let mut total: Option<Tensor> = None;
        for (layer, k, e) in errors {
            if self.targets.contains(&(layer, k)) {
                let mean = e.mean_all()?;
                total = Some(match total {
                    None => mean,
                    Some(sum) => (sum + mean)?,
                });
            }
        }
        total.ok_or_else(|| candle_core::Error::Msg("no descriptor to train".into()))
    }
}

/// The reports of one stage's trainings as one.
fn join_all(reports: Vec<TrainReport>) -> StageOutcome {
    let mut reports = reports.into_iter();
    match reports.next() {
        None => StageOutcome::Untrained,
        Some(first) => StageOutcome::Trained(reports.fold(first, joined)),
    }
}

impl StageLearner for Sema {
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train_data: &Arc<ImageDataset>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        let classes = stream.stages[t].clone();
        let source = stage.source(train_data)?;
        let base_seed = stage.stage_config(t).seed;
        let part_seed = |parts: &[u64]| {
            let mut all = vec![base_seed, STAGE];
            all.extend_from_slice(parts);
            derive_seed(&all)
        };
        let mut reports = Vec::new();
        macro_rules! completed {
            ($outcome:expr) => {
                match $outcome {
                    TrainOutcome::Completed(report) => reports.push(report),
                    diverged => return Ok(diverged.into()),
                }
            };
        }
        if t == 0 {
            let layers = self.modules.blocks.len();
            for layer in 0..layers {
                self.add_adapter(layer)?;
            }
            let every: Vec<(usize, usize)> = (0..layers).map(|layer| (layer, 0)).collect();
            completed!(self.train_classifier(
                stage,
                source.as_ref(),
                &every,
                classes,
                part_seed(&[0]),
                progress
            )?);
            let targets = (self.modules.first_expandable..layers)
                .map(|layer| (layer, 0))
                .collect();
            completed!(self.train_descriptors(
                stage,
                source.as_ref(),
                targets,
                part_seed(&[1]),
                progress
            )?);
            return Ok(join_all(reports));
        }

        let mut expanded = BTreeSet::new();
        for pass in 0u64.. {
            let mut added = false;
            let batches = source.batches(DETECT_BATCH, Some(part_seed(&[DETECT, pass])));
            for batch in batches {
                if expanded.len() == self.modules.blocks.len() - self.modules.first_expandable {
                    break;
                }
                let batch = batch?;
                let Some(layer) = self.shifted_block(&batch.inputs, &expanded)? else {
                    continue;
                };
                self.add_adapter(layer)?;
                expanded.insert(layer);
                added = true;
                let k = self.modules.blocks[layer].adapters.len() - 1;
                let id = [layer as u64, k as u64];
                completed!(self.train_classifier(
                    stage,
                    source.as_ref(),
                    &[(layer, k)],
                    classes.clone(),
                    part_seed(&[id[0], id[1], 0]),
                    progress
                )?);
                completed!(self.train_descriptors(
                    stage,
                    source.as_ref(),
                    vec![(layer, k)],
                    part_seed(&[id[0], id[1], 1]),
                    progress
                )?);
            }
            let expandable = self.modules.blocks.len() - self.modules.first_expandable;
            if !added || expanded.len() == expandable {
                break;
            }
        }
        if expanded.is_empty() {
            completed!(self.train_classifier(
                stage,
                source.as_ref(),
                &[],
                classes,
                part_seed(&[0]),
                progress
            )?);
        }
        Ok(join_all(reports))
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        _j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        _stream: &Stream,
    ) -> anyhow::Result<Vec<u32>> {
        let model = HookedClassifier {
            backbone: self.backbone.as_ref(),
            hooks: &self.modules,
            head: &self.head,
            trainable: NamedVars::default(),
            classes: 0..seen,
        };
        stage.predictions(&model, eval)
    }

    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        Ok(self.all_params().tensors())
    }

    /// Grows every block to the checkpoint's adapters, then loads everything.
    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        for layer in 0..self.modules.blocks.len() {
            let prefix = format!("blocks.{layer}.adapter.");
            let adapters = state
                .keys()
                .filter_map(|key| key.strip_prefix(&prefix)?.split('.').next()?.parse().ok())
                .map(|k: usize| k + 1)
                .max()
                .unwrap_or(0);
            while self.modules.blocks[layer].adapters.len() < adapters {
                self.add_adapter(layer)?;
            }
        }
        Ok(self.all_params().load(state)?)
    }

    /// Every adapter, router row and descriptor added so far, and the classifier; the backbone
    /// is frozen.
    fn counts(&self) -> (u64, u64) {
        let statistics: usize = self
            .modules
            .blocks
            .iter()
            .map(|b| 2 * b.descriptors.len())
            .sum();
        let trainable = (self.all_params().count() - statistics) as u64;
        (trainable, self.pretrained + trainable)
    }

    fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("sema.safetensors");
        self.all_params().save_safetensors(&path)?;
        Ok(std::fs::metadata(&path)?.len())
    }

    /// `sema_adapters@<block>` for every expandable block and `sema_adapters_added`, the
    /// adapters added after the first stage.
    fn measures(&self) -> BTreeMap<String, f64> {
        let counts = self.adapter_counts();
        let mut measures = BTreeMap::new();
        let mut added = 0;
        for (layer, &n) in counts
            .iter()
            .enumerate()
            .skip(self.modules.first_expandable)
        {
            measures.insert(format!("sema_adapters@{layer}"), n as f64);
            added += n.saturating_sub(1);
        }
        measures.insert("sema_adapters_added".into(), added as f64);
        measures
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// numpy's `mean` and `std(ddof=1)` of [2, 4, 4, 4, 5, 5, 7, 9]: 5 and sqrt(32 / 7).
    #[test]
    fn error_statistics_are_the_mean_and_unbiased_deviation() {
        let (mean, std) = mean_and_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(mean, 5.0);
        assert!((std - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_and_std(&[3.0]), (3.0, 0.0));
    }

    /// The shift score is the batch mean of `|error - mean| / std`, and a block expands only
    /// when its score passes the threshold: the shallowest such block not yet expanded.
    #[test]
    fn blocks_expand_only_past_the_threshold_shallowest_first() {
        let init = SeededInit::new(1, &Device::Cpu);
        let descriptor = Descriptor::new(12, &init).unwrap();
        descriptor
            .statistics
            .set(&Tensor::new(&[1.0f32, 0.5], &Device::Cpu).unwrap())
            .unwrap();
        // |0 - 1| / 0.5 = 2, |2.5 - 1| / 0.5 = 3: mean 2.5.
        assert!((descriptor.shift(&[0.0, 2.5]).unwrap() - 2.5).abs() < 1e-9);

        let scores = BTreeMap::from([(9, 1.5), (10, 2.5), (11, 3.0)]);
        let none = BTreeSet::new();
        assert_eq!(shallowest_shifted(&scores, &none, 2.0), Some(10));
        assert_eq!(
            shallowest_shifted(&scores, &BTreeSet::from([10]), 2.0),
            Some(11)
        );
        assert_eq!(
            shallowest_shifted(&scores, &BTreeSet::from([10, 11]), 2.0),
            None
        );
        // At the threshold is not past it.
        assert_eq!(shallowest_shifted(&scores, &none, 3.0), None);
        assert_eq!(shallowest_shifted(&scores, &none, 1.0), Some(9));
    }

    /// An expandable block adds to the MLP's output the adapters' outputs weighted by the
    /// router's softmax over the token mean, per image; a fixed block adds its one adapter.
    #[test]
    fn the_router_mixes_a_block_s_adapters_by_its_softmax() {
        let device = Device::Cpu;
        let hidden = 4;
        let init = SeededInit::new(2, &device);
        let mut block = Block::default();
        for k in 0..2 {
            let fork = init.fork(&format!("{k}"));
            let adapter = Bottleneck::new(hidden, 3, AdapterActivation::Relu, &fork).unwrap();
            // Non-zero up-projections, so both adapters contribute.
            adapter
                .up_weight
                .set(&Tensor::randn(0f32, 1.0, (hidden, 3), &device).unwrap())
                .unwrap();
            block.adapters.push(adapter);
            block
                .descriptors
                .push(Descriptor::new(hidden, &fork).unwrap());
            let mut router = fork.fork("router");
            block.router.push((
                router.uniform((1, hidden), -1.0, 1.0).unwrap(),
                router.uniform(1, -1.0, 1.0).unwrap(),
            ));
        }
        let fixed =
            Bottleneck::new(hidden, 3, AdapterActivation::Relu, &init.fork("fixed")).unwrap();
        fixed
            .up_weight
            .set(&Tensor::randn(0f32, 1.0, (hidden, 3), &device).unwrap())
            .unwrap();
        let modules = Modules {
            blocks: vec![
                Block {
                    adapters: vec![fixed],
                    ..Block::default()
                },
                block,
            ],
            first_expandable: 1,
            recorded: Mutex::new(None),
            training: Mutex::new(BTreeSet::new()),
        };
        let x = Tensor::randn(0f32, 1.0, (2, 3, hidden), &device).unwrap();
        let mlp = Tensor::randn(0f32, 1.0, (2, 3, hidden), &device).unwrap();
        let ctx = ForwardCtx::eval();
        let got = modules
            .sublayer(1, Sublayer::Mlp, &x, mlp.clone(), &ctx)
            .unwrap();
        let block = &modules.blocks[1];
        for image in 0..2 {
            let xi = x.get(image).unwrap();
            let mean = xi.mean(0).unwrap().to_vec1::<f32>().unwrap();
            let logits: Vec<f32> = block
                .router
                .iter()
                .map(|(w, b)| {
                    let w = w.as_tensor().to_vec2::<f32>().unwrap();
                    let b = b.as_tensor().to_vec1::<f32>().unwrap();
                    w[0].iter().zip(&mean).map(|(p, q)| p * q).sum::<f32>() + b[0]
                })
                .collect();
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f32 = exp.iter().sum();
            let mut want = mlp.get(image).unwrap();
            for (k, adapter) in block.adapters.iter().enumerate() {
                let part = (adapter.forward(&xi).unwrap() * f64::from(exp[k] / total)).unwrap();
                want = (want + part).unwrap();
            }
            let diff = (got.get(image).unwrap() - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "image {image}: {diff}");
        }
        let fixed_out = modules
            .sublayer(0, Sublayer::Mlp, &x, mlp.clone(), &ctx)
            .unwrap();
        let want = (&mlp + modules.blocks[0].adapters[0].forward(&x).unwrap()).unwrap();
        assert_eq!(
            (fixed_out - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        // The attention branch is left alone.
        let attention = modules
            .sublayer(1, Sublayer::Attention, &x, mlp.clone(), &ctx)
            .unwrap();
        assert_eq!(
            attention.to_vec3::<f32>().unwrap(),
            mlp.to_vec3::<f32>().unwrap()
        );
    }
}
