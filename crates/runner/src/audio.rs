//! Audio tasks of AST suites: which dataset a task names (ESC-50, Speech Commands V2, Fluent Speech
//! Commands, UrbanSound8K, Hugging Face parquet, the generated keywords), the held-out fold of
//! cross-validated ones, and batches of normalised filter banks with SpecAugment on training clips.
//!
//! Filter banks come from one [`AstFeatures`] per sweep (in memory, and on disk under the project
//! cache), so every method, seed and fold of a sweep decodes and transforms each clip once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use peftbench_data_audio::datasets::{esc50, fluent, hf_parquet, speech_commands, urbansound};
use peftbench_data_audio::synthetic::{keyword_task, Voice};
use peftbench_data_audio::{AstFeatureConfig, AstFeatures, AudioDataset, FbankConfig, SpecAugment};
use peftbench_data_vision::{sequential_batches, shuffled_batches};
use peftbench_suite::{AudioSpec, DataFormat, Generator, OnDataError, RunSpec};
use peftbench_train::{derive_seed, Batch, BatchSource};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The feature extractor of a suite's `audio` section (Kaldi settings of the AST recipe).
pub fn feature_config(audio: &AudioSpec) -> AstFeatureConfig {
    AstFeatureConfig {
        fbank: FbankConfig {
            num_mel_bins: audio.num_mel_bins,
            ..FbankConfig::default()
        },
        target_frames: audio.target_frames,
        mean: audio.mean as f32,
        std: audio.std as f32,
    }
}

/// The shared filter-bank cache of a sweep: memory plus `<cache>/audio-features`.
pub fn features_for(audio: &AudioSpec, cache: &Path) -> anyhow::Result<Arc<AstFeatures>> {
    Ok(Arc::new(AstFeatures::new(
        feature_config(audio),
        Some(cache.join("audio-features")),
    )?))
}

/// The splits of one audio task (and fold), as sources: nothing decoded yet.
pub struct AudioTaskData {
    pub train: AudioDataset,
    pub eval: AudioDataset,
    pub val: Option<AudioDataset>,
}

fn held_out_fold(spec: &RunSpec, dataset: &str, folds: u32) -> anyhow::Result<u32> {
    spec.fold.ok_or_else(|| {
        anyhow::anyhow!(
            "task `{}` is {dataset}, which is cross-validated: set `protocol.folds: {folds}` \
             in the suite",
            spec.task.name
        )
    })
}

/// A split of a Hugging Face parquet copy, with the task's column names; a copy with a fold column
/// is cross-validated like the ESC-50 and UrbanSound8K folders.
fn parquet_split(spec: &RunSpec, root: &Path, split: &str) -> anyhow::Result<AudioDataset> {
    let task = &spec.task;
    let columns = task.audio_columns.clone().unwrap_or_default();
    let num_classes = Some(task.num_classes);
    match (&columns.fold, spec.fold, spec.protocol.folds) {
        (None, None, _) => Ok(hf_parquet::load_split(
            root,
            &task.name,
            split,
            &columns.audio,
            &columns.label,
            num_classes,
        )?),
        (None, Some(_), _) => anyhow::bail!(
            "task `{}` is cross-validated (`protocol.folds`) but names no fold column: \
             set `columns: {{ fold: <column> }}` on the task",
            task.name
        ),
        (Some(column), Some(held_out), Some(count)) => Ok(hf_parquet::load_fold_split(
            root,
            &task.name,
            split,
            &columns.audio,
            &columns.label,
            hf_parquet::Folds {
                column,
                held_out,
                count,
            },
            num_classes,
        )?),
        (Some(column), _, _) => anyhow::bail!(
            "task `{}` holds its folds in column `{column}`, which is cross-validated: set \
             `protocol.folds` (the number of folds) in the suite",
            task.name
        ),
    }
}

fn load_split(
    spec: &RunSpec,
    root: Option<&Path>,
    split: &str,
    examples: Option<usize>,
    seed: u64,
) -> anyhow::Result<AudioDataset> {
    let task = &spec.task;
    let dir = || root.expect("root").join(&task.name);
    let mut ds = match spec.data.format {
        DataFormat::Generated => {
            anyhow::ensure!(
                task.generator == Some(Generator::Keywords),
                "task `{}` has no audio generator",
                task.name
            );
            let n = examples.unwrap_or(0);
            let n = spec.limit.map_or(n, |l| n.min(l));
            keyword_task(n, task.num_classes, seed, &Voice::detect())?
        }
        DataFormat::Esc50 => esc50::load_split(
            &dir(),
            split,
            held_out_fold(spec, "ESC-50", esc50::NUM_FOLDS)?,
        )?,
        DataFormat::Urbansound8k => urbansound::load_split(
            &dir(),
            split,
            held_out_fold(spec, "UrbanSound8K", urbansound::NUM_FOLDS)?,
        )?,
        DataFormat::SpeechCommands => speech_commands::load_split(&dir(), split)?,
        DataFormat::FluentSpeechCommands => fluent::load_split(&dir(), split)?,
        DataFormat::AudioParquet => parquet_split(spec, root.expect("root"), split)?,
        other => anyhow::bail!("data format {other:?} is not an audio format"),
    };
    if let Some(limit) = spec.limit {
        ds.truncate(limit);
    }
    anyhow::ensure!(
        !ds.is_empty(),
        "task `{}` split `{split}` has no examples",
        task.name
    );
    // As for images: every label below the declared count. A reader with a published class list
    // (ESC-50's 50, UrbanSound8K's 10) reports that list's size even when one's own clips use fewer.
    if let Some(&largest) = ds.labels.iter().max() {
        anyhow::ensure!(
            (largest as usize) < task.num_classes,
            "task `{}` split `{split}` has label {largest} but the suite declares num_classes {}",
            task.name,
            task.num_classes
        );
    }
    ds.num_classes = task.num_classes;
    ds.class_names.resize(task.num_classes, String::new());
    Ok(ds)
}

