//! `harness list methods|tasks|suites`.

use std::fmt::Write as _;
use std::process::ExitCode;

use peftbench_data_vision::ShapeTask;
use peftbench_methods::registry;
use peftbench_runner::RegistryCatalog;
use peftbench_suite::{list_suites, load_suite};

use super::{emit, suites_dir};
use crate::Locations;

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum What {
    /// PEFT methods in the registry, with their parameters and paper.
    Methods,
    /// Tasks declared by the suites, and the generated tasks.
    Tasks,
    /// Suite files.
    Suites,
}

/// List what exists, one line each with a description.
#[derive(clap::Args)]
pub struct Args {
    pub what: What,
    #[command(flatten)]
    pub locations: Locations,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = suites_dir(&args.locations);
    let mut out = String::new();
    match args.what {
        What::Methods => {
            for m in registry::registry() {
                let info = m.info();
                writeln!(out, "{:<12} {}  [{}]", info.name, info.summary, info.paper)?;
                for p in info.params {
                    writeln!(
                        out,
                        "{:<12}   {} (default {}): {}",
                        "", p.name, p.default, p.doc
                    )?;
                }
            }
        }
        What::Tasks => {
            for task in ShapeTask::ALL {
                writeln!(
                    out,
                    "{:<28} {} classes, generated: {}",
                    format!("generated/{}", task.name()),
                    task.num_classes(),
                    task.description()
                )?;
            }
            for (name, _) in list_suites(&dir) {
                let suite = match load_suite(&name, &dir, &RegistryCatalog) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("warning: {e}");
                        continue;
                    }
                };
                for t in &suite.tasks {
                    let group = suite
                        .groups
                        .iter()
                        .find(|(_, m)| m.contains(&t.name))
                        .map(|(g, _)| g.as_str());
                    writeln!(
                        out,
                        "{:<28} {} classes{}",
                        format!("{}/{}", suite.name, t.name),
                        t.num_classes,
                        group.map(|g| format!(", group {g}")).unwrap_or_default()
                    )?;
                }
            }
        }
        What::Suites => {
            for (name, description) in list_suites(&dir) {
                writeln!(out, "{name:<12} {description}")?;
            }
        }
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
