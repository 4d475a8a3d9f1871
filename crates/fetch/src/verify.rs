//! `verify`: checks a folder against the manifests, including one nobody fetched with us (a copy
//! on a cluster, a colleague's disk): files and sizes, digests of weights and small files (all
//! files with `deep`), and the example count of every split, with NOAH labels below the task's
//! `num_classes` and every listed image present.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::hashing::hash_file;
use crate::install::{
    hub_repo_dir, install_dir, read_receipt, receipt_path, FileState, Report, Row,
};
use crate::manifest::{Artifact, ArtifactKind, CountRule, FileEntry, SplitCount};

/// Files at most this large are hashed by a plain verify; larger data files only with `deep`.
const SMALL_FILE: u64 = 64 << 20;

/// Where to look and how hard.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub data_dir: Option<PathBuf>,
    /// The project cache (receipts of weights; its `hub/` is searched first).
    pub cache: PathBuf,
    /// Other hub caches searched for weights (`$HF_HOME/hub`, ...).
    pub hub_caches: Vec<PathBuf>,
    /// Hash every file, large data files included.
    pub deep: bool,
    /// The suite's tasks and their class counts (bounds NOAH labels).
    pub num_classes: BTreeMap<String, usize>,
}

/// Verifies every artifact; one row per file and per split.
pub fn verify(artifacts: &[Artifact], opts: &VerifyOptions) -> Report {
    let mut report = Report::default();
    for artifact in artifacts {
        let mut push = |item: String, state: FileState| {
            report.rows.push(Row {
                artifact: artifact.id.clone(),
                item,
                state,
            })
        };
        match artifact.kind {
            ArtifactKind::Weights => {
                for file in &artifact.files {
                    push(file.path.clone(), verify_weights_file(artifact, file, opts));
                }
            }
            ArtifactKind::Data => {
                let Some(root) = &opts.data_dir else {
                    push(
                        "(data root)".into(),
                        FileState::Missing("pass --data-dir DIR or set PEFTBENCH_DATA".into()),
                    );
                    continue;
                };
                let dir = install_dir(root, artifact);
                let receipt =
                    receipt_path(artifact, Some(root), &opts.cache).and_then(|p| read_receipt(&p));
                for file in &artifact.files {
                    if file.unpack.is_some() {
                        // Archives are not kept: their content is checked through the splits;
                        // the receipt says which archive a fetch unpacked.
                        if let Some(r) = &receipt {
                            let listed = r.files.iter().any(|f| {
                                f.path == file.path
                                    && file.digest.as_ref().is_some_and(|d| d.hex() == f.digest)
                            });
                            if listed {
                                push(file.path.clone(), FileState::Present);
                            }
                        }
                        continue;
                    }
                    push(
                        file.path.clone(),
                        verify_file(&dir.join(&file.to), file, opts.deep),
                    );
                }
                if artifact.files.is_empty() && artifact.splits.is_empty() {
                    if let Some(instructions) = artifact.manual_only() {
                        push(
                            "(manual)".into(),
                            FileState::Manual(instructions.trim().into()),
                        );
                    }
                }
                for split in &artifact.splits {
                    push(
                        format!("split {}", split.file),
                        verify_split(&dir, split, opts),
                    );
                }
            }
        }
    }
    report
}

/// The snapshot folder of the artifact's pinned commit in the first cache that has it, under
/// the canonical id or an old alias.
fn find_snapshot(artifact: &Artifact, opts: &VerifyOptions) -> Result<PathBuf, Vec<PathBuf>> {
    let Some((repo, repo_type, commit)) = artifact.pinned_hub() else {
        return Err(Vec::new());
    };
    let mut looked = Vec::new();
    let hubs = std::iter::once(opts.cache.join("hub")).chain(opts.hub_caches.iter().cloned());
    for hub in hubs {
        let ids = std::iter::once(repo).chain(artifact.aliases.iter().map(String::as_str));
        for id in ids {
            let snapshot = hub_repo_dir(&hub, repo_type, id)
                .join("snapshots")
                .join(commit);
            if snapshot.is_dir() {
                return Ok(snapshot);
            }
            looked.push(snapshot);
        }
    }
    Err(looked)
}

