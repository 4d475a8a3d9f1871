//! A run's data: which dataset a suite task names, where it is on disk, and how it becomes batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use peftbench_data_vision::{
    cifar, fgvc, imagefolder, noah, parquet, scenes, sequential_batches, shuffled_batches,
    synthetic, CifarVariant, ImageDataset, Interpolation, Normalization, ParquetColumns,
    Prefetcher, Preprocess, ShapeTask,
};
use peftbench_suite::{DataFormat, OnDataError, RunSpec};
use peftbench_train::{derive_seed, Batch, BatchSource, InMemoryBatches};

use crate::Paths;

/// The splits of one task, as sources (nothing decoded yet).
pub struct TaskData {
    pub train: Arc<ImageDataset>,
    pub eval: Arc<ImageDataset>,
    pub val: Option<Arc<ImageDataset>>,
    /// Examples dropped because they failed to decode (`on_data_error: skip-example`).
    pub skipped: usize,
}

/// The model's input preprocessing from the suite.
pub fn preprocess(spec: &RunSpec) -> Preprocess {
    pixel_pipeline(
        spec.preprocess
            .as_ref()
            .expect("suite validation gives image suites a `preprocess` section"),
    )
}

/// A suite's `preprocess` settings as the image readers take them.
pub(crate) fn pixel_pipeline(p: &peftbench_suite::PreprocessSpec) -> Preprocess {
    use peftbench_suite::{Interpolation as I, Normalization as N};
    Preprocess {
        image_size: p.image_size,
        interpolation: match p.interpolation {
            I::Bicubic => Interpolation::Bicubic,
            I::Bilinear => Interpolation::Bilinear,
        },
        normalization: match p.normalization {
            N::Imagenet => Normalization::ImageNet,
            N::Inception => Normalization::Inception,
            N::None => Normalization::None,
            N::Clip => Normalization::Clip,
        },
    }
}

pub(crate) fn data_root(spec: &RunSpec, paths: &Paths) -> anyhow::Result<PathBuf> {
    spec.data
        .root
        .clone()
        .or_else(|| paths.data_dir.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "task `{}` needs data on disk but no data root is set: pass --data-dir DIR or set \
             PEFTBENCH_DATA (the folder holding one subfolder per task; see README, \"Real data\")",
                spec.task.name
            )
        })
}

/// The data root of a task read from disk; `None` for generated tasks, which need none.
pub(crate) fn root_on_disk(spec: &RunSpec, paths: &Paths) -> anyhow::Result<Option<PathBuf>> {
    match spec.data.format {
        DataFormat::Generated => Ok(None),
        _ => data_root(spec, paths).map(Some),
    }
}

