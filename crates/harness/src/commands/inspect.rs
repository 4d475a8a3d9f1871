//! `harness inspect audio FILE` and `harness inspect image FILE`: the exact normalised input a
//! model sees for one clip or image.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use peftbench_data_audio::features::mean_std;
use peftbench_data_audio::{decode_file, npy, AstFeatureConfig, AstFeatures, FbankConfig};
use peftbench_runner::audio::feature_config;
use peftbench_runner::backbone::{load_backbone, BackboneModel};
use peftbench_suite::{AudioSpec, BackboneSpec};

use super::predict::{resolve_image_input, PreprocessFlags};
use super::{backbone_paths, checkpoint_file, run_record_of};

/// Show what the models see for one input.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// Decode an audio file (WAV, FLAC, OGG Vorbis, MP3), resample to 16 kHz, compute AST's Kaldi
    /// filter banks, pad/cut to the model's frames and normalise; print what was applied, the
    /// shape and statistics, and with --out write the `[frames, mel bins]` array as NumPy .npy
    /// (equal to HF's `ASTFeatureExtractor` output). Frames, mel bins, mean and std come from the
    /// adapter's run record, else the checkpoint's preprocessor_config.json, else AST's AudioSet
    /// recipe (1024 frames, 128 bins); --frames overrides.
    Audio(AudioArgs),
    /// Decode an image and resize and normalise it as `harness predict` does for this backbone and
    /// adapter (the adapter's run record, else the checkpoint's preprocessor_config.json, flags
    /// overriding); print what was applied, the shape and statistics, and with --out write the
    /// `[3, S, S]` array as NumPy .npy.
    Image(ImageArgs),
}

#[derive(clap::Args)]
pub struct ImageArgs {
    /// The image (JPEG, PNG, WebP, ...).
    pub file: PathBuf,
    /// Backbone: a folder with config.json + model.safetensors, a hub id, or `demo`.
    #[arg(long)]
    pub backbone: String,
    /// Adapter folder whose run record says how its images were preprocessed.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[command(flatten)]
    pub preprocessing: PreprocessFlags,
    /// Write the model input here as a float32 `.npy` array of shape [3, S, S].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct AudioArgs {
    /// The audio file.
    pub file: PathBuf,
    /// Frames the model sees (AST: 1024 for AudioSet, 500 ESC-50, 100 Speech Commands, 400 FSC/US8K).
    #[arg(long)]
    pub frames: Option<usize>,
    /// AST checkpoint whose preprocessor_config.json (max_length, num_mel_bins, mean, std) sets
    /// the input: a folder, a hub id, or `demo-ast`.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Adapter folder whose run record's `audio` section sets the input.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Write the normalised input here as a float32 `.npy` array of shape [frames, mel bins].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Audio(a) => audio(a),
        What::Image(a) => image(a),
    }
}

