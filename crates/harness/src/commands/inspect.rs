//! `harness inspect audio FILE`: the exact normalised input an AST model sees for one clip.

use std::path::PathBuf;
use std::process::ExitCode;

use peftbench_data_audio::features::mean_std;
use peftbench_data_audio::{decode_file, npy, AstFeatureConfig, AstFeatures};

/// Show what the models see for one input.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// Decode an audio file (WAV, FLAC, OGG Vorbis, MP3), resample to 16 kHz, compute AST's Kaldi
    /// filter banks, pad/cut to --frames and normalise with AudioSet's mean/std; print the shape and
    /// statistics, and with --out write the `[frames, 128]` array as NumPy .npy (equal to HF's
    /// `ASTFeatureExtractor(max_length=frames)` output).
    Audio(AudioArgs),
}

#[derive(clap::Args)]
pub struct AudioArgs {
    /// The audio file.
    pub file: PathBuf,
    /// Frames the model sees (AST: 1024 for AudioSet, 500 ESC-50, 100 Speech Commands, 400 FSC/US8K).
    #[arg(long, default_value_t = 1024)]
    pub frames: usize,
    /// Write the normalised input here as a float32 `.npy` array of shape [frames, 128].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Audio(a) => audio(a),
    }
}

fn audio(args: AudioArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.frames > 0, "--frames must be positive");
    let cfg = AstFeatureConfig {
        target_frames: args.frames,
        ..Default::default()
    };
    let features = AstFeatures::new(cfg, None)?;
    let audio = decode_file(&args.file)?;
    let (rate, seconds) = (audio.sample_rate, audio.duration());
    let origin = args.file.display().to_string();
    let fbank = features.fbank_of_audio(audio, &origin)?;
    let bins = features.config().fbank.num_mel_bins;
    let computed = fbank.len() / bins;
    let input = features.input_from_fbank(&fbank, None);
    let (mean, std) = mean_std(&input);
    let (min, max) = input
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let fit = match computed.cmp(&args.frames) {
        std::cmp::Ordering::Less => format!("zero-padded from {computed}"),
        std::cmp::Ordering::Greater => format!("cut from {computed}"),
        std::cmp::Ordering::Equal => "exact".into(),
    };
    println!("file      {origin}");
    println!("audio     {seconds:.3} s at {rate} Hz (resampled to 16000 Hz, mono)");
    println!("shape     [{}, {bins}] ({fit} frames)", args.frames);
    println!("stats     mean {mean:.6}  std {std:.6}  min {min:.6}  max {max:.6}");
    if let Some(out) = &args.out {
        npy::write_npy(out, &[args.frames, bins], &input)
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
        println!("wrote     {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
