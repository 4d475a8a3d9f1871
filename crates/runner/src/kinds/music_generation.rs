//! Music generation: a text-to-music model in MusicGen's layout adapted to a target style from
//! a few clips (section `music`; each task is a target style), after "Exploring Adapter Design
//! Tradeoffs for Low Resource Music Generation" (Mehta, Chauhan, Choudhury, 2025).
//!
//! What every run shares ([`MusicEncoders`], built once per sweep): the codec fitted on the
//! source style's training clips and the target clips the runs train on (so it has heard no more
//! of a target than its runs; never a test split), the prompt tokenizer, and, for the
//! `demo-musicgen` backbone, the base model pretrained on the source style. A run attaches its
//! method, trains on the target's `music.train_clips` clips with MusicGen's loss (`zero-shot`,
//! which trains nothing, scores the unadapted model), then:
//!
//! - scores held-out clips teacher-forced, per codebook as AudioCraft logs them: `ce_q1..K` and
//!   their mean `ce` on the target's test clips, `ce_source` on the source style's (what
//!   adaptation forgot), the unadapted model's `ce_base` and the primary metric `ce_reduction`
//!   (`1 − ce / ce_base`, the share of the base model's cross-entropy the adaptation removed; a
//!   fraction, higher is better, as every primary metric);
//! - generates `music.generation.clips` clips from the target's test prompts (guidance, top-k,
//!   fixed seeds), decodes them with the codec, writes the first `music.wav_clips` as WAV under
//!   the run's artifact folder (`generated/`), and measures them against the target's test clips
//!   passed through the same codec (AudioCraft's `use_gt`): the Fréchet distance of their
//!   semitone frames to the second half of the test clips `fd_codec`, with its noise floor
//!   `fd_codec_floor` (the first half against the second) and the source style's distance
//!   `fd_codec_source` (as many source clips against the second half), FAD∞ `fd_codec_inf`, the
//!   kernel distance `kd_codec`; the total variation between the mean key-normalised pitch-class
//!   profiles of the generated clips and the target's or the source's (`pitch_class_tv_target`,
//!   `pitch_class_tv_source`; each clip in its own key), and the clips' mean non-pentatonic
//!   share of energy; and the distinct-4-gram rate of codebook 0 (redundancy). The sizes
//!   (`generated_clips`, `reference_clips`, `clip_seconds`) are recorded beside them: these
//!   distances are over the codec's 88 semitone bands, never a published FAD.
//! - with `music.embedding` (e.g. `crepe-tiny`), the same distances again in that pretrained
//!   network's space over the clips' audio (generated clips decoded by the codec, test clips
//!   through it): `fd_<name>`, `fd_<name>_floor`, `fd_<name>_source`, `fd_<name>_inf`,
//!   `kd_<name>` (`crate::audio_embedding`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use peftbench_backbones::musicgen::GenerationOptions;
use peftbench_backbones::TextEncoder;
use peftbench_core::SeededInit;
use peftbench_data_audio::music::codec::{band_power, BANDS, LOWEST_NOTE, SAMPLE_RATE};
use peftbench_data_audio::music::wav::{normalise_peak, write_wav};
use peftbench_methods::MusicModel;
use peftbench_metrics::frechet::{
    frechet_distance, frechet_distance_infinity, kernel_distance, Embeddings, GaussianStats,
};
use peftbench_metrics::pitch_class::{
    key_normalised, non_pentatonic_fraction, pitch_class_histogram, total_variation,
};
use peftbench_metrics::token_diversity::distinct_ngram_rate;
use peftbench_suite::{MusicCodec, MusicSpec, RunSpec, Suite};
use peftbench_train::{derive_seed, train, TrainOutcome, TrainReport};

use super::Kind;
use crate::audio_embedding::AudioEmbedder;
use crate::backbone::{BackboneModel, LoadedBackbone};
use crate::demo_music::{self, per_codebook_cross_entropy, TEXT_PAD};
use crate::music::{
    clip_frames, fitted_codec, framed_clips, locate_style, prompts, suite_styles, tokenise,
    training_clips, Codec, FramedClip, LocatedStyle, MusicBatches, Split, TokenClip,
};
use crate::run::{train_config, Finished, RunContext, Trained, MODEL_INIT};
use crate::Paths;

