//! Unpacking zip and tar.gz data archives safely: every entry must stay inside the target folder
//! (no absolute paths, no `..`, no links), so an archive cannot write anywhere else.
//!
//! The zip reader is our own (central directory, zip64, stored and deflate entries, CRC-32
//! checked): the `zip` crate is in the dependency tree already, but enabling its deflate
//! feature would change its features for candle and rebuild the whole tensor stack.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::manifest::ArchiveFormat;

/// Where entry `name` lands under `into` once `strip` leading folders are dropped; `None` for
/// entries that are only the stripped folders. Absolute paths, drive letters and `..` are errors.
pub fn entry_target(name: &str, strip: usize, into: &Path) -> anyhow::Result<Option<PathBuf>> {
    if name.starts_with('/') || name.starts_with('\\') || name.contains(':') {
        bail!("archive entry `{name}` is an absolute path: refused");
    }
    let parts: Vec<&str> = name
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        bail!("archive entry `{name}` climbs out with `..`: refused");
    }
    if parts.len() <= strip {
        return Ok(None);
    }
    Ok(Some(
        parts[strip..]
            .iter()
            .fold(into.to_path_buf(), |p, c| p.join(c)),
    ))
}

/// Unpacks `archive` into `into` (created), dropping `strip` leading folders; returns the number
/// of files written.
pub fn unpack(
    archive: &Path,
    format: ArchiveFormat,
    strip: usize,
    into: &Path,
) -> anyhow::Result<usize> {
    std::fs::create_dir_all(into)?;
    match format {
        ArchiveFormat::Zip => unzip(archive, strip, into),
        ArchiveFormat::TarGz => untar_gz(archive, strip, into),
    }
    .with_context(|| format!("unpacking {}", archive.display()))
}

fn untar_gz(archive: &Path, strip: usize, into: &Path) -> anyhow::Result<usize> {
    let gz = flate2::read::MultiGzDecoder::new(BufReader::new(File::open(archive)?));
    let mut tar = tar::Archive::new(gz);
    let mut written = 0;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            bail!("archive entry `{name}` is a link: refused");
        }
        let Some(target) = entry_target(&name, strip, into)? else {
            continue;
        };
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_file() {
            create_parent(&target)?;
            io::copy(&mut entry, &mut File::create(&target)?)?;
            written += 1;
        }
        // Other entry kinds (pax headers are consumed by the reader; devices, fifos) are skipped.
    }
    Ok(written)
}

fn create_parent(target: &Path) -> io::Result<()> {
    match target.parent() {
        Some(parent) => std::fs::create_dir_all(parent),
        None => Ok(()),
    }
}

