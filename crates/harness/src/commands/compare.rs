//! `harness compare BASELINE CURRENT`: a regression table between two sets of run records.

use std::path::PathBuf;
use std::process::ExitCode;

use peftbench_records::load_records;
use peftbench_report::{compare, RecordFilter};
use peftbench_runner::RegistryCatalog;
use peftbench_suite::{load_suite, Suite};

use super::{emit, suites_dir};
use crate::SuitesDir;

const EXAMPLES: &str = "Examples:
  harness compare ci/baselines/demo.parquet results        # exit 1 on a regression
  harness compare old-results new-results --filter suite=demo --output diff.md
  harness compare base.parquet results --tolerance 2.0     # when the suite file is not at hand

Tolerances (percentage points a task's mean may drop) come from the suite file: `tolerance:` at
the top (default 1.0) and per task. Records of different suites, configurations (other than seed
and data folder), primary metrics or model-selection rules are refused, naming what differs.
Exit codes: 0 no regression, 1 regression (or a baseline run missing or failed), 2 error.";

/// Compare run records against a baseline; exit 1 on a regression.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Baseline records: a results directory or a .parquet export.
    pub baseline: PathBuf,
    /// Current records: a results directory or a .parquet export.
    pub current: PathBuf,
    /// Keep only matching records on both sides (`suite=demo`, `task=cifar,method=lora`, ...).
    #[arg(long)]
    pub filter: Vec<String>,
    /// Tolerance for suites whose file is not found (percentage points). Without it a missing
    /// suite file is an error.
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// Also write the markdown table to this file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub suites: SuitesDir,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = RecordFilter::parse(&args.filter)?;
    let load = |p: &PathBuf| -> anyhow::Result<Vec<_>> {
        Ok(load_records(std::slice::from_ref(p))?
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect())
    };
    let baseline = load(&args.baseline)?;
    let current = load(&args.current)?;

    // Tolerances from each suite's file.
    let dir = suites_dir(&args.suites);
    let mut suites: std::collections::BTreeMap<String, Suite> = Default::default();
    for name in baseline.iter().chain(&current).map(|r| r.suite.clone()) {
        if suites.contains_key(&name) {
            continue;
        }
        match load_suite(&name, &dir, &RegistryCatalog) {
            Ok(s) => {
                suites.insert(name, s);
            }
            Err(e) if args.tolerance.is_some() => {
                eprintln!("note: {e}; using --tolerance for suite `{name}`");
            }
            Err(e) => anyhow::bail!(
                "{e}\nthe suite file declares the tolerances; pass --suites-dir, or --tolerance to use one for every task"
            ),
        }
    }
    let tolerance = |suite: &str, task: &str| -> f64 {
        match suites.get(suite) {
            Some(s) => s.tolerance_of(task),
            None => args.tolerance.unwrap_or(peftbench_suite::DEFAULT_TOLERANCE),
        }
    };
    let comparison = compare(&baseline, &current, &tolerance).map_err(|e| anyhow::anyhow!(e))?;
    let table = comparison.markdown();
    if let Some(path) = &args.output {
        peftbench_records::write_atomic(path, table.as_bytes())?;
    }
    emit(&table)?;
    Ok(if comparison.has_regression() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
