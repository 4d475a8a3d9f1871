//! UrbanSound8K (Salamon, Jacoby and Bello, 2014): 8732 clips up to 4 s, 10 classes, 10 predefined folds.
//!
//! Layout of the published archive: `<root>/metadata/UrbanSound8K.csv` with columns
//! `slice_file_name,fsID,start,end,salience,fold,classID,class`, clips in
//! `<root>/audio/fold<N>/<slice_file_name>` (WAV at various rates and bit depths). Protocol: 10-fold
//! cross-validation on the given folds (never reshuffled: slices of one recording share a fold).

use std::path::Path;

use super::{fold_side, AudioDataset, Csv, FoldSide};
use crate::{AudioError, AudioSource};

/// Classes of the published dataset; metadata with larger class ids (one's own clips in this
/// layout) is read with its own number.
pub const NUM_CLASSES: usize = 10;
pub const NUM_FOLDS: u32 = 10;

const HINT: &str = "hint: download UrbanSound8K from https://urbansounddataset.weebly.com/urbansound8k.html \
and extract it so that <data-dir>/urbansound8k/metadata/UrbanSound8K.csv and audio/fold1..fold10 exist.";

/// Split `train` (folds other than `fold`) or `test` (fold `fold`) of UrbanSound8K at `root`.
pub fn load_split(root: &Path, split: &str, fold: u32) -> Result<AudioDataset, AudioError> {
    let csv = Csv::read(&root.join("metadata/UrbanSound8K.csv"), HINT)?;
    let side = fold_side(split, &csv.path)?;
    if !(1..=NUM_FOLDS).contains(&fold) {
        return Err(AudioError::InvalidSettings(format!(
            "UrbanSound8K has folds 1 to {NUM_FOLDS}, not {fold}"
        )));
    }
    let (file_col, fold_col, class_col, name_col) = (
        csv.column("slice_file_name")?,
        csv.column("fold")?,
        csv.column("classID")?,
        csv.column("class")?,
    );
    // The published classes, or more when the metadata has more (one's own clips in this
    // layout); counted over every row, so that all folds and splits agree.
    let num_classes = csv.num_classes(class_col)?.max(NUM_CLASSES);
    let mut ds = AudioDataset {
        name: format!("urbansound8k/fold{fold}/{split}"),
        items: Vec::new(),
        labels: Vec::new(),
        num_classes,
        class_names: vec![String::new(); num_classes],
    };
    for row in &csv.rows {
        let class = csv.int(row, class_col)?;
        ds.class_names[class as usize] = csv.field(row, name_col)?.to_string();
        let row_fold = csv.int(row, fold_col)?;
        if (row_fold == fold) == (side == FoldSide::Test) {
            ds.items.push(AudioSource::File(
                root.join("audio")
                    .join(format!("fold{row_fold}"))
                    .join(csv.field(row, file_col)?),
            ));
            ds.labels.push(class);
        }
    }
    ds.non_empty()
}
