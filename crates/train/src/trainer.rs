//! The training loop, independent of models and data: a [`TrainModel`] exposes its trainable
//! parameters and logits, a [`BatchSource`] yields [`Batch`]es (inputs and labels, plus an
//! attention mask for text and task ids for multi-task data). Labels are per example `[B]` or per
//! token `[B, T]`, with [`IGNORE_LABEL`](crate::IGNORE_LABEL) on positions without a label.
//!
//! Each epoch `e`:
//! 1. the learning rate is `CosineSchedule::lr_at_epoch(e)` (timm's per-epoch cosine, see
//!    [`crate::schedule`]);
//! 2. batches come from `train.batches(batch_size, Some(derive_seed(&[seed, SHUFFLE, e])))`;
//! 3. each step runs the model under `ForwardCtx::train(derive_seed(&[seed, FORWARD, e, step]), drop_path)`,
//!    takes [`TrainModel::loss`] (by default [`masked_cross_entropy`], cross-entropy over the
//!    labelled rows, with label smoothing)
//!    and, if the loss is finite, back-propagates, optionally clips the global gradient norm and takes an [`AdamW`] step. A NaN or infinite
//!    loss (or, with clipping, a non-finite gradient norm) ends the run at once as
//!    [`TrainOutcome::Diverged`], before any update from that batch; the weights are left as they were;
//! 4. the validation set, if given, is evaluated. With [`Selection::BestValidation`] a copy of the
//!    trainable tensors of the best epoch (highest validation accuracy, earliest on ties) is kept and
//!    loaded back after the last epoch; with [`Selection::Final`] the last epoch's weights are kept
//!    and validation is only logged.
//!
//! Timings: [`EpochLog::seconds`] and [`TrainReport::train_seconds`] count the training steps only,
//! not validation; `examples_per_second` is training examples over those seconds.
//!
//! Determinism: every random choice is derived from [`TrainConfig::seed`], so two runs with the same
//! seed, model initialisation and data on the same device give bit-identical losses.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Tensor, D};
use peftbench_core::{ForwardCtx, NamedVars};

use crate::clip::clip_grad_norm;
use crate::loss::{labelled_rows, masked_cross_entropy};
use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::CosineSchedule;

/// A model the loop can train: its trainable parameters and a forward pass to class logits.
pub trait TrainModel {
    /// The parameters AdamW updates (everything else stays frozen).
    fn trainable(&self) -> &NamedVars;
    /// Logits `[B, C]` for a batch of inputs, in training or evaluation mode per `ctx`.
    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor>;

    /// The learning rate of trainable parameter `name` relative to the schedule's (1 by default).
    fn lr_multiplier(&self, _name: &str) -> f64 {
        1.0
    }

    /// Logits for a whole batch: `[B, C]`, or `[B, T, C]` for per-token labels. Models that read
    /// the mask or task ids override this; by default only the inputs matter.
    fn batch_logits(&self, batch: &Batch, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.logits(&batch.inputs, ctx)
    }

    /// The training loss of a batch's logits: [`masked_cross_entropy`] with label smoothing by
    /// default. Models with another objective (a reranker's pairwise or pointwise ranking loss)
    /// override it; [`evaluate`] still scores the argmax of the logits.
    fn loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        masked_cross_entropy(logits, labels, label_smoothing)
    }

    /// The training loss of a whole batch: [`TrainModel::loss`] of its
    /// [`TrainModel::batch_logits`] by default. Objectives that need more than the logits (a
    /// term on the features, a reconstruction error inside the network) override this.
    fn batch_loss(
        &self,
        batch: &Batch,
        ctx: &ForwardCtx,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        let logits = self.batch_logits(batch, ctx)?;
        self.loss(&logits, &batch.labels, label_smoothing)
    }
}

/// A borrowed model trains as the model itself (so wrappers can hand out `&model`).
impl<T: TrainModel + ?Sized> TrainModel for &T {
    fn trainable(&self) -> &NamedVars {
        (**self).trainable()
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        (**self).logits(input, ctx)
    }

