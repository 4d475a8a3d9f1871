//! Continual learning's class-incremental protocol: a task's classes, in a fixed order, arrive in
//! stages; a learner learns each stage from the new classes' training data (exemplar-free, or
//! with a few stored examples per earlier class) and is tested after every stage on the test data
//! of every class seen so far. The accuracy matrix this fills is scored by
//! [`peftbench_metrics::continual`] (curve, average incremental accuracy, last accuracy,
//! forgetting).
//!
//! One module per learner, behind [`StageLearner`]:
//! - [`finetune`]: sequential fine-tuning of any registry method with a classifier over the
//!   classes seen so far (the forgetting lower bound);
//! - [`simplecil`]: prototypes of the frozen backbone's features, no training;
//! - [`aper`]: the method adapted on the first stage only, then prototypes of the pretrained and
//!   adapted features together;
//! - [`l2p`]: L2P's pool of prompts chosen per image by key-query matching, the backbone frozen;
//! - [`lae`]: LAE's online expert and its moving-average offline expert, ensembled;
//! - [`mora`]: MoRA's rank-1 LoRA experts, self-activated, sparse, added stage by stage;
//! - [`mos`]: MOS's adapter per stage, merged, aligned and retrieved per image;
//! - [`sema`]: SEMA's adapters added where a descriptor detects a shift, mixed by a router.
//!
//! A run is resumable stage by stage: after each stage the learner's state and the matrix so far
//! are written under the run's artifact folder, and a rerun of a killed sweep continues after the
//! last finished stage. Every stage's randomness derives from the run seed and the stage index,
//! and each stage starts a fresh optimizer, so the resumed run ends bit-identical.

