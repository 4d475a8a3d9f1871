//! Run records: the JSON file every peftbench run leaves behind, and the directory that holds them.
//!
//! Layout of a results directory ([`RecordStore`]):
//!
//! ```text
//! <dir>/records/<run_id>.json     one pretty-printed RunRecord per run (run ids may contain '/')
//! <dir>/artifacts/<run_id>/       adapters and other files of that run
//! ```
//!
//! Records are written atomically (temporary file in the same folder, fsync, rename), so a run
//! killed mid-write never leaves a half-written `.json`; leftover temporary files are ignored when
//! loading. A run whose record exists with status [`RunStatus::Completed`] can be skipped on resume.
//!
//! All records of a directory also export to one Parquet file ([`write_parquet`], columns in
//! [`PARQUET_COLUMNS`]) and read back from it ([`read_parquet`]); [`load_records`] accepts either,
//! and combines several results directories (shards, machines) into one set.
//!
//! Non-finite numbers (a diverged loss) are stored as the strings `"NaN"`, `"inf"`, `"-inf"`, since
//! JSON has no such numbers and `serde_json` would otherwise write `null` and fail to read it back.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod export;
mod sources;

pub use export::{parquet_schema, read_parquet, write_parquet, PARQUET_COLUMNS};
pub use sources::{load_records, merge_records, merge_sourced, RecordSource};

/// Version of the [`RunRecord`] schema written by this crate. Readers reject newer versions.
pub const SCHEMA_VERSION: u32 = 1;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Trained and evaluated.
    Completed,
    /// Stopped because the loss became NaN or infinite.
    Diverged,
    /// Stopped by an error (see [`RunRecord::error`]).
    Failed,
}

impl RunStatus {
    /// `"completed"`, `"diverged"` or `"failed"`, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One epoch of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    /// Mean training loss over the epoch (may be NaN/inf for a diverged run).
    #[serde(with = "float")]
    pub train_loss: f64,
    /// Learning rate at the end of the epoch.
    #[serde(with = "float")]
    pub lr: f64,
    /// Validation accuracy (fraction) when evaluated this epoch.
    #[serde(with = "opt_float", default)]
    pub val_accuracy: Option<f64>,
    #[serde(with = "float")]
    pub seconds: f64,
}

/// Where and with what a run ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// `git rev-parse HEAD` in the working directory, when inside a git checkout.
    pub git_revision: Option<String>,
    /// Whether tracked files had uncommitted changes (`git status --porcelain --untracked-files=no`
    /// is non-empty). Untracked files (such as a results folder) do not count.
    pub git_dirty: Option<bool>,
    pub peftbench_version: String,
    /// Versions of the crates that matter to the numbers (candle, ...), as the caller supplies them.
    pub crate_versions: BTreeMap<String, String>,
    /// Device description, e.g. `"cpu"` or `"cuda:0 (NVIDIA H100)"`.
    pub device: String,
    /// `std::env::consts::OS`.
    pub os: String,
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// CPU model (`model name` in `/proc/cpuinfo`), when known.
    pub cpu: Option<String>,
    /// `std::thread::available_parallelism()`.
    pub threads: usize,
    pub hostname: Option<String>,
    /// The instruction sets the CPU kernels ran with (`gemm avx512f+fma; elementwise avx2+fma`),
    /// as the runner reports them; absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
}

