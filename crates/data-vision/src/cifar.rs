//! CIFAR-100 and CIFAR-10 in their binary releases, held decoded in memory.
//!
//! ```text
//! <root>/
//!   cifar-100-binary/           CIFAR-100 ("CIFAR-100 binary version")
//!     train.bin                 50000 records of 3074 bytes
//!     test.bin                  10000 records
//!     fine_label_names.txt      100 class names, one a line
//!   cifar-10-batches-bin/       CIFAR-10 ("CIFAR-10 binary version")
//!     data_batch_1.bin ... data_batch_5.bin   10000 records of 3073 bytes each (train)
//!     test_batch.bin            10000 records (test)
//!     batches.meta.txt          10 class names, one a line
//! ```
//!
//! A CIFAR-100 record is 1 coarse label byte, 1 fine label byte and 3072 pixel bytes; a CIFAR-10 record
//! is 1 label byte and 3072 pixel bytes. The pixels are three 32x32 planes (red, then green, then blue),
//! each row-major. Labels are the fine labels for CIFAR-100; class names are the non-empty lines of the
//! names file, in order. `root` may also be the release folder itself. Images are decoded once while
//! reading ([`ImageSource::Rgb`]), 150 MB for CIFAR-100's train split.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use rayon::prelude::*;

use crate::{DataError, ImageDataset, ImageSource};

/// Side of a CIFAR image.
pub const CIFAR_SIDE: u32 = 32;
/// Pixel bytes of one record (three 32x32 planes).
pub const CIFAR_PIXEL_BYTES: usize = 3 * 32 * 32;
/// Bytes of one CIFAR-100 record (coarse label, fine label, pixels).
pub const CIFAR100_RECORD_BYTES: usize = 2 + CIFAR_PIXEL_BYTES;
/// Bytes of one CIFAR-10 record (label, pixels).
pub const CIFAR10_RECORD_BYTES: usize = 1 + CIFAR_PIXEL_BYTES;

const CIFAR100_HINT: &str = "hint: expected CIFAR-100's binary release \
<root>/cifar-100-binary/{train.bin,test.bin,fine_label_names.txt} (the archive cifar-100-binary.tar.gz \
from the CIFAR site, unpacked); point --data-dir at the folder that holds cifar-100-binary/.";

const CIFAR10_HINT: &str = "hint: expected CIFAR-10's binary release \
<root>/cifar-10-batches-bin/{data_batch_1..5.bin,test_batch.bin,batches.meta.txt} (the archive \
cifar-10-binary.tar.gz from the CIFAR site, unpacked); point --data-dir at the folder that holds \
cifar-10-batches-bin/.";

/// One CIFAR split with the class names behind its labels.
#[derive(Clone, Debug)]
pub struct CifarSplit {
    pub dataset: ImageDataset,
    /// `classes[label]` is the name of `label`.
    pub classes: Vec<String>,
}

/// Which binary release a file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarVariant {
    Cifar10,
    Cifar100,
}

impl CifarVariant {
    fn folder(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "cifar-10-batches-bin",
            CifarVariant::Cifar100 => "cifar-100-binary",
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "batches.meta.txt",
            CifarVariant::Cifar100 => "fine_label_names.txt",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => CIFAR10_HINT,
            CifarVariant::Cifar100 => CIFAR100_HINT,
        }
    }

    /// Bytes of one record.
    pub fn record_bytes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => CIFAR10_RECORD_BYTES,
            CifarVariant::Cifar100 => CIFAR100_RECORD_BYTES,
        }
    }

    /// Number of classes of the release.
    pub fn num_classes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100 => 100,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "cifar10",
            CifarVariant::Cifar100 => "cifar100",
        }
    }

    /// The files of `split` (`train`, `test`, or the stem of one `.bin` file).
    fn split_files(self, split: &str) -> Vec<String> {
        match (self, split) {
            (CifarVariant::Cifar10, "train") => {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            }
            (CifarVariant::Cifar10, "test") => vec!["test_batch.bin".to_string()],
            _ => vec![format!("{split}.bin")],
        }
    }
}

/// Reads split `train` or `test` of CIFAR-100 (fine labels). See the module docs.
pub fn load_cifar100(root: &Path, split: &str) -> Result<CifarSplit, DataError> {
    load(root, split, CifarVariant::Cifar100)
}

/// Reads split `train` (the five data batches) or `test` of CIFAR-10. See the module docs.
pub fn load_cifar10(root: &Path, split: &str) -> Result<CifarSplit, DataError> {
    load(root, split, CifarVariant::Cifar10)
}

