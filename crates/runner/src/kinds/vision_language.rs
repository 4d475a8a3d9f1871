//! Vision-language generation (VQA, GQA, NLVR2, captioning) with an encoder-decoder, after
//! VL-Adapter: every image's frozen visual features are computed once per task preparation (the
//! suite's `vision_language.visual_backbone`, patch tokens after its final norm), a run attaches
//! its method to the text-only T5 and trains VL-T5's visual projection beside it
//! ([`VisionLanguageModel`]) by teacher forcing on the tasks' targets, mixed in batches as the
//! `multitask` section says (each example carries its task id, so per-task methods and
//! Hyperformer see it), then decodes every evaluation example by beam search and scores each
//! task with its official metric ([`crate::vl_data::score`]).
//!
//! A record holds, per task `t`, `task_score@t` (the task's headline: VQA accuracy, GQA and
//! NLVR2 accuracy, CIDEr-D; fractions, as every metric) with its other measures as `<name>@t`, the
//! plain mean of the task scores as `task_score` (VL-Adapter's average), and both parameter
//! counts: `params_strict` (the method's own) and `params_vl_adapter` (what trains: the method,
//! the visual projection and, when trained, the layer norms; the record's `trainable_params`).

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Backbone, TextEncoder};
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_data_vision::{ImageDataset, ImageSource};
use peftbench_methods::VisionLanguageModel;
use peftbench_suite::{DataFormat, RunSpec, Sampling, Suite, TaskSpec, VisionLanguageSpec, VlTask};
use peftbench_train::mixture::epoch_order;
use peftbench_train::{derive_seed, train, Batch, BatchSource, Mixing, IGNORE_LABEL};

use super::Kind;
use crate::backbone::{load_backbone, BackboneModel, LoadedBackbone};
use crate::run::{train_config, Finished, RunContext, Trained, MODEL_INIT};
use crate::vl_data::{read_split, score, tokenise, VlExample, VlSplit};
use crate::Paths;

pub(crate) struct VisionLanguage;

/// What every run shares: the text model's tokenizer and the frozen image encoder.
pub(crate) struct VlEncoders {
    tokenizer: tokenizers::Tokenizer,
    visual: VisualEncoder,
    settings: VisionLanguageSpec,
    pad: u32,
}

/// The frozen image encoder whose patch tokens are the visual features.
struct VisualEncoder {
    model: Box<dyn Backbone>,
    preprocess: peftbench_data_vision::Preprocess,
}

/// One member task's splits as read from its files.
pub(crate) struct LocatedTask {
    task: TaskSpec,
    vl_task: VlTask,
    train: VlSplit,
    eval: VlSplit,
}

/// A run's examples, tokenised, with the visual features of every image they show.
pub(crate) struct PreparedVl {
    /// Member tasks in run order, each with its evaluation examples (for scoring).
    members: Vec<(String, VlTask, Vec<VlExample>)>,
    train: VlSource,
    /// One source per member, in file order.
    eval: Vec<VlSource>,
    feature_dim: usize,
    tokens_per_image: usize,
    /// To turn generated ids back into text.
    tokenizer: tokenizers::Tokenizer,
}

/// The tasks a run reads: a multi-task run's members, or its one task.
fn members(spec: &RunSpec) -> Vec<TaskSpec> {
    match &spec.multitask {
        Some(run) => run.tasks.clone(),
        None => vec![spec.task.clone()],
    }
}

fn settings(spec: &RunSpec) -> &VisionLanguageSpec {
    spec.vision_language
        .as_ref()
        .expect("vision-language runs carry their `vision_language` section")
}

/// Purpose mixed into the run seed for the training order of a vision-language mixture ("VLMX").
const VL_MIXTURE: u64 = 0x564c_4d58;

impl Kind for VisionLanguage {
    type Encoders = VlEncoders;
    type Located = Vec<LocatedTask>;
    type Prepared = PreparedVl;

