//! How varied a set of generated token sequences is: the distinct-n rate (Li et al., NAACL
//! 2016, for dialogue; used for generated music tokens as a measure of redundancy), the share of
//! the n-grams across all sequences that are distinct. A generator that repeats one phrase scores
//! near 0, one that never repeats an n-gram scores 1.

use std::collections::HashSet;

/// Distinct `n`-grams over all `n`-grams of `sequences` (each sequence's own n-grams, none
/// spanning two sequences); `None` when no sequence is `n` long.
pub fn distinct_ngram_rate(sequences: &[Vec<u32>], n: usize) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let mut distinct = HashSet::new();
    let mut total = 0usize;
    for sequence in sequences {
        for gram in sequence.windows(n) {
            distinct.insert(gram.to_vec());
            total += 1;
        }
    }
    (total > 0).then(|| distinct.len() as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_lower_the_rate() {
        // 1 2 1 2 1: bigrams 12 21 12 21 -> 2 distinct of 4.
        assert_eq!(distinct_ngram_rate(&[vec![1, 2, 1, 2, 1]], 2), Some(0.5));
        // Two sequences sharing one bigram: 12 23 | 12 34 -> 3 of 4.
        assert_eq!(
            distinct_ngram_rate(&[vec![1, 2, 3], vec![1, 2, 4]], 2),
            Some(0.75)
        );
        assert_eq!(distinct_ngram_rate(&[vec![1, 2, 3]], 4), None);
        assert_eq!(distinct_ngram_rate(&[vec![5, 6, 7, 8]], 4), Some(1.0));
    }
}
