//! Training and evaluating a classification head (one class per example, or per word): what
//! the image, audio, text and token-tagging kinds share. A run attaches its method (over a
//! language module when it composes one), lets data-dependent methods calibrate, trains from the
//! frozen features or a frozen prefix when the method leaves those blocks unchanged (else every
//! phase of the method in turn), saves the adapter and evaluates; each kind adds its own metrics.

use std::time::Instant;

use peftbench_core::SeededInit;
use peftbench_records::EvalCorrect;
use peftbench_suite::RunSpec;
use peftbench_train::{
    cross_entropy, derive_seed, evaluate, train, BatchSource, Evaluation, TrainOutcome,
};

use crate::features::HeadOnFeatures;
use crate::frozen_prefix::ResumeFromPrefix;
use crate::language_adapters;
use crate::run::{
    train_config, train_phases, Classification, Finished, PreparedTask, RunContext, Trained,
    CALIBRATION, MODEL_INIT,
};

/// A run's metrics by name.
pub(crate) type Metrics = std::collections::BTreeMap<String, f64>;

/// The accuracy on the evaluation split, every classification run's metric (`test_accuracy`).
pub(crate) fn accuracy_metric(spec: &RunSpec) -> String {
    format!("{}_accuracy", spec.protocol.eval_split)
}

/// Trains a classification run on `task` and evaluates it: accuracy on the evaluation split,
/// plus whatever `score` adds from the evaluation's predictions (a kind's own metrics).
pub(crate) fn train_and_evaluate(
    spec: &RunSpec,
    task: &PreparedTask,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
    score: &dyn Fn(&Evaluation, &mut Metrics) -> anyhow::Result<()>,
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
    // Training time includes computing the caches it trained from.
    let outcome = match outcome {
        TrainOutcome::Completed(mut report) => {
            report.train_seconds += cache_seconds;
            TrainOutcome::Completed(report)
        }
        diverged => diverged,
    };
    // Saved as trained (a composing method with the training language's module under it).
    let trained = match Trained::save(spec, &model, outcome, ctx)? {
        Ok(trained) => trained,
        Err(diverged) => return Ok(diverged),
    };
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
    let mut metrics = Metrics::new();
    metrics.insert(accuracy_metric(spec), evaluation.accuracy);
    score(&evaluation, &mut metrics)?;
    if task.skipped_examples > 0 {
        metrics.insert("skipped_examples".into(), task.skipped_examples as f64);
    }
    // For bootstrap intervals over test examples in reports; not for NER, whose span F1 is not a
    // mean over the predicted tokens.
    let eval_correct = task.tagging.is_none().then(|| {
        EvalCorrect::from_bools(&peftbench_metrics::correct_mask(
            &evaluation.predictions,
            &evaluation.labels,
        ))
    });
    let eval_seconds = eval_started.elapsed().as_secs_f64();
    Ok(Finished::completed(
        &trained,
        ctx,
        metrics,
        eval_seconds,
        eval_correct,
    ))
}