    fn locate(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<Vec<LocatedTask>> {
        let root = match spec.data.format {
            DataFormat::Generated => crate::demo_vl::ensure_demo_vl_data(spec, paths, quiet)?,
            _ => crate::data::data_root(spec, paths)?,
        };
        members(spec)
            .into_iter()
            .map(|task| {
                let vl_task = task
                    .vl_task
                    .expect("suite validation gives vision-language tasks a `vl_task`");
                let dir = root.join(&task.name);
                anyhow::ensure!(
                    dir.is_dir(),
                    "task `{}`: its folder {} does not exist",
                    task.name,
                    dir.display()
                );
                let mut train = read_split(vl_task, &dir, &spec.protocol.train_split, true)?;
                let mut eval = read_split(vl_task, &dir, &spec.protocol.eval_split, false)?;
                if !quiet && spec.data.format != DataFormat::Generated {
                    eprintln!(
                        "task `{}`: {} from {}; {} from {}",
                        task.name,
                        spec.protocol.train_split,
                        train.source,
                        spec.protocol.eval_split,
                        eval.source
                    );
                }
                if let Some(limit) = spec.limit {
                    train.examples.truncate(limit);
                    eval.examples.truncate(limit);
                }
                Ok(LocatedTask {
                    task,
                    vl_task,
                    train,
                    eval,
                })
            })
            .collect()
    }

    fn check_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(backbone, BackboneModel::T5(_)),
            "suite `{}` generates text from images and needs an encoder-decoder backbone (a T5 \
             checkpoint such as `t5-base`, or `demo-t5`), not a {} backbone",
            spec.suite,
            backbone.family()
        );
        Ok(())
    }

    fn encoders(
        suite: &Suite,
        backbone: &mut LoadedBackbone,
        paths: &Paths,
    ) -> anyhow::Result<VlEncoders> {
        let settings = suite
            .vision_language
            .clone()
            .expect("vision-language suites have the section");
        let path = backbone
            .tokenizer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("backbone `{}` has no tokenizer.json", backbone.name))?;
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let BackboneModel::T5(t5) = &backbone.model else {
            anyhow::bail!("vision-language suites read a T5 backbone");
        };
        let pad = t5.config().pad_token_id;
        let device = t5.device().clone();
        // Not quiet: pretraining the demo ViT on first use takes most of a minute, and its
        // progress should show (an already cached or downloaded encoder prints nothing).
        let visual = load_backbone(&settings.visual_backbone, paths, &device, false, None)?;
        let preprocess = crate::data::pixel_pipeline(&settings.preprocess);
        Ok(VlEncoders {
            tokenizer,
            visual: VisualEncoder {
                model: visual.model.boxed(),
                preprocess,
            },
            settings,
            pad,
        })
    }

    fn text_encoder(_: &VlEncoders) -> Option<&TextEncoder> {
        None
    }

    fn prepare(
        spec: &RunSpec,
        located: &Vec<LocatedTask>,
        encoders: &VlEncoders,
        device: &Device,
        quiet: bool,
    ) -> anyhow::Result<PreparedVl> {
        // Every distinct image once, whatever task and split shows it.
        let mut images: Vec<ImageSource> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut global = |split: &VlSplit| -> Vec<usize> {
            split
                .images
                .iter()
                .map(|image| {
                    *index.entry(image.key.clone()).or_insert_with(|| {
                        images.push(image.source.clone());
                        images.len() - 1
                    })
                })
                .collect()
        };
        let mut train_parts = Vec::new();
        let mut eval = Vec::new();
        let mut members = Vec::new();
        for (t, task) in located.iter().enumerate() {
            let train_map = global(&task.train);
            let eval_map = global(&task.eval);
            train_parts.push(encoders.tokenise(&task.train, &train_map, t as u32)?);
            eval.push(encoders.tokenise(&task.eval, &eval_map, t as u32)?);
            members.push((
                task.task.name.clone(),
                task.vl_task,
                task.eval.examples.clone(),
            ));
        }
        let started = Instant::now();
        let features = encoders.visual.features(&images, device)?;
        if !quiet {
            eprintln!(
                "visual features of {} images computed in {:.1} s",
                images.len(),
                started.elapsed().as_secs_f64()
            );
        }
        let (_, tokens_per_image, feature_dim) = features.dims3()?;
        let mixing = match &spec.multitask {
            None => Mixing::Proportional,
            Some(run) => match run.sampling {
                Sampling::Proportional => Mixing::Proportional,
                Sampling::Uniform => Mixing::uniform(run.tasks.len()),
                Sampling::Temperature => Mixing::temperature(
                    &train_parts.iter().map(Vec::len).collect::<Vec<_>>(),
                    run.temperature,
                ),
            },
        };
        let train = VlSource::new(train_parts, features.clone(), encoders.pad, mixing);
        let eval = eval
            .into_iter()
            .map(|part| {
                VlSource::new(
                    vec![part],
                    features.clone(),
                    encoders.pad,
                    Mixing::Proportional,
                )
            })
            .collect();
        Ok(PreparedVl {
            members,
            train,
            eval,
            feature_dim,
            tokens_per_image,
            tokenizer: encoders.tokenizer.clone(),
        })
    }

    fn run(
        spec: &RunSpec,
        task: &PreparedVl,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished> {
        let settings = settings(spec);
        let BackboneModel::T5(t5) = &ctx.backbone.model else {
            anyhow::bail!("vision-language runs adapt a T5 backbone");
        };
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), ctx.device);
        let model = VisionLanguageModel::new(
            &spec.method,
            &spec.params,
            t5.clone(),
            task.feature_dim,
            task.tokens_per_image,
            settings.train_layer_norms,
            &init,
        )?;
        anyhow::ensure!(
            model.adaptation().phases().is_empty() && model.adaptation().calibration().is_none(),
            "method `{}` trains in phases or calibrates on data first, which vision-language runs \
             do not support",
            spec.method
        );
        let counts = model.counts();
        let trainable = counts.trained() as u64;
        let total = model.total_count() as u64;
        let cfg = train_config(spec);
        let outcome = train(&model, &task.train, None, &cfg, progress)?;
        let trained = match Trained::save_with(spec, outcome, trainable, total, ctx, |dir| {
            model.save(dir, &ctx.backbone.name)
        })? {
            Ok(trained) => trained,
            Err(diverged) => return Ok(diverged),
        };

        let started = Instant::now();
        let mut metrics = BTreeMap::new();
        let mut task_scores = Vec::new();
        for ((name, vl_task, examples), source) in task.members.iter().zip(&task.eval) {
            let mut predictions = Vec::with_capacity(examples.len());
            for batch in source.batches(cfg.eval_batch_size, None) {
                let batch = batch?;
                for ids in model.generate(&batch, settings.num_beams, settings.max_length)? {
                    predictions.push(decode(&task.tokenizer, &ids)?);
                }
            }
            let scores = score(*vl_task, examples, &predictions)?;
            task_scores.push(scores[0].1);
            metrics.insert(format!("{PRIMARY}@{name}"), scores[0].1);
            for (metric, value) in scores {
                metrics.insert(format!("{metric}@{name}"), value);
            }
            metrics.insert(format!("eval_examples@{name}"), examples.len() as f64);
        }
        metrics.insert(
            PRIMARY.into(),
            task_scores.iter().sum::<f64>() / task_scores.len() as f64,
        );
        metrics.insert("params_strict".into(), counts.method as f64);
        metrics.insert("params_vl_adapter".into(), counts.trained() as f64);
        Ok(Finished::completed(
            &trained,
            ctx,
            metrics,
            started.elapsed().as_secs_f64(),
            None,
        ))
    }

    fn primary_metric(_: &RunSpec) -> String {
        PRIMARY.into()
    }
}

