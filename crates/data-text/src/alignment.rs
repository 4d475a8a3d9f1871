//! From words to subword tokens: token-classification labels on the first subword of each word
//! (the other subwords, special tokens and padding carry no label, as in HF's token-classification
//! examples with `label_all_tokens=False`), and back from token predictions to word tags.

/// Marks a position without a label (equal to `peftbench_train::IGNORE_LABEL`).
pub const NO_LABEL: u32 = u32::MAX;

/// Token labels for one row: `word_labels[w]` on the first token of word `w`, [`NO_LABEL`]
/// elsewhere. `word_ids` comes from the tokenizer (`None` for special tokens and padding). Words
/// cut off by truncation get no token and so no label.
pub fn first_subword_labels(word_ids: &[Option<u32>], word_labels: &[u32]) -> Vec<u32> {
    let mut previous = None;
    word_ids
        .iter()
        .map(|&w| {
            let label = match w {
                Some(w) if Some(w) != previous => {
                    word_labels.get(w as usize).copied().unwrap_or(NO_LABEL)
                }
                _ => NO_LABEL,
            };
            previous = w;
            label
        })
        .collect()
}

/// Word-level predictions from token-level ones: each word takes its first token's prediction;
/// words without a token (truncated) get `fallback` (the `O` tag's id), so spans stay aligned
/// with the gold words.
pub fn word_predictions(
    word_ids: &[Option<u32>],
    token_predictions: &[u32],
    num_words: usize,
    fallback: u32,
) -> Vec<u32> {
    let mut out = vec![None; num_words];
    for (&w, &p) in word_ids.iter().zip(token_predictions) {
        if let Some(w) = w {
            let slot = &mut out[w as usize];
            if slot.is_none() {
                *slot = Some(p);
            }
        }
    }
    out.into_iter().map(|p| p.unwrap_or(fallback)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_go_to_first_subwords_only() {
        // [CLS] Ab ##uja is [SEP] [PAD]
        let words = [None, Some(0), Some(0), Some(1), None, None];
        let labels = first_subword_labels(&words, &[3, 0]);
        assert_eq!(labels, [NO_LABEL, 3, NO_LABEL, 0, NO_LABEL, NO_LABEL]);
        let back = word_predictions(&words, &[9, 3, 4, 0, 9, 9], 3, 0);
        assert_eq!(
            back,
            [3, 0, 0],
            "the third word was truncated and falls back to O"
        );
    }
}
