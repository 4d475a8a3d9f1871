//! One file from an ordered list of URLs into its destination, which never holds unverified
//! bytes: the body streams into `<dest>.part` while it is hashed, and only a part of the pinned
//! size and digest is renamed into place.
//!
//! An interrupted part resumes with an HTTP `Range` request after its bytes are hashed again
//! (`If-Range` carries the ETag seen first). A `200` where a `206` was asked, or a changed ETag,
//! restarts the file. Connection errors, timeouts, cut bodies, 5xx and 429 (honouring
//! `Retry-After`) are retried with exponential backoff; 401/403/404/410 move on to the next URL;
//! a digest mismatch moves the part aside (`.bad`) and tries the next URL, after one fresh try on
//! the same URL when the bad part had been resumed (the fault may be in the bytes on disk).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hashing::{hash_reader, Hasher};
use crate::manifest::Digest;
use crate::progress::FileProgress;

/// What a finished file must be.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// `None`: the digest alone pins the file (its size is not known yet).
    pub size: Option<u64>,
    pub digest: &'a Digest,
}

/// How often and how patiently a URL is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries per URL after the first attempt.
    pub retries: u32,
    /// The first backoff; it doubles with each retry.
    pub base_delay: Duration,
    /// The longest wait, also the cap on `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// How one file ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and renamed into place, from this URL.
    Installed { url: String },
    /// Some URL served bytes that differ from the pin (and none served the right ones).
    Mismatch { detail: String },
    /// No URL could serve the file.
    Failed { detail: String },
}

/// Why one attempt did not finish the file.
enum Attempt {
    /// Transient: try the same URL again after a delay (`Retry-After` when the server said so).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The server's copy changed or ignored the range: start the file again at once.
    Restart(String),
    /// This URL cannot serve the file.
    NextSource(String),
    /// All bytes arrived but they are not the pinned ones.
    Mismatch { detail: String, resumed: bool },
}

/// The ETag sidecar of a part: what `If-Range` and the changed-ETag check compare with.
fn etag_path(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".etag");
    PathBuf::from(name)
}