    fn lr_multiplier(&self, name: &str) -> f64 {
        (**self).lr_multiplier(name)
    }

    fn batch_logits(&self, batch: &Batch, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        (**self).batch_logits(batch, ctx)
    }

    fn loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        (**self).loss(logits, labels, label_smoothing)
    }

    fn batch_loss(
        &self,
        batch: &Batch,
        ctx: &ForwardCtx,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        (**self).batch_loss(batch, ctx, label_smoothing)
    }
}

/// One batch of examples.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Pixels `[B, C, H, W]`, token ids `[B, T]` or cached features `[B, D]`.
    pub inputs: Tensor,
    /// u32 class ids: `[B]` per example or `[B, T]` per token ([`IGNORE_LABEL`](crate::IGNORE_LABEL) where none).
    pub labels: Tensor,
    /// For text: 1 for real tokens, 0 for padding, `[B, T]`.
    pub mask: Option<Tensor>,
    /// For multi-task data: the task of each example, u32 `[B]`.
    pub task_ids: Option<Tensor>,
    /// For vision-language data, the visual side paired with the text in `inputs`: pixels
    /// `[B, C, H, W]` or frozen visual features `[B, N, D]`.
    pub images: Option<Tensor>,
}

impl Batch {
    /// A batch of inputs and labels only (images, features, padded token ids).
    pub fn new(inputs: Tensor, labels: Tensor) -> Self {
        Self {
            inputs,
            labels,
            mask: None,
            task_ids: None,
            images: None,
        }
    }

    /// Examples in the batch.
    pub fn len(&self) -> usize {
        self.labels.dims().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A data split, as [`Batch`]es.
pub trait BatchSource {
    fn num_examples(&self) -> usize;
    /// Batches for an epoch; shuffled with `shuffle_seed` when `Some`, in file order when `None`.
    /// The last batch may be smaller (no `drop_last`).
    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_>;
}

/// Which weights a run ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Selection {
    /// The last epoch's weights (V-PETL's rule).
    #[default]
    #[serde(rename = "final")]
    Final,
    /// The epoch with the highest validation accuracy (earliest on ties); needs a validation set.
    #[serde(rename = "best-val")]
    BestValidation,
}

/// Everything the loop needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    /// Peak (base) learning rate of the cosine schedule.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: usize,
    /// Learning rate at epoch 0 of the linear warm-up (timm's `warmup_lr_init`).
    pub warmup_lr: f64,
    pub adamw: AdamWConfig,
    pub label_smoothing: f64,
    /// Maximum global L2 norm of the gradients; `None` for no clipping.
    pub grad_clip: Option<f64>,
    /// Stochastic-depth rate handed to the model through [`ForwardCtx::drop_path`].
    pub drop_path: f64,
    pub seed: u64,
    pub selection: Selection,
}

impl TrainConfig {
    /// The NOAH/FacT VTAB-1k recipe: AdamW lr 1e-3, weight decay 1e-4 on every parameter, batch 64,
    /// 100 epochs, cosine to 1e-5 after 10 warm-up epochs from 1e-6, drop-path 0.1, no label
    /// smoothing, no clipping, final-epoch weights.
    pub fn vtab_recipe(seed: u64) -> Self {
        Self {
            epochs: 100,
            batch_size: 64,
            eval_batch_size: 256,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_epochs: 10,
            warmup_lr: 1e-6,
            adamw: AdamWConfig {
                weight_decay: 1e-4,
                ..AdamWConfig::default()
            },
            label_smoothing: 0.0,
            grad_clip: None,
            drop_path: 0.1,
            seed,
            selection: Selection::Final,
        }
    }

    /// The learning-rate schedule these settings describe.
    pub fn schedule(&self) -> CosineSchedule {
        CosineSchedule {
            base_lr: self.lr,
            min_lr: self.min_lr,
            warmup_epochs: self.warmup_epochs,
            warmup_lr: self.warmup_lr,
            epochs: self.epochs,
        }
    }
}

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    /// Mean training loss over the epoch's examples.
    pub train_loss: f64,
    pub lr: f64,
    pub val_accuracy: Option<f64>,
    /// Training time of the epoch (validation excluded).
    pub seconds: f64,
}

