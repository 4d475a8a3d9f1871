//! MOS (Sun, Zhou, Ye, Zhan, "MOS: Model Surgery for Pre-Trained Model-Based Class-Incremental
//! Learning", AAAI 2025; its code, `sun-hailong/AAAI25-MOS`, also PILOT's `mos`): one set of
//! adapters per stage, kept from drifting by merging, and a training-free choice of the set for
//! each test image.
//!
//! - **Adapters.** The entry's method (MOS's is AdaptFormer's parallel MLP adapter, bottleneck 16,
//!   scale 0.1: `method: adaptformer, params: { bottleneck: 16 }`) trains with the classifier on
//!   each stage's classes, logits masked to them. The method is never re-initialised: stage `t`
//!   starts from stage `t - 1`'s adapter. After each stage its values are kept as that stage's
//!   adapter `S_t`.
//! - **Training loss**: the masked cross-entropy plus [`ORTHOGONALITY_WEIGHT`] times MOS's
//!   orthogonality term: the batch's features stacked under the stored means of the earlier
//!   classes, their Gram matrix over [`ORTHOGONALITY_TEMPERATURE`] read as logits whose target is
//!   each row's own index (so features move away from the old classes' means). The classifier
//!   trains at [`HEAD_LR_FACTOR`] times the method's learning rate.
//! - **Adapter merging**: in every stage after the first, after every optimizer step,
//!   `θ ← (1 - α) θ + α · mean(S_0 … S_{t-1})`, `α` = [`MERGE_MOMENTUM`]. This is the paper's
//!   formula once per step; the reference code applies it in place inside its per-block loop (13
//!   times per step) and to the stored adapters again at test time, which reads as a side effect
//!   of the loop rather than the method.
//! - **Classifier alignment**: each class's features under its stage's adapter are summarised as
//!   a Gaussian (mean, covariance + [`COVARIANCE_RIDGE`]·I; with `learner_params: { statistics:
//!   variance }` the covariance's diagonal only, MOS's ImageNet-A setting). After every stage but the first, the
//!   classifier alone trains for [`ALIGNMENT_EPOCHS`] epochs on fresh draws from every seen
//!   class's Gaussian ([`ALIGNMENT_BATCH_FACTOR`] × the batch size per class and per batch, one
//!   batch per class per epoch), unmasked.
//! - **Self-refined retrieval** at test time: the first stage's adapter gives cosine scores
//!   against prototypes (class means of its features, MOS's frozen cosine classifier); the best
//!   class names a stage, that stage's adapter gives the classifier's logits, whose best class
//!   names a stage again, up to [`REFINE_ITERATIONS`] times or until the stage repeats. The
//!   prediction is the argmax of `softmax(logits) + softmax(cosine · stages so far)`.
//!
//! The optimizer, learning rate and schedule are the suite's recipe, for the stage and for the
//! alignment alike (MOS: SGD with a cosine schedule, lr 0.03 on CIFAR for the stage and 0.005 for
//! the alignment), so the alignment is not at MOS's lower rate; it uses plain cross-entropy
//! (no label smoothing), as MOS. Exemplar-free.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use nalgebra::DMatrix;
use peftbench_core::{ForwardCtx, NamedVars};
use peftbench_data_vision::ImageDataset;
use peftbench_methods::{ClassifierHead, PeftModel};
use peftbench_suite::ClassStatistics;
use peftbench_train::{
    cross_entropy, derive_seed, train, Batch, BatchSource, TrainConfig, TrainModel, TrainOutcome,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::finetune::{attached_model, method_params};
use super::simplecil::Prototypes;
use super::{
    continual, exemplar_free, features_of, joined, stage_cross_entropy, unit_rows, StageContext,
    StageLearner, StageOutcome, Stream,
};

/// `α` of the merge toward the mean of the earlier stages' adapters (MOS's `adapter_momentum`).
pub(crate) const MERGE_MOMENTUM: f64 = 0.1;
/// Weight of the orthogonality term in the training loss (MOS's `reg`).
pub(crate) const ORTHOGONALITY_WEIGHT: f64 = 0.1;
/// Temperature of the orthogonality term's Gram logits (MOS's code: 0.8).
pub(crate) const ORTHOGONALITY_TEMPERATURE: f64 = 0.8;
/// The classifier's learning rate relative to the method's during a stage (MOS's code: 0.1).
pub(crate) const HEAD_LR_FACTOR: f64 = 0.1;
/// Epochs of classifier alignment after every stage but the first (MOS's `crct_epochs`).
pub(crate) const ALIGNMENT_EPOCHS: usize = 30;
/// Gaussian draws per class per alignment epoch, and per alignment batch, in batch sizes (MOS's
/// code: `5 * batch_size`).
pub(crate) const ALIGNMENT_BATCH_FACTOR: usize = 5;
/// Added to every class covariance's diagonal (MOS's code: 1e-4).
pub(crate) const COVARIANCE_RIDGE: f64 = 1e-4;
/// Most rounds of self-refined retrieval (MOS's code: 4).
pub(crate) const REFINE_ITERATIONS: usize = 4;
/// Purpose mixed into the alignment's seed ("ALIG").
const ALIGNMENT: u64 = 0x414c_4947;
/// State keys of the kept stage adapters: `mos.stage_adapter.<stage>.<parameter>`.
const STAGE_ADAPTER: &str = "mos.stage_adapter.";

pub(crate) struct Mos {
    /// The adapter being trained (the method's parameters) and the classifier.
    model: PeftModel,
    /// The method's parameters of `model`, the classifier left out (views of the same variables).
    method: NamedVars,
    /// `S_k`: the method's values at the end of stage `k`.
    adapters: Vec<BTreeMap<String, Tensor>>,
    /// Class means of the first stage's adapter's features (the retrieval's cosine classifier).
    prototypes: Prototypes,
    gaussians: ClassGaussians,
    base_model: String,
}

impl Mos {
    pub fn new(
        stage: &StageContext<'_, '_>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Self> {
        exemplar_free(stage.spec, "mos")?;
        let model = attached_model(stage, stream, progress)?;
        let method = method_params(&model);
        anyhow::ensure!(
            !method.is_empty(),
            "learner `mos` keeps one adapter per stage, and method `{}` trains none besides the \
             classifier (MOS's is `adaptformer` with `bottleneck: 16`)",
            stage.spec.method
        );
        Ok(Self {
            model,
            method,
            adapters: Vec::new(),
            prototypes: Prototypes::default(),
            gaussians: ClassGaussians {
                diagonal: continual(stage.spec).mos_params().statistics
                    == ClassStatistics::Variance,
                ..ClassGaussians::default()
            },
            base_model: stage.ctx.backbone.name.clone(),
        })
    }

    /// The mean of the adapters kept so far (the merge's target).
    fn mean_adapter(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        let n = self.adapters.len() as f64;
        let mut mean = BTreeMap::new();
        for name in self.adapters[0].keys() {
            let mut sum = self.adapters[0][name].clone();
            for adapter in &self.adapters[1..] {
                sum = (sum + &adapter[name])?;
            }
            mean.insert(name.clone(), (sum / n)?);
        }
        Ok(mean)
    }

    /// `features(dataset)` with stage `k`'s adapter in place of the current one.
    fn features_with(
        &self,
        k: usize,
        stage: &StageContext<'_, '_>,
        data: &Arc<ImageDataset>,
    ) -> anyhow::Result<(Tensor, Vec<u32>)> {
        let current = self.method.tensors();
        self.method.load(&self.adapters[k])?;
        let model = &self.model;
        let features = features_of(stage, data, &|x| model.features(x, &ForwardCtx::eval()));
        self.method.load(&current)?;
        features
    }
}

/// `θ ← (1 - α) θ + α · target` for every parameter of `params`.
pub(crate) fn merge_toward(
    params: &NamedVars,
    target: &BTreeMap<String, Tensor>,
    alpha: f64,
) -> candle_core::Result<()> {
    for p in params.iter() {
        let merged = ((p.var.as_tensor() * (1.0 - alpha))? + (&target[&p.name] * alpha)?)?;
        p.var.set(&merged)?;
    }
    Ok(())
}

/// MOS's orthogonality term: `features` `[B, D]` stacked under `old_means` `[C, D]` (constants),
/// the rows' Gram matrix over the temperature as logits, each row's target its own index.
pub(crate) fn orthogonality_loss(
    features: &Tensor,
    old_means: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let rows = match old_means {
        Some(means) => Tensor::cat(&[&means.detach().to_dtype(features.dtype())?, features], 0)?,
        None => features.clone(),
    };
    let gram = (rows.matmul(&rows.t()?)? / ORTHOGONALITY_TEMPERATURE)?;
    let n = rows.dim(0)? as u32;
    cross_entropy(&gram, &Tensor::arange(0u32, n, rows.device())?, 0.0)
}

/// One stage of MOS's training: logits masked to the stage's classes, plus the orthogonality
/// term against the earlier classes' means.
struct MosStage<'m> {
    model: &'m PeftModel,
    head: Vec<String>,
    classes: Range<usize>,
    old_means: Option<Tensor>,
}

impl TrainModel for MosStage<'_> {
    fn trainable(&self) -> &NamedVars {
        self.model.trainable()
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.model
            .logits(input, ctx)?
            .narrow(1, self.classes.start, self.classes.len())
    }

    fn lr_multiplier(&self, name: &str) -> f64 {
        let factor = if self.head.iter().any(|h| h == name) {
            HEAD_LR_FACTOR
        } else {
            1.0
        };
        factor * TrainModel::lr_multiplier(self.model, name)
    }

    fn batch_loss(
        &self,
        batch: &Batch,
        ctx: &ForwardCtx,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        let features = self.model.features(&batch.inputs, ctx)?;
        let logits = self.model.head().forward(&features)?.narrow(
            1,
            self.classes.start,
            self.classes.len(),
        )?;
        let masked = stage_cross_entropy(&logits, &batch.labels, &self.classes, label_smoothing)?;
        let orthogonality = orthogonality_loss(&features, self.old_means.as_ref())?;
        masked + (orthogonality * ORTHOGONALITY_WEIGHT)?
    }
}

