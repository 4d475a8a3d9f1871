//! Class-incremental learning: PILOT's class order, the stage split ("B0 Inc10") and the usual
//! scores of an accuracy matrix (accuracy curve, average incremental accuracy, last accuracy,
//! forgetting, old/new accuracy).
//!
//! * [`pilot_class_order`] reproduces `np.random.seed(seed); np.random.permutation(n)`, the class
//!   shuffle of PILOT's data manager, bit for bit (NumPy's legacy `RandomState`: MT19937 and its
//!   masked-rejection bounded integers), so a run here sees the same classes in the same stages.
//! * [`stages`] splits the (ordered) classes into stages: a first stage of `init` classes (or
//!   `increment` when `init == 0`, the "B0" protocol), then stages of `increment` classes.
//! * [`IncrementalScores::new`] scores a lower-triangular accuracy matrix `acc[t][j]` (accuracy on
//!   stage `j`'s classes after training stage `t`, `j <= t`) with the test-example count of every
//!   stage.
//!
//! Accuracies may be fractions or percentages: every score is a weighted mean or a difference of
//! them, so it comes out in the unit it went in.

use std::ops::Range;

/// NumPy's legacy global-state class order: `np.random.seed(seed); np.random.permutation(n)`.
///
/// PILOT (`utils/data_manager.py`) draws its class order this way (with `seed = 1993` in its
/// configurations) when `shuffle` is on. The semantics reproduced are those of
/// `numpy.random.RandomState` (unchanged since NumPy 1.17 by NumPy's stream-compatibility policy):
/// * `seed(s)` for an integer `0 <= s < 2³²` seeds MT19937 with the reference `init_genrand(s)`
///   (the 624-word state filled by `x[i] = 1812433253 · (x[i-1] ^ (x[i-1] >> 30)) + i`); a seed
///   outside that range raises in NumPy, hence the `u32` here;
/// * `permutation(n)` is `shuffle(arange(n))`, a Fisher–Yates shuffle from the end: for `i` from
///   `n - 1` down to `1`, swap element `i` with element `j = random_interval(i)`;
/// * `random_interval(max)` draws uniformly from `0..=max` by rejection: `mask` is `max` with all
///   bits below its highest set bit set, and 32-bit outputs are drawn until `output & mask <= max`
///   (64-bit outputs, two 32-bit ones high word first, when `max >= 2³²`).
///
/// Checked against NumPy in the unit tests (fixture from `ci/fixtures/pilot_class_orders.py`).
pub fn pilot_class_order(n_classes: usize, seed: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n_classes).collect();
    let mut mt = Mt19937::new(seed);
    for i in (1..n_classes).rev() {
        let j = mt.interval(i as u64) as usize;
        order.swap(i, j);
    }
    order
}

/// Number of 32-bit words in the MT19937 state.
const MT_N: usize = 624;
/// The middle offset of the MT19937 recurrence.
const MT_M: usize = 397;

/// The 32-bit Mersenne Twister MT19937 (Matsumoto & Nishimura 1998), reference algorithm.
struct Mt19937 {
    state: [u32; MT_N],
    /// Index of the next word to temper; `MT_N` means "regenerate first".
    pos: usize,
}

impl Mt19937 {
    /// The reference `init_genrand(seed)`.
    fn new(seed: u32) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = seed;
        for i in 1..MT_N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, pos: MT_N }
    }

    /// Regenerates the 624 words of the state.
    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..MT_N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % MT_N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + MT_M) % MT_N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// The next tempered 32-bit output (`genrand_int32`).
    fn next_u32(&mut self) -> u32 {
        if self.pos >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Two outputs as one 64-bit integer, the first as the high word.
    fn next_u64(&mut self) -> u64 {
        let high = u64::from(self.next_u32());
        (high << 32) | u64::from(self.next_u32())
    }

    /// Uniform integer in `0..=max` by masked rejection, as NumPy's legacy `random_interval`.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        // All ones from the highest set bit of `max` down.
        let mask = u64::MAX >> max.leading_zeros();
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        }
        loop {
            let value = self.next_u64() & mask;
            if value <= max {
                return value;
            }
        }
    }
}

