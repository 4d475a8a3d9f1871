//! Decoding audio files to mono `f32` samples (symphonia: WAV PCM 8/16/24/32-bit and float, FLAC, OGG
//! Vorbis, MP3) and band-limited resampling (rubato's FFT resampler).
//!
//! Integer PCM is scaled to [-1, 1) as `torchaudio.load` does (`s / 2^(bits-1)`), so filter banks computed
//! from our samples equal those computed from torchaudio's. Channels are mixed down by their mean.

use std::io::Cursor;
use std::path::Path;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::AudioError;

/// Mono audio at a known sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate)
    }

    /// The same audio at `rate` Hz (unchanged when already there).
    pub fn resampled(self, rate: u32, origin: &str) -> Result<Audio, AudioError> {
        if rate == self.sample_rate {
            return Ok(self);
        }
        let samples = resample(&self.samples, self.sample_rate, rate).map_err(|reason| {
            AudioError::CorruptAudio {
                origin: origin.to_string(),
                reason: format!("resampling {} Hz -> {rate} Hz: {reason}", self.sample_rate),
            }
        })?;
        Ok(Audio {
            samples,
            sample_rate: rate,
        })
    }
}

/// Decodes an audio file (format from its content, the extension is a hint) and mixes it down to mono.
pub fn decode_file(path: &Path) -> Result<Audio, AudioError> {
    let file = std::fs::File::open(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path.extension().and_then(|e| e.to_str());
    decode_source(Box::new(file), ext, &path.display().to_string())
}

/// Decodes encoded audio held in memory (e.g. a parquet cell); `origin` names it in errors.
pub fn decode_bytes(bytes: Vec<u8>, ext: Option<&str>, origin: &str) -> Result<Audio, AudioError> {
    decode_source(Box::new(Cursor::new(bytes)), ext, origin)
}

fn decode_source(
    source: Box<dyn MediaSource>,
    ext: Option<&str>,
    origin: &str,
) -> Result<Audio, AudioError> {
    let corrupt = |reason: String| AudioError::CorruptAudio {
        origin: origin.to_string(),
        reason,
    };
    let stream = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = ext {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| corrupt(format!("unrecognised container: {e}")))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| corrupt("no audio track".into()))?;
    let track_id = track.id;
    let sample_rate = track
        .codec_params
        .sample_rate
        .ok_or_else(|| corrupt("no sample rate in the stream header".into()))?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| corrupt(format!("unsupported codec: {e}")))?;

    let mut samples = Vec::new();
    let mut buffer: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(e) => return Err(corrupt(format!("reading packet: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder
            .decode(&packet)
            .map_err(|e| corrupt(format!("decoding packet at {}: {e}", packet.ts())))?;
        let spec = *decoded.spec();
        let channels = spec.channels.count();
        if buffer
            .as_ref()
            .is_none_or(|b| b.capacity() < decoded.capacity() * channels)
        {
            buffer = Some(SampleBuffer::new(decoded.capacity() as u64, spec));
        }
        let buf = buffer.as_mut().expect("allocated above");
        buf.copy_interleaved_ref(decoded);
        let scale = 1.0 / channels as f32;
        samples.extend(
            buf.samples()
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
    }
    if samples.is_empty() {
        return Err(corrupt("no samples".into()));
    }
    Ok(Audio {
        samples,
        sample_rate,
    })
}

/// Resamples mono `samples` from `from` Hz to `to` Hz with a band-limited (FFT, anti-aliased) resampler.
/// The output has `round(len * to / from)` samples, aligned with the input (the filter delay is removed).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == to {
        return Ok(samples.to_vec());
    }
    let expected = (samples.len() as u64 * u64::from(to) + u64::from(from) / 2) / u64::from(from);
    let expected = expected as usize;
    let mut resampler = FftFixedIn::<f32>::new(from as usize, to as usize, 1024, 2, 1)
        .map_err(|e| e.to_string())?;
    let delay = resampler.output_delay();
    let mut out: Vec<f32> = Vec::with_capacity(expected + delay + 2048);
    let mut rest = samples;
    while rest.len() >= resampler.input_frames_next() {
        let n = resampler.input_frames_next();
        let chunk = resampler
            .process(&[&rest[..n]], None)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&chunk[0]);
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        let chunk = resampler
            .process_partial(Some(&[rest][..]), None)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&chunk[0]);
    }
    // Push the samples still held by the filter out with silence.
    while out.len() < delay + expected {
        let chunk = resampler
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&chunk[0]);
    }
    Ok(out[delay..delay + expected].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    #[test]
    fn resampling_keeps_length_phase_and_a_tone_below_nyquist() {
        let input = sine(440.0, 44_100, 44_100);
        let out = resample(&input, 44_100, 16_000).unwrap();
        assert_eq!(out.len(), 16_000);
        let expected = sine(440.0, 16_000, 16_000);
        // Away from the edges the resampled tone is the tone sampled at the new rate.
        let err = out[500..15_500]
            .iter()
            .zip(&expected[500..15_500])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-2, "max error {err}");
    }

    #[test]
    fn resampling_removes_content_above_the_new_nyquist() {
        // 12 kHz cannot be represented at 16 kHz: a band-limited resampler removes it, naive decimation
        // would alias it to 4 kHz at full amplitude.
        let input = sine(12_000.0, 48_000, 48_000);
        let out = resample(&input, 48_000, 16_000).unwrap();
        let rms = (out[1000..15_000].iter().map(|x| x * x).sum::<f32>() / 14_000.0).sqrt();
        assert!(rms < 1e-2, "rms {rms}");
    }
}
