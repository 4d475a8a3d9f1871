//! One run: what every kind shares (the trainer configuration from a recipe, training phases, the
//! context a run gets) and the record built from what a kind's run produced.

use candle_core::Device;
use peftbench_methods::PeftModel;
use peftbench_records::{
    now_rfc3339, peak_rss_bytes, reset_peak_rss, Environment, EpochLog, EvalCorrect, RecordStore,
    RunRecord, RunStatus, SCHEMA_VERSION,
};
use peftbench_suite::RunSpec;
use peftbench_train::{
    derive_seed, train, AdamWConfig, BatchSource, Selection, TrainConfig, TrainModel, TrainOutcome,
    TrainReport,
};

use crate::backbone::LoadedBackbone;
use crate::features::FeatureCache;
use crate::frozen_prefix::PrefixCache;
use crate::kinds::Kind;
use crate::text::TaggingEval;

/// The prepared splits of a classification task (images, audio, texts or tagged sentences),
/// shared by all its runs.
pub struct PreparedTask {
    pub train: Box<dyn BatchSource>,
    pub eval: Box<dyn BatchSource>,
    pub val: Option<Box<dyn BatchSource>>,
    pub skipped_examples: usize,
    /// Whether the training batches are augmented at random (a different input every epoch).
    pub augmented_training: bool,
    /// Backbone features of the splits, for runs whose method leaves the backbone unchanged.
    pub features: FeatureCache,
    /// Token streams after the first blocks, for runs whose method leaves those blocks unchanged.
    pub prefixes: PrefixCache,
    /// NER tasks: how the eval split's token predictions become entity-level scores.
    pub tagging: Option<TaggingEval>,
}

/// What a run needs besides its spec.
pub struct RunContext<'a> {
    pub store: &'a RecordStore,
    pub device: &'a Device,
    pub backbone: &'a LoadedBackbone,
    pub environment: &'a Environment,
    /// Text suites: the backbone's tokenizer (reranking tokenises candidates at evaluation).
    pub text_encoder: Option<&'a peftbench_backbones::TextEncoder>,
    /// The data root of data on disk (language adapter corpora are read under it).
    pub data_root: Option<&'a std::path::Path>,
    /// Bytes of frozen-prefix streams the process may hold ([`crate::frozen_prefix::prefix_cache_budget`]).
    pub prefix_cache_budget: u64,
    /// The manifest artifacts the suite reads ([`crate::provenance::data_artifacts`]).
    pub data: &'a [peftbench_records::DataArtifact],
}

/// How a run's model is presented to the trainer: as itself (classification) or wrapped (a
/// cross-encoder under a ranking loss).
pub(crate) trait Objective {
    fn trainee<'m>(&self, model: &'m PeftModel) -> Box<dyn TrainModel + 'm>;
}

/// Classification: the model's logits under cross-entropy.
pub(crate) struct Classification;

impl Objective for Classification {
    fn trainee<'m>(&self, model: &'m PeftModel) -> Box<dyn TrainModel + 'm> {
        Box::new(model)
    }
}

/// The trainer's configuration from a run's recipe and protocol.
pub fn train_config(spec: &RunSpec) -> TrainConfig {
    let r = &spec.recipe;
    TrainConfig {
        epochs: r.epochs,
        batch_size: r.batch_size,
        eval_batch_size: r.eval_batch_size,
        lr: r.lr,
        min_lr: r.min_lr,
        warmup_epochs: r.warmup_epochs,
        warmup_lr: r.warmup_lr,
        // NOAH/FacT pass every parameter to AdamW, so weight decay applies to biases and norms too.
        adamw: AdamWConfig {
            betas: (r.betas[0], r.betas[1]),
            eps: r.eps,
            weight_decay: r.weight_decay,
            decay_1d: true,
        },
        label_smoothing: r.label_smoothing,
        grad_clip: r.grad_clip,
        drop_path: r.drop_path,
        seed: spec.seed,
        selection: match spec.protocol.selection {
            peftbench_suite::Selection::Final => Selection::Final,
            peftbench_suite::Selection::BestVal => Selection::BestValidation,
        },
    }
}

/// Purpose mixed into the run seed for the model's initial values ("model").
pub(crate) const MODEL_INIT: u64 = 0x006d_6f64_656c;

/// Purpose mixed into the calibration batches' shuffle seed ("CALI").
pub(crate) const CALIBRATION: u64 = 0x4341_4c49;

