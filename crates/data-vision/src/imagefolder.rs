//! The ImageFolder layout (as torchvision's `ImageFolder` reads it), used by PILOT for ImageNet-R,
//! ImageNet-A, CUB, ObjectNet and OmniBenchmark.
//!
//! ```text
//! <root>/
//!   imagenet-r/                 one folder per dataset
//!     train/
//!       n01443537/              one folder per class
//!         art_0.jpg             images: .jpg, .jpeg, .png (any case); other files are skipped
//!       n01484850/...
//!     test/
//!       n01443537/...
//! ```
//!
//! The classes are the sorted names of the class folders of the **train** split (sorted by code
//! point, as torchvision sorts them) and the label of an image is the index of its class. Every split
//! uses that list, so labels agree between splits: a class folder of another split that train lacks is
//! an error naming it, and so is a class folder without images. Images below a class folder are found
//! recursively (as torchvision does) and listed in sorted path order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{DataError, ImageDataset, ImageSource};

/// The layout, repeated in error messages.
pub const IMAGEFOLDER_LAYOUT: &str = "expected the ImageFolder layout \
<root>/<dataset>/{train,test}/<class>/*.{jpg,jpeg,png}, with the classes taken from the class folders \
of train/";

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// One split of an ImageFolder dataset, with the class names behind its labels.
#[derive(Clone, Debug)]
pub struct ImageFolderSplit {
    pub dataset: ImageDataset,
    /// `classes[label]` is the class folder name of `label`.
    pub classes: Vec<String>,
}

/// Lists split `split` (`train`, `test`, ...) of dataset `dataset` under `root`. See the module docs.
pub fn load_split(root: &Path, dataset: &str, split: &str) -> Result<ImageFolderSplit, DataError> {
    let dir = root.join(dataset);
    let classes = list_classes(&dir.join("train"))?;
    let split_dir = dir.join(split);
    let mut ds = load_dir(&split_dir, &classes)?;
    ds.name = format!("imagefolder/{dataset}/{split}");
    Ok(ImageFolderSplit {
        dataset: ds,
        classes,
    })
}

/// The sorted class folder names of a split folder (`<root>/<dataset>/train`).
pub fn list_classes(split_dir: &Path) -> Result<Vec<String>, DataError> {
    let mut classes: Vec<String> = class_dirs(split_dir)?.into_iter().map(|(n, _)| n).collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::EmptyDataset {
            origin: format!(
                "{} (no class folders; {IMAGEFOLDER_LAYOUT})",
                split_dir.display()
            ),
        });
    }
    Ok(classes)
}

/// Lists the images of one split folder, labelled by their class folder's index in `classes`.
pub fn load_dir(split_dir: &Path, classes: &[String]) -> Result<ImageDataset, DataError> {
    let index: HashMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let mut dirs = class_dirs(split_dir)?;
    dirs.sort();
    let mut items = Vec::new();
    let mut labels = Vec::new();
    for (name, path) in dirs {
        let Some(&label) = index.get(name.as_str()) else {
            return Err(DataError::BadLabel {
                origin: path.display().to_string(),
                reason: format!(
                    "class folder {name:?} is not one of the {} classes of the train split \
                     ({IMAGEFOLDER_LAYOUT})",
                    classes.len()
                ),
            });
        };
        let mut files = Vec::new();
        collect_images(&path, &mut files)?;
        if files.is_empty() {
            return Err(DataError::EmptyDataset {
                origin: format!(
                    "{} (class folder without .jpg/.jpeg/.png images; {IMAGEFOLDER_LAYOUT})",
                    path.display()
                ),
            });
        }
        files.sort();
        labels.extend(std::iter::repeat_n(label, files.len()));
        items.extend(files.into_iter().map(ImageSource::File));
    }
    if items.is_empty() {
        return Err(DataError::EmptyDataset {
            origin: format!(
                "{} (no class folders; {IMAGEFOLDER_LAYOUT})",
                split_dir.display()
            ),
        });
    }
    let ds = ImageDataset {
        name: split_dir.display().to_string(),
        items,
        labels,
        num_classes: classes.len(),
    };
    ds.check_labels()?;
    Ok(ds)
}

