//! Music clips as the music-generation kind reads them: found (generated melodies, or the
//! folder format's styles), turned into the codec's semitone frames once, quantised into codes
//! by the `rvq-semitone` codec (fitted on training clips only, and cached), and batched for
//! MusicGen as prompts and delayed codes.
//!
//! A style's clips are cut to `music.clip_seconds` (shorter clips are skipped and counted), so
//! every clip has the same number of frames and every Fréchet distance compares frames of clips
//! of one length.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftbench_backbones::encodec::Encodec;
use peftbench_data_audio::music::codec::{self, Rvq, BANDS, SAMPLE_RATE};
use peftbench_data_audio::music::{folder, melodies, training_subset, MusicClip, MusicSplits};
use peftbench_methods::music_generation::delayed_labels;
use peftbench_suite::{DataFormat, DataSpec, MusicSpec, Suite};
use peftbench_train::{derive_seed, Batch, BatchSource};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::Paths;

/// Codec frames per second (`codec::HOP` at 32 kHz).
pub(crate) const FRAMES_PER_SECOND: f64 = SAMPLE_RATE as f64 / codec::HOP as f64;

/// Levels and codes per level of the `rvq-semitone` codec.
pub(crate) const CODEC_LEVELS: usize = 4;
pub(crate) const CODEC_CODES: usize = 128;
/// Frames the codec is fitted on at most (drawn evenly from the training clips).
const CODEC_FIT_FRAMES: usize = 12_000;

/// Seeds of the demo's melodies, by split, so train and test never share a tune.
const DEMO_TRAIN_SEED: u64 = 0x6d65_6c6f_0001;
const DEMO_TEST_SEED: u64 = 0x6d65_6c6f_0002;

/// The styles the melody generator knows, by their names in suites.
fn melody_style(name: &str) -> anyhow::Result<melodies::Style> {
    match name {
        "pentatonic" => Ok(melodies::Style::Pentatonic),
        "diatonic" => Ok(melodies::Style::Diatonic),
        other => anyhow::bail!(
            "the `melodies` generator has styles `pentatonic` and `diatonic`, not `{other}`"
        ),
    }
}

/// One clip in the codec's frames: `frames` × 88 semitone-band energies; and, when the codec is
/// EnCodec (which reads audio, not these frames), its codes.
#[derive(Debug, Clone)]
pub(crate) struct FramedClip {
    pub frames: Vec<[f32; BANDS]>,
    pub codes: Option<Vec<Vec<u32>>>,
    pub prompt: String,
    pub work: String,
}

/// How audio becomes the model's tokens and back (the suite's `music.codec`).
#[derive(Clone)]
pub(crate) enum Codec {
    RvqSemitone(Rvq),
    Encodec(std::sync::Arc<Encodec>),
}

impl Codec {
    /// A clip's codes `[codebooks][frames]`.
    pub fn encode(&self, clip: &FramedClip) -> anyhow::Result<Vec<Vec<u32>>> {
        match (self, &clip.codes) {
            (_, Some(codes)) => Ok(codes.clone()),
            (Codec::RvqSemitone(rvq), None) => Ok(rvq.encode(&clip.frames)),
            (Codec::Encodec(_), None) => {
                anyhow::bail!("an EnCodec clip is coded from its audio when it is read")
            }
        }
    }

    /// The semitone frames of codes (at most `frames` of them): the codec's own for
    /// `rvq-semitone`, those of the decoded audio for EnCodec.
    pub fn frames(&self, codes: &[Vec<u32>], frames: usize) -> anyhow::Result<Vec<[f32; BANDS]>> {
        match self {
            Codec::RvqSemitone(rvq) => Ok(rvq.decode(codes)?),
            Codec::Encodec(_) => {
                let mut f = codec::semitone_features(&self.audio(codes)?);
                f.truncate(frames);
                Ok(f)
            }
        }
    }

