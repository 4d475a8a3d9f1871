//! Image–text retrieval Recall@K in both directions, with clip-benchmark's semantics
//! (`clip_benchmark/metrics/zeroshot_retrieval.py`) and a stated rule for ties.
//!
//! The input is a score matrix with one row per caption (text) and one column per image (for CLIP,
//! `text_embedding · image_embedding`), and for every caption the index of its image.
//! * **Text → image** ("image retrieval", clip-benchmark's `image_retrieval_recall@k`): a caption
//!   scores 1 when its image is among the `k` highest-scoring images of its row; the recall is the
//!   mean over captions.
//! * **Image → text** ("text retrieval", `text_retrieval_recall@k`): an image scores 1 when **any**
//!   of its captions is among the `k` highest-scoring captions of its column; the mean over images
//!   (an image with no caption counts as a miss).
//! * **Ties**: candidates are ranked by score descending, equal scores by index ascending (the lower
//!   index ranks first). clip-benchmark uses `torch.topk`, whose order among ties is unspecified, so
//!   only tie-free matrices are comparable exactly.
//! * **RSUM**: the sum of the six recalls (R@1/5/10 both ways) in percent, as in the retrieval
//!   literature (at most 600).

/// Recalls in `[0, 1]` at K = 1, 5, 10.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrievalRecalls {
    /// Text → image recall at 1, 5 and 10.
    pub text_to_image: [f64; 3],
    /// Image → text recall at 1, 5 and 10.
    pub image_to_text: [f64; 3],
    /// The six recalls summed, in percent.
    pub rsum: f64,
}

/// The cut-offs of [`RetrievalRecalls`].
pub const RECALL_KS: [usize; 3] = [1, 5, 10];

/// Why a score matrix cannot be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetrievalError {
    /// Rows of different lengths.
    #[error("score row {row} has {got} columns, row 0 has {expected}")]
    Ragged {
        row: usize,
        got: usize,
        expected: usize,
    },
    /// A caption's image index outside the columns.
    #[error("caption {caption} belongs to image {image}, but there are only {images} images")]
    ImageOutOfRange {
        caption: usize,
        image: usize,
        images: usize,
    },
    /// Not one image index per caption.
    #[error("{captions} score rows but {labels} caption-to-image indices")]
    LabelCount { captions: usize, labels: usize },
    /// NaN or infinite score.
    #[error("score [{row}][{col}] is not finite ({value})")]
    NonFinite { row: usize, col: usize, value: f64 },
    /// No caption or no image.
    #[error("the score matrix is empty")]
    Empty,
}

/// The 0-based rank of candidate `target` among `scores` (score descending, index ascending).
fn rank_of(scores: impl Iterator<Item = f64> + Clone, target: usize, target_score: f64) -> usize {
    scores
        .enumerate()
        .filter(|&(i, s)| s > target_score || (s == target_score && i < target))
        .count()
}

/// Recall@1/5/10 both ways and RSUM of `scores[caption][image]`, where `caption_image[c]` is the
/// image of caption `c`.
pub fn retrieval_recalls(
    scores: &[Vec<f64>],
    caption_image: &[usize],
) -> Result<RetrievalRecalls, RetrievalError> {
    let captions = scores.len();
    if captions != caption_image.len() {
        return Err(RetrievalError::LabelCount {
            captions,
            labels: caption_image.len(),
        });
    }
    let images = scores.first().map_or(0, Vec::len);
    if captions == 0 || images == 0 {
        return Err(RetrievalError::Empty);
    }
    for (row, r) in scores.iter().enumerate() {
        if r.len() != images {
            return Err(RetrievalError::Ragged {
                row,
                got: r.len(),
                expected: images,
            });
        }
        if let Some((col, &value)) = r.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(RetrievalError::NonFinite { row, col, value });
        }
    }
    for (caption, &image) in caption_image.iter().enumerate() {
        if image >= images {
            return Err(RetrievalError::ImageOutOfRange {
                caption,
                image,
                images,
            });
        }
    }
    // Text → image: the rank of each caption's image in its row.
    let t2i_ranks: Vec<usize> = scores
        .iter()
        .zip(caption_image)
        .map(|(row, &img)| rank_of(row.iter().copied(), img, row[img]))
        .collect();
    // Image → text: the best rank among each image's captions in its column.
    let mut i2t_best = vec![usize::MAX; images];
    for (caption, &img) in caption_image.iter().enumerate() {
        let column = scores.iter().map(|row| row[img]);
        let rank = rank_of(column, caption, scores[caption][img]);
        i2t_best[img] = i2t_best[img].min(rank);
    }
    let recall = |ranks: &[usize], k: usize| {
        ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
    };
    let text_to_image = RECALL_KS.map(|k| recall(&t2i_ranks, k));
    let image_to_text = RECALL_KS.map(|k| recall(&i2t_best, k));
    let rsum = 100.0 * (text_to_image.iter().sum::<f64>() + image_to_text.iter().sum::<f64>());
    Ok(RetrievalRecalls {
        text_to_image,
        image_to_text,
        rsum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three images and five captions (captions 0, 1 → image 0; 2, 3 → image 1; 4 → image 2),
    /// with ties, ranked by hand.
    #[test]
    fn hand_checked_example_with_ties() {
        let scores = vec![
            vec![0.9, 0.1, 0.2], // caption 0 (image 0): rank 0
            vec![0.3, 0.5, 0.1], // caption 1 (image 0): rank 1
            vec![0.4, 0.4, 0.0], // caption 2 (image 1): tie with image 0, which wins: rank 1
            vec![0.2, 0.1, 0.3], // caption 3 (image 1): rank 2
            vec![0.5, 0.6, 0.5], // caption 4 (image 2): tie with image 0 wins, image 1 higher: rank 2
        ];
        let labels = [0, 0, 1, 1, 2];
        let r = retrieval_recalls(&scores, &labels).unwrap();
        assert_eq!(r.text_to_image, [0.2, 1.0, 1.0]);
        // Image columns: image 0 = [.9,.3,.4,.2,.5]: caption 0 first → hit at 1.
        // Image 1 = [.1,.5,.4,.1,.6]: its captions 2 (rank 2) and 3 (.1 ties caption 0's .1, which
        // wins: rank 4) → best rank 2. Image 2 = [.2,.1,0,.3,.5]: caption 4 first.
        assert_eq!(r.image_to_text, [2.0 / 3.0, 1.0, 1.0]);
        assert!((r.rsum - (20.0 + 100.0 + 100.0 + 200.0 / 3.0 + 100.0 + 100.0)).abs() < 1e-9);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(
            retrieval_recalls(&[vec![1.0, 2.0], vec![1.0]], &[0, 1]),
            Err(RetrievalError::Ragged {
                row: 1,
                got: 1,
                expected: 2
            })
        );
        assert!(matches!(
            retrieval_recalls(&[vec![1.0]], &[3]),
            Err(RetrievalError::ImageOutOfRange { image: 3, .. })
        ));
        assert!(matches!(
            retrieval_recalls(&[vec![f64::NAN]], &[0]),
            Err(RetrievalError::NonFinite { .. })
        ));
    }
}