/// `(name, path)` of the sub-folders of `split_dir`; files at that level are skipped.
fn class_dirs(split_dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    if !split_dir.is_dir() {
        return Err(DataError::MissingDataset {
            looked_in: vec![split_dir.to_path_buf()],
            hint: format!("hint: {IMAGEFOLDER_LAYOUT}."),
        });
    }
    let mut out = Vec::new();
    for entry in read_dir(split_dir)? {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| DataError::BadLabel {
                origin: path.display().to_string(),
                reason: "class folder name is not valid UTF-8".to_string(),
            })?;
        out.push((name, path));
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)
}

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in read_dir(dir)? {
        let path = entry.path();
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if is_image_file(&path) && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn png(path: &Path, colour: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(4, 3, Rgb(colour)).save(path).unwrap();
    }

    /// `<tmp>/toy/{train,test}` with classes `b_cat`, `a_dog`, `C_owl` (sorted: C_owl, a_dog, b_cat).
    fn fixture() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("toy");
        png(&d.join("train/b_cat/2.png"), [10, 0, 0]);
        png(&d.join("train/b_cat/1.PNG"), [11, 0, 0]);
        png(&d.join("train/a_dog/x.png"), [20, 0, 0]);
        png(&d.join("train/C_owl/nested/y.png"), [30, 0, 0]);
        std::fs::write(d.join("train/a_dog/notes.txt"), "not an image").unwrap();
        std::fs::write(d.join("train/README"), "a file beside the class folders").unwrap();
        png(&d.join("test/a_dog/t.png"), [40, 0, 0]);
        png(&d.join("test/b_cat/t.png"), [50, 0, 0]);
        tmp
    }

    #[test]
    fn imagefolder_train_and_test_share_sorted_classes() {
        let tmp = fixture();
        let train = load_split(tmp.path(), "toy", "train").unwrap();
        assert_eq!(train.classes, ["C_owl", "a_dog", "b_cat"]);
        assert_eq!(train.dataset.name, "imagefolder/toy/train");
        assert_eq!(train.dataset.num_classes, 3);
        assert_eq!(train.dataset.labels, [0, 1, 2, 2]);
        let names: Vec<String> = train
            .dataset
            .items
            .iter()
            .map(|s| match s {
                ImageSource::File(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
                other => panic!("unexpected source {other:?}"),
            })
            .collect();
        assert_eq!(names, ["y.png", "x.png", "1.PNG", "2.png"]);
        assert_eq!(
            train.dataset.items[0].decode().unwrap().get_pixel(0, 0).0,
            [30, 0, 0]
        );

        // The test split lacks C_owl: labels still index the train classes.
        let test = load_split(tmp.path(), "toy", "test").unwrap();
        assert_eq!(test.classes, train.classes);
        assert_eq!(test.dataset.num_classes, 3);
        assert_eq!(test.dataset.labels, [1, 2]);
        assert_eq!(
            test.dataset.items[1].decode().unwrap().get_pixel(3, 2).0,
            [50, 0, 0]
        );
    }

    #[test]
    fn imagefolder_unknown_test_class_is_an_error_naming_it() {
        let tmp = fixture();
        png(&tmp.path().join("toy/test/zebra/z.png"), [1, 2, 3]);
        let err = load_split(tmp.path(), "toy", "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("zebra"), "{err}");
        assert!(err.contains("ImageFolder layout"), "{err}");
    }

    #[test]
    fn imagefolder_class_without_images_is_an_error_naming_it() {
        let tmp = fixture();
        let empty = tmp.path().join("toy/train/d_empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(empty.join("labels.csv"), "x").unwrap();
        let err = load_split(tmp.path(), "toy", "train")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&empty.display().to_string()), "{err}");
        assert!(err.contains("without .jpg/.jpeg/.png images"), "{err}");
    }

    #[test]
    fn imagefolder_missing_folders_name_the_path_and_layout() {
        let tmp = fixture();
        let err = load_split(tmp.path(), "nope", "train").unwrap_err();
        assert!(matches!(err, DataError::MissingDataset { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&tmp.path().join("nope/train").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("ImageFolder layout"), "{msg}");

        let err = load_split(tmp.path(), "toy", "val")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&tmp.path().join("toy/val").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn imagefolder_train_without_class_folders_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("flat/train")).unwrap();
        png(&tmp.path().join("flat/train/a.png"), [0, 0, 0]);
        let err = load_split(tmp.path(), "flat", "train")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no class folders"), "{err}");
    }
}