    /// The audio of codes at 32 kHz: resynthesised from the semitone frames, or EnCodec's.
    pub fn audio(&self, codes: &[Vec<u32>]) -> anyhow::Result<Vec<f32>> {
        match self {
            Codec::RvqSemitone(rvq) => Ok(codec::resynthesise(&rvq.decode(codes)?)),
            Codec::Encodec(e) => {
                let audio = e.decode(codes)?;
                peftbench_data_audio::resample(&audio, e.config().sampling_rate as u32, SAMPLE_RATE)
                    .map_err(anyhow::Error::msg)
            }
        }
    }
}

/// Where a style's clips come from.
#[derive(Debug, Clone)]
pub(crate) enum StyleSource {
    /// The melody generator's style, with the clips generated for training and for test
    /// (`data.train_examples`, `data.eval_examples`).
    Generated {
        style: melodies::Style,
        train: usize,
        test: usize,
    },
    /// A style folder's clips, as its jsonl files list them.
    Folder { root: PathBuf, splits: MusicSplits },
}

/// A style found: its name and where its clips are.
#[derive(Debug, Clone)]
pub(crate) struct LocatedStyle {
    pub name: String,
    pub source: StyleSource,
}

/// The data root of a music suite on disk.
fn data_root(suite_root: Option<&PathBuf>, paths: &Paths, task: &str) -> anyhow::Result<PathBuf> {
    suite_root
        .cloned()
        .or_else(|| paths.data_dir.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "music task `{task}` reads styles in the folder format but no data root is set: \
                 pass --data-dir DIR or set PEFTBENCH_DATA (the folder holding one subfolder per \
                 style; `ci/folk-songs.sh` writes the folk-song collection there)"
            )
        })
}

/// Finds style `name` for a suite reading `format` (its jsonl files read, no audio decoded).
pub(crate) fn locate_style(
    name: &str,
    data: &DataSpec,
    paths: &Paths,
) -> anyhow::Result<LocatedStyle> {
    let source = match data.format {
        DataFormat::Generated => StyleSource::Generated {
            style: melody_style(name)?,
            train: data.train_examples.unwrap_or(0),
            test: data.eval_examples.unwrap_or(0),
        },
        _ => {
            let root = data_root(data.root.as_ref(), paths, name)?;
            let splits = folder::load_style(&root, name)
                .map_err(|e| anyhow::anyhow!("style `{name}` under {}: {e}", root.display()))?;
            anyhow::ensure!(
                !splits.train.is_empty() && !splits.test.is_empty(),
                "style `{name}` under {} needs training and test clips ({} and {} listed)",
                root.display(),
                splits.train.len(),
                splits.test.len()
            );
            StyleSource::Folder { root, splits }
        }
    };
    Ok(LocatedStyle {
        name: name.to_string(),
        source,
    })
}

/// The source style and every task's target style of a music suite.
pub(crate) fn suite_styles(suite: &Suite, paths: &Paths) -> anyhow::Result<Vec<LocatedStyle>> {
    let music = music_spec_of(suite);
    let mut names: Vec<String> = vec![music.source_style.clone()];
    for task in &suite.tasks {
        if !names.contains(&task.name) {
            names.push(task.name.clone());
        }
    }
    names
        .iter()
        .map(|n| locate_style(n, &suite.data, paths))
        .collect()
}

fn music_spec_of(suite: &Suite) -> &MusicSpec {
    suite
        .music
        .as_ref()
        .expect("music suites have their `music` section")
}

/// Frames per clip for clips of `seconds`.
pub(crate) fn clip_frames(seconds: f64) -> usize {
    (seconds * FRAMES_PER_SECOND).round().max(1.0) as usize
}

/// A style's clips in frames, one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    Train,
    Test,
}

