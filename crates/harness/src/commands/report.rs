//! `harness report [SUITE]`: leaderboards from run records alone, in any format, over any subset
//! of records from any number of results directories or Parquet exports.

use std::path::PathBuf;
use std::process::ExitCode;

use peftbench_records::{load_records, write_parquet, RunRecord};
use peftbench_report::{Leaderboard, RecordFilter, ReportLayout};
use peftbench_runner::sweep::{suite_leaderboard, write_report};
use peftbench_runner::RegistryCatalog;
use peftbench_suite::{load_suite, PlanOptions};

use super::{emit, suites_dir};
use crate::{Outputs, SuitesDir};

const EXAMPLES: &str = "Examples:
  harness report demo                                  # terminal table, writes reports/demo.md + figures
  harness report --format md --filter method=lora      # any subset, as markdown on stdout
  harness report --from shard-1 --from shard-2 --format csv > demo.csv
  harness report --parquet runs.parquet                # every record as one Parquet file
  harness report --from runs.parquet --format json

With the suite file at hand (`--suites-dir`, ./suites or the shipped ones), rows follow its method
order, published numbers are shown and records of configurations no longer in the file are left
out. Without it the layout is read off the records (tasks, groups) and every record counts.";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table for the terminal (comfy-table).
    Terminal,
    /// GitHub markdown (the same as the written reports/<suite>.md).
    Md,
    /// The leaderboard as JSON (cells with values, seeds, intervals, costs, published numbers).
    Json,
    /// One tidy row per method and task, group or average.
    Csv,
}

/// Print leaderboards from run records; write markdown, figures and Parquet exports.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The suite to tabulate (name or suite file). Default: every suite found in the records.
    pub suite: Option<String>,
    /// The same as the positional SUITE.
    #[arg(long = "suite", conflicts_with = "suite")]
    pub suite_flag: Option<String>,
    /// Where the records are: results directories (holding records/), .parquet exports or record
    /// .json files; repeatable, combined without double counting. Default: --results.
    #[arg(long)]
    pub from: Vec<PathBuf>,
    /// Keep only matching records: `task=cifar`, `method=lora,seed=0` (comma = and; repeat = or),
    /// or a substring of the run id. Keys: suite, task, method, label, group, seed, status.
    #[arg(long)]
    pub filter: Vec<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "terminal")]
    pub format: Format,
    /// Also print one line per run (status, accuracy, parameters, time, memory).
    #[arg(long)]
    pub runs: bool,
    /// Write the selected records as one Parquet file (schema in the README).
    #[arg(long, value_name = "FILE")]
    pub parquet: Option<PathBuf>,
    /// Do not write reports/<suite>.md and its figures.
    #[arg(long)]
    pub no_write: bool,
    /// The `--override`s the suite was run with (records of other configurations are left out).
    #[arg(long = "override")]
    pub overrides: Vec<String>,
    /// The `--epochs` the suite was run with.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// The `--limit` the suite was run with.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub outputs: Outputs,
    #[command(flatten)]
    pub suites: SuitesDir,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sources = if args.from.is_empty() {
        vec![args.outputs.results.clone()]
    } else {
        args.from.clone()
    };
    let filter = RecordFilter::parse(&args.filter)?;
    let records: Vec<RunRecord> = load_records(&sources)?
        .into_iter()
        .filter(|r| filter.matches(r))
        .collect();

    if let Some(path) = &args.parquet {
        write_parquet(&records, path)?;
        eprintln!("{} records written to {}", records.len(), path.display());
    }

    let requested = args.suite.clone().or(args.suite_flag.clone());
    let boards = leaderboards(requested.as_deref(), records, &args)?;
    if boards.is_empty() && args.parquet.is_none() {
        anyhow::bail!(
            "no run records in {} match",
            sources
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut out = String::new();
    for (board, records) in &boards {
        out.push_str(&match args.format {
            Format::Terminal => board.terminal(),
            Format::Md => board.markdown(),
            Format::Json => peftbench_report::json(board),
            Format::Csv => peftbench_report::csv(board),
        });
        if args.runs {
            out.push_str(&peftbench_report::runs_table(records));
        }
        if !args.no_write {
            let path = write_report(board, &args.outputs.reports)?;
            eprintln!("Leaderboard written to {}", path.display());
        }
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// One leaderboard per suite: through its suite file when one is found, else from the records.
fn leaderboards(
    requested: Option<&str>,
    records: Vec<RunRecord>,
    args: &Args,
) -> anyhow::Result<Vec<(Leaderboard, Vec<RunRecord>)>> {
    let dir = suites_dir(&args.suites);
    let mut names: Vec<String> = Vec::new();
    for r in &records {
        if !names.contains(&r.suite) {
            names.push(r.suite.clone());
        }
    }
    let mut wanted: Vec<(String, Option<peftbench_suite::Suite>)> = Vec::new();
    match requested {
        // An explicit suite must load: a typo should not silently fall back.
        Some(name) => {
            let suite = load_suite(name, &dir, &RegistryCatalog)?;
            wanted.push((suite.name.clone(), Some(suite)));
        }
        None => {
            for name in names {
                let suite = load_suite(&name, &dir, &RegistryCatalog).ok();
                wanted.push((name, suite));
            }
        }
    }
    let mut out = Vec::new();
    for (name, suite) in wanted {
        let mine: Vec<RunRecord> = records
            .iter()
            .filter(|r| r.suite == name)
            .cloned()
            .collect();
        match suite {
            Some(suite) => {
                let plan = PlanOptions {
                    overrides: args.overrides.clone(),
                    epochs: args.epochs,
                    limit: args.limit,
                    ..Default::default()
                };
                out.push(suite_leaderboard(&suite, &plan, mine)?)
            }
            None => {
                eprintln!(
                    "note: no suite file `{name}` in {}; tasks and groups are read off the records",
                    dir.display()
                );
                let layout = ReportLayout::from_records(&name, &mine);
                out.push((Leaderboard::build(&mine, &layout), mine));
            }
        }
    }
    Ok(out)
}
