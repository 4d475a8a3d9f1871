//! Style adherence of music by its pitches: the pitch-class histogram of semitone-band energies
//! (frames of consecutive MIDI notes, e.g. the `rvq-semitone` codec's 88 bands from A0), and the
//! share of energy outside the best-fitting pentatonic scale. A pentatonic melody of pure tones
//! scores 0 and a diatonic one more, since its fourth and seventh degrees fall outside every
//! pentatonic set; real timbres add their harmonics (the fifth above each note, which for the
//! scale's third is outside it), so a pentatonic style scores low rather than 0. Report it
//! beside the histogram: a generator that collapses to one pitch also scores 0. Key-free: the scale is the
//! rotation that holds the most energy. It can be checked by ear and by theory, as the music
//! issue asks of a style measure.

/// Scale degrees of the major pentatonic scale (do re mi sol la).
pub const PENTATONIC: [usize; 5] = [0, 2, 4, 7, 9];

/// The share of energy per pitch class (C = 0) of `frames`, each holding the energies of
/// consecutive MIDI notes from `lowest_note`; all zeros for silence.
pub fn pitch_class_histogram<F: AsRef<[f32]>>(frames: &[F], lowest_note: usize) -> [f64; 12] {
    let mut histogram = [0f64; 12];
    for frame in frames {
        for (band, &energy) in frame.as_ref().iter().enumerate() {
            histogram[(lowest_note + band) % 12] += f64::from(energy.max(0.0));
        }
    }
    let total: f64 = histogram.iter().sum();
    if total > 0.0 {
        for h in &mut histogram {
            *h /= total;
        }
    }
    histogram
}

/// `1 −` the largest share of `histogram` that one transposition of the pentatonic scale holds;
/// `None` for silence.
pub fn non_pentatonic_fraction(histogram: &[f64; 12]) -> Option<f64> {
    let best = (0..12)
        .map(|root| {
            PENTATONIC
                .iter()
                .map(|d| histogram[(root + d) % 12])
                .sum::<f64>()
        })
        .fold(0.0, f64::max);
    let total: f64 = histogram.iter().sum();
    (total > 0.0).then(|| 1.0 - best / total)
}

/// `histogram` rotated so that its strongest pitch class comes first (the lowest on a tie): a
/// key-free profile, so that clips in different keys can be averaged and compared (pooling
/// their raw histograms would mix the keys into a flat one).
pub fn key_normalised(histogram: &[f64; 12]) -> [f64; 12] {
    let top = (0..12).fold(0, |best, i| {
        if histogram[i] > histogram[best] {
            i
        } else {
            best
        }
    });
    std::array::from_fn(|i| histogram[(top + i) % 12])
}

/// The total variation distance between two pitch-class histograms (half their L1 distance): 0
/// for the same distribution of energy over the pitch classes, 1 for disjoint ones.
pub fn total_variation(a: &[f64; 12], b: &[f64; 12]) -> f64 {
    0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(notes: &[usize]) -> Vec<Vec<f32>> {
        notes
            .iter()
            .map(|&n| {
                let mut frame = vec![0f32; 88];
                frame[n - 21] = 1.0;
                frame
            })
            .collect()
    }

    /// D-major pentatonic notes score 0 whatever the key; a C-major scale leaves its F and B
    /// (2 of 7 notes) outside every pentatonic set; silence has no score.
    #[test]
    fn pentatonic_melodies_score_zero_and_diatonic_ones_do_not() {
        let d_pentatonic = [62, 64, 66, 69, 71, 74, 76, 78];
        let h = pitch_class_histogram(&frames_of(&d_pentatonic), 21);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(h[2], 2.0 / 8.0); // D twice
        assert_eq!(non_pentatonic_fraction(&h), Some(0.0));
        let c_major = [60, 62, 64, 65, 67, 69, 71];
        let h = pitch_class_histogram(&frames_of(&c_major), 21);
        assert!((non_pentatonic_fraction(&h).unwrap() - 2.0 / 7.0).abs() < 1e-12);
        let silent = pitch_class_histogram(&vec![vec![0f32; 88]; 3], 21);
        assert_eq!(non_pentatonic_fraction(&silent), None);
    }

    /// Total variation: 0 against itself, 1 between disjoint classes, half the L1 distance.
    #[test]
    fn total_variation_is_half_the_l1_distance() {
        let c = pitch_class_histogram(&frames_of(&[60]), 21);
        let g = pitch_class_histogram(&frames_of(&[67]), 21);
        let both = pitch_class_histogram(&frames_of(&[60, 67]), 21);
        assert_eq!(total_variation(&c, &c), 0.0);
        assert_eq!(total_variation(&c, &g), 1.0);
        assert!((total_variation(&c, &both) - 0.5).abs() < 1e-12);
    }

    /// A key-normalised profile does not depend on the key.
    #[test]
    fn key_normalised_profiles_ignore_the_key() {
        let c_major = pitch_class_histogram(&frames_of(&[60, 60, 62, 64, 65, 67, 69, 71]), 21);
        let d_major = pitch_class_histogram(&frames_of(&[62, 62, 64, 66, 67, 69, 71, 73]), 21);
        assert_ne!(c_major, d_major);
        assert_eq!(key_normalised(&c_major), key_normalised(&d_major));
        assert!(key_normalised(&c_major)[0] > 0.2);
    }
}
