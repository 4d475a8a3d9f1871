//! `manifest pin`: fills an artifact's unpinned values, rewriting only those values in the
//! manifest, and drops the filled entries from the allow-list. Sizes and digests come from files a
//! person downloaded (`--from DIR`, hashed here) or, on a networked machine, from the hub's API: the
//! commit `main` points at now, and the tree at that commit (size, LFS SHA-256 or git blob SHA-1 of
//! every file). Commits of GitHub sources need `git ls-remote`, which this command only reports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::hashing::both_digests;
use crate::manifest::{load_artifact, Digest, Source, UNPINNED, UNPINNED_LIST};

/// What `pin` did and what it could not do.
#[derive(Debug, Default)]
pub struct PinReport {
    /// `<file>: size N, sha256 H` for every value written.
    pub pinned: Vec<String>,
    /// Entries still unpinned, with why.
    pub left: Vec<String>,
}

/// Finds `relative` under `dir`: at that path, else by file name anywhere below.
fn find_file(dir: &Path, relative: &str) -> Option<PathBuf> {
    let direct = dir.join(relative);
    if direct.is_file() {
        return Some(direct);
    }
    let name = Path::new(relative).file_name()?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name() == Some(name) {
                return Some(p);
            }
        }
    }
    None
}

/// The lines of the `[[files]]` table that holds 1-based line `line`: from its header to the
/// next header.
fn table_range(lines: &[String], line: usize) -> (usize, usize) {
    let at = line - 1;
    let start = (0..=at)
        .rev()
        .find(|&i| lines[i].trim_start().starts_with('['))
        .unwrap_or(0);
    let end = (at + 1..lines.len())
        .find(|&i| lines[i].trim_start().starts_with('['))
        .unwrap_or(lines.len());
    (start, end)
}

/// Replaces `key = "unpinned"` within `range` by `key = value`; false when not there.
fn replace_value(lines: &mut [String], range: (usize, usize), key: &str, value: &str) -> bool {
    for line in &mut lines[range.0..range.1] {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() == key && v.trim().trim_matches('"') == UNPINNED {
            *line = format!("{} = {value}", k.trim_end());
            return true;
        }
    }
    false
}

/// Pins the unpinned files of artifact `id` from `from`.
pub fn pin_from_folder(manifests: &Path, id: &str, from: &Path) -> anyhow::Result<PinReport> {
    let artifact = load_artifact(manifests, id)?;
    let text = std::fs::read_to_string(&artifact.path)?;
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut report = PinReport::default();
    let mut filled_keys = Vec::new();
    for file in artifact.files.iter().filter(|f| !f.is_pinned()) {
        let Some(found) = find_file(from, &file.path) else {
            report
                .left
                .push(format!("{}: not found in {}", file.path, from.display()));
            continue;
        };
        let (size, sha256, git_sha1) =
            both_digests(&found).with_context(|| found.display().to_string())?;
        if file.size.is_some_and(|s| s != size) {
            bail!(
                "{}: {} bytes, but the manifest pins {} bytes: not the right file",
                found.display(),
                size,
                file.size.unwrap_or(0)
            );
        }
        if let Some(d) = &file.digest {
            let have = match d {
                Digest::Sha256(_) => &sha256,
                Digest::GitSha1(_) => &git_sha1,
            };
            if have != d.hex() {
                bail!(
                    "{}: digest differs from the one the manifest pins",
                    found.display()
                );
            }
        }
        let range = table_range(&lines, file.line);
        replace_value(&mut lines, range, "size", &size.to_string());
        let digest_line =
            if replace_value(&mut lines, range, "git_sha1", &format!("\"{git_sha1}\"")) {
                format!("git_sha1 {git_sha1}")
            } else {
                replace_value(&mut lines, range, "sha256", &format!("\"{sha256}\""));
                format!("sha256 {sha256}")
            };
        report.pinned.push(format!(
            "{}: size {size}, {digest_line} (from {})",
            file.path,
            found.display()
        ));
        filled_keys.push(format!("{}:{}", artifact.id, file.path));
    }
    for (i, source) in artifact.sources.iter().enumerate() {
        let what = match source {
            Source::Hub {
                revision: None,
                repo,
                ..
            } => {
                format!("the commit of hub repo {repo}: run without --from on a networked machine")
            }
            Source::Github {
                commit: None, repo, ..
            } => {
                format!(
                    "the commit of GitHub repo {repo}: `git ls-remote`, not done by this command"
                )
            }
            _ => continue,
        };
        report.left.push(format!("source{} ({what})", i + 1));
    }
    save(manifests, id, &artifact.path, &lines, &filled_keys)?;
    Ok(report)
}

