//! Kaldi log mel filter banks, computed exactly as `torchaudio.compliance.kaldi.fbank` does (the features
//! of the Audio Spectrogram Transformer, Gong et al. 2021, and of HF's `ASTFeatureExtractor`).
//!
//! Per frame of `frame_length` ms every `frame_shift` ms (only frames that fit: Kaldi's `snip_edges`):
//! subtract the frame's mean (DC removal), pre-emphasise `x[i] - 0.97 x[i-1]` (the first sample against
//! itself), multiply by the window (Hann with `periodic=False`, i.e. `0.5 - 0.5 cos(2 pi n / (N - 1))`),
//! zero-pad to the next power of two, real FFT, power spectrum, triangular filters on Kaldi's mel scale
//! `1127 ln(1 + f / 700)` from `low_freq` to `high_freq` (0 = Nyquist; the Nyquist FFT bin gets no weight),
//! then `ln(max(energy, f32::EPSILON))`. Dither is 0 and no energy column is added (`use_energy=false`,
//! so `htk_compat` changes nothing), which are the AST settings.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use crate::AudioError;

/// Window applied to each frame (Kaldi's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowType {
    /// `0.5 - 0.5 cos(2 pi n / (N - 1))` (torch `hann_window(periodic=False)`); AST's choice.
    Hanning,
    /// `0.54 - 0.46 cos(2 pi n / (N - 1))`.
    Hamming,
    /// Kaldi's default, the Hann window to the power 0.85.
    Povey,
    Rectangular,
}

/// Filter-bank settings, named as `torchaudio.compliance.kaldi.fbank`'s arguments. Defaults are AST's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FbankConfig {
    /// Sample rate the waveform must have, Hz.
    pub sample_frequency: f64,
    /// Frame length in milliseconds (25 ms = 400 samples at 16 kHz).
    pub frame_length: f64,
    /// Frame shift in milliseconds (10 ms = 160 samples at 16 kHz).
    pub frame_shift: f64,
    pub num_mel_bins: usize,
    /// Lowest filter edge, Hz.
    pub low_freq: f64,
    /// Highest filter edge, Hz; zero or negative counts from the Nyquist frequency.
    pub high_freq: f64,
    pub preemphasis_coefficient: f32,
    pub remove_dc_offset: bool,
    pub window_type: WindowType,
    /// Zero-pad each frame to the next power of two before the FFT (400 -> 512).
    pub round_to_power_of_two: bool,
}

impl Default for FbankConfig {
    fn default() -> Self {
        Self {
            sample_frequency: 16_000.0,
            frame_length: 25.0,
            frame_shift: 10.0,
            num_mel_bins: 128,
            low_freq: 20.0,
            high_freq: 0.0,
            preemphasis_coefficient: 0.97,
            remove_dc_offset: true,
            window_type: WindowType::Hanning,
            round_to_power_of_two: true,
        }
    }
}

impl FbankConfig {
    /// Samples per frame.
    pub fn window_size(&self) -> usize {
        (self.sample_frequency * self.frame_length * 1e-3) as usize
    }

    /// Samples between frame starts.
    pub fn window_shift(&self) -> usize {
        (self.sample_frequency * self.frame_shift * 1e-3) as usize
    }

    /// FFT length.
    pub fn padded_window_size(&self) -> usize {
        let n = self.window_size();
        if self.round_to_power_of_two {
            n.next_power_of_two()
        } else {
            n
        }
    }

    /// Frames produced for `num_samples` samples (0 when shorter than one frame).
    pub fn num_frames(&self, num_samples: usize) -> usize {
        let (size, shift) = (self.window_size(), self.window_shift());
        if num_samples < size {
            0
        } else {
            1 + (num_samples - size) / shift
        }
    }
}

/// One triangular mel filter: weights for FFT bins `first..first + weights.len()`.
#[derive(Debug, Clone)]
struct MelFilter {
    first: usize,
    weights: Vec<f32>,
}

/// A prepared filter-bank extractor (window, mel filters and FFT plan computed once; shareable across
/// threads).
#[derive(Clone)]
pub struct Fbank {
    cfg: FbankConfig,
    window: Vec<f32>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank").field("cfg", &self.cfg).finish()
    }
}

fn mel_scale(freq: f64) -> f64 {
    1127.0 * (1.0 + freq / 700.0).ln()
}