/// The class ranges of the stages of a class-incremental protocol ("B`init` Inc`increment`"),
/// as positions in the class order.
///
/// The first stage has `init` classes, or `increment` when `init == 0` (the "B0" protocols, e.g.
/// B0 Inc10 on 100 classes is ten stages of ten); every later stage has `increment` classes.
/// Unlike PILOT, which ends with a smaller stage when `increment` does not divide the classes
/// left, an uneven split is an error here.
///
/// # Errors
/// When `n_classes` or `increment` is zero, when the first stage has more than `n_classes`
/// classes, or when `increment` does not divide the classes left after the first stage.
pub fn stages(
    n_classes: usize,
    init: usize,
    increment: usize,
) -> Result<Vec<Range<usize>>, String> {
    if n_classes == 0 {
        return Err("stages: there are no classes to split".to_string());
    }
    if increment == 0 {
        return Err("stages: increment must be at least 1 class".to_string());
    }
    let first = if init == 0 { increment } else { init };
    if first > n_classes {
        return Err(format!(
            "stages: the first stage has {first} classes ({}) but there are only {n_classes}",
            if init == 0 {
                "init 0, so increment"
            } else {
                "init"
            }
        ));
    }
    let left = n_classes - first;
    if !left.is_multiple_of(increment) {
        return Err(format!(
            "stages: increment {increment} does not divide the {left} classes left after a first \
             stage of {first} (of {n_classes})"
        ));
    }
    let later = (first..n_classes)
        .step_by(increment)
        .map(|s| s..s + increment);
    Ok(std::iter::once(0..first).chain(later).collect())
}

/// Why an accuracy matrix cannot be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContinualError {
    /// No stage.
    #[error("the accuracy matrix has no stage")]
    Empty,
    /// Row `t` does not hold exactly the `t + 1` stages seen so far.
    #[error(
        "the accuracy matrix must be lower-triangular: row {row} (after stage {row}) has {got} \
         entries, expected {expected} (stages 0..={row})"
    )]
    NotLowerTriangular {
        row: usize,
        got: usize,
        expected: usize,
    },
    /// Not one example count per stage.
    #[error("{stages} stages in the accuracy matrix but {counts} example counts")]
    CountLength { stages: usize, counts: usize },
    /// A stage without test examples.
    #[error("stage {stage} has 0 test examples; every count must be positive")]
    ZeroCount { stage: usize },
    /// A NaN, infinite or negative accuracy.
    #[error("accuracy [{row}][{col}] is not a finite non-negative number ({value})")]
    Invalid { row: usize, col: usize, value: f64 },
}

/// Class-incremental scores of an accuracy matrix; see [`IncrementalScores::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementalScores {
    /// `A_t`: accuracy on all classes seen after stage `t`, the mean of `acc[t][0..=t]` weighted by
    /// the stages' example counts (PILOT's `cnn_curve["top1"]`).
    pub curve: Vec<f64>,
    /// Average incremental accuracy `Ā`: the mean of [`curve`](Self::curve) (PILOT's "Average
    /// Accuracy").
    pub average: f64,
    /// Last accuracy `A_T`, the last point of the curve.
    pub last: f64,
    /// Average forgetting (Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning", §4):
    /// the mean over stages `j < T` of `max_{t in j..T} acc[t][j] - acc[T][j]` (the best accuracy on
    /// stage `j` before the last stage, minus the last one). Negative terms (backward transfer)
    /// are kept. `None` with a single stage.
    pub forgetting: Option<f64>,
    /// PILOT's forgetting (`trainer.py`: `np.mean((np.max(acctable, axis=1) - acctable[:,
    /// task])[:task])` on the zero-padded, transposed matrix): its maximum also runs over the last
    /// stage, so each term is the one of [`forgetting`](Self::forgetting) clamped at 0. `None` with
    /// a single stage.
    pub forgetting_pilot: Option<f64>,
    /// Accuracy on the old classes (stages `< t`, example-weighted) after stage `t`; `None` at
    /// stage 0, which has no old classes (PILOT reports 0 there).
    pub old: Vec<Option<f64>>,
    /// Accuracy on the new classes (stage `t`) after stage `t`, i.e. `acc[t][t]`.
    pub new: Vec<f64>,
}