/// The clips of `split` of `style`, each cut to `seconds` and turned into frames (clips too
/// short are skipped; their number is returned beside the clips). `limit` keeps the first clips.
pub(crate) fn framed_clips(
    style: &LocatedStyle,
    split: Split,
    seconds: f64,
    limit: Option<usize>,
    encodec: Option<&Encodec>,
) -> anyhow::Result<(Vec<FramedClip>, usize)> {
    let frames = clip_frames(seconds);
    let samples = (seconds * f64::from(SAMPLE_RATE)).round() as usize;
    let frame_of = |audio: &[f32]| -> Vec<[f32; BANDS]> {
        let mut f = codec::semitone_features(&audio[..samples.min(audio.len())]);
        f.truncate(frames);
        f
    };
    // EnCodec reads the clip's audio at its own rate.
    let codes_of = |audio: &[f32]| -> anyhow::Result<Option<Vec<Vec<u32>>>> {
        let Some(e) = encodec else {
            return Ok(None);
        };
        let clip = &audio[..samples.min(audio.len())];
        let rate = e.config().sampling_rate as u32;
        let clip =
            peftbench_data_audio::resample(clip, SAMPLE_RATE, rate).map_err(anyhow::Error::msg)?;
        Ok(Some(e.encode(&clip)?))
    };
    match &style.source {
        StyleSource::Generated {
            style: s,
            train,
            test,
        } => {
            let (count, seed) = match split {
                Split::Train => (*train, DEMO_TRAIN_SEED),
                Split::Test => (*test, DEMO_TEST_SEED),
            };
            let count = limit.map_or(count, |l| l.min(count));
            anyhow::ensure!(
                f64::from(melodies::SECONDS) >= seconds,
                "generated melodies last {} s; `music.clip_seconds` {seconds} is longer",
                melodies::SECONDS
            );
            // The style joins the seed: melody `i` of one style is not melody `i` of the other
            // in another scale.
            let seed = derive_seed(&[seed, *s as u64]);
            let clips = melodies::generate(*s, count, seed)
                .into_par_iter()
                .map(|m| {
                    Ok(FramedClip {
                        frames: frame_of(&m.samples),
                        codes: codes_of(&m.samples)?,
                        prompt: m.prompt,
                        work: m.work,
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            Ok((clips, 0))
        }
        StyleSource::Folder { root, splits } => {
            let listed: &[MusicClip] = match split {
                Split::Train => &splits.train,
                Split::Test => &splits.test,
            };
            let listed = &listed[..limit.map_or(listed.len(), |l| l.min(listed.len()))];
            let decoded: Vec<anyhow::Result<Option<FramedClip>>> = listed
                .par_iter()
                .map(|clip| {
                    let origin = clip.audio.display().to_string();
                    let audio = peftbench_data_audio::decode_file(&clip.audio)
                        .and_then(|a| a.resampled(SAMPLE_RATE, &origin))
                        .map_err(|e| anyhow::anyhow!("style `{}`: {e}", style.name))?;
                    if audio.samples.len() < samples {
                        return Ok(None);
                    }
                    Ok(Some(FramedClip {
                        frames: frame_of(&audio.samples),
                        codes: codes_of(&audio.samples)?,
                        prompt: clip.prompt.clone(),
                        work: clip.work.clone(),
                    }))
                })
                .collect();
            let mut clips = Vec::with_capacity(listed.len());
            let mut short = 0;
            for c in decoded {
                match c? {
                    Some(c) => clips.push(c),
                    None => short += 1,
                }
            }
            anyhow::ensure!(
                !clips.is_empty(),
                "style `{}` under {}: none of its {} clips lasts {seconds} s",
                style.name,
                root.display(),
                listed.len()
            );
            Ok((clips, short))
        }
    }
}

/// The low-resource training set: `size` clips of whole works (nested across sizes for one
/// seed), or every clip.
pub(crate) fn training_clips(
    clips: &[FramedClip],
    size: Option<usize>,
    seed: u64,
) -> anyhow::Result<Vec<FramedClip>> {
    let Some(size) = size else {
        return Ok(clips.to_vec());
    };
    anyhow::ensure!(
        size <= clips.len(),
        "`music.train_clips` is {size}, and the target style has {} training clips of that length",
        clips.len()
    );
    let listed: Vec<MusicClip> = clips
        .iter()
        .enumerate()
        .map(|(i, c)| MusicClip {
            audio: PathBuf::from(i.to_string()),
            duration: None,
            sample_rate: None,
            prompt: c.prompt.clone(),
            work: c.work.clone(),
            metadata: Default::default(),
        })
        .collect();
    let chosen = training_subset(&listed, size, seed)?;
    Ok(chosen
        .iter()
        .map(|c| {
            clips[c
                .audio
                .to_string_lossy()
                .parse::<usize>()
                .expect("an index")]
            .clone()
        })
        .collect())
}

/// The codec fitted on `clips` (training clips only, never a test split), cached under
/// the project cache by a fingerprint of the frames it is fitted on.
pub(crate) fn fitted_codec(
    clips: &[&FramedClip],
    paths: &Paths,
    quiet: bool,
) -> anyhow::Result<(Rvq, String)> {
    let total: usize = clips.iter().map(|c| c.frames.len()).sum();
    anyhow::ensure!(total > 0, "no training frames to fit the codec on");
    let stride = total.div_ceil(CODEC_FIT_FRAMES).max(1);
    let frames: Vec<[f32; BANDS]> = clips
        .iter()
        .flat_map(|c| c.frames.iter())
        .step_by(stride)
        .copied()
        .collect();
    let mut hasher = Sha256::new();
    hasher.update(format!("rvq-semitone-v1:{CODEC_LEVELS}x{CODEC_CODES}:").as_bytes());
    for f in &frames {
        for v in f {
            hasher.update(v.to_le_bytes());
        }
    }
    let fingerprint: String = hasher
        .finalize()
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = paths
        .cache
        .join("music-codec")
        .join(format!("rvq-semitone-{fingerprint}.safetensors"));
    if path.is_file() {
        if let Ok(rvq) = Rvq::load(&path) {
            return Ok((rvq, fingerprint));
        }
    }
    let started = std::time::Instant::now();
    let rvq = Rvq::fit(&frames, CODEC_LEVELS, CODEC_CODES, 0)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let staging = path.with_extension(format!("staging-{}", std::process::id()));
    rvq.save(&staging)?;
    std::fs::rename(&staging, &path)?;
    if !quiet {
        eprintln!(
            "codec rvq-semitone ({CODEC_LEVELS} levels of {CODEC_CODES} codes) fitted on {} \
             training frames in {:.1} s; cached in {}",
            frames.len(),
            started.elapsed().as_secs_f64(),
            path.display()
        );
    }
    Ok((rvq, fingerprint))
}

/// One clip as the model reads it: prompt token ids (end token last) and codes `[K][frames]`.
#[derive(Debug, Clone)]
pub(crate) struct TokenClip {
    pub prompt: Vec<u32>,
    pub codes: Vec<Vec<u32>>,
}

/// `clips`' prompts tokenised (cut to `max_tokens`, the end token kept last) and frames coded.
pub(crate) fn tokenise(
    clips: &[FramedClip],
    tokenizer: &tokenizers::Tokenizer,
    codec: &Codec,
    max_tokens: usize,
) -> anyhow::Result<Vec<TokenClip>> {
    clips
        .par_iter()
        .map(|c| {
            Ok(TokenClip {
                prompt: prompt_ids(tokenizer, &c.prompt, max_tokens)?,
                codes: codec.encode(c)?,
            })
        })
        .collect()
}

/// A prompt's token ids with the tokenizer's special tokens (T5's end token), cut to
/// `max_tokens` with the last token kept.
pub(crate) fn prompt_ids(
    tokenizer: &tokenizers::Tokenizer,
    prompt: &str,
    max_tokens: usize,
) -> anyhow::Result<Vec<u32>> {
    let encoding = tokenizer
        .encode(prompt, true)
        .map_err(|e| anyhow::anyhow!("tokenising the prompt {prompt:?}: {e}"))?;
    let mut ids = encoding.get_ids().to_vec();
    if ids.len() > max_tokens {
        let last = *ids.last().expect("longer than max_tokens >= 1");
        ids.truncate(max_tokens - 1);
        ids.push(last);
    }
    if ids.is_empty() {
        ids.push(0);
    }
    Ok(ids)
}

/// The share of training examples whose prompt is dropped (MusicGen's condition dropout), so
/// the model also learns the unconditional distribution that classifier-free guidance uses.
pub(crate) const PROMPT_DROPOUT: f64 = 0.1;

/// Purpose mixed into an epoch's shuffle seed for the prompt dropout ("drop").
const PROMPT_DROPOUT_DRAW: u64 = 0x6472_6f70;

/// Clips as MusicGen batches: prompts right-padded with `text_pad` and masked, codes delayed
/// with the decoder's pad token ([`delayed_labels`]). Training batches (a shuffle seed) drop
/// [`PROMPT_DROPOUT`] of the prompts: their mask is all zeros, which the model reads as the
/// null prompt of guidance.
pub(crate) struct MusicBatches<'a> {
    pub clips: &'a [TokenClip],
    pub text_pad: u32,
    pub code_pad: u32,
    pub device: &'a Device,
}

impl MusicBatches<'_> {
    fn batch(&self, rows: &[usize], drop_seed: Option<u64>) -> anyhow::Result<Batch> {
        let b = rows.len();
        let text_len = rows
            .iter()
            .map(|&r| self.clips[r].prompt.len())
            .max()
            .unwrap_or(1);
        let labels: Vec<Vec<Vec<u32>>> = rows
            .iter()
            .map(|&r| delayed_labels(&self.clips[r].codes, self.code_pad))
            .collect();
        let k = labels[0].len();
        let steps = labels.iter().map(|l| l[0].len()).max().unwrap_or(1);
        let mut rng = drop_seed.map(rand_chacha::ChaCha8Rng::seed_from_u64);
        let mut ids = Vec::with_capacity(b * text_len);
        let mut mask = Vec::with_capacity(b * text_len);
        let mut flat = Vec::with_capacity(b * k * steps);
        for (&r, delayed) in rows.iter().zip(&labels) {
            let prompt = &self.clips[r].prompt;
            let dropped = rng.as_mut().is_some_and(|g| g.random_bool(PROMPT_DROPOUT));
            ids.extend(prompt.iter().copied());
            ids.extend(std::iter::repeat_n(self.text_pad, text_len - prompt.len()));
            let real = if dropped { 0 } else { 1 };
            mask.extend(std::iter::repeat_n(real, prompt.len()));
            mask.extend(std::iter::repeat_n(0u32, text_len - prompt.len()));
            for row in delayed {
                flat.extend(row.iter().copied());
                flat.extend(std::iter::repeat_n(self.code_pad, steps - row.len()));
            }
        }
        let mut batch = Batch::new(
            Tensor::from_vec(ids, (b, text_len), self.device)?,
            Tensor::from_vec(flat, (b, k, steps), self.device)?,
        );
        batch.mask = Some(Tensor::from_vec(mask, (b, text_len), self.device)?);
        Ok(batch)
    }
}

impl BatchSource for MusicBatches<'_> {
    fn num_examples(&self) -> usize {
        self.clips.len()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let mut order: Vec<usize> = (0..self.clips.len()).collect();
        if let Some(seed) = shuffle_seed {
            order = peftbench_core::shuffle::permutation(self.clips.len(), seed);
        }
        let chunks: Vec<Vec<usize>> = order
            .chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        Box::new(chunks.into_iter().enumerate().map(move |(i, rows)| {
            let drop = shuffle_seed.map(|s| derive_seed(&[s, PROMPT_DROPOUT_DRAW, i as u64]));
            self.batch(&rows, drop)
        }))
    }
}

/// A fingerprint of clips' prompts and frames (what a pretrained base depends on).
pub(crate) fn fingerprint(clips: &[FramedClip]) -> String {
    let mut hasher = Sha256::new();
    for c in clips {
        hasher.update(c.prompt.as_bytes());
        hasher.update([0]);
        for f in &c.frames {
            for v in f {
                hasher.update(v.to_le_bytes());
            }
        }
    }
    hasher
        .finalize()
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every distinct word-level prompt of `clips`, for building a demo tokenizer.
pub(crate) fn prompts(clips: &[&FramedClip]) -> Vec<String> {
    clips
        .iter()
        .map(|c| c.prompt.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Where a run's generated clips are written, beside its adapter.
pub(crate) fn generated_dir(artifact_dir: &Path) -> PathBuf {
    artifact_dir.join("generated")
}