pub(crate) struct MusicGeneration;

/// The primary metric: the share of the base model's target cross-entropy removed.
pub(crate) const CE_REDUCTION: &str = "ce_reduction";

/// Purpose mixed into the run seed for generation ("gen").
const GENERATION: u64 = 0x0067_656e;
/// The training subset is the same for every run of a task (and nested across sizes).
const SUBSET_SEED: u64 = 0;
/// FAD∞'s sample sizes (fadtk's defaults), and its resampling seed.
const FD_INF_MIN: usize = 500;
const FD_INF_STEPS: usize = 25;
/// Frames per set the kernel distance reads at most (evenly spaced; it is quadratic in them).
const KERNEL_FRAMES: usize = 1500;

/// What every run of the suite shares.
pub(crate) struct MusicEncoders {
    codec: Codec,
    tokenizer: tokenizers::Tokenizer,
    /// Each style's clips in frames, by name (source first): training and test.
    styles: BTreeMap<String, (Vec<FramedClip>, Vec<FramedClip>)>,
    source: String,
    /// `music.embedding`'s network, loaded once.
    embedder: Option<Arc<AudioEmbedder>>,
}

/// A target style's runs' inputs.
pub(crate) struct PreparedMusic {
    codec: Codec,
    /// To write the prompts of the clips generated.
    tokenizer: tokenizers::Tokenizer,
    train: Vec<TokenClip>,
    test: Vec<TokenClip>,
    source_test: Vec<TokenClip>,
    /// The test clips' frames through the codec (what generated clips are compared with).
    reference: Vec<Vec<[f32; BANDS]>>,
    source_reference: Vec<Vec<[f32; BANDS]>>,
    /// Measures of the references alone, the same for every run.
    constants: BTreeMap<String, f64>,
    /// With `music.embedding`: the second half of the test clips through the codec, embedded.
    embedded: Option<EmbeddedReference>,
}

/// What generated clips are compared with in a pretrained embedding's space.
struct EmbeddedReference {
    embedder: Arc<AudioEmbedder>,
    /// The test clips' second half through the codec, every frame embedded.
    second: Embeddings,
    second_stats: GaussianStats,
}

fn music(spec: &RunSpec) -> &MusicSpec {
    spec.music
        .as_ref()
        .expect("music runs carry their `music` section")
}

impl Kind for MusicGeneration {
    type Encoders = MusicEncoders;
    type Located = LocatedStyle;
    type Prepared = PreparedMusic;

    fn locate(spec: &RunSpec, paths: &Paths, _quiet: bool) -> anyhow::Result<LocatedStyle> {
        let m = music(spec);
        // The source style too, so a missing one fails before anything trains.
        locate_style(&m.source_style, &spec.data, paths)?;
        locate_style(&spec.task.name, &spec.data, paths)
    }

