//! Image-text retrieval with CLIP's two towers: a run attaches its method to both the image and
//! the text tower ([`DualEncoderModel`]), trains them with CLIP's symmetric contrastive loss on
//! the training split's captioned images (each epoch pairs every image with one of its captions,
//! drawn from the epoch's seed, so a batch never holds two captions of one image as each other's
//! negatives), then ranks every test caption against every test image and reports Recall@1/5/10
//! both ways and their sum, RSUM, the headline ([`peftbench_metrics::retrieval`]: ties broken by
//! the lower index). The captions are read from Karpathy's split files (`vl_task: captions`), so
//! Flickr30k 1K and COCO 5K are their `test` splits.

use std::time::Instant;

use candle_core::{Device, Tensor};
use peftbench_backbones::TextEncoder;
use peftbench_core::SeededInit;
use peftbench_data_vision::{ImageDataset, Preprocess};
use peftbench_methods::{dual_encoder::retrieval_scores, DualEncoderModel, LogitScale};
use peftbench_metrics::retrieval::retrieval_recalls;
use peftbench_suite::{DataFormat, ImageTextRetrievalSpec, RunSpec, Suite, VlTask};
use peftbench_train::{derive_seed, train, Batch, BatchSource};

use super::Kind;
use crate::backbone::{BackboneModel, LoadedBackbone};
use crate::run::{train_config, Finished, RunContext, Trained, MODEL_INIT};
use crate::vl_data::{read_split, tokenise, VlSplit};
use crate::Paths;

pub(crate) struct ImageTextRetrieval;

/// The text tower's tokenizer and the image pipeline.
pub(crate) struct RetrievalEncoders {
    tokenizer: tokenizers::Tokenizer,
    preprocess: Preprocess,
    settings: ImageTextRetrievalSpec,
    pad: u32,
}

/// A task's captioned images, training and test split.
pub(crate) struct LocatedPairs {
    train: VlSplit,
    eval: VlSplit,
}

/// A split's images (decoded per batch) and its captions' token ids, grouped by image.
pub(crate) struct CaptionedImages {
    images: ImageDataset,
    /// Each image's captions, tokenised.
    captions: Vec<Vec<Vec<u32>>>,
    preprocess: Preprocess,
    pad: u32,
    device: Device,
}

pub(crate) struct PreparedPairs {
    train: CaptionedImages,
    eval: CaptionedImages,
}

fn settings(spec: &RunSpec) -> &ImageTextRetrievalSpec {
    spec.image_text_retrieval
        .as_ref()
        .expect("retrieval runs carry their `image_text_retrieval` section")
}

/// Purpose mixed into an epoch's seed for the caption each image is paired with ("CAPT").
const CAPTION_CHOICE: u64 = 0x4341_5054;

/// The metric retrieval records rank by.
const PRIMARY: &str = "rsum";

impl Kind for ImageTextRetrieval {
    type Encoders = RetrievalEncoders;
    type Located = LocatedPairs;
    type Prepared = PreparedPairs;

    fn locate(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<LocatedPairs> {
        let root = match spec.data.format {
            DataFormat::Generated => crate::demo_vl::ensure_demo_vl_data(spec, paths, quiet)?,
            _ => crate::data::data_root(spec, paths)?,
        };
        let dir = root.join(&spec.task.name);
        anyhow::ensure!(
            dir.is_dir(),
            "task `{}`: its folder {} does not exist",
            spec.task.name,
            dir.display()
        );
        let mut train = read_split(VlTask::Captions, &dir, &spec.protocol.train_split, true)?;
        let mut eval = read_split(VlTask::Captions, &dir, &spec.protocol.eval_split, true)?;
        if let Some(limit) = spec.limit {
            train.examples.truncate(limit);
            eval.examples.truncate(limit);
        }
        Ok(LocatedPairs { train, eval })
    }

    fn check_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(backbone, BackboneModel::Clip(_)),
            "suite `{}` matches images with captions and needs a dual encoder (a CLIP checkpoint \
             such as `openai/clip-vit-base-patch32`, or `demo-clip`), not a {} backbone",
            spec.suite,
            backbone.family()
        );
        Ok(())
    }

    fn encoders(
        suite: &Suite,
        backbone: &mut LoadedBackbone,
        _paths: &Paths,
    ) -> anyhow::Result<RetrievalEncoders> {
        let settings = suite
            .image_text_retrieval
            .clone()
            .expect("retrieval suites have the section");
        let path = backbone
            .tokenizer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("backbone `{}` has no tokenizer.json", backbone.name))?;
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let BackboneModel::Clip(clip) = &backbone.model else {
            anyhow::bail!("retrieval suites read a CLIP backbone");
        };
        Ok(RetrievalEncoders {
            tokenizer,
            preprocess: crate::data::pixel_pipeline(&settings.preprocess),
            pad: clip.config().text_config.pad_token_id,
            settings,
        })
    }

    fn text_encoder(_: &RetrievalEncoders) -> Option<&TextEncoder> {
        None
    }

    fn prepare(
        _spec: &RunSpec,
        located: &LocatedPairs,
        encoders: &RetrievalEncoders,
        device: &Device,
        _quiet: bool,
    ) -> anyhow::Result<PreparedPairs> {
        Ok(PreparedPairs {
            train: encoders.captioned(&located.train, device)?,
            eval: encoders.captioned(&located.eval, device)?,
        })
    }

    fn run(
        spec: &RunSpec,
        task: &PreparedPairs,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished> {
        let BackboneModel::Clip(clip) = &ctx.backbone.model else {
            anyhow::bail!("retrieval runs adapt a CLIP backbone");
        };
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), ctx.device);
        let scale = if settings(spec).train_logit_scale {
            LogitScale::Trainable
        } else {
            LogitScale::Frozen
        };
        let model = DualEncoderModel::new(&spec.method, &spec.params, clip.clone(), scale, &init)?;
        let trainable = model.trainable_count() as u64;
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
        let eval = &task.eval;
        let batch = cfg.eval_batch_size.max(1);
        let indices: Vec<usize> = (0..eval.images.len()).collect();
        let mut image_parts = Vec::new();
        for chunk in indices.chunks(batch) {
            image_parts.push(model.image_embeddings(&eval.pixels(chunk)?)?);
        }
        let images = Tensor::cat(&image_parts, 0)?;
        let captions: Vec<(usize, &Vec<u32>)> = eval
            .captions
            .iter()
            .enumerate()
            .flat_map(|(image, caps)| caps.iter().map(move |c| (image, c)))
            .collect();
        let mut text_parts = Vec::new();
        for chunk in captions.chunks(batch) {
            let ids: Vec<&Vec<u32>> = chunk.iter().map(|(_, c)| *c).collect();
            let (ids, mask) = eval.padded(&ids)?;
            text_parts.push(model.text_embeddings(&ids, Some(&mask))?);
        }
        let texts = Tensor::cat(&text_parts, 0)?;
        let owners: Vec<usize> = captions.iter().map(|(image, _)| *image).collect();
        let recalls = retrieval_recalls(&retrieval_scores(&texts, &images)?, &owners)?;
        let mut metrics = std::collections::BTreeMap::new();
        // Fractions like every record's metrics (RSUM of fractions: at most 6; reports print
        // x100, the 600-point scale of the literature).
        metrics.insert(PRIMARY.into(), recalls.rsum / 100.0);
        for (i, k) in peftbench_metrics::retrieval::RECALL_KS.iter().enumerate() {
            metrics.insert(format!("text_to_image_r{k}"), recalls.text_to_image[i]);
            metrics.insert(format!("image_to_text_r{k}"), recalls.image_to_text[i]);
        }
        metrics.insert("eval_images".into(), eval.images.len() as f64);
        metrics.insert("eval_captions".into(), captions.len() as f64);
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

