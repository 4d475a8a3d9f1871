//! The model input of the Audio Spectrogram Transformer: decode, resample to 16 kHz, Kaldi filter banks,
//! pad with zeros or cut to the dataset's frame count, normalise `(x - mean) / (2 std)` with AudioSet's
//! statistics (HF `ASTFeatureExtractor`), and SpecAugment masks for training (AST's recipe: masks are
//! applied before normalisation, masked values are 0 in the log-mel domain).
//!
//! Filter banks are cached per (source, settings) in memory and optionally on disk, so a sweep decodes and
//! transforms each clip once rather than once per method and seed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decode::{decode_bytes, decode_file, Audio};
use crate::fbank::{Fbank, FbankConfig};
use crate::npy;
use crate::AudioError;

/// AudioSet mean of the log-mel values (HF `ASTFeatureExtractor`, AST's `norm_mean`).
pub const AUDIOSET_MEAN: f32 = -4.267_739_3;
/// AudioSet standard deviation of the log-mel values (AST's `norm_std`).
pub const AUDIOSET_STD: f32 = 4.568_997_4;

/// Where one clip comes from.
#[derive(Clone, Debug)]
pub enum AudioSource {
    /// An audio file on disk (format from its content).
    File(PathBuf),
    /// Encoded audio bytes in memory (a parquet cell); `origin` says where they came from.
    Encoded {
        origin: String,
        bytes: Arc<[u8]>,
        ext: Option<String>,
    },
    /// Generated samples.
    Samples { origin: String, audio: Arc<Audio> },
}

impl AudioSource {
    /// Human-readable description used in error messages.
    pub fn origin(&self) -> String {
        match self {
            AudioSource::File(p) => p.display().to_string(),
            AudioSource::Encoded { origin, .. } | AudioSource::Samples { origin, .. } => {
                origin.clone()
            }
        }
    }

    /// Decodes to mono samples (any rate).
    pub fn decode(&self) -> Result<Audio, AudioError> {
        match self {
            AudioSource::File(path) => decode_file(path),
            AudioSource::Encoded { origin, bytes, ext } => {
                decode_bytes(bytes.to_vec(), ext.as_deref(), origin)
            }
            AudioSource::Samples { audio, .. } => Ok((**audio).clone()),
        }
    }

    /// A key that changes when the clip's content may have: path + size + modification time for files
    /// (cheap, no read), a content hash otherwise.
    fn identity(&self) -> Result<String, AudioError> {
        Ok(match self {
            AudioSource::File(path) => {
                let meta = std::fs::metadata(path).map_err(|source| AudioError::Io {
                    path: path.clone(),
                    source,
                })?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                format!("file:{}:{}:{mtime}", path.display(), meta.len())
            }
            AudioSource::Encoded { bytes, .. } => {
                format!("bytes:{:x}", Sha256::digest(bytes))
            }
            AudioSource::Samples { audio, .. } => {
                let mut h = Sha256::new();
                h.update(audio.sample_rate.to_le_bytes());
                for s in &audio.samples {
                    h.update(s.to_le_bytes());
                }
                format!("samples:{:x}", h.finalize())
            }
        })
    }
}

/// Feature settings of an AST suite (the `features` block of a suite file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AstFeatureConfig {
    pub fbank: FbankConfig,
    /// Frames the model sees: shorter clips are zero-padded at the end, longer ones cut (AST `max_length`).
    pub target_frames: usize,
    pub mean: f32,
    pub std: f32,
}

impl Default for AstFeatureConfig {
    fn default() -> Self {
        Self {
            fbank: FbankConfig::default(),
            target_frames: 1024,
            mean: AUDIOSET_MEAN,
            std: AUDIOSET_STD,
        }
    }
}

/// Frequency and time masking (Park et al., 2019) as torchaudio's `FrequencyMasking`/`TimeMasking` draw it:
/// width `floor(u * param)`, start `floor(u' * (size - width))`, one mask of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecAugment {
    /// Largest frequency-mask width in mel bins (AST: 24 for ESC-50).
    pub freq_mask: usize,
    /// Largest time-mask width in frames (AST: 80 for 1024 frames; scale with the clip).
    pub time_mask: usize,
}

impl Default for SpecAugment {
    fn default() -> Self {
        Self {
            freq_mask: 24,
            time_mask: 80,
        }
    }
}

