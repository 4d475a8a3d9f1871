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
}
