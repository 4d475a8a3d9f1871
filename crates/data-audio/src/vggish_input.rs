//! VGGish's input (Hershey et al., "CNN Architectures for Large-Scale Audio Classification",
//! ICASSP 2017) as AudioSet's `vggish_input.waveform_to_examples` computes it (the same
//! `mel_features.py` in Google's TensorFlow release and in PyPI `torchvggish`): from 16 kHz mono,
//!
//! - the STFT magnitude of 25 ms frames (400 samples, a periodic Hann window) every 10 ms (160),
//!   zero-padded to a 512-point FFT, no padding of the signal (`1 + (n − 400) / 160` frames);
//! - 64 mel bands from 125 to 7500 Hz: triangles linear in HTK mel (`1127 ln(1 + f / 700)`) over
//!   band edges spaced evenly in mel, the FFT bins' frequencies `linspace(0, 8000, 257)`, the DC
//!   bin weighted zero;
//! - `ln(mel + 0.01)`;
//! - examples of 96 frames (0.96 s) every 96 frames, the incomplete last one dropped.
//!
//! Computed in f64, as numpy does; checked against torchvggish 0.2's `waveform_to_examples`
//! (`ci/fixtures/vggish_torchvggish.py`, `crates/backbones/tests/vggish.rs`).

use realfft::RealFftPlanner;

/// The rate VGGish hears.
pub const SAMPLE_RATE: u32 = 16_000;
/// Frames per example.
pub const EXAMPLE_FRAMES: usize = 96;
/// Mel bands per frame.
pub const MEL_BANDS: usize = 64;
const WINDOW: usize = 400;
const HOP: usize = 160;
const FFT: usize = 512;
const LOWER_HZ: f64 = 125.0;
const UPPER_HZ: f64 = 7500.0;
const LOG_OFFSET: f64 = 0.01;

fn hertz_to_mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// `numpy.linspace(start, stop, n)`: `start + i · step`, the last value exactly `stop`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                stop
            } else {
                start + i as f64 * step
            }
        })
        .collect()
}

/// The `[bins][bands]` weights that turn an STFT magnitude row into mel bands.
fn mel_matrix() -> Vec<[f64; MEL_BANDS]> {
    let bins = FFT / 2 + 1;
    let bin_mel: Vec<f64> = linspace(0.0, f64::from(SAMPLE_RATE) / 2.0, bins)
        .into_iter()
        .map(hertz_to_mel)
        .collect();
    let edges = linspace(
        hertz_to_mel(LOWER_HZ),
        hertz_to_mel(UPPER_HZ),
        MEL_BANDS + 2,
    );
    let mut matrix = vec![[0f64; MEL_BANDS]; bins];
    // The DC bin (row 0) keeps zero weights, as HTK.
    for (row, &mel) in matrix.iter_mut().zip(&bin_mel).skip(1) {
        for (band, w) in row.iter_mut().enumerate() {
            let (lower, center, upper) = (edges[band], edges[band + 1], edges[band + 2]);
            let rising = (mel - lower) / (center - lower);
            let falling = (upper - mel) / (upper - center);
            *w = rising.min(falling).max(0.0);
        }
    }
    matrix
}

/// The log-mel frames `[frames][64]` of 16 kHz `samples`.
pub fn log_mel(samples: &[f32]) -> Vec<[f64; MEL_BANDS]> {
    if samples.len() < WINDOW {
        return Vec::new();
    }
    let frames = 1 + (samples.len() - WINDOW) / HOP;
    let window: Vec<f64> = (0..WINDOW)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI / WINDOW as f64 * i as f64).cos())
        .collect();
    let matrix = mel_matrix();
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(FFT);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut out = Vec::with_capacity(frames);
    for f in 0..frames {
        let frame = &samples[f * HOP..f * HOP + WINDOW];
        input.fill(0.0);
        for ((x, &s), &w) in input.iter_mut().zip(frame).zip(&window) {
            *x = f64::from(s) * w;
        }
        fft.process(&mut input, &mut spectrum)
            .expect("buffers come from the plan");
        let mut mel = [0f64; MEL_BANDS];
        for (c, row) in spectrum.iter().zip(&matrix) {
            let magnitude = c.norm();
            for (m, w) in mel.iter_mut().zip(row) {
                *m += magnitude * w;
            }
        }
        out.push(mel.map(|m| (m + LOG_OFFSET).ln()));
    }
    out
}

/// VGGish's examples of 16 kHz `samples`: `[examples][96 · 64]` (frame-major), f32 as the network
/// reads them; none for audio under 0.975 s.
pub fn examples(samples: &[f32]) -> Vec<Vec<f32>> {
    log_mel(samples)
        .chunks_exact(EXAMPLE_FRAMES)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|frame| frame.iter().map(|&v| v as f32))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_example_counts_follow_the_reference() {
        // 2.5 s: 1 + (40000 − 400) / 160 = 248 frames, two whole examples.
        let audio: Vec<f32> = (0..40_000).map(|i| (i as f32 * 0.07).sin() * 0.3).collect();
        assert_eq!(log_mel(&audio).len(), 248);
        let whole = examples(&audio);
        assert_eq!(whole.len(), 2);
        assert!(whole.iter().all(|e| e.len() == EXAMPLE_FRAMES * MEL_BANDS));
        assert!(examples(&audio[..15_000]).is_empty());
    }

    #[test]
    fn mel_triangles_peak_at_one_and_skip_dc() {
        let m = mel_matrix();
        assert!(m[0].iter().all(|&w| w == 0.0));
        for band in 0..MEL_BANDS {
            let peak = m.iter().map(|row| row[band]).fold(0f64, f64::max);
            assert!(peak > 0.0 && peak <= 1.0, "band {band}: {peak}");
        }
    }
}