impl SpecAugment {
    /// Masks `features` (`[frames, bins]`, log-mel, before normalisation) in place with zeros.
    pub fn apply(&self, features: &mut [f32], frames: usize, bins: usize, rng: &mut impl Rng) {
        let (f0, fw) = mask_span(self.freq_mask, bins, rng);
        let (t0, tw) = mask_span(self.time_mask, frames, rng);
        for (t, row) in features.chunks_exact_mut(bins).enumerate() {
            if (t0..t0 + tw).contains(&t) {
                row.fill(0.0);
            } else {
                row[f0..f0 + fw].fill(0.0);
            }
        }
    }
}

fn mask_span(param: usize, size: usize, rng: &mut impl Rng) -> (usize, usize) {
    let width = (rng.random::<f64>() * param as f64) as usize;
    let width = width.min(size);
    let start = (rng.random::<f64>() * (size - width) as f64) as usize;
    (start, width)
}

/// Turns sources into model inputs `[target_frames, num_mel_bins]`, caching filter banks.
pub struct AstFeatures {
    cfg: AstFeatureConfig,
    fbank: Fbank,
    settings_key: String,
    memory: Mutex<HashMap<String, Arc<Vec<f32>>>>,
    disk: Option<PathBuf>,
}

impl AstFeatures {
    /// `cache_dir`: where filter banks are kept between processes (`None`: memory only).
    pub fn new(cfg: AstFeatureConfig, cache_dir: Option<PathBuf>) -> Result<Self, AudioError> {
        let fbank = Fbank::new(cfg.fbank.clone())?;
        let settings_key = serde_json::to_string(&cfg.fbank).expect("plain struct");
        Ok(Self {
            cfg,
            fbank,
            settings_key,
            memory: Mutex::new(HashMap::new()),
            disk: cache_dir,
        })
    }

    pub fn config(&self) -> &AstFeatureConfig {
        &self.cfg
    }

    /// Values per example (`target_frames * num_mel_bins`).
    pub fn values_per_example(&self) -> usize {
        self.cfg.target_frames * self.cfg.fbank.num_mel_bins
    }

    /// Decodes, resamples to the filter bank's rate and computes log-mel energies `[frames, bins]`.
    pub fn fbank_of_audio(&self, audio: Audio, origin: &str) -> Result<Vec<f32>, AudioError> {
        let rate = self.cfg.fbank.sample_frequency as u32;
        let audio = audio.resampled(rate, origin)?;
        if self.cfg.fbank.num_frames(audio.samples.len()) == 0 {
            return Err(AudioError::CorruptAudio {
                origin: origin.to_string(),
                reason: format!(
                    "{} samples is shorter than one {} ms frame",
                    audio.samples.len(),
                    self.cfg.fbank.frame_length
                ),
            });
        }
        Ok(self.fbank.compute(&audio.samples))
    }

    /// The log-mel filter banks `[frames, bins]` of `source`, from the cache when present.
    pub fn fbank(&self, source: &AudioSource) -> Result<Arc<Vec<f32>>, AudioError> {
        let key = {
            let mut h = Sha256::new();
            h.update(self.settings_key.as_bytes());
            h.update(source.identity()?.as_bytes());
            format!("{:x}", h.finalize())
        };
        if let Some(hit) = self.memory.lock().expect("cache lock").get(&key) {
            return Ok(hit.clone());
        }
        let disk_path = self
            .disk
            .as_ref()
            .map(|d| d.join(&key[..2]).join(format!("{key}.npy")));
        let cached = disk_path
            .as_deref()
            .and_then(|p| npy::read_npy(p).ok())
            .filter(|(shape, _)| shape.len() == 2 && shape[1] == self.cfg.fbank.num_mel_bins)
            .map(|(_, values)| values);
        let values = match cached {
            Some(values) => values,
            None => {
                let values = self.fbank_of_audio(source.decode()?, &source.origin())?;
                if let Some(path) = &disk_path {
                    // A failed cache write only costs recomputation later.
                    let bins = self.cfg.fbank.num_mel_bins;
                    let _ = std::fs::create_dir_all(path.parent().expect("nested"))
                        .and_then(|_| npy::write_npy(path, &[values.len() / bins, bins], &values));
                }
                values
            }
        };
        let values = Arc::new(values);
        self.memory
            .lock()
            .expect("cache lock")
            .insert(key, values.clone());
        Ok(values)
    }