fn verify_weights_file(artifact: &Artifact, file: &FileEntry, opts: &VerifyOptions) -> FileState {
    if artifact.pinned_hub().is_none() {
        return FileState::Unpinned;
    }
    match find_snapshot(artifact, opts) {
        Ok(snapshot) => verify_file(&snapshot.join(&file.to), file, true),
        Err(looked) => FileState::Missing(format!(
            "no snapshot at the pinned commit; looked in {}",
            looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Size, then the digest when the file is small, is weights (`always_hash`) or `deep` asks.
fn verify_file(path: &Path, file: &FileEntry, always_hash: bool) -> FileState {
    let Ok(meta) = std::fs::metadata(path) else {
        return FileState::Missing(format!("{} does not exist", path.display()));
    };
    let Some(digest) = &file.digest else {
        return FileState::Unpinned;
    };
    if let Some(size) = file.size {
        if meta.len() != size {
            return FileState::Mismatch(format!(
                "{} holds {} bytes, the manifest pins {size}",
                path.display(),
                meta.len()
            ));
        }
        if !always_hash && size > SMALL_FILE {
            return FileState::Present;
        }
    }
    match hash_file(path, digest) {
        Ok(h) if h == digest.hex() => FileState::Present,
        Ok(h) => FileState::Mismatch(format!(
            "{} has {} {h}, the manifest pins {}",
            path.display(),
            digest.algorithm(),
            digest.hex()
        )),
        Err(e) => FileState::Failed(format!("{}: {e}", path.display())),
    }
}

fn verify_split(dir: &Path, split: &SplitCount, opts: &VerifyOptions) -> FileState {
    let path = dir.join(&split.file);
    let counted = match count_examples(&path, split, opts) {
        Ok(c) => c,
        Err(state) => return state,
    };
    if counted == split.examples {
        FileState::Present
    } else {
        FileState::Mismatch(format!(
            "{} holds {counted} examples, the manifest expects {}",
            path.display(),
            split.examples
        ))
    }
}

fn count_examples(path: &Path, split: &SplitCount, opts: &VerifyOptions) -> Result<u64, FileState> {
    let missing = || FileState::Missing(format!("{} does not exist", path.display()));
    let read_err = |e: std::io::Error| FileState::Failed(format!("{}: {e}", path.display()));
    if split.count == CountRule::JsonKeys {
        let text = std::fs::read_to_string(path).map_err(|_| missing())?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| FileState::Mismatch(format!("{}: not JSON: {e}", path.display())))?;
        return value
            .as_object()
            .map(|o| o.len() as u64)
            .ok_or_else(|| FileState::Mismatch(format!("{}: not a JSON object", path.display())));
    }
    let file = std::fs::File::open(path).map_err(|_| missing())?;
    let mut count = 0u64;
    let mut in_block = false;
    let mut bad_labels = Vec::new();
    let mut missing_images = Vec::new();
    let classes = split
        .task
        .as_ref()
        .and_then(|t| opts.num_classes.get(t))
        .copied();
    let list_dir = path.parent().unwrap_or(Path::new("."));
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_err)?;
        let blank = line.trim().is_empty();
        match split.count {
            CountRule::Lines => count += u64::from(!blank),
            CountRule::Rows => count += u64::from(!blank && i > 0),
            CountRule::Sentences => {
                if !blank && !in_block {
                    count += 1;
                }
                in_block = !blank;
            }
            CountRule::NoahList => {
                if blank {
                    continue;
                }
                count += 1;
                let mut fields = line.split_whitespace();
                let (image, label) = (fields.next().unwrap_or(""), fields.next_back());
                let label_ok = label
                    .and_then(|l| l.parse::<usize>().ok())
                    .is_some_and(|l| classes.is_none_or(|c| l < c));
                if !label_ok && bad_labels.len() < 3 {
                    bad_labels.push(format!("line {}: `{line}`", i + 1));
                }
                if missing_images.len() < 3 && !list_dir.join(image).is_file() {
                    missing_images.push(image.to_string());
                }
            }
            CountRule::JsonKeys => unreachable!("handled above"),
        }
    }
    if !bad_labels.is_empty() {
        return Err(FileState::Mismatch(format!(
            "{}: labels missing or not below num_classes {}: {}",
            path.display(),
            classes.map_or("?".into(), |c| c.to_string()),
            bad_labels.join("; ")
        )));
    }
    if !missing_images.is_empty() {
        return Err(FileState::Missing(format!(
            "{}: listed images missing, e.g. {}",
            path.display(),
            missing_images.join(", ")
        )));
    }
    Ok(count)
}
