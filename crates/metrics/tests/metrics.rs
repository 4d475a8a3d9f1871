use peftbench_metrics::{
    accuracy, accuracy_from_correct, bootstrap_ci95, correct_mask, summarize, t_quantile_975,
};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn accuracy_matches_sklearn() {
    // sklearn.metrics.accuracy_score([0, 1, 2, 3], [0, 2, 1, 3]) == 0.5
    assert_eq!(accuracy(&[0, 2, 1, 3], &[0, 1, 2, 3]), 0.5);
    assert_eq!(accuracy(&[1, 1, 1], &[1, 1, 1]), 1.0);
    assert_eq!(accuracy(&[0, 0], &[1, 1]), 0.0);
    // accuracy_score([1, 2, 3], [1, 2, 0]) == 0.6666666666666666
    assert_eq!(accuracy(&[1, 2, 0], &[1, 2, 3]), 2.0 / 3.0);
    assert!(accuracy(&[], &[]).is_nan());
}

#[test]
#[should_panic(expected = "inconsistent numbers of samples")]
fn accuracy_rejects_length_mismatch() {
    accuracy(&[0, 1], &[0]);
}

#[test]
fn correct_mask_and_accuracy_agree() {
    let mask = correct_mask(&[0, 2, 1, 3], &[0, 1, 2, 3]);
    assert_eq!(mask, vec![true, false, false, true]);
    assert_eq!(accuracy_from_correct(&mask), 0.5);
    assert!(accuracy_from_correct(&[]).is_nan());
}

/// SciPy's values: `fixtures/t_intervals_scipy.json`, written by `ci/fixtures/t_quantiles_scipy.py`
/// (regenerate all fixtures with `ci/fixtures/regenerate.sh`).
fn scipy() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/t_intervals_scipy.json")).unwrap()
}

#[test]
fn t_quantiles_match_scipy() {
    // `scipy.stats.t.ppf(0.975, df)`: the table (10 significant digits) for df <= 30, the
    // Cornish-Fisher expansion beyond it.
    let table: Vec<(usize, f64)> = serde_json::from_value(scipy()["t_975"].clone()).unwrap();
    assert!(table.len() > 40);
    let (mut worst_table, mut worst_expansion) = (0.0f64, 0.0f64);
    for (df, q) in table {
        let err = (t_quantile_975(df) - q).abs();
        if df <= 30 {
            worst_table = worst_table.max(err);
        } else {
            worst_expansion = worst_expansion.max(err);
        }
    }
    println!("t quantiles: max |ours - scipy| = {worst_table:e} (df <= 30), {worst_expansion:e} (df > 30)");
    assert!(worst_table < 1e-8, "table: {worst_table}");
    assert!(worst_expansion < 1e-7, "expansion: {worst_expansion}");
    // Monotone decreasing towards the normal quantile.
    for df in 1..500 {
        assert!(t_quantile_975(df) > t_quantile_975(df + 1), "df={df}");
    }
    assert!(t_quantile_975(1_000_000) > 1.959963984540054);
    assert!(close(t_quantile_975(1_000_000), 1.959963984540054, 1e-5));
    assert!(t_quantile_975(0).is_nan());
}

/// Mean, sample standard deviation and the t interval equal NumPy's and
/// `scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=sem)` on 2 to 10 values.
#[test]
fn summaries_match_numpy_and_scipy() {
    #[derive(serde::Deserialize)]
    struct Case {
        values: Vec<f64>,
        mean: f64,
        std: f64,
        ci95: (f64, f64),
    }
    let cases: Vec<Case> = serde_json::from_value(scipy()["summaries"].clone()).unwrap();
    assert!(cases.len() >= 5);
    let mut worst = 0.0f64;
    for case in cases {
        let s = summarize(&case.values);
        assert_eq!(s.n, case.values.len());
        assert!(
            close(s.mean, case.mean, 1e-12 * case.mean.abs()),
            "{:?}",
            case.values
        );
        assert!(
            close(s.std, case.std, 1e-12 * case.std.max(1.0)),
            "{:?}",
            case.values
        );
        let (lo, hi) = s.ci95.unwrap();
        worst = worst
            .max((lo - case.ci95.0).abs())
            .max((hi - case.ci95.1).abs());
    }
    // The t quantiles have 10 significant digits: bounds agree to about 1e-9 of the half-width.
    println!("t intervals: max |ours - scipy| = {worst:e}");
    assert!(worst < 1e-7, "{worst}");
}

#[test]
fn summarize_hand_computed() {
    let s = summarize(&[0.70, 0.72, 0.74]);
    assert_eq!(s.n, 3);
    assert!(close(s.mean, 0.72, 1e-12));
    assert!(close(s.std, 0.02, 1e-12));
    let (lo, hi) = s.ci95.unwrap();
    // 0.72 ± 4.30265273 * 0.02 / sqrt(3)
    assert!(close(lo, 0.6703172457621004, 1e-9), "{lo}");
    assert!(close(hi, 0.7696827542378996, 1e-9), "{hi}");

    let s = summarize(&[1.0, 2.0, 4.0, 7.0]);
    assert!(close(s.mean, 3.5, 1e-12));
    assert!(close(s.std, 2.6457513110645907, 1e-12));
    let (lo, hi) = s.ci95.unwrap();
    assert!(close(lo, -0.7099807419232063, 1e-8), "{lo}");
    assert!(close(hi, 7.709980741923206, 1e-8), "{hi}");
}

#[test]
fn summarize_edge_cases() {
    let one = summarize(&[0.5]);
    assert_eq!((one.n, one.mean, one.std, one.ci95), (1, 0.5, 0.0, None));
    let none = summarize(&[]);
    assert_eq!(none.n, 0);
    assert!(none.mean.is_nan() && none.std.is_nan() && none.ci95.is_none());
    let same = summarize(&[0.3, 0.3]);
    assert_eq!(same.std, 0.0);
    assert_eq!(same.ci95, Some((0.3, 0.3)));
}

#[test]
fn bootstrap_is_deterministic_and_sensible() {
    // 700 of 1000 correct, in a fixed pattern.
    let correct: Vec<bool> = (0..1000).map(|i| i % 10 < 7).collect();
    let a = bootstrap_ci95(&correct, 2000, 42);
    let b = bootstrap_ci95(&correct, 2000, 42);
    assert_eq!(a, b, "same seed, same interval");
    let c = bootstrap_ci95(&correct, 2000, 43);
    assert_ne!(a, c, "another seed, another interval");
    let (lo, hi) = a;
    assert!(lo < 0.7 && 0.7 < hi, "{a:?}");
    // Normal approximation: 0.7 ± 1.96 * sqrt(0.7 * 0.3 / 1000) = 0.7 ± 0.0284.
    let half = 1.959964 * (0.7f64 * 0.3 / 1000.0).sqrt();
    assert!(close(lo, 0.7 - half, 0.006), "{lo} vs {}", 0.7 - half);
    assert!(close(hi, 0.7 + half, 0.006), "{hi} vs {}", 0.7 + half);
}

#[test]
fn bootstrap_degenerate_inputs() {
    assert_eq!(bootstrap_ci95(&[true; 50], 100, 1), (1.0, 1.0));
    assert_eq!(bootstrap_ci95(&[false; 50], 100, 1), (0.0, 0.0));
    let (lo, hi) = bootstrap_ci95(&[], 100, 1);
    assert!(lo.is_nan() && hi.is_nan());
    let (lo, hi) = bootstrap_ci95(&[true, false], 0, 1);
    assert!(lo.is_nan() && hi.is_nan());
}