impl Environment {
    /// Captures the environment of the current process. Git information comes from the current
    /// directory and is `None` where git or a checkout is missing; nothing here fails.
    pub fn capture(device: &str, crate_versions: BTreeMap<String, String>) -> Self {
        let git_revision = git(&["rev-parse", "HEAD"]).map(|s| s.trim().to_string());
        let git_dirty = git_revision.as_ref().and_then(|_| {
            git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.trim().is_empty())
        });
        Environment {
            git_revision,
            git_dirty,
            peftbench_version: env!("CARGO_PKG_VERSION").to_string(),
            crate_versions,
            device: device.to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cpu: cpu_model(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            hostname: hostname(),
            kernels: None,
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

fn cpu_model() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

/// The result of one run (one method on one task with one seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`SCHEMA_VERSION`] at the time of writing.
    pub schema_version: u32,
    /// Unique id within a results directory; may contain `/` (stored in subfolders).
    pub run_id: String,
    pub suite: String,
    pub task: String,
    /// Task group (e.g. VTAB "natural"), if the suite has groups.
    pub group: Option<String>,
    /// Method kind, e.g. `"lora"`.
    pub method: String,
    /// Row label in reports, e.g. `"lora-r8"`.
    pub label: String,
    pub seed: u64,
    /// The fully resolved run configuration.
    pub config: serde_json::Value,
    /// [`config_hash`] of `config`.
    pub config_hash: String,
    pub status: RunStatus,
    pub error: Option<String>,
    /// Named metrics, e.g. `"test_accuracy"`, `"val_accuracy"`; accuracies are fractions in [0, 1].
    #[serde(with = "float_map")]
    pub metrics: BTreeMap<String, f64>,
    /// The key of `metrics` that reports rank by, e.g. `"test_accuracy"`.
    pub primary_metric: String,
    /// Model-selection rule used, e.g. `"final epoch"` or `"best val_accuracy"`.
    pub selection: String,
    pub selected_epoch: Option<usize>,
    pub trainable_params: u64,
    pub total_params: u64,
    /// Size on disk of the saved adapter.
    pub adapter_bytes: Option<u64>,
    /// Peak resident memory (or device memory where measured), bytes.
    pub peak_memory_bytes: Option<u64>,
    #[serde(with = "float")]
    pub train_seconds: f64,
    #[serde(with = "float")]
    pub eval_seconds: f64,
    #[serde(with = "float")]
    pub train_examples_per_second: f64,
    pub history: Vec<EpochLog>,
    pub environment: Environment,
    /// RFC 3339, UTC ([`now_rfc3339`]).
    pub started_at: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Where the adapter was saved, if it was.
    pub adapter_dir: Option<String>,
    /// Which evaluation examples the selected model classified correctly, in evaluation order:
    /// what a bootstrap interval over test examples needs when there is a single seed. Absent in
    /// records written before it existed (the field is optional, so schema version 1 still holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_correct: Option<EvalCorrect>,
    /// The outside data and weights the run read, as its suite's manifest pins them and as
    /// `harness fetch` installed them; empty for suites without a manifest (generated data, the
    /// demo backbones) and in records written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataArtifact>,
}

/// One manifest artifact a run read (`manifests/artifacts/<id>.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataArtifact {
    /// The artifact id.
    pub id: String,
    /// SHA-256 of its manifest file when the run started.
    pub manifest_sha256: String,
    /// The pinned hub commit of weights, when the manifest has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Whether `harness fetch` left a receipt for it: without one the files were used as found,
    /// unverified against the manifest.
    pub receipt: bool,
    /// The receipt's files: path -> `algorithm:digest` (archives are listed as downloaded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// Per-example correctness, packed 8 examples per byte (example `i` is bit `7 - i % 8` of byte
/// `i / 8`) and written as lowercase hex: about 2.5 kB for a 20,000-image test set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalCorrect {
    /// Number of evaluation examples.
    pub examples: usize,
    /// The packed bits as hex, `2 * ceil(examples / 8)` characters.
    pub bits_hex: String,
}

impl EvalCorrect {
    /// Packs `correct[i]` (example `i` was classified correctly).
    pub fn from_bools(correct: &[bool]) -> Self {
        let mut bytes = vec![0u8; correct.len().div_ceil(8)];
        for (i, _) in correct.iter().enumerate().filter(|(_, c)| **c) {
            bytes[i / 8] |= 0x80 >> (i % 8);
        }
        EvalCorrect {
            examples: correct.len(),
            bits_hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Unpacks the flags; an error when the hex is malformed or has the wrong length.
    pub fn to_bools(&self) -> Result<Vec<bool>> {
        let hex = self.bits_hex.as_bytes();
        if hex.len() != 2 * self.examples.div_ceil(8) {
            bail!(
                "eval_correct has {} hex digits for {} examples (expected {})",
                hex.len(),
                self.examples,
                2 * self.examples.div_ceil(8)
            );
        }
        let digit = |c: u8| -> Result<u8> {
            (c as char)
                .to_digit(16)
                .map(|d| d as u8)
                .with_context(|| format!("eval_correct: {:?} is not a hex digit", c as char))
        };
        let mut out = Vec::with_capacity(self.examples);
        for (i, pair) in hex.chunks(2).enumerate() {
            let byte = digit(pair[0])? << 4 | digit(pair[1])?;
            for bit in 0..8 {
                if i * 8 + bit < self.examples {
                    out.push(byte & (0x80 >> bit) != 0);
                }
            }
        }
        Ok(out)
    }
}

impl RunRecord {
    /// The value of the primary metric, if recorded.
    pub fn primary_value(&self) -> Option<f64> {
        self.metrics.get(&self.primary_metric).copied()
    }

    /// Whether the run completed (a resume skips it).
    pub fn is_completed(&self) -> bool {
        self.status == RunStatus::Completed
    }

    /// Pretty JSON, keys in struct order, with a trailing newline.
    pub fn to_json(&self) -> Result<String> {
        let mut s = serde_json::to_string_pretty(self).context("serialising run record")?;
        s.push('\n');
        Ok(s)
    }

    /// Parses a record, rejecting schema versions newer than [`SCHEMA_VERSION`].
    pub fn from_json(json: &str) -> Result<Self> {
        // Check the version first, so a newer schema gives a clear message rather than a field error.
        #[derive(Deserialize)]
        struct Version {
            schema_version: Option<u32>,
        }
        if let Ok(Version {
            schema_version: Some(v),
        }) = serde_json::from_str::<Version>(json)
        {
            if v > SCHEMA_VERSION {
                bail!("record schema version {v} is newer than supported version {SCHEMA_VERSION}");
            }
        }
        Ok(serde_json::from_str(json)?)
    }
}

/// SHA-256 (hex) of the canonical JSON of `config`: object keys sorted recursively, no whitespace.
/// Independent of serde_json's `preserve_order` feature.
pub fn config_hash(config: &serde_json::Value) -> String {
    let digest = Sha256::digest(canonical_json(config).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compact JSON with object keys sorted recursively.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Checks that a run id is a safe relative path: non-empty, `/`-separated, no empty, `.` or `..`
/// components, no leading `/`, no backslashes or NUL bytes.
pub fn validate_run_id(run_id: &str) -> Result<()> {
    if run_id.is_empty() {
        bail!("run id is empty");
    }
    if run_id.contains('\\') || run_id.contains('\0') {
        bail!("run id {run_id:?} contains a backslash or NUL byte");
    }
    for part in run_id.split('/') {
        match part {
            "" => bail!(
                "run id {run_id:?} has an empty path component (leading, trailing or double '/')"
            ),
            "." | ".." => bail!("run id {run_id:?} contains a {part:?} component"),
            _ => {}
        }
        if part.starts_with('.') {
            bail!("run id {run_id:?} has a component starting with '.' (reserved for temporary files)");
        }
    }
    if Path::new(run_id)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!("run id {run_id:?} is not a plain relative path");
    }
    Ok(())
}

/// A results directory holding run records and artifacts.
#[derive(Debug, Clone)]
pub struct RecordStore {
    root: PathBuf,
}

/// A record that could not be loaded, from [`RecordStore::load_all_lenient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for LoadError {}

impl RecordStore {
    /// Opens (creating if needed) a results directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let store = RecordStore {
            root: dir.to_path_buf(),
        };
        for d in [store.records_dir(), store.artifacts_root()] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(store)
    }

    /// The results directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<dir>/records`.
    pub fn records_dir(&self) -> PathBuf {
        self.root.join("records")
    }

    /// `<dir>/artifacts`.
    pub fn artifacts_root(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// `<dir>/reports`, the conventional place for leaderboards (not created here).
    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// `<dir>/records/<run_id>.json`.
    ///
    /// # Panics
    /// When `run_id` fails [`validate_run_id`] (e.g. contains `..`); [`write`](Self::write) and
    /// [`get`](Self::get) return that as an error instead. Validate untrusted ids first.
    pub fn record_path(&self, run_id: &str) -> PathBuf {
        if let Err(e) = validate_run_id(run_id) {
            panic!("{e}");
        }
        self.records_dir().join(format!("{run_id}.json"))
    }

    /// `<dir>/artifacts/<run_id>/` (not created here).
    ///
    /// # Panics
    /// When `run_id` fails [`validate_run_id`].
    pub fn artifact_dir(&self, run_id: &str) -> PathBuf {
        if let Err(e) = validate_run_id(run_id) {
            panic!("{e}");
        }
        self.artifacts_root().join(run_id)
    }

    /// Writes a record atomically (replacing any earlier one of the same run id) and returns its
    /// path. Either the old or the new complete file is visible at every moment.
    pub fn write(&self, record: &RunRecord) -> Result<PathBuf> {
        validate_run_id(&record.run_id)?;
        let path = self.record_path(&record.run_id);
        write_atomic(&path, record.to_json()?.as_bytes())?;
        Ok(path)
    }

    /// The record of `run_id`, `None` if there is none. A record that cannot be read or parsed is an
    /// error naming its file.
    pub fn get(&self, run_id: &str) -> Result<Option<RunRecord>> {
        validate_run_id(run_id)?;
        let path = self.record_path(run_id);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(parse_record(&path, &text, run_id)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading run record {}", path.display())),
        }
    }

    /// Whether `run_id` has a completed record (what a resume skips).
    pub fn is_completed(&self, run_id: &str) -> Result<bool> {
        Ok(self.get(run_id)?.is_some_and(|r| r.is_completed()))
    }

    /// Every record, sorted by run id. Temporary files (names starting with `.`) and files not
    /// ending in `.json` are skipped. The first unreadable record is an error naming its file.
    pub fn load_all(&self) -> Result<Vec<RunRecord>> {
        let (records, errors) = self.load_all_lenient()?;
        if let Some(first) = errors.into_iter().next() {
            return Err(anyhow::Error::new(first));
        }
        Ok(records)
    }

    /// Like [`load_all`](Self::load_all), but collects unreadable records instead of failing.
    /// Only a failure to list the directory is an error.
    pub fn load_all_lenient(&self) -> Result<(Vec<RunRecord>, Vec<LoadError>)> {
        let records_dir = self.records_dir();
        let mut files = Vec::new();
        collect_json(&records_dir, &mut files)?;
        files.sort();
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for path in files {
            let rel = path
                .strip_prefix(&records_dir)
                .expect("listed under records dir");
            let id: String = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let result = fs::read_to_string(&path)
                .map_err(anyhow::Error::from)
                .and_then(|text| parse_record(&path, &text, &id));
            match result {
                Ok(r) => records.push(r),
                Err(e) => errors.push(LoadError {
                    path,
                    message: format!("{e:#}"),
                }),
            }
        }
        records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok((records, errors))
    }
}

fn parse_record(path: &Path, text: &str, expected_id: &str) -> Result<RunRecord> {
    let record = RunRecord::from_json(text)
        .with_context(|| format!("invalid run record {}", path.display()))?;
    if record.run_id != expected_id {
        bail!(
            "run record {} has run_id {:?}, expected {:?} from its path",
            path.display(),
            record.run_id,
            expected_id
        );
    }
    Ok(record)
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue; // temporary files and hidden folders
        }
        let path = entry.path();
        let ty = entry
            .file_type()
            .with_context(|| format!("inspecting {}", path.display()))?;
        if ty.is_dir() {
            collect_json(&path, out)?;
        } else if name.ends_with(".json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Writes `contents` to `path` atomically: a temporary file `.<name>.XXXXXX.tmp` in the same
/// folder is written, fsynced and renamed over `path`; the folder is then fsynced (best effort).
/// Parent folders are created. A crash leaves at most a stray temporary file, never a partial
/// `path`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", path.display()))?;
    if let Ok(dir) = fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Peak resident set size of this process (`VmHWM` in `/proc/self/status`), bytes. `None` off
/// Linux. Host memory only: device (GPU) memory is not included.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kb(&status, "VmHWM").map(|kb| kb * 1024)
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let mut parts = v.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(n),
            _ => None,
        }
    })
}

