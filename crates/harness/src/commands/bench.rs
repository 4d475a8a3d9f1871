//! `harness bench`: speed measurements printed beside a reference measured in the same run.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use peftbench_core::DeviceSpec;
use peftbench_data_audio::{Fbank, FbankConfig};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use peftbench_runner::bench::{
    median, run_train_step, BenchBackbone, BenchInput, StepTimings, TrainStepBench, BENCH_METHODS,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// Median time of one training step (forward, backward, AdamW) of a method on a randomly
    /// initialised ViT, beside PyTorch + HF peft on the same configuration when Python has them.
    ///
    /// Example: `harness bench train-step --backbone vit-tiny --method lora --batch 32 --image 224`.
    /// The reference is `ci/bench/train_step.py`, run with --python (default: $PEFTBENCH_PYTHON, else
    /// `python3`); it is skipped with a note when torch, timm or peft cannot be imported.
    ///
    /// Several methods and rounds: `--method full,lora,adapter --rounds 3` measures, in each round,
    /// PyTorch and then ours for every method, each in a fresh process, and prints one table of
    /// medians over the rounds and every round's ratio. On a shared machine whose speed drifts,
    /// alternating the two sides puts the drift on both.
    TrainStep(TrainStepArgs),
    /// Kaldi filter banks with AST's settings (128 mel bins, 25/10 ms, 16 kHz) on 10 s clips: clips/s of
    /// ours on one thread and on every core, beside `torchaudio.compliance.kaldi.fbank` with one thread
    /// and with torch's default threads, measured by `ci/bench/fbank.py` in the same run when the Python
    /// (`--python`, default $PEFTBENCH_PYTHON, else `python3`) imports torchaudio, and the ratios.
    ///
    /// Example: `harness bench fbank --clips 50 --python /path/to/venv/bin/python`.
    Fbank(FbankArgs),
}

#[derive(clap::Args)]
pub struct TrainStepArgs {
    /// Model size: vit-tiny, vit-small or vit-base (patch 16, timm's sizes).
    #[arg(long, default_value = "vit-tiny", value_parser = backbone_names())]
    pub backbone: String,
    /// Method, or several separated by commas: full, linear, bitfit, lora (r 8 on q,k,v), adapter
    /// (Pfeiffer, bottleneck 8), adaptformer, vpt-shallow, vpt-deep (10 prompts).
    #[arg(long, default_value = "lora", value_delimiter = ',', value_parser = method_names())]
    pub method: Vec<String>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 224)]
    pub image: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first (allocator and caches warm up).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Rounds of measurements, each of every method on both sides in fresh processes; the table
    /// gives medians over the rounds. More than one round, or more than one method, measures ours
    /// in a child process too, so that each peak memory is its method's own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Device to run on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Python interpreter for the PyTorch reference.
    #[arg(long, env = "PEFTBENCH_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Where batches come from: `random` (one random batch, the model alone, as the PyTorch
    /// reference measures) or `pipeline` (JPEG images decoded, resized and normalised by the
    /// prefetching loader on its background thread while the model trains; the table then shows
    /// how long the trainer waited for each batch).
    #[arg(long, default_value = "random", value_parser = ["random", "pipeline"])]
    pub input: String,
    /// LoRA or the adapter in the top N blocks only (LoRA's `layers_to_transform`, the adapter's
    /// `layers`). Our steps resume from the stream entering the first adapted block, computed
    /// once (a sweep caches it per example); PyTorch runs the frozen blocks every step. The
    /// one-off cost is shown beside.
    #[arg(long, value_name = "N")]
    pub top_blocks: Option<usize>,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_reference: bool,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn backbone_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(BenchBackbone::ALL.map(BenchBackbone::name))
}

/// `--method`'s choices: the methods the bench has settings for.
fn method_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(BENCH_METHODS)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::TrainStep(a) => train_step(a),
        What::Fbank(a) => fbank(a),
    }
}