/// Lists a run's audio splits (`root`: the data root, `None` for generated tasks); `seed_of`
/// gives generated splits their fixed seed.
pub fn load_audio_task(
    spec: &RunSpec,
    root: Option<PathBuf>,
    seed_of: impl Fn(&str) -> u64,
) -> anyhow::Result<AudioTaskData> {
    let p = &spec.protocol;
    let root = root.as_deref();
    let split = |name: &str, n| load_split(spec, root, name, n, seed_of(name));
    Ok(AudioTaskData {
        train: split(&p.train_split, spec.data.train_examples)?,
        eval: split(&p.eval_split, spec.data.eval_examples)?,
        val: p
            .val_split
            .as_deref()
            .map(|v| split(v, spec.data.eval_examples))
            .transpose()?,
    })
}

/// One split as filter banks, computed (or read from the cache) now. A clip that fails to decode
/// stops with an error naming it, or is dropped with a warning under `skip-example`; returns the
/// source and how many were dropped.
pub fn audio_batch_source(
    ds: &AudioDataset,
    features: &Arc<AstFeatures>,
    augment: Option<SpecAugment>,
    on_error: OnDataError,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<(AudioBatches, usize)> {
    let mut fbanks = Vec::with_capacity(ds.len());
    let mut labels = Vec::with_capacity(ds.len());
    let mut skipped = 0;
    for (source, &label) in ds.items.iter().zip(&ds.labels) {
        match features.fbank(source) {
            Ok(f) => {
                fbanks.push(f);
                labels.push(label);
            }
            Err(e) if on_error == OnDataError::SkipExample => {
                if !quiet {
                    eprintln!("warning: skipping example: {e}");
                }
                skipped += 1;
            }
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", ds.name)),
        }
    }
    anyhow::ensure!(!fbanks.is_empty(), "{}: no clip could be decoded", ds.name);
    Ok((
        AudioBatches {
            fbanks,
            labels,
            features: features.clone(),
            augment,
            device: device.clone(),
        },
        skipped,
    ))
}

/// The SpecAugment masks of a suite (`None` when both widths are 0).
pub fn spec_augment(audio: &AudioSpec) -> Option<SpecAugment> {
    (audio.freq_mask > 0 || audio.time_mask > 0).then_some(SpecAugment {
        freq_mask: audio.freq_mask,
        time_mask: audio.time_mask,
    })
}

/// Batches `[B, frames, mel bins]` of one split's cached filter banks, padded or cut and
/// normalised per batch. Shuffled (training) batches get fresh SpecAugment masks, drawn from the
/// shuffle seed and the batch's index, so an epoch's inputs are reproducible.
pub struct AudioBatches {
    fbanks: Vec<Arc<Vec<f32>>>,
    labels: Vec<u32>,
    features: Arc<AstFeatures>,
    augment: Option<SpecAugment>,
    device: Device,
}

impl AudioBatches {
    fn batch(&self, indices: &[usize], augment_seed: Option<u64>) -> anyhow::Result<Batch> {
        let cfg = self.features.config();
        let (frames, bins) = (cfg.target_frames, cfg.fbank.num_mel_bins);
        let mut rng = augment_seed.map(ChaCha8Rng::seed_from_u64);
        let mut values = Vec::with_capacity(indices.len() * frames * bins);
        for &i in indices {
            let augment = match (&self.augment, rng.as_mut()) {
                (Some(spec), Some(rng)) => Some((spec, rng as &mut dyn rand::RngCore)),
                _ => None,
            };
            values.extend(self.features.input_from_fbank(&self.fbanks[i], augment));
        }
        let labels: Vec<u32> = indices.iter().map(|&i| self.labels[i]).collect();
        let n = indices.len();
        Ok(Batch::new(
            Tensor::from_vec(values, (n, frames, bins), &self.device)?,
            Tensor::from_vec(labels, n, &self.device)?,
        ))
    }
}

impl BatchSource for AudioBatches {
    fn num_examples(&self) -> usize {
        self.labels.len()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let order = match shuffle_seed {
            Some(seed) => shuffled_batches(self.labels.len(), batch_size, seed, false),
            None => sequential_batches(self.labels.len(), batch_size),
        };
        Box::new(order.into_iter().enumerate().map(move |(b, indices)| {
            let augment_seed = shuffle_seed.map(|s| derive_seed(&[s, 0x5350_4543, b as u64]));
            self.batch(&indices, augment_seed)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peftbench_data_audio::synthetic::keyword_task;

    fn spec(freq_mask: usize, time_mask: usize) -> AudioSpec {
        AudioSpec {
            target_frames: 100,
            num_mel_bins: 128,
            mean: -4.267_739_3,
            std: 4.568_997_4,
            freq_mask,
            time_mask,
        }
    }

    /// An `audio-parquet` task's `columns` reach the reader: a fold column reads the copy's `train`
    /// files for both sides of the held-out fold, and a fold column without folds (or folds
    /// without one) is an error saying what to set.
    #[test]
    fn parquet_tasks_read_with_their_columns_and_folds() {
        use peftbench_suite::{parse_suite, plan, PlanOptions};
        let text = "\
name: esc50-hf
backbone: { checkpoint: demo }
data: { format: audio-parquet }
audio: { target_frames: 100 }
protocol: { train_split: train, eval_split: test, selection: final, folds: 5 }
seeds: [0]
tasks:
  - { name: esc50, num_classes: 50, columns: { label: target, fold: fold } }
methods:
  - method: linear
";
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("esc50")).unwrap();
        let suite = parse_suite(text, &dir.path().join("x.yaml"), &crate::RegistryCatalog).unwrap();
        let spec = plan(&suite, &PlanOptions::default(), &crate::RegistryCatalog)
            .unwrap()
            .remove(1);
        assert_eq!(spec.fold, Some(2));
        // The eval split `test` of a cross-validated copy is looked for among the `train` files.
        let e = load_split(&spec, Some(dir.path()), "test", None, 0).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("train-*.parquet") && !e.contains("test-*.parquet"),
            "{e}"
        );

        let mut no_folds = spec.clone();
        no_folds.fold = None;
        no_folds.protocol.folds = None;
        let e = load_split(&no_folds, Some(dir.path()), "test", None, 0).unwrap_err();
        assert!(format!("{e:#}").contains("set `protocol.folds`"), "{e:#}");
        let mut no_column = spec.clone();
        no_column.task.audio_columns.as_mut().unwrap().fold = None;
        let e = load_split(&no_column, Some(dir.path()), "test", None, 0).unwrap_err();
        assert!(format!("{e:#}").contains("names no fold column"), "{e:#}");
        // Without a fold column the run's own split files are read.
        no_column.fold = None;
        let e = load_split(&no_column, Some(dir.path()), "test", None, 0).unwrap_err();
        assert!(format!("{e:#}").contains("test-*.parquet"), "{e:#}");
    }

    #[test]
    fn batches_are_normalised_filter_banks_and_only_training_ones_are_masked() -> anyhow::Result<()>
    {
        let ds = keyword_task(6, 3, 1, &Voice::Tones)?;
        let dir = tempfile::tempdir()?;
        let audio = spec(24, 20);
        let features = features_for(&audio, dir.path())?;
        let (plain, skipped) =
            audio_batch_source(&ds, &features, None, OnDataError::Stop, &Device::Cpu, true)?;
        assert_eq!(skipped, 0);
        let (augmented, _) = audio_batch_source(
            &ds,
            &features,
            spec_augment(&audio),
            OnDataError::Stop,
            &Device::Cpu,
            true,
        )?;
        let first = |src: &AudioBatches, seed| -> anyhow::Result<Vec<Vec<Vec<f32>>>> {
            let b = src.batches(6, seed).next().unwrap()?;
            assert_eq!(b.inputs.dims(), &[6, 100, 128]);
            Ok(b.inputs.to_vec3()?)
        };
        // Evaluation batches (no shuffle) are never masked.
        assert_eq!(first(&plain, None)?, first(&augmented, None)?);
        // The same seed draws the same masks; a masked value is 0 before normalisation.
        let a = first(&augmented, Some(3))?;
        assert_eq!(a, first(&augmented, Some(3))?);
        let masked = (0.0 - audio.mean as f32) / (2.0 * audio.std as f32);
        let is_masked = |v: f32| (v - masked).abs() < 1e-5;
        let count = a
            .iter()
            .flatten()
            .flatten()
            .filter(|&&v| is_masked(v))
            .count();
        // Zero padding (98 frames of a one-second clip padded to 100) reads as masked too.
        let padded = first(&plain, Some(3))?
            .iter()
            .flatten()
            .flatten()
            .filter(|&&v| is_masked(v))
            .count();
        assert!(count > padded, "no masked values beyond the zero padding");
        // Example by example, the unmasked values equal the plain input's (same clip, same frame).
        let p = first(&plain, Some(3))?;
        let differing = p
            .iter()
            .flatten()
            .flatten()
            .zip(a.iter().flatten().flatten())
            .filter(|(x, y)| x != y)
            .count();
        assert!(differing > 0 && differing <= count);
        Ok(())
    }
}
