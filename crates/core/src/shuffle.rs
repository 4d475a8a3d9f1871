//! The one definition of an epoch's example order, shared by every batch source (in memory,
//! streamed from disk, cached features), so the same seed visits examples in the same order
//! whichever source a run happens to use.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded random permutation of `0..n`: Fisher-Yates driven by ChaCha8 (same seed, same order
/// on every platform).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i as u64) as usize;
        idx.swap(i, j);
    }
    idx
}
