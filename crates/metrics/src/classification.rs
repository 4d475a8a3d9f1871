//! Macro-averaged F1 with `sklearn.metrics.f1_score(y_true, y_pred, average="macro")` semantics:
//! the classes are those that occur in the labels or the predictions, each class's F1 is
//! `2 tp / (2 tp + fp + fn)`, and the unweighted mean is taken. A class absent from both never
//! enters (so it cannot hit sklearn's `zero_division` case).

use std::collections::BTreeMap;

/// Macro F1 in `[0, 1]`; NaN for empty input. Panics if the slices differ in length.
pub fn macro_f1(predictions: &[u32], labels: &[u32]) -> f64 {
    assert_eq!(
        predictions.len(),
        labels.len(),
        "macro_f1: {} predictions for {} labels",
        predictions.len(),
        labels.len()
    );
    if labels.is_empty() {
        return f64::NAN;
    }
    // class -> (tp, fp, fn)
    let mut counts: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
    for (&p, &y) in predictions.iter().zip(labels) {
        if p == y {
            counts.entry(y).or_default().0 += 1;
        } else {
            counts.entry(p).or_default().1 += 1;
            counts.entry(y).or_default().2 += 1;
        }
    }
    let sum: f64 = counts
        .values()
        .map(|&(tp, fp, fn_)| 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64)
        .sum();
    sum / counts.len() as f64
}