impl IncrementalScores {
    /// Scores the lower-triangular accuracy matrix `acc` (row `t` holds `acc[t][0..=t]`, the
    /// accuracies on the classes of stages `0..=t` after training stage `t`) with the number of
    /// test examples of every stage's classes, `counts[j]`.
    ///
    /// With `acc[t][j]` = correct / `counts[j]`, the curve is exactly the accuracy over all test
    /// examples of the seen classes, as PILOT computes it. PILOT's own matrix holds its "grouped"
    /// accuracies (rounded, in percent); they are this matrix when its groups are the stages.
    ///
    /// # Errors
    /// [`ContinualError`] for an empty matrix, a row `t` without exactly `t + 1` entries, a count
    /// per stage missing or zero, or an accuracy that is NaN, infinite or negative.
    pub fn new(acc: &[Vec<f64>], counts: &[usize]) -> Result<Self, ContinualError> {
        if acc.is_empty() {
            return Err(ContinualError::Empty);
        }
        for (row, line) in acc.iter().enumerate() {
            if line.len() != row + 1 {
                return Err(ContinualError::NotLowerTriangular {
                    row,
                    got: line.len(),
                    expected: row + 1,
                });
            }
            if let Some((col, &value)) = line
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(ContinualError::Invalid { row, col, value });
            }
        }
        if counts.len() != acc.len() {
            return Err(ContinualError::CountLength {
                stages: acc.len(),
                counts: counts.len(),
            });
        }
        if let Some(stage) = counts.iter().position(|&c| c == 0) {
            return Err(ContinualError::ZeroCount { stage });
        }

        // Example-weighted mean of `row[stages]`.
        let weighted = |row: &[f64], stages: Range<usize>| -> f64 {
            let total: usize = counts[stages.clone()].iter().sum();
            let hits: f64 = stages.map(|j| counts[j] as f64 * row[j]).sum();
            hits / total as f64
        };
        let curve: Vec<f64> = acc
            .iter()
            .enumerate()
            .map(|(t, row)| weighted(row, 0..t + 1))
            .collect();
        let old = acc
            .iter()
            .enumerate()
            .map(|(t, row)| (t > 0).then(|| weighted(row, 0..t)))
            .collect();
        let new = acc.iter().enumerate().map(|(t, row)| row[t]).collect();

        let last_stage = acc.len() - 1;
        let drops: Vec<f64> = (0..last_stage)
            .map(|j| {
                let best = (j..last_stage)
                    .map(|t| acc[t][j])
                    .fold(f64::NEG_INFINITY, f64::max);
                best - acc[last_stage][j]
            })
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (forgetting, forgetting_pilot) = if drops.is_empty() {
            (None, None)
        } else {
            let clamped: Vec<f64> = drops.iter().map(|d| d.max(0.0)).collect();
            (Some(mean(&drops)), Some(mean(&clamped)))
        };