/// The classifier alone, on features, over the first `seen` classes (the alignment).
struct HeadOnly<'m> {
    head: &'m ClassifierHead,
    seen: usize,
}

impl TrainModel for HeadOnly<'_> {
    fn trainable(&self) -> &NamedVars {
        self.head.params()
    }

    fn logits(&self, input: &Tensor, _ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.head.forward(input)?.narrow(1, 0, self.seen)
    }
}

/// Each class's features as a Gaussian: means `[C, D]` and the Cholesky factors `[C, D, D]` of
/// the covariances (ridge added), `L Lᵀ = Σ`, factored once in f64 when the class arrives.
#[derive(Default)]
pub(crate) struct ClassGaussians {
    means: Option<Tensor>,
    factors: Option<Tensor>,
    /// Keep only the covariance's diagonal (MOS's `variance` statistics).
    diagonal: bool,
}

const MEANS: &str = "gaussians.means";
const FACTORS: &str = "gaussians.cholesky_factors";

impl ClassGaussians {
    /// Adds the Gaussians of `classes` from `features` `[N, D]` labelled `labels` (the covariance
    /// with an `n - 1` denominator, as `torch.cov`, its diagonal only when `diagonal`, plus the
    /// ridge).
    pub fn add(
        &mut self,
        features: &Tensor,
        labels: &[u32],
        classes: Range<usize>,
    ) -> anyhow::Result<()> {
        let rows = features
            .to_dtype(candle_core::DType::F64)?
            .to_vec2::<f64>()?;
        let dim = features.dim(1)?;
        let mut means = Vec::new();
        let mut factors = Vec::new();
        for class in classes {
            let members: Vec<&Vec<f64>> = rows
                .iter()
                .zip(labels)
                .filter(|(_, &l)| l as usize == class)
                .map(|(r, _)| r)
                .collect();
            anyhow::ensure!(
                !members.is_empty(),
                "class {class} has no training examples"
            );
            let x = DMatrix::from_fn(members.len(), dim, |i, j| members[i][j]);
            let mean = x.row_mean();
            let centred = DMatrix::from_fn(x.nrows(), dim, |i, j| x[(i, j)] - mean[j]);
            let denominator = (x.nrows().max(2) - 1) as f64;
            let mut covariance = centred.transpose() * &centred / denominator;
            if self.diagonal {
                covariance = DMatrix::from_diagonal(&covariance.diagonal());
            }
            covariance += DMatrix::identity(dim, dim) * COVARIANCE_RIDGE;
            let factor = covariance
                .cholesky()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the feature covariance of class {class} is not positive definite"
                    )
                })?
                .l();
            means.extend(mean.iter().map(|&v| v as f32));
            // Row-major: nalgebra stores columns, so read the transpose's.
            factors.extend(factor.transpose().iter().map(|&v| v as f32));
        }
        let n = means.len() / dim;
        let device = features.device();
        let means = Tensor::from_vec(means, (n, dim), device)?;
        let factors = Tensor::from_vec(factors, (n, dim, dim), device)?;
        self.means = Some(append(self.means.take(), means)?);
        self.factors = Some(append(self.factors.take(), factors)?);
        Ok(())
    }

    /// The means of the first `classes` classes.
    pub fn means(&self, classes: usize) -> anyhow::Result<Option<Tensor>> {
        Ok(match (&self.means, classes) {
            (_, 0) | (None, _) => None,
            (Some(means), n) => Some(means.narrow(0, 0, n)?),
        })
    }

    /// Draws from the first `classes` Gaussians, `per_class` of each per epoch.
    fn sampler(&self, classes: usize, per_class: usize) -> anyhow::Result<GaussianDraws> {
        let (Some(means), Some(factors)) = (&self.means, &self.factors) else {
            anyhow::bail!("no class statistics before the first stage");
        };
        Ok(GaussianDraws {
            means: means.narrow(0, 0, classes)?,
            factors: factors.narrow(0, 0, classes)?,
            per_class,
        })
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        let mut state = BTreeMap::new();
        if let (Some(m), Some(f)) = (&self.means, &self.factors) {
            state.insert(MEANS.to_string(), m.clone());
            state.insert(FACTORS.to_string(), f.clone());
        }
        state
    }

    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        let get = |key: &str| {
            state
                .get(key)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the checkpoint holds no `{key}`"))
        };
        self.means = Some(get(MEANS)?);
        self.factors = Some(get(FACTORS)?);
        Ok(())
    }
}

