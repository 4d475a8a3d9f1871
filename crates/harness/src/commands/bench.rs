//! `harness bench`: speed measurements printed beside a reference measured in the same run.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use peftbench_core::DeviceSpec;
use peftbench_runner::bench::{run_train_step, BenchBackbone, StepTimings, TrainStepBench};

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
    TrainStep(TrainStepArgs),
}

#[derive(clap::Args)]
pub struct TrainStepArgs {
    /// Model size: vit-tiny, vit-small or vit-base (patch 16, timm's sizes).
    #[arg(long, default_value = "vit-tiny", value_parser = backbone_names())]
    pub backbone: String,
    /// Method: full, linear, bitfit, lora (r 8 on q,k,v), adapter (Pfeiffer, bottleneck 8),
    /// adaptformer, vpt-shallow, vpt-deep (10 prompts).
    #[arg(long, default_value = "lora")]
    pub method: String,
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
    /// Device to run on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Python interpreter for the PyTorch reference.
    #[arg(long, env = "PEFTBENCH_PYTHON", default_value = "python3")]
    pub python: PathBuf,
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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::TrainStep(a) => train_step(a),
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
}

fn reference_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ci/bench/train_step.py")
}

fn run_reference(a: &TrainStepArgs, threads: usize) -> Result<Reference, String> {
    let script = reference_script();
    let output = Command::new(&a.python)
        .arg(&script)
        .args(["--backbone", &a.backbone, "--method", &a.method])
        .args([
            "--batch",
            &a.batch.to_string(),
            "--image",
            &a.image.to_string(),
        ])
        .args([
            "--steps",
            &a.steps.to_string(),
            "--warmup",
            &a.warmup.to_string(),
        ])
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
    let backbone = BenchBackbone::from_name(&a.backbone).expect("clap checked the name");
    let device = a.device.open()?;
    let threads = candle_core::utils::get_num_threads();
    // The reference runs first, in its own process, so our peak memory is not its peak.
    let reference = if a.no_reference {
        Err("skipped (--no-reference)".to_string())
    } else {
        eprintln!("measuring the PyTorch reference ...");
        run_reference(&a, threads)
    };
    eprintln!("measuring peftbench ...");
    let ours: StepTimings = run_train_step(
        &TrainStepBench {
            backbone,
            method: a.method.clone(),
            batch: a.batch,
            image_size: a.image,
            num_classes: 100,
            warmup_steps: a.warmup,
            steps: a.steps,
        },
        &device,
    )?;
    if a.json {
        let value = serde_json::json!({
            "peftbench": ours,
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
            eprintln!("no PyTorch reference: {why}");
        }
    }
    super::emit(&format!(
        "train step: {} {} batch {} at {}px, {} timed steps, {} threads, {}\n{table}\n",
        ours.backbone,
        ours.method,
        ours.batch,
        ours.image_size,
        a.steps,
        threads,
        device_name(&device)
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn device_name(device: &candle_core::Device) -> String {
    match device {
        candle_core::Device::Cpu => "cpu".into(),
        other => format!("{other:?}"),
    }
}
