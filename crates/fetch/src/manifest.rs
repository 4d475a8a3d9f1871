//! Manifests: what a suite reads from outside, pinned to exact bytes.
//!
//! `manifests/<suite>.toml` names the artifacts a suite needs; `manifests/artifacts/<id>.toml`
//! describes one artifact (weights or a data set) that several suites may share: its ordered
//! sources, every file with size and digest, how archives unpack, licence, citation and expected
//! split sizes. TOML keeps every digest a string (a YAML reader turns some unquoted hex digests
//! into numbers). A value not yet known is written as the string `"unpinned"` and must be listed
//! in `manifests/unpinned.txt`, so missing pins stay visible and the list can only shrink.
//!
//! Every error names the manifest file, the line and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Visitor};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use toml::Spanned;

/// The value that marks a pin nobody has computed yet.
pub const UNPINNED: &str = "unpinned";

/// The allow-list of unpinned entries, relative to the manifests folder.
pub const UNPINNED_LIST: &str = "unpinned.txt";

/// A malformed manifest: file, line and field, then what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Weights go to the hub cache layout; data to the data folder.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Weights,
    Data,
}

/// Which part of the hub a repository lives in (it changes the URL and the cache folder name).
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    #[default]
    Model,
    Dataset,
}

impl RepoType {
    /// The cache folder prefix (`models--org--name`, `datasets--org--name`).
    pub fn cache_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
        }
    }
}

/// Where a file can come from, tried in the manifest's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A hub repository at a commit (never a branch: a branch moves). `None`: not pinned yet.
    Hub {
        repo: String,
        repo_type: RepoType,
        revision: Option<String>,
    },
    /// Plain URLs: `<base>/<file path>` (Zenodo, an institute's host; old and new hosts as
    /// separate sources, i.e. mirrors).
    Url { base: String },
    /// A raw file of a GitHub repository at a commit (content-stable, unlike generated archives).
    Github {
        repo: String,
        commit: Option<String>,
        prefix: String,
    },
    /// Nothing to download: a person follows the instructions (licence forms, paid packages).
    Manual { instructions: String },
}

/// How a file's content is pinned: SHA-256 of the bytes, or the git blob SHA-1 the hub reports
/// for small (non-LFS) files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Digest {
    Sha256(String),
    GitSha1(String),
}

impl Digest {
    pub fn hex(&self) -> &str {
        match self {
            Digest::Sha256(h) | Digest::GitSha1(h) => h,
        }
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::GitSha1(_) => "git-sha1",
        }
    }
}

/// Archive formats a data file may be unpacked from.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    #[serde(rename = "zip")]
    Zip,
    #[serde(rename = "tar.gz")]
    TarGz,
}

/// How an archive unpacks: format, and how many leading folders to drop from every entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unpack {
    pub format: ArchiveFormat,
    pub strip: usize,
}

/// One file of an artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path inside the source (hub repo path, URL tail, path under the GitHub prefix).
    pub path: String,
    /// Where it lands, relative to the artifact's install folder (default: `path`).
    pub to: String,
    pub size: Option<u64>,
    pub digest: Option<Digest>,
    pub unpack: Option<Unpack>,
    /// Line of the entry in its manifest (for messages and `manifest pin`).
    pub line: usize,
}

impl FileEntry {
    /// Size and digest are both known.
    pub fn is_pinned(&self) -> bool {
        self.size.is_some() && self.digest.is_some()
    }

    /// The digest is known: that alone makes a download checkable (a missing size is still
    /// listed as unpinned).
    pub fn is_fetchable(&self) -> bool {
        self.digest.is_some()
    }
}

/// How the examples of a split file are counted.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CountRule {
    /// Non-empty lines.
    Lines,
    /// Non-empty lines after a header line (CSV, TSV).
    Rows,
    /// Blank-line separated blocks (CoNLL sentences).
    Sentences,
    /// Keys of a JSON object (VPT's FGVC split files).
    JsonKeys,
    /// NOAH list lines `<image path> <label>`: also checks that every image exists and every
    /// label is below the task's `num_classes`.
    NoahList,
}

/// The expected number of examples of one split file, for `verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitCount {
    /// Relative to the artifact's install folder.
    pub file: String,
    pub examples: u64,
    pub count: CountRule,
    /// The suite task whose `num_classes` bounds the labels (`noah-list`).
    pub task: Option<String>,
}