fn append(old: Option<Tensor>, new: Tensor) -> candle_core::Result<Tensor> {
    match old {
        None => Ok(new),
        Some(old) => Tensor::cat(&[&old, &new], 0),
    }
}

/// Fresh draws from class Gaussians each epoch: `per_class` of every class, `mean + L ε` with
/// `ε` standard normal from the epoch's seed, shuffled, as batches of features `[B, D]` (the
/// alignment's data).
struct GaussianDraws {
    /// `[C, D]`.
    means: Tensor,
    /// `[C, D, D]` lower-triangular.
    factors: Tensor,
    per_class: usize,
}

impl GaussianDraws {
    fn draw(&self, seed: u64) -> anyhow::Result<(Tensor, Vec<u32>)> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (classes, dim) = self.means.dims2()?;
        let device = self.means.device();
        let mut parts = Vec::with_capacity(classes);
        for class in 0..classes {
            let noise: Vec<f32> = (0..self.per_class * dim)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            let noise = Tensor::from_vec(noise, (self.per_class, dim), device)?;
            let factor = self.factors.get(class)?;
            parts.push(
                noise
                    .matmul(&factor.t()?)?
                    .broadcast_add(&self.means.get(class)?)?,
            );
        }
        let mut order: Vec<u32> = (0..(classes * self.per_class) as u32).collect();
        order.shuffle(&mut rng);
        let draws =
            Tensor::cat(&parts, 0)?.index_select(&Tensor::new(order.as_slice(), device)?, 0)?;
        let labels = order.iter().map(|&i| i / self.per_class as u32).collect();
        Ok((draws, labels))
    }
}

