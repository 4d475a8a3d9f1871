//! BERT's masked-language-model corruption (Devlin et al., 2019, section 3.1): 15% of the real
//! (non-special, non-padding) tokens are selected; of those 80% become the mask token, 10% a random
//! token and 10% stay unchanged. Only the selected positions carry a label (the original id).

use rand::Rng;

use crate::alignment::NO_LABEL;

/// Settings of the corruption; defaults follow BERT.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    pub probability: f64,
    /// Of the selected tokens, the share replaced by the mask token.
    pub mask_share: f64,
    /// Of the selected tokens, the share replaced by a random token (the rest stay).
    pub random_share: f64,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            probability: 0.15,
            mask_share: 0.8,
            random_share: 0.1,
        }
    }
}

/// Corrupts one row of token ids in place and returns its labels. `maskable[i]` is false for
/// special tokens and padding; random replacements are drawn from `0..vocab_size` excluding
/// `special_ids` so no special token appears mid-text.
pub fn mask_tokens(
    ids: &mut [u32],
    maskable: &[bool],
    mask_id: u32,
    vocab_size: u32,
    special_ids: &[u32],
    cfg: &MaskingConfig,
    rng: &mut impl Rng,
) -> Vec<u32> {
    let mut labels = vec![NO_LABEL; ids.len()];
    for i in 0..ids.len() {
        if !maskable[i] || !rng.random_bool(cfg.probability) {
            continue;
        }
        labels[i] = ids[i];
        let roll: f64 = rng.random();
        if roll < cfg.mask_share {
            ids[i] = mask_id;
        } else if roll < cfg.mask_share + cfg.random_share {
            ids[i] = loop {
                let t = rng.random_range(0..vocab_size);
                if !special_ids.contains(&t) {
                    break t;
                }
            };
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn rates_follow_bert() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let n = 200_000;
        let original: Vec<u32> = (0..n).map(|i| 10 + (i % 50) as u32).collect();
        let mut ids = original.clone();
        let mut maskable = vec![true; n];
        maskable[0] = false;
        let labels = mask_tokens(
            &mut ids,
            &maskable,
            3,
            60,
            &[0, 1, 2, 3],
            &MaskingConfig::default(),
            &mut rng,
        );
        assert_eq!(labels[0], NO_LABEL);
        let selected: Vec<usize> = (0..n).filter(|&i| labels[i] != NO_LABEL).collect();
        let rate = selected.len() as f64 / n as f64;
        assert!((rate - 0.15).abs() < 0.005, "selection rate {rate}");
        let masked =
            selected.iter().filter(|&&i| ids[i] == 3).count() as f64 / selected.len() as f64;
        let kept = selected.iter().filter(|&&i| ids[i] == original[i]).count() as f64
            / selected.len() as f64;
        assert!((masked - 0.8).abs() < 0.01, "mask share {masked}");
        // Unchanged: 10% kept plus random draws that hit the original token (1/56 of 10%).
        assert!((kept - 0.1 - 0.1 / 56.0).abs() < 0.01, "kept share {kept}");
        for &i in &selected {
            assert_eq!(labels[i], original[i]);
            assert!(ids[i] > 2, "no special token drawn");
        }
        let untouched = (0..n)
            .filter(|&i| labels[i] == NO_LABEL)
            .all(|i| ids[i] == original[i]);
        assert!(untouched);
    }
}