pub(crate) mod aper;
pub(crate) mod finetune;
pub(crate) mod l2p;
pub(crate) mod lae;
pub(crate) mod mora;
pub(crate) mod mos;
pub(crate) mod sema;
pub(crate) mod simplecil;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use peftbench_backbones::NoHooks;
use peftbench_core::ForwardCtx;
use peftbench_data_vision::{ImageDataset, Preprocess};
use peftbench_metrics::continual::{pilot_class_order, stages, IncrementalScores};
use peftbench_records::{EpochLog, EvalCorrect, RunStatus};
use peftbench_suite::{ContinualRun, Learner, RunSpec};
use peftbench_train::{
    derive_seed, evaluate, masked_cross_entropy, train, BatchSource, TrainConfig, TrainModel,
    TrainOutcome, TrainReport,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::{batch_source, load_task_data};
use crate::run::{logs, train_config, Finished, RunContext};
use crate::Paths;

/// A task's data as a class-incremental stream: labels renumbered to their class's position in
/// the stream's order, so stage `t` holds the classes `stages[t]`.
#[derive(Clone)]
pub(crate) struct Stream {
    pub train: Arc<ImageDataset>,
    pub eval: Arc<ImageDataset>,
    /// `order[position]` is the task's own class id at that position.
    pub order: Vec<usize>,
    pub stages: Vec<Range<usize>>,
    pub skipped: usize,
    /// The pretrained backbone's features of every image, computed on first use and shared by
    /// all runs of the task (the prototype learners read them).
    pretrained: Arc<OnceLock<PretrainedFeatures>>,
}

/// The pretrained backbone's pooled features `[examples, hidden]` of every training and test
/// image, in file order.
pub(crate) struct PretrainedFeatures {
    pub train: Tensor,
    pub eval: Tensor,
}

/// The continual section of a run (suite validation gives a class-incremental run one).
pub(crate) fn continual(spec: &RunSpec) -> &ContinualRun {
    spec.continual
        .as_ref()
        .expect("suite validation gives class-incremental runs a `continual` section")
}

impl Stream {
    /// Loads the task's training and test data and orders its classes; a class of the order
    /// without training or test images is an error naming it.
    pub fn locate(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<Stream> {
        let stream = &continual(spec).stream;
        let n = spec.task.num_classes;
        let data = load_task_data(spec, paths, quiet)?;
        let order = match (&stream.class_order, stream.shuffle_seed) {
            (Some(order), _) => order.clone(),
            (None, Some(seed)) => pilot_class_order(n, seed),
            (None, None) => (0..n).collect(),
        };
        let stages = stages(n, stream.init_classes, stream.increment)
            .map_err(|e| anyhow::anyhow!("`continual`: {e}"))?;
        let mut position = vec![0u32; n];
        for (p, &class) in order.iter().enumerate() {
            position[class] = p as u32;
        }
        let renumber = |ds: &ImageDataset, split: &str| -> anyhow::Result<ImageDataset> {
            let mut counts = vec![0usize; n];
            for &l in &ds.labels {
                counts[l as usize] += 1;
            }
            if let Some(class) = (0..n).find(|&c| counts[c] == 0) {
                let stage = stages
                    .iter()
                    .position(|s| s.contains(&(position[class] as usize)))
                    .unwrap_or(0);
                anyhow::bail!(
                    "task `{}`: class {class} (arriving in stage {} of {}) has no {split} images \
                     in {}; every class the stream reaches needs training and test images",
                    spec.task.name,
                    stage + 1,
                    stages.len(),
                    ds.name
                );
            }
            Ok(ImageDataset {
                labels: ds.labels.iter().map(|&l| position[l as usize]).collect(),
                ..ds.clone()
            })
        };
        Ok(Stream {
            train: Arc::new(renumber(&data.train, "training")?),
            eval: Arc::new(renumber(&data.eval, "test")?),
            order,
            stages,
            skipped: data.skipped,
            pretrained: Arc::default(),
        })
    }

    /// The pretrained backbone's features of every image ([`PretrainedFeatures`]), computed with
    /// `stage`'s backbone and preprocessing the first time a run asks.
    pub fn pretrained_features(
        &self,
        stage: &StageContext<'_, '_>,
    ) -> anyhow::Result<&PretrainedFeatures> {
        if let Some(features) = self.pretrained.get() {
            return Ok(features);
        }
        let backbone = stage.ctx.backbone.model.boxed();
        let frozen = |x: &Tensor| backbone.forward_features(x, &NoHooks, &ForwardCtx::eval());
        let (train, _) = features_of(stage, &self.train, &frozen)?;
        let (eval, _) = features_of(stage, &self.eval, &frozen)?;
        // A sweep runs one run at a time, so nobody else filled the cell meanwhile.
        let _ = self.pretrained.set(PretrainedFeatures { train, eval });
        Ok(self.pretrained.get().expect("set above"))
    }

    /// Positions in `ds` of the examples of stage `t`'s classes, in file order (the order of
    /// [`Stream::stage_train`] without memory and of [`Stream::stage_eval`]).
    pub fn stage_rows(&self, ds: &ImageDataset, t: usize) -> Vec<u32> {
        let classes = self.stages[t].clone();
        (0..ds.labels.len() as u32)
            .filter(|&i| classes.contains(&(ds.labels[i as usize] as usize)))
            .collect()
    }

    /// The examples of `ds` that `keep(index, class position)`, in file order.
    fn subset(ds: &ImageDataset, keep: impl Fn(usize, u32) -> bool) -> Arc<ImageDataset> {
        let (items, labels) = ds
            .items
            .iter()
            .zip(&ds.labels)
            .enumerate()
            .filter(|(i, (_, &l))| keep(*i, l))
            .map(|(_, (item, &l))| (item.clone(), l))
            .unzip();
        Arc::new(ImageDataset {
            name: ds.name.clone(),
            items,
            labels,
            num_classes: ds.num_classes,
        })
    }

    /// Stage `t`'s new classes' training examples, with the `memory` examples of earlier classes.
    pub fn stage_train(&self, t: usize, memory: &[usize]) -> Arc<ImageDataset> {
        let classes = self.stages[t].clone();
        Self::subset(&self.train, |i, l| {
            classes.contains(&(l as usize)) || memory.binary_search(&i).is_ok()
        })
    }

    /// The test examples of stage `j`'s classes.
    pub fn stage_eval(&self, j: usize) -> Arc<ImageDataset> {
        let classes = self.stages[j].clone();
        Self::subset(&self.eval, |_, l| classes.contains(&(l as usize)))
    }

    /// The replay memory after stages `0..=t`: `per_class` training examples of every class seen,
    /// drawn at random (seeded by the run and the class), sorted by index.
    pub fn memory(&self, t: usize, per_class: usize, seed: u64) -> Vec<usize> {
        if per_class == 0 {
            return Vec::new();
        }
        let mut kept = Vec::new();
        for class in 0..self.stages[t].end {
            let mut members: Vec<usize> = (0..self.train.labels.len())
                .filter(|&i| self.train.labels[i] as usize == class)
                .collect();
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(derive_seed(&[seed, MEMORY, class as u64]));
            members.shuffle(&mut rng);
            kept.extend(members.into_iter().take(per_class));
        }
        kept.sort_unstable();
        kept
    }
}

/// Purpose mixed into the memory draw's seed ("MEMO").
const MEMORY: u64 = 0x4d45_4d4f;
/// Purpose mixed into each stage's training seed ("STAG").
pub(crate) const STAGE: u64 = 0x5354_4147;

/// What a learner needs of the run besides its stream.
pub(crate) struct StageContext<'a, 'c> {
    pub spec: &'a RunSpec,
    pub ctx: &'a RunContext<'c>,
    pub preprocess: &'a Preprocess,
}

impl StageContext<'_, '_> {
    pub fn device(&self) -> &Device {
        self.ctx.device
    }

    /// Batches of `ds` through the run's preprocessing.
    pub fn source(&self, ds: &Arc<ImageDataset>) -> anyhow::Result<Box<dyn BatchSource>> {
        batch_source(ds, self.preprocess, self.ctx.device)
    }

    /// The trainer's configuration for stage `t`: the run's, its randomness drawn from the run
    /// seed and `t` (every stage starts a fresh optimizer, so a resumed stage trains the same).
    pub fn stage_config(&self, t: usize) -> TrainConfig {
        let base = train_config(self.spec);
        TrainConfig {
            seed: derive_seed(&[base.seed, STAGE, t as u64]),
            ..base
        }
    }

    /// Trains `model` on `data` as stage `t`.
    pub fn train_stage(
        &self,
        model: &dyn TrainModel,
        data: &Arc<ImageDataset>,
        t: usize,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        let source = self.source(data)?;
        let outcome = train(
            model,
            source.as_ref(),
            None,
            &self.stage_config(t),
            progress,
        )?;
        Ok(StageOutcome::from(outcome))
    }

    /// `model`'s predicted classes (argmax of its logits) of every example of `eval`.
    pub fn predictions(
        &self,
        model: &dyn TrainModel,
        eval: &Arc<ImageDataset>,
    ) -> anyhow::Result<Vec<u32>> {
        let source = self.source(eval)?;
        Ok(evaluate(model, source.as_ref(), self.spec.recipe.eval_batch_size)?.predictions)
    }
}

/// The cross-entropy of logits cut to `classes` against class-position labels (which must lie in
/// `classes`): how L2P, LAE and MoRA train a stage with the other classes' logits masked.
pub(crate) fn stage_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    classes: &Range<usize>,
    label_smoothing: f64,
) -> candle_core::Result<Tensor> {
    masked_cross_entropy(logits, &labels_within(labels, classes)?, label_smoothing)
}

/// A frozen backbone with a learner's own hooks and a classifier, reading the classes `classes`
/// (logits cut to them, the stage loss over them) and training `trainable`: how MoRA and SEMA
/// train a stage and predict.
pub(crate) struct HookedClassifier<'a> {
    pub backbone: &'a dyn peftbench_backbones::Backbone,
    pub hooks: &'a dyn peftbench_backbones::Hooks,
    pub head: &'a peftbench_methods::ClassifierHead,
    pub trainable: peftbench_core::NamedVars,
    pub classes: Range<usize>,
}

