//! Multi-task classification: the tasks of a suite's `multitask` section trained together in one
//! run, each example carrying its task id through batching to the method and the head.
//!
//! A multi-task kind wraps the single-task kind its members are ([`Member`]): each member's data is
//! found and prepared exactly as a single-task run of it would be (same files, same generated
//! examples), then the training splits are stacked into one [`TaskMixture`] that mixes tasks within
//! batches by the section's `sampling`. A run trains one model (one head per task, or one shared
//! head) and evaluates every member on its own evaluation split; its record holds each task's
//! accuracy (`test_accuracy@<task>`), their plain mean as the primary metric, and the mean cosine
//! between the tasks' gradients on the method's parameters (`gradient_cosine`), which MHR offers as
//! the explanation of routing's gains (Caccia et al., 2023, section 6).

use std::marker::PhantomData;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::TextEncoder;
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::PeftModel;
use peftbench_methods::Transfer;
use peftbench_records::{EvalCorrect, RunStatus};
use peftbench_suite::{
    Heads, MultiTaskRun, RunSpec, Sampling, Suite, TaskKind, TaskSpec, TransferMode, TransferRun,
};
use peftbench_train::{
    derive_seed, evaluate, masked_cross_entropy, mixture::pad_tokens, Batch, BatchSource, Mixing,
    TaskMixture, TrainModel, WithTaskId,
};

use super::{ImageClassification, Kind, TextClassification};
use crate::backbone::{BackboneModel, LoadedBackbone};
use crate::classification::{accuracy_metric, Metrics};
use crate::run::{
    train_config, train_phases, Classification, Finished, PreparedTask, RunContext, Trained,
    MODEL_INIT,
};
use crate::Paths;

/// A single-task kind whose tasks a multi-task run trains together.
pub(crate) trait Member: Kind<Prepared = PreparedTask> {
    /// The kind of one member task.
    const KIND: TaskKind;
}

impl Member for ImageClassification {
    const KIND: TaskKind = TaskKind::ImageClassification;
}

impl Member for TextClassification {
    const KIND: TaskKind = TaskKind::TextClassification;
}

/// The tasks of `multitask` trained together, each a task of kind `M`.
pub(crate) struct MultiTask<M>(PhantomData<M>);

/// The members' prepared splits and the training mixture made of them.
pub(crate) struct PreparedMultiTask {
    members: Vec<PreparedTask>,
    train: TaskMixture,
    /// The members' validation splits stacked (model selection reads their pooled accuracy).
    val: Option<TaskMixture>,
}

fn tasks_of(spec: &RunSpec) -> &MultiTaskRun {
    spec.multitask
        .as_ref()
        .expect("multi-task runs carry their member tasks")
}

/// The tasks a run reads: a multi-task run's members, or a few-shot run's held-out task.
fn members(spec: &RunSpec) -> Vec<TaskSpec> {
    match &spec.multitask {
        Some(run) => run.tasks.clone(),
        None => vec![spec.task.clone()],
    }
}

/// Member `t` of a run as a single-task run of it: same data, same preprocessing.
fn member_spec<M: Member>(spec: &RunSpec, t: usize) -> RunSpec {
    let mut member = spec.clone();
    member.task = members(spec)[t].clone();
    member.group = member.task.group.clone();
    member.multitask = None;
    member.transfer = None;
    member.kind = M::KIND;
    member
}

