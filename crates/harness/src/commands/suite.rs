//! `harness suite NAME|FILE`: expand a suite into runs and execute them.

use std::process::ExitCode;

use peftbench_core::DeviceSpec;
use peftbench_runner::{sweep, RegistryCatalog, SweepOptions};
use peftbench_suite::{load_suite, PlanOptions, Shard};

use super::{emit, paths, suites_dir, workers};
use crate::Locations;

const EXAMPLES: &str = "Examples:
  harness suite demo                                   # needs nothing downloaded
  harness suite vtab1k --data-dir ~/data/vtab-1k --filter method=lora
  harness suite vtab1k --dry-run --filter task=cifar,method=lora
  harness suite suites/my.yaml --override recipe.lr=5e-4 --epochs 2 --limit 64
  harness suite vtab1k --shard 2/4                     # the second quarter of the runs
  harness suite vtab1k --devices 0,1,2,3               # one worker per GPU

Finished runs are skipped, so rerunning an interrupted sweep resumes it.";

/// Run or resume a suite.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// A suite name (`<suites-dir>/NAME.yaml`) or a path to a suite file.
    pub suite: String,
    /// Print the planned runs (and which are already done) without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep only matching runs: `task=cifar`, `method=lora,seed=0` (comma = and; repeat = or), or a
    /// substring of the run id.
    #[arg(long)]
    pub filter: Vec<String>,
    /// Change a setting for every run: `recipe.lr=5e-4`, `params.r=16`, `seeds=[0,1,2]`,
    /// `protocol.selection=best-val`. Repeatable.
    #[arg(long = "override")]
    pub overrides: Vec<String>,
    /// Override `recipe.epochs` (quick runs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Use at most this many examples of each split (quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Rerun runs whose record says `failed` (completed and diverged runs are always kept).
    #[arg(long)]
    pub retry_failed: bool,
    /// Run only part I of N of the plan (1-based; runs dealt round robin in plan order). Shards
    /// may share --results (records never clash) or use their own and be merged with `harness
    /// merge`. Repeat to split a shard further.
    #[arg(long, value_name = "I/N")]
    pub shard: Vec<Shard>,
    /// Run one worker process per device concurrently, sharing --results: `0,1,2,3` (CUDA
    /// ordinals), `cuda:0,cuda:1`, or `cpu,cpu` (two CPU workers). Then prints the leaderboard.
    #[arg(long, value_delimiter = ',', conflicts_with = "dry_run")]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub locations: Locations,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let suite = load_suite(
        &args.suite,
        &suites_dir(&args.locations.suites),
        &RegistryCatalog,
    )?;
    if !args.devices.is_empty() {
        let plan = PlanOptions {
            filter: args.filter.clone(),
            overrides: args.overrides.clone(),
            epochs: args.epochs,
            limit: args.limit,
            shards: args.shard.clone(),
        };
        return workers::run_workers(&suite, &plan, &args.devices, &paths(&args.locations));
    }
    let opts = SweepOptions {
        plan: PlanOptions {
            filter: args.filter,
            overrides: args.overrides,
            epochs: args.epochs,
            limit: args.limit,
            shards: args.shard,
        },
        dry_run: args.dry_run,
        device: args.device,
        retry_failed: args.retry_failed,
        quiet: false,
    };
    let opts_shards_empty = opts.plan.shards.is_empty();
    let summary = sweep(&suite, &opts, &paths(&args.locations))?;
    if args.dry_run {
        emit(&summary.runs)?;
        for note in &summary.notes {
            eprintln!("note: {note}");
        }
        println!(
            "{} runs planned for suite `{}`",
            summary.planned, suite.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", summary.table);
    println!(
        "{} runs: {} completed, {} diverged, {} failed, {} reused from {} ({:.0} s)",
        summary.planned,
        summary.completed,
        summary.diverged,
        summary.failed,
        summary.reused,
        args.locations.outputs.results.display(),
        summary.seconds
    );
    if let Some(path) = &summary.report_path {
        println!("Leaderboard written to {}", path.display());
    } else if !opts_shards_empty {
        emit(&summary.runs)?;
        println!("This shard is done; once all are, `harness report` combines them.");
    }
    Ok(if summary.failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
