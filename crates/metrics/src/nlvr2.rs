//! NLVR2 accuracy and consistency with the semantics of the official evaluation (lil-lab/nlvr,
//! `nlvr2/eval/metrics.py`).
//!
//! * **Accuracy**: fraction of examples whose predicted truth value equals the label.
//! * **Consistency**: an identifier is `split-setid-pairid-sentid`; the examples of one sentence are
//!   those whose identifiers agree once the pair id is blanked (`split-setid--sentid`). Consistency
//!   is the fraction of such unique sentences whose every example is predicted correctly.

use std::collections::BTreeMap;

/// One scored example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nlvr2Example {
    /// `split-setid-pairid-sentid`, e.g. `dev-850-0-0`.
    pub identifier: String,
    /// The gold truth value.
    pub label: bool,
    /// The predicted truth value.
    pub prediction: bool,
}

/// Accuracy and consistency in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nlvr2Scores {
    /// Fraction of examples predicted correctly (`NaN` for none).
    pub accuracy: f64,
    /// Fraction of unique sentences with every example correct (`NaN` for none).
    pub consistency: f64,
    /// Number of examples.
    pub examples: usize,
    /// Number of unique sentences.
    pub sentences: usize,
}

/// Error for an identifier that is not `split-setid-pairid-sentid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("NLVR2 identifier {0:?} is not split-setid-pairid-sentid (four fields separated by '-')")]
pub struct BadIdentifier(pub String);

/// The sentence key of an identifier: the pair id blanked (`dev-850-0-0` → `dev-850--0`).
pub fn sentence_key(identifier: &str) -> Result<String, BadIdentifier> {
    let parts: Vec<&str> = identifier.split('-').collect();
    match parts.as_slice() {
        [split, set, _pair, sent] => Ok(format!("{split}-{set}--{sent}")),
        _ => Err(BadIdentifier(identifier.to_string())),
    }
}

/// Accuracy and consistency of `examples`.
pub fn nlvr2_scores(examples: &[Nlvr2Example]) -> Result<Nlvr2Scores, BadIdentifier> {
    let mut all_correct: BTreeMap<String, bool> = BTreeMap::new();
    let mut correct = 0usize;
    for ex in examples {
        let ok = ex.label == ex.prediction;
        correct += usize::from(ok);
        *all_correct
            .entry(sentence_key(&ex.identifier)?)
            .or_insert(true) &= ok;
    }
    let ratio = |num: usize, den: usize| {
        if den == 0 {
            f64::NAN
        } else {
            num as f64 / den as f64
        }
    };
    let consistent = all_correct.values().filter(|&&c| c).count();
    Ok(Nlvr2Scores {
        accuracy: ratio(correct, examples.len()),
        consistency: ratio(consistent, all_correct.len()),
        examples: examples.len(),
        sentences: all_correct.len(),
    })
}
