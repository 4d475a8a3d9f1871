//! `harness fetch SUITE`, `harness verify SUITE` and `harness manifest pin|check`: the suite's
//! outside data and weights, from its manifest (`manifests/<suite>.toml`), fetched and checked by
//! the `peftbench-fetch` crate. This file parses the options, ties each manifest to its suite
//! file (the backbone and every data path the suite reads must be covered) and prints reports.
//!
//! Exit codes: 0 all present and verified; 1 something present differs from the manifest; 2
//! cannot start (bad manifest, unknown suite, lock held); 3 incomplete (manual or unpinned
//! artifacts, offline and not cached, all sources failed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use peftbench_fetch::download::RetryPolicy;
use peftbench_fetch::install::receipt_path;
use peftbench_fetch::manifest::{self, ArtifactKind};
use peftbench_fetch::progress::Mode;
use peftbench_fetch::{FetchOptions, FileState, Mirrors, Report, SuiteManifest, VerifyOptions};
use peftbench_runner::{
    demo, demo_audio, demo_clip, demo_music, demo_t5, demo_text, RegistryCatalog,
};
use peftbench_suite::{load_suite, DataFormat, Suite};

use super::{emit, suites_dir};
use crate::SuitesDir;

/// What fetch and verify read besides manifests: suite files, and the data root the data goes to.
#[derive(clap::Args, Debug)]
pub struct DataLocations {
    #[command(flatten)]
    pub suites: SuitesDir,
    /// Root of on-disk datasets (one folder per task), when a suite's `data.root` is not set.
    #[arg(long, env = "PEFTBENCH_DATA")]
    pub data_dir: Option<PathBuf>,
}

impl AsRef<SuitesDir> for DataLocations {
    fn as_ref(&self) -> &SuitesDir {
        &self.suites
    }
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit codes: 0 all present and verified, 1 something present differs from \
the manifest, 2 cannot start, 3 incomplete (manual, unpinned, offline, all sources failed)."
)]
pub struct FetchArgs {
    /// Suite whose data and weights to fetch (its manifest is `manifests/<SUITE>.toml`).
    pub suite: String,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Open no socket: report what is present and what is missing (also `HF_HUB_OFFLINE=1`).
    #[arg(long, env = "HF_HUB_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub offline: bool,
    /// Install the files from this folder (copied onto an air-gapped machine), matched by size and
    /// digest, instead of downloading them.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// One JSON event per line on stdout (start, note, done, summary), for CI.
    #[arg(long)]
    pub json: bool,
    /// Base URL of an internal mirror per source kind: `hub=URL` (like HF_ENDPOINT),
    /// `github=URL` (raw files), `url=URL` (tried before the manifests' plain URLs).
    #[arg(long, value_name = "KIND=URL")]
    pub mirror: Vec<String>,
    #[command(flatten)]
    pub manifests: ManifestsDir,
    /// First retry delay in milliseconds (it doubles per retry).
    #[arg(long, default_value_t = 500, hide = true)]
    pub retry_delay_ms: u64,
    #[command(flatten)]
    pub locations: DataLocations,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Suite whose data and weights to check.
    pub suite: String,
    /// Hash every file, large data files included (otherwise: sizes, and digests of weights and
    /// files up to 64 MiB).
    #[arg(long)]
    pub deep: bool,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub manifests: ManifestsDir,
    #[command(flatten)]
    pub locations: DataLocations,
}

#[derive(clap::Args, Debug)]
pub struct ManifestsDir {
    /// Directory of manifests. Default: ./manifests, else the one shipped with this build.
    #[arg(long = "manifests", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl ManifestsDir {
    fn resolve(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(manifest::default_dir)
    }
}

#[derive(clap::Args, Debug)]
pub struct ManifestArgs {
    #[command(subcommand)]
    pub action: ManifestAction,
}

#[derive(clap::Subcommand, Debug)]
pub enum ManifestAction {
    /// Fill an artifact's unpinned sizes and digests by hashing files you downloaded.
    Pin {
        /// Artifact id (`manifests/artifacts/<ID>.toml`).
        id: String,
        /// Folder holding the downloaded files (found by path, else by file name). Without it,
        /// the hub's API is asked (HF_ENDPOINT or --mirror-hub).
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Base URL of a hub mirror for the API calls.
        #[arg(long, value_name = "URL")]
        mirror_hub: Option<String>,
        /// Refuse the network (also `HF_HUB_OFFLINE=1`): only --from works.
        #[arg(long, env = "HF_HUB_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
        offline: bool,
        #[command(flatten)]
        manifests: ManifestsDir,
    },
    /// Load every manifest, check it against its suite file, and check the unpinned allow-list.
    Check {
        #[command(flatten)]
        manifests: ManifestsDir,
        #[command(flatten)]
        locations: SuitesDir,
    },
}

fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// The suite and its manifest, checked against each other.
fn load_pair(
    suite: &str,
    manifests: &Path,
    loc: &impl AsRef<SuitesDir>,
) -> anyhow::Result<(Suite, SuiteManifest)> {
    let suite = load_suite(suite, &suites_dir(loc), &RegistryCatalog)?;
    let manifest = manifest::load_suite_manifest(manifests, &suite.name).map_err(|e| {
        if e.line.is_none() && e.message.starts_with("cannot read") {
            anyhow::anyhow!("suite `{}` has no manifest: {e}", suite.name)
        } else {
            anyhow::anyhow!("{e}")
        }
    })?;
    let problems = cross_check(&manifest, &suite);
    if !problems.is_empty() {
        bail!(
            "{} does not cover suite `{}`:\n  {}",
            manifest.path.display(),
            suite.name,
            problems.join("\n  ")
        );
    }
    Ok((suite, manifest))
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        let summary = serde_json::json!({
            "event": "summary", "exit_code": report.exit_code(), "rows": report.rows
        });
        emit(&format!("{summary}\n"))
    } else {
        emit(&report.table())
    }
}

pub fn run_fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let manifests = args.manifests.resolve();
    let (_, manifest) = load_pair(&args.suite, &manifests, &args.locations)?;
    let mut mirrors = Mirrors::default();
    for spec in &args.mirror {
        mirrors.set(spec)?;
    }
    let opts = FetchOptions {
        jobs: usize::from(args.jobs),
        offline: args.offline,
        from: args.from.clone(),
        mirrors,
        data_dir: args.locations.data_dir.clone(),
        cache: peftbench_runner::Paths::default_cache(),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(args.retry_delay_ms),
            ..RetryPolicy::default()
        },
        progress: Mode::pick(args.json),
    };
    let report = peftbench_fetch::fetch(&manifest.artifacts, &opts)?;
    if args.json {
        print_report(&report, true)?;
    } else {
        // Files were reported as they finished; what never started is listed here.
        let not_started = Report {
            rows: report
                .rows
                .iter()
                .filter(|r| matches!(r.state, FileState::Unpinned | FileState::Manual(_)))
                .cloned()
                .collect(),
        };
        print_report(&not_started, false)?;
        for artifact in &manifest.artifacts {
            if artifact.kind == ArtifactKind::Weights && artifact.pinned_hub().is_none() {
                println!(
                    "note: {}: the hub commit is unpinned, and weights are installed under \
                     snapshots/<commit>; pin it on a networked machine with `harness manifest \
                     pin {}`",
                    artifact.id, artifact.id
                );
            }
        }
    }
    let code = report.exit_code();
    if !args.json {
        match code {
            0 => println!(
                "suite `{}`: everything present and verified",
                manifest.suite
            ),
            1 => println!("something differs from the manifest (left untouched; see above)"),
            _ if opts.offline && opts.from.is_none() => {
                println!("incomplete: offline, so nothing was downloaded")
            }
            _ => println!("incomplete: see the states above"),
        }
    }
    Ok(exit(code))
}

pub fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let manifests = args.manifests.resolve();
    let (suite, manifest) = load_pair(&args.suite, &manifests, &args.locations)?;
    let opts = VerifyOptions {
        data_dir: args.locations.data_dir.clone(),
        cache: peftbench_runner::Paths::default_cache(),
        hub_caches: vec![peftbench_backbones::checkpoint::hf_cache().path().clone()],
        deep: args.deep,
        num_classes: suite
            .tasks
            .iter()
            .map(|t| (t.name.clone(), t.num_classes))
            .collect(),
    };
    let report = peftbench_fetch::verify(&manifest.artifacts, &opts);
    print_report(&report, args.json)?;
    if !args.json {
        for artifact in &manifest.artifacts {
            let receipt = receipt_path(artifact, opts.data_dir.as_deref(), &opts.cache);
            if artifact.kind == ArtifactKind::Data && !receipt.is_some_and(|r| r.is_file()) {
                println!(
                    "note: {} has no receipt (not fetched by `harness fetch`)",
                    artifact.id
                );
            }
        }
    }
    Ok(exit(report.exit_code()))
}

pub fn run_manifest(args: ManifestArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ManifestAction::Pin {
            id,
            from,
            mirror_hub,
            offline,
            manifests,
        } => {
            let dir = manifests.resolve();
            let report = match from {
                Some(from) => peftbench_fetch::pin::pin_from_folder(&dir, &id, &from)?,
                None if offline => {
                    manifest::load_artifact(&dir, &id)?;
                    println!(
                        "pinning `{id}` without --from needs the hub's API, and the network is \
                         off (--offline or HF_HUB_OFFLINE)"
                    );
                    return Ok(exit(3));
                }
                None => {
                    let endpoint = peftbench_fetch::install::hub_endpoint(mirror_hub.as_deref());
                    peftbench_fetch::pin::pin_from_hub(&dir, &id, &endpoint)?
                }
            };
            for line in &report.pinned {
                println!("pinned  {line}");
            }
            for line in &report.left {
                println!("left    {line}");
            }
            Ok(exit(if report.left.is_empty() { 0 } else { 3 }))
        }
        ManifestAction::Check {
            manifests,
            locations,
        } => {
            let dir = manifests.resolve();
            let mut problems = manifest::check_unpinned_list(&dir)?;
            for name in manifest::manifest_suites(&dir) {
                match load_pair(&name, &dir, &locations) {
                    Ok(_) => println!("ok  {name}"),
                    Err(e) => problems.push(format!("{name}: {e:#}")),
                }
            }
            for (name, _) in peftbench_suite::list_suites(&suites_dir(&locations)) {
                if let Ok(suite) = load_suite(&name, &suites_dir(&locations), &RegistryCatalog) {
                    if needs_manifest(&suite) && !dir.join(format!("{name}.toml")).is_file() {
                        problems.push(format!(
                            "suite `{name}` reads outside data or weights but has no manifest"
                        ));
                    }
                }
            }
            if problems.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            for p in &problems {
                eprintln!("problem: {p}");
            }
            Ok(exit(2))
        }
    }
}

