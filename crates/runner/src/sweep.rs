//! Sweeping a suite: plan, preflight (backbone and every task's data found before anything runs),
//! then each run in order, skipping those whose record already exists, and the leaderboard.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use peftbench_core::DeviceSpec;
use peftbench_records::{Environment, RecordStore, RunRecord, RunStatus};
use peftbench_report::{runs_table, Leaderboard};
use peftbench_suite::{plan, DataFormat, PlanOptions, RunSpec, Suite};

use crate::backbone::load_backbone;
use crate::data::data_root;
use crate::frozen_prefix::prefix_cache_budget;
use crate::kinds::{with_kind, Kind, KindVisitor};
use crate::layout::report_layout;
use crate::preflight::{backbone_info, check_methods};
use crate::provenance::data_artifacts;
use crate::run::{execute, RunContext};
use crate::{crate_versions, Paths, RegistryCatalog};

#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    pub plan: PlanOptions,
    /// Print the plan and stop.
    pub dry_run: bool,
    pub device: DeviceSpec,
    /// Run again the runs whose record says `failed` (completed and diverged runs are kept).
    pub retry_failed: bool,
    /// No progress output (tests).
    pub quiet: bool,
}

#[derive(Debug, Default)]
pub struct SweepSummary {
    pub planned: usize,
    /// Runs whose record already existed.
    pub reused: usize,
    pub completed: usize,
    pub diverged: usize,
    pub failed: usize,
    pub seconds: f64,
    /// The leaderboard as printed in the terminal, and where its markdown was written.
    pub table: String,
    pub runs: String,
    pub report_path: Option<std::path::PathBuf>,
    /// What a dry run could not check (e.g. method sizes when the backbone is not downloaded).
    pub notes: Vec<String>,
}

/// The dry-run listing: one line per run with whether its record already exists.
pub fn describe_plan(specs: &[RunSpec], store: &RecordStore) -> anyhow::Result<String> {
    let mut out = String::new();
    for spec in specs {
        let state = match store.get(&spec.run_id())? {
            Some(r) => r.status.to_string(),
            None => "pending".to_string(),
        };
        out.push_str(&format!(
            "{:<10} {}  epochs={} lr={} params={}\n",
            state,
            spec.run_id(),
            spec.recipe.epochs,
            spec.recipe.lr,
            spec.params
        ));
    }
    Ok(out)
}

fn is_done(record: &RunRecord, retry_failed: bool) -> bool {
    match record.status {
        RunStatus::Completed | RunStatus::Diverged => true,
        RunStatus::Failed => !retry_failed,
    }
}

/// Runs (or resumes) `suite`.
pub fn sweep(suite: &Suite, opts: &SweepOptions, paths: &Paths) -> anyhow::Result<SweepSummary> {
    let started = Instant::now();
    let specs = plan(suite, &opts.plan, &RegistryCatalog)?;
    // Read once, before anything runs: a malformed value stops the sweep instead of failing runs.
    let prefix_cache_budget = prefix_cache_budget()?;
    let store = RecordStore::open(&paths.results)?;
    let mut summary = SweepSummary {
        planned: specs.len(),
        ..Default::default()
    };
    if opts.dry_run {
        match backbone_info(&suite.backbone, paths) {
            Ok(info) => check_methods(&specs, &info)?,
            Err(e) => summary.notes.push(format!(
                "method configurations were not checked against the backbone's sizes: {e:#}"
            )),
        }
        summary.notes.extend(with_kind(
            suite.kind,
            MissingData {
                specs: &specs,
                paths,
            },
        ));
        summary.runs = describe_plan(&specs, &store)?;
        return Ok(summary);
    }

    let run_plan = RunPlan {
        suite,
        specs: &specs,
        opts,
        paths,
        store: &store,
        prefix_cache_budget,
        summary: &mut summary,
    };
    match suite.threads {
        // The suite's own pool: every parallel kernel and rayon loop of the sweep runs on it.
        Some(threads) => rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?
            .install(|| with_kind(suite.kind, run_plan))?,
        None => with_kind(suite.kind, run_plan)?,
    }
    summary.seconds = started.elapsed().as_secs_f64();

    if opts.plan.shards.is_empty() {
        let (table, runs, path) = report(suite, &opts.plan, &store, &paths.reports)?;
        summary.table = table;
        summary.runs = runs;
        summary.report_path = Some(path);
    } else {
        // Shards run concurrently (array tasks, one worker per device): each prints its own runs,
        // and the leaderboard of the whole suite comes from `harness report` once all are done,
        // instead of every shard overwriting it with a partial table.
        let mine: std::collections::BTreeSet<String> = specs.iter().map(RunSpec::run_id).collect();
        let records: Vec<RunRecord> = store
            .load_all()?
            .into_iter()
            .filter(|r| mine.contains(&r.run_id))
            .collect();
        summary.runs = runs_table(&records);
    }
    Ok(summary)
}