/// A split held in memory as one tensor of inputs and one of labels, in file order. Token ids
/// (`[B, T]`, or sentence pairs `[B, 2, T]`) are padded per batch, so with `pad` every batch is
/// first padded to the split's widest (segment ids with 0).
fn stacked(source: &dyn BatchSource, pad: Option<u32>) -> anyhow::Result<(Tensor, Tensor)> {
    let mut inputs = Vec::new();
    let mut labels = Vec::new();
    for batch in source.batches(256, None) {
        let batch = batch?;
        inputs.push(batch.inputs);
        labels.push(batch.labels);
    }
    anyhow::ensure!(!inputs.is_empty(), "a member task's split has no examples");
    if let Some(pad) = pad {
        let widest = inputs
            .iter()
            .map(|x| x.dims().last().copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        inputs = inputs
            .iter()
            .map(|x| pad_tokens(x, widest, pad))
            .collect::<candle_core::Result<Vec<_>>>()?;
    }
    Ok((Tensor::cat(&inputs, 0)?, Tensor::cat(&labels, 0)?))
}

/// The mixture of the members' sources of one split.
fn mixture(
    sources: Vec<&dyn BatchSource>,
    pad: Option<u32>,
    mixing: Mixing,
) -> anyhow::Result<TaskMixture> {
    let tasks = sources
        .into_iter()
        .map(|s| stacked(s, pad))
        .collect::<anyhow::Result<Vec<_>>>()?;
    TaskMixture::new(tasks, pad, mixing)
}

impl<M: Member> Kind for MultiTask<M> {
    type Encoders = M::Encoders;
    type Located = Vec<M::Located>;
    type Prepared = PreparedMultiTask;

    fn locate(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<Vec<M::Located>> {
        (0..members(spec).len())
            .map(|t| M::locate(&member_spec::<M>(spec, t), paths, quiet))
            .collect()
    }

    fn check_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
        M::check_backbone(&member_spec::<M>(spec, 0), backbone)
    }

    fn encoders(
        suite: &Suite,
        backbone: &mut LoadedBackbone,
        paths: &Paths,
    ) -> anyhow::Result<M::Encoders> {
        M::encoders(suite, backbone, paths)
    }

    fn text_encoder(encoders: &M::Encoders) -> Option<&TextEncoder> {
        M::text_encoder(encoders)
    }

    fn prepare(
        spec: &RunSpec,
        located: &Vec<M::Located>,
        encoders: &M::Encoders,
        device: &Device,
        quiet: bool,
    ) -> anyhow::Result<PreparedMultiTask> {
        let members = located
            .iter()
            .enumerate()
            .map(|(t, data)| M::prepare(&member_spec::<M>(spec, t), data, encoders, device, quiet))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pad = M::text_encoder(encoders).map(TextEncoder::pad_id);
        let counts: Vec<usize> = members.iter().map(|m| m.train.num_examples()).collect();
        let mixing = match spec
            .multitask
            .as_ref()
            .map(|run| (run.sampling, run.temperature))
        {
            None | Some((Sampling::Proportional, _)) => Mixing::Proportional,
            Some((Sampling::Uniform, _)) => Mixing::uniform(counts.len()),
            Some((Sampling::Temperature, t)) => Mixing::temperature(&counts, t),
        };
        let mut train = mixture(
            members.iter().map(|m| m.train.as_ref()).collect(),
            pad,
            mixing,
        )?;
        // A few-shot run trains on the first `shots` examples of each class.
        if let Some(transfer) = &spec.transfer {
            train = train.first_per_class(transfer.shots)?;
        }
        let val = match members
            .iter()
            .map(|m| m.val.as_deref())
            .collect::<Option<Vec<_>>>()
        {
            Some(vals) => Some(mixture(vals, pad, Mixing::Proportional)?),
            None => None,
        };
        Ok(PreparedMultiTask {
            members,
            train,
            val,
        })
    }

    fn run(
        spec: &RunSpec,
        task: &PreparedMultiTask,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished> {
        if let Some(transfer) = &spec.transfer {
            return few_shot(spec, transfer, task, ctx, progress);
        }
        let run = tasks_of(spec);
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), ctx.device);
        let backbone = ctx.backbone.model.boxed();
        let mut model = match run.heads {
            Heads::PerTask => {
                let classes: Vec<usize> = run.tasks.iter().map(|t| t.num_classes).collect();
                PeftModel::new_per_task(&spec.method, &spec.params, backbone, &classes, &init)?
            }
            Heads::Shared => PeftModel::new(
                &spec.method,
                &spec.params,
                backbone,
                spec.task.num_classes,
                &init,
            )?,
        };
        anyhow::ensure!(
            model.adaptation().calibration().is_none(),
            "method `{}` calibrates on a few training batches before training, which multi-task \
             runs do not do yet",
            spec.method
        );
        let cfg = train_config(spec);
        let outcome = train_phases(
            &mut model,
            &Classification,
            &task.train,
            task.val.as_ref().map(|v| v as &dyn BatchSource),
            &cfg,
            progress,
        )?;
        let trained = match Trained::save(spec, &model, outcome, ctx)? {
            Ok(trained) => trained,
            Err(diverged) => return Ok(diverged),
        };
        let eval_started = std::time::Instant::now();
        let mut metrics = Metrics::new();
        let mut correct = Vec::new();
        let mut accuracies = Vec::new();
        for (t, (member, prepared)) in run.tasks.iter().zip(&task.members).enumerate() {
            let source = WithTaskId {
                source: prepared.eval.as_ref(),
                task: t as u32,
            };
            let evaluation = evaluate(&model, &source, cfg.eval_batch_size)?;
            metrics.insert(
                format!("{}@{}", accuracy_metric(spec), member.name),
                evaluation.accuracy,
            );
            metrics.insert(
                format!("eval_examples@{}", member.name),
                evaluation.labels.len() as f64,
            );
            accuracies.push(evaluation.accuracy);
            correct.extend(peftbench_metrics::correct_mask(
                &evaluation.predictions,
                &evaluation.labels,
            ));
        }
        metrics.insert(
            accuracy_metric(spec),
            accuracies.iter().sum::<f64>() / accuracies.len() as f64,
        );
        if let Some((score, chance)) = allocation_recovery(&model, run)? {
            metrics.insert("allocation_recovery".into(), score);
            metrics.insert("allocation_recovery_chance".into(), chance);
        }
        if let Some(cosine) = gradient_cosine(&model, task, cfg.batch_size)? {
            metrics.insert("gradient_cosine".into(), cosine);
        }
        let eval_seconds = eval_started.elapsed().as_secs_f64();
        // Member by member, in the run's task order (the report splits it by
        // `eval_examples@<task>`).
        let eval_correct = Some(EvalCorrect::from_bools(&correct));
        Ok(Finished::completed(
            &trained,
            ctx,
            metrics,
            eval_seconds,
            eval_correct,
        ))
    }

    /// The plain mean of the members' accuracies.
    fn primary_metric(spec: &RunSpec) -> String {
        accuracy_metric(spec)
    }
}