impl Fbank {
    pub fn new(cfg: FbankConfig) -> Result<Self, AudioError> {
        let invalid = |m: String| Err(AudioError::InvalidSettings(m));
        let (size, shift, padded) = (
            cfg.window_size(),
            cfg.window_shift(),
            cfg.padded_window_size(),
        );
        if size < 2 || shift == 0 {
            return invalid(format!(
                "frame length {size} and shift {shift} samples must be at least 2 and 1"
            ));
        }
        if padded % 2 != 0 {
            return invalid(format!(
                "the FFT length {padded} must be even (set round_to_power_of_two)"
            ));
        }
        if cfg.num_mel_bins <= 3 {
            return invalid(format!("num_mel_bins {} must exceed 3", cfg.num_mel_bins));
        }
        if !(0.0..=1.0).contains(&cfg.preemphasis_coefficient) {
            return invalid("preemphasis_coefficient must be in [0, 1]".into());
        }
        let nyquist = 0.5 * cfg.sample_frequency;
        let high = if cfg.high_freq <= 0.0 {
            cfg.high_freq + nyquist
        } else {
            cfg.high_freq
        };
        if !(0.0 <= cfg.low_freq && cfg.low_freq < nyquist && 0.0 < high && high <= nyquist)
            || cfg.low_freq >= high
        {
            return invalid(format!(
                "low_freq {} and high_freq {high} must satisfy 0 <= low < high <= Nyquist {nyquist}",
                cfg.low_freq
            ));
        }

        let denom = (size - 1) as f64;
        let tau = 2.0 * std::f64::consts::PI;
        let window = (0..size)
            .map(|n| {
                let hann = 0.5 - 0.5 * (tau * n as f64 / denom).cos();
                (match cfg.window_type {
                    WindowType::Hanning => hann,
                    WindowType::Hamming => 0.54 - 0.46 * (tau * n as f64 / denom).cos(),
                    WindowType::Povey => hann.powf(0.85),
                    WindowType::Rectangular => 1.0,
                }) as f32
            })
            .collect();

        // Kaldi's triangles: equally spaced on the mel scale, edges at neighbouring centres.
        let num_fft_bins = padded / 2;
        let bin_width = cfg.sample_frequency / padded as f64;
        let (mel_low, mel_high) = (mel_scale(cfg.low_freq), mel_scale(high));
        let delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1) as f64;
        let filters = (0..cfg.num_mel_bins)
            .map(|b| {
                let left = mel_low + b as f64 * delta;
                let center = mel_low + (b as f64 + 1.0) * delta;
                let right = mel_low + (b as f64 + 2.0) * delta;
                let weights: Vec<(usize, f32)> = (0..num_fft_bins)
                    .filter_map(|k| {
                        let mel = mel_scale(bin_width * k as f64);
                        let up = (mel - left) / (center - left);
                        let down = (right - mel) / (right - center);
                        let w = up.min(down);
                        (w > 0.0).then_some((k, w as f32))
                    })
                    .collect();
                MelFilter {
                    first: weights.first().map_or(0, |&(k, _)| k),
                    weights: weights.into_iter().map(|(_, w)| w).collect(),
                }
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(padded);
        Ok(Self {
            cfg,
            window,
            filters,
            fft,
        })
    }

    pub fn config(&self) -> &FbankConfig {
        &self.cfg
    }

    pub fn num_mel_bins(&self) -> usize {
        self.cfg.num_mel_bins
    }

    /// Log mel energies `[frames, num_mel_bins]`, row-major, for `samples` at the configured rate.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let frames = self.cfg.num_frames(samples.len());
        let mut out = vec![0f32; frames * self.cfg.num_mel_bins];
        let mut scratch = Scratch::new(self);
        for (f, row) in out.chunks_exact_mut(self.cfg.num_mel_bins).enumerate() {
            let start = f * self.cfg.window_shift();
            self.frame(
                &samples[start..start + self.cfg.window_size()],
                &mut scratch,
                row,
            );
        }
        out
    }

    fn frame(&self, frame: &[f32], s: &mut Scratch, out: &mut [f32]) {
        let n = frame.len();
        let mean = if self.cfg.remove_dc_offset {
            frame.iter().sum::<f32>() / n as f32
        } else {
            0.0
        };
        let a = self.cfg.preemphasis_coefficient;
        let mut prev = frame[0] - mean;
        for ((out, &sample), &w) in s.input.iter_mut().zip(frame).zip(&self.window) {
            let x = sample - mean;
            *out = (x - a * prev) * w;
            prev = x;
        }
        s.input[n..].fill(0.0);
        self.fft
            .process_with_scratch(&mut s.input, &mut s.spectrum, &mut s.fft_scratch)
            .expect("buffer sizes come from the plan");
        for (p, c) in s.power.iter_mut().zip(&s.spectrum) {
            *p = c.norm_sqr();
        }
        for (o, filter) in out.iter_mut().zip(&self.filters) {
            let power = &s.power[filter.first..filter.first + filter.weights.len()];
            let energy: f32 = power.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
            *o = energy.max(f32::EPSILON).ln();
        }
    }
}

/// Per-call buffers (kept out of `Fbank` so one extractor serves many threads).
struct Scratch {
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
    fft_scratch: Vec<realfft::num_complex::Complex<f32>>,
}

impl Scratch {
    fn new(fbank: &Fbank) -> Self {
        Self {
            input: fbank.fft.make_input_vec(),
            spectrum: fbank.fft.make_output_vec(),
            power: vec![0.0; fbank.fft.len() / 2 + 1],
            fft_scratch: fbank.fft.make_scratch_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ast_settings_give_400_sample_frames_every_160_into_a_512_fft() {
        let cfg = FbankConfig::default();
        assert_eq!(
            (
                cfg.window_size(),
                cfg.window_shift(),
                cfg.padded_window_size()
            ),
            (400, 160, 512)
        );
        // 10 s at 16 kHz: 1 + (160000 - 400) / 160 = 998 frames, as torchaudio gives.
        assert_eq!(cfg.num_frames(160_000), 998);
        assert_eq!(cfg.num_frames(399), 0);
    }

    #[test]
    fn silence_hits_the_log_floor() {
        let fbank = Fbank::new(FbankConfig::default()).unwrap();
        let out = fbank.compute(&[0.0; 800]);
        assert_eq!(out.len(), 3 * 128);
        assert!(out.iter().all(|&v| v == f32::EPSILON.ln()));
    }

    #[test]
    fn bad_settings_are_rejected() {
        let cfg = FbankConfig {
            num_mel_bins: 3,
            ..Default::default()
        };
        assert!(Fbank::new(cfg).is_err());
        let cfg = FbankConfig {
            low_freq: 9000.0,
            ..Default::default()
        };
        assert!(Fbank::new(cfg).is_err());
    }
}
