//! VTAB-1k in the NOAH / FacT / V-PETL list-file layout.
//!
//! ```text
//! <root>/
//!   cifar/                       one folder per task (names drift between repos, see below)
//!     train800.txt               800 training examples (hyper-parameter search)
//!     val200.txt                 200 validation examples
//!     train800val200.txt         the 1000 examples used for final training
//!     test.txt                   the full test split
//!     images/train800/000000.jpg ...
//! ```
//!
//! Each list line is `<relative path> <integer label>`, e.g. `images/train800/000000.jpg 37`; the path is
//! relative to the task folder and separated from the label by whitespace (the label is the last token, so
//! paths may contain spaces). Blank lines and lines starting with `#` are ignored.
//!
//! * Task folder names: the requested name is tried first, then its known aliases ([`task_aliases`]), e.g.
//!   `cifar` / `cifar100`, `oxford_iiit_pet` / `oxford_pet`, `dsprites_loc` / `dsprites_location`.
//! * Split names: `train800`, `val200`, `train800val200`, `test` (a trailing `.txt` is accepted, and
//!   `trainval` means `train800val200`).
//! * Number of classes: the value passed in, else the VTAB-1k class count of the task ([`VTAB_TASKS`]),
//!   else the largest label + 1. Labels must be below it.
//! * Images are not opened when a split is listed: a missing or corrupt image is reported by
//!   [`ImageDataset::load_batch`](crate::ImageDataset::load_batch) (or up front by
//!   [`validate_images`]) with its path.

use std::path::Path;

use crate::error::VTAB_HINT;
use crate::{DataError, ImageDataset, ImageSource};

pub use crate::dataset::validate_images;

/// The 19 VTAB-1k tasks (canonical NOAH folder name, number of classes), in the usual reporting order
/// (natural, specialized, structured).
pub const VTAB_TASKS: [(&str, usize); 19] = [
    ("cifar", 100),
    ("caltech101", 102),
    ("dtd", 47),
    ("oxford_flowers102", 102),
    ("oxford_iiit_pet", 37),
    ("svhn", 10),
    ("sun397", 397),
    ("patch_camelyon", 2),
    ("eurosat", 10),
    ("resisc45", 45),
    ("diabetic_retinopathy", 5),
    ("clevr_count", 8),
    ("clevr_dist", 6),
    ("dmlab", 6),
    ("kitti", 4),
    ("dsprites_loc", 16),
    ("dsprites_ori", 16),
    ("smallnorb_azi", 18),
    ("smallnorb_ele", 9),
];

/// Groups of folder names used for the same task by different repositories / dataset copies. The first
/// entry is the canonical (NOAH) name.
const ALIASES: &[&[&str]] = &[
    &[
        "cifar",
        "cifar100",
        "cifar_100",
        "cifar-100",
        "vtab-cifar100",
    ],
    &["caltech101", "caltech", "caltech_101", "caltech-101"],
    &["dtd"],
    &[
        "oxford_flowers102",
        "oxford_flowers",
        "flowers102",
        "flowers",
        "oxford-flowers102",
    ],
    &[
        "oxford_iiit_pet",
        "oxford_pet",
        "oxford_pets",
        "pets",
        "oxford-iiit-pet",
        "oxford_iiit_pets",
    ],
    &["svhn", "svhn_cropped"],
    &["sun397", "sun"],
    &["patch_camelyon", "pcam", "patchcamelyon", "patch-camelyon"],
    &["eurosat"],
    &["resisc45", "resisc", "resisc_45"],
    &[
        "diabetic_retinopathy",
        "diabetic_retinopathy_detection",
        "retinopathy",
        "dr",
    ],
    &["clevr_count", "clevr_count_all", "clevr-count"],
    &[
        "clevr_dist",
        "clevr_distance",
        "clevr_closest_object_distance",
        "clevr-dist",
    ],
    &["dmlab"],
    &[
        "kitti",
        "kitti_dist",
        "kitti_distance",
        "kitti_closest_vehicle_distance",
    ],
    &[
        "dsprites_loc",
        "dsprites_location",
        "dsprites_pos",
        "dsprites_position",
        "dsprites_label_x_position",
    ],
    &[
        "dsprites_ori",
        "dsprites_orientation",
        "dsprites_label_orientation",
    ],
    &[
        "smallnorb_azi",
        "smallnorb_azimuth",
        "smallnorb_label_azimuth",
    ],
    &[
        "smallnorb_ele",
        "smallnorb_elevation",
        "smallnorb_label_elevation",
    ],
];

/// Folder names to try for `task`: `task` itself first, then the other names of its alias group
/// (matching is case-insensitive and treats `-` like `_`).
pub fn task_aliases(task: &str) -> Vec<String> {
    let key = normalise(task);
    let mut out = vec![task.to_string()];
    if let Some(group) = ALIASES
        .iter()
        .find(|g| g.iter().any(|a| normalise(a) == key))
    {
        for a in group.iter() {
            if !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
        }
    }
    out
}

