//! SIB-200 (Adelani et al., 2024, "SIB-200: A Simple, Inclusive, and Big Evaluation Dataset for
//! Topic Classification in 200+ Languages and Dialects", arXiv:2309.07445) as its repository ships
//! it: `<root>/<lang_script>/{train,dev,test}.tsv` with columns `index_id`, `category`, `text`, and
//! 7 categories.

use std::path::{Path, PathBuf};

use crate::classification::{read_classification, TableFormat, TextExample, SIB200_COLUMNS};
use crate::error::{Result, TextDataError};
use crate::labels::FormatLabels;

/// SIB-200's topic categories, in the dataset's order.
pub const SIB200_CATEGORIES: [&str; 7] = [
    "science/technology",
    "travel",
    "politics",
    "sports",
    "health",
    "entertainment",
    "geography",
];

/// SIB-200's categories as a format's class list, for [`crate::LabelSet::for_task`]: a task in
/// SIB-200's layout with other categories is read with its own.
pub const SIB200_LABELS: FormatLabels = FormatLabels {
    format: "sib200",
    names: &SIB200_CATEGORIES,
};

/// The file of `split` (`train`, `dev`, `test`) for language `lang` (e.g. `swh_Latn`).
pub fn sib200_path(root: &Path, lang: &str, split: &str) -> PathBuf {
    root.join(lang).join(format!("{split}.tsv"))
}

/// Reads one SIB-200 split; a missing file says where it was looked for and how to get it.
pub fn read_sib200(root: &Path, lang: &str, split: &str) -> Result<Vec<TextExample>> {
    let path = sib200_path(root, lang, split);
    if !path.is_file() {
        return Err(TextDataError::Missing {
            path,
            hint: "SIB-200: clone https://github.com/dadelani/sib-200 and run its data script, \
                   then point the suite's root at data/annotated"
                .into(),
        });
    }
    read_classification(&path, Some(TableFormat::Tsv), &SIB200_COLUMNS)
}