impl TrainModel for HookedClassifier<'_> {
    fn trainable(&self) -> &peftbench_core::NamedVars {
        &self.trainable
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let features = self.backbone.forward_features(input, self.hooks, ctx)?;
        self.head
            .forward(&features)?
            .narrow(1, self.classes.start, self.classes.len())
    }

    fn loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        stage_cross_entropy(logits, labels, &self.classes, label_smoothing)
    }
}

/// How one stage of training ended.
pub(crate) enum StageOutcome {
    /// Trained (the report of the stage's epochs).
    Trained(TrainReport),
    /// Nothing to train (prototype learners).
    Untrained,
    /// The loss became `loss` (NaN or infinite) at `epoch`, `step` of the stage.
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
        history: Vec<peftbench_train::EpochLog>,
    },
}

impl From<TrainOutcome> for StageOutcome {
    fn from(outcome: TrainOutcome) -> Self {
        match outcome {
            TrainOutcome::Completed(report) => StageOutcome::Trained(report),
            TrainOutcome::Diverged {
                epoch,
                step,
                loss,
                history,
            } => StageOutcome::Diverged {
                epoch,
                step,
                loss,
                history,
            },
        }
    }
}

/// Two trainings of one stage (LAE's calibration and training, MOS's stage and its classifier
/// alignment) reported as one.
pub(crate) fn joined(first: TrainReport, second: TrainReport) -> TrainReport {
    let offset = first.history.len();
    let seconds = first.train_seconds + second.train_seconds;
    let examples = first.examples_per_second * first.train_seconds
        + second.examples_per_second * second.train_seconds;
    let mut history = first.history;
    history.extend(second.history.into_iter().map(|mut log| {
        log.epoch += offset;
        log
    }));
    TrainReport {
        selected_epoch: history.len() - 1,
        history,
        train_seconds: seconds,
        examples_per_second: if seconds > 0.0 {
            examples / seconds
        } else {
            0.0
        },
        steps: first.steps + second.steps,
    }
}

/// One way of learning a class-incremental stream.
pub(crate) trait StageLearner {
    /// Learns stage `t`, whose new classes are `stream.stages[t]`, from `train` (those classes'
    /// examples plus any replay memory).
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train: &Arc<ImageDataset>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome>;

    /// Predicted class positions (below `seen`) of `eval`, the test examples of stage `j` of
    /// `stream`.
    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        stream: &Stream,
    ) -> anyhow::Result<Vec<u32>>;

    /// Everything a resumed run needs to continue after the last learned stage.
    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>>;

    /// Puts back a state [`StageLearner::state`] returned.
    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()>;

    /// Trainable and total scalars.
    fn counts(&self) -> (u64, u64);

    /// Writes the learned model into `dir`; returns the bytes written.
    fn save(&self, dir: &Path) -> anyhow::Result<u64>;

    /// What the learner measures of itself for the run's record (SEMA: adapters per block).
    fn measures(&self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
}

/// The learner of `spec`'s `learner:`.
fn learner(
    stage: &StageContext<'_, '_>,
    stream: &Stream,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<Box<dyn StageLearner>> {
    Ok(match continual(stage.spec).learner {
        Learner::Finetune => Box::new(finetune::Finetune::new(stage, stream, progress)?),
        Learner::SimpleCil => Box::new(simplecil::SimpleCil::new(stage)?),
        Learner::Aper => Box::new(aper::Aper::new(stage, stream, progress)?),
        Learner::L2p => Box::new(l2p::L2p::new(stage)?),
        Learner::Lae => Box::new(lae::Lae::new(stage, stream, progress)?),
        Learner::Mora => Box::new(mora::Mora::new(stage)?),
        Learner::Mos => Box::new(mos::Mos::new(stage, stream, progress)?),
        Learner::Sema => Box::new(sema::Sema::new(stage)?),
    })
}

/// Progress of a stream, saved after every stage (`<artifact dir>/stream/progress.json`, beside
/// the learner's state after that stage, `state-<stages>.safetensors`).
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    /// The run's configuration hash: a checkpoint of another configuration is ignored.
    config_hash: String,
    /// `acc[t][j]`: accuracy on stage `j`'s classes after stage `t`, for the finished stages.
    acc: Vec<Vec<f64>>,
    history: Vec<EpochLog>,
    train_seconds: f64,
    eval_seconds: f64,
    steps: usize,
    examples: f64,
}

fn checkpoint_dir(spec: &RunSpec, ctx: &RunContext<'_>) -> PathBuf {
    ctx.store.artifact_dir(&spec.run_id()).join("stream")
}

/// The learner state saved after `stages` finished stages.
fn state_file(dir: &Path, stages: usize) -> PathBuf {
    dir.join(format!("state-{stages}.safetensors"))
}

/// The saved progress of this configuration and the learner state of its last stage, if any.
fn load_checkpoint(
    dir: &Path,
    spec: &RunSpec,
    device: &Device,
) -> anyhow::Result<Option<(Checkpoint, BTreeMap<String, Tensor>)>> {
    let path = dir.join("progress.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let checkpoint: Checkpoint = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a stream checkpoint: {e}", path.display()))?;
    if checkpoint.config_hash != spec.config_hash() || checkpoint.acc.is_empty() {
        return Ok(None);
    }
    let state_path = state_file(dir, checkpoint.acc.len());
    let state = candle_core::safetensors::load(&state_path, device)
        .map_err(|e| anyhow::anyhow!("{}: {e}", state_path.display()))?;
    Ok(Some((checkpoint, state.into_iter().collect())))
}

/// Writes this stage's state under its own name, then the progress that names it (each by
/// renaming a finished file), then removes the earlier stages' states: a kill at any point leaves
/// a progress file whose state file is whole.
fn save_checkpoint(
    dir: &Path,
    checkpoint: &Checkpoint,
    state: &BTreeMap<String, Tensor>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stages = checkpoint.acc.len();
    let staged = dir.join("state.safetensors.tmp");
    let tensors: std::collections::HashMap<&String, Tensor> =
        state.iter().map(|(k, v)| (k, v.clone())).collect();
    candle_core::safetensors::save(&tensors, &staged)?;
    std::fs::rename(&staged, state_file(dir, stages))?;
    let staged = dir.join("progress.json.tmp");
    std::fs::write(&staged, serde_json::to_string(checkpoint)?)?;
    std::fs::rename(&staged, dir.join("progress.json"))?;
    for earlier in 1..stages {
        let _ = std::fs::remove_file(state_file(dir, earlier));
    }
    Ok(())
}