/// Canonical NOAH folder name of `task` (or `None` for a task outside VTAB-1k).
pub fn canonical_task(task: &str) -> Option<&'static str> {
    let key = normalise(task);
    ALIASES
        .iter()
        .find(|g| g.iter().any(|a| normalise(a) == key))
        .map(|g| g[0])
}

/// VTAB-1k number of classes of `task` (any alias), e.g. 100 for `cifar100`.
pub fn vtab_num_classes(task: &str) -> Option<usize> {
    let canon = canonical_task(task)?;
    VTAB_TASKS
        .iter()
        .find(|(t, _)| *t == canon)
        .map(|(_, n)| *n)
}

fn normalise(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('-', "_")
}

/// The list-file stem for a split name (`"train800.txt"` -> `"train800"`, `"trainval"` -> `"train800val200"`).
pub fn split_file_stem(split: &str) -> String {
    let s = split.trim();
    let s = s.strip_suffix(".txt").unwrap_or(s);
    match s {
        "trainval" | "train_val" => "train800val200".to_string(),
        other => other.to_string(),
    }
}

/// Lists one split of one VTAB-1k task. See the module docs for the layout and the rules.
pub fn load_split(
    root: &Path,
    task: &str,
    split: &str,
    num_classes: Option<usize>,
) -> Result<ImageDataset, DataError> {
    let stem = split_file_stem(split);
    // Try every alias folder: a folder may exist without the list file (e.g. an unrelated copy).
    let mut looked = Vec::new();
    let mut list = None;
    for alias in task_aliases(task) {
        let dir = root.join(&alias);
        let file = dir.join(format!("{stem}.txt"));
        if file.is_file() {
            list = Some((dir, file));
            break;
        }
        if dir.is_dir() {
            looked.push(file);
        } else {
            looked.push(dir);
        }
    }
    let Some((task_dir, list_path)) = list else {
        let hint = if looked
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "txt"))
        {
            format!(
                "a task folder exists but has no {stem}.txt (expected train800.txt, val200.txt, \
                 train800val200.txt, test.txt).\n{VTAB_HINT}"
            )
        } else {
            VTAB_HINT.to_string()
        };
        return Err(DataError::MissingDataset {
            looked_in: looked,
            hint,
        });
    };
    let text = std::fs::read_to_string(&list_path).map_err(|source| DataError::Io {
        path: list_path.clone(),
        source,
    })?;
    let (rel_paths, labels) = parse_list(&text, &list_path)?;
    if rel_paths.is_empty() {
        return Err(DataError::EmptyDataset {
            origin: list_path.display().to_string(),
        });
    }
    let max_label = labels.iter().copied().max().unwrap_or(0) as usize;
    // Where the class count came from, so that a label beyond it names the right culprit.
    let (num_classes, declared_by) = match (num_classes, vtab_num_classes(task)) {
        (Some(n), _) => (n, "the task's num_classes".to_string()),
        (None, Some(n)) => (n, format!("VTAB-1k's number of classes of `{task}`")),
        (None, None) => (max_label + 1, String::new()),
    };
    if max_label >= num_classes {
        // Name the first offending line.
        let (line, text) = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .find(|(_, l)| {
                l.split_whitespace()
                    .last()
                    .and_then(|t| t.parse::<usize>().ok())
                    .is_some_and(|v| v >= num_classes)
            })
            .map(|(i, l)| (i + 1, l.to_string()))
            .unwrap_or((0, String::new()));
        return Err(DataError::BadListLine {
            path: list_path,
            line,
            text,
            reason: format!("label is not below {declared_by}, {num_classes}"),
        });
    }
    let items = rel_paths
        .into_iter()
        .map(|p| ImageSource::File(task_dir.join(p)))
        .collect();
    let canon = canonical_task(task).unwrap_or(task);
    Ok(ImageDataset {
        name: format!("vtab/{canon}/{stem}"),
        items,
        labels,
        num_classes,
    })
}

/// Parses a list file's text into (relative paths, labels). `path` is only used in errors.
pub fn parse_list(text: &str, path: &Path) -> Result<(Vec<String>, Vec<u32>), DataError> {
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| DataError::BadListLine {
            path: path.to_path_buf(),
            line: i + 1,
            text: raw.to_string(),
            reason,
        };
        let Some(split_at) = line.rfind(char::is_whitespace) else {
            return Err(bad(
                "expected `<relative image path> <integer label>`".to_string()
            ));
        };
        let (p, l) = (line[..split_at].trim_end(), line[split_at..].trim());
        let label: u32 = l
            .parse()
            .map_err(|_| bad(format!("label {l:?} is not a non-negative integer")))?;
        paths.push(p.to_string());
        labels.push(label);
    }
    Ok((paths, labels))
}