/// A few-shot run on a held-out task: a fresh adapter of the method, or the multi-task run's
/// adapter carried over ([`Adaptation::transfer`](peftbench_methods::Adaptation::transfer)), with
/// a fresh head, trained on the task's few examples and evaluated on its evaluation split.
fn few_shot(
    spec: &RunSpec,
    transfer: &TransferRun,
    task: &PreparedMultiTask,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<Finished> {
    let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), ctx.device);
    let backbone = ctx.backbone.model.boxed();
    let num_classes = spec.task.num_classes;
    let mut model = match (transfer.mode, &transfer.source) {
        (TransferMode::Fresh, _) => {
            PeftModel::new(&spec.method, &spec.params, backbone, num_classes, &init)?
        }
        (mode, Some(source)) => {
            let dir = ctx.store.artifact_dir(source);
            anyhow::ensure!(
                ctx.store
                    .get(source)?
                    .is_some_and(|r| r.status == RunStatus::Completed),
                "the multi-task run `{source}` this run starts from has not completed (its \
                 record is missing, failed or diverged)"
            );
            let mut model = PeftModel::from_adapter(&dir, backbone)?;
            let transfer = match mode {
                TransferMode::Routing => Transfer::Routing,
                _ => Transfer::AverageSkills,
            };
            model.transfer(transfer, num_classes, &init)?;
            model
        }
        (mode, None) => anyhow::bail!("a `{}` run needs the run it starts from", mode.name()),
    };
    let cfg = train_config(spec);
    let outcome = train_phases(
        &mut model,
        &Classification,
        &task.train,
        None,
        &cfg,
        progress,
    )?;
    let trained = match Trained::save(spec, &model, outcome, ctx)? {
        Ok(trained) => trained,
        Err(diverged) => return Ok(diverged),
    };
    let eval_started = std::time::Instant::now();
    let evaluation = evaluate(&model, task.members[0].eval.as_ref(), cfg.eval_batch_size)?;
    let mut metrics = Metrics::new();
    metrics.insert(accuracy_metric(spec), evaluation.accuracy);
    metrics.insert("train_examples".into(), task.train.num_examples() as f64);
    let eval_correct = Some(EvalCorrect::from_bools(&peftbench_metrics::correct_mask(
        &evaluation.predictions,
        &evaluation.labels,
    )));
    let eval_seconds = eval_started.elapsed().as_secs_f64();
    Ok(Finished::completed(
        &trained,
        ctx,
        metrics,
        eval_seconds,
        eval_correct,
    ))
}