const EOCD: u32 = 0x0605_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_at(file: &mut File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// One central-directory record, with zip64 sizes resolved.
struct ZipEntry {
    name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    local_offset: u64,
    is_link: bool,
    encrypted: bool,
}

/// The central directory's entry count, size and offset (zip64 when the classic fields overflow).
fn central_directory(file: &mut File) -> anyhow::Result<(u64, u64, u64)> {
    let len = file.metadata()?.len();
    let tail_len = len.min(65_557) as usize;
    let tail = read_at(file, len - tail_len as u64, tail_len)?;
    let Some(pos) = (0..=tail_len.saturating_sub(22))
        .rev()
        .find(|&i| u32_at(&tail, i) == EOCD)
    else {
        bail!("not a zip file (no end of central directory record)");
    };
    let (mut entries, mut size, mut offset) = (
        u64::from(u16_at(&tail, pos + 10)),
        u64::from(u32_at(&tail, pos + 12)),
        u64::from(u32_at(&tail, pos + 16)),
    );
    if (entries == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF)
        && pos >= 20
        && u32_at(&tail, pos - 20) == ZIP64_LOCATOR
    {
        let eocd64 = read_at(file, u64_at(&tail, pos - 20 + 8), 56)?;
        if u32_at(&eocd64, 0) != ZIP64_EOCD {
            bail!("broken zip64 end of central directory");
        }
        entries = u64_at(&eocd64, 32);
        size = u64_at(&eocd64, 40);
        offset = u64_at(&eocd64, 48);
    }
    Ok((entries, size, offset))
}

fn read_entries(file: &mut File) -> anyhow::Result<Vec<ZipEntry>> {
    let (count, size, offset) = central_directory(file)?;
    let dir = read_at(file, offset, usize::try_from(size)?)?;
    let mut entries = Vec::new();
    let mut at = 0;
    for _ in 0..count {
        if at + 46 > dir.len() || u32_at(&dir, at) != CENTRAL {
            bail!(
                "broken central directory record at byte {}",
                offset + at as u64
            );
        }
        let made_by_unix = u16_at(&dir, at + 4) >> 8 == 3;
        let flags = u16_at(&dir, at + 8);
        let (name_len, extra_len, comment_len) = (
            usize::from(u16_at(&dir, at + 28)),
            usize::from(u16_at(&dir, at + 30)),
            usize::from(u16_at(&dir, at + 32)),
        );
        let mode = u32_at(&dir, at + 38) >> 16;
        let mut uncompressed = u64::from(u32_at(&dir, at + 24));
        let mut compressed = u64::from(u32_at(&dir, at + 20));
        let mut local_offset = u64::from(u32_at(&dir, at + 42));
        let name = String::from_utf8_lossy(&dir[at + 46..at + 46 + name_len]).into_owned();
        // Zip64 extra field: the overflowing values, in this order.
        let extra = &dir[at + 46 + name_len..at + 46 + name_len + extra_len];
        let mut e = 0;
        while e + 4 <= extra.len() {
            let (id, len) = (u16_at(extra, e), usize::from(u16_at(extra, e + 2)));
            if id == 1 {
                let mut f = e + 4;
                for value in [&mut uncompressed, &mut compressed, &mut local_offset] {
                    if *value == 0xFFFF_FFFF && f + 8 <= e + 4 + len {
                        *value = u64_at(extra, f);
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        entries.push(ZipEntry {
            name,
            method: u16_at(&dir, at + 10),
            crc: u32_at(&dir, at + 16),
            compressed,
            local_offset,
            is_link: made_by_unix && mode & 0o170000 == 0o120000,
            encrypted: flags & 1 == 1,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

fn unzip(archive: &Path, strip: usize, into: &Path) -> anyhow::Result<usize> {
    let mut file = File::open(archive)?;
    let entries = read_entries(&mut file)?;
    // Check every name before writing anything: a refused archive leaves nothing behind.
    for entry in &entries {
        if entry.is_link {
            bail!("archive entry `{}` is a link: refused", entry.name);
        }
        entry_target(&entry.name, strip, into)?;
    }
    let mut written = 0;
    for entry in &entries {
        let Some(target) = entry_target(&entry.name, strip, into)? else {
            continue;
        };
        if entry.name.ends_with('/') {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if entry.encrypted {
            bail!("archive entry `{}` is encrypted", entry.name);
        }
        let local = read_at(&mut file, entry.local_offset, 30)?;
        if u32_at(&local, 0) != LOCAL {
            bail!("broken local header of `{}`", entry.name);
        }
        let data_start =
            entry.local_offset + 30 + u64::from(u16_at(&local, 26)) + u64::from(u16_at(&local, 28));
        file.seek(SeekFrom::Start(data_start))?;
        let raw = (&mut file).take(entry.compressed);
        let mut reader: Box<dyn Read + '_> = match entry.method {
            0 => Box::new(raw),
            8 => Box::new(flate2::read::DeflateDecoder::new(raw)),
            m => bail!(
                "archive entry `{}` uses compression method {m}; only stored and deflate are read",
                entry.name
            ),
        };
        create_parent(&target)?;
        let mut out = File::create(&target)?;
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        if crc.finalize() != entry.crc {
            bail!("archive entry `{}` fails its CRC-32", entry.name);
        }
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_targets_strip_and_refuse_escapes() {
        let into = Path::new("/t");
        assert_eq!(
            entry_target("top/a/b.txt", 1, into).unwrap(),
            Some(PathBuf::from("/t/a/b.txt"))
        );
        assert_eq!(entry_target("top/", 1, into).unwrap(), None);
        assert!(entry_target("top/../../etc/passwd", 1, into).is_err());
        assert!(entry_target("/etc/passwd", 0, into).is_err());
        assert!(entry_target("C:/x", 0, into).is_err());
    }

    fn tar_gz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn file_header(len: usize) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_size(len as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header
    }

    #[test]
    fn a_tar_gz_unpacks_with_its_top_folder_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(
            &archive,
            tar_gz(|b| {
                b.append_data(&mut file_header(5), "Top/meta/x.csv", &b"a,b\n1"[..5])
                    .unwrap();
                b.append_data(&mut file_header(2), "Top/audio/fold1/c.wav", &b"RI"[..])
                    .unwrap();
            }),
        )
        .unwrap();
        let into = dir.path().join("out");
        assert_eq!(unpack(&archive, ArchiveFormat::TarGz, 1, &into).unwrap(), 2);
        assert_eq!(
            std::fs::read(into.join("audio/fold1/c.wav")).unwrap(),
            b"RI"
        );
        assert!(into.join("meta/x.csv").is_file());
    }

    #[test]
    fn a_link_in_a_tar_gz_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(
            &archive,
            tar_gz(|b| {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                b.append_link(&mut header, "top/passwd", "/etc/passwd")
                    .unwrap();
            }),
        )
        .unwrap();
        let e = unpack(&archive, ArchiveFormat::TarGz, 1, &dir.path().join("out")).unwrap_err();
        assert!(format!("{e:#}").contains("is a link: refused"), "{e:#}");
    }
}
