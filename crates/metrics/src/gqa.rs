//! GQA accuracy: exact string match of the predicted answer with the balanced question's `answer`,
//! no normalisation, as VL-T5's `GQAEvaluator` (labels `{answer: 1.0}`, score `label[prediction]`).
//! The official `eval.py` reports the same accuracy; its consistency, validity, plausibility and
//! grounding measures are not reproduced here.

/// Fraction of predictions exactly equal to their answer (`NaN` for none).
///
/// # Panics
/// When the two slices differ in length.
pub fn gqa_accuracy(predictions: &[&str], answers: &[&str]) -> f64 {
    assert_eq!(
        predictions.len(),
        answers.len(),
        "gqa_accuracy: {} predictions for {} answers",
        predictions.len(),
        answers.len()
    );
    if predictions.is_empty() {
        return f64::NAN;
    }
    let correct = predictions
        .iter()
        .zip(answers)
        .filter(|(p, a)| p == a)
        .count();
    correct as f64 / predictions.len() as f64
}