/// One artifact: weights or a data set, with everything needed to fetch and verify it.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub id: String,
    pub kind: ArtifactKind,
    pub title: String,
    pub licence: String,
    pub citation: String,
    /// Weights: the canonical hub id the suite names, and the old ids it was known by.
    pub repo: Option<String>,
    pub aliases: Vec<String>,
    /// Data: the folder under the data root the files land in (`.` = the root itself).
    pub install: String,
    /// Data: paths under the data root this artifact provides (task folders, files).
    pub provides: Vec<String>,
    pub sources: Vec<Source>,
    pub files: Vec<FileEntry>,
    pub splits: Vec<SplitCount>,
    /// The manifest file and the SHA-256 of its text (recorded in receipts).
    pub path: PathBuf,
    pub manifest_sha256: String,
}

impl Artifact {
    /// The allow-list keys of its unpinned entries: `<id>:<file path>` for a file without size
    /// or digest, `<id>:source<N>` (1-based) for a source without its commit.
    pub fn unpinned_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            let unpinned = match source {
                Source::Hub { revision, .. } => revision.is_none(),
                Source::Github { commit, .. } => commit.is_none(),
                Source::Url { .. } | Source::Manual { .. } => false,
            };
            if unpinned {
                keys.push(format!("{}:source{}", self.id, i + 1));
            }
        }
        for file in &self.files {
            if !file.is_pinned() {
                keys.push(format!("{}:{}", self.id, file.path));
            }
        }
        keys
    }

    /// The hub source with a pinned commit, if any (weights install under that commit).
    pub fn pinned_hub(&self) -> Option<(&str, RepoType, &str)> {
        self.sources.iter().find_map(|s| match s {
            Source::Hub {
                repo,
                repo_type,
                revision: Some(rev),
            } => Some((repo.as_str(), *repo_type, rev.as_str())),
            _ => None,
        })
    }

    /// Instructions of a `manual` source, when that is the only way to get the files.
    pub fn manual_only(&self) -> Option<&str> {
        match self.sources.as_slice() {
            [Source::Manual { instructions }] => Some(instructions),
            _ => None,
        }
    }

    /// True when `id` is the artifact's repo or one of its old aliases.
    pub fn answers_to(&self, id: &str) -> bool {
        self.repo.as_deref() == Some(id) || self.aliases.iter().any(|a| a == id)
    }
}

/// A suite's manifest with its artifacts loaded.
#[derive(Clone, Debug)]
pub struct SuiteManifest {
    pub suite: String,
    pub path: PathBuf,
    pub artifacts: Vec<Artifact>,
}

// ---- raw TOML shapes (spans kept for line numbers) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuiteManifest {
    suite: String,
    artifacts: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    id: Spanned<String>,
    kind: ArtifactKind,
    title: String,
    licence: String,
    citation: String,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    install: Option<String>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    sources: Vec<RawSource>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    splits: Vec<RawSplit>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SourceKind {
    Hub,
    Url,
    Github,
    Manual,
}

/// A source as written: one flat table (a tagged enum would lose the spans).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Spanned<SourceKind>,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    repo_type: RepoType,
    #[serde(default)]
    revision: Option<Spanned<String>>,
    #[serde(default)]
    commit: Option<Spanned<String>>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    instructions: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: Spanned<String>,
    #[serde(default)]
    to: Option<String>,
    size: Spanned<SizeField>,
    #[serde(default)]
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    git_sha1: Option<Spanned<String>>,
    #[serde(default)]
    unpack: Option<ArchiveFormat>,
    #[serde(default)]
    strip: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    file: Spanned<String>,
    examples: u64,
    count: CountRule,
    #[serde(default)]
    task: Option<String>,
}

/// A byte count, or the string `"unpinned"`.
enum SizeField {
    Bytes(u64),
    Marker(String),
}