/// A blocking HTTP agent with the timeouts downloads need.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(30))
        .redirects(5)
        .user_agent(concat!("peftbench-fetch/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Downloads into `part`, verifies, then renames to `dest`. `dest` is never touched unless the
/// bytes match `expected`.
///
/// Each request (resume check, transfer, hashing) runs on tokio's blocking pool, as the HTTP
/// client is blocking; the backoff between retries is a tokio timer, so a waiting file holds no
/// thread. Must be called within a tokio runtime with time enabled.
pub async fn download(
    agent: ureq::Agent,
    urls: Vec<String>,
    size: Option<u64>,
    digest: Digest,
    part: PathBuf,
    dest: PathBuf,
    policy: RetryPolicy,
    progress: FileProgress,
) -> Outcome {
    let mut failures = Vec::new();
    let mut mismatches = Vec::new();
    if let Some(parent) = part.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            return Outcome::Failed {
                detail: format!("{}: {e}", parent.display()),
            };
        }
    }
    for url in urls {
        let (mut retries, mut restarts, mut fresh_try_used) = (0, 0, false);
        loop {
            let attempted = {
                let (agent, url, digest) = (agent.clone(), url.clone(), digest.clone());
                let (part, dest, progress) = (part.clone(), dest.clone(), progress.clone());
                blocking(move || {
                    let expected = Expected {
                        size,
                        digest: &digest,
                    };
                    attempt(&agent, &url, expected, &part, &progress).map(|()| place(&part, &dest))
                })
                .await
            };
            match attempted {
                Ok(Ok(())) => return Outcome::Installed { url },
                Ok(Err(e)) => {
                    return Outcome::Failed {
                        detail: format!("renaming into {}: {e}", dest.display()),
                    }
                }
                Err(Attempt::Retry { reason, after }) => {
                    retries += 1;
                    if retries > policy.retries {
                        failures.push(format!(
                            "{url}: {reason} (gave up after {} retries)",
                            policy.retries
                        ));
                        break;
                    }
                    let backoff = policy.base_delay * 2u32.saturating_pow(retries - 1);
                    let wait = after.unwrap_or(backoff).min(policy.max_delay);
                    progress.note(&format!(
                        "{reason}; retry {retries} in {:.1} s",
                        wait.as_secs_f64()
                    ));
                    tokio::time::sleep(wait).await;
                }
                Err(Attempt::Restart(reason)) => {
                    restarts += 1;
                    discard_part(&part);
                    if restarts > 3 {
                        failures.push(format!("{url}: {reason} (restarted 3 times)"));
                        break;
                    }
                    progress.note(&format!("{reason}: restarting the file"));
                }
                Err(Attempt::NextSource(reason)) => {
                    failures.push(format!("{url}: {reason}"));
                    break;
                }
                Err(Attempt::Mismatch { detail, resumed }) => {
                    let aside = move_aside(&part);
                    progress.note(&format!("{detail}; bad bytes kept at {}", aside.display()));
                    if resumed && !fresh_try_used {
                        fresh_try_used = true;
                        continue;
                    }
                    mismatches.push(format!("{url}: {detail}"));
                    break;
                }
            }
        }
    }
    if mismatches.is_empty() {
        Outcome::Failed {
            detail: failures.join("; "),
        }
    } else {
        Outcome::Mismatch {
            detail: mismatches
                .into_iter()
                .chain(failures)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// Runs blocking work (HTTP transfers, hashing, file copies, unpacking) on tokio's blocking pool
/// and waits for it without holding a runtime worker. A panic there is a panic here, as it would
/// be on a plain thread.
pub async fn blocking<T, F>(work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A verified part renamed into place (its ETag sidecar goes in any case).
fn place(part: &Path, dest: &Path) -> std::io::Result<()> {
    let renamed = dest
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::rename(part, dest));
    let _ = std::fs::remove_file(etag_path(part));
    renamed
}

fn discard_part(part: &Path) {
    let _ = std::fs::remove_file(part);
    let _ = std::fs::remove_file(etag_path(part));
}

/// Renames a part that failed its digest to `<part>.bad` (replacing an older one).
fn move_aside(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".bad");
    let aside = PathBuf::from(name);
    let _ = std::fs::rename(part, &aside);
    let _ = std::fs::remove_file(etag_path(part));
    aside
}

fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    resp.header("Retry-After")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// One request: resume or start the part, stream, hash, compare.
fn attempt(
    agent: &ureq::Agent,
    url: &str,
    expected: Expected<'_>,
    part: &Path,
    progress: &FileProgress,
) -> Result<(), Attempt> {
    let io = |e: std::io::Error| Attempt::NextSource(format!("{}: {e}", part.display()));
    let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if expected.size.is_some_and(|size| have > size) {
        discard_part(part);
        have = 0;
    }
    let stored_etag = if have > 0 {
        std::fs::read_to_string(etag_path(part)).ok()
    } else {
        None
    };
    // Bytes already on disk are hashed again: the digest must cover what is really there.
    let mut hasher = new_hasher(expected);
    progress.restart();
    if have > 0 {
        let mut existing = File::open(part).map_err(io)?.take(have);
        hash_reader(&mut existing, &mut hasher, |n| progress.advance(n)).map_err(io)?;
    }
    let resumed = have > 0;
    if Some(have) == expected.size {
        return finish(hasher, expected, resumed);
    }

    let mut request = agent.get(url).set("Accept-Encoding", "identity");
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
        if let Some(etag) = &stored_etag {
            request = request.set("If-Range", etag);
        }
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(match code {
                408 | 429 | 500..=599 => Attempt::Retry {
                    reason: format!("HTTP {code}"),
                    after: retry_after(&r),
                },
                416 => Attempt::Restart(format!("HTTP 416 for bytes {have}-")),
                _ => Attempt::NextSource(format!("HTTP {code}")),
            })
        }
        Err(e) => {
            return Err(Attempt::Retry {
                reason: e.to_string(),
                after: None,
            })
        }
    };
    // The hub names a file's content in X-Linked-Etag (LFS) and ETag (small files).
    let etag = response
        .header("X-Linked-Etag")
        .or_else(|| response.header("ETag"))
        .map(str::to_string);
    let mut resumed_from = have;
    match response.status() {
        206 => {
            let range_ok = response
                .header("Content-Range")
                .is_some_and(|r| r.trim().starts_with(&format!("bytes {have}-")));
            let etag_changed = matches!((&stored_etag, &etag), (Some(a), Some(b)) if a != b);
            if !range_ok || etag_changed || have == 0 {
                return Err(Attempt::Restart(if etag_changed {
                    "the server's ETag changed since the part was started".into()
                } else {
                    "the server answered a different range".into()
                }));
            }
        }
        200 => {
            if have > 0 {
                // The server ignored the range (or If-Range found the file changed): this body
                // is the whole file, so the part starts again from it.
                progress.note("the server sent the whole file (200, not 206): starting over");
                discard_part(part);
                hasher = new_hasher(expected);
                progress.restart();
                have = 0;
                resumed_from = 0;
            }
        }
        code => return Err(Attempt::NextSource(format!("unexpected HTTP {code}"))),
    }
    if have == 0 {
        if let Some(etag) = &etag {
            std::fs::write(etag_path(part), etag).map_err(io)?;
        }
    }
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .map_err(io)?;
    let mut body = response.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                out.flush().map_err(io)?;
                return Err(Attempt::Retry {
                    reason: format!("connection lost after {have} bytes: {e}"),
                    after: None,
                });
            }
        };
        if let Some(size) = expected.size.filter(|&size| have + n as u64 > size) {
            drop(out);
            return Err(Attempt::Mismatch {
                detail: format!("more than the pinned {size} bytes"),
                resumed: resumed_from > 0,
            });
        }
        out.write_all(&buf[..n]).map_err(io)?;
        hasher.update(&buf[..n]);
        have += n as u64;
        progress.advance(n as u64);
    }
    out.sync_data().map_err(io)?;
    if let Some(size) = expected.size.filter(|&size| have < size) {
        return Err(Attempt::Retry {
            reason: format!("body ended after {have} of {size} bytes"),
            after: None,
        });
    }
    finish(hasher, expected, resumed_from > 0)
}

/// A hasher for the file. A git blob digest hashes its length first, so it needs the size; a
/// file pinned by git SHA-1 always has one (the loader's rule for small files).
fn new_hasher(expected: Expected<'_>) -> Hasher {
    Hasher::for_digest(expected.digest, expected.size.unwrap_or(0))
}

fn finish(hasher: Hasher, expected: Expected<'_>, resumed: bool) -> Result<(), Attempt> {
    let got = hasher.finish_hex();
    if got == expected.digest.hex() {
        Ok(())
    } else {
        Err(Attempt::Mismatch {
            detail: format!(
                "{} {got} differs from the pinned {}",
                expected.digest.algorithm(),
                expected.digest.hex()
            ),
            resumed,
        })
    }
}
