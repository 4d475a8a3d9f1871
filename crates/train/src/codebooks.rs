//! Token streams of several codebooks, as MusicGen models audio: EnCodec gives `K` parallel
//! streams of codes (one per residual quantiser), and the decoder predicts all `K` at each step
//! with codebook `k` delayed by `k` steps, so that codebook `k` of a frame is predicted after
//! codebooks `0..k` of the same frame (MusicGen's "delay" interleaving).
//!
//! * [`delay_codebooks`] lays codes out as transformers' MusicGen training labels: codebook `k`
//!   shifted right by `k`, the first `k` steps the pad token, cut to the input's length (what
//!   `build_delay_pattern_mask` and `apply_delay_pattern_mask` make of codes with a leading pad
//!   column, that column then dropped); [`undelay_codebooks`] takes the frames back where every
//!   codebook is present.
//! * [`per_codebook_cross_entropy`] is the teacher-forced loss per codebook over the positions
//!   whose label is not the pad token (AudioCraft's `ce_q1..K`, transformers' per-codebook terms);
//!   the training loss is their mean.
//!
//! Checked against transformers' `MusicgenForCausalLM` on a random configuration
//! (`ci/fixtures/musicgen_codebooks.py`).

use candle_core::{Result, Tensor};

use crate::loss::{masked_cross_entropy, IGNORE_LABEL};

/// `codes[k][t]` laid out with codebook `k` delayed by `k` steps: `out[k][t] = codes[k][t - k]`
/// for `t >= k`, `pad` before; every row as long as the input's.
pub fn delay_codebooks(codes: &[Vec<u32>], pad: u32) -> Vec<Vec<u32>> {
    codes
        .iter()
        .enumerate()
        .map(|(k, row)| {
            (0..row.len())
                .map(|t| if t >= k { row[t - k] } else { pad })
                .collect()
        })
        .collect()
}

/// The frames of delayed streams in which every codebook is present: `out[k][t] =
/// delayed[k][t + k]` for the first `len - (K - 1)` frames.
pub fn undelay_codebooks(delayed: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let k_count = delayed.len();
    delayed
        .iter()
        .enumerate()
        .map(|(k, row)| {
            let frames = row.len().saturating_sub(k_count.saturating_sub(1));
            row[k..k + frames].to_vec()
        })
        .collect()
}

/// The cross-entropy of each codebook `[K]`: logits `[batch, K, steps, vocab]` against labels
/// `[batch, K, steps]` (u32), over the positions whose label is not `pad`. A codebook without
/// any such position is an error.
pub fn per_codebook_cross_entropy(logits: &Tensor, labels: &Tensor, pad: u32) -> Result<Tensor> {
    let (b, k_count, steps, vocab) = logits.dims4()?;
    let labels = labels.to_dtype(candle_core::DType::U32)?;
    let ignore = Tensor::full(IGNORE_LABEL, labels.shape(), labels.device())?;
    let pads = labels.eq(pad)?;
    let labels = pads.where_cond(&ignore, &labels)?;
    let mut losses = Vec::with_capacity(k_count);
    for k in 0..k_count {
        let codebook_logits = logits.narrow(1, k, 1)?.reshape((b * steps, vocab))?;
        let codebook_labels = labels.narrow(1, k, 1)?.reshape(b * steps)?;
        let labelled = codebook_labels
            .to_vec1::<u32>()?
            .iter()
            .filter(|&&l| l != IGNORE_LABEL)
            .count();
        if labelled == 0 {
            candle_core::bail!("codebook {k} has no label but the pad token {pad}");
        }
        losses.push(masked_cross_entropy(
            &codebook_logits,
            &codebook_labels,
            0.0,
        )?);
    }
    Tensor::stack(&losses, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delaying then undelaying gives back the frames where every codebook is present.
    #[test]
    fn delay_and_undelay_are_inverse_on_the_complete_frames() {
        let codes: Vec<Vec<u32>> = (0..4)
            .map(|k| (0..6).map(|t| (10 * k + t) as u32).collect())
            .collect();
        let delayed = delay_codebooks(&codes, 99);
        assert_eq!(delayed[0], codes[0]);
        assert_eq!(delayed[2], vec![99, 99, 20, 21, 22, 23]);
        let back = undelay_codebooks(&delayed);
        for (k, row) in back.iter().enumerate() {
            assert_eq!(row[..], codes[k][..3], "codebook {k}");
        }
    }
}
