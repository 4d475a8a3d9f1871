//! Evaluation metrics and summary statistics for peftbench.
//!
//! * [`accuracy`] follows `sklearn.metrics.accuracy_score` (normalised, unweighted).
//! * [`summarize`] gives the mean, the sample standard deviation (`ddof = 1`) and a Student-t 95%
//!   confidence interval of the mean, the usual way to report a metric over seeds.
//! * [`t_quantile_975`] is the two-sided 95% critical value of Student's t distribution.
//! * [`bootstrap_ci95`] is a seeded percentile bootstrap of accuracy over test examples.
//! * [`macro_f1`] follows `sklearn.metrics.f1_score(average="macro")` ([`classification`]).
//! * [`span_f1`] is entity-level F1 with seqeval's semantics ([`seqeval`]).
//! * [`allocation_recovery`] scores a learned task-to-skill routing against a known one.
//! * [`trec`] holds the ranking measures (MAP, nDCG@k, MRR@k, Recall@k) with `trec_eval` semantics.
//! * [`vqa`] is VQA accuracy with the official answer normalisation (pre-2021 and 2021 variants).
//! * [`gqa`] is GQA exact-match accuracy; [`nlvr2`] NLVR2 accuracy and consistency.
//! * [`captions`] holds pycocoevalcap's PTB tokenisation, BLEU-1..4, ROUGE-L and CIDEr-D.
//! * [`retrieval`] is image↔text Recall@1/5/10 and RSUM from a score matrix.
//! * [`continual`] holds class-incremental learning: PILOT's class order (NumPy's legacy
//!   `permutation`), the stage split and the scores of an accuracy matrix (curve, average
//!   incremental accuracy, last accuracy, forgetting, old/new accuracy).
//!
//! The crate has no heavy dependencies (no tensors): it only sees plain numbers.

pub mod allocation;
pub mod captions;
pub mod classification;
pub mod continual;
pub mod frechet;
pub mod gqa;
pub mod nlvr2;
pub mod pitch_class;
pub mod retrieval;
pub mod seqeval;
pub mod token_diversity;
pub mod vqa;

pub use allocation::allocation_recovery;
pub use classification::macro_f1;
pub use seqeval::{span_f1, SpanScores};

use serde::{Deserialize, Serialize};

pub mod trec;

/// Fraction of predictions equal to their label, as `sklearn.metrics.accuracy_score(labels,
/// predictions)` computes it (`normalize=True`, no sample weights).
///
/// Returns `NaN` for empty inputs (NumPy's mean of an empty array; scikit-learn warns and gives
/// `nan` too).
///
/// # Panics
/// When the two slices differ in length, where scikit-learn raises `ValueError` ("Found input
/// variables with inconsistent numbers of samples").
pub fn accuracy(predictions: &[u32], labels: &[u32]) -> f64 {
    assert_eq!(
        predictions.len(),
        labels.len(),
        "accuracy: found input variables with inconsistent numbers of samples: {} predictions, {} labels",
        predictions.len(),
        labels.len()
    );
    if predictions.is_empty() {
        return f64::NAN;
    }
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    correct as f64 / predictions.len() as f64
}

/// Per-example correctness (`predictions[i] == labels[i]`), the input of [`bootstrap_ci95`].
///
/// # Panics
/// When the two slices differ in length.
pub fn correct_mask(predictions: &[u32], labels: &[u32]) -> Vec<bool> {
    assert_eq!(
        predictions.len(),
        labels.len(),
        "correct_mask: found input variables with inconsistent numbers of samples: {} predictions, {} labels",
        predictions.len(),
        labels.len()
    );
    predictions
        .iter()
        .zip(labels)
        .map(|(p, l)| p == l)
        .collect()
}

/// Fraction of `true` entries; `NaN` when empty.
pub fn accuracy_from_correct(correct: &[bool]) -> f64 {
    if correct.is_empty() {
        return f64::NAN;
    }
    correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64
}

/// Summary of a sample, typically one metric over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Arithmetic mean (`NaN` when `n == 0`).
    pub mean: f64,
    /// Sample standard deviation (`ddof = 1`); `0` when `n == 1`, `NaN` when `n == 0`.
    pub std: f64,
    /// Student-t 95% confidence interval of the mean, `mean ± t(0.975, n-1) · std / √n`;
    /// `None` when `n < 2`.
    pub ci95: Option<(f64, f64)>,
}