/// Pins artifact `id` from the hub at `endpoint`: an unpinned commit becomes the one `main`
/// points at now; unpinned files get size and digest from the tree at the commit. One tree page
/// is read (the API pages after 1,000 entries; manifests list far fewer files).
pub fn pin_from_hub(manifests: &Path, id: &str, endpoint: &str) -> anyhow::Result<PinReport> {
    let artifact = load_artifact(manifests, id)?;
    let Some((index, repo, repo_type, revision)) =
        artifact
            .sources
            .iter()
            .enumerate()
            .find_map(|(i, s)| match s {
                Source::Hub {
                    repo,
                    repo_type,
                    revision,
                } => Some((i, repo.clone(), *repo_type, revision.clone())),
                _ => None,
            })
    else {
        bail!("`{id}` has no hub source; pin it with --from DIR");
    };
    let agent = crate::download::agent();
    let api = format!(
        "{}/api/{}/{repo}",
        endpoint.trim_end_matches('/'),
        repo_type.cache_prefix()
    );
    let get_json = |url: &str| -> anyhow::Result<serde_json::Value> {
        let body = agent
            .get(url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        serde_json::from_reader(body.into_reader()).with_context(|| format!("GET {url}: not JSON"))
    };
    let text = std::fs::read_to_string(&artifact.path)?;
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut report = PinReport::default();
    let mut filled_keys = Vec::new();
    let commit = match revision {
        Some(commit) => commit,
        None => {
            let info = get_json(&format!("{api}/revision/main"))?;
            let commit = info["sha"]
                .as_str()
                .filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
                .context("the revision answer has no 40-digit `sha`")?
                .to_string();
            let header = nth_table_line(&lines, "[[sources]]", index).context("source table")?;
            let range = table_range(&lines, header + 1);
            replace_value(&mut lines, range, "revision", &format!("\"{commit}\""));
            report
                .pinned
                .push(format!("source{}: commit {commit} (main now)", index + 1));
            filled_keys.push(format!("{id}:source{}", index + 1));
            commit
        }
    };
    let tree = get_json(&format!("{api}/tree/{commit}?recursive=true"))?;
    let entries = tree.as_array().context("the tree answer is not a list")?;
    for file in artifact.files.iter().filter(|f| !f.is_pinned()) {
        let Some(entry) = entries.iter().find(|e| e["path"] == file.path.as_str()) else {
            report
                .left
                .push(format!("{}: not in the tree at {commit}", file.path));
            continue;
        };
        let size = entry["size"].as_u64().context("tree entry without size")?;
        let range = table_range(&lines, file.line);
        replace_value(&mut lines, range, "size", &size.to_string());
        // LFS files are pinned by the SHA-256 of their content, small files by their git blob id.
        let (key, digest) = match entry["lfs"]["oid"].as_str() {
            Some(sha256) => ("sha256", sha256.to_string()),
            None => (
                "git_sha1",
                entry["oid"].as_str().unwrap_or_default().to_string(),
            ),
        };
        for line in &mut lines[range.0..range.1] {
            let unpinned_digest = line.split_once('=').is_some_and(|(k, v)| {
                matches!(k.trim(), "sha256" | "git_sha1") && v.trim().trim_matches('"') == UNPINNED
            });
            if unpinned_digest {
                *line = format!("{key} = \"{digest}\"");
            }
        }
        report
            .pinned
            .push(format!("{}: size {size}, {key} {digest}", file.path));
        filled_keys.push(format!("{id}:{}", file.path));
    }
    save(manifests, id, &artifact.path, &lines, &filled_keys)?;
    Ok(report)
}

/// The line index of the `n`-th (0-based) `header` table.
fn nth_table_line(lines: &[String], header: &str, n: usize) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(n)
        .map(|(i, _)| i)
}

/// Writes the rewritten manifest, checks it still loads, and drops the filled allow-list keys.
fn save(
    manifests: &Path,
    id: &str,
    path: &Path,
    lines: &[String],
    filled_keys: &[String],
) -> anyhow::Result<()> {
    if filled_keys.is_empty() {
        return Ok(());
    }
    let mut out = lines.join("\n");
    out.push('\n');
    write_atomically(path, &out)?;
    load_artifact(manifests, id)?;
    let list = manifests.join(UNPINNED_LIST);
    let listed = std::fs::read_to_string(&list).unwrap_or_default();
    let kept: Vec<&str> = listed
        .lines()
        .filter(|l| {
            !filled_keys
                .iter()
                .any(|k| l.split('#').next().unwrap_or("").trim() == k)
        })
        .collect();
    write_atomically(&list, &(kept.join("\n") + "\n"))
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
