//! `harness slurm SUITE`: an sbatch job-array script that runs a suite on a Slurm cluster, one
//! array task per run or per shard, all writing into one shared results directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use peftbench_runner::RegistryCatalog;
use peftbench_suite::{load_suite, plan, PlanOptions};

use super::suites_dir;
use crate::Locations;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayOf {
    /// One array task per planned run (`--shard i/RUNS`).
    Runs,
    /// `--shards N` array tasks, each running its share of the plan.
    Shards,
}

/// Write an sbatch job-array script for a suite.
#[derive(clap::Args)]
#[command(after_help = "Example:
  harness slurm vtab1k --data-dir /shared/vtab-1k --results /shared/peftbench/results \\
      --partition gpu --account proj123 --qos normal --gpus 1 --cpus 8 --mem 32G \\
      --time 04:00:00 --sbatch-line '--constraint=a100' --output vtab1k.sbatch
  sbatch vtab1k.sbatch
  # when the array is done:
  harness report vtab1k --results /shared/peftbench/results

Array task i runs `harness suite SUITE --shard i/N` into the shared --results directory: shards
never share a run, records are written atomically under distinct run ids, and a resubmitted array
skips finished runs. Prepare the backbone cache once (PEFTBENCH_CACHE on shared storage) before
submitting, e.g. by running one small run of the suite on the login node.")]
pub struct Args {
    /// A suite name or suite file.
    pub suite: String,
    /// One array task per run, or per shard.
    #[arg(long, value_enum, default_value = "runs")]
    pub array_of: ArrayOf,
    /// Number of shards (with --array-of shards).
    #[arg(long, default_value_t = 8)]
    pub shards: usize,
    /// Slurm partition (`#SBATCH --partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Account the jobs are charged to (`#SBATCH --account`), which many clusters require.
    #[arg(long)]
    pub account: Option<String>,
    /// Quality of service (`#SBATCH --qos`).
    #[arg(long)]
    pub qos: Option<String>,
    /// An extra `#SBATCH` line, written as given after the others (e.g. `--constraint=a100`,
    /// `--mail-type=FAIL`); repeat for several. A leading `#SBATCH` is optional.
    #[arg(
        long = "sbatch-line",
        value_name = "OPTION",
        allow_hyphen_values = true
    )]
    pub sbatch_lines: Vec<String>,
    /// Time limit per array task (`--time`, e.g. 04:00:00).
    #[arg(long, default_value = "04:00:00")]
    pub time: String,
    /// GPUs per array task (`--gres=gpu:N`); with 0 the runs use the CPU.
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// CPU cores per array task (`--cpus-per-task`).
    #[arg(long, default_value_t = 8)]
    pub cpus: usize,
    /// Memory per array task (`--mem`, e.g. 32G).
    #[arg(long, default_value = "32G")]
    pub mem: String,
    /// At most this many array tasks at once (`--array=...%K`).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Job name (default `peftbench-<suite>`).
    #[arg(long)]
    pub job_name: Option<String>,
    /// The harness binary the nodes run (default: this one). Must be reachable from the nodes.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Write the script here instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Passed to every `harness suite` (see `harness suite --help`).
    #[arg(long)]
    pub filter: Vec<String>,
    #[arg(long = "override")]
    pub overrides: Vec<String>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub locations: Locations,
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Single-quoted for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The option text of an `--sbatch-line` (without `#SBATCH`), or an error saying why it cannot be
/// one: sbatch reads a directive per line, and stops reading them at the first command.
fn sbatch_option(line: &str) -> anyhow::Result<&str> {
    let option = line.trim();
    let option = option
        .strip_prefix("#SBATCH")
        .unwrap_or(option)
        .trim_start();
    anyhow::ensure!(
        option.starts_with('-') && !option.contains(['\n', '\r']),
        "--sbatch-line {line:?}: expected one sbatch option such as `--constraint=a100` \
         (a single line starting with `-`)"
    );
    Ok(option)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let extra_lines = args
        .sbatch_lines
        .iter()
        .map(|l| sbatch_option(l))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = suites_dir(&args.locations.suites);
    let suite = load_suite(&args.suite, &dir, &RegistryCatalog)?;
    let plan_options = PlanOptions {
        filter: args.filter.clone(),
        overrides: args.overrides.clone(),
        epochs: args.epochs,
        limit: args.limit,
        ..Default::default()
    };
    let runs = plan(&suite, &plan_options, &RegistryCatalog)?.len();
    let tasks = match args.array_of {
        ArrayOf::Runs => runs,
        ArrayOf::Shards => {
            anyhow::ensure!(args.shards >= 1, "--shards must be at least 1");
            args.shards.min(runs)
        }
    };
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating the harness binary")?,
    };
    let results = absolute(&args.locations.outputs.results)?;
    let reports = absolute(&args.locations.outputs.reports)?;
    let suite_file = absolute(&suite.source)?;

    let mut cmd = vec![
        quote(&binary.display().to_string()),
        "suite".into(),
        quote(&suite_file.display().to_string()),
        "--results".into(),
        quote(&results.display().to_string()),
        "--reports".into(),
        quote(&reports.display().to_string()),
        "--shard".into(),
        format!("\"${{SLURM_ARRAY_TASK_ID}}/{tasks}\""),
        "--device".into(),
        if args.gpus > 0 { "cuda" } else { "cpu" }.into(),
    ];
    if let Some(d) = &args.locations.data_dir {
        cmd.extend([
            "--data-dir".into(),
            quote(&absolute(d)?.display().to_string()),
        ]);
    }
    for f in &args.filter {
        cmd.extend(["--filter".into(), quote(f)]);
    }
    // What changes the runs' configurations; the report needs it too to count their records.
    let mut config_flags: Vec<String> = Vec::new();
    for o in &args.overrides {
        config_flags.extend(["--override".into(), quote(o)]);
    }
    if let Some(e) = args.epochs {
        config_flags.extend(["--epochs".into(), e.to_string()]);
    }
    if let Some(l) = args.limit {
        config_flags.extend(["--limit".into(), l.to_string()]);
    }
    cmd.extend(config_flags.iter().cloned());

    let mut s = String::new();
    writeln!(s, "#!/bin/bash")?;
    writeln!(
        s,
        "# Written by `harness slurm {}`: {runs} runs of suite `{}` as {tasks} array tasks ({}).",
        args.suite,
        suite.name,
        match args.array_of {
            ArrayOf::Runs => "one run each",
            ArrayOf::Shards => "one shard each",
        }
    )?;
    let name = args
        .job_name
        .clone()
        .unwrap_or_else(|| format!("peftbench-{}", suite.name));
    writeln!(s, "#SBATCH --job-name={name}")?;
    match args.max_parallel {
        Some(k) => writeln!(s, "#SBATCH --array=1-{tasks}%{k}")?,
        None => writeln!(s, "#SBATCH --array=1-{tasks}")?,
    }
    if let Some(p) = &args.partition {
        writeln!(s, "#SBATCH --partition={p}")?;
    }
    if let Some(a) = &args.account {
        writeln!(s, "#SBATCH --account={a}")?;
    }
    if let Some(q) = &args.qos {
        writeln!(s, "#SBATCH --qos={q}")?;
    }
    writeln!(s, "#SBATCH --time={}", args.time)?;
    if args.gpus > 0 {
        writeln!(s, "#SBATCH --gres=gpu:{}", args.gpus)?;
    }
    writeln!(s, "#SBATCH --cpus-per-task={}", args.cpus)?;
    writeln!(s, "#SBATCH --mem={}", args.mem)?;
    writeln!(
        s,
        "#SBATCH --output={}/slurm/%x-%A_%a.out",
        results.display()
    )?;
    for option in &extra_lines {
        writeln!(s, "#SBATCH {option}")?;
    }
    writeln!(s)?;
    writeln!(s, "set -euo pipefail")?;
    writeln!(
        s,
        "mkdir -p {}",
        quote(&results.join("slurm").display().to_string())
    )?;
    writeln!(
        s,
        "# Each task runs its share into the shared results directory; finished runs are skipped on resubmission."
    )?;
    writeln!(s, "exec {}", cmd.join(" "))?;
    writeln!(s)?;
    writeln!(
        s,
        "# When the array has finished:\n#   {} report {} --results {} {}",
        quote(&binary.display().to_string()),
        quote(&suite_file.display().to_string()),
        quote(&results.display().to_string()),
        config_flags.join(" ")
    )?;
    // The slurm/ log folder must exist before sbatch opens the --output files.
    std::fs::create_dir_all(results.join("slurm"))
        .with_context(|| format!("creating {}", results.join("slurm").display()))?;

    match &args.output {
        Some(path) => {
            peftbench_records::write_atomic(path, s.as_bytes())?;
            eprintln!(
                "{} written: {runs} runs as {tasks} array tasks; submit with `sbatch {}`",
                path.display(),
                path.display()
            );
        }
        None => print!("{s}"),
    }
    Ok(ExitCode::SUCCESS)
}
