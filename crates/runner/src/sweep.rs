//! Sweeping a suite: plan, preflight (backbone and every task's data found before anything runs),
//! then each run in order, skipping those whose record already exists, and the leaderboard.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use peftbench_backbones::TextEncoder;
use peftbench_core::DeviceSpec;
use peftbench_records::{Environment, RecordStore, RunRecord, RunStatus};
use peftbench_report::{runs_table, Leaderboard};
use peftbench_suite::{plan, DataFormat, PlanOptions, RunSpec, Suite};

use crate::audio::{self, audio_batch_source, load_audio_task, spec_augment, AudioTaskData};
use crate::backbone::load_backbone;
use crate::data::{batch_source, data_root, generated_seed, load_task_data, preprocess, TaskData};
use crate::frozen_prefix::prefix_cache_budget;
use crate::layout::report_layout;
use crate::preflight::{backbone_info, check_methods};
use crate::rerank::RerankTask;
use crate::run::{execute, Prepared, PreparedTask, RunContext};
use crate::text::{encode_split, load_text_task, TextSplit, TextTaskData};
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
        summary.runs = describe_plan(&specs, &store)?;
        return Ok(summary);
    }

    let device = opts.device.open()?;
    let environment = Environment::capture(&opts.device.to_string(), crate_versions());
    // Preflight: every task's data and the backbone are found (and generated data made) before
    // the first run.
    // Audio suites share one filter-bank cache across tasks, folds, methods and seeds.
    let audio_features = suite
        .audio
        .as_ref()
        .map(|a| audio::features_for(a, &paths.cache))
        .transpose()?;
    let mut task_data = std::collections::BTreeMap::new();
    // The data root, when one is set: where each task's files are, and language adapter corpora
    // (also for generated tasks).
    let data_roots: std::collections::BTreeMap<String, Option<std::path::PathBuf>> = specs
        .iter()
        .map(|spec| (spec.task.name.clone(), data_root(spec, paths).ok()))
        .collect();
    for spec in &specs {
        let key = (spec.task.name.clone(), spec.fold);
        if let std::collections::btree_map::Entry::Vacant(slot) = task_data.entry(key) {
            slot.insert(load_task_input(spec, paths, opts.quiet)?);
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
        backbone.model.check_input(spec)?;
    }
    check_methods(&specs, &backbone.model.info())?;
    if let Some(text) = &suite.text {
        backbone.model.set_text_pooling(text.pooling);
    }
    let text_encoder = match (&suite.text, &backbone.tokenizer) {
        (Some(text), Some(tokenizer)) => Some(TextEncoder::from_file(tokenizer, text.max_tokens)?),
        _ => None,
    };

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
    // The prepared splits of the current task, one entry per fold (a cross-validated task's runs
    // alternate between folds; the plan is ordered task by task).
    let mut prepared: (String, std::collections::BTreeMap<Option<u32>, Prepared>) =
        (String::new(), Default::default());
    for spec in &specs {
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
            prepared = (spec.task.name.clone(), Default::default());
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = prepared.1.entry(spec.fold) {
            let input = &task_data[&(spec.task.name.clone(), spec.fold)];
            slot.insert(prepare_task(
                spec,
                input,
                &Encoders {
                    audio: audio_features.as_ref(),
                    text: text_encoder.as_ref(),
                },
                &device,
                opts.quiet,
                suite
                    .retrieval
                    .as_ref()
                    .and_then(|r| r.index_cache.as_deref()),
            )?);
        }
        let task = &prepared.1[&spec.fold];
        let ctx = RunContext {
            store: &store,
            device: &device,
            backbone: &backbone,
            environment: &environment,
            text_encoder: text_encoder.as_ref(),
            data_root: data_roots[&spec.task.name].as_deref(),
            prefix_cache_budget,
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
        let record = execute(spec, task, &ctx, &mut progress);
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

/// A task's splits as listed before the first run: images, audio clips or texts; for reranking,
/// the data root its files were all found under.
enum TaskInput {
    Images(TaskData),
    Audio(Box<AudioTaskData>),
    Text(TextTaskData),
    Ranking(std::path::PathBuf),
}

fn load_task_input(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<TaskInput> {
    if spec.retrieval.is_some() {
        let root = crate::rerank::data_root(spec, paths)?;
        crate::rerank::check_files(spec, &root)?;
        return Ok(TaskInput::Ranking(root));
    }
    if spec.audio.is_none() && spec.text.is_none() {
        return Ok(TaskInput::Images(load_task_data(spec, paths, quiet)?));
    }
    let root = match spec.data.format {
        DataFormat::Generated => None,
        _ => Some(data_root(spec, paths)?),
    };
    if spec.text.is_some() {
        return Ok(TaskInput::Text(load_text_task(spec, root.as_deref())?));
    }
    let task = spec.task.name.clone();
    Ok(TaskInput::Audio(Box::new(load_audio_task(
        spec,
        root,
        |split| generated_seed(&task, split),
    )?)))
}

/// What turns a suite's raw inputs into model inputs, besides image preprocessing.
struct Encoders<'a> {
    /// Audio suites: the shared filter-bank cache.
    audio: Option<&'a std::sync::Arc<peftbench_data_audio::AstFeatures>>,
    /// Text suites: the backbone's tokenizer, truncating to the suite's `max_tokens`.
    text: Option<&'a TextEncoder>,
}

/// Decodes a task's inputs for all of its runs: images into memory (or a prefetching stream),
/// audio into filter banks (from the shared cache when another fold or sweep computed them),
/// texts into token ids; a reranking task's collection is read and its first stage run.
fn prepare_task(
    spec: &RunSpec,
    input: &TaskInput,
    encoders: &Encoders<'_>,
    device: &candle_core::Device,
    quiet: bool,
    index_cache: Option<&std::path::Path>,
) -> anyhow::Result<Prepared> {
    if let TaskInput::Ranking(root) = input {
        let encoder = encoders
            .text
            .expect("reranking suites load their backbone's tokenizer");
        return Ok(Prepared::Ranking(Box::new(RerankTask::prepare(
            spec,
            root,
            index_cache,
            encoder,
            device,
        )?)));
    }
    prepare_classification(spec, input, encoders, device, quiet)
        .map(|task| Prepared::Classification(Box::new(task)))
}

fn prepare_classification(
    spec: &RunSpec,
    input: &TaskInput,
    encoders: &Encoders<'_>,
    device: &candle_core::Device,
    quiet: bool,
) -> anyhow::Result<PreparedTask> {
    match input {
        TaskInput::Ranking(_) => unreachable!("prepared by prepare_task"),
        TaskInput::Images(data) => {
            let pre = preprocess(spec);
            Ok(PreparedTask {
                train: batch_source(&data.train, &pre, device)?,
                eval: batch_source(&data.eval, &pre, device)?,
                val: data
                    .val
                    .as_ref()
                    .map(|v| batch_source(v, &pre, device))
                    .transpose()?,
                skipped_examples: data.skipped,
                augmented_training: false,
                features: Default::default(),
                prefixes: Default::default(),
                tagging: None,
            })
        }
        TaskInput::Audio(data) => {
            let audio = spec.audio.as_ref().expect("audio task of an audio suite");
            let features = encoders.audio.expect("audio suites have a feature cache");
            let on_error = spec.protocol.on_data_error;
            let augment = spec_augment(audio);
            let source =
                |ds, augment| audio_batch_source(ds, features, augment, on_error, device, quiet);
            let (train, skipped_train) = source(&data.train, augment)?;
            let (eval, skipped_eval) = source(&data.eval, None)?;
            let (val, skipped_val) = match &data.val {
                Some(v) => {
                    let (v, n) = source(v, None)?;
                    (
                        Some(Box::new(v) as Box<dyn peftbench_train::BatchSource>),
                        n,
                    )
                }
                None => (None, 0),
            };
            Ok(PreparedTask {
                train: Box::new(train),
                eval: Box::new(eval),
                val,
                skipped_examples: skipped_train + skipped_eval + skipped_val,
                augmented_training: augment.is_some(),
                features: Default::default(),
                prefixes: Default::default(),
                tagging: None,
            })
        }
        TaskInput::Text(data) => {
            let encoder = encoders
                .text
                .expect("text suites load their backbone's tokenizer");
            let encode = |examples: &TextSplit, split: &str| {
                encode_split(encoder, examples, &data.labels, device)
                    .map_err(|e| anyhow::anyhow!("task `{}` split `{split}`: {e}", spec.task.name))
            };
            let protocol = &spec.protocol;
            let (eval, tagging) = encode(&data.eval, &protocol.eval_split)?;
            Ok(PreparedTask {
                train: Box::new(encode(&data.train, &protocol.train_split)?.0),
                eval: Box::new(eval),
                val: match (&data.val, &protocol.val_split) {
                    (Some(v), Some(split)) => Some(Box::new(encode(v, split)?.0)),
                    _ => None,
                },
                skipped_examples: 0,
                augmented_training: false,
                features: Default::default(),
                prefixes: Default::default(),
                tagging,
            })
        }
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