impl BatchSource for GaussianDraws {
    fn num_examples(&self) -> usize {
        self.means.dim(0).unwrap_or(0) * self.per_class
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let (draws, labels) = match self.draw(shuffle_seed.unwrap_or(0)) {
            Ok(drawn) => drawn,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let n = labels.len();
        Box::new((0..n).step_by(batch_size.max(1)).map(move |start| {
            let len = batch_size.min(n - start);
            Ok(Batch::new(
                draws.narrow(0, start, len)?,
                Tensor::new(&labels[start..start + len], draws.device())?,
            ))
        }))
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

fn softmax(row: &[f32], scale: f32) -> Vec<f32> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
    let exp: Vec<f32> = row.iter().map(|&v| (v * scale - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// MOS's prediction for one image from the first adapter's cosine scores and each stage's
/// adapter's logits (`logits[k]`, over the classes seen), `stage_of[class]` the stage that
/// brought the class: self-refined retrieval, then the ensemble.
pub(crate) fn refined_prediction(cosine: &[f32], logits: &[&[f32]], stage_of: &[usize]) -> usize {
    let mut k = stage_of[argmax(cosine)];
    let mut rounds = 0;
    let chosen = loop {
        rounds += 1;
        let z = logits[k];
        let next = stage_of[argmax(z)];
        if rounds >= REFINE_ITERATIONS || next == k {
            break z;
        }
        k = next;
    };
    let stages = logits.len() as f32;
    let ensemble: Vec<f32> = softmax(chosen, 1.0)
        .into_iter()
        .zip(softmax(cosine, stages))
        .map(|(a, b)| a + b)
        .collect();
    argmax(&ensemble)
}

impl StageLearner for Mos {
    fn learn(
        &mut self,
        stage: &StageContext<'_, '_>,
        t: usize,
        train_data: &Arc<ImageDataset>,
        stream: &Stream,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<StageOutcome> {
        let classes = stream.stages[t].clone();
        let cfg = stage.stage_config(t);
        let target = if t > 0 {
            Some(self.mean_adapter()?)
        } else {
            None
        };
        let trainee = MosStage {
            model: &self.model,
            head: self
                .model
                .head()
                .params()
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            classes: classes.clone(),
            old_means: self.gaussians.means(classes.start)?,
        };
        let source = stage.source(train_data)?;
        let mut merge_error = None;
        let method = &self.method;
        let outcome = train(&trainee, source.as_ref(), None, &cfg, &mut |p| {
            if let (Some(target), None) = (&target, &merge_error) {
                merge_error = merge_toward(method, target, MERGE_MOMENTUM).err();
            }
            progress(p);
        })?;
        if let Some(e) = merge_error {
            return Err(e.into());
        }
        let report = match outcome {
            TrainOutcome::Completed(report) => report,
            diverged => return Ok(diverged.into()),
        };
        self.adapters.push(self.method.tensors());

        // The new classes' statistics under their own adapter, their prototypes under the first.
        let new_classes = stream.stage_train(t, &[]);
        let model = &self.model;
        let (features, labels) = features_of(stage, &new_classes, &|x| {
            model.features(x, &ForwardCtx::eval())
        })?;
        self.gaussians.add(&features, &labels, classes.clone())?;
        let (first, labels) = if t == 0 {
            (features, labels)
        } else {
            self.features_with(0, stage, &new_classes)?
        };
        self.prototypes.add(&first, &labels, classes.clone())?;
        if t == 0 {
            return Ok(StageOutcome::Trained(report));
        }

        let per_class = ALIGNMENT_BATCH_FACTOR * cfg.batch_size;
        let draws = self.gaussians.sampler(classes.end, per_class)?;
        let alignment = TrainConfig {
            epochs: ALIGNMENT_EPOCHS,
            batch_size: per_class,
            warmup_epochs: 0,
            label_smoothing: 0.0,
            seed: derive_seed(&[cfg.seed, ALIGNMENT]),
            ..cfg
        };
        let head = HeadOnly {
            head: self.model.head(),
            seen: classes.end,
        };
        Ok(match train(&head, &draws, None, &alignment, progress)? {
            TrainOutcome::Completed(aligned) => {
                // Throughput counts the stage's images: the alignment's draws add time only.
                let images = report.examples_per_second * report.train_seconds;
                let mut stage = joined(report, aligned);
                stage.examples_per_second = if stage.train_seconds > 0.0 {
                    images / stage.train_seconds
                } else {
                    0.0
                };
                StageOutcome::Trained(stage)
            }
            diverged => diverged.into(),
        })
    }

    fn predict(
        &mut self,
        stage: &StageContext<'_, '_>,
        _j: usize,
        eval: &Arc<ImageDataset>,
        seen: usize,
        stream: &Stream,
    ) -> anyhow::Result<Vec<u32>> {
        let head = self.model.head();
        let mut logits = Vec::with_capacity(self.adapters.len());
        let mut first = None;
        for k in 0..self.adapters.len() {
            let (features, _) = self.features_with(k, stage, eval)?;
            logits.push(
                head.forward(&features)?
                    .narrow(1, 0, seen)?
                    .to_vec2::<f32>()?,
            );
            if k == 0 {
                first = Some(features);
            }
        }
        let first = first.ok_or_else(|| anyhow::anyhow!("no adapter before the first stage"))?;
        let prototypes = self
            .prototypes
            .rows()
            .ok_or_else(|| anyhow::anyhow!("no prototypes before the first stage"))?
            .narrow(0, 0, seen)?;
        let cosine = unit_rows(&first)?
            .matmul(&unit_rows(&prototypes)?.t()?)?
            .to_vec2::<f32>()?;
        let stage_of: Vec<usize> = (0..seen)
            .map(|c| {
                stream
                    .stages
                    .iter()
                    .position(|s| s.contains(&c))
                    .expect("every class is in a stage")
            })
            .collect();
        Ok((0..cosine.len())
            .map(|i| {
                let per_adapter: Vec<&[f32]> = logits.iter().map(|l| l[i].as_slice()).collect();
                refined_prediction(&cosine[i], &per_adapter, &stage_of) as u32
            })
            .collect())
    }

    fn state(&self) -> anyhow::Result<BTreeMap<String, Tensor>> {
        let mut state = self.model.trainable().tensors();
        for (k, adapter) in self.adapters.iter().enumerate() {
            for (name, tensor) in adapter {
                state.insert(format!("{STAGE_ADAPTER}{k}.{name}"), tensor.clone());
            }
        }
        state.extend(self.prototypes.state());
        state.extend(self.gaussians.state());
        Ok(state)
    }

    fn restore(&mut self, state: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        self.model.trainable().load(state)?;
        let mut adapters: BTreeMap<usize, BTreeMap<String, Tensor>> = BTreeMap::new();
        for (key, tensor) in state {
            let Some(rest) = key.strip_prefix(STAGE_ADAPTER) else {
                continue;
            };
            let (k, name) = rest
                .split_once('.')
                .ok_or_else(|| anyhow::anyhow!("malformed checkpoint key `{key}`"))?;
            let k: usize = k
                .parse()
                .map_err(|_| anyhow::anyhow!("malformed checkpoint key `{key}`"))?;
            adapters
                .entry(k)
                .or_default()
                .insert(name.to_string(), tensor.clone());
        }
        self.adapters = adapters.into_values().collect();
        self.prototypes.restore(state)?;
        self.gaussians.restore(state)
    }

    /// What trains (the current adapter and the classifier); the total adds the stored adapters
    /// of the earlier stages to the model (the last stage's is the current one).
    fn counts(&self) -> (u64, u64) {
        let stored = self.method.count() * self.adapters.len().saturating_sub(1);
        (
            self.model.trainable_count() as u64,
            (self.model.total_count() + stored) as u64,
        )
    }

    /// The current adapter with the classifier in `dir`, every stage's adapter in
    /// `dir/adapters.safetensors` (`<stage>.<name>`), the prototypes beside them.
    fn save(&self, dir: &Path) -> anyhow::Result<u64> {
        let mut bytes = self.model.save(dir, &self.base_model)?;
        let path = dir.join("adapters.safetensors");
        let tensors: std::collections::HashMap<String, Tensor> = self
            .adapters
            .iter()
            .enumerate()
            .flat_map(|(k, a)| a.iter().map(move |(n, t)| (format!("{k}.{n}"), t.clone())))
            .collect();
        candle_core::safetensors::save(&tensors, &path)?;
        bytes += std::fs::metadata(&path)?.len();
        Ok(bytes + self.prototypes.save(dir)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    /// Two merge steps follow `θ ← (1 - α) θ + α · target`, parameter by parameter.
    #[test]
    fn the_merge_pulls_the_adapter_toward_the_mean_of_the_earlier_ones() {
        let mut params = NamedVars::default();
        let w = Var::new(&[1.0f32, -3.0], &Device::Cpu).unwrap();
        params.push("w", w.clone());
        // The mean of two stored adapters.
        let s0 = BTreeMap::from([(
            "w".to_string(),
            Tensor::new(&[0.0f32, 2.0], &Device::Cpu).unwrap(),
        )]);
        let s1 = BTreeMap::from([(
            "w".to_string(),
            Tensor::new(&[4.0f32, 0.0], &Device::Cpu).unwrap(),
        )]);
        let target = BTreeMap::from([(
            "w".to_string(),
            ((&s0["w"] + &s1["w"]).unwrap() / 2.0).unwrap(),
        )]);
        let a = 0.1;
        merge_toward(&params, &target, a).unwrap();
        merge_toward(&params, &target, a).unwrap();
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for (i, (start, mean)) in [(1.0f64, 2.0f64), (-3.0, 1.0)].into_iter().enumerate() {
            let once = (1.0 - a) * start + a * mean;
            let twice = (1.0 - a) * once + a * mean;
            assert!((f64::from(got[i]) - twice).abs() < 1e-6, "{got:?}");
        }
    }

    /// `L Lᵀ` of each stored factor, `[C, D, D]` as nested rows.
    fn covariances_of(gaussians: &ClassGaussians) -> Vec<Vec<Vec<f32>>> {
        let factors = gaussians.factors.as_ref().unwrap();
        (0..factors.dim(0).unwrap())
            .map(|c| {
                let l = factors.get(c).unwrap();
                l.matmul(&l.t().unwrap()).unwrap().to_vec2::<f32>().unwrap()
            })
            .collect()
    }

    fn assert_close(got: &[Vec<f32>], want: &[[f32; 2]; 2]) {
        for (row, want_row) in got.iter().zip(want) {
            for (g, w) in row.iter().zip(want_row) {
                assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
            }
        }
    }

    /// Means and covariances as `torch.cov` (n - 1) plus the ridge, kept as Cholesky factors
    /// (lower-triangular, `L Lᵀ` the covariance); the variance setting keeps the diagonal. Worked
    /// by hand: rows (1, 2), (3, 6), (5, 7) have mean (3, 5) and covariance [[4, 5], [5, 7]].
    #[test]
    fn class_gaussians_hold_means_and_covariances() {
        let features = Tensor::new(
            &[[1f32, 2.0], [9.0, 9.0], [3.0, 6.0], [5.0, 7.0]],
            &Device::Cpu,
        )
        .unwrap();
        let labels = [1, 0, 1, 1];
        let r = COVARIANCE_RIDGE as f32;
        let mut full = ClassGaussians::default();
        full.add(&features, &labels, 0..2).unwrap();
        assert_eq!(
            full.means.as_ref().unwrap().to_vec2::<f32>().unwrap(),
            [[9.0, 9.0], [3.0, 5.0]]
        );
        let factor = full
            .factors
            .as_ref()
            .unwrap()
            .get(1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(factor[0][1], 0.0, "lower-triangular: {factor:?}");
        let covariances = covariances_of(&full);
        // A class of one example has no spread: the ridge alone.
        assert_close(&covariances[0], &[[r, 0.0], [0.0, r]]);
        assert_close(&covariances[1], &[[4.0 + r, 5.0], [5.0, 7.0 + r]]);
        let mut diagonal = ClassGaussians {
            diagonal: true,
            ..ClassGaussians::default()
        };
        diagonal.add(&features, &labels, 0..2).unwrap();
        assert_close(
            &covariances_of(&diagonal)[1],
            &[[4.0 + r, 0.0], [0.0, 7.0 + r]],
        );
        assert_eq!(full.means(1).unwrap().unwrap().dims(), [1, 2]);
        assert!(full.means(0).unwrap().is_none());
    }

    /// The alignment's draws follow their class's Gaussian: over many draws, the sample mean and
    /// covariance approach the stored ones; the same seed draws the same batches.
    #[test]
    fn alignment_draws_follow_the_class_gaussians() {
        let mut gaussians = ClassGaussians::default();
        let features = Tensor::new(
            &[[1f32, 2.0], [3.0, 6.0], [5.0, 7.0], [-1.0, 0.0], [1.0, 0.5]],
            &Device::Cpu,
        )
        .unwrap();
        gaussians.add(&features, &[0, 0, 0, 1, 1], 0..2).unwrap();
        let draws = gaussians.sampler(2, 20_000).unwrap();
        assert_eq!(draws.num_examples(), 40_000);
        let mut rows: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
        let mut first_batch = None;
        for batch in draws.batches(1000, Some(7)) {
            let batch = batch.unwrap();
            let x = batch
                .inputs
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap();
            let labels = batch.labels.to_vec1::<u32>().unwrap();
            first_batch.get_or_insert_with(|| labels.clone());
            for (row, label) in x.into_iter().zip(labels) {
                rows[label as usize].extend(row);
            }
        }
        let first_again = draws.batches(1000, Some(7)).next().unwrap().unwrap();
        assert_eq!(
            first_again.labels.to_vec1::<u32>().unwrap(),
            first_batch.unwrap()
        );
        let class0 = DMatrix::from_row_slice(rows[0].len() / 2, 2, &rows[0]);
        let mean = class0.row_mean();
        assert!(
            (mean[0] - 3.0).abs() < 0.05 && (mean[1] - 5.0).abs() < 0.05,
            "{mean}"
        );
        let centred = DMatrix::from_fn(class0.nrows(), 2, |i, j| class0[(i, j)] - mean[j]);
        let covariance = centred.transpose() * &centred / (class0.nrows() - 1) as f64;
        for (got, want) in covariance.iter().zip([4.0, 5.0, 5.0, 7.0]) {
            assert!((got - want).abs() < 0.2, "{covariance}");
        }
    }

    /// Hand-worked: rows (0, 1) and (1, 0) have Gram matrix I, logits I / 0.8, and each row's
    /// cross-entropy against its own index is `-log(e^1.25 / (e^1.25 + 1))`.
    #[test]
    fn the_orthogonality_term_follows_its_definition() {
        let features = Tensor::new(&[[1f32, 0.0]], &Device::Cpu).unwrap();
        let old = Tensor::new(&[[0f32, 1.0]], &Device::Cpu).unwrap();
        let got = orthogonality_loss(&features, Some(&old))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let z = 1.0f64 / ORTHOGONALITY_TEMPERATURE;
        let want = -(z.exp() / (z.exp() + 1.0)).ln();
        assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
        // Without earlier classes the batch is its own reference.
        let alone = orthogonality_loss(&features, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(alone.abs() < 1e-6);
    }

    /// Retrieval: the first adapter's cosine picks stage 0, whose adapter's logits point to a
    /// class of stage 1; stage 1's adapter agrees, so its logits are ensembled with the cosine
    /// scores. A loop that never settles stops after the cap with the last logits.
    #[test]
    fn retrieval_refines_the_stage_then_ensembles() {
        let stage_of = [0, 0, 1, 1];
        let cosine = [0.9f32, 0.1, 0.0, 0.0];
        let adapter0 = [0.0f32, 0.0, 5.0, 0.0];
        let adapter1 = [0.0f32, 0.0, 0.0, 9.0];
        // Stage 1's logits (class 3) outweigh the cosine's class 0, sharpened by 2 stages.
        assert_eq!(
            refined_prediction(&cosine, &[&adapter0, &adapter1], &stage_of),
            3
        );
        // Logits that bounce between the stages: the fourth round's logits (adapter 1's, from
        // 0 -> 1 -> 0 -> 1) are used.
        let bounce0 = [0.0f32, 0.0, 1.0, 0.0];
        let bounce1 = [0.0f32, 30.0, 0.0, 0.0];
        assert_eq!(
            refined_prediction(&cosine, &[&bounce0, &bounce1], &stage_of),
            1
        );
        // One stage: the ensemble of its logits and the cosine.
        assert_eq!(refined_prediction(&[0.2, 0.9], &[&[3.0, 0.0]], &[0, 0]), 0);
    }
}