/// Reads one split of either release.
pub fn load(root: &Path, split: &str, variant: CifarVariant) -> Result<CifarSplit, DataError> {
    let split = split.trim();
    let files = variant.split_files(split);
    let nested = root.join(variant.folder());
    let dir = if nested.is_dir() || !root.join(&files[0]).is_file() {
        nested
    } else {
        root.to_path_buf()
    };
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    let names_path = dir.join(variant.names_file());
    let missing: Vec<PathBuf> = paths
        .iter()
        .chain(std::iter::once(&names_path))
        .filter(|p| !p.is_file())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(DataError::MissingDataset {
            looked_in: missing,
            hint: variant.hint().to_string(),
        });
    }
    let classes = read_class_names(&names_path, variant.num_classes())?;
    let mut items = Vec::new();
    let mut labels = Vec::new();
    for path in &paths {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let (i, l) = parse_records(path, &bytes, variant)?;
        items.extend(i);
        labels.extend(l);
    }
    if items.is_empty() {
        return Err(DataError::EmptyDataset {
            origin: paths[0].display().to_string(),
        });
    }
    let dataset = ImageDataset {
        name: format!("{}/{split}", variant.name()),
        items,
        labels,
        num_classes: classes.len(),
    };
    Ok(CifarSplit { dataset, classes })
}

/// The non-empty lines of a names file; there must be exactly `expected` of them.
pub fn read_class_names(path: &Path, expected: usize) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != expected {
        return Err(DataError::BadLabel {
            origin: path.display().to_string(),
            reason: format!(
                "holds {} class names (non-empty lines), expected {expected}",
                names.len()
            ),
        });
    }
    Ok(names)
}

/// Decodes the records of one binary file (its bytes read from `path`, which errors name).
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    variant: CifarVariant,
) -> Result<(Vec<ImageSource>, Vec<u32>), DataError> {
    let record = variant.record_bytes();
    if !bytes.len().is_multiple_of(record) {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} bytes is not a multiple of the {record}-byte {} record ({} whole records \
                     and {} bytes left over); truncated or not a {} binary file",
                    bytes.len(),
                    variant.name(),
                    bytes.len() / record,
                    bytes.len() % record,
                    variant.name(),
                ),
            ),
        });
    }
    let label_at = record - CIFAR_PIXEL_BYTES - 1;
    let num_classes = variant.num_classes();
    let labels: Vec<u32> = bytes
        .chunks_exact(record)
        .map(|r| u32::from(r[label_at]))
        .collect();
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= num_classes)
    {
        return Err(DataError::BadLabel {
            origin: format!("{} record {i}", path.display()),
            reason: format!("label {l} is not below {num_classes}"),
        });
    }
    let items = bytes
        .par_chunks_exact(record)
        .map(|r| ImageSource::Rgb(Arc::new(planes_to_rgb(&r[record - CIFAR_PIXEL_BYTES..]))))
        .collect();
    Ok((items, labels))
}

