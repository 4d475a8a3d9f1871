//! One run: attach the method, train, evaluate, save the adapter, and build its record.

use std::time::Instant;

use candle_core::Device;
use peftbench_core::SeededInit;
use peftbench_methods::PeftModel;
use peftbench_records::{
    now_rfc3339, peak_rss_bytes, reset_peak_rss, Environment, EpochLog, EvalCorrect, RecordStore,
    RunRecord, RunStatus, SCHEMA_VERSION,
};
use peftbench_suite::RunSpec;
use peftbench_train::{
    cross_entropy, derive_seed, evaluate, train, AdamWConfig, BatchSource, Selection, TrainConfig,
    TrainModel, TrainOutcome, TrainReport,
};

use crate::backbone::LoadedBackbone;
use crate::features::{FeatureCache, HeadOnFeatures};
use crate::frozen_prefix::{PrefixCache, ResumeFromPrefix};
use crate::language_adapters;
use crate::text::TaggingEval;

/// The prepared inputs of a task, shared by all its runs.
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
}

/// A task's inputs prepared for its runs: classification splits, or a reranking collection and
/// its training groups.
pub enum Prepared {
    Classification(Box<PreparedTask>),
    Ranking(Box<crate::rerank::RerankTask>),
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

/// The primary metric's name: nDCG for reranking, entity-level span F1 on the evaluation split
/// for NER, accuracy otherwise.
pub fn primary_metric(spec: &RunSpec) -> String {
    if let Some(run) = &spec.retrieval {
        crate::rerank::primary_metric(run)
    } else if spec.data.format.is_token_level() {
        format!("{}_span_f1", spec.protocol.eval_split)
    } else {
        format!("{}_accuracy", spec.protocol.eval_split)
    }
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

impl Finished {
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

fn execute_inner(
    spec: &RunSpec,
    task: &PreparedTask,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<Finished> {
    let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), ctx.device);
    // Composing methods train over the adapter of the language they train on.
    let train_language = spec.task.language.as_deref();
    let mut model = language_adapters::composed_model(
        spec,
        train_language,
        spec.task.num_classes,
        &init,
        ctx,
        progress,
    )?;
    let cfg = train_config(spec);
    // Data-dependent methods (CorDA, SHiRA's gradient mask) look at a few training batches first.
    let mut calibration = task
        .train
        .batches(cfg.batch_size, Some(derive_seed(&[spec.seed, CALIBRATION])))
        .map(|batch| batch.map(|b| (b.inputs, b.labels)));
    model.calibrate(&mut calibration, &|logits, labels| {
        cross_entropy(logits, labels, cfg.label_smoothing)
    })?;
    // Frozen blocks whose training-mode forward equals their evaluation-mode forward compute the
    // same output every epoch: compute it once per task and train the rest on it. Augmented
    // training inputs (SpecAugment) differ every epoch, so nothing is cached then.
    let frozen_blocks_repeat = model.phases().is_empty()
        && cfg.drop_path == 0.0
        && ctx.backbone.model.deterministic_in_training()
        && !task.augmented_training
        // The caches feed sequence-level heads; token classification reads every token.
        && task.tagging.is_none();
    let mut cache_seconds = 0.0;
    // The whole backbone frozen (the linear probe): its pooled features.
    let features = if frozen_blocks_repeat && model.adaptation().leaves_backbone_unchanged() {
        let (features, computed) =
            task.features
                .get_or_compute(task, &model, cfg.eval_batch_size)?;
        if computed {
            cache_seconds = features.seconds;
        }
        Some(features)
    } else {
        None
    };
    // The first blocks frozen (a method in the top blocks): the stream entering the first
    // adapted block.
    let untouched = model.adaptation().untouched_blocks();
    let prefix = if frozen_blocks_repeat && features.is_none() && untouched > 0 {
        task.prefixes
            .get_or_compute(
                task,
                &model,
                untouched,
                cfg.eval_batch_size,
                ctx.prefix_cache_budget,
            )?
            .map(|cached| {
                if cached.computed {
                    cache_seconds = cached.prefix.seconds;
                }
                cached.prefix
            })
    } else {
        None
    };
    let outcome = match (features, &prefix) {
        (Some(f), _) => train(
            &HeadOnFeatures(&model),
            &f.train,
            f.val.as_ref().map(|v| v as &dyn BatchSource),
            &cfg,
            progress,
        )?,
        (None, Some(p)) => train(
            &ResumeFromPrefix {
                model: &model,
                blocks: p.blocks,
            },
            &p.train,
            p.val.as_ref().map(|v| v as &dyn BatchSource),
            &cfg,
            progress,
        )?,
        (None, None) => train_phases(
            &mut model,
            &Classification,
            task.train.as_ref(),
            task.val.as_deref(),
            &cfg,
            progress,
        )?,
    };
    // Counted after the last phase: what the final adapter trains (LT-SFT's sparse entries).
    let trainable = model.trainable_count() as u64;
    let total = model.total_count() as u64;
    let report = match outcome {
        TrainOutcome::Completed(mut report) => {
            report.train_seconds += cache_seconds;
            report
        }
        TrainOutcome::Diverged {
            epoch,
            step,
            loss,
            history,
        } => {
            return Ok(Finished::diverged(
                &history, trainable, total, epoch, step, loss,
            ));
        }
    };
    // Saved as trained (a composing method with the training language's module under it).
    let dir = ctx.store.artifact_dir(&spec.run_id());
    let adapter_bytes = model.save(&dir, &ctx.backbone.name)?;
    let eval_started = Instant::now();
    // ... and are evaluated with the adapter of the language they are evaluated on.
    language_adapters::swap_for_evaluation(
        spec,
        &mut model,
        train_language,
        spec.task.eval_language(),
        ctx,
        progress,
    )?;
    // The cached evaluation streams hold while the evaluated method leaves their blocks alone.
    let prefix_eval = prefix
        .as_ref()
        .filter(|p| model.adaptation().untouched_blocks() >= p.blocks)
        .and_then(|p| Some((p.blocks, p.eval.as_ref()?)));
    let evaluation = match (features, prefix_eval) {
        (Some(f), _) => evaluate(&HeadOnFeatures(&model), &f.eval, cfg.eval_batch_size)?,
        (None, Some((blocks, streams))) => evaluate(
            &ResumeFromPrefix {
                model: &model,
                blocks,
            },
            streams,
            cfg.eval_batch_size,
        )?,
        (None, None) => evaluate(&model, task.eval.as_ref(), cfg.eval_batch_size)?,
    };
    let mut metrics = std::collections::BTreeMap::new();
    let eval_split = &spec.protocol.eval_split;
    metrics.insert(format!("{eval_split}_accuracy"), evaluation.accuracy);
    if let Some(tagging) = &task.tagging {
        // NER: seqeval's entity-level scores; the accuracy above is per labelled word.
        let scores = tagging.score(&evaluation.predictions)?;
        metrics.insert(format!("{eval_split}_span_f1"), scores.f1);
        metrics.insert(format!("{eval_split}_span_precision"), scores.precision);
        metrics.insert(format!("{eval_split}_span_recall"), scores.recall);
    } else if spec.text.is_some() {
        // Text benchmarks (SIB-200, sentiment) report macro-F1 beside accuracy.
        metrics.insert(
            format!("{}_macro_f1", spec.protocol.eval_split),
            peftbench_metrics::macro_f1(&evaluation.predictions, &evaluation.labels),
        );
    }
    if let Some(val) = report
        .history
        .get(report.selected_epoch)
        .and_then(|h| h.val_accuracy)
    {
        metrics.insert("val_accuracy".into(), val);
    }
    if task.skipped_examples > 0 {
        metrics.insert("skipped_examples".into(), task.skipped_examples as f64);
    }
    let eval_seconds = eval_started.elapsed().as_secs_f64();
    Ok(Finished {
        status: RunStatus::Completed,
        metrics,
        selected_epoch: Some(report.selected_epoch),
        history: logs(&report.history),
        trainable,
        total,
        adapter_bytes: Some(adapter_bytes),
        // Relative to the results directory, so a results folder can be moved or shared.
        adapter_dir: Some(
            dir.strip_prefix(ctx.store.root())
                .unwrap_or(&dir)
                .display()
                .to_string(),
        ),
        train_seconds: report.train_seconds,
        eval_seconds,
        examples_per_second: report.examples_per_second,
        error: None,
        // For bootstrap intervals over test examples in reports; not for NER, whose span F1 is
        // not a mean over the predicted tokens.
        eval_correct: task.tagging.is_none().then(|| {
            EvalCorrect::from_bools(&peftbench_metrics::correct_mask(
                &evaluation.predictions,
                &evaluation.labels,
            ))
        }),
    })
}

/// Runs `spec` and returns its record (never an error: a failure is a `failed` record).
pub fn execute(
    spec: &RunSpec,
    task: &Prepared,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> RunRecord {
    let started_at = now_rfc3339();
    reset_peak_rss();
    let finished = match task {
        Prepared::Classification(task) => execute_inner(spec, task, ctx, progress),
        Prepared::Ranking(task) => crate::rerank::execute_rerank(spec, task, ctx, progress),
    };
    let finished = finished.unwrap_or_else(|e| Finished {
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
        primary_metric: primary_metric(spec),
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
    }
}