/// A fixed seed per (task, split): every method and seed of a sweep sees the same generated data.
pub(crate) fn generated_seed(task: &str, split: &str) -> u64 {
    let fnv = |s: &str| {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    derive_seed(&[fnv(task), fnv(split)])
}

fn load_split(
    spec: &RunSpec,
    root: Option<&Path>,
    split: &str,
    examples: Option<usize>,
) -> anyhow::Result<ImageDataset> {
    let task = &spec.task;
    let mut ds = match spec.data.format {
        DataFormat::Generated if task.generator == Some(peftbench_suite::Generator::Skills) => {
            let names = task.skills.as_deref().unwrap_or_default();
            let [a, b] = names else {
                anyhow::bail!("task `{}` needs `skills: [a, b]`", task.name);
            };
            let (a, b) = scenes::parse_composition(&format!("{a}+{b}"))
                .map_err(|e| anyhow::anyhow!("task `{}`: {e}", task.name))?;
            let n = examples.unwrap_or(0);
            let n = spec.limit.map_or(n, |l| n.min(l));
            let size = spec.data.image_size.unwrap_or(preprocess(spec).image_size);
            scenes::generate_composition(a, b, n, generated_seed(&task.name, split), size)
        }
        DataFormat::Generated if task.generator == Some(peftbench_suite::Generator::Objects) => {
            let n = examples.unwrap_or(0);
            let n = spec.limit.map_or(n, |l| n.min(l));
            let size = spec.data.image_size.unwrap_or(preprocess(spec).image_size);
            scenes::generate_objects(n, generated_seed(&task.name, split), size)
        }
        DataFormat::Generated => {
            let generator = task
                .generator
                .as_ref()
                .map(|g| format!("{g:?}").to_lowercase())
                .unwrap_or(task.name.clone());
            let shape_task = ShapeTask::from_name(&generator).ok_or_else(|| {
                anyhow::anyhow!("no generator named `{generator}` for task `{}`", task.name)
            })?;
            let n = examples.unwrap_or(0);
            let n = spec.limit.map_or(n, |l| n.min(l));
            let size = spec.data.image_size.unwrap_or(preprocess(spec).image_size);
            synthetic::generate(shape_task, n, generated_seed(&task.name, split), size)
        }
        DataFormat::Noah => noah::load_split(
            root.expect("root"),
            &task.name,
            split,
            Some(task.num_classes),
        )?,
        DataFormat::Fgvc => fgvc::load_split(root.expect("root"), &task.name, split)?,
        DataFormat::Parquet => parquet::load_split(
            root.expect("root"),
            &task.name,
            split,
            &ParquetColumns::default(),
            Some(task.num_classes),
        )?,
        DataFormat::ImageFolder => {
            imagefolder::load_split(root.expect("root"), &task.name, split)?.dataset
        }
        DataFormat::Cifar => {
            let variant = if task.num_classes == 10 {
                CifarVariant::Cifar10
            } else {
                CifarVariant::Cifar100
            };
            cifar::load(&root.expect("root").join(&task.name), split, variant)?.dataset
        }
        other => anyhow::bail!(
            "task `{}`: data format {other:?} holds {}, not images",
            task.name,
            if other.is_text() { "texts" } else { "audio" }
        ),
    };
    if let Some(limit) = spec.limit {
        ds.truncate(limit);
    }
    anyhow::ensure!(
        !ds.is_empty(),
        "task `{}` split `{split}` has no examples",
        task.name
    );
    if let Some(&max) = ds.labels.iter().max() {
        anyhow::ensure!(
            (max as usize) < task.num_classes,
            "task `{}` split `{split}` has label {max} but the suite declares num_classes {}",
            task.name,
            task.num_classes
        );
    }
    Ok(ds)
}

/// Drops examples that fail to decode, reporting each by path (only with `on_data_error: skip-example`).
fn skip_corrupt(ds: ImageDataset, quiet: bool) -> (ImageDataset, usize) {
    let errors = peftbench_data_vision::validate_images(&ds);
    if errors.is_empty() {
        return (ds, 0);
    }
    let bad: std::collections::HashSet<String> = errors
        .iter()
        .filter_map(|e| match e {
            peftbench_data_vision::DataError::CorruptImage { origin, .. } => Some(origin.clone()),
            peftbench_data_vision::DataError::Io { path, .. } => Some(path.display().to_string()),
            _ => None,
        })
        .collect();
    if !quiet {
        for e in &errors {
            eprintln!("warning: skipping example: {e}");
        }
    }
    let ImageDataset {
        name,
        items,
        labels,
        num_classes,
    } = ds;
    let (items, labels): (Vec<_>, Vec<_>) = items
        .into_iter()
        .zip(labels)
        .filter(|(item, _)| !bad.contains(&item.origin()))
        .unzip();
    (
        ImageDataset {
            name,
            items,
            labels,
            num_classes,
        },
        errors.len(),
    )
}

/// Loads a run's splits (list files or generation; images are decoded later).
pub fn load_task_data(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<TaskData> {
    let root = root_on_disk(spec, paths)?;
    let protocol = &spec.protocol;
    let train = load_split(
        spec,
        root.as_deref(),
        &protocol.train_split,
        spec.data.train_examples,
    )?;
    let eval = load_split(
        spec,
        root.as_deref(),
        &protocol.eval_split,
        spec.data.eval_examples,
    )?;
    let val = match &protocol.val_split {
        Some(split) => Some(load_split(
            spec,
            root.as_deref(),
            split,
            spec.data.eval_examples,
        )?),
        None => None,
    };
    let mut skipped = 0;
    let mut clean = |ds: ImageDataset| {
        if protocol.on_data_error == OnDataError::SkipExample {
            let (ds, n) = skip_corrupt(ds, quiet);
            skipped += n;
            ds
        } else {
            ds
        }
    };
    let train = Arc::new(clean(train));
    let eval = Arc::new(clean(eval));
    let val = val.map(|v| Arc::new(clean(v)));
    Ok(TaskData {
        train,
        eval,
        val,
        skipped,
    })
}

/// Datasets up to this many bytes of preprocessed pixels are decoded once and kept in memory,
/// shared by every run of the task; larger ones are streamed with background prefetching.
const IN_MEMORY_BYTES: usize = 1 << 30;

/// Batches of one split for the trainer.
pub fn batch_source(
    ds: &Arc<ImageDataset>,
    pre: &Preprocess,
    device: &Device,
) -> anyhow::Result<Box<dyn BatchSource>> {
    let bytes = ds.len() * pre.values_per_image() * 4;
    if bytes > IN_MEMORY_BYTES {
        return Ok(Box::new(StreamingBatches {
            dataset: ds.clone(),
            preprocess: pre.clone(),
            device: device.clone(),
        }));
    }
    let mut pixels = Vec::with_capacity(ds.len() * pre.values_per_image());
    let mut labels = Vec::with_capacity(ds.len());
    for chunk in sequential_batches(ds.len(), 256) {
        let batch = ds.load_batch(&chunk, pre)?;
        pixels.extend_from_slice(&batch.pixels);
        labels.extend_from_slice(&batch.labels);
    }
    let s = pre.image_size;
    let inputs = Tensor::from_vec(pixels, (ds.len(), 3, s, s), device)?;
    let labels = Tensor::from_vec(labels, ds.len(), device)?;
    Ok(Box::new(InMemoryBatches::new(inputs, labels)?))
}

/// Decodes batches on a background thread while the trainer computes.
struct StreamingBatches {
    dataset: Arc<ImageDataset>,
    preprocess: Preprocess,
    device: Device,
}

impl BatchSource for StreamingBatches {
    fn num_examples(&self) -> usize {
        self.dataset.len()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let order = match shuffle_seed {
            Some(seed) => shuffled_batches(self.dataset.len(), batch_size, seed, false),
            None => sequential_batches(self.dataset.len(), batch_size),
        };
        let prefetcher = Prefetcher::spawn(self.dataset.clone(), order, self.preprocess.clone(), 3);
        Box::new(prefetcher.map(move |batch| {
            let batch = batch?;
            let [n, c, h, w] = batch.shape();
            let inputs = Tensor::from_vec(batch.pixels, (n, c, h, w), &self.device)?;
            let labels = Tensor::from_vec(batch.labels, n, &self.device)?;
            Ok(Batch::new(inputs, labels))
        }))
    }
}