    fn check_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
        backbone.check_modality(spec)
    }

    fn encoders(
        suite: &Suite,
        backbone: &mut LoadedBackbone,
        paths: &Paths,
    ) -> anyhow::Result<MusicEncoders> {
        let m = suite.music.as_ref().expect("music suites have the section");
        let started = Instant::now();
        let encodec = match m.codec {
            MusicCodec::RvqSemitone => None,
            MusicCodec::Encodec => Some(std::sync::Arc::new(load_encodec(suite, paths)?)),
        };
        let mut styles = BTreeMap::new();
        for style in suite_styles(suite, paths)? {
            let (train, short_train) = framed_clips(
                &style,
                Split::Train,
                m.clip_seconds,
                None,
                encodec.as_deref(),
            )?;
            let (test, short_test) = framed_clips(
                &style,
                Split::Test,
                m.clip_seconds,
                m.test_clips,
                encodec.as_deref(),
            )?;
            if short_train + short_test > 0 {
                eprintln!(
                    "style `{}`: {} training and {} test clips shorter than {} s skipped",
                    style.name, short_train, short_test, m.clip_seconds
                );
            }
            styles.insert(style.name.clone(), (train, test));
        }
        // The codec sees the source style's training clips and, of each target style, only the
        // clips its runs train on: a low-resource run's codec has not heard more of the target.
        let mut fit: Vec<FramedClip> = styles[&m.source_style].0.clone();
        for task in &suite.tasks {
            if task.name != m.source_style {
                let pool = &styles[&task.name].0;
                fit.extend(training_clips(pool, m.train_clips, SUBSET_SEED)?);
            }
        }
        let fit: Vec<&FramedClip> = fit.iter().collect();
        let (codec, codec_id) = match encodec {
            Some(e) => (Codec::Encodec(e), "encodec".to_string()),
            None => {
                let (rvq, id) = fitted_codec(&fit, paths, false)?;
                (Codec::RvqSemitone(rvq), id)
            }
        };
        let training: Vec<&FramedClip> = styles.values().flat_map(|(train, _)| train).collect();
        eprintln!(
            "music data: {} styles, {} training clips, read and framed in {:.1} s",
            styles.len(),
            training.len(),
            started.elapsed().as_secs_f64()
        );
        let tokenizer = match &backbone.tokenizer {
            Some(path) => tokenizers::Tokenizer::from_file(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            None => crate::demo_t5::word_level_tokenizer(&prompts(&training), 0)?,
        };
        let source = m.source_style.clone();
        if backbone.name == demo_music::DEMO_MUSICGEN_REPO_ID {
            let (train, test) = &styles[&source];
            let train = tokenise(train, &tokenizer, &codec, m.max_prompt_tokens)?;
            let test = tokenise(test, &tokenizer, &codec, m.max_prompt_tokens)?;
            let identity = serde_json::json!({
                "codec": codec_id,
                "source": crate::music::fingerprint(&styles[&source].0),
                "clip_seconds": m.clip_seconds,
                "max_prompt_tokens": m.max_prompt_tokens,
            });
            let BackboneModel::Musicgen(placeholder) = &backbone.model else {
                anyhow::bail!("`demo-musicgen` loads as a MusicGen");
            };
            let device = placeholder.text_encoder().device().clone();
            let model = demo_music::pretrained(
                paths,
                &tokenizer,
                &train,
                &test,
                &identity,
                &format!("{} training clips of style `{source}`", train.len()),
                &device,
                false,
            )?;
            backbone.model = BackboneModel::Musicgen(Box::new(model));
        }
        let BackboneModel::Musicgen(model) = &backbone.model else {
            anyhow::bail!("music suites adapt a MusicGen backbone");
        };
        let dec = &model.config().decoder;
        let (levels, codes) = match &codec {
            Codec::RvqSemitone(_) => (crate::music::CODEC_LEVELS, crate::music::CODEC_CODES),
            Codec::Encodec(e) => (e.codebooks(), e.config().codebook_size),
        };
        anyhow::ensure!(
            dec.vocab_size == codes && dec.num_codebooks == levels,
            "backbone `{}` reads {} codebooks of {} codes, and codec `{}` writes {levels} of \
             {codes}: `rvq-semitone` pairs with `demo-musicgen`, `encodec` with a MusicGen \
             checkpoint (its own `audio_encoder`)",
            backbone.name,
            dec.num_codebooks,
            dec.vocab_size,
            match m.codec {
                MusicCodec::RvqSemitone => "rvq-semitone",
                MusicCodec::Encodec => "encodec",
            }
        );
        // The embedding's weights are found before anything trains.
        let embedder = match &m.embedding {
            Some(e) => Some(Arc::new(AudioEmbedder::load(
                e.name,
                e.hop_ms,
                &Device::Cpu,
            )?)),
            None => None,
        };
        Ok(MusicEncoders {
            codec,
            tokenizer,
            styles,
            source,
            embedder,
        })
    }

    fn text_encoder(_: &MusicEncoders) -> Option<&TextEncoder> {
        None
    }

    fn prepare(
        spec: &RunSpec,
        located: &LocatedStyle,
        encoders: &MusicEncoders,
        _device: &Device,
        quiet: bool,
    ) -> anyhow::Result<PreparedMusic> {
        let m = music(spec);
        let (train_pool, test) = &encoders.styles[&located.name];
        let (_, source_test) = &encoders.styles[&encoders.source];
        let mut train = training_clips(train_pool, m.train_clips, SUBSET_SEED)?;
        let mut test = test.clone();
        let mut source_test = source_test.clone();
        if let Some(limit) = spec.limit {
            train.truncate(limit);
            test.truncate(limit.max(2));
            source_test.truncate(limit.max(2));
        }
        let tokenise = |clips: &[FramedClip]| {
            tokenise(
                clips,
                &encoders.tokenizer,
                &encoders.codec,
                m.max_prompt_tokens,
            )
        };
        let (train, test_tokens, source_tokens) =
            (tokenise(&train)?, tokenise(&test)?, tokenise(&source_test)?);
        let frames = clip_frames(m.clip_seconds);
        let round_trip = |clips: &[TokenClip]| -> anyhow::Result<Vec<Vec<[f32; BANDS]>>> {
            clips
                .iter()
                .map(|c| encoders.codec.frames(&c.codes, frames))
                .collect()
        };
        let reference = round_trip(&test_tokens)?;
        let source_reference = round_trip(&source_tokens)?;
        let mut constants =
            reference_measures(&reference, &source_reference, &test_tokens, &train)?;
        let embedded = match &encoders.embedder {
            Some(embedder) => {
                let started = Instant::now();
                let embed = |clips: &[TokenClip]| -> anyhow::Result<Embeddings> {
                    let audio: Vec<Vec<f32>> = clips
                        .iter()
                        .map(|c| encoders.codec.audio(&c.codes))
                        .collect::<anyhow::Result<_>>()?;
                    Ok(embedder.embed_clips(&audio, SAMPLE_RATE)?.embeddings)
                };
                // The same halves and source clips as the codec's distances.
                let (first, second) = halves(&test_tokens);
                let source = embed(&source_tokens[..first.len().min(source_tokens.len())])?;
                let (first, second) = (embed(first)?, embed(second)?);
                let second_stats = stats(&second)?;
                constants.extend(reference_distances(
                    &embedder.name().metric_stem(),
                    &first,
                    &source,
                    &second_stats,
                )?);
                if !quiet {
                    eprintln!(
                        "music task `{}`: test and source clips embedded by {} in {:.1} s",
                        spec.task.name,
                        embedder.name(),
                        started.elapsed().as_secs_f64()
                    );
                }
                Some(EmbeddedReference {
                    embedder: embedder.clone(),
                    second,
                    second_stats,
                })
            }
            None => None,
        };
        if !quiet {
            eprintln!(
                "music task `{}`: {} training clips (of {}), {} test clips, {} source test clips",
                spec.task.name,
                train.len(),
                train_pool.len(),
                test_tokens.len(),
                source_tokens.len()
            );
        }
        Ok(PreparedMusic {
            codec: encoders.codec.clone(),
            tokenizer: encoders.tokenizer.clone(),
            train,
            test: test_tokens,
            source_test: source_tokens,
            reference,
            source_reference,
            constants,
            embedded,
        })
    }

    fn run(
        spec: &RunSpec,
        task: &PreparedMusic,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished> {
        let m = music(spec);
        let BackboneModel::Musicgen(base) = &ctx.backbone.model else {
            anyhow::bail!("music runs adapt a MusicGen backbone");
        };
        let code_pad = base.config().decoder.pad_token_id;
        let batches = |clips| MusicBatches {
            clips,
            text_pad: TEXT_PAD,
            code_pad,
            device: ctx.device,
        };
        let init = SeededInit::new(derive_seed(&[spec.seed, MODEL_INIT]), ctx.device);
        let model = MusicModel::new(&spec.method, &spec.params, base.as_ref().clone(), &init)?;
        anyhow::ensure!(
            model.adaptation().phases().is_empty() && model.adaptation().calibration().is_none(),
            "method `{}` trains in phases or calibrates on data first, which music runs do not \
             support",
            spec.method
        );
        // A method that trains nothing (`zero-shot`) is scored as the base model is.
        let zero_shot = model.trainable_count() == 0;
        let cfg = train_config(spec);
        let outcome = if zero_shot {
            TrainOutcome::Completed(TrainReport {
                history: Vec::new(),
                selected_epoch: 0,
                train_seconds: 0.0,
                examples_per_second: 0.0,
                steps: 0,
            })
        } else {
            train(&model, &batches(&task.train), None, &cfg, progress)?
        };
        let trainable = model.trainable_count() as u64;
        let trained = match Trained::save_with(
            spec,
            outcome,
            trainable,
            model.total_count() as u64,
            ctx,
            |dir| model.save(dir, &ctx.backbone.name),
        )? {
            Ok(trained) => trained,
            Err(diverged) => return Ok(diverged),
        };

        let started = Instant::now();
        let mut metrics = task.constants.clone();
        let unadapted =
            MusicModel::new("full", &serde_json::json!({}), base.as_ref().clone(), &init)?;
        let target = per_codebook_cross_entropy(&model, &batches(&task.test))?;
        let base_target = per_codebook_cross_entropy(&unadapted, &batches(&task.test))?;
        let source = per_codebook_cross_entropy(&model, &batches(&task.source_test))?;
        let base_source = per_codebook_cross_entropy(&unadapted, &batches(&task.source_test))?;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        for (k, ce) in target.iter().enumerate() {
            metrics.insert(format!("ce_q{}", k + 1), *ce);
            metrics.insert(format!("ppl_q{}", k + 1), ce.exp());
        }
        let (ce, ce_base) = (mean(&target), mean(&base_target));
        metrics.insert("ce".into(), ce);
        metrics.insert("ppl".into(), ce.exp());
        metrics.insert("ce_base".into(), ce_base);
        metrics.insert(CE_REDUCTION.into(), 1.0 - ce / ce_base);
        metrics.insert("ce_source".into(), mean(&source));
        metrics.insert("ce_source_base".into(), mean(&base_source));
        metrics.insert("forgetting_ce".into(), mean(&source) - mean(&base_source));

        // Generation from the prompts of the first half of the target's test clips, in order,
        // cycled to the fixed count: the distances are taken against the second half, which the
        // generated clips must not have been prompted with (neither was the noise floor).
        let g = &m.generation;
        let (prompt_half, _) = halves(&task.test);
        let prompts: Vec<&TokenClip> = prompt_half.iter().cycle().take(g.clips).collect();
        // Semitone frames (25 a second) for the measures; codec frames (the clips' own length in
        // tokens: 25 a second for `rvq-semitone`, 50 for EnCodec) for the generation.
        let frames = clip_frames(m.clip_seconds);
        let code_frames = task.test.first().map_or(frames, |c| c.codes[0].len());
        let codebooks = base.config().decoder.num_codebooks;
        let options = GenerationOptions {
            max_new_tokens: code_frames + codebooks - 1,
            guidance_scale: g.guidance_scale,
            top_k: Some(g.top_k),
            temperature: g.temperature,
            seed: derive_seed(&[spec.seed, GENERATION]),
        };
        let (ids, mask) = prompt_batch(&prompts, ctx.device)?;
        let codes = model
            .generate(&ids, Some(&mask), &options)?
            .to_vec3::<u32>()?;
        let generated: Vec<Vec<[f32; BANDS]>> = codes
            .iter()
            .map(|c| task.codec.frames(c, frames))
            .collect::<anyhow::Result<_>>()?;
        metrics.extend(generated_measures(
            &generated,
            &codes,
            &task.reference,
            &task.source_reference,
            derive_seed(&[spec.seed, GENERATION]),
        )?);
        metrics.insert("generated_clips".into(), generated.len() as f64);
        // The clips the distances are taken against (the test clips' second half).
        metrics.insert(
            "reference_clips".into(),
            halves(&task.reference).1.len() as f64,
        );
        metrics.insert("clip_seconds".into(), m.clip_seconds);
        // Audio only for the clips written (resynthesis costs more than the measures), or for
        // every clip when an embedding measures it.
        let audio_clips = if task.embedded.is_some() {
            codes.len()
        } else {
            m.wav_clips
        };
        let mut audio: Vec<Vec<f32>> = codes
            .iter()
            .take(audio_clips)
            .map(|c| task.codec.audio(c))
            .collect::<anyhow::Result<_>>()?;
        if let Some(reference) = &task.embedded {
            let generated = reference.embedder.embed_clips(&audio, SAMPLE_RATE)?;
            metrics.extend(distances(
                &reference.embedder.name().metric_stem(),
                &generated.embeddings,
                &reference.second,
                &reference.second_stats,
                derive_seed(&[spec.seed, GENERATION]),
            )?);
        }
        audio.truncate(m.wav_clips);
        write_clips(
            &crate::music::generated_dir(&trained.adapter_dir),
            &audio,
            &prompts
                .iter()
                .map(|p| decode_prompt(&task.tokenizer, &p.prompt))
                .collect::<Vec<_>>(),
        )?;
        Ok(Finished::completed(
            &trained,
            ctx,
            metrics,
            started.elapsed().as_secs_f64(),
            None,
        ))
    }

    fn primary_metric(_: &RunSpec) -> String {
        CE_REDUCTION.into()
    }
}

/// Prompts `[B, S]` right-padded with the text pad token, and their 0/1 mask.
fn prompt_batch(prompts: &[&TokenClip], device: &Device) -> anyhow::Result<(Tensor, Tensor)> {
    let len = prompts.iter().map(|p| p.prompt.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(prompts.len() * len);
    let mut mask = Vec::with_capacity(prompts.len() * len);
    for p in prompts {
        ids.extend(p.prompt.iter().copied());
        ids.extend(std::iter::repeat_n(TEXT_PAD, len - p.prompt.len()));
        mask.extend(std::iter::repeat_n(1u32, p.prompt.len()));
        mask.extend(std::iter::repeat_n(0u32, len - p.prompt.len()));
    }
    Ok((
        Tensor::from_vec(ids, (prompts.len(), len), device)?,
        Tensor::from_vec(mask, (prompts.len(), len), device)?,
    ))
}

/// Every frame of `clips` as one set of 88-value embeddings.
fn frame_set(clips: &[Vec<[f32; BANDS]>]) -> anyhow::Result<Embeddings> {
    let values: Vec<f64> = clips
        .iter()
        .flatten()
        .flat_map(|f| f.iter().map(|&v| f64::from(v)))
        .collect();
    Embeddings::new(values.len() / BANDS, BANDS, values).map_err(anyhow::Error::msg)
}

fn stats(set: &Embeddings) -> anyhow::Result<GaussianStats> {
    GaussianStats::of(set).map_err(anyhow::Error::msg)
}

/// Each clip's pitch-class histogram of its band powers (the frames hold `log1p(100 · P)`,
/// whose compressed floor would flatten it).
fn clip_histograms(clips: &[Vec<[f32; BANDS]>]) -> Vec<[f64; 12]> {
    clips
        .iter()
        .map(|frames| {
            let powers: Vec<[f32; BANDS]> = frames.iter().map(band_power).collect();
            pitch_class_histogram(&powers, LOWEST_NOTE)
        })
        .collect()
}

/// The mean of clips' key-normalised pitch-class profiles (each clip in its own key).
fn profile(clips: &[Vec<[f32; BANDS]>]) -> [f64; 12] {
    let histograms = clip_histograms(clips);
    let mut mean = [0f64; 12];
    for h in &histograms {
        for (m, v) in mean.iter_mut().zip(key_normalised(h)) {
            *m += v / histograms.len() as f64;
        }
    }
    mean
}

/// The mean over clips of each clip's non-pentatonic share (silent clips left out).
fn non_pentatonic(clips: &[Vec<[f32; BANDS]>]) -> Option<f64> {
    let shares: Vec<f64> = clip_histograms(clips)
        .iter()
        .filter_map(non_pentatonic_fraction)
        .collect();
    (!shares.is_empty()).then(|| shares.iter().sum::<f64>() / shares.len() as f64)
}

/// The test clips' first and second halves: distances of generated clips are taken against the
/// second, and the first against the second is their noise floor (equal set sizes when as many
/// clips are generated as half the test clips).
fn halves<T>(clips: &[T]) -> (&[T], &[T]) {
    clips.split_at(clips.len() / 2)
}

/// Codebook 0's tokens of each clip.
fn first_codebook(clips: &[TokenClip]) -> Vec<Vec<u32>> {
    clips.iter().map(|c| c.codes[0].clone()).collect()
}

/// What the references alone give, the same in every run of a task: the noise floor of the
/// Fréchet distance (the test clips' first half against their second), the source's distance,
/// the references' pitch measures and redundancy, and the cross-entropy of a unigram model of
/// each codebook fitted on the training clips (add-one smoothing): the floor a model that
/// ignores context reaches.
fn reference_measures(
    reference: &[Vec<[f32; BANDS]>],
    source: &[Vec<[f32; BANDS]>],
    test: &[TokenClip],
    train: &[TokenClip],
) -> anyhow::Result<BTreeMap<String, f64>> {
    let (first, second) = halves(reference);
    let mut out = reference_distances(
        "codec",
        &frame_set(first)?,
        &frame_set(&source[..first.len().min(source.len())])?,
        &stats(&frame_set(second)?)?,
    )?;
    out.insert(
        "pitch_class_tv_source_reference".into(),
        total_variation(&profile(source), &profile(reference)),
    );
    if let Some(f) = non_pentatonic(reference) {
        out.insert("non_pentatonic_reference".into(), f);
    }
    if let Some(f) = non_pentatonic(source) {
        out.insert("non_pentatonic_source_reference".into(), f);
    }
    // On the second half, as many clips as are compared with (the rate falls as clips are added).
    if let Some(r) = distinct_ngram_rate(&first_codebook(halves(test).1), 4) {
        out.insert("distinct_4gram_reference".into(), r);
    }
    let k = train.first().map_or(0, |c| c.codes.len());
    let mut unigram = 0.0;
    for q in 0..k {
        let mut counts: BTreeMap<u32, f64> = BTreeMap::new();
        let mut total = 0.0;
        for c in train {
            for &t in &c.codes[q] {
                *counts.entry(t).or_default() += 1.0;
                total += 1.0;
            }
        }
        let vocab = crate::music::CODEC_CODES as f64;
        let (mut nll, mut n) = (0f64, 0f64);
        for c in test {
            for &t in &c.codes[q] {
                let p = (counts.get(&t).copied().unwrap_or(0.0) + 1.0) / (total + vocab);
                nll -= p.ln();
                n += 1.0;
            }
        }
        unigram += nll / n.max(1.0);
    }
    if k > 0 {
        out.insert("ce_unigram".into(), unigram / k as f64);
    }
    Ok(out)
}

/// The measures of generated clips (frames through the codec, and their codes) against the
/// target's references and the source's.
fn generated_measures(
    generated: &[Vec<[f32; BANDS]>],
    codes: &[Vec<Vec<u32>>],
    reference: &[Vec<[f32; BANDS]>],
    source: &[Vec<[f32; BANDS]>],
    seed: u64,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let (_, second) = halves(reference);
    let second = frame_set(second)?;
    let mut out = distances(
        "codec",
        &frame_set(generated)?,
        &second,
        &stats(&second)?,
        seed,
    )?;
    let mine = profile(generated);
    out.insert(
        "pitch_class_tv_target".into(),
        total_variation(&mine, &profile(reference)),
    );
    out.insert(
        "pitch_class_tv_source".into(),
        total_variation(&mine, &profile(source)),
    );
    if let Some(f) = non_pentatonic(generated) {
        out.insert("non_pentatonic".into(), f);
    }
    let first: Vec<Vec<u32>> = codes.iter().map(|c| c[0].clone()).collect();
    if let Some(r) = distinct_ngram_rate(&first, 4) {
        out.insert("distinct_4gram".into(), r);
    }
    Ok(out)
}

/// A generated set against the reference set (the test clips' second half) in one embedding
/// space, named by `stem`: the Fréchet distance `fd_<stem>`, FAD∞ `fd_<stem>_inf` (with more than
/// `FD_INF_MIN` embeddings) and the kernel distance `kd_<stem>` (on at most `KERNEL_FRAMES` of
/// each, evenly spaced).
fn distances(
    stem: &str,
    generated: &Embeddings,
    reference: &Embeddings,
    reference_stats: &GaussianStats,
    seed: u64,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    out.insert(
        format!("fd_{stem}"),
        frechet_distance(&stats(generated)?, reference_stats).map_err(anyhow::Error::msg)?,
    );
    if generated.rows > FD_INF_MIN {
        let inf =
            frechet_distance_infinity(generated, reference_stats, FD_INF_MIN, FD_INF_STEPS, seed)
                .map_err(anyhow::Error::msg)?;
        out.insert(format!("fd_{stem}_inf"), inf.intercept);
    }
    out.insert(
        format!("kd_{stem}"),
        kernel_distance(
            &evenly_thinned(generated, KERNEL_FRAMES)?,
            &evenly_thinned(reference, KERNEL_FRAMES)?,
        )
        .map_err(anyhow::Error::msg)?,
    );
    Ok(out)
}

/// The references' own distances in one embedding space: the noise floor `fd_<stem>_floor` (the
/// test clips' first half against the second) and the source style's `fd_<stem>_source`.
fn reference_distances(
    stem: &str,
    first: &Embeddings,
    source: &Embeddings,
    second_stats: &GaussianStats,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let fd = |set: &Embeddings| -> anyhow::Result<f64> {
        frechet_distance(&stats(set)?, second_stats).map_err(anyhow::Error::msg)
    };
    Ok(BTreeMap::from([
        (format!("fd_{stem}_floor"), fd(first)?),
        (format!("fd_{stem}_source"), fd(source)?),
    ]))
}

/// At most `at_most` rows of `set`, evenly spaced.
fn evenly_thinned(set: &Embeddings, at_most: usize) -> anyhow::Result<Embeddings> {
    let stride = set.rows.div_ceil(at_most).max(1);
    let rows: Vec<usize> = (0..set.rows).step_by(stride).collect();
    let values = rows
        .iter()
        .flat_map(|&r| set.values[r * set.dim..(r + 1) * set.dim].iter().copied())
        .collect();
    Embeddings::new(rows.len(), set.dim, values).map_err(anyhow::Error::msg)
}

/// A prompt's text from its ids (special tokens dropped).
fn decode_prompt(tokenizer: &tokenizers::Tokenizer, ids: &[u32]) -> String {
    tokenizer.decode(ids, true).unwrap_or_default()
}

/// Writes `clips` (decoded audio at 32 kHz) as `clip-NN.wav` in `dir`, with `prompts.txt` naming
/// each clip's prompt.
fn write_clips(
    dir: &std::path::Path,
    clips: &[Vec<f32>],
    prompts: &[String],
) -> anyhow::Result<()> {
    if clips.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let mut listing = String::new();
    for (i, audio) in clips.iter().enumerate() {
        let name = format!("clip-{i:02}.wav");
        let audio = normalise_peak(audio, 0.9);
        write_wav(&dir.join(&name), &audio, SAMPLE_RATE)?;
        listing.push_str(&format!(
            "{name}\t{}\n",
            prompts.get(i).map_or("", String::as_str)
        ));
    }
    std::fs::write(dir.join("prompts.txt"), listing)?;
    Ok(())
}

/// EnCodec from the suite's backbone checkpoint: `config.json`'s `audio_encoder` and the
/// `audio_encoder.*` tensors of its weights (a MusicGen checkpoint carries both).
fn load_encodec(
    suite: &Suite,
    paths: &Paths,
) -> anyhow::Result<peftbench_backbones::encodec::Encodec> {
    let files = crate::backbone::resolve_files(&suite.backbone, paths)?;
    let text = std::fs::read_to_string(&files.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.config.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.config.display()))?;
    let config = json.get("audio_encoder").ok_or_else(|| {
        anyhow::anyhow!(
            "{}: `music.codec: encodec` reads the checkpoint's `audio_encoder`, and it has none",
            files.config.display()
        )
    })?;
    Ok(peftbench_backbones::encodec::Encodec::load(
        config,
        &files.weights,
        "audio_encoder.",
        &candle_core::Device::Cpu,
    )?)
}