/// `--dry-run`'s data check: for each task read from disk, why its data cannot be found (where
/// it was looked for); generated data needs nothing.
struct MissingData<'a> {
    specs: &'a [RunSpec],
    paths: &'a Paths,
}

impl KindVisitor for MissingData<'_> {
    type Output = Vec<String>;

    fn visit<K: Kind>(self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.specs
            .iter()
            .filter(|spec| spec.data.format != DataFormat::Generated)
            .filter(|spec| seen.insert((spec.task.name.clone(), spec.fold)))
            .filter_map(|spec| locate::<K>(spec, self.paths, true).err())
            .map(|e| format!("data not found: {e:#}"))
            .collect()
    }
}

/// [`Kind::locate`], whose error for data on disk also says how to get it.
fn locate<K: Kind>(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<K::Located> {
    K::locate(spec, paths, quiet).map_err(|e| {
        if spec.data.format == DataFormat::Generated {
            return e;
        }
        e.context(format!(
            "task `{task}`: its data was not found. When the suite has a manifest \
             (manifests/{suite}.toml), `harness fetch {suite} --data-dir DIR` downloads and \
             verifies it, and `harness verify {suite} --data-dir DIR` checks a copy of your own",
            task = spec.task.name,
            suite = spec.suite
        ))
    })
}

/// A sweep's runs, in plan order, as tasks of kind `K`: preflight (every task's data and the
/// backbone found, and generated data made, before the first run), then each run, skipping those
/// whose record already exists.
struct RunPlan<'a> {
    suite: &'a Suite,
    specs: &'a [RunSpec],
    opts: &'a SweepOptions,
    paths: &'a Paths,
    store: &'a RecordStore,
    prefix_cache_budget: u64,
    summary: &'a mut SweepSummary,
}

