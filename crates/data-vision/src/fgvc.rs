//! FGVC (fine-grained visual classification) with VPT's json splits.
//!
//! ```text
//! <root>/
//!   CUB_200_2011/               one folder per dataset (aliases accepted, see below)
//!     train.json                {"001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg": 1, ...}
//!     val.json
//!     test.json
//!     images/001.Black_footed_Albatross/...
//! ```
//!
//! Each split file is one json object mapping an image path to an integer class id. As in VPT
//! (`src/data/datasets/json_dataset.py`), paths are relative to a per-dataset image folder:
//!
//! | dataset | folder (aliases) | image folder | classes |
//! |---|---|---|---|
//! | CUB-200-2011 | `CUB_200_2011` (`cub`, `cub200`) | `images/` | 200 |
//! | NABirds | `nabirds` | `images/` | 555 |
//! | Oxford Flowers | `OxfordFlower` (`oxford_flowers`, `flowers`) | the dataset folder | 102 |
//! | Stanford Dogs | `Stanford-dogs` (`stanford_dogs`, `dogs`) | `Images/` | 120 |
//! | Stanford Cars | `Stanford-cars` (`stanford_cars`, `cars`) | the dataset folder | 196 |
//!
//! If the first listed image is not found under that folder, the dataset folder itself, `images/` and
//! `Images/` are tried, and the first that holds it is used (so re-packed copies work).
//!
//! Class ids in the json files are arbitrary integers (CUB starts at 1, NABirds is sparse). VPT maps the
//! sorted distinct ids of a split to `0..K`; here the mapping is built from the union of the ids in all
//! split files present (train, val, test), so it is identical for every split even if one lacks a class.
//! `num_classes` is the number of distinct ids. Entries are sorted by path for determinism.
//! Splits: `train`, `val`, `test`, and `trainval` (`trainval.json` if present, else train + val).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::FGVC_HINT;
use crate::{DataError, ImageDataset, ImageSource};

/// The five FGVC datasets: (VPT folder name, image sub-folder, number of classes).
pub const FGVC_DATASETS: [(&str, &str, usize); 5] = [
    ("CUB_200_2011", "images", 200),
    ("nabirds", "images", 555),
    ("OxfordFlower", "", 102),
    ("Stanford-dogs", "Images", 120),
    ("Stanford-cars", "", 196),
];

const ALIASES: &[&[&str]] = &[
    &["CUB_200_2011", "cub", "cub200", "cub_200", "cub2011", "CUB"],
    &["nabirds", "NABirds", "na_birds"],
    &[
        "OxfordFlower",
        "oxford_flowers",
        "oxford_flower",
        "oxfordflowers",
        "flowers",
        "flowers102",
    ],
    &["Stanford-dogs", "StanfordDogs", "stanford_dogs", "dogs"],
    &["Stanford-cars", "StanfordCars", "stanford_cars", "cars"],
];

fn normalise(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('-', "_")
}

fn group(dataset: &str) -> Option<usize> {
    let key = normalise(dataset);
    ALIASES
        .iter()
        .position(|g| g.iter().any(|a| normalise(a) == key))
}

/// Folder names to try for `dataset`: itself first, then its aliases.
pub fn dataset_aliases(dataset: &str) -> Vec<String> {
    let mut out = vec![dataset.to_string()];
    if let Some(g) = group(dataset) {
        for a in ALIASES[g] {
            if !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
        }
    }
    out
}

/// VPT's image sub-folder for `dataset` (`""` for unknown datasets: paths relative to the dataset folder).
pub fn image_subdir(dataset: &str) -> &'static str {
    group(dataset).map(|g| FGVC_DATASETS[g].1).unwrap_or("")
}

/// Lists one split (`train`, `val`, `test`, `trainval`) of an FGVC dataset. See the module docs.
pub fn load_split(root: &Path, dataset: &str, split: &str) -> Result<ImageDataset, DataError> {
    let split = split.trim().strip_suffix(".json").unwrap_or(split.trim());
    let mut looked = Vec::new();
    let mut found = None;
    for alias in dataset_aliases(dataset) {
        let dir = root.join(&alias);
        if dir.is_dir() {
            found = Some(dir);
            break;
        }
        looked.push(dir);
    }
    let Some(dir) = found else {
        return Err(DataError::MissingDataset {
            looked_in: looked,
            hint: FGVC_HINT.to_string(),
        });
    };

    // The files that make up the requested split.
    let split_files: Vec<PathBuf> = if split == "trainval" && !dir.join("trainval.json").is_file() {
        vec![dir.join("train.json"), dir.join("val.json")]
    } else {
        vec![dir.join(format!("{split}.json"))]
    };
    let missing: Vec<PathBuf> = split_files
        .iter()
        .filter(|p| !p.is_file())
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(DataError::MissingDataset {
            looked_in: missing,
            hint: format!(
                "dataset folder {} has no {split} split file.\n{FGVC_HINT}",
                dir.display()
            ),
        });
    }
    let mut entries: BTreeMap<String, i64> = BTreeMap::new();
    for f in &split_files {
        entries.extend(read_json_split(f)?);
    }
    if entries.is_empty() {
        return Err(DataError::EmptyDataset {
            origin: split_files[0].display().to_string(),
        });
    }

    // Class-id mapping from every split file present, so all splits agree.
    let mut ids: BTreeSet<i64> = entries.values().copied().collect();
    for name in ["train.json", "val.json", "test.json", "trainval.json"] {
        let p = dir.join(name);
        if p.is_file() && !split_files.contains(&p) {
            ids.extend(read_json_split(&p)?.into_values());
        }
    }
    let id_to_class: BTreeMap<i64, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect();

    let image_dir = pick_image_dir(&dir, dataset, entries.keys().next().map(String::as_str));
    let mut items = Vec::with_capacity(entries.len());
    let mut labels = Vec::with_capacity(entries.len());
    for (path, id) in entries {
        items.push(ImageSource::File(image_dir.join(path)));
        labels.push(id_to_class[&id]);
    }
    let name = group(dataset)
        .map(|g| FGVC_DATASETS[g].0)
        .unwrap_or(dataset);
    Ok(ImageDataset {
        name: format!("fgvc/{name}/{split}"),
        items,
        labels,
        num_classes: ids.len(),
    })
}

fn pick_image_dir(dir: &Path, dataset: &str, first: Option<&str>) -> PathBuf {
    let default = dir.join(image_subdir(dataset));
    let Some(first) = first else { return default };
    let candidates = [
        default.clone(),
        dir.to_path_buf(),
        dir.join("images"),
        dir.join("Images"),
    ];
    candidates
        .into_iter()
        .find(|c| c.join(first).is_file())
        .unwrap_or(default)
}

/// Reads a VPT json split file: `{"relative/path.jpg": class_id, ...}`.
pub fn read_json_split(path: &Path) -> Result<BTreeMap<String, i64>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| DataError::BadJson {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(bad(
            "expected a json object {\"image path\": integer label, ...}".to_string(),
        ));
    };
    map.into_iter()
        .map(|(k, v)| match v.as_i64() {
            Some(id) => Ok((k, id)),
            None => Err(bad(format!("label of {k:?} is {v}, not an integer"))),
        })
        .collect()
}