/// A run that went through every epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainReport {
    pub history: Vec<EpochLog>,
    /// The epoch whose weights the model holds now.
    pub selected_epoch: usize,
    pub train_seconds: f64,
    pub examples_per_second: f64,
    /// Optimizer steps taken.
    pub steps: usize,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainOutcome {
    Completed(TrainReport),
    /// A non-finite loss at `step` (0-based, within `epoch`); `history` holds the finished epochs.
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
        history: Vec<EpochLog>,
    },
}

/// Reported after every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    /// 0-based step within the epoch.
    pub step: usize,
    pub steps_per_epoch: usize,
    pub loss: f64,
}

/// Predictions on a data split.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub accuracy: f64,
    pub predictions: Vec<u32>,
    pub labels: Vec<u32>,
    pub seconds: f64,
}

/// Purposes mixed into derived seeds so that streams never coincide.
const SHUFFLE: u64 = 0x5348_5546; // "SHUF"
const FORWARD: u64 = 0x4657_4452; // "FWDR"

/// A seed derived from `parts` with SplitMix64 finalisation: stable across platforms and releases.
pub fn derive_seed(parts: &[u64]) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    parts.iter().fold(0x9e37_79b9_7f4a_7c15, |h, &p| {
        mix(h.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ mix(p))
    })
}

/// Deep copies of the trainable tensors (`NamedVars::tensors` shares the variables' storage, so
/// its snapshot would follow later updates).
fn snapshot(params: &NamedVars) -> candle_core::Result<BTreeMap<String, Tensor>> {
    params
        .iter()
        .map(|p| Ok((p.name.clone(), p.var.as_tensor().detach().copy()?)))
        .collect()
}

/// Trains `model` on `train` per `cfg`, reporting every step to `progress`.
pub fn train(
    model: &dyn TrainModel,
    train: &dyn BatchSource,
    val: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<TrainOutcome> {
    anyhow::ensure!(cfg.epochs > 0, "training needs at least one epoch");
    anyhow::ensure!(
        cfg.batch_size > 0 && cfg.eval_batch_size > 0,
        "batch sizes must be positive"
    );
    let n = train.num_examples();
    anyhow::ensure!(n > 0, "the training set is empty");
    if cfg.selection == Selection::BestValidation {
        anyhow::ensure!(
            val.is_some_and(|v| v.num_examples() > 0),
            "selection `best-val` needs a non-empty validation set"
        );
    }
    let params = model.trainable();
    anyhow::ensure!(!params.is_empty(), "the model has no trainable parameters");
    let mut optimizer =
        AdamW::new(params, cfg.adamw)?.with_lr_multipliers(|name| model.lr_multiplier(name));
    let schedule = cfg.schedule();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);

    let mut history = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(f64, usize, BTreeMap<String, Tensor>)> = None;
    let mut steps = 0usize;
    let mut train_seconds = 0.0;
    let mut examples = 0usize;

    for epoch in 0..cfg.epochs {
        let lr = schedule.lr_at_epoch(epoch);
        let start = Instant::now();
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        let shuffle = derive_seed(&[cfg.seed, SHUFFLE, epoch as u64]);
        for (step, batch) in train.batches(cfg.batch_size, Some(shuffle)).enumerate() {
            let batch = batch?;
            let ctx = ForwardCtx::train(
                derive_seed(&[cfg.seed, FORWARD, epoch as u64, step as u64]),
                cfg.drop_path,
            )
            .with_task_ids(batch.task_ids.clone());
            let loss = model.batch_loss(&batch, &ctx, cfg.label_smoothing)?;
            let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss_value.is_finite() {
                return Ok(TrainOutcome::Diverged {
                    epoch,
                    step,
                    loss: loss_value,
                    history,
                });
            }
            let mut grads = loss.backward()?;
            if let Some(max_norm) = cfg.grad_clip {
                let norm = clip_grad_norm(&mut grads, params, max_norm)?;
                if !norm.is_finite() {
                    return Ok(TrainOutcome::Diverged {
                        epoch,
                        step,
                        loss: loss_value,
                        history,
                    });
                }
            }
            optimizer.step(&grads, lr)?;
            let b = batch.len();
            loss_sum += loss_value * b as f64;
            seen += b;
            steps += 1;
            progress(Progress {
                epoch,
                epochs: cfg.epochs,
                step,
                steps_per_epoch,
                loss: loss_value,
            });
        }
        let seconds = start.elapsed().as_secs_f64();
        train_seconds += seconds;
        examples += seen;

        let val_accuracy = match val {
            Some(val) => Some(evaluate(model, val, cfg.eval_batch_size)?.accuracy),
            None => None,
        };
        if cfg.selection == Selection::BestValidation {
            let acc = val_accuracy.unwrap_or(f64::NEG_INFINITY);
            if best.as_ref().is_none_or(|(best_acc, _, _)| acc > *best_acc) {
                best = Some((acc, epoch, snapshot(params)?));
            }
        }
        history.push(EpochLog {
            epoch,
            train_loss: if seen > 0 {
                loss_sum / seen as f64
            } else {
                f64::NAN
            },
            lr,
            val_accuracy,
            seconds,
        });
    }

    let selected_epoch = match best {
        Some((_, epoch, tensors)) => {
            params.load(&tensors)?;
            epoch
        }
        None => cfg.epochs - 1,
    };
    Ok(TrainOutcome::Completed(TrainReport {
        history,
        selected_epoch,
        train_seconds,
        examples_per_second: if train_seconds > 0.0 {
            examples as f64 / train_seconds
        } else {
            0.0
        },
        steps,
    }))
}

