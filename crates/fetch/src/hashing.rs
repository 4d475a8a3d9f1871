//! Content digests computed while bytes stream past, so a download is checked without reading it
//! twice: SHA-256, or the git blob SHA-1 (`blob <len>\0` + content) the hub reports for small files.

use std::io::Read;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::manifest::{hex, Digest};

/// A running digest of the kind a manifest entry pins.
pub enum Hasher {
    Sha256(Sha256),
    /// Git's header needs the total length first, which a pinned entry knows.
    GitSha1(Sha1),
}

impl Hasher {
    /// A hasher for `expected`'s algorithm; `size` is the full length (git blob header).
    pub fn for_digest(expected: &Digest, size: u64) -> Self {
        match expected {
            Digest::Sha256(_) => Hasher::Sha256(Sha256::new()),
            Digest::GitSha1(_) => {
                let mut h = Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                Hasher::GitSha1(h)
            }
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::GitSha1(h) => h.update(bytes),
        }
    }

    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex(&h.finalize()),
            Hasher::GitSha1(h) => hex(&h.finalize()),
        }
    }
}

/// Feeds everything `reader` yields into `hasher`, calling `progress` with each chunk's length;
/// returns the number of bytes read.
pub fn hash_reader(
    reader: &mut impl Read,
    hasher: &mut Hasher,
    mut progress: impl FnMut(u64),
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        progress(n as u64);
    }
}

/// The digest of a whole file, of `expected`'s algorithm.
pub fn hash_file(path: &Path, expected: &Digest) -> std::io::Result<String> {
    let size = std::fs::metadata(path)?.len();
    let mut hasher = Hasher::for_digest(expected, size);
    hash_reader(&mut std::fs::File::open(path)?, &mut hasher, |_| {})?;
    Ok(hasher.finish_hex())
}

/// SHA-256 and git blob SHA-1 of a file in one pass (what `manifest pin` records).
pub fn both_digests(path: &Path) -> std::io::Result<(u64, String, String)> {
    let size = std::fs::metadata(path)?.len();
    let mut sha256 = Sha256::new();
    let mut git = Sha1::new();
    git.update(format!("blob {size}\0").as_bytes());
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        git.update(&buf[..n]);
    }
    Ok((size, hex(&sha256.finalize()), hex(&git.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let mut h = Hasher::for_digest(&Digest::GitSha1(String::new()), 6);
        h.update(b"hello\n");
        assert_eq!(h.finish_hex(), "ce013625030ba8dba906f756967f9e9ca394464a");
    }

    #[test]
    fn sha256_of_empty_input() {
        let h = Hasher::for_digest(&Digest::Sha256(String::new()), 0);
        assert_eq!(
            h.finish_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
