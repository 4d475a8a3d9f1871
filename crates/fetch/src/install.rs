//! `fetch`: every file of a suite's artifacts, downloaded concurrently (or taken from a local
//! folder) and verified against its pin, then put where the harness reads it.
//!
//! Weights go into the Hugging Face cache layout under the project cache (`blobs/<digest>`,
//! `snapshots/<commit>/<path>` linking to the blob, `refs/main`), which the checkpoint loader
//! searches first. Data files go under the data root at the artifact's `install` folder; archives
//! are unpacked into a staging folder and renamed into place. A receipt per artifact records what
//! was installed, from where, under which manifest hash.
//!
//! Downloads run on a tokio runtime: `jobs` permits of a semaphore bound the files in flight,
//! the blocking HTTP transfers (and hashing, copying, unpacking) run on tokio's blocking pool,
//! retries wait on tokio timers, and progress events go over a channel to one display.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::archive;
use crate::download::{self, Outcome, RetryPolicy};
use crate::hashing::hash_file;
use crate::manifest::{Artifact, ArtifactKind, Digest, FileEntry, RepoType, Source};
use crate::progress::{FileProgress, Mode, Progress};

/// The hub's public endpoint when neither `--mirror hub=URL` nor `HF_ENDPOINT` names another.
const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";
/// Raw files of GitHub repositories at a commit.
const DEFAULT_GITHUB_RAW: &str = "https://raw.githubusercontent.com";

/// Base URLs that replace (hub, github) or precede (url) the manifests' own, for internal mirrors.
#[derive(Clone, Debug, Default)]
pub struct Mirrors {
    pub hub: Option<String>,
    pub url: Option<String>,
    pub github: Option<String>,
}

impl Mirrors {
    /// Parses `KIND=URL` (`hub`, `url`, `github`) into the mirrors.
    pub fn set(&mut self, spec: &str) -> anyhow::Result<()> {
        let Some((kind, url)) = spec.split_once('=') else {
            bail!("--mirror takes KIND=URL (KIND: hub, url, github), got `{spec}`");
        };
        let url = Some(url.trim_end_matches('/').to_string());
        match kind {
            "hub" => self.hub = url,
            "url" => self.url = url,
            "github" => self.github = url,
            other => bail!("--mirror kind `{other}` is not one of hub, url, github"),
        }
        Ok(())
    }
}

/// Everything a fetch needs besides the artifacts.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Files downloaded at once.
    pub jobs: usize,
    /// Open no socket: only report what is present.
    pub offline: bool,
    /// Take files from this folder (matched by size and digest) instead of the network.
    pub from: Option<PathBuf>,
    pub mirrors: Mirrors,
    /// The data root (`--data-dir` / `PEFTBENCH_DATA`).
    pub data_dir: Option<PathBuf>,
    /// The project cache; weights go to `<cache>/hub`.
    pub cache: PathBuf,
    pub retry: RetryPolicy,
    pub progress: Mode,
}

/// Where one file stands after a fetch or a verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "kebab-case")]
pub enum FileState {
    /// Downloaded (or copied) now and verified; the detail says from where.
    Installed(String),
    /// Already in place and matching its pin.
    Present,
    /// Something present, or every source, differs from the pin.
    Mismatch(String),
    /// No source could serve it (or `--from` did not hold it).
    Failed(String),
    /// The manifest does not pin it yet.
    Unpinned,
    /// A person must get it (licence form, paid package): the instructions.
    Manual(String),
    /// Offline and not present.
    Offline,
    /// Not there (verify).
    Missing(String),
}