/// Trains every phase of the method in turn (one for most methods), each with a fresh optimizer
/// and the phase's epochs and learning rate; histories are concatenated, epochs numbered on.
pub(crate) fn train_phases(
    model: &mut PeftModel,
    objective: &dyn Objective,
    train_data: &dyn BatchSource,
    val: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<TrainOutcome> {
    let phases = model.phases();
    if phases.is_empty() {
        return train(&*objective.trainee(model), train_data, val, cfg, progress);
    }
    let mut history = Vec::new();
    let (mut seconds, mut examples, mut steps) = (0.0, 0.0, 0);
    let mut last = None;
    for (index, phase) in phases.iter().enumerate() {
        model.enter_phase(index)?;
        let phase_cfg = TrainConfig {
            epochs: phase.epochs.unwrap_or(cfg.epochs),
            lr: phase.lr.unwrap_or(cfg.lr),
            seed: derive_seed(&[cfg.seed, index as u64]),
            ..cfg.clone()
        };
        let offset = history.len();
        let renumber = |logs: Vec<peftbench_train::EpochLog>| {
            logs.into_iter().map(move |mut log| {
                log.epoch += offset;
                log
            })
        };
        match train(
            &*objective.trainee(model),
            train_data,
            val,
            &phase_cfg,
            progress,
        )? {
            TrainOutcome::Completed(report) => {
                seconds += report.train_seconds;
                examples += report.examples_per_second * report.train_seconds;
                steps += report.steps;
                last = Some(offset + report.selected_epoch);
                history.extend(renumber(report.history));
            }
            TrainOutcome::Diverged {
                epoch,
                step,
                loss,
                history: h,
            } => {
                history.extend(renumber(h));
                return Ok(TrainOutcome::Diverged {
                    epoch: offset + epoch,
                    step,
                    loss,
                    history,
                });
            }
        }
    }
    Ok(TrainOutcome::Completed(TrainReport {
        history,
        selected_epoch: last.expect("at least one phase"),
        train_seconds: seconds,
        examples_per_second: if seconds > 0.0 {
            examples / seconds
        } else {
            0.0
        },
        steps,
    }))
}

/// What a run produced, before it becomes a record.
pub(crate) struct Finished {
    pub status: RunStatus,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub selected_epoch: Option<usize>,
    pub history: Vec<EpochLog>,
    pub trainable: u64,
    pub total: u64,
    pub adapter_bytes: Option<u64>,
    pub adapter_dir: Option<String>,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    pub examples_per_second: f64,
    pub error: Option<String>,
    pub eval_correct: Option<EvalCorrect>,
}

/// A run's model trained to the end with its adapter saved: what its record takes from training.
pub(crate) struct Trained {
    pub report: TrainReport,
    /// Trainable and total scalars, counted after the last phase (what the final adapter trains,
    /// e.g. LT-SFT's sparse entries).
    pub trainable: u64,
    pub total: u64,
    /// The adapter's folder and its bytes on disk.
    pub adapter_dir: std::path::PathBuf,
    pub adapter_bytes: u64,
}

impl Trained {
    /// Saves the adapter of `model` after training ended in `outcome`, under the run's artifact
    /// folder; a run that diverged is returned as its record instead (`Err`), with nothing saved.
    pub fn save(
        spec: &RunSpec,
        model: &PeftModel,
        outcome: TrainOutcome,
        ctx: &RunContext<'_>,
    ) -> anyhow::Result<Result<Self, Finished>> {
        Self::save_with(
            spec,
            outcome,
            model.trainable_count() as u64,
            model.total_count() as u64,
            ctx,
            |dir| model.save(dir, &ctx.backbone.name),
        )
    }

    /// [`Trained::save`] for any model: `trainable` and `total` are its scalar counts and
    /// `save(dir)` writes its adapter into `dir`, returning the bytes written.
    pub fn save_with(
        spec: &RunSpec,
        outcome: TrainOutcome,
        trainable: u64,
        total: u64,
        ctx: &RunContext<'_>,
        save: impl FnOnce(&std::path::Path) -> anyhow::Result<u64>,
    ) -> anyhow::Result<Result<Self, Finished>> {
        let report = match outcome {
            TrainOutcome::Completed(report) => report,
            TrainOutcome::Diverged {
                epoch,
                step,
                loss,
                history,
            } => {
                return Ok(Err(Finished::diverged(
                    &history, trainable, total, epoch, step, loss,
                )))
            }
        };
        let adapter_dir = ctx.store.artifact_dir(&spec.run_id());
        let adapter_bytes = save(&adapter_dir)?;
        Ok(Ok(Self {
            report,
            trainable,
            total,
            adapter_dir,
            adapter_bytes,
        }))
    }
}

impl Finished {
    /// A completed run: what `trained` recorded, the evaluation's `metrics` (the selected
    /// epoch's validation accuracy added when there is one) and per-example correctness.
    pub fn completed(
        trained: &Trained,
        ctx: &RunContext<'_>,
        mut metrics: std::collections::BTreeMap<String, f64>,
        eval_seconds: f64,
        eval_correct: Option<EvalCorrect>,
    ) -> Self {
        let report = &trained.report;
        if let Some(val) = report
            .history
            .get(report.selected_epoch)
            .and_then(|h| h.val_accuracy)
        {
            metrics.insert("val_accuracy".into(), val);
        }
        let dir = &trained.adapter_dir;
        Finished {
            status: RunStatus::Completed,
            metrics,
            selected_epoch: Some(report.selected_epoch),
            history: logs(&report.history),
            trainable: trained.trainable,
            total: trained.total,
            adapter_bytes: Some(trained.adapter_bytes),
            // Relative to the results directory, so a results folder can be moved or shared.
            adapter_dir: Some(
                dir.strip_prefix(ctx.store.root())
                    .unwrap_or(dir)
                    .display()
                    .to_string(),
            ),
            train_seconds: report.train_seconds,
            eval_seconds,
            examples_per_second: report.examples_per_second,
            error: None,
            eval_correct,
        }
    }

    /// A run whose loss became `loss` (NaN or infinite) at `epoch`, `step`.
    pub fn diverged(
        history: &[peftbench_train::EpochLog],
        trainable: u64,
        total: u64,
        epoch: usize,
        step: usize,
        loss: f64,
    ) -> Self {
        Finished {
            status: RunStatus::Diverged,
            metrics: Default::default(),
            selected_epoch: None,
            history: logs(history),
            trainable,
            total,
            adapter_bytes: None,
            adapter_dir: None,
            train_seconds: history.iter().map(|h| h.seconds).sum(),
            eval_seconds: 0.0,
            examples_per_second: 0.0,
            error: Some(format!("loss became {loss} at epoch {epoch}, step {step}")),
            eval_correct: None,
        }
    }
}

pub(crate) fn logs(history: &[peftbench_train::EpochLog]) -> Vec<EpochLog> {
    history
        .iter()
        .map(|h| EpochLog {
            epoch: h.epoch,
            train_loss: h.train_loss,
            lr: h.lr,
            val_accuracy: h.val_accuracy,
            seconds: h.seconds,
        })
        .collect()
}

/// Runs `spec` as a task of kind `K` and returns its record (never an error: a failure is a
/// `failed` record).
pub(crate) fn execute<K: Kind>(
    spec: &RunSpec,
    task: &K::Prepared,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> RunRecord {
    let started_at = now_rfc3339();
    reset_peak_rss();
    let finished = K::run(spec, task, ctx, progress).unwrap_or_else(|e| Finished {
        status: RunStatus::Failed,
        metrics: Default::default(),
        selected_epoch: None,
        history: Vec::new(),
        trainable: 0,
        total: 0,
        adapter_bytes: None,
        adapter_dir: None,
        train_seconds: 0.0,
        eval_seconds: 0.0,
        examples_per_second: 0.0,
        error: Some(format!("{e:#}")),
        eval_correct: None,
    });
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: spec.run_id(),
        suite: spec.suite.clone(),
        task: spec.task.name.clone(),
        group: spec.group.clone(),
        method: spec.method.clone(),
        label: spec.label.clone(),
        seed: spec.seed,
        config: serde_json::to_value(spec).expect("run spec serialises"),
        config_hash: spec.config_hash(),
        status: finished.status,
        error: finished.error,
        metrics: finished.metrics,
        primary_metric: K::primary_metric(spec),
        selection: match spec.protocol.selection {
            peftbench_suite::Selection::Final => "final".into(),
            peftbench_suite::Selection::BestVal => "best-val".into(),
        },
        selected_epoch: finished.selected_epoch,
        trainable_params: finished.trainable,
        total_params: finished.total,
        adapter_bytes: finished.adapter_bytes,
        peak_memory_bytes: peak_rss_bytes(),
        train_seconds: finished.train_seconds,
        eval_seconds: finished.eval_seconds,
        train_examples_per_second: finished.examples_per_second,
        history: finished.history,
        environment: ctx.environment.clone(),
        started_at,
        finished_at: now_rfc3339(),
        adapter_dir: finished.adapter_dir,
        eval_correct: finished.eval_correct,
        data: ctx.data.to_vec(),
    }
}