/// The metric vision-language records rank by: each task's headline score, and their mean.
const PRIMARY: &str = "task_score";

/// Images decoded and encoded this many at a time.
const FEATURE_BATCH: usize = 64;

impl VisualEncoder {
    /// The frozen encoder's patch tokens `[images, tokens, dim]` of every image, in order.
    fn features(&self, images: &[ImageSource], device: &Device) -> anyhow::Result<Tensor> {
        anyhow::ensure!(!images.is_empty(), "no images to encode");
        let dataset = ImageDataset {
            name: "vision-language images".into(),
            items: images.to_vec(),
            labels: vec![0; images.len()],
            num_classes: 1,
        };
        let ctx = ForwardCtx::eval();
        let indices: Vec<usize> = (0..images.len()).collect();
        let mut parts = Vec::new();
        for chunk in indices.chunks(FEATURE_BATCH) {
            let batch = dataset.load_batch(chunk, &self.preprocess)?;
            let shape = batch.shape();
            let pixels = Tensor::from_vec(batch.pixels, &shape[..], device)?;
            let tokens =
                self.model
                    .forward_sequence(&pixels, &peftbench_backbones::NoHooks, &ctx)?;
            parts.push(tokens.detach());
        }
        // One table the batches index into (a single part may be a view of the encoder's output).
        Ok(Tensor::cat(&parts, 0)?.contiguous()?)
    }
}

/// One tokenised example: prompt ids, target ids (end token included), images, task.
#[derive(Clone)]
struct TokenisedExample {
    prompt: Vec<u32>,
    target: Vec<u32>,
    images: Vec<u32>,
    task: u32,
}

impl VlEncoders {
    /// `split`'s examples tokenised (cut to the suite's lengths, the end token kept last), their
    /// images renumbered by `image_ids` (the split's image `i` is feature row `image_ids[i]`).
    fn tokenise(
        &self,
        split: &VlSplit,
        image_ids: &[usize],
        task: u32,
    ) -> anyhow::Result<Vec<TokenisedExample>> {
        let encode = |text: &str, limit: usize| tokenise(&self.tokenizer, text, limit);
        split
            .examples
            .iter()
            .map(|e| {
                Ok(TokenisedExample {
                    prompt: encode(&e.prompt, self.settings.max_text_tokens)?,
                    target: encode(&e.target, self.settings.max_target_tokens)?,
                    images: e.images.iter().map(|&i| image_ids[i] as u32).collect(),
                    task,
                })
            })
            .collect()
    }
}