/// Accuracy of `predictions` against `labels`.
fn accuracy(predictions: &[u32], labels: &[u32]) -> f64 {
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    correct as f64 / labels.len().max(1) as f64
}

/// Runs the stream to its end (resuming a killed run after its last finished stage) and scores
/// the accuracy matrix. `stop_after` ends the run after that stage without a record (tests of
/// resumption use it).
pub(crate) fn run_stream(
    spec: &RunSpec,
    stream: &Stream,
    ctx: &RunContext<'_>,
    preprocess: &Preprocess,
    progress: &mut dyn FnMut(peftbench_train::Progress),
    stop_after: Option<usize>,
) -> anyhow::Result<Option<Finished>> {
    let stage_ctx = StageContext {
        spec,
        ctx,
        preprocess,
    };
    let mut learner = learner(&stage_ctx, stream, progress)?;
    let dir = checkpoint_dir(spec, ctx);
    let mut progress_so_far = Checkpoint {
        config_hash: spec.config_hash(),
        acc: Vec::new(),
        history: Vec::new(),
        train_seconds: 0.0,
        eval_seconds: 0.0,
        steps: 0,
        examples: 0.0,
    };
    if let Some((saved, state)) = load_checkpoint(&dir, spec, ctx.device)? {
        learner.restore(&state)?;
        progress_so_far = saved;
    }
    let memory_per_class = continual(spec).stream.memory_per_class;
    let evals: Vec<Arc<ImageDataset>> = (0..stream.stages.len())
        .map(|j| stream.stage_eval(j))
        .collect();
    let mut last_predictions = Vec::new();
    for t in progress_so_far.acc.len()..stream.stages.len() {
        let memory = if t == 0 {
            Vec::new()
        } else {
            stream.memory(t - 1, memory_per_class, spec.seed)
        };
        let train = stream.stage_train(t, &memory);
        let started = Instant::now();
        match learner.learn(&stage_ctx, t, &train, stream, progress)? {
            StageOutcome::Trained(report) => {
                let offset = progress_so_far.history.len();
                progress_so_far
                    .history
                    .extend(logs(&report.history).into_iter().map(|mut log| {
                        log.epoch += offset;
                        log
                    }));
                progress_so_far.train_seconds += report.train_seconds;
                progress_so_far.steps += report.steps;
                progress_so_far.examples += report.examples_per_second * report.train_seconds;
            }
            StageOutcome::Untrained => {
                progress_so_far.train_seconds += started.elapsed().as_secs_f64();
            }
            StageOutcome::Diverged {
                epoch,
                step,
                loss,
                history,
            } => {
                let (trainable, total) = learner.counts();
                let offset = progress_so_far.history.len();
                let mut finished =
                    Finished::diverged(&history, trainable, total, epoch + offset, step, loss);
                // The record's history: every finished stage's epochs, then this stage's.
                let mut all = progress_so_far.history;
                all.extend(finished.history.into_iter().map(|mut log| {
                    log.epoch += offset;
                    log
                }));
                finished.history = all;
                finished.train_seconds = finished.history.iter().map(|h| h.seconds).sum();
                finished.error = finished
                    .error
                    .map(|e| format!("stage {} of {}: {e}", t + 1, stream.stages.len()));
                return Ok(Some(finished));
            }
        }
        let seen = stream.stages[t].end;
        let eval_started = Instant::now();
        let mut row = Vec::with_capacity(t + 1);
        last_predictions.clear();
        for (j, eval) in evals.iter().enumerate().take(t + 1) {
            let predictions = learner.predict(&stage_ctx, j, eval, seen, stream)?;
            row.push(accuracy(&predictions, &eval.labels));
            last_predictions.push((predictions, eval.labels.clone()));
        }
        progress_so_far.eval_seconds += eval_started.elapsed().as_secs_f64();
        progress_so_far.acc.push(row);
        save_checkpoint(&dir, &progress_so_far, &learner.state()?)?;
        if stop_after == Some(t) {
            return Ok(None);
        }
    }
    // A run resumed after its last stage has no predictions in memory: predict the last stage
    // again (the learner's state is the finished one).
    if last_predictions.is_empty() {
        let seen = stream.stages.last().expect("a stream has stages").end;
        for (j, eval) in evals.iter().enumerate() {
            last_predictions.push((
                learner.predict(&stage_ctx, j, eval, seen, stream)?,
                eval.labels.clone(),
            ));
        }
    }
    let counts: Vec<usize> = evals.iter().map(|e| e.len()).collect();
    let scores = IncrementalScores::new(&progress_so_far.acc, &counts)?;
    let mut metrics = stream_metrics(stream, &progress_so_far.acc, &scores);
    metrics.extend(learner.measures());
    if stream.skipped > 0 {
        metrics.insert("skipped_examples".into(), stream.skipped as f64);
    }
    let correct: Vec<bool> = last_predictions
        .iter()
        .flat_map(|(p, l)| p.iter().zip(l).map(|(p, l)| p == l))
        .collect();
    let adapter_dir = ctx.store.artifact_dir(&spec.run_id());
    let adapter_bytes = learner.save(&adapter_dir)?;
    // The stream is finished and its model saved: a later run of this configuration starts
    // afresh rather than from these stages.
    std::fs::remove_dir_all(&dir).map_err(|e| {
        anyhow::anyhow!(
            "removing the finished stream's checkpoint {}: {e}",
            dir.display()
        )
    })?;
    let (trainable, total) = learner.counts();
    let seconds = progress_so_far.train_seconds;
    Ok(Some(Finished {
        status: RunStatus::Completed,
        metrics,
        selected_epoch: progress_so_far.history.len().checked_sub(1),
        history: progress_so_far.history,
        trainable,
        total,
        adapter_bytes: Some(adapter_bytes),
        adapter_dir: Some(
            adapter_dir
                .strip_prefix(ctx.store.root())
                .unwrap_or(&adapter_dir)
                .display()
                .to_string(),
        ),
        train_seconds: seconds,
        eval_seconds: progress_so_far.eval_seconds,
        examples_per_second: if seconds > 0.0 {
            progress_so_far.examples / seconds
        } else {
            0.0
        },
        error: None,
        eval_correct: Some(EvalCorrect::from_bools(&correct)),
    }))
}