    /// The normalised model input `[target_frames, bins]` of `source`; with `augment`, SpecAugment masks
    /// drawn from `rng` are applied first.
    pub fn input(
        &self,
        source: &AudioSource,
        augment: Option<(&SpecAugment, &mut dyn rand::RngCore)>,
    ) -> Result<Vec<f32>, AudioError> {
        let fbank = self.fbank(source)?;
        Ok(self.input_from_fbank(&fbank, augment))
    }

    /// Pads/cuts, masks and normalises computed filter banks.
    pub fn input_from_fbank(
        &self,
        fbank: &[f32],
        augment: Option<(&SpecAugment, &mut dyn rand::RngCore)>,
    ) -> Vec<f32> {
        let bins = self.cfg.fbank.num_mel_bins;
        let mut x = pad_or_cut(fbank, bins, self.cfg.target_frames);
        if let Some((spec, rng)) = augment {
            spec.apply(&mut x, self.cfg.target_frames, bins, &mut RngRef(rng));
        }
        normalize(&mut x, self.cfg.mean, self.cfg.std);
        x
    }
}

/// `&mut dyn RngCore` as a sized `Rng` for generic helpers.
struct RngRef<'a>(&'a mut dyn rand::RngCore);

impl rand::RngCore for RngRef<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

/// Zero-pads at the end or cuts `[frames, bins]` to `target` frames (HF `ASTFeatureExtractor`).
pub fn pad_or_cut(fbank: &[f32], bins: usize, target: usize) -> Vec<f32> {
    let mut x = fbank[..fbank.len().min(target * bins)].to_vec();
    x.resize(target * bins, 0.0);
    x
}

/// `(x - mean) / (2 std)` in place (AST keeps inputs near mean 0, std 0.5).
pub fn normalize(x: &mut [f32], mean: f32, std: f32) {
    let scale = 1.0 / (2.0 * std);
    for v in x {
        *v = (*v - mean) * scale;
    }
}

/// Mean and standard deviation (population) of `values`, in f64.
pub fn mean_std(values: &[f32]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn pad_cut_normalise() {
        let x: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(pad_or_cut(&x, 2, 4), vec![0., 1., 2., 3., 4., 5., 0., 0.]);
        assert_eq!(pad_or_cut(&x, 2, 2), vec![0., 1., 2., 3.]);
        let mut y = vec![AUDIOSET_MEAN, AUDIOSET_MEAN + 2.0 * AUDIOSET_STD];
        normalize(&mut y, AUDIOSET_MEAN, AUDIOSET_STD);
        assert!((y[0]).abs() < 1e-6 && (y[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn spec_augment_masks_one_band_and_one_span_deterministically() {
        let spec = SpecAugment {
            freq_mask: 8,
            time_mask: 10,
        };
        let (frames, bins) = (50, 16);
        let run = |seed| {
            let mut x = vec![1f32; frames * bins];
            spec.apply(
                &mut x,
                frames,
                bins,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            );
            x
        };
        assert_eq!(run(3), run(3));
        let x = run(3);
        let zero_rows = x
            .chunks(bins)
            .filter(|r| r.iter().all(|&v| v == 0.0))
            .count();
        assert!(zero_rows < 10);
        let zero_cols = (0..bins)
            .filter(|&c| (0..frames).all(|t| x[t * bins + c] == 0.0))
            .count();
        assert!(zero_cols < 8);
    }

    #[test]
    fn cache_hits_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let audio = Audio {
            samples: (0..4000).map(|i| (i as f32 * 0.1).sin()).collect(),
            sample_rate: 16_000,
        };
        let source = AudioSource::Samples {
            origin: "tone".into(),
            audio: Arc::new(audio),
        };
        let cfg = AstFeatureConfig {
            target_frames: 30,
            ..Default::default()
        };
        let a = AstFeatures::new(cfg.clone(), Some(dir.path().into())).unwrap();
        let first = a.fbank(&source).unwrap();
        assert!(Arc::ptr_eq(&first, &a.fbank(&source).unwrap()));
        // A fresh extractor reads the disk copy.
        let b = AstFeatures::new(cfg, Some(dir.path().into())).unwrap();
        assert_eq!(*b.fbank(&source).unwrap(), *first);
        assert_eq!(b.input(&source, None).unwrap().len(), 30 * 128);
    }
}