impl RetrievalEncoders {
    /// `split`'s images and their captions, tokenised and cut to the suite's length (the end
    /// token kept last).
    fn captioned(&self, split: &VlSplit, device: &Device) -> anyhow::Result<CaptionedImages> {
        let mut captions = vec![Vec::new(); split.images.len()];
        for e in &split.examples {
            let ids = tokenise(&self.tokenizer, &e.target, self.settings.max_text_tokens)?;
            captions[e.images[0]].push(ids);
        }
        // Images none of whose captions survived a `--limit` are dropped with their index.
        let kept: Vec<usize> = (0..split.images.len())
            .filter(|&i| !captions[i].is_empty())
            .collect();
        Ok(CaptionedImages {
            images: ImageDataset {
                name: "captioned images".into(),
                items: kept
                    .iter()
                    .map(|&i| split.images[i].source.clone())
                    .collect(),
                labels: vec![0; kept.len()],
                num_classes: 1,
            },
            captions: kept.iter().map(|&i| captions[i].clone()).collect(),
            preprocess: self.preprocess.clone(),
            pad: self.pad,
            device: device.clone(),
        })
    }
}

impl CaptionedImages {
    /// The preprocessed pixels `[n, 3, S, S]` of images `indices`.
    fn pixels(&self, indices: &[usize]) -> anyhow::Result<Tensor> {
        let batch = self.images.load_batch(indices, &self.preprocess)?;
        let shape = batch.shape();
        Ok(Tensor::from_vec(batch.pixels, &shape[..], &self.device)?)
    }

    /// Token ids right-padded to the longest, and their 0/1 mask.
    fn padded(&self, captions: &[&Vec<u32>]) -> anyhow::Result<(Tensor, Tensor)> {
        let width = captions.iter().map(|c| c.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(captions.len() * width);
        let mut mask = Vec::with_capacity(captions.len() * width);
        for c in captions {
            ids.extend(c.iter().copied());
            ids.extend(std::iter::repeat_n(self.pad, width - c.len()));
            mask.extend(std::iter::repeat_n(1u32, c.len()));
            mask.extend(std::iter::repeat_n(0u32, width - c.len()));
        }
        let n = captions.len();
        Ok((
            Tensor::from_vec(ids, (n, width), &self.device)?,
            Tensor::from_vec(mask, (n, width), &self.device)?,
        ))
    }
}

/// Training pairs: every image once per epoch in a seeded order, each with one of its captions
/// drawn from the epoch's seed; unshuffled passes pair each image with its first caption.
impl BatchSource for CaptionedImages {
    fn num_examples(&self) -> usize {
        self.images.len()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let n = self.images.len();
        let order: Vec<usize> = match shuffle_seed {
            Some(seed) => peftbench_core::shuffle::permutation(n, seed),
            None => (0..n).collect(),
        };
        let choice = move |image: usize| -> usize {
            match shuffle_seed {
                Some(seed) => {
                    (derive_seed(&[seed, CAPTION_CHOICE, image as u64])
                        % self.captions[image].len() as u64) as usize
                }
                None => 0,
            }
        };
        let chunks: Vec<Vec<usize>> = order
            .chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        Box::new(chunks.into_iter().map(move |rows| {
            let captions: Vec<&Vec<u32>> =
                rows.iter().map(|&i| &self.captions[i][choice(i)]).collect();
            let (ids, mask) = self.padded(&captions)?;
            let labels = peftbench_train::contrastive::pair_labels(rows.len(), &self.device)?;
            let mut batch = Batch::new(ids, labels);
            batch.mask = Some(mask);
            batch.images = Some(self.pixels(&rows)?);
            Ok(batch)
        }))
    }
}