/// Refuses a replay memory for learner `name`, which learns from each stage's own classes only.
pub(crate) fn exemplar_free(spec: &RunSpec, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        continual(spec).stream.memory_per_class == 0,
        "learner `{name}` is exemplar-free; set `continual.memory_per_class: 0`"
    );
    Ok(())
}

/// `labels` (class positions) as positions within `classes`; a label outside them is an error.
pub(crate) fn labels_within(
    labels: &Tensor,
    classes: &Range<usize>,
) -> candle_core::Result<Tensor> {
    let shifted = labels
        .to_vec1::<u32>()?
        .into_iter()
        .map(|l| {
            if classes.contains(&(l as usize)) {
                Ok(l - classes.start as u32)
            } else {
                Err(candle_core::Error::Msg(format!(
                    "label {l} is not one of this stage's classes {classes:?}"
                )))
            }
        })
        .collect::<candle_core::Result<Vec<u32>>>()?;
    let n = shifted.len();
    Tensor::from_vec(shifted, n, labels.device())
}

/// The primary metric of class-incremental runs: average incremental accuracy Ā.
pub(crate) const AVERAGE_INCREMENTAL_ACCURACY: &str = "avg_incremental_accuracy";

/// A record's measures of the stream, as fractions: Ā (the headline), A_T, forgetting (both
/// definitions), the curve by classes seen, old/new accuracy per stage and the whole matrix.
fn stream_metrics(
    stream: &Stream,
    acc: &[Vec<f64>],
    scores: &IncrementalScores,
) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    metrics.insert(AVERAGE_INCREMENTAL_ACCURACY.into(), scores.average);
    metrics.insert("last_accuracy".into(), scores.last);
    if let Some(f) = scores.forgetting {
        metrics.insert("forgetting".into(), f);
    }
    if let Some(f) = scores.forgetting_pilot {
        metrics.insert("forgetting_pilot".into(), f);
    }
    metrics.insert("stages".into(), stream.stages.len() as f64);
    for (position, class) in stream.order.iter().enumerate() {
        metrics.insert(format!("class_order@{position}"), *class as f64);
    }
    for (t, stage) in stream.stages.iter().enumerate() {
        metrics.insert(format!("accuracy@{}", stage.end), scores.curve[t]);
        metrics.insert(format!("new_accuracy@{t}"), scores.new[t]);
        if let Some(old) = scores.old[t] {
            metrics.insert(format!("old_accuracy@{t}"), old);
        }
        for (j, value) in acc[t].iter().enumerate() {
            metrics.insert(format!("acc_matrix@{t}.{j}"), *value);
        }
    }
    metrics
}

/// Rows of `features` `[N, D]` scaled to unit length.
pub(crate) fn unit_rows(features: &Tensor) -> candle_core::Result<Tensor> {
    let norms = features.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    features.broadcast_div(&(norms + 1e-12)?)
}