/// Generated ids (start token first) back to text, special tokens dropped.
fn decode(tokenizer: &tokenizers::Tokenizer, ids: &[u32]) -> anyhow::Result<String> {
    tokenizer
        .decode(ids, true)
        .map(|text| text.trim().to_string())
        .map_err(|e| anyhow::anyhow!("decoding {ids:?}: {e}"))
}

/// Tokenised examples of one or more tasks as batches: prompt ids right-padded, the visual
/// features of each example's images (one image's tokens, or two images' one after the other;
/// a batch mixing both pads the single images with masked zeros), the mask over text and visual
/// tokens, targets padded with [`IGNORE_LABEL`] and each example's task.
struct VlSource {
    examples: Vec<TokenisedExample>,
    /// Examples per task, stacked in task order.
    counts: Vec<usize>,
    features: Tensor,
    pad: u32,
    mixing: Mixing,
}

impl VlSource {
    fn new(tasks: Vec<Vec<TokenisedExample>>, features: Tensor, pad: u32, mixing: Mixing) -> Self {
        Self {
            counts: tasks.iter().map(Vec::len).collect(),
            examples: tasks.into_iter().flatten().collect(),
            features,
            pad,
            mixing,
        }
    }

    fn batch(&self, rows: &[u32]) -> anyhow::Result<Batch> {
        let examples: Vec<&TokenisedExample> =
            rows.iter().map(|&r| &self.examples[r as usize]).collect();
        let b = examples.len();
        let device = self.features.device();
        let (_, n, f) = self.features.dims3()?;
        let text_len = examples.iter().map(|e| e.prompt.len()).max().unwrap_or(1);
        let target_len = examples.iter().map(|e| e.target.len()).max().unwrap_or(1);
        let images = examples.iter().map(|e| e.images.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(b * text_len);
        let mut labels = Vec::with_capacity(b * target_len);
        let mut mask = Vec::with_capacity(b * (text_len + images * n));
        let mut visual = Vec::with_capacity(b);
        for e in &examples {
            ids.extend(e.prompt.iter().copied());
            ids.extend(std::iter::repeat_n(self.pad, text_len - e.prompt.len()));
            labels.extend(e.target.iter().copied());
            labels.extend(std::iter::repeat_n(
                IGNORE_LABEL,
                target_len - e.target.len(),
            ));
            mask.extend(std::iter::repeat_n(1u32, e.prompt.len()));
            mask.extend(std::iter::repeat_n(0u32, text_len - e.prompt.len()));
            mask.extend(std::iter::repeat_n(1u32, e.images.len() * n));
            mask.extend(std::iter::repeat_n(0u32, (images - e.images.len()) * n));
            let index = Tensor::from_vec(e.images.clone(), e.images.len(), device)?;
            let mut tokens = self
                .features
                .index_select(&index, 0)?
                .reshape((e.images.len() * n, f))?;
            if e.images.len() < images {
                let filler = Tensor::zeros(((images - e.images.len()) * n, f), DType::F32, device)?;
                tokens = Tensor::cat(&[&tokens, &filler], 0)?;
            }
            visual.push(tokens);
        }
        let mut batch = Batch::new(
            Tensor::from_vec(ids, (b, text_len), device)?,
            Tensor::from_vec(labels, (b, target_len), device)?,
        );
        batch.mask = Some(Tensor::from_vec(mask, (b, text_len + images * n), device)?);
        batch.images = Some(Tensor::stack(&visual, 0)?);
        batch.task_ids = Some(Tensor::from_vec(
            examples.iter().map(|e| e.task).collect::<Vec<u32>>(),
            b,
            device,
        )?);
        Ok(batch)
    }
}

impl BatchSource for VlSource {
    fn num_examples(&self) -> usize {
        self.examples.len()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let seed = shuffle_seed.map(|s| derive_seed(&[s, VL_MIXTURE]));
        let order = epoch_order(&self.counts, &self.mixing, seed);
        let chunks: Vec<Vec<u32>> = order
            .chunks(batch_size.max(1))
            .map(<[u32]>::to_vec)
            .collect();
        Box::new(chunks.into_iter().map(move |rows| self.batch(&rows)))
    }
}