impl KindVisitor for RunPlan<'_> {
    type Output = anyhow::Result<()>;

    fn visit<K: Kind>(self) -> anyhow::Result<()> {
        let RunPlan {
            suite,
            specs,
            opts,
            paths,
            store,
            prefix_cache_budget,
            summary,
        } = self;
        let device = opts.device.open()?;
        let mut environment = Environment::capture(&opts.device.to_string(), crate_versions());
        environment.kernels = Some(peftbench_core::kernels::instruction_sets());
        let data = data_artifacts(
            &suite.name,
            &peftbench_fetch::manifest::default_dir(),
            suite.data.root.as_deref().or(paths.data_dir.as_deref()),
            &paths.cache,
        )?;
        let mut located = BTreeMap::new();
        // The data root, when one is set: where each task's files are, and language adapter
        // corpora (also for generated tasks).
        let data_roots: BTreeMap<String, Option<std::path::PathBuf>> = specs
            .iter()
            .map(|spec| (spec.task.name.clone(), data_root(spec, paths).ok()))
            .collect();
        for spec in specs {
            let key = (spec.task.name.clone(), spec.fold);
            if let Entry::Vacant(slot) = located.entry(key) {
                slot.insert(locate::<K>(spec, paths, opts.quiet)?);
            }
        }
        let mut backbone = load_backbone(
            &suite.backbone,
            paths,
            &device,
            opts.quiet,
            suite.audio.as_ref().map(|a| a.target_frames),
        )?;
        if let Some(spec) = specs.first() {
            K::check_backbone(spec, &backbone.model)?;
        }
        check_methods(specs, &backbone.model.info())?;
        let encoders = K::encoders(suite, &mut backbone, paths)?;

        let bar = if opts.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(specs.len() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        // The prepared inputs of the current task, one entry per fold (a cross-validated task's
        // runs alternate between folds; the plan is ordered task by task).
        let mut prepared: (String, BTreeMap<Option<u32>, K::Prepared>) =
            (String::new(), BTreeMap::new());
        for spec in specs {
            let run_id = spec.run_id();
            if let Some(record) = store.get(&run_id)? {
                if is_done(&record, opts.retry_failed) {
                    summary.reused += 1;
                    bar.inc(1);
                    continue;
                }
            }
            if prepared.0 != spec.task.name {
                // Free the previous task's decoded inputs before decoding the next task's.
                prepared = (spec.task.name.clone(), BTreeMap::new());
            }
            if let Entry::Vacant(slot) = prepared.1.entry(spec.fold) {
                let data = &located[&(spec.task.name.clone(), spec.fold)];
                slot.insert(K::prepare(spec, data, &encoders, &device, opts.quiet)?);
            }
            let task = &prepared.1[&spec.fold];
            let ctx = RunContext {
                store,
                device: &device,
                backbone: &backbone,
                environment: &environment,
                text_encoder: K::text_encoder(&encoders),
                data_root: data_roots[&spec.task.name].as_deref(),
                prefix_cache_budget,
                data: &data,
            };
            let fold = spec.fold.map(|f| format!("/fold{f}")).unwrap_or_default();
            let label = format!("{}/{}/seed{}{fold}", spec.task.name, spec.label, spec.seed);
            bar.set_message(label.clone());
            let mut progress = |p: peftbench_train::Progress| {
                bar.set_message(format!(
                    "{label} epoch {}/{} loss {:.3}",
                    p.epoch + 1,
                    p.epochs,
                    p.loss
                ));
            };
            let record = execute::<K>(spec, task, &ctx, &mut progress);
            match record.status {
                RunStatus::Completed => summary.completed += 1,
                RunStatus::Diverged => summary.diverged += 1,
                RunStatus::Failed => {
                    summary.failed += 1;
                    bar.suspend(|| {
                        eprintln!(
                            "run {run_id} failed: {}",
                            record.error.as_deref().unwrap_or("")
                        )
                    });
                }
            }
            store.write(&record)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    }
}

/// The leaderboard of the runs `plan_options` selects from `suite`, from the records in `store`:
/// terminal table, runs table, markdown path.
pub fn report(
    suite: &Suite,
    plan_options: &PlanOptions,
    store: &RecordStore,
    reports_dir: &std::path::Path,
) -> anyhow::Result<(String, String, std::path::PathBuf)> {
    let (board, records) = suite_leaderboard(suite, plan_options, store.load_all()?)?;
    let path = write_report(&board, reports_dir)?;
    Ok((board.terminal(), runs_table(&records), path))
}

/// The leaderboard of the runs `plan_options` selects from `suite`, from `records` (of any
/// suites, from any number of results directories), and the records it used.
///
/// Only records of the suite's current plan count: a record left by an earlier version of the
/// suite (another lr, another grid) has another config hash, and mixing it in would average
/// different configurations as if they were seeds.
pub fn suite_leaderboard(
    suite: &Suite,
    plan_options: &PlanOptions,
    records: Vec<RunRecord>,
) -> anyhow::Result<(Leaderboard, Vec<RunRecord>)> {
    let specs = plan(suite, plan_options, &RegistryCatalog)?;
    let current: std::collections::BTreeSet<String> = specs.iter().map(RunSpec::run_id).collect();
    let (records, stale): (Vec<RunRecord>, Vec<RunRecord>) = records
        .into_iter()
        .filter(|r| r.suite == suite.name)
        .partition(|r| current.contains(&r.run_id));
    if !stale.is_empty() {
        eprintln!(
            "note: {} record(s) of suite `{}` belong to configurations no longer in the suite file (or outside --filter) and are left out",
            stale.len(),
            suite.name
        );
    }
    // Rows in the suite's method order.
    let mut order: Vec<String> = Vec::new();
    for spec in specs {
        if !order.contains(&spec.label) {
            order.push(spec.label);
        }
    }
    let board = Leaderboard::build_with_order(&records, &report_layout(suite), &order);
    Ok((board, records))
}

/// Writes the figures and the markdown leaderboard linking them under `reports_dir`; returns the
/// markdown's path.
pub fn write_report(
    board: &Leaderboard,
    reports_dir: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let figures = peftbench_report::write_figures(board, reports_dir)?;
    board.write_markdown_with_figures(reports_dir, &figures)
}
