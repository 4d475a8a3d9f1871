//! Deterministic batching of dataset indices.
//!
//! [`shuffled_batches`] permutes `0..n` with a Fisher-Yates shuffle driven by ChaCha8 seeded with `seed`
//! (same seed, same order on every platform), then cuts the permutation into batches.
//! [`sequential_batches`] keeps dataset order (evaluation).

pub use peftbench_core::shuffle::permutation;

/// `0..n` shuffled with `seed` and cut into batches of `batch_size`; the last, smaller batch is dropped
/// when `drop_last`. `batch_size` 0 is treated as 1.
pub fn shuffled_batches(
    n: usize,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
) -> Vec<Vec<usize>> {
    chunk(permutation(n, seed), batch_size, drop_last)
}

/// `0..n` in order, cut into batches of `batch_size` (the last one may be smaller).
pub fn sequential_batches(n: usize, batch_size: usize) -> Vec<Vec<usize>> {
    chunk((0..n).collect(), batch_size, false)
}

fn chunk(idx: Vec<usize>, batch_size: usize, drop_last: bool) -> Vec<Vec<usize>> {
    let bs = batch_size.max(1);
    idx.chunks(bs)
        .filter(|c| !drop_last || c.len() == bs)
        .map(|c| c.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_is_deterministic_permutation() {
        let a = shuffled_batches(103, 10, 7, false);
        let b = shuffled_batches(103, 10, 7, false);
        assert_eq!(a, b);
        assert_eq!(a.len(), 11);
        assert_eq!(a.last().unwrap().len(), 3);
        let mut all: Vec<usize> = a.concat();
        assert_ne!(all, (0..103).collect::<Vec<_>>(), "should be shuffled");
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_ne!(shuffled_batches(103, 10, 8, false), a);
        let d = shuffled_batches(103, 10, 7, true);
        assert_eq!(d.len(), 10);
        assert!(d.iter().all(|b| b.len() == 10));
        assert_eq!(d[..], a[..10]);
    }

    #[test]
    fn sequential_and_edge_cases() {
        assert_eq!(
            sequential_batches(5, 2),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert!(sequential_batches(0, 4).is_empty());
        assert!(shuffled_batches(0, 4, 1, false).is_empty());
        assert_eq!(shuffled_batches(3, 0, 1, false).len(), 3);
    }
}