        Ok(IncrementalScores {
            average: mean(&curve),
            last: curve[last_stage],
            curve,
            forgetting,
            forgetting_pilot,
            old,
            new,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn mt19937_reference_output() {
        // The reference implementation's default seed 5489 (C++ std::mt19937): the first output
        // is 3499211612, and the 10000th is 4123659995.
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        for _ in 1..9999 {
            mt.next_u32();
        }
        assert_eq!(mt.next_u32(), 4_123_659_995);
    }

    #[test]
    fn class_orders_match_numpy() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/pilot_class_orders.json"))
                .unwrap();
        let orders = fixture["orders"].as_array().unwrap();
        assert_eq!(orders.len(), 5);
        for case in orders {
            let n = case["n_classes"].as_u64().unwrap() as usize;
            let seed = case["seed"].as_u64().unwrap() as u32;
            let expected: Vec<usize> = case["order"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(pilot_class_order(n, seed), expected, "n={n} seed={seed}");
        }
    }

    #[test]
    fn class_order_edge_sizes() {
        assert!(pilot_class_order(0, 1993).is_empty());
        assert_eq!(pilot_class_order(1, 1993), vec![0]);
        let mut order = pilot_class_order(37, 7);
        order.sort_unstable();
        assert_eq!(order, (0..37).collect::<Vec<_>>());
    }

    #[test]
    fn stage_splits() {
        // B0 Inc10 on 100 classes: ten stages of ten.
        let b0 = stages(100, 0, 10).unwrap();
        assert_eq!(b0.len(), 10);
        assert_eq!(b0[0], 0..10);
        assert_eq!(b0[9], 90..100);
        // B50 Inc10: 50, then five stages of ten.
        let b50 = stages(100, 50, 10).unwrap();
        assert_eq!(b50, vec![0..50, 50..60, 60..70, 70..80, 80..90, 90..100]);
        // B0 Inc20 on 200 classes (ImageNet-R's usual split) and a single stage.
        assert_eq!(stages(200, 0, 20).unwrap().len(), 10);
        assert_eq!(stages(10, 10, 5).unwrap(), vec![0..10]);
    }

    #[test]
    fn stage_split_errors() {
        let err = stages(100, 0, 7).unwrap_err();
        assert!(err.contains("increment 7 does not divide"), "{err}");
        let err = stages(100, 40, 25).unwrap_err();
        assert!(
            err.contains("increment 25") && err.contains("60 classes left"),
            "{err}"
        );
        assert!(stages(100, 0, 0).unwrap_err().contains("increment"));
        assert!(stages(100, 120, 10).unwrap_err().contains("only 100"));
        assert!(stages(10, 0, 20).unwrap_err().contains("increment"));
        assert!(stages(0, 0, 10).is_err());
    }

    #[test]
    fn scores_of_three_stages() {
        // Counts 100, 50, 50; acc[t][j]:
        //   t=0: 0.90
        //   t=1: 0.80 0.70
        //   t=2: 0.60 0.85 0.50
        let acc = vec![vec![0.90], vec![0.80, 0.70], vec![0.60, 0.85, 0.50]];
        let s = IncrementalScores::new(&acc, &[100, 50, 50]).unwrap();
        // A_0 = 0.90
        // A_1 = (100·0.80 + 50·0.70) / 150 = 115 / 150 = 0.7666…
        // A_2 = (100·0.60 + 50·0.85 + 50·0.50) / 200 = 127.5 / 200 = 0.6375
        let curve = [0.90, 115.0 / 150.0, 0.6375];
        for (got, want) in s.curve.iter().zip(curve) {
            assert!(close(*got, want), "{:?}", s.curve);
        }
        // Ā = (0.90 + 0.7666… + 0.6375) / 3 = (135 + 115 + 95.625) / 450 = 0.768055…
        assert!(close(s.average, 345.625 / 450.0), "{}", s.average);
        assert!(close(s.last, 0.6375));
        // Forgetting, j = 0: max(0.90, 0.80) - 0.60 = 0.30; j = 1: 0.70 - 0.85 = -0.15;
        // mean (0.30 - 0.15) / 2 = 0.075. PILOT clamps -0.15 to 0: (0.30 + 0) / 2 = 0.15.
        assert!(close(s.forgetting.unwrap(), 0.075), "{:?}", s.forgetting);
        assert!(close(s.forgetting_pilot.unwrap(), 0.15));
        // Old: none at t=0; t=1: 0.80; t=2: (100·0.60 + 50·0.85) / 150 = 102.5 / 150.
        assert_eq!(s.old[0], None);
        assert!(close(s.old[1].unwrap(), 0.80));
        assert!(close(s.old[2].unwrap(), 102.5 / 150.0));
        // New: the diagonal.
        assert_eq!(s.new, vec![0.90, 0.70, 0.50]);
    }

    #[test]
    fn forgetting_uses_the_best_earlier_stage() {
        // Percent, equal counts. acc[t][0]: 90, 95, 80, 70 → best before the last stage 95, drop 25.
        // acc[t][1]: 60, 75, 65 → best 75, drop 10. acc[t][2]: 50, 40 → drop 10.
        // Forgetting (25 + 10 + 10) / 3 = 15 (all drops positive, so PILOT's is the same).
        // Curve: 90; (95 + 60) / 2 = 77.5; (80 + 75 + 50) / 3 = 68.333…; (70 + 65 + 40 + 30) / 4 = 51.25.
        let acc = vec![
            vec![90.0],
            vec![95.0, 60.0],
            vec![80.0, 75.0, 50.0],
            vec![70.0, 65.0, 40.0, 30.0],
        ];
        let s = IncrementalScores::new(&acc, &[10; 4]).unwrap();
        assert!(close(s.forgetting.unwrap(), 15.0));
        assert!(close(s.forgetting_pilot.unwrap(), 15.0));
        assert!(close(s.curve[1], 77.5));
        assert!(close(s.curve[2], 205.0 / 3.0));
        assert!(close(s.last, 51.25));
        // Old after the last stage: (70 + 65 + 40) / 3 = 58.333…
        assert!(close(s.old[3].unwrap(), 175.0 / 3.0));
    }

    #[test]
    fn pilot_forgetting_matches_its_formula() {
        // PILOT: zero-pad the rows to a square, transpose, mean over the first T rows of
        // (row max - last column).
        let acc = vec![
            vec![0.9],
            vec![0.7, 0.8],
            vec![0.75, 0.6, 0.55],
            vec![0.72, 0.65, 0.6, 0.4],
        ];
        let n = acc.len();
        let mut table = vec![vec![0.0; n]; n];
        for (t, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                table[j][t] = v;
            }
        }
        let pilot = (0..n - 1)
            .map(|j| table[j].iter().copied().fold(f64::NEG_INFINITY, f64::max) - table[j][n - 1])
            .sum::<f64>()
            / (n - 1) as f64;
        let s = IncrementalScores::new(&acc, &[1; 4]).unwrap();
        assert!(close(s.forgetting_pilot.unwrap(), pilot));
        // Stage 2 gains (0.55 → 0.6), so the standard forgetting is lower.
        assert!(s.forgetting.unwrap() < pilot);
    }

    #[test]
    fn single_stage() {
        let s = IncrementalScores::new(&[vec![0.5]], &[3]).unwrap();
        assert_eq!(s.curve, vec![0.5]);
        assert_eq!((s.average, s.last), (0.5, 0.5));
        assert_eq!((s.forgetting, s.forgetting_pilot), (None, None));
        assert_eq!(s.old, vec![None]);
        assert_eq!(s.new, vec![0.5]);
    }

    #[test]
    fn invalid_matrices() {
        assert_eq!(IncrementalScores::new(&[], &[]), Err(ContinualError::Empty));
        let square = vec![vec![0.9, 0.0], vec![0.8, 0.7]];
        let err = IncrementalScores::new(&square, &[1, 1]).unwrap_err();
        assert_eq!(
            err,
            ContinualError::NotLowerTriangular {
                row: 0,
                got: 2,
                expected: 1
            }
        );
        assert!(err.to_string().contains("lower-triangular"), "{err}");
        let acc = vec![vec![0.9], vec![0.8, 0.7]];
        assert_eq!(
            IncrementalScores::new(&acc, &[1]),
            Err(ContinualError::CountLength {
                stages: 2,
                counts: 1
            })
        );
        let err = IncrementalScores::new(&acc, &[5, 0]).unwrap_err();
        assert_eq!(err, ContinualError::ZeroCount { stage: 1 });
        assert!(err.to_string().contains("positive"), "{err}");
        let nan = vec![vec![0.9], vec![f64::NAN, 0.7]];
        assert!(matches!(
            IncrementalScores::new(&nan, &[1, 1]),
            Err(ContinualError::Invalid { row: 1, col: 0, .. })
        ));
        let negative = vec![vec![-0.1]];
        assert!(matches!(
            IncrementalScores::new(&negative, &[1]),
            Err(ContinualError::Invalid { row: 0, col: 0, .. })
        ));
    }
}
