//! `harness report SUITE`: the leaderboard from run records alone.

use std::process::ExitCode;

use peftbench_records::RecordStore;
use peftbench_runner::{sweep::report, RegistryCatalog};
use peftbench_suite::{load_suite, PlanOptions};

use super::suites_dir;
use crate::Locations;

/// Print the leaderboard of a suite and write it as markdown under --reports.
#[derive(clap::Args)]
pub struct Args {
    /// The suite whose records to tabulate (name or file).
    pub suite: String,
    /// Also print one line per run (status, accuracy, parameters, time, memory).
    #[arg(long)]
    pub runs: bool,
    #[command(flatten)]
    pub locations: Locations,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let suite = load_suite(&args.suite, &suites_dir(&args.locations), &RegistryCatalog)?;
    let store = RecordStore::open(&args.locations.results)?;
    let (table, runs, path) = report(
        &suite,
        &PlanOptions::default(),
        &store,
        &args.locations.reports,
    )?;
    println!("{table}");
    if args.runs {
        println!("{runs}");
    }
    println!("Leaderboard written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}
