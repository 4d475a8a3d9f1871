//! `harness list methods|learners|tasks|suites`.

use std::process::ExitCode;

use peftbench_data_vision::ShapeTask;
use peftbench_methods::registry;
use peftbench_runner::RegistryCatalog;
use peftbench_suite::{list_suites, load_suite, Learner};

use super::{emit, suites_dir};
use crate::SuitesDir;

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum What {
    /// PEFT methods in the registry, with their parameters and paper.
    Methods,
    /// How continual suites learn their stream (a method entry's `learner:`), with the options
    /// of its `learner_params:`.
    Learners,
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
    pub suites: SuitesDir,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = suites_dir(&args.suites);
    // (name, description) rows; a method's parameters follow it as rows with an empty name.
    let mut rows: Vec<(String, String)> = Vec::new();
    match args.what {
        What::Methods => {
            for m in registry::registry() {
                let info = m.info();
                rows.push((
                    info.name.to_string(),
                    format!("{}  [{}]", info.summary, info.paper),
                ));
                for p in info.params {
                    rows.push((
                        String::new(),
                        format!("  {} (default {}): {}", p.name, p.default, p.doc),
                    ));
                }
            }
        }
        What::Learners => {
            for learner in Learner::ALL {
                rows.push((learner.name().to_string(), learner.summary().to_string()));
                for (name, default, doc) in learner.options() {
                    rows.push((
                        String::new(),
                        format!("  learner_params.{name} (default {default}): {doc}"),
                    ));
                }
            }
        }
        What::Tasks => {
            for task in ShapeTask::ALL {
                rows.push((
                    format!("generated/{}", task.name()),
                    format!(
                        "{} classes, generated: {}",
                        task.num_classes(),
                        task.description()
                    ),
                ));
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
                    rows.push((
                        format!("{}/{}", suite.name, t.name),
                        format!(
                            "{} classes{}",
                            t.num_classes,
                            group.map(|g| format!(", group {g}")).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        What::Suites => rows.extend(list_suites(&dir)),
    }
    emit(&aligned(&rows))?;
    Ok(ExitCode::SUCCESS)
}

/// One line per row, descriptions starting in one column after the longest name.
fn aligned(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(name, description)| {
            format!("{name:<width$}  {description}")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}