/// Class prototypes: the mean feature of each class position in `labels`, for positions
/// `classes` (each must have an example), as rows `[classes.len(), D]`.
pub(crate) fn class_means(
    features: &Tensor,
    labels: &[u32],
    classes: Range<usize>,
) -> anyhow::Result<Tensor> {
    let device = features.device();
    let mut rows = Vec::with_capacity(classes.len());
    for class in classes {
        let members: Vec<u32> = (0..labels.len() as u32)
            .filter(|&i| labels[i as usize] as usize == class)
            .collect();
        anyhow::ensure!(
            !members.is_empty(),
            "class {class} has no training examples"
        );
        let index = Tensor::new(members.as_slice(), device)?;
        rows.push(features.index_select(&index, 0)?.mean(0)?);
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// The most cosine-similar of the first `seen` prototypes for each row of `features`.
pub(crate) fn nearest_prototype(
    features: &Tensor,
    prototypes: &Tensor,
    seen: usize,
) -> anyhow::Result<Vec<u32>> {
    let prototypes = unit_rows(&prototypes.narrow(0, 0, seen)?)?;
    let similarity = unit_rows(features)?.matmul(&prototypes.t()?)?;
    Ok(similarity
        .argmax(D::Minus1)?
        .to_dtype(DType::U32)?
        .to_vec1()?)
}

/// Pooled features `[N, D]` and labels of `ds` from `features(pixels)`, in file order.
pub(crate) fn features_of(
    stage: &StageContext<'_, '_>,
    ds: &Arc<ImageDataset>,
    features: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> anyhow::Result<(Tensor, Vec<u32>)> {
    let source = stage.source(ds)?;
    let mut parts = Vec::new();
    let mut labels = Vec::new();
    for batch in source.batches(stage.spec.recipe.eval_batch_size, None) {
        let batch = batch?;
        parts.push(features(&batch.inputs)?.detach());
        labels.extend(batch.labels.to_vec1::<u32>()?);
    }
    anyhow::ensure!(!parts.is_empty(), "no examples to compute features for");
    Ok((Tensor::cat(&parts, 0)?.contiguous()?, labels))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use candle_core::{Device, Tensor};
    use peftbench_backbones::{Vit, VitConfig};
    use peftbench_core::SeededInit;
    use peftbench_records::{Environment, RecordStore};
    use peftbench_suite::{parse_suite, plan, PlanOptions, RunSpec};

    use super::*;
    use crate::backbone::{BackboneModel, LoadedBackbone};
    use crate::RegistryCatalog;

    /// The runs of a small generated stream: 24 object classes in 3 stages of 8, two epochs each.
    fn specs(learner: &str, method: &str, train_examples: usize) -> Vec<RunSpec> {
        let text = format!(
            r#"
name: cl-tiny
kind: class-incremental
backbone: {{ checkpoint: demo }}
data: {{ format: generated, image_size: 16, train_examples: {train_examples}, eval_examples: 48 }}
preprocess: {{ image_size: 16, interpolation: bilinear, normalization: none }}
continual: {{ increment: 8, shuffle_seed: 1993 }}
protocol: {{ train_split: train, eval_split: test, val_split: null, selection: final, on_data_error: stop }}
recipe: {{ epochs: 2, batch_size: 16, lr: 1.0e-3, warmup_epochs: 0, eval_batch_size: 64 }}
seeds: [0]
tasks: [{{ name: objects, num_classes: 24, generator: objects }}]
methods: [{{ method: {method}, learner: {learner} }}]
"#
        );
        let suite = parse_suite(&text, Path::new("cl-tiny.yaml"), &RegistryCatalog).unwrap();
        plan(&suite, &PlanOptions::default(), &RegistryCatalog).unwrap()
    }

    fn backbone() -> LoadedBackbone {
        let vit = Vit::random(
            VitConfig::new(32, 2, 2, 64, 16, 4),
            &SeededInit::new(9, &Device::Cpu),
        )
        .unwrap();
        LoadedBackbone {
            model: BackboneModel::Vit(vit),
            name: "tiny-vit".into(),
            tokenizer: None,
            mlm_head: None,
        }
    }

    /// Runs `spec`'s stream in results folder `dir`, stopping after `stop_after`; returns the
    /// record's metrics (when it ran to the end) and the number of epochs trained in this call.
    fn run(
        spec: &RunSpec,
        dir: &Path,
        stop_after: Option<usize>,
    ) -> anyhow::Result<(Option<BTreeMap<String, f64>>, usize)> {
        let stream = Stream::locate(spec, &Paths::under(dir), true).unwrap();
        run_on(spec, &stream, dir, stop_after)
    }

    /// [`run`] on a stream already located (runs of one task share it).
    fn run_on(
        spec: &RunSpec,
        stream: &Stream,
        dir: &Path,
        stop_after: Option<usize>,
    ) -> anyhow::Result<(Option<BTreeMap<String, f64>>, usize)> {
        let (finished, epochs) = finish_on(spec, stream, dir, stop_after)?;
        Ok((finished.map(|f| f.metrics), epochs))
    }

    /// [`run_on`] returning what the run produced.
    fn finish_on(
        spec: &RunSpec,
        stream: &Stream,
        dir: &Path,
        stop_after: Option<usize>,
    ) -> anyhow::Result<(Option<Finished>, usize)> {
        let paths = Paths::under(dir);
        let store = RecordStore::open(&paths.results).unwrap();
        let backbone = backbone();
        let environment = Environment::capture("cpu", BTreeMap::new());
        let ctx = RunContext {
            store: &store,
            device: &Device::Cpu,
            backbone: &backbone,
            environment: &environment,
            text_encoder: None,
            data_root: None,
            prefix_cache_budget: 0,
            data: &[],
        };
        let mut epochs = 0;
        let finished = run_stream(
            spec,
            stream,
            &ctx,
            &crate::data::preprocess(spec),
            &mut |p| {
                if p.step + 1 == p.steps_per_epoch {
                    epochs += 1;
                }
            },
            stop_after,
        )?;
        Ok((finished, epochs))
    }

    /// A run stopped after its second stage and run again continues with the third stage only,
    /// and ends with exactly the numbers of a run that was never stopped.
    #[test]
    fn a_stream_stopped_after_a_stage_resumes_bit_identical() {
        let spec = &specs("finetune", "lora", 96)[0];
        let whole = tempfile::tempdir().unwrap();
        let (straight, epochs) = run(spec, whole.path(), None).unwrap();
        assert_eq!(epochs, 3 * 2);
        let straight = straight.unwrap();

        let killed = tempfile::tempdir().unwrap();
        let (stopped, epochs) = run(spec, killed.path(), Some(1)).unwrap();
        assert!(stopped.is_none());
        assert_eq!(epochs, 2 * 2);
        // A kill after the next stage's state was written but before its progress: the stray
        // state (here garbage) is not read, the progress's own state is.
        let stream_dir = walk(&killed.path().join("results/artifacts"))
            .into_iter()
            .find(|p| p.ends_with("progress.json"))
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        std::fs::write(stream_dir.join("state-3.safetensors"), b"not a state").unwrap();
        let (resumed, epochs) = run(spec, killed.path(), None).unwrap();
        assert_eq!(epochs, 2, "only the third stage trains again");
        assert_eq!(resumed.unwrap(), straight);
        // Sequential fine-tuning forgets: the first stage's accuracy falls once others train.
        assert!(
            straight["acc_matrix@2.0"] < straight["acc_matrix@0.0"],
            "{straight:?}"
        );
        assert_eq!(straight["stages"], 3.0);
        assert_eq!(straight[AVERAGE_INCREMENTAL_ACCURACY], {
            (straight["accuracy@8"] + straight["accuracy@16"] + straight["accuracy@24"]) / 3.0
        });
    }

    /// SimpleCIL trains nothing, and its prototypes are the class means of the frozen features:
    /// the curve's first point is the nearest-mean classifier's accuracy on the first classes.
    #[test]
    fn simplecil_classifies_by_the_nearest_class_mean() {
        let spec = &specs("simplecil", "linear", 96)[0];
        let dir = tempfile::tempdir().unwrap();
        let (metrics, epochs) = run(spec, dir.path(), None).unwrap();
        let metrics = metrics.unwrap();
        assert_eq!(epochs, 0);
        for key in ["avg_incremental_accuracy", "last_accuracy", "forgetting"] {
            assert!(metrics.contains_key(key), "{key}");
        }
        let err = run(&specs("simplecil", "lora", 96)[0], dir.path(), None).unwrap_err();
        assert!(
            err.to_string().contains("give its entry `method: linear`"),
            "{err}"
        );
    }

    /// Runs `spec` (3 stages of 2 epochs) straight through, and again stopped after stage `stop`
    /// and rerun: each call trains only its own stages, and the resumed run's numbers equal the
    /// straight run's exactly. Returns the straight run's folder and what it produced.
    fn assert_resumes_bit_identically(
        spec: &RunSpec,
        stop: usize,
    ) -> (tempfile::TempDir, Finished) {
        assert_resumes(spec, stop, &|_| 2)
    }

    /// [`assert_resumes_bit_identically`] for a learner that trains `epochs(t)` epochs in stage
    /// `t` (MOS's alignment, SEMA's expansions).
    fn assert_resumes(
        spec: &RunSpec,
        stop: usize,
        epochs_of_stage: &dyn Fn(usize) -> usize,
    ) -> (tempfile::TempDir, Finished) {
        let whole = tempfile::tempdir().unwrap();
        let stream = Stream::locate(spec, &Paths::under(whole.path()), true).unwrap();
        let (straight, epochs) = finish_on(spec, &stream, whole.path(), None).unwrap();
        assert_eq!(epochs, (0..3).map(epochs_of_stage).sum::<usize>());
        let straight = straight.unwrap();
        let killed = tempfile::tempdir().unwrap();
        let (stopped, epochs) = run(spec, killed.path(), Some(stop)).unwrap();
        assert!(stopped.is_none());
        assert_eq!(epochs, (0..=stop).map(epochs_of_stage).sum::<usize>());
        let (resumed, epochs) = run(spec, killed.path(), None).unwrap();
        assert_eq!(
            epochs,
            (stop + 1..3).map(epochs_of_stage).sum::<usize>(),
            "only the stages after {stop} train again"
        );
        assert_eq!(resumed.unwrap(), straight.metrics);
        (whole, straight)
    }

    /// LAE trains every stage (the method frozen in the first epoch of the later ones, a stage of
    /// one head-only and one full epoch), resumes to the same numbers (the offline expert's
    /// moving average is part of the checkpoint) and saves both experts.
    #[test]
    fn lae_trains_each_stage_and_resumes_with_its_offline_expert() {
        let (whole, _) = assert_resumes_bit_identically(&specs("lae", "lora", 96)[0], 0);
        let saved = walk(&whole.path().join("results/artifacts"));
        assert!(
            saved
                .iter()
                .any(|p| p.ends_with("offline/adapter_model.safetensors")),
            "{saved:?}"
        );
    }

    /// L2P trains its pool stage by stage and resumes to the same numbers; it refuses a method
    /// that would change the backbone.
    #[test]
    fn l2p_trains_its_prompt_pool_and_resumes() {
        let (whole, _) = assert_resumes_bit_identically(&specs("l2p", "linear", 96)[0], 1);
        let err = run(&specs("l2p", "lora", 96)[0], whole.path(), None).unwrap_err();
        assert!(
            err.to_string().contains("give its entry `method: linear`"),
            "{err}"
        );
    }

    /// MoRA resumes to the same numbers, its experts of every finished stage restored, and ends
    /// with 4 experts per stage on each adapted projection: 2 blocks x 2 projections x 3 stages x
    /// 4 experts x (32 + 32) values, plus the classifier (32 x 24 + 24).
    #[test]
    fn mora_grows_experts_per_stage_and_resumes() {
        let (_, straight) = assert_resumes_bit_identically(&specs("mora", "linear", 96)[0], 1);
        let experts = 2 * 2 * 3 * mora::EXPERTS_PER_STAGE * (32 + 32);
        assert_eq!(straight.trainable, (experts + 32 * 24 + 24) as u64);
    }

    /// MOS trains every stage, then (after the first) aligns its classifier for
    /// [`mos::ALIGNMENT_EPOCHS`] epochs; it resumes to the same numbers (its stage adapters,
    /// prototypes and class Gaussians are in the checkpoint) and saves one adapter per stage.
    #[test]
    fn mos_keeps_an_adapter_per_stage_aligns_and_resumes() {
        let spec = &specs("mos", "adaptformer", 96)[0];
        let stage_epochs = |t: usize| if t == 0 { 2 } else { 2 + mos::ALIGNMENT_EPOCHS };
        let (whole, straight) = assert_resumes(spec, 1, &stage_epochs);
        // The adaptformer branches (2 blocks x (32·8 + 8 + 8·32 + 32)) and the classifier train;
        // three stored stage adapters come on top of the model.
        let adapter = 2 * (32 * 8 + 8 + 8 * 32 + 32);
        let classifier = 32 * 24 + 24;
        assert_eq!(straight.trainable, (adapter + classifier) as u64);
        let saved = walk(&whole.path().join("results/artifacts"));
        let stored = saved
            .iter()
            .find(|p| p.ends_with("adapters.safetensors"))
            .expect("the stage adapters are saved");
        let tensors = candle_core::safetensors::load(stored, &Device::Cpu).unwrap();
        assert_eq!(tensors.len(), 3 * 8, "three stages of 8 tensors");
        let err = run(&specs("mos", "linear", 96)[0], whole.path(), None).unwrap_err();
        assert!(err.to_string().contains("trains none besides"), "{err}");
    }

    /// SEMA adds adapters only where a block's shift score passes its threshold: with one no
    /// score reaches, nothing is added after the first stage (which then trains the classifier
    /// alone); with one every score passes, each later stage adds one adapter to every block,
    /// shallowest first, one pass each. Both resume bit-identically; the trainable count is the
    /// closed form of what was added.
    #[test]
    fn sema_expands_only_past_its_threshold_and_resumes() {
        let with_threshold = |threshold: f64| {
            let mut spec = specs("sema", "linear", 96)[0].clone();
            spec.continual.as_mut().unwrap().learner_params =
                serde_json::json!({ "threshold": threshold });
            spec
        };
        // The first stage trains the adapters, then the descriptors: two trainings of 2 epochs.
        let (_, never) = assert_resumes(&with_threshold(1e9), 1, &|t| if t == 0 { 4 } else { 2 });
        assert_eq!(never.metrics["sema_adapters_added"], 0.0);
        assert_eq!(never.metrics["sema_adapters@1"], 1.0);

        // Two blocks expand per later stage, each training its adapter and its descriptor.
        let (_, always) = assert_resumes(&with_threshold(0.0), 0, &|t| if t == 0 { 4 } else { 8 });
        assert_eq!(always.metrics["sema_adapters_added"], 4.0);
        assert_eq!(always.metrics["sema_adapters@0"], 3.0);
        assert_eq!(always.metrics["sema_adapters@1"], 3.0);
        // Per adapter: the branch (32·16 + 16 + 16·32 + 32), its router row (32 + 1) and its
        // descriptor (32 / 6 = 5 wide: 5·32 + 5 + 32·5 + 32); 2 blocks x 3 adapters; classifier.
        let per_adapter = (32 * 16 + 16 + 16 * 32 + 32) + (32 + 1) + (5 * 32 + 5 + 32 * 5 + 32);
        assert_eq!(
            always.trainable,
            (2 * 3 * per_adapter + 32 * 24 + 24) as u64
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    /// The prototype learners read the task's pretrained features, computed by the first run
    /// that needs them and reused by the next.
    #[test]
    fn pretrained_features_are_computed_once_per_task() {
        let dir = tempfile::tempdir().unwrap();
        let simplecil = &specs("simplecil", "linear", 96)[0];
        let stream = Stream::locate(simplecil, &Paths::under(dir.path()), true).unwrap();
        assert!(stream.pretrained.get().is_none());
        let (first, _) = run_on(simplecil, &stream, dir.path(), None).unwrap();
        let computed = stream.pretrained.get().expect("computed by the first run") as *const _;
        let aper = &specs("aper", "adapter", 96)[0];
        let (second, _) = run_on(aper, &stream, dir.path(), None).unwrap();
        assert!(std::ptr::eq(computed, stream.pretrained.get().unwrap()));
        assert_eq!(
            stream.pretrained.get().unwrap().train.dims()[0],
            stream.train.len()
        );
        assert!(first.is_some() && second.is_some());
    }

    /// The exemplar-free learners refuse a replay memory, before training anything.
    #[test]
    fn exemplar_free_learners_refuse_a_memory() {
        let dir = tempfile::tempdir().unwrap();
        for (learner, method) in [
            ("simplecil", "linear"),
            ("aper", "adapter"),
            ("l2p", "linear"),
            ("lae", "lora"),
            ("mora", "linear"),
            ("mos", "adaptformer"),
            ("sema", "linear"),
        ] {
            let mut spec = specs(learner, method, 96)[0].clone();
            spec.continual.as_mut().unwrap().stream.memory_per_class = 2;
            let err = run(&spec, dir.path(), None).unwrap_err().to_string();
            assert!(
                err.contains(&format!("learner `{learner}` is exemplar-free")),
                "{err}"
            );
        }
    }

    /// A loss that becomes infinite ends the run as diverged, naming the stage; nothing after
    /// it is trained or scored.
    #[test]
    fn a_diverging_stage_ends_the_run_as_diverged() {
        let mut spec = specs("finetune", "lora", 96)[0].clone();
        spec.recipe.lr = 1e30;
        let dir = tempfile::tempdir().unwrap();
        let stream = Stream::locate(&spec, &Paths::under(dir.path()), true).unwrap();
        let (finished, _) = finish_on(&spec, &stream, dir.path(), None).unwrap();
        let finished = finished.unwrap();
        assert_eq!(finished.status, RunStatus::Diverged);
        assert!(finished.metrics.is_empty());
        let error = finished.error.unwrap();
        assert!(
            error.starts_with("stage ") && error.contains(" of 3: loss became"),
            "{error}"
        );
    }

    #[test]
    fn class_means_and_nearest_prototype_follow_their_definitions() {
        let features = Tensor::new(
            &[[1f32, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0], [5.0, 5.0]],
            &Device::Cpu,
        )
        .unwrap();
        let labels = [1, 1, 0, 0, 2];
        let means = class_means(&features, &labels, 0..3).unwrap();
        assert_eq!(
            means.to_vec2::<f32>().unwrap(),
            [[0.0, 3.0], [2.0, 0.0], [5.0, 5.0]]
        );
        // Cosine, not distance: (10, 1) is far from (2, 0) but points its way.
        let queries = Tensor::new(&[[10f32, 1.0], [1.0, 10.0], [4.0, 4.2]], &Device::Cpu).unwrap();
        assert_eq!(nearest_prototype(&queries, &means, 3).unwrap(), [1, 0, 2]);
        // Only the classes seen compete.
        assert_eq!(nearest_prototype(&queries, &means, 2).unwrap(), [1, 0, 0]);
        assert!(class_means(&features, &labels, 0..4).is_err());
    }

    /// A class the stream reaches without training images is named; the replay memory keeps
    /// the asked number of examples of every class seen, the same for the same seed.
    #[test]
    fn streams_check_their_classes_and_draw_their_memory() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let few = &specs("finetune", "lora", 20)[0];
        let err = Stream::locate(few, &paths, true).err().unwrap().to_string();
        assert!(err.contains("has no training images"), "{err}");

        let stream = Stream::locate(&specs("finetune", "lora", 96)[0], &paths, true).unwrap();
        assert_eq!(stream.order, pilot_class_order(24, 1993));
        assert_eq!(stream.stages, vec![0..8, 8..16, 16..24]);
        let memory = stream.memory(1, 2, 7);
        assert_eq!(memory.len(), 16 * 2);
        assert_eq!(memory, stream.memory(1, 2, 7));
        assert_ne!(memory, stream.memory(1, 2, 8));
        let stage = stream.stage_train(2, &memory);
        let classes: std::collections::BTreeSet<u32> = stage.labels.iter().copied().collect();
        assert_eq!(classes, (0..24).collect());
        assert_eq!(stage.len(), 8 * 4 + 32);
    }
}