/// Resets the peak RSS so the next [`peak_rss_bytes`] reports this run's own peak (writes `5` to
/// `/proc/self/clear_refs`, Linux ≥ 4.0). Errors (other systems, restricted `/proc`) are ignored;
/// then the peak stays process-wide.
pub fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// The current time in RFC 3339, UTC, millisecond precision, e.g. `2026-11-27T13:39:52.123Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// Formats a time in RFC 3339, UTC, millisecond precision (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
/// Times before 1970 are clamped to the epoch.
pub fn format_rfc3339(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Serde for an `f64` that may be non-finite: finite values as numbers, others as `"NaN"`,
/// `"inf"`, `"-inf"`; reads numbers, those strings (case-insensitive, also `"infinity"`) and `null`
/// (as NaN).
mod float {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(FloatVisitor)
    }

    pub(crate) struct FloatVisitor;

    impl de::Visitor<'_> for FloatVisitor {
        type Value = f64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number, \"NaN\", \"inf\" or \"-inf\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v.to_ascii_lowercase().as_str() {
                "nan" => Ok(f64::NAN),
                "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
}

/// [`float`] for `Option<f64>` (`null` is `None`).
mod opt_float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::float::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::float")] f64);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

/// [`float`] for the values of a `BTreeMap<String, f64>`.
mod float_map {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wrap(#[serde(with = "super::float")] f64);

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(k, &Wrap(*v))?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        let m = BTreeMap::<String, Wrap>::deserialize(d)?;
        Ok(m.into_iter().map(|(k, w)| (k, w.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // date -u -d @1795786792 → Fri Nov 27 13:39:52 UTC 2026
        let t = UNIX_EPOCH + Duration::from_millis(1_795_786_792_123);
        assert_eq!(format_rfc3339(t), "2026-11-27T13:39:52.123Z");
        // Leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_rfc3339(t), "2000-02-29T00:00:00.000Z");
        let now = now_rfc3339();
        assert_eq!(now.len(), 24, "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn eval_correct_round_trips() {
        for n in [0usize, 1, 7, 8, 9, 17, 400] {
            let flags: Vec<bool> = (0..n).map(|i| (i * 7 + 3) % 5 < 2).collect();
            let packed = EvalCorrect::from_bools(&flags);
            assert_eq!(packed.bits_hex.len(), 2 * n.div_ceil(8));
            assert_eq!(packed.to_bools().unwrap(), flags);
        }
        assert_eq!(
            EvalCorrect::from_bools(&[true, false, true, true, false, false, false, false, true]),
            EvalCorrect {
                examples: 9,
                bits_hex: "b080".into()
            }
        );
        let bad = EvalCorrect {
            examples: 9,
            bits_hex: "b0".into(),
        };
        assert!(bad.to_bools().is_err());
        let bad = EvalCorrect {
            examples: 8,
            bits_hex: "zz".into(),
        };
        assert!(bad.to_bools().is_err());
    }

    #[test]
    fn status_parsing() {
        let status = "Name:\tx\nVmPeak:\t  200 kB\nVmHWM:\t   1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(1234));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn peak_rss_reads_and_resets() {
        if !Path::new("/proc/self/status").exists() {
            return;
        }
        let base = peak_rss_bytes().expect("VmHWM on Linux");
        assert!(base > 0);
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let with_alloc = peak_rss_bytes().unwrap();
        assert!(with_alloc >= 60 << 20, "{with_alloc}");
        drop(big);
        reset_peak_rss();
        let can_reset = fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/clear_refs")
            .is_ok();
        if can_reset {
            let after = peak_rss_bytes().unwrap();
            assert!(
                after < with_alloc,
                "peak {after} not reset below {with_alloc}"
            );
        }
    }
}