/// The backbone, when it is a hub id (not an embedded demo, not a local folder).
fn hub_backbone(suite: &Suite) -> Option<&str> {
    let checkpoint = suite.backbone.checkpoint.as_str();
    let embedded = [
        demo::DEMO_CHECKPOINT,
        demo_audio::DEMO_AUDIO_CHECKPOINT,
        demo_text::DEMO_TEXT_CHECKPOINT,
        demo_t5::DEMO_T5_CHECKPOINT,
        demo_clip::DEMO_CLIP_CHECKPOINT,
        demo_music::DEMO_MUSICGEN_CHECKPOINT,
    ];
    // Old hub ids have no `org/` (`bert-base-multilingual-cased`): they are hub ids too.
    (!embedded.contains(&checkpoint) && !Path::new(checkpoint).is_dir()).then_some(checkpoint)
}

fn needs_manifest(suite: &Suite) -> bool {
    hub_backbone(suite).is_some() || !required_data_paths(suite).is_empty()
}

/// The paths under the data root the suite reads (folders or files).
fn required_data_paths(suite: &Suite) -> Vec<String> {
    let mut paths = Vec::new();
    match suite.data.format {
        DataFormat::Generated => {}
        DataFormat::Sib200 => {
            for t in &suite.tasks {
                paths.extend(t.language.clone());
                paths.extend(t.eval_language.clone());
            }
        }
        DataFormat::Conll | DataFormat::Wikiann => {
            paths.extend(suite.tasks.iter().filter_map(|t| t.language.clone()));
        }
        DataFormat::Trec => {
            if let Some(r) = &suite.retrieval {
                let mut add = |p: &Option<PathBuf>| {
                    paths.extend(p.as_ref().map(|p| p.to_string_lossy().into_owned()));
                };
                add(&Some(r.training.triples.clone()));
                add(&r.training.queries);
                add(&r.training.corpus);
                for t in &r.tasks {
                    add(&Some(t.queries.clone()));
                    add(&t.first_stage_queries);
                    add(&Some(t.corpus.clone()));
                    add(&Some(t.qrels.clone()));
                    add(&t.run);
                }
            }
        }
        // Style folders: the target styles and the source style.
        DataFormat::MusicFolder => {
            paths.extend(suite.tasks.iter().map(|t| t.name.clone()));
            paths.extend(suite.music.iter().map(|m| m.source_style.clone()));
        }
        _ => paths.extend(suite.tasks.iter().map(|t| t.name.clone())),
    }
    // Language adapters' corpora are outside data too.
    if let (Some(la), false) = (
        &suite.language_adapters,
        suite.data.format == DataFormat::Generated,
    ) {
        if let Some(corpus) = &la.corpus {
            for t in &suite.tasks {
                for lang in t.language.iter().chain(t.eval_language.iter()) {
                    paths.push(corpus.replace("{language}", lang));
                }
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// What the manifest fails to cover of the suite: its backbone (by canonical id or old alias, at
/// the suite's revision) and every data path it reads.
pub fn cross_check(manifest: &SuiteManifest, suite: &Suite) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(checkpoint) = hub_backbone(suite) {
        match manifest
            .artifacts
            .iter()
            .find(|a| a.kind == ArtifactKind::Weights && a.answers_to(checkpoint))
        {
            None => problems.push(format!(
                "no weights artifact for the backbone `{checkpoint}`"
            )),
            Some(weights) => {
                let commit = weights.pinned_hub().map(|(_, _, c)| c);
                if let Some(rev) = suite.backbone.revision.as_deref() {
                    if rev != "main" && Some(rev) != commit {
                        problems.push(format!(
                            "the suite asks for revision `{rev}` of `{checkpoint}` but `{}` pins {}",
                            weights.id,
                            commit.unwrap_or("no commit")
                        ));
                    }
                }
            }
        }
    }
    for required in required_data_paths(suite) {
        let covered = manifest.artifacts.iter().any(|a| {
            a.kind == ArtifactKind::Data
                && a.provides
                    .iter()
                    .any(|p| required == *p || required.starts_with(&format!("{p}/")))
        });
        if !covered {
            problems.push(format!("no data artifact provides `{required}`"));
        }
    }
    problems
}
