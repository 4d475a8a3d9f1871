//! Renders a batch of MIDI files to 16-bit mono WAVs with a SoundFont, in parallel: the audio
//! step of `ci/folk-songs.sh` (which writes the MIDI files and the jobs with `ci/folk_songs.py`).
//!
//! ```text
//! cargo run --release -p peftbench-data-audio --example render_folk_songs -- \
//!     --soundfont TimGM6mb.sf2 --jobs render_jobs.jsonl [--threads N] [--sample-rate 32000]
//! ```
//!
//! The jobs file holds one JSON object a line:
//! `{"midi": "<path>", "wav": "<path>", "seconds": 10.0, "peak": 0.5}`; relative paths are
//! relative to the jobs file's folder, so the file can be moved with its data. `seconds` (the
//! clip length; absent: the MIDI file's length plus a release tail) and `peak` (scale each clip
//! so its largest sample is this; absent or 0: the synthesiser's own level, which is quiet, about
//! 0.1 for one note) are optional. Every job is attempted; failures are listed at the end and
//! make the exit status 1.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use peftbench_data_audio::music::synth::{Renderer, SAMPLE_RATE};
use peftbench_data_audio::music::wav::{normalise_peak, write_wav};
use rayon::prelude::*;
use serde::Deserialize;

const USAGE: &str = "usage: render_folk_songs --soundfont SF2 --jobs JOBS.jsonl [--threads N] \
                     [--sample-rate HZ]";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    midi: PathBuf,
    wav: PathBuf,
    seconds: Option<f32>,
    peak: Option<f32>,
}

struct Args {
    soundfont: PathBuf,
    jobs: PathBuf,
    threads: Option<usize>,
    sample_rate: u32,
}

fn parse_args() -> Result<Args> {
    let mut soundfont = None;
    let mut jobs = None;
    let mut threads = None;
    let mut sample_rate = SAMPLE_RATE;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--soundfont" => soundfont = Some(PathBuf::from(value)),
            "--jobs" => jobs = Some(PathBuf::from(value)),
            "--threads" => threads = Some(value.parse().context("--threads takes a count")?),
            "--sample-rate" => sample_rate = value.parse().context("--sample-rate takes Hz")?,
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(Args {
        soundfont: soundfont.with_context(|| format!("--soundfont is required\n{USAGE}"))?,
        jobs: jobs.with_context(|| format!("--jobs is required\n{USAGE}"))?,
        threads,
        sample_rate,
    })
}

fn read_jobs(path: &Path) -> Result<Vec<Job>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut jobs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut job: Job = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a render job: {line}", path.display(), i + 1))?;
        job.midi = base.join(&job.midi);
        job.wav = base.join(&job.wav);
        jobs.push(job);
    }
    Ok(jobs)
}

/// Renders one job; the seconds of audio written.
fn render(renderer: &Renderer, job: &Job) -> Result<f64> {
    let mut samples = renderer.render_file(&job.midi, job.seconds)?;
    if let Some(peak) = job.peak.filter(|p| *p > 0.0) {
        samples = normalise_peak(&samples, peak);
    }
    write_wav(&job.wav, &samples, renderer.sample_rate())?;
    Ok(samples.len() as f64 / f64::from(renderer.sample_rate()))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot start the thread pool")?;
    }
    let started = Instant::now();
    let renderer = Renderer::load(&args.soundfont)?.with_sample_rate(args.sample_rate)?;
    let jobs = read_jobs(&args.jobs)?;
    println!(
        "rendering {} MIDI files with {} ({}) at {} Hz on {} threads",
        jobs.len(),
        renderer.soundfont_name(),
        args.soundfont.display(),
        renderer.sample_rate(),
        rayon::current_num_threads()
    );
    let done = AtomicUsize::new(0);
    // About ten progress lines, whatever the batch size.
    let every = jobs.len().div_ceil(10).max(1);
    let results: Vec<Result<f64>> = jobs
        .par_iter()
        .map(|job| {
            let result = render(&renderer, job)
                .with_context(|| format!("{} -> {}", job.midi.display(), job.wav.display()));
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(every) || n == jobs.len() {
                println!(
                    "  {n}/{} rendered ({:.1} s)",
                    jobs.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            result
        })
        .collect();
    let wall = started.elapsed().as_secs_f64();
    let audio: f64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    let failed: Vec<&anyhow::Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "rendered {} clips, {audio:.1} s of audio in {wall:.1} s wall: {:.0}x real time ({} \
         threads, soundfont load included)",
        jobs.len() - failed.len(),
        audio / wall.max(1e-9),
        rayon::current_num_threads()
    );
    if !failed.is_empty() {
        for err in failed.iter().take(20) {
            eprintln!("failed: {err:#}");
        }
        bail!("{} of {} jobs failed", failed.len(), jobs.len());
    }
    Ok(())
}