/// Mean, sample standard deviation and Student-t 95% interval of `values`
/// (`numpy.mean`, `numpy.std(ddof=1)`, `scipy.stats.t.interval(0.95, n-1, mean, sem)`).
///
/// Non-finite values propagate (a `NaN` in gives a `NaN` mean); filter them first if that is not
/// wanted.
pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary {
            n,
            mean: f64::NAN,
            std: f64::NAN,
            ci95: None,
        };
    }
    // Two passes: stable for the small samples (seeds) this is used for.
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Summary {
            n,
            mean,
            std: 0.0,
            ci95: None,
        };
    }
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    let std = (ss / (n - 1) as f64).sqrt();
    let half = t_quantile_975(n - 1) * std / (n as f64).sqrt();
    Summary {
        n,
        mean,
        std,
        ci95: Some((mean - half, mean + half)),
    }
}

/// 0.975 quantiles of Student's t for 1..=30 degrees of freedom (`scipy.stats.t.ppf(0.975, df)`,
/// computed to 10 significant digits).
const T_975: [f64; 30] = [
    12.70620474,
    4.302652730,
    3.182446305,
    2.776445105,
    2.570581836,
    2.446911851,
    2.364624252,
    2.306004135,
    2.262157163,
    2.228138852,
    2.200985160,
    2.178812830,
    2.160368656,
    2.144786688,
    2.131449546,
    2.119905299,
    2.109815578,
    2.100922040,
    2.093024054,
    2.085963447,
    2.079613845,
    2.073873068,
    2.068657610,
    2.063898562,
    2.059538553,
    2.055529439,
    2.051830516,
    2.048407142,
    2.045229642,
    2.042272456,
];

/// 0.975 quantile of the standard normal distribution.
const Z_975: f64 = 1.959_963_984_540_054;

/// Two-sided 95% critical value of Student's t with `df` degrees of freedom,
/// i.e. `scipy.stats.t.ppf(0.975, df)`.
///
/// Exact table for `df <= 30`; above that the Cornish–Fisher expansion of t about the normal
/// quantile (four correction terms), which is within 1e-7 of the exact value for `df > 30`.
/// Returns `NaN` for `df == 0` (undefined).
pub fn t_quantile_975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T_975[df - 1],
        _ => {
            let z = Z_975;
            let v = df as f64;
            let z2 = z * z;
            let z3 = z2 * z;
            let z5 = z3 * z2;
            let z7 = z5 * z2;
            let z9 = z7 * z2;
            z + (z3 + z) / (4.0 * v)
                + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
                + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v * v * v)
                + (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z)
                    / (92160.0 * v * v * v * v)
        }
    }
}

/// Percentile-bootstrap 95% interval of accuracy over test examples.
///
/// Draws `resamples` samples of `correct.len()` examples with replacement, computes the accuracy of
/// each, and returns the 2.5th and 97.5th percentiles (linear interpolation between order
/// statistics, NumPy's default `percentile` method). Deterministic for a given `seed` on every
/// platform (SplitMix64 generator, unbiased bounded integers), independent of the `rand` crate.
///
/// Returns `(NaN, NaN)` when `correct` is empty or `resamples == 0`.
pub fn bootstrap_ci95(correct: &[bool], resamples: usize, seed: u64) -> (f64, f64) {
    let n = correct.len();
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64(seed);
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| {
            let hits = (0..n)
                .filter(|_| correct[rng.below(n as u64) as usize])
                .count();
            hits as f64 / n as f64
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    (
        percentile_sorted(&stats, 2.5),
        percentile_sorted(&stats, 97.5),
    )
}

/// `numpy.percentile(sorted, q)` (linear method) of an ascending, non-empty slice.
fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// SplitMix64 (Steele, Lea & Flood 2014): small, fast, and fixed forever, so bootstrap intervals
/// stay reproducible whatever version of `rand` the workspace uses.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..bound` (Lemire's multiply-and-reject, unbiased). `bound > 0`.
    fn below(&mut self, bound: u64) -> u64 {
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let m = (self.next_u64() as u128) * (bound as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 97.5]) == [1.075, 3.925]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile_sorted(&v, 2.5) - 1.075).abs() < 1e-12);
        assert!((percentile_sorted(&v, 97.5) - 3.925).abs() < 1e-12);
        assert_eq!(percentile_sorted(&[5.0], 2.5), 5.0);
    }

    #[test]
    fn bounded_integers_cover_range() {
        let mut rng = SplitMix64(7);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[rng.below(5) as usize] += 1;
        }
        for count in seen {
            assert!((850..1150).contains(&count), "{seen:?}");
        }
    }
}
