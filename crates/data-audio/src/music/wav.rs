//! Writing mono clips as 16-bit PCM WAV files (through `hound`), so generated and rendered
//! music can be listened to and read back by the same decoding path as any dataset's audio.

use std::path::Path;

use crate::AudioError;

/// Writes `samples` (mono, nominally in [-1, 1]; louder values are clipped) at `sample_rate` as
/// 16-bit PCM, creating the file's folder.
pub fn write_wav(path: &Path, samples: &[f32], sample_rate: u32) -> Result<(), AudioError> {
    let failed = |e: &dyn std::fmt::Display| AudioError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(&e))?;
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(|e| failed(&e))?;
    for &s in samples {
        let s = if s.is_finite() {
            s.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        writer
            .write_sample((s * f32::from(i16::MAX)).round() as i16)
            .map_err(|e| failed(&e))?;
    }
    writer.finalize().map_err(|e| failed(&e))
}

/// `samples` scaled so that their largest magnitude is `peak` (silence stays silent).
pub fn normalise_peak(samples: &[f32], peak: f32) -> Vec<f32> {
    let max = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    if max == 0.0 || !max.is_finite() {
        return samples.to_vec();
    }
    samples.iter().map(|s| s * peak / max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A written clip decodes to the same samples, to 16-bit precision.
    #[test]
    fn a_written_clip_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/clip.wav");
        let samples: Vec<f32> = (0..3200).map(|i| (i as f32 * 0.05).sin() * 0.8).collect();
        write_wav(&path, &samples, 32_000).unwrap();
        let decoded = crate::decode_file(&path).unwrap();
        assert_eq!(decoded.sample_rate, 32_000);
        assert_eq!(decoded.samples.len(), samples.len());
        let worst = decoded
            .samples
            .iter()
            .zip(&samples)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1.0 / 16_000.0, "{worst}");
    }
}