/// Accuracy and predictions (argmax of the logits) of `model` on `data`, in evaluation mode, in
/// the source's unshuffled order; for per-token labels, one prediction per labelled token (row
/// by row, [`IGNORE_LABEL`](crate::IGNORE_LABEL) positions skipped). Accuracy is `peftbench_metrics::accuracy` (NaN for an empty set).
/// Outputs are detached, so no graph outlives a batch.
pub fn evaluate(
    model: &dyn TrainModel,
    data: &dyn BatchSource,
    batch_size: usize,
) -> anyhow::Result<Evaluation> {
    anyhow::ensure!(batch_size > 0, "batch size must be positive");
    let start = Instant::now();
    let mut predictions = Vec::with_capacity(data.num_examples());
    let mut labels = Vec::with_capacity(data.num_examples());
    for batch in data.batches(batch_size, None) {
        let batch = batch?;
        let ctx = ForwardCtx::eval().with_task_ids(batch.task_ids.clone());
        let logits = model.batch_logits(&batch, &ctx)?.detach();
        let (logits, batch_labels) = labelled_rows(&logits, &batch.labels)?;
        predictions.extend(
            logits
                .argmax(D::Minus1)?
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()?,
        );
        labels.extend(batch_labels.to_dtype(DType::U32)?.to_vec1::<u32>()?);
    }
    anyhow::ensure!(
        predictions.len() == labels.len(),
        "model returned a wrong number of rows"
    );
    Ok(Evaluation {
        accuracy: peftbench_metrics::accuracy(&predictions, &labels),
        predictions,
        labels,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::data::InMemoryBatches;
    use candle_core::{Device, Var};
    use peftbench_core::{ops, SeededInit};

    /// A 2-layer MLP behind a frozen input projection; optionally its logits turn NaN after
    /// `nan_after` training forwards.
    struct Mlp {
        params: NamedVars,
        frozen: Var,
        nan_after: Option<usize>,
        train_calls: Cell<usize>,
    }

    impl Mlp {
        fn new(
            seed: u64,
            features: usize,
            hidden: usize,
            classes: usize,
        ) -> candle_core::Result<Self> {
            let init = SeededInit::new(seed, &Device::Cpu);
            let mut params = NamedVars::default();
            params.push(
                "fc1.weight",
                init.fork("fc1")
                    .kaiming_uniform((hidden, features), features)?,
            );
            params.push("fc1.bias", init.zeros(hidden)?);
            params.push(
                "fc2.weight",
                init.fork("fc2")
                    .kaiming_uniform((classes, hidden), hidden)?,
            );
            params.push("fc2.bias", init.zeros(classes)?);
            let mut eye = vec![0f32; features * features];
            for i in 0..features {
                eye[i * features + i] = 1.0;
            }
            let frozen = Var::from_vec(eye, (features, features), &Device::Cpu)?;
            Ok(Self {
                params,
                frozen,
                nan_after: None,
                train_calls: Cell::new(0),
            })
        }

        fn var(&self, i: usize) -> &Tensor {
            self.params.0[i].var.as_tensor()
        }
    }

    impl TrainModel for Mlp {
        fn trainable(&self) -> &NamedVars {
            &self.params
        }

        fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
            let x = input.matmul(self.frozen.as_tensor())?;
            let h = ops::linear(&x, self.var(0), Some(self.var(1)))?.relu()?;
            let h = ctx.dropout(&h, 0.1)?;
            let logits = ops::linear(&h, self.var(2), Some(self.var(3)))?;
            if ctx.is_train() {
                let calls = self.train_calls.get();
                self.train_calls.set(calls + 1);
                if self.nan_after.is_some_and(|n| calls >= n) {
                    return logits.affine(f64::NAN, 0.0);
                }
            }
            Ok(logits)
        }
    }

    /// Three Gaussian blobs in 4-D, `n` examples, labels `i % 3`.
    fn blobs(n: usize, seed: u64) -> anyhow::Result<InMemoryBatches> {
        let dev = Device::Cpu;
        let centres = Tensor::new(
            &[
                [2.0f32, 0.0, 0.0, 1.0],
                [-1.0, 2.0, 0.0, -1.0],
                [-1.0, -2.0, 1.0, 0.0],
            ],
            &dev,
        )?;
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let labels = Tensor::from_vec(labels, n, &dev)?;
        let noise = SeededInit::new(seed, &dev)
            .normal((n, 4), 0.5)?
            .as_tensor()
            .detach();
        let inputs = (centres.index_select(&labels, 0)? + noise)?;
        InMemoryBatches::new(inputs, labels)
    }

    fn config(epochs: usize) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: 32,
            eval_batch_size: 64,
            lr: 1e-2,
            min_lr: 1e-4,
            warmup_epochs: 2,
            warmup_lr: 1e-4,
            adamw: AdamWConfig {
                weight_decay: 1e-4,
                ..AdamWConfig::default()
            },
            label_smoothing: 0.1,
            grad_clip: Some(5.0),
            drop_path: 0.0,
            seed: 11,
            selection: Selection::Final,
        }
    }

    fn completed(outcome: TrainOutcome) -> TrainReport {
        match outcome {
            TrainOutcome::Completed(report) => report,
            other => panic!("expected a completed run, got {other:?}"),
        }
    }

    fn values(params: &NamedVars) -> Vec<Vec<f32>> {
        params
            .iter()
            .map(|p| {
                p.var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn mlp_learns_separable_blobs_and_frozen_weights_stay() -> anyhow::Result<()> {
        let (train_set, val_set) = (blobs(300, 1)?, blobs(150, 2)?);
        let model = Mlp::new(0, 4, 16, 3)?;
        let before = values(&model.params);
        let frozen_before = model.frozen.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let mut calls = 0;
        let cfg = config(20);
        let report = completed(train(&model, &train_set, Some(&val_set), &cfg, &mut |p| {
            assert_eq!((p.epochs, p.steps_per_epoch), (20, 10));
            calls += 1;
        })?);
        assert_eq!(calls, 200);
        assert_eq!(report.steps, 200);
        assert_eq!(report.history.len(), 20);
        assert_eq!(report.selected_epoch, 19);
        assert!(report.examples_per_second > 0.0);
        assert_eq!(report.history[0].lr, 1e-4);
        assert_eq!(report.history[5].lr, cfg.schedule().lr_at_epoch(5));
        let first = &report.history[0];
        let last = report.history.last().unwrap();
        assert!(last.train_loss < first.train_loss, "{first:?} -> {last:?}");
        assert!(last.val_accuracy.unwrap() > 0.95, "{last:?}");

        let eval = evaluate(&model, &val_set, 64)?;
        assert!(eval.accuracy > 0.95);
        assert_eq!(Some(eval.accuracy), last.val_accuracy);
        assert_eq!(eval.labels, val_set.labels().to_vec1::<u32>()?);
        assert_eq!(eval.predictions.len(), 150);

        // Every trainable tensor moved; the frozen projection did not.
        for (b, a) in before.iter().zip(values(&model.params)) {
            assert_ne!(b, &a);
        }
        assert_eq!(
            model.frozen.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            frozen_before
        );
        Ok(())
    }

    #[test]
    fn logistic_regression_learns() -> anyhow::Result<()> {
        struct Logistic(NamedVars);
        impl TrainModel for Logistic {
            fn trainable(&self) -> &NamedVars {
                &self.0
            }
            fn logits(&self, input: &Tensor, _ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
                ops::linear(
                    input,
                    self.0 .0[0].var.as_tensor(),
                    Some(self.0 .0[1].var.as_tensor()),
                )
            }
        }
        let init = SeededInit::new(5, &Device::Cpu);
        let mut params = NamedVars::default();
        params.push("weight", init.zeros((3, 4))?);
        params.push("bias", init.zeros(3)?);
        let model = Logistic(params);
        let cfg = TrainConfig {
            grad_clip: None,
            label_smoothing: 0.0,
            ..config(10)
        };
        completed(train(&model, &blobs(300, 3)?, None, &cfg, &mut |_| {})?);
        assert!(evaluate(&model, &blobs(150, 4)?, 7)?.accuracy > 0.95);
        Ok(())
    }

    #[test]
    fn same_seed_gives_bit_identical_runs() -> anyhow::Result<()> {
        let data = blobs(100, 1)?;
        let run = |seed: u64| -> anyhow::Result<(Vec<f64>, Vec<Vec<f32>>)> {
            let model = Mlp::new(0, 4, 8, 3)?;
            let cfg = TrainConfig {
                seed,
                drop_path: 0.2,
                ..config(3)
            };
            let mut losses = Vec::new();
            completed(train(&model, &data, None, &cfg, &mut |p| {
                losses.push(p.loss)
            })?);
            Ok((losses, values(&model.params)))
        };
        let (a, wa) = run(7)?;
        let (b, wb) = run(7)?;
        let (c, _) = run(8)?;
        assert_eq!(
            a.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(wa, wb);
        assert_ne!(a, c, "a different seed shuffles and drops differently");
        Ok(())
    }

    #[test]
    fn nan_logits_end_the_run_before_any_update() -> anyhow::Result<()> {
        let data = blobs(100, 1)?;
        let mut model = Mlp::new(0, 4, 8, 3)?;
        model.nan_after = Some(9); // 4 steps per epoch: epoch 2, step 1
        let mut weights_at_last_step = Vec::new();
        let params = model.params.clone();
        let outcome = train(&model, &data, None, &config(5), &mut |_| {
            weights_at_last_step = values(&params);
        })?;
        match outcome {
            TrainOutcome::Diverged {
                epoch,
                step,
                loss,
                history,
            } => {
                assert_eq!((epoch, step), (2, 1));
                assert!(loss.is_nan());
                assert_eq!(history.len(), 2);
            }
            other => panic!("expected divergence, got {other:?}"),
        }
        assert_eq!(values(&model.params), weights_at_last_step);
        Ok(())
    }

    #[test]
    fn huge_learning_rate_diverges() -> anyhow::Result<()> {
        let model = Mlp::new(0, 4, 16, 3)?;
        let cfg = TrainConfig {
            lr: 1e30,
            warmup_epochs: 0,
            grad_clip: None,
            label_smoothing: 0.0,
            ..config(20)
        };
        let outcome = train(&model, &blobs(300, 1)?, None, &cfg, &mut |_| {})?;
        assert!(
            matches!(outcome, TrainOutcome::Diverged { .. }),
            "{outcome:?}"
        );
        Ok(())
    }

    /// Trains with `Selection::BestValidation`, checks that the model ends with the weights it had
    /// after the first epoch of highest validation accuracy, and returns the accuracies and choice.
    fn check_best_val(
        model: &Mlp,
        train_set: &InMemoryBatches,
        val: &InMemoryBatches,
    ) -> anyhow::Result<(Vec<f64>, usize)> {
        let params = model.params.clone();
        let mut per_epoch: Vec<Vec<Vec<f32>>> = Vec::new();
        let cfg = TrainConfig {
            selection: Selection::BestValidation,
            lr: 3e-3,
            ..config(8)
        };
        let report = completed(train(model, train_set, Some(val), &cfg, &mut |p| {
            if p.step + 1 == p.steps_per_epoch {
                per_epoch.push(values(&params));
            }
        })?);
        let accs: Vec<f64> = report
            .history
            .iter()
            .map(|e| e.val_accuracy.unwrap())
            .collect();
        let best = accs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let expected = accs.iter().position(|&a| a == best).unwrap();
        assert_eq!(report.selected_epoch, expected, "{accs:?}");
        assert_eq!(values(&model.params), per_epoch[expected], "{accs:?}");
        if expected + 1 < per_epoch.len() {
            assert_ne!(values(&model.params), per_epoch[per_epoch.len() - 1]);
        }
        assert_eq!(evaluate(model, val, 32)?.accuracy, best);
        Ok((accs, expected))
    }

    #[test]
    fn best_validation_restores_the_best_epoch() -> anyhow::Result<()> {
        let train_set = blobs(150, 1)?;
        let val = blobs(90, 2)?;

        // Validation on the training task: accuracy rises, so a later epoch is chosen.
        let (accs, chosen) = check_best_val(&Mlp::new(3, 4, 16, 3)?, &train_set, &val)?;
        assert!(chosen > 0, "{accs:?}");

        // Validation labels shifted by one class, on a model first fitted to the shifted task:
        // training on the real task makes validation accuracy fall, so the best epoch is early
        // and restoring it really changes the weights.
        let shift = |d: &InMemoryBatches| -> anyhow::Result<InMemoryBatches> {
            let labels: Vec<u32> = d
                .labels()
                .to_vec1::<u32>()?
                .iter()
                .map(|l| (l + 1) % 3)
                .collect();
            InMemoryBatches::new(d.inputs().clone(), Tensor::new(labels, &Device::Cpu)?)
        };
        let model = Mlp::new(3, 4, 16, 3)?;
        completed(train(
            &model,
            &shift(&train_set)?,
            None,
            &config(5),
            &mut |_| {},
        )?);
        let shifted_val = shift(&val)?;
        let (accs, chosen) = check_best_val(&model, &train_set, &shifted_val)?;
        assert!(chosen < 7 && accs[7] < accs[chosen] - 0.2, "{accs:?}");
        Ok(())
    }

    #[test]
    fn best_validation_needs_a_validation_set() -> anyhow::Result<()> {
        let model = Mlp::new(0, 4, 8, 3)?;
        let cfg = TrainConfig {
            selection: Selection::BestValidation,
            ..config(1)
        };
        assert!(train(&model, &blobs(30, 1)?, None, &cfg, &mut |_| {}).is_err());
        Ok(())
    }

    #[test]
    fn config_serde_names() -> anyhow::Result<()> {
        assert_eq!(
            serde_json::to_string(&Selection::BestValidation)?,
            "\"best-val\""
        );
        assert_eq!(
            serde_json::from_str::<Selection>("\"final\"")?,
            Selection::Final
        );
        let cfg = TrainConfig::vtab_recipe(1);
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&cfg)?)?;
        assert_eq!(back, cfg);
        assert_eq!(cfg.schedule().lr_at_epoch(0), 1e-6);
        assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
        Ok(())
    }
}