impl<'de> Deserialize<'de> for SizeField {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = SizeField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a byte count or \"{UNPINNED}\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeField, E> {
                u64::try_from(v)
                    .map(SizeField::Bytes)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeField, E> {
                Ok(SizeField::Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeField, E> {
                Ok(SizeField::Marker(v.to_string()))
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Reads and parses one TOML file into `T`; a syntax or type error names the line and the key
/// written on it (e.g. an unquoted digest read as a number).
fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, String), ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        path: path.to_path_buf(),
        line: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    match toml::from_str(&text) {
        Ok(value) => Ok((value, text)),
        Err(e) => {
            let line = e.span().map(|s| line_of(&text, s.start));
            let field = line
                .and_then(|l| text.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .map(|(key, _)| key.trim().to_string())
                .unwrap_or_default();
            Err(ManifestError {
                path: path.to_path_buf(),
                line,
                field,
                message: e.message().to_string(),
            })
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks the parsed artifact and turns it into an [`Artifact`].
fn validate_artifact(raw: RawArtifact, text: &str, path: &Path) -> Result<Artifact, ManifestError> {
    let err = |span: std::ops::Range<usize>, field: String, message: String| ManifestError {
        path: path.to_path_buf(),
        line: Some(line_of(text, span.start)),
        field,
        message,
    };
    let id = raw.id.get_ref().clone();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if id != stem {
        return Err(err(
            raw.id.span(),
            "id".into(),
            format!("`{id}` must equal the file name `{stem}`"),
        ));
    }
    let pin = |value: &Option<Spanned<String>>, field: String, len: usize| match value {
        None => Ok(None),
        Some(v) if v.get_ref() == UNPINNED => Ok(None),
        Some(v) if is_hex(v.get_ref(), len) => Ok(Some(v.get_ref().clone())),
        Some(v) => Err(err(
            v.span(),
            field,
            format!(
                "expected {len} lowercase hex digits or \"{UNPINNED}\", got \"{}\"",
                v.get_ref()
            ),
        )),
    };

    let mut sources = Vec::new();
    for (i, s) in raw.sources.iter().enumerate() {
        let field = |name: &str| format!("sources[{i}].{name}");
        let need = |value: &Option<String>, name: &str| {
            value.clone().ok_or_else(|| {
                err(
                    s.kind.span(),
                    field(name),
                    format!("a `{name}` is required for this kind of source"),
                )
            })
        };
        sources.push(match s.kind.get_ref() {
            SourceKind::Hub => {
                let revision = s.revision.as_ref().ok_or_else(|| {
                    err(
                        s.kind.span(),
                        field("revision"),
                        format!("a hub source needs a commit (or \"{UNPINNED}\"), never a branch"),
                    )
                })?;
                Source::Hub {
                    repo: need(&s.repo, "repo")?,
                    repo_type: s.repo_type,
                    revision: pin(&Some(revision.clone()), field("revision"), 40)?,
                }
            }
            SourceKind::Github => Source::Github {
                repo: need(&s.repo, "repo")?,
                commit: pin(&s.commit, field("commit"), 40)?,
                prefix: s.prefix.clone().unwrap_or_default(),
            },
            SourceKind::Url => Source::Url {
                base: need(&s.base, "base")?,
            },
            SourceKind::Manual => Source::Manual {
                instructions: need(&s.instructions, "instructions")?,
            },
        });
    }
    if sources.is_empty() {
        return Err(ManifestError {
            path: path.to_path_buf(),
            line: None,
            field: "sources".into(),
            message: "an artifact needs at least one source".into(),
        });
    }

    let mut files = Vec::new();
    for (i, f) in raw.files.iter().enumerate() {
        let field = |name: &str| format!("files[{i}].{name}");
        let file_path = f.path.get_ref();
        if !is_safe_relative(file_path) {
            return Err(err(
                f.path.span(),
                field("path"),
                format!("`{file_path}` must be a relative path without `..`"),
            ));
        }
        let to = f.to.clone().unwrap_or_else(|| file_path.clone());
        if !is_safe_relative(&to) {
            return Err(err(
                f.path.span(),
                field("to"),
                format!("`{to}` must be a relative path without `..`"),
            ));
        }
        let size = match f.size.get_ref() {
            SizeField::Bytes(n) => Some(*n),
            SizeField::Marker(m) if m == UNPINNED => None,
            SizeField::Marker(m) => {
                return Err(err(
                    f.size.span(),
                    field("size"),
                    format!("expected a byte count or \"{UNPINNED}\", got \"{m}\""),
                ))
            }
        };
        let digest = match (&f.sha256, &f.git_sha1) {
            (Some(_), Some(g)) => {
                return Err(err(
                    g.span(),
                    field("git_sha1"),
                    "give `sha256` or `git_sha1`, not both".into(),
                ))
            }
            (Some(_), None) => pin(&f.sha256, field("sha256"), 64)?.map(Digest::Sha256),
            (None, Some(_)) => pin(&f.git_sha1, field("git_sha1"), 40)?.map(Digest::GitSha1),
            (None, None) => {
                return Err(err(
                    f.path.span(),
                    field("sha256"),
                    format!("every file needs `sha256` or `git_sha1` (or \"{UNPINNED}\")"),
                ))
            }
        };
        if matches!(digest, Some(Digest::GitSha1(_))) && size.is_none() {
            return Err(err(
                f.size.span(),
                field("size"),
                "a git blob SHA-1 hashes the size first: pin `size` with it".into(),
            ));
        }
        if f.strip > 0 && f.unpack.is_none() {
            return Err(err(
                f.path.span(),
                field("strip"),
                "`strip` only applies to archives (`unpack`)".into(),
            ));
        }
        files.push(FileEntry {
            path: file_path.clone(),
            to,
            size,
            digest,
            unpack: f.unpack.map(|format| Unpack {
                format,
                strip: f.strip,
            }),
            line: line_of(text, f.path.span().start),
        });
    }
    let manual = sources.iter().all(|s| matches!(s, Source::Manual { .. }));
    if files.is_empty() && !manual {
        return Err(ManifestError {
            path: path.to_path_buf(),
            line: None,
            field: "files".into(),
            message: "an artifact with downloadable sources lists its files".into(),
        });
    }

    let mut splits = Vec::new();
    for (i, s) in raw.splits.iter().enumerate() {
        if !is_safe_relative(s.file.get_ref()) {
            return Err(err(
                s.file.span(),
                format!("splits[{i}].file"),
                "must be a relative path without `..`".into(),
            ));
        }
        splits.push(SplitCount {
            file: s.file.get_ref().clone(),
            examples: s.examples,
            count: s.count,
            task: s.task.clone(),
        });
    }

    if raw.kind == ArtifactKind::Weights {
        if raw.repo.is_none() {
            return Err(err(
                raw.id.span(),
                "repo".into(),
                "weights name their canonical hub id in `repo`".into(),
            ));
        }
        if !sources.iter().any(|s| matches!(s, Source::Hub { .. })) {
            return Err(err(
                raw.id.span(),
                "sources".into(),
                "weights need a hub source (they install into the hub cache layout)".into(),
            ));
        }
    }
    let install = raw.install.unwrap_or_else(|| ".".into());
    if install != "." && !is_safe_relative(&install) {
        return Err(err(
            raw.id.span(),
            "install".into(),
            "must be `.` or a relative path without `..`".into(),
        ));
    }
    Ok(Artifact {
        id,
        kind: raw.kind,
        title: raw.title,
        licence: raw.licence,
        citation: raw.citation,
        repo: raw.repo,
        aliases: raw.aliases,
        install,
        provides: raw.provides,
        sources,
        files,
        splits,
        path: path.to_path_buf(),
        manifest_sha256: sha256_hex(text.as_bytes()),
    })
}

/// A relative path with no empty, `.` or `..` component and no leading `/` or drive.
pub fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains(':')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Where manifests are read from when no folder is given: `./manifests` when there is one, else
/// the folder shipped with this build.
pub fn default_dir() -> PathBuf {
    let local = PathBuf::from("manifests");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests")
}

/// Loads `manifests/artifacts/<id>.toml`.
pub fn load_artifact(manifests: &Path, id: &str) -> Result<Artifact, ManifestError> {
    let path = manifests.join("artifacts").join(format!("{id}.toml"));
    let (raw, text) = parse_toml::<RawArtifact>(&path)?;
    validate_artifact(raw, &text, &path)
}

/// Loads `manifests/<suite>.toml` and every artifact it names.
pub fn load_suite_manifest(manifests: &Path, suite: &str) -> Result<SuiteManifest, ManifestError> {
    let path = manifests.join(format!("{suite}.toml"));
    let (raw, text) = parse_toml::<RawSuiteManifest>(&path)?;
    if raw.suite != suite {
        return Err(ManifestError {
            path: path.clone(),
            line: Some(1),
            field: "suite".into(),
            message: format!("names suite `{}` but the file is for `{suite}`", raw.suite),
        });
    }
    let mut artifacts = Vec::new();
    for (i, id) in raw.artifacts.iter().enumerate() {
        let artifact = load_artifact(manifests, id.get_ref()).map_err(|e| {
            if e.line.is_none() && e.message.starts_with("cannot read") {
                ManifestError {
                    path: path.clone(),
                    line: Some(line_of(&text, id.span().start)),
                    field: format!("artifacts[{i}]"),
                    message: format!("no artifact `{}`: {}", id.get_ref(), e),
                }
            } else {
                e
            }
        })?;
        artifacts.push(artifact);
    }
    Ok(SuiteManifest {
        suite: raw.suite,
        path,
        artifacts,
    })
}

/// The suites that have a manifest (`manifests/*.toml`), sorted.
pub fn manifest_suites(manifests: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(manifests)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names
}

/// Every artifact under `manifests/artifacts/`, by id.
pub fn load_all_artifacts(manifests: &Path) -> Result<BTreeMap<String, Artifact>, ManifestError> {
    let dir = manifests.join("artifacts");
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| ManifestError {
        path: dir.clone(),
        line: None,
        field: String::new(),
        message: format!("cannot list: {e}"),
    })?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "toml") {
            let id = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let artifact = load_artifact(manifests, id)?;
            out.insert(artifact.id.clone(), artifact);
        }
    }
    Ok(out)
}

/// The keys of `manifests/unpinned.txt` (`#` comments and blank lines skipped), with their lines.
pub fn read_unpinned_list(manifests: &Path) -> Result<Vec<(usize, String)>, ManifestError> {
    let path = manifests.join(UNPINNED_LIST);
    let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
        path: path.clone(),
        line: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let key = l.split('#').next().unwrap_or("").trim();
            (!key.is_empty()).then(|| (i + 1, key.to_string()))
        })
        .collect())
}