fn image(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let spec = BackboneSpec {
        checkpoint: args.backbone.clone(),
        revision: None,
    };
    let device = candle_core::Device::Cpu;
    let loaded = load_backbone(&spec, &backbone_paths(), &device, true, None)?;
    let BackboneModel::Vit(vit) = loaded.model else {
        anyhow::bail!(
            "`inspect image` needs an image backbone; `{}` is a {} backbone",
            args.backbone,
            loaded.model.family()
        );
    };
    let input = resolve_image_input(
        &args.backbone,
        args.adapter.as_deref(),
        vit.config().image_size,
        &args.preprocessing,
        true,
    )?;
    let origin = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let values = input.pixels(&bytes, &origin)?;
    let s = input.image_size;
    let (mean, std) = mean_std(&values);
    let (min, max) = min_max(&values);
    println!("file      {origin}");
    println!(
        "resize    {s}x{s} {:?} ({})",
        input.interpolation, input.sources.interpolation
    );
    println!(
        "values    8-bit x {:.8}, minus mean {:?}, over std {:?} ({})",
        input.rescale_factor, input.image_mean, input.image_std, input.sources.normalization
    );
    println!("shape     [3, {s}, {s}]");
    println!("stats     mean {mean:.6}  std {std:.6}  min {min:.6}  max {max:.6}");
    if let Some(out) = &args.out {
        npy::write_npy(out, &[3, s, s], &values)
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
        println!("wrote     {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// The fields of an `ASTFeatureExtractor`'s `preprocessor_config.json` that change its output.
#[derive(serde::Deserialize)]
struct HfAstExtractor {
    max_length: usize,
    num_mel_bins: usize,
    mean: f32,
    std: f32,
    #[serde(default = "ast_sampling_rate")]
    sampling_rate: u32,
    #[serde(default = "normalises")]
    do_normalize: bool,
}

fn ast_sampling_rate() -> u32 {
    16_000
}

fn normalises() -> bool {
    true
}

/// The feature settings `args` asks for and where they came from: the adapter's run record, the
/// checkpoint's preprocessor_config.json, or AST's AudioSet recipe; `--frames` overrides.
fn audio_features(args: &AudioArgs) -> anyhow::Result<(AstFeatureConfig, String)> {
    let record = match &args.adapter {
        Some(dir) => run_record_of(dir)?,
        None => None,
    };
    let checkpoint = match &args.backbone {
        Some(b) => checkpoint_file(b, "preprocessor_config.json")?,
        None => None,
    };
    let (mut cfg, mut source) = if let Some((path, record)) = record {
        let section = record.config.get("audio").cloned().unwrap_or_default();
        anyhow::ensure!(
            !section.is_null(),
            "{}: field `config.audio` is missing: run `{}` did not train on audio",
            path.display(),
            record.run_id
        );
        let spec: AudioSpec = serde_json::from_value(section)
            .with_context(|| format!("{}: field `config.audio`", path.display()))?;
        (
            feature_config(&spec),
            format!("run record {}", path.display()),
        )
    } else if let Some(path) = checkpoint {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {origin}"))?;
        let hf: HfAstExtractor =
            serde_json::from_str(&text).with_context(|| format!("parsing {origin}"))?;
        anyhow::ensure!(
            hf.sampling_rate == 16_000,
            "{origin}: field `sampling_rate` is {}; the Kaldi filter banks here are computed at \
             16000 Hz",
            hf.sampling_rate
        );
        anyhow::ensure!(
            hf.do_normalize,
            "{origin}: field `do_normalize` is false; the input here is always normalised"
        );
        let cfg = AstFeatureConfig {
            fbank: FbankConfig {
                num_mel_bins: hf.num_mel_bins,
                ..FbankConfig::default()
            },
            target_frames: hf.max_length,
            mean: hf.mean,
            std: hf.std,
        };
        (cfg, origin)
    } else {
        (
            AstFeatureConfig::default(),
            "AST's AudioSet recipe (built-in default)".to_string(),
        )
    };
    if let Some(frames) = args.frames {
        anyhow::ensure!(frames > 0, "--frames must be positive");
        cfg.target_frames = frames;
        source = format!("{source}; frames from --frames {frames}");
    }
    Ok((cfg, source))
}

fn audio(args: AudioArgs) -> anyhow::Result<ExitCode> {
    let (cfg, source) = audio_features(&args)?;
    let (frames, norm_mean, norm_std) = (cfg.target_frames, cfg.mean, cfg.std);
    let features = AstFeatures::new(cfg, None)?;
    let audio = decode_file(&args.file)?;
    let (rate, seconds) = (audio.sample_rate, audio.duration());
    let origin = args.file.display().to_string();
    let fbank = features.fbank_of_audio(audio, &origin)?;
    let bins = features.config().fbank.num_mel_bins;
    let computed = fbank.len() / bins;
    let input = features.input_from_fbank(&fbank, None);
    let (mean, std) = mean_std(&input);
    let (min, max) = min_max(&input);
    let fit = match computed.cmp(&frames) {
        std::cmp::Ordering::Less => format!("zero-padded from {computed}"),
        std::cmp::Ordering::Greater => format!("cut from {computed}"),
        std::cmp::Ordering::Equal => "exact".into(),
    };
    println!("file      {origin}");
    println!("audio     {seconds:.3} s at {rate} Hz (resampled to 16000 Hz, mono)");
    println!(
        "settings  {frames} frames, {bins} mel bins, mean {norm_mean}, std {norm_std} ({source})"
    );
    println!("shape     [{frames}, {bins}] ({fit} frames)");
    println!("stats     mean {mean:.6}  std {std:.6}  min {min:.6}  max {max:.6}");
    if let Some(out) = &args.out {
        npy::write_npy(out, &[frames, bins], &input)
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
        println!("wrote     {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