impl FileState {
    /// The exit code this state asks for: 0 fine, 1 differs from the manifest, 3 incomplete.
    pub fn exit_code(&self) -> u8 {
        match self {
            FileState::Installed(_) | FileState::Present => 0,
            FileState::Mismatch(_) => 1,
            _ => 3,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FileState::Installed(_) => "installed",
            FileState::Present => "present",
            FileState::Mismatch(_) => "mismatch",
            FileState::Failed(_) => "failed",
            FileState::Unpinned => "unpinned",
            FileState::Manual(_) => "manual",
            FileState::Offline => "offline",
            FileState::Missing(_) => "missing",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            FileState::Installed(d)
            | FileState::Mismatch(d)
            | FileState::Failed(d)
            | FileState::Manual(d)
            | FileState::Missing(d) => d,
            FileState::Present | FileState::Unpinned | FileState::Offline => "",
        }
    }
}

/// One line of a fetch or verify report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub artifact: String,
    pub item: String,
    #[serde(flatten)]
    pub state: FileState,
}

/// The outcome of a fetch or verify: one row per file (or check).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    /// 1 if anything differs from the manifest, else 3 if anything is incomplete, else 0.
    pub fn exit_code(&self) -> u8 {
        let codes: Vec<u8> = self.rows.iter().map(|r| r.state.exit_code()).collect();
        if codes.contains(&1) {
            1
        } else {
            codes.into_iter().max().unwrap_or(0)
        }
    }

    /// A plain-text table, one artifact item per line.
    pub fn table(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.artifact.len() + r.item.len() + 1)
            .max()
            .unwrap_or(0);
        self.rows
            .iter()
            .map(|r| {
                let name = format!("{}/{}", r.artifact, r.item);
                let detail = r.state.detail();
                let line = format!("{:>9}  {name:width$}  {detail}", r.state.name());
                format!("{}\n", line.trim_end())
            })
            .collect()
    }
}

/// The cache folder of a hub repository (`models--org--name`).
pub fn hub_repo_dir(hub: &Path, repo_type: RepoType, repo: &str) -> PathBuf {
    hub.join(format!(
        "{}--{}",
        repo_type.cache_prefix(),
        repo.replace('/', "--")
    ))
}

/// The hub's base URL: the mirror given, else `HF_ENDPOINT`, else the public hub.
pub fn hub_endpoint(mirror: Option<&str>) -> String {
    mirror
        .map(String::from)
        .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| DEFAULT_HUB_ENDPOINT.into())
        .trim_end_matches('/')
        .to_string()
}

/// The URLs a file can be fetched from, in the order they are tried.
pub fn urls_for(artifact: &Artifact, file: &FileEntry, mirrors: &Mirrors) -> Vec<String> {
    let hub_endpoint = hub_endpoint(mirrors.hub.as_deref());
    let github = mirrors.github.as_deref().unwrap_or(DEFAULT_GITHUB_RAW);
    let mut urls = Vec::new();
    if let Some(mirror) = &mirrors.url {
        if artifact
            .sources
            .iter()
            .any(|s| matches!(s, Source::Url { .. }))
        {
            urls.push(format!("{mirror}/{}", file.path));
        }
    }
    for source in &artifact.sources {
        match source {
            Source::Hub {
                repo,
                repo_type,
                revision: Some(commit),
            } => {
                let kind = if *repo_type == RepoType::Dataset {
                    "datasets/"
                } else {
                    ""
                };
                urls.push(format!(
                    "{hub_endpoint}/{kind}{repo}/resolve/{commit}/{}",
                    file.path
                ));
            }
            Source::Url { base } => {
                urls.push(format!("{}/{}", base.trim_end_matches('/'), file.path));
            }
            Source::Github {
                repo,
                commit: Some(commit),
                prefix,
            } => {
                let prefix = prefix.trim_matches('/');
                let sep = if prefix.is_empty() { "" } else { "/" };
                urls.push(format!(
                    "{github}/{repo}/{commit}/{prefix}{sep}{}",
                    file.path
                ));
            }
            _ => {}
        }
    }
    urls
}

