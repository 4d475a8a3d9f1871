//! ESC-50 (Piczak, 2015): 2000 five-second clips, 50 classes, 5 folds.
//!
//! Layout of the published repository (github.com/karolpiczak/ESC-50): `<root>/meta/esc50.csv` with columns
//! `filename,fold,target,category,esc10,src_file,take`, clips in `<root>/audio/<filename>` (44.1 kHz WAV).
//! Protocol: 5-fold cross-validation; fold `k` (1-based) is the test split, the other four train.

use std::path::Path;

use super::{fold_side, AudioDataset, Csv, FoldSide};
use crate::{AudioError, AudioSource};

/// Classes of the published dataset; metadata with larger targets (one's own clips in this layout)
/// is read with its own number.
pub const NUM_CLASSES: usize = 50;
pub const NUM_FOLDS: u32 = 5;

const HINT: &str =
    "hint: clone or download https://github.com/karolpiczak/ESC-50 (meta/esc50.csv and \
audio/*.wav) into <data-dir>/esc50, or use a Hugging Face parquet copy (data.format: parquet).";

/// Split `train` (folds other than `fold`) or `test` (fold `fold`) of ESC-50 at `root`.
pub fn load_split(root: &Path, split: &str, fold: u32) -> Result<AudioDataset, AudioError> {
    let csv = Csv::read(&root.join("meta/esc50.csv"), HINT)?;
    let side = fold_side(split, &csv.path)?;
    if !(1..=NUM_FOLDS).contains(&fold) {
        return Err(AudioError::InvalidSettings(format!(
            "ESC-50 has folds 1 to {NUM_FOLDS}, not {fold}"
        )));
    }
    let (file_col, fold_col, target_col, cat_col) = (
        csv.column("filename")?,
        csv.column("fold")?,
        csv.column("target")?,
        csv.column("category")?,
    );
    // The published classes, or more when the metadata has more (one's own clips in this
    // layout); counted over every row, so that all folds and splits agree.
    let num_classes = csv.num_classes(target_col)?.max(NUM_CLASSES);
    let mut ds = AudioDataset {
        name: format!("esc50/fold{fold}/{split}"),
        items: Vec::new(),
        labels: Vec::new(),
        num_classes,
        class_names: vec![String::new(); num_classes],
    };
    for row in &csv.rows {
        let target = csv.int(row, target_col)?;
        ds.class_names[target as usize] = csv.field(row, cat_col)?.to_string();
        let in_fold = csv.int(row, fold_col)? == fold;
        if in_fold == (side == FoldSide::Test) {
            ds.items.push(AudioSource::File(
                root.join("audio").join(csv.field(row, file_col)?),
            ));
            ds.labels.push(target);
        }
    }
    ds.non_empty()
}