/// The reference script's measurement, as it prints it (one JSON object).
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Reference {
    torch_version: String,
    threads: usize,
    trainable_params: usize,
    median_step_s: f64,
    median_forward_s: f64,
    median_backward_s: f64,
    peak_rss_bytes: u64,
    /// `torch.backends.cpu.get_cpu_capability()`: the instruction set PyTorch's kernels use.
    #[serde(default)]
    cpu_capability: Option<String>,
    /// The BLAS PyTorch was built with (`BLAS_INFO` of `torch.__config__.show()`).
    #[serde(default)]
    blas: Option<String>,
}

fn reference_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ci/bench/train_step.py")
}

/// The configuration both sides of a measurement take, as command-line arguments (the reference
/// script and a child `harness bench train-step` spell them alike).
fn configuration_args(a: &TrainStepArgs, method: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        ("--backbone", a.backbone.clone()),
        ("--method", method.to_string()),
        ("--batch", a.batch.to_string()),
        ("--image", a.image.to_string()),
        ("--steps", a.steps.to_string()),
        ("--warmup", a.warmup.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    if let Some(n) = a.top_blocks {
        args.extend(["--top-blocks".to_string(), n.to_string()]);
    }
    args
}

fn run_reference(a: &TrainStepArgs, method: &str, threads: usize) -> Result<Reference, String> {
    let script = reference_script();
    let output = Command::new(&a.python)
        .arg(&script)
        .args(configuration_args(a, method))
        .args(["--threads", &threads.to_string()])
        .output()
        .map_err(|e| format!("could not start `{}`: {e}", a.python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").to_string();
        return Err(format!("{} failed: {last}", script.display()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("unreadable reference output `{line}`: {e}"))
}

fn gib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    })
}

fn train_step(a: TrainStepArgs) -> anyhow::Result<ExitCode> {
    if a.method.len() > 1 || a.rounds > 1 {
        return train_step_series(&a);
    }
    let method = a.method[0].clone();
    let backbone = BenchBackbone::from_name(&a.backbone).expect("clap checked the name");
    let device = a.device.open()?;
    let threads = candle_core::utils::get_num_threads();
    // The reference runs first, in its own process, so our peak memory is not its peak.
    let reference = if a.no_reference {
        Err("skipped (--no-reference)".to_string())
    } else {
        eprintln!("measuring the PyTorch reference ...");
        run_reference(&a, &method, threads)
    };
    eprintln!("measuring peftbench ...");
    let ours: StepTimings = run_train_step(
        &TrainStepBench {
            backbone,
            method,
            batch: a.batch,
            image_size: a.image,
            num_classes: 100,
            warmup_steps: a.warmup,
            steps: a.steps,
            input: if a.input == "pipeline" {
                BenchInput::Pipeline
            } else {
                BenchInput::Random
            },
            top_blocks: a.top_blocks,
        },
        &device,
    )?;
    if a.json {
        let value = serde_json::json!({
            "peftbench": ours,
            "peftbench_kernels": peftbench_core::kernels::instruction_sets(),
            "reference": reference.as_ref().ok(),
            "reference_error": reference.as_ref().err(),
            "threads": threads,
        });
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&value)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["", "peftbench", "PyTorch + peft", "ratio (ours / theirs)"]);
    let ratio = |ours: f64, theirs: f64| format!("{:.2}", ours / theirs);
    match &reference {
        Ok(r) => {
            table.add_row([
                "step (median)".into(),
                format!("{:.3} s", ours.median_step_s),
                format!("{:.3} s", r.median_step_s),
                ratio(ours.median_step_s, r.median_step_s),
            ]);
            table.add_row([
                "forward".into(),
                format!("{:.3} s", ours.median_forward_s),
                format!("{:.3} s", r.median_forward_s),
                ratio(ours.median_forward_s, r.median_forward_s),
            ]);
            table.add_row([
                "backward".into(),
                format!("{:.3} s", ours.median_backward_s),
                format!("{:.3} s", r.median_backward_s),
                ratio(ours.median_backward_s, r.median_backward_s),
            ]);
            table.add_row([
                "examples/s".into(),
                format!("{:.1}", ours.examples_per_s),
                format!("{:.1}", a.batch as f64 / r.median_step_s),
                String::new(),
            ]);
            table.add_row([
                "peak memory".into(),
                gib(ours.peak_rss_bytes),
                gib(Some(r.peak_rss_bytes)),
                ours.peak_rss_bytes
                    .map_or(String::new(), |b| ratio(b as f64, r.peak_rss_bytes as f64)),
            ]);
            table.add_row([
                "trainable params".into(),
                ours.trainable_params.to_string(),
                r.trainable_params.to_string(),
                String::new(),
            ]);
            table.add_row([
                "CPU kernels".into(),
                peftbench_core::kernels::instruction_sets(),
                format!(
                    "{} (BLAS {})",
                    r.cpu_capability.as_deref().unwrap_or("unknown"),
                    r.blas.as_deref().unwrap_or("unknown")
                ),
                String::new(),
            ]);
        }
        Err(why) => {
            table.add_row([
                "step (median)".into(),
                format!("{:.3} s", ours.median_step_s),
                "-".into(),
                String::new(),
            ]);
            table.add_row([
                "forward / backward".into(),
                format!(
                    "{:.3} s / {:.3} s",
                    ours.median_forward_s, ours.median_backward_s
                ),
                "-".into(),
                String::new(),
            ]);
            table.add_row([
                "examples/s".into(),
                format!("{:.1}", ours.examples_per_s),
                "-".into(),
                String::new(),
            ]);
            table.add_row([
                "peak memory".into(),
                gib(ours.peak_rss_bytes),
                "-".into(),
                String::new(),
            ]);
            table.add_row([
                "trainable params".into(),
                ours.trainable_params.to_string(),
                "-".into(),
                String::new(),
            ]);
            table.add_row([
                "CPU kernels".into(),
                peftbench_core::kernels::instruction_sets(),
                "-".into(),
                String::new(),
            ]);
            eprintln!("no PyTorch reference: {why}");
        }
    }
    if let Some(seconds) = ours.frozen_prefix_s {
        table.add_row([
            "frozen blocks, once per example".into(),
            format!("{seconds:.3} s per batch"),
            "- (every step)".into(),
            String::new(),
        ]);
    }
    if let Some(wait) = ours.median_data_wait_s {
        table.add_row([
            "data wait per step (median)".into(),
            format!("{:.3} s", wait),
            "- (random input)".into(),
            String::new(),
        ]);
    }
    super::emit(&format!(
        "train step: {} {}{} batch {} at {}px, {} timed steps, {} threads, {}, {} input\n{table}\n",
        ours.backbone,
        ours.method,
        ours.top_blocks
            .map_or(String::new(), |n| format!(" (top {n} blocks)")),
        ours.batch,
        ours.image_size,
        a.steps,
        threads,
        device_name(&device),
        a.input
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// What a child `harness bench train-step --json --no-reference` prints.
#[derive(serde::Deserialize)]
struct ChildReport {
    peftbench: StepTimings,
    peftbench_kernels: String,
}

/// Our measurement of `method`, taken by this binary in a fresh process: its peak memory is then
/// the method's own, as the reference's is, and no allocator state carries over between methods.
fn run_ours_in_child(a: &TrainStepArgs, method: &str) -> anyhow::Result<ChildReport> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let mut command = Command::new(exe);
    command
        .args(["bench", "train-step"])
        .args(configuration_args(a, method))
        .args(["--device", &a.device.to_string(), "--input", &a.input])
        .args(["--no-reference", "--json"]);
    let output = command
        .output()
        .context("starting the harness binary for a measurement")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::bail!(
            "measuring `{method}` failed ({}): {}",
            output.status,
            stderr.trim_end().lines().last().unwrap_or("")
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "unreadable measurement of `{method}`: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// One method over the rounds: ours and the reference's measurements (`Err` where it failed).
struct MethodRounds {
    method: String,
    peftbench: Vec<StepTimings>,
    reference: Vec<Result<Reference, String>>,
}

impl MethodRounds {
    /// Per-round ratios ours / theirs of `field`, for the rounds where the reference ran.
    fn ratios(&self, field: impl Fn(&StepTimings, &Reference) -> Option<(f64, f64)>) -> Vec<f64> {
        self.peftbench
            .iter()
            .zip(&self.reference)
            .filter_map(|(ours, theirs)| {
                let (x, y) = field(ours, theirs.as_ref().ok()?)?;
                Some(x / y)
            })
            .collect()
    }
}

/// `--method a,b,... --rounds N`: every round measures the reference and then ours for each method,
/// each in its own process; one table gives the medians over the rounds.
fn train_step_series(a: &TrainStepArgs) -> anyhow::Result<ExitCode> {
    let threads = candle_core::utils::get_num_threads();
    let mut kernels = String::new();
    let mut methods: Vec<MethodRounds> = a
        .method
        .iter()
        .map(|m| MethodRounds {
            method: m.clone(),
            peftbench: Vec::new(),
            reference: Vec::new(),
        })
        .collect();
    // A measurement of ours that fails ends the series; the rounds measured before it are still
    // printed, and the error follows them.
    let mut failure = None;
    'rounds: for round in 1..=a.rounds {
        for m in &mut methods {
            let reference = if a.no_reference {
                Err("skipped (--no-reference)".to_string())
            } else {
                eprintln!(
                    "round {round}/{}: {}, PyTorch reference ...",
                    a.rounds, m.method
                );
                run_reference(a, &m.method, threads)
            };
            eprintln!("round {round}/{}: {}, peftbench ...", a.rounds, m.method);
            match run_ours_in_child(a, &m.method) {
                Ok(ours) => {
                    kernels = ours.peftbench_kernels;
                    m.peftbench.push(ours.peftbench);
                    m.reference.push(reference);
                }
                Err(e) => {
                    failure = Some(e);
                    break 'rounds;
                }
            }
        }
    }
    methods.retain(|m| !m.peftbench.is_empty());
    if methods.is_empty() {
        return Err(failure.expect("a series with no measurement has failed"));
    }
    if a.json {
        // Each round as the single measurement's JSON has it: both sides, or the reference's error.
        let methods: Vec<_> = methods
            .iter()
            .map(|m| {
                let rounds: Vec<_> = (m.peftbench.iter().zip(&m.reference))
                    .map(|(ours, theirs)| {
                        serde_json::json!({
                            "peftbench": ours,
                            "reference": theirs.as_ref().ok(),
                            "reference_error": theirs.as_ref().err(),
                        })
                    })
                    .collect();
                serde_json::json!({ "method": m.method, "rounds": rounds })
            })
            .collect();
        let value = serde_json::json!({
            "methods": methods,
            "peftbench_kernels": kernels,
            "threads": threads,
            "rounds": a.rounds,
        });
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&value)?))?;
        return series_end(failure);
    }

    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    let several = a.rounds > 1;
    let mut header = vec!["method", "peftbench", "PyTorch + peft", "ratio"];
    if several {
        header.push("ratio by round");
    }
    header.extend(["forward", "backward", "peak memory", "trainable params"]);
    table.set_header(header);
    let seconds = |v: Option<f64>| v.map_or("-".into(), |s| format!("{s:.3} s"));
    let two = |v: Option<f64>| v.map_or("-".into(), |r| format!("{r:.2}"));
    let mut reference_line = None;
    let mut missing = None;
    for m in &methods {
        let theirs: Vec<&Reference> = m.reference.iter().filter_map(|r| r.as_ref().ok()).collect();
        if let Some(err) = m.reference.iter().find_map(|r| r.as_ref().err()) {
            missing.get_or_insert_with(|| err.clone());
        }
        if let Some(r) = theirs.first() {
            reference_line.get_or_insert_with(|| {
                format!(
                    "PyTorch {}: {} (BLAS {})",
                    r.torch_version,
                    r.cpu_capability.as_deref().unwrap_or("unknown"),
                    r.blas.as_deref().unwrap_or("unknown")
                )
            });
        }
        let step_ratios = m.ratios(|o, r| Some((o.median_step_s, r.median_step_s)));
        let mut row = vec![
            m.method.clone(),
            seconds(median(
                m.peftbench.iter().map(|o| o.median_step_s).collect(),
            )),
            seconds(median(theirs.iter().map(|r| r.median_step_s).collect())),
            two(median(step_ratios.clone())),
        ];
        if several {
            row.push(if step_ratios.is_empty() {
                "-".into()
            } else {
                step_ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
        }
        row.extend([
            two(median(m.ratios(|o, r| {
                Some((o.median_forward_s, r.median_forward_s))
            }))),
            two(median(m.ratios(|o, r| {
                Some((o.median_backward_s, r.median_backward_s))
            }))),
            match (
                median(
                    m.peftbench
                        .iter()
                        .filter_map(|o| o.peak_rss_bytes.map(|b| b as f64))
                        .collect(),
                ),
                median(m.ratios(|o, r| Some((o.peak_rss_bytes? as f64, r.peak_rss_bytes as f64)))),
            ) {
                (Some(bytes), Some(ratio)) => format!("{} ({ratio:.2})", gib(Some(bytes as u64))),
                (bytes, _) => gib(bytes.map(|b| b as u64)),
            },
            format!(
                "{} / {}",
                m.peftbench[0].trainable_params,
                theirs
                    .first()
                    .map_or("-".into(), |r| r.trainable_params.to_string())
            ),
        ]);
        table.add_row(row);
    }
    if let Some(why) = missing {
        eprintln!("no PyTorch reference in some or all rounds: {why}");
    }
    let first = &methods[0].peftbench[0];
    super::emit(&format!(
        "train step: {} batch {} at {}px{}, {} timed steps, {} round{} (medians; ratios are ours / \
         theirs), {} threads, {}, {} input\n{table}\nCPU kernels: peftbench {}; {}\n",
        first.backbone,
        first.batch,
        first.image_size,
        first
            .top_blocks
            .map_or(String::new(), |n| format!(", top {n} blocks")),
        a.steps,
        a.rounds,
        if a.rounds == 1 { "" } else { "s" },
        threads,
        a.device,
        a.input,
        kernels,
        reference_line.unwrap_or_else(|| "PyTorch -".into()),
    ))?;
    series_end(failure)
}

/// The exit of a series: success, or the measurement that ended it early.
fn series_end(failure: Option<anyhow::Error>) -> anyhow::Result<ExitCode> {
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => {
            Err(e.context("the series stopped early; the table holds the rounds measured before"))
        }
    }
}

fn device_name(device: &candle_core::Device) -> String {
    match device {
        candle_core::Device::Cpu => "cpu".into(),
        other => format!("{other:?}"),
    }
}

#[derive(clap::Args)]
pub struct FbankArgs {
    /// Clips per measurement.
    #[arg(long, default_value_t = 50)]
    pub clips: usize,
    /// Clip length in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// The Python interpreter that runs the torchaudio reference (`ci/bench/fbank.py`).
    #[arg(long, env = "PEFTBENCH_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Skip the torchaudio reference.
    #[arg(long)]
    pub no_reference: bool,
}

/// The reference script's measurement (`ci/bench/fbank.py`).
#[derive(Debug, serde::Deserialize)]
struct FbankReference {
    torch_version: String,
    threads: usize,
    clips_per_s: f64,
}

/// Times torchaudio on `clips` random clips with `threads` threads (0: torch's default).
fn torchaudio_reference(args: &FbankArgs, threads: usize) -> Result<FbankReference, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ci/bench/fbank.py");
    let out = Command::new(&args.python)
        .arg(&script)
        .args(["--clips", &args.clips.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .map_err(|e| format!("could not start `{}`: {e}", args.python.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} failed: {}",
            script.display(),
            stderr.lines().last().unwrap_or("")
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("unreadable reference output `{line}`: {e}"))
}

fn fbank(args: FbankArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.clips > 0 && args.seconds > 0.0,
        "--clips and --seconds must be positive"
    );
    let samples = (args.seconds * 16_000.0) as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let clips: Vec<Vec<f32>> = (0..args.clips)
        .map(|_| (0..samples).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let fbank = Fbank::new(FbankConfig::default())?;
    let _warm = fbank.compute(&clips[0]);

    let start = Instant::now();
    for clip in &clips {
        std::hint::black_box(fbank.compute(clip));
    }
    let ours_1 = args.clips as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    clips.par_iter().for_each(|clip| {
        std::hint::black_box(fbank.compute(clip));
    });
    let ours_all = args.clips as f64 / start.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();

    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "threads",
        "peftbench clips/s",
        "torchaudio clips/s",
        "ratio (ours / theirs)",
    ]);
    let mut missing = None;
    for (label, ours, their_threads) in [("1", ours_1, 1), ("default", ours_all, 0)] {
        let reference = if args.no_reference {
            Err("skipped (--no-reference)".to_string())
        } else {
            torchaudio_reference(&args, their_threads)
        };
        match reference {
            Ok(r) => table.add_row([
                format!(
                    "{label} (ours {}, torch {})",
                    if their_threads == 1 { 1 } else { threads },
                    r.threads
                ),
                format!("{ours:.1}"),
                format!("{:.1} (torch {})", r.clips_per_s, r.torch_version),
                format!("{:.2}", ours / r.clips_per_s),
            ]),
            Err(why) => {
                missing = Some(why);
                table.add_row([
                    label.to_string(),
                    format!("{ours:.1}"),
                    "-".into(),
                    String::new(),
                ])
            }
        };
    }
    if let Some(why) = missing {
        eprintln!("no torchaudio reference: {why} (set --python or PEFTBENCH_PYTHON)");
    }
    super::emit(&format!(
        "Kaldi fbank (AST settings: 128 mel bins, 25 ms / 10 ms, 16 kHz), {} clips of {} s\n{table}\n",
        args.clips, args.seconds
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(step: f64) -> StepTimings {
        StepTimings {
            backbone: "vit-tiny".into(),
            method: "lora".into(),
            batch: 32,
            image_size: 224,
            trainable_params: 1,
            median_step_s: step,
            median_forward_s: step / 2.0,
            median_backward_s: step / 2.0,
            examples_per_s: 32.0 / step,
            peak_rss_bytes: Some(1 << 30),
            median_data_wait_s: None,
            top_blocks: None,
            frozen_prefix_s: None,
        }
    }

    fn reference(step: f64) -> Reference {
        Reference {
            torch_version: "2.11.0".into(),
            threads: 2,
            trainable_params: 1,
            median_step_s: step,
            median_forward_s: step / 2.0,
            median_backward_s: step / 2.0,
            peak_rss_bytes: 2 << 30,
            cpu_capability: None,
            blas: None,
        }
    }

    #[test]
    fn ratios_pair_each_round_and_skip_rounds_without_a_reference() {
        let rounds = MethodRounds {
            method: "lora".into(),
            peftbench: vec![timings(1.0), timings(3.0), timings(2.0)],
            reference: vec![Ok(reference(2.0)), Err("failed".into()), Ok(reference(1.0))],
        };
        let steps = rounds.ratios(|o, r| Some((o.median_step_s, r.median_step_s)));
        assert_eq!(steps, vec![0.5, 2.0]);
        let memory =
            rounds.ratios(|o, r| Some((o.peak_rss_bytes? as f64, r.peak_rss_bytes as f64)));
        assert_eq!(memory, vec![0.5, 0.5]);
    }
}