/// Where a file ends up and where its part is written.
struct Placement {
    /// The verified file (a hub blob, a data file, or an archive waiting to be unpacked).
    dest: PathBuf,
    part: PathBuf,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn placement(
    artifact: &Artifact,
    file: &FileEntry,
    opts: &FetchOptions,
) -> anyhow::Result<Placement> {
    let digest = file.digest.as_ref().expect("only pinned files are placed");
    let dest = match artifact.kind {
        ArtifactKind::Weights => {
            let (repo, repo_type, _) = artifact
                .pinned_hub()
                .context("weights without a pinned hub source")?;
            hub_repo_dir(&opts.cache.join("hub"), repo_type, repo)
                .join("blobs")
                .join(digest.hex())
        }
        ArtifactKind::Data => {
            let root = data_root(opts)?;
            if file.unpack.is_some() {
                root.join(".peftbench/downloads")
                    .join(&artifact.id)
                    .join(&file.path)
            } else {
                install_dir(&root, artifact).join(&file.to)
            }
        }
    };
    Ok(Placement {
        part: with_suffix(&dest, ".part"),
        dest,
    })
}

fn data_root(opts: &FetchOptions) -> anyhow::Result<PathBuf> {
    opts.data_dir.clone().context(
        "this suite reads data: pass --data-dir DIR or set PEFTBENCH_DATA (the folder the suite \
         will read with the same option)",
    )
}

/// The folder an artifact's data lands in.
pub fn install_dir(root: &Path, artifact: &Artifact) -> PathBuf {
    if artifact.install == "." {
        root.to_path_buf()
    } else {
        root.join(&artifact.install)
    }
}

/// The receipt of an artifact: data receipts live with the data, weights receipts in the cache.
pub fn receipt_path(artifact: &Artifact, data_dir: Option<&Path>, cache: &Path) -> Option<PathBuf> {
    let dir = match artifact.kind {
        ArtifactKind::Weights => cache.join("receipts"),
        ArtifactKind::Data => data_dir?.join(".peftbench/receipts"),
    };
    Some(dir.join(format!("{}.json", artifact.id)))
}

/// What a receipt records of one file.
#[derive(Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReceiptFile {
    pub path: String,
    pub size: u64,
    pub algorithm: String,
    pub digest: String,
    pub source: String,
}

/// What was installed, from where, under which manifest.
#[derive(Serialize, serde::Deserialize, Clone, Debug)]
pub struct Receipt {
    pub artifact: String,
    pub manifest: String,
    pub manifest_sha256: String,
    pub installed_at_unix: u64,
    pub files: Vec<ReceiptFile>,
}

pub fn read_receipt(path: &Path) -> Option<Receipt> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn receipt_lists(receipt: Option<&Receipt>, file: &FileEntry) -> bool {
    let digest = file.digest.as_ref().expect("pinned");
    receipt.is_some_and(|r| {
        r.files.iter().any(|f| {
            f.path == file.path && f.digest == digest.hex() && file.size.is_none_or(|s| s == f.size)
        })
    })
}

/// A lock file naming the fetch that holds a folder; removed when dropped.
pub struct FolderLock {
    path: PathBuf,
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn process_alive(pid: u32) -> bool {
    // Where /proc does not exist the holder cannot be checked: assume it is alive.
    let proc_root = Path::new("/proc");
    !proc_root.is_dir() || proc_root.join(pid.to_string()).exists()
}

/// Takes `<dir>/.peftbench-fetch.lock`; a live holder is an error naming its pid, a dead one's
/// lock is taken over.
pub fn lock_folder(dir: &Path) -> anyhow::Result<FolderLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".peftbench-fetch.lock");
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                use std::io::Write;
                write!(f, "{}", std::process::id())?;
                return Ok(FolderLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                match holder.trim().parse::<u32>() {
                    Ok(pid) if process_alive(pid) => bail!(
                        "another fetch (pid {pid}) is writing to {}; wait for it to finish \
                         (or remove {} if that process is gone)",
                        dir.display(),
                        path.display()
                    ),
                    // A crashed fetch left its lock (or it is being written right now: the
                    // second try then finds the holder's pid).
                    _ => {
                        if holder.trim().is_empty() {
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            if !std::fs::read_to_string(&path)
                                .unwrap_or_default()
                                .trim()
                                .is_empty()
                            {
                                continue;
                            }
                        }
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!("could not take the lock {}", path.display())
}

/// Files under `dir` by size, to find `--from` candidates without hashing everything.
fn index_by_size(dir: &Path) -> BTreeMap<u64, Vec<PathBuf>> {
    let mut by_size: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => {
                    if let Ok(m) = std::fs::metadata(&p) {
                        by_size.entry(m.len()).or_default().push(p);
                    }
                }
                Err(_) => {}
            }
        }
    }
    by_size
}