/// Interleaves three 32x32 planes (R, G, B) into an RGB image.
fn planes_to_rgb(planes: &[u8]) -> RgbImage {
    let n = (CIFAR_SIDE * CIFAR_SIDE) as usize;
    let (r, rest) = planes.split_at(n);
    let (g, b) = rest.split_at(n);
    let mut raw = Vec::with_capacity(3 * n);
    for i in 0..n {
        raw.extend_from_slice(&[r[i], g[i], b[i]]);
    }
    RgbImage::from_raw(CIFAR_SIDE, CIFAR_SIDE, raw).expect("3 * 32 * 32 bytes make a 32x32 image")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixel (x, y) of image `k`: R = x + k, G = y, B = 200 + k.
    fn planes(k: u8) -> Vec<u8> {
        let mut p = vec![0u8; CIFAR_PIXEL_BYTES];
        for y in 0..32usize {
            for x in 0..32usize {
                p[y * 32 + x] = x as u8 + k;
                p[1024 + y * 32 + x] = y as u8;
                p[2048 + y * 32 + x] = 200 + k;
            }
        }
        p
    }

    fn cifar100_file(fine: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, &f) in fine.iter().enumerate() {
            out.push(7); // coarse label, ignored
            out.push(f);
            out.extend(planes(k as u8));
        }
        out
    }

    fn cifar10_file(labels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, &l) in labels.iter().enumerate() {
            out.push(l);
            out.extend(planes(k as u8));
        }
        out
    }

    fn names(n: usize) -> String {
        (0..n).map(|i| format!("class_{i}\n")).collect()
    }

    fn rgb(ds: &ImageDataset, i: usize) -> &RgbImage {
        match &ds.items[i] {
            ImageSource::Rgb(img) => img,
            other => panic!("expected a decoded image, got {other:?}"),
        }
    }

    fn cifar100_fixture() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("cifar-100-binary");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("train.bin"), cifar100_file(&[3, 99, 0])).unwrap();
        std::fs::write(d.join("test.bin"), cifar100_file(&[42])).unwrap();
        std::fs::write(d.join("fine_label_names.txt"), names(100) + "\n").unwrap();
        tmp
    }

    #[test]
    fn cifar100_decodes_planes_and_fine_labels() {
        let tmp = cifar100_fixture();
        let train = load_cifar100(tmp.path(), "train").unwrap();
        assert_eq!(train.dataset.name, "cifar100/train");
        assert_eq!(train.dataset.labels, [3, 99, 0]);
        assert_eq!(train.dataset.num_classes, 100);
        assert_eq!(train.classes.len(), 100);
        assert_eq!(train.classes[99], "class_99");
        let img = rgb(&train.dataset, 1);
        assert_eq!(img.dimensions(), (32, 32));
        assert_eq!(img.get_pixel(5, 17).0, [5 + 1, 17, 201]);
        assert_eq!(rgb(&train.dataset, 2).get_pixel(31, 0).0, [31 + 2, 0, 202]);
        // Decoding through the common path gives the same pixels.
        assert_eq!(
            train.dataset.items[0].decode().unwrap().get_pixel(3, 4).0,
            [3, 4, 200]
        );

        // The release folder itself also works as the root.
        let test = load_cifar100(&tmp.path().join("cifar-100-binary"), "test").unwrap();
        assert_eq!(test.dataset.labels, [42]);
        assert_eq!(test.dataset.len(), 1);
    }

    #[test]
    fn cifar100_truncated_file_names_file_and_byte_count() {
        let tmp = cifar100_fixture();
        let path = tmp.path().join("cifar-100-binary/train.bin");
        let mut bytes = cifar100_file(&[1, 2]);
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        let err = load_cifar100(tmp.path(), "train").unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("6138 bytes"), "{err}");
        assert!(err.contains("3074"), "{err}");
    }

    #[test]
    fn cifar100_label_out_of_range_and_bad_names_are_errors() {
        let tmp = cifar100_fixture();
        let d = tmp.path().join("cifar-100-binary");
        std::fs::write(d.join("test.bin"), cifar100_file(&[1, 100])).unwrap();
        let err = load_cifar100(tmp.path(), "test").unwrap_err().to_string();
        assert!(err.contains("test.bin record 1"), "{err}");

        std::fs::write(d.join("fine_label_names.txt"), names(99)).unwrap();
        let err = load_cifar100(tmp.path(), "train").unwrap_err().to_string();
        assert!(err.contains("fine_label_names.txt"), "{err}");
        assert!(err.contains("holds 99 class names"), "{err}");
    }

    #[test]
    fn cifar100_missing_files_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_cifar100(tmp.path(), "train").unwrap_err();
        assert!(matches!(err, DataError::MissingDataset { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("cifar-100-binary/train.bin"), "{msg}");
        assert!(msg.contains("fine_label_names.txt"), "{msg}");
    }

    #[test]
    fn cifar10_reads_five_train_batches_and_test() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("cifar-10-batches-bin");
        std::fs::create_dir_all(&d).unwrap();
        for i in 1..=5u8 {
            std::fs::write(d.join(format!("data_batch_{i}.bin")), cifar10_file(&[i, 0])).unwrap();
        }
        std::fs::write(d.join("test_batch.bin"), cifar10_file(&[9])).unwrap();
        std::fs::write(d.join("batches.meta.txt"), names(10) + "\n\n").unwrap();
        let train = load_cifar10(tmp.path(), "train").unwrap();
        assert_eq!(train.dataset.labels, [1, 0, 2, 0, 3, 0, 4, 0, 5, 0]);
        assert_eq!(train.dataset.num_classes, 10);
        assert_eq!(train.classes[9], "class_9");
        assert_eq!(rgb(&train.dataset, 3).get_pixel(10, 20).0, [11, 20, 201]);
        let test = load_cifar10(tmp.path(), "test").unwrap();
        assert_eq!(test.dataset.labels, [9]);
        assert_eq!(test.dataset.name, "cifar10/test");

        let path = d.join("data_batch_3.bin");
        std::fs::write(&path, vec![0u8; 3074]).unwrap();
        let err = load_cifar10(tmp.path(), "train").unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("3074 bytes"), "{err}");
        assert!(err.contains("3073-byte"), "{err}");
    }
}
