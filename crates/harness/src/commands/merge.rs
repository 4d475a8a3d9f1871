//! `harness merge DIR... --into DIR`: combine results directories (shards, machines, Slurm array
//! tasks) into one, records and adapters.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use peftbench_records::{merge_sourced, RecordSource, RecordStore};

/// Combine the records and adapters of several results directories (or Parquet exports) into one.
#[derive(clap::Args)]
#[command(after_help = "Example:
  harness merge results/shard-* --into results/all && harness report demo --results results/all

A run id found in several sources keeps one record: a completed run beats a diverged or failed
one; two completed records of the same run with different results are an error naming both.
Records already in --into take part like any source, so merging again is harmless.")]
pub struct Args {
    /// Results directories (holding records/) or .parquet exports.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// The results directory to merge into (created if needed).
    #[arg(long)]
    pub into: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = RecordStore::open(&args.into)?;
    let mut loaded = vec![(
        args.into.display().to_string(),
        target
            .load_all()
            .context("reading the records already in --into")?,
    )];
    let mut dirs = Vec::new();
    for p in &args.sources {
        let source = RecordSource::from_path(p)?;
        if let RecordSource::Directory(d) = &source {
            dirs.push((p.display().to_string(), d.clone()));
        }
        loaded.push((p.display().to_string(), source.load()?));
    }
    let merged = merge_sourced(loaded)?;
    let into_name = args.into.display().to_string();
    let (mut written, mut artifacts) = (0, 0);
    for (source, record) in &merged {
        if *source == into_name {
            continue;
        }
        target.write(record)?;
        written += 1;
        // Adapters travel with their records (paths are relative to the results directory).
        if let (Some(rel), Some((_, dir))) = (
            &record.adapter_dir,
            dirs.iter().find(|(name, _)| name == source),
        ) {
            let from = dir.join(rel);
            if from.is_dir() {
                copy_dir(&from, &target.root().join(rel))?;
                artifacts += 1;
            }
        }
    }
    println!(
        "{} records in {} ({} taken from the sources, {} with adapters)",
        merged.len(),
        args.into.display(),
        written,
        artifacts
    );
    Ok(ExitCode::SUCCESS)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            peftbench_records::write_atomic(&dest, &std::fs::read(entry.path())?)?;
        }
    }
    Ok(())
}