/// One file to bring into place: indices into [`Shared::artifacts`] and its files.
#[derive(Clone, Copy)]
struct Job {
    artifact: usize,
    file: usize,
}

/// What every file's task reads, owned so the tasks can outlive any borrow.
struct Shared {
    artifacts: Vec<Artifact>,
    opts: FetchOptions,
    agent: Option<ureq::Agent>,
    from: Option<BTreeMap<u64, Vec<PathBuf>>>,
    progress: Progress,
}

impl Shared {
    fn job(&self, job: Job) -> (&Artifact, &FileEntry) {
        let artifact = &self.artifacts[job.artifact];
        (artifact, &artifact.files[job.file])
    }
}

/// A file's result: artifact id, file path, state, receipt entry when it is in place.
type Done = (String, String, FileState, Option<ReceiptFile>);

/// Fetches every file of `artifacts`; the report says each file's state.
pub fn fetch(artifacts: &[Artifact], opts: &FetchOptions) -> anyhow::Result<Report> {
    if let Some(from) = opts.from.as_deref().filter(|d| !d.is_dir()) {
        bail!("--from {}: not a folder", from.display());
    }
    let needs_data = artifacts
        .iter()
        .any(|a| a.kind == ArtifactKind::Data && !a.files.is_empty());
    let root = if needs_data {
        Some(data_root(opts)?)
    } else {
        None
    };
    // Locks before anything is written: the cache (weights), then the data root.
    let _cache_lock = lock_folder(&opts.cache)?;
    let _data_lock = root.as_deref().map(lock_folder).transpose()?;
    let from_index = opts.from.as_deref().map(index_by_size);

    let mut report = Report::default();
    let mut jobs = Vec::new();
    let mut total_bytes = 0;
    for (a, artifact) in artifacts.iter().enumerate() {
        if let Some(instructions) = artifact.manual_only() {
            report.rows.push(Row {
                artifact: artifact.id.clone(),
                item: "(manual)".into(),
                state: manual_state(artifact, instructions, opts),
            });
            continue;
        }
        // Weights live under `snapshots/<commit>`: without a pinned commit they have nowhere to
        // go, however well their files are pinned.
        let placeable = artifact.kind != ArtifactKind::Weights || artifact.pinned_hub().is_some();
        for (f, file) in artifact.files.iter().enumerate() {
            if file.is_fetchable() && placeable {
                total_bytes += file.size.unwrap_or(0);
                jobs.push(Job {
                    artifact: a,
                    file: f,
                });
            } else {
                report.rows.push(Row {
                    artifact: artifact.id.clone(),
                    item: file.path.clone(),
                    state: FileState::Unpinned,
                });
            }
        }
    }
    let (progress, display) = Progress::new(opts.progress, total_bytes);
    let shared = Arc::new(Shared {
        artifacts: artifacts.to_vec(),
        opts: opts.clone(),
        agent: (!opts.offline && opts.from.is_none()).then(download::agent),
        from: from_index,
        progress,
    });
    let permits = opts.jobs.max(1);
    // The workers only poll; the transfers, at most `permits` at once, and the display run on
    // the blocking pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(permits + 1)
        .thread_name("peftbench-fetch")
        .enable_time()
        .build()
        .context("starting the download runtime")?;
    let mut results: Vec<Done> = runtime.block_on(async move {
        let display = tokio::task::spawn_blocking(move || display.run());
        let semaphore = Arc::new(tokio::sync::Semaphore::new(permits));
        let mut tasks = Vec::with_capacity(jobs.len());
        // Permits are taken here, in manifest order, so files start in that order.
        for job in jobs {
            let permit = Arc::clone(&semaphore)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let shared = Arc::clone(&shared);
            tasks.push(tokio::spawn(async move {
                let done = fetch_one(&shared, job).await;
                drop(permit);
                done
            }));
        }
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            match task.await {
                Ok(done) => results.push(done),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        // The last sender goes with `shared`: the display then drains its events and clears.
        drop(shared);
        if let Err(e) = display.await {
            std::panic::resume_unwind(e.into_panic());
        }
        results
    });

    // Rows in manifest order; receipts for artifacts whose every file is in place.
    for artifact in artifacts {
        let mut files = Vec::new();
        let mut complete = artifact.manual_only().is_none();
        for file in &artifact.files {
            if let Some(i) = results
                .iter()
                .position(|r| r.0 == artifact.id && r.1 == file.path)
            {
                let (_, path, state, receipt) = results.swap_remove(i);
                complete &= state.exit_code() == 0;
                files.extend(receipt);
                report.rows.push(Row {
                    artifact: artifact.id.clone(),
                    item: path,
                    state,
                });
            } else {
                complete = false;
            }
        }
        if complete && files.iter().any(|f| f.source != "receipt") {
            write_receipt(artifact, files, root.as_deref(), &opts.cache)?;
        }
    }
    // Keep the report in manifest order (unpinned and manual rows were pushed first).
    let order: Vec<&str> = artifacts.iter().map(|a| a.id.as_str()).collect();
    report.rows.sort_by_key(|r| {
        order
            .iter()
            .position(|id| *id == r.artifact)
            .unwrap_or(usize::MAX)
    });
    Ok(report)
}

/// A manual artifact is done once a person placed it and its expected splits check out;
/// otherwise the state carries the instructions.
fn manual_state(artifact: &Artifact, instructions: &str, opts: &FetchOptions) -> FileState {
    let placed = !artifact.splits.is_empty() && opts.data_dir.is_some() && {
        let check = crate::verify::VerifyOptions {
            data_dir: opts.data_dir.clone(),
            cache: opts.cache.clone(),
            ..Default::default()
        };
        crate::verify::verify(std::slice::from_ref(artifact), &check).exit_code() == 0
    };
    if placed {
        FileState::Present
    } else {
        FileState::Manual(instructions.trim().to_string())
    }
}

fn write_receipt(
    artifact: &Artifact,
    files: Vec<ReceiptFile>,
    data_dir: Option<&Path>,
    cache: &Path,
) -> anyhow::Result<()> {
    let Some(path) = receipt_path(artifact, data_dir, cache) else {
        return Ok(());
    };
    // Files found present keep the source their earlier receipt recorded.
    let earlier = read_receipt(&path);
    let files = files
        .into_iter()
        .map(|mut f| {
            if f.source == "receipt" {
                if let Some(old) = earlier
                    .as_ref()
                    .and_then(|r| r.files.iter().find(|o| o.path == f.path))
                {
                    f.source = old.source.clone();
                }
            }
            f
        })
        .collect();
    let receipt = Receipt {
        artifact: artifact.id.clone(),
        manifest: artifact.path.display().to_string(),
        manifest_sha256: artifact.manifest_sha256.clone(),
        installed_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        files,
    };
    std::fs::create_dir_all(path.parent().expect("receipts have a folder"))?;
    let tmp = with_suffix(&path, ".tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&receipt)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// What the first, blocking step of a file left to do.
enum Step {
    /// Settled without the network (present, a mismatch, offline, `--from`).
    Done(FileState, Option<ReceiptFile>),
    /// To download from these URLs.
    Download(Vec<String>),
    /// Copied from `--from` (or found unservable): the outcome to finish with.
    Copied(Outcome),
}

/// Brings one file into place; returns its state and, when it is in place, its receipt entry.
/// The blocking steps (checking what is there, copying, downloading, unpacking) run on the
/// blocking pool; the download's retries wait on timers.
async fn fetch_one(shared: &Arc<Shared>, job: Job) -> Done {
    let (artifact, file) = shared.job(job);
    let (id, path) = (artifact.id.clone(), file.path.clone());
    let bar = shared
        .progress
        .file(&artifact.id, &file.path, file.size.unwrap_or(0));
    let place = match placement(artifact, file, &shared.opts) {
        Ok(p) => p,
        Err(e) => {
            let state = FileState::Failed(format!("{e:#}"));
            bar.finish(state.name(), state.detail());
            return (id, path, state, None);
        }
    };
    let place = Arc::new(place);
    let step = {
        let (shared, place, bar) = (Arc::clone(shared), Arc::clone(&place), bar.clone());
        download::blocking(move || before_download(&shared, job, &place, &bar)).await
    };
    let outcome = match step {
        Step::Done(state, receipt) => return (id, path, state, receipt),
        Step::Copied(outcome) => outcome,
        Step::Download(urls) => {
            let agent = shared.agent.clone().expect("downloads have an agent");
            let digest = file.digest.clone().expect("pinned");
            download::download(
                agent,
                urls,
                file.size,
                digest,
                place.part.clone(),
                place.dest.clone(),
                shared.opts.retry,
                bar.clone(),
            )
            .await
        }
    };
    let (state, receipt) = {
        let shared = Arc::clone(shared);
        download::blocking(move || after_download(&shared, job, &place, outcome, &bar)).await
    };
    (id, path, state, receipt)
}

/// The receipt entry of a file in place. The size a receipt records: the pinned one, else what
/// was measured before unpacking.
fn receipt_entry(file: &FileEntry, source: &str, measured: Option<u64>) -> ReceiptFile {
    let digest = file.digest.as_ref().expect("pinned");
    ReceiptFile {
        path: file.path.clone(),
        size: file.size.or(measured).unwrap_or(0),
        algorithm: digest.algorithm().into(),
        digest: digest.hex().into(),
        source: source.into(),
    }
}

fn finish(
    bar: &FileProgress,
    state: FileState,
    receipt: Option<ReceiptFile>,
) -> (FileState, Option<ReceiptFile>) {
    bar.finish(state.name(), state.detail());
    (state, receipt)
}

/// Blocking: is the file in place already; else copy it from `--from`, or say where to
/// download it from.
fn before_download(shared: &Shared, job: Job, place: &Placement, bar: &FileProgress) -> Step {
    let (artifact, file) = shared.job(job);
    let opts = &shared.opts;
    let digest = file.digest.as_ref().expect("pinned");
    let done = |state, receipt| {
        let (state, receipt) = finish(bar, state, receipt);
        Step::Done(state, receipt)
    };
    let receipt = receipt_path(artifact, opts.data_dir.as_deref(), &opts.cache)
        .and_then(|p| read_receipt(&p));

    // Already in place?
    match already_present(file, place, receipt.as_ref()) {
        Ok(true) => {
            if let Err(e) = after_verified(artifact, file, &place.dest, opts) {
                return done(FileState::Failed(format!("{e:#}")), None);
            }
            let measured = std::fs::metadata(&place.dest).ok().map(|m| m.len());
            return done(
                FileState::Present,
                Some(receipt_entry(file, "receipt", measured)),
            );
        }
        Ok(false) => {}
        Err(state) => return done(state, None),
    }

    if let Some(index) = &shared.from {
        Step::Copied(copy_from_folder(index, file, digest, file.size, place))
    } else if shared.agent.is_some() {
        let urls = urls_for(artifact, file, &opts.mirrors);
        if urls.is_empty() {
            Step::Copied(Outcome::Failed {
                detail: "no pinned source can serve it".into(),
            })
        } else {
            Step::Download(urls)
        }
    } else {
        done(FileState::Offline, None)
    }
}

/// Blocking: installs a verified file (snapshot link, unpacking) and settles its state.
fn after_download(
    shared: &Shared,
    job: Job,
    place: &Placement,
    outcome: Outcome,
    bar: &FileProgress,
) -> (FileState, Option<ReceiptFile>) {
    let (artifact, file) = shared.job(job);
    match outcome {
        Outcome::Installed { url } => {
            let measured = std::fs::metadata(&place.dest).ok().map(|m| m.len());
            match after_verified(artifact, file, &place.dest, &shared.opts) {
                Ok(()) => finish(
                    bar,
                    FileState::Installed(url.clone()),
                    Some(receipt_entry(file, &url, measured)),
                ),
                Err(e) => finish(bar, FileState::Failed(format!("{e:#}")), None),
            }
        }
        Outcome::Mismatch { detail } => finish(bar, FileState::Mismatch(detail), None),
        Outcome::Failed { detail } => finish(bar, FileState::Failed(detail), None),
    }
}

/// `Ok(true)`: the file (or, for an archive, its unpacked content per the receipt) is in place
/// and matches. `Err`: something there differs from the pin; it is left as it is.
fn already_present(
    file: &FileEntry,
    place: &Placement,
    receipt: Option<&Receipt>,
) -> Result<bool, FileState> {
    if file.unpack.is_some() {
        // The archive is deleted once unpacked; the receipt is what says it was.
        return Ok(receipt_lists(receipt, file));
    }
    let Ok(meta) = std::fs::metadata(&place.dest) else {
        return Ok(false);
    };
    let digest = file.digest.as_ref().expect("pinned");
    if file.size.is_some_and(|s| s != meta.len()) {
        return Err(FileState::Mismatch(format!(
            "{} holds {} bytes, the manifest pins {}; left untouched",
            place.dest.display(),
            meta.len(),
            file.size.unwrap_or(0)
        )));
    }
    if receipt_lists(receipt, file) {
        return Ok(true);
    }
    match hash_file(&place.dest, digest) {
        Ok(h) if h == digest.hex() => Ok(true),
        Ok(h) => Err(FileState::Mismatch(format!(
            "{} has {} {h}, the manifest pins {}; left untouched",
            place.dest.display(),
            digest.algorithm(),
            digest.hex()
        ))),
        Err(e) => Err(FileState::Failed(format!("{}: {e}", place.dest.display()))),
    }
}

/// Installs a verified file: links a weights blob into its snapshot, unpacks an archive.
fn after_verified(
    artifact: &Artifact,
    file: &FileEntry,
    dest: &Path,
    opts: &FetchOptions,
) -> anyhow::Result<()> {
    match artifact.kind {
        ArtifactKind::Weights => link_snapshot(artifact, file, dest, &opts.cache.join("hub")),
        ArtifactKind::Data => match file.unpack {
            Some(unpack) if dest.exists() => {
                let root = data_root(opts)?;
                let target = install_dir(&root, artifact);
                let staging = root.join(".peftbench").join(format!(
                    "staging-{}-{}",
                    artifact.id,
                    std::process::id()
                ));
                if staging.exists() {
                    std::fs::remove_dir_all(&staging)?;
                }
                let result = archive::unpack(dest, unpack.format, unpack.strip, &staging)
                    .and_then(|_| move_into_place(&staging, &target));
                let _ = std::fs::remove_dir_all(&staging);
                result?;
                // The unpacked files are what the suite reads; the receipt remembers the archive.
                std::fs::remove_file(dest)?;
                Ok(())
            }
            _ => Ok(()),
        },
    }
}

/// Renames every top-level entry of `staging` into `target`; an entry that exists is an error
/// (a copy someone placed by hand is never overwritten).
fn move_into_place(staging: &Path, target: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(target)?;
    let entries: Vec<_> = std::fs::read_dir(staging)?.flatten().collect();
    for entry in &entries {
        let to = target.join(entry.file_name());
        if to.exists() {
            bail!(
                "{} exists already; remove it (or check it with `harness verify`) and fetch again",
                to.display()
            );
        }
    }
    for entry in entries {
        std::fs::rename(entry.path(), target.join(entry.file_name()))?;
    }
    Ok(())
}

/// `snapshots/<commit>/<path>` → the blob, and `refs/main` → the commit, as the hub cache does;
/// also under each old alias of the repo (the loader looks the suite's id up as written, and
/// hf-hub does not follow the hub's renames).
fn link_snapshot(
    artifact: &Artifact,
    file: &FileEntry,
    blob: &Path,
    hub: &Path,
) -> anyhow::Result<()> {
    let (repo, repo_type, commit) = artifact
        .pinned_hub()
        .context("weights without a pinned hub source")?;
    let canonical = hub_repo_dir(hub, repo_type, repo);
    let ids = std::iter::once(repo).chain(artifact.aliases.iter().map(String::as_str));
    for id in ids {
        let repo_dir = hub_repo_dir(hub, repo_type, id);
        let link = repo_dir.join("snapshots").join(commit).join(&file.to);
        if !link.exists() {
            std::fs::create_dir_all(link.parent().expect("snapshot files have a folder"))?;
            let _ = std::fs::remove_file(&link);
            // Relative, like the hub cache's own links, so the cache folder can move.
            let mut target = PathBuf::new();
            for _ in 0..file.to.matches('/').count() + 2 {
                target.push("..");
            }
            if repo_dir != canonical {
                target.push("..");
                target.push(canonical.file_name().expect("repo folder name"));
            }
            target.push("blobs");
            target.push(blob.file_name().expect("blob name"));
            link_or_copy(&target, blob, &link)?;
        }
        let refs = repo_dir.join("refs");
        std::fs::create_dir_all(&refs)?;
        std::fs::write(refs.join("main"), commit)?;
    }
    Ok(())
}

#[cfg(unix)]
fn link_or_copy(relative: &Path, _blob: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(relative, link)
}

#[cfg(not(unix))]
fn link_or_copy(_relative: &Path, blob: &Path, link: &Path) -> std::io::Result<()> {
    std::fs::hard_link(blob, link).or_else(|_| std::fs::copy(blob, link).map(|_| ()))
}

/// `--from`: the first file of the pinned size whose digest matches, copied through a part.
fn copy_from_folder(
    index: &BTreeMap<u64, Vec<PathBuf>>,
    file: &FileEntry,
    digest: &Digest,
    size: Option<u64>,
    place: &Placement,
) -> Outcome {
    let wanted_name = Path::new(&file.path).file_name();
    let mut candidates = match size {
        Some(size) => index.get(&size).cloned().unwrap_or_default(),
        // Without a pinned size, only files of the same name are hashed.
        None => index
            .values()
            .flatten()
            .filter(|p| p.file_name() == wanted_name)
            .cloned()
            .collect(),
    };
    // Same name first: most folders hold the files under their own names.
    candidates.sort_by_key(|p| p.file_name() != wanted_name);
    for candidate in candidates {
        if hash_file(&candidate, digest).is_ok_and(|h| h == digest.hex()) {
            let copied = place
                .part
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::copy(&candidate, &place.part))
                .and_then(|_| std::fs::rename(&place.part, &place.dest));
            return match copied {
                Ok(()) => Outcome::Installed {
                    url: candidate.display().to_string(),
                },
                Err(e) => Outcome::Failed {
                    detail: format!("copying {}: {e}", candidate.display()),
                },
            };
        }
    }
    Outcome::Failed {
        detail: format!(
            "no file{} with {} {} in the --from folder",
            size.map(|s| format!(" of {s} bytes")).unwrap_or_default(),
            digest.algorithm(),
            digest.hex()
        ),
    }
}