/// Problems between the artifacts' unpinned entries and the allow-list: an entry pinned but
/// still listed, or unpinned but not listed (so the list can only shrink, and honestly).
pub fn check_unpinned_list(manifests: &Path) -> Result<Vec<String>, ManifestError> {
    let artifacts = load_all_artifacts(manifests)?;
    let listed = read_unpinned_list(manifests)?;
    let actual: std::collections::BTreeSet<String> = artifacts
        .values()
        .flat_map(Artifact::unpinned_keys)
        .collect();
    let mut problems = Vec::new();
    let list_path = manifests.join(UNPINNED_LIST);
    for (line, key) in &listed {
        if !actual.contains(key) {
            problems.push(format!(
                "{}:{line}: `{key}` is listed as unpinned but its manifest pins it (or it does \
                 not exist): remove the line",
                list_path.display()
            ));
        }
    }
    for key in &actual {
        if !listed.iter().any(|(_, k)| k == key) {
            problems.push(format!(
                "{}: `{key}` is unpinned in its manifest but not listed: pin it or list it",
                list_path.display()
            ));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_artifact(dir: &Path, id: &str, body: &str) -> PathBuf {
        std::fs::create_dir_all(dir.join("artifacts")).unwrap();
        let p = dir.join("artifacts").join(format!("{id}.toml"));
        std::fs::write(&p, body).unwrap();
        p
    }

    const HEAD: &str =
        "id = \"a\"\nkind = \"data\"\ntitle = \"t\"\nlicence = \"l\"\ncitation = \"c\"\n\
        [[sources]]\nkind = \"url\"\nbase = \"http://127.0.0.1:1\"\n";

    #[test]
    fn an_unquoted_digest_is_rejected_with_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let body = format!("{HEAD}[[files]]\npath = \"x.txt\"\nsize = 3\nsha256 = 1234\n");
        write_artifact(dir.path(), "a", &body);
        let e = load_artifact(dir.path(), "a").unwrap_err();
        assert_eq!(e.line, Some(12), "{e}");
        assert_eq!(e.field, "sha256", "{e}");
        assert!(e.to_string().contains("a.toml:12"), "{e}");
    }

    #[test]
    fn a_short_digest_names_its_field_path() {
        let dir = tempfile::tempdir().unwrap();
        let body = format!("{HEAD}[[files]]\npath = \"x.txt\"\nsize = 3\nsha256 = \"abc\"\n");
        write_artifact(dir.path(), "a", &body);
        let e = load_artifact(dir.path(), "a").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(12), "files[0].sha256"));
    }

    #[test]
    fn unpinned_values_become_allow_list_keys() {
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "{HEAD}[[sources]]\nkind = \"hub\"\nrepo = \"o/n\"\nrevision = \"unpinned\"\n\
             [[files]]\npath = \"x.txt\"\nsize = \"unpinned\"\nsha256 = \"unpinned\"\n"
        );
        write_artifact(dir.path(), "a", &body);
        let a = load_artifact(dir.path(), "a").unwrap();
        assert_eq!(a.unpinned_keys(), vec!["a:source2", "a:x.txt"]);
    }

    #[test]
    fn a_branch_is_not_a_pin() {
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "{HEAD}[[sources]]\nkind = \"hub\"\nrepo = \"o/n\"\nrevision = \"main\"\n\
             [[files]]\npath = \"x.txt\"\nsize = 1\nsha256 = \"unpinned\"\n"
        );
        write_artifact(dir.path(), "a", &body);
        let e = load_artifact(dir.path(), "a").unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (Some(12), "sources[1].revision")
        );
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for p in ["../x", "/etc/x", "a/../b", "a//b", "C:x", ""] {
            assert!(!is_safe_relative(p), "{p}");
        }
        assert!(is_safe_relative("a/b.txt"));
    }
}