/// For routing methods on generated `skills` tasks, whose true task-to-skill matrix is known:
/// the fraction of tasks whose two most-weighted learned skills are their two true skills, under
/// the best naming of learned skills by true ones ([`peftbench_metrics::allocation_recovery`]);
/// beside it, the mean score of [`CHANCE_DRAWS`] allocations drawn uniformly at random (seeded),
/// which the best naming lifts well above zero.
fn allocation_recovery(
    model: &PeftModel,
    run: &MultiTaskRun,
) -> anyhow::Result<Option<(f64, f64)>> {
    use peftbench_data_vision::scenes::Skill;
    let Some(allocation) = model.adaptation().task_allocation()? else {
        return Ok(None);
    };
    let truth: Option<Vec<Vec<usize>>> = run
        .tasks
        .iter()
        .map(|t| {
            t.skills
                .as_ref()?
                .iter()
                .map(|name| {
                    Skill::ALL
                        .iter()
                        .position(|s| Some(*s) == Skill::from_name(name))
                })
                .collect()
        })
        .collect();
    let Some(truth) = truth else {
        return Ok(None);
    };
    let k = Skill::ALL.len();
    let Some(score) = peftbench_metrics::allocation_recovery(&allocation, &truth, k) else {
        return Ok(None);
    };
    let mut rng = ChaCha8Rng::seed_from_u64(CHANCE_DRAWS as u64);
    let skills = allocation[0].len();
    let chance = (0..CHANCE_DRAWS)
        .map(|_| {
            let random: Vec<Vec<f64>> = (0..allocation.len())
                .map(|_| (0..skills).map(|_| rng.random::<f64>()).collect())
                .collect();
            peftbench_metrics::allocation_recovery(&random, &truth, k).unwrap_or(0.0)
        })
        .sum::<f64>()
        / CHANCE_DRAWS as f64;
    Ok(Some((score, chance)))
}

/// Random allocations whose mean recovery score is the chance level.
const CHANCE_DRAWS: usize = 200;

/// The mean, over pairs of tasks, of the cosine between their training-loss gradients with
/// respect to the method's own parameters (heads excluded: they are per task), each taken on the
/// first training batch of the task in file order with the trained model in evaluation mode.
/// `None` when the method has no parameters of its own (a linear probe).
fn gradient_cosine(
    model: &PeftModel,
    task: &PreparedMultiTask,
    batch_size: usize,
) -> anyhow::Result<Option<f64>> {
    let shared = model.adaptation().trainable();
    if shared.is_empty() {
        return Ok(None);
    }
    let mut gradients: Vec<Vec<f32>> = Vec::new();
    for (t, member) in task.members.iter().enumerate() {
        let source = WithTaskId {
            source: member.train.as_ref(),
            task: t as u32,
        };
        let Some(batch) = source.batches(batch_size, None).next() else {
            continue;
        };
        let batch: Batch = batch?;
        let ctx = ForwardCtx::eval().with_task_ids(batch.task_ids.clone());
        let logits = model.batch_logits(&batch, &ctx)?;
        let grads = masked_cross_entropy(&logits, &batch.labels, 0.0)?.backward()?;
        let mut flat = Vec::new();
        for p in shared.iter() {
            match grads.get(p.var.as_tensor()) {
                Some(g) => flat.extend(g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
                None => flat.extend(std::iter::repeat_n(0.0, p.var.elem_count())),
            }
        }
        gradients.push(flat);
    }
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for i in 0..gradients.len() {
        for j in i + 1..gradients.len() {
            let dot: f64 = gradients[i]
                .iter()
                .zip(&gradients[j])
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let norm = |g: &[f32]| g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            let denominator = norm(&gradients[i]) * norm(&gradients[j]);
            if denominator > 0.0 {
                sum += dot / denominator;
                pairs += 1;
            }
        }
    }
    Ok((pairs > 0).then(|| sum / pairs as f64))
}
