//! A generated keyword-spotting task for demos and tests, needing nothing downloaded.
//!
//! Each class is a "word". With [`Voice::Espeak`] it is a real word spoken by espeak-ng (when installed),
//! each example at a different speed, pitch and gain with added noise; with [`Voice::Tones`] it is a
//! sequence of three gliding tone "syllables" whose pitch contour identifies the class, each example with a
//! different speaker pitch, onset, gain and noise. One second at 16 kHz either way; deterministic from
//! the seed (espeak-ng output also depends on its version, which is recorded in the dataset name).

use std::process::Command;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::datasets::AudioDataset;
use crate::{decode_bytes, Audio, AudioError, AudioSource};

/// The words spoken with espeak-ng (the first ten of Speech Commands' core words).
pub const WORDS: [&str; 10] = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
];

const RATE: u32 = 16_000;

/// How the keywords are voiced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Voice {
    /// espeak-ng, with its version string.
    Espeak(String),
    /// Generated tone glides.
    Tones,
}

impl Voice {
    /// espeak-ng when `espeak-ng --version` runs, else tones.
    pub fn detect() -> Self {
        Command::new("espeak-ng")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| Voice::Espeak(String::from_utf8_lossy(&o.stdout).trim().to_string()))
            .unwrap_or(Voice::Tones)
    }

    pub fn name(&self) -> String {
        match self {
            Voice::Espeak(version) => format!("espeak-ng ({version})"),
            Voice::Tones => "tones".into(),
        }
    }
}

/// `n` one-second examples of `num_classes` (at most 10) keywords, labels cycling through the classes.
pub fn keyword_task(
    n: usize,
    num_classes: usize,
    seed: u64,
    voice: &Voice,
) -> Result<AudioDataset, AudioError> {
    if !(2..=WORDS.len()).contains(&num_classes) {
        return Err(AudioError::InvalidSettings(format!(
            "the keyword task has 2 to {} classes, not {num_classes}",
            WORDS.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut items = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % num_classes;
        let samples = match voice {
            Voice::Espeak(_) => spoken(WORDS[label], &mut rng)?,
            Voice::Tones => tones(label, &mut rng),
        };
        let mut samples = place_in_second(samples, &mut rng);
        let noise = rng.random_range(0.002..0.02f32);
        for s in &mut samples {
            *s += noise * (rng.random::<f32>() * 2.0 - 1.0);
        }
        items.push(AudioSource::Samples {
            origin: format!("keywords seed {seed} example {i} ({})", WORDS[label]),
            audio: Arc::new(Audio {
                samples,
                sample_rate: RATE,
            }),
        });
        labels.push(label as u32);
    }
    Ok(AudioDataset {
        name: format!("keywords/{}", voice.name()),
        items,
        labels,
        num_classes,
        class_names: WORDS[..num_classes].iter().map(|w| w.to_string()).collect(),
    })
}

/// One word from espeak-ng at a random speed, pitch and gain, resampled to 16 kHz.
fn spoken(word: &str, rng: &mut ChaCha8Rng) -> Result<Vec<f32>, AudioError> {
    let speed = rng.random_range(120..220);
    let pitch = rng.random_range(20..80);
    let gain = rng.random_range(0.3..1.0f32);
    let origin = format!("espeak-ng {word:?} -s {speed} -p {pitch}");
    let out = Command::new("espeak-ng")
        .args([
            "--stdout",
            "-s",
            &speed.to_string(),
            "-p",
            &pitch.to_string(),
            word,
        ])
        .output()
        .map_err(|e| AudioError::CorruptAudio {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
    let audio = decode_bytes(out.stdout, Some("wav"), &origin)?.resampled(RATE, &origin)?;
    Ok(audio.samples.into_iter().map(|s| s * gain).collect())
}

/// Three tone glides whose start/end pitches depend on the class, scaled by a random "speaker" pitch.
fn tones(label: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let speaker = rng.random_range(0.85..1.15f64);
    let syllable = (rng.random_range(0.12..0.2f64) * f64::from(RATE)) as usize;
    let gain = rng.random_range(0.3..0.9f64);
    let mut out = Vec::with_capacity(3 * syllable);
    for s in 0..3 {
        // Class `label` in base 3 over the three syllables picks each glide's direction (down, flat, up);
        // the class's own base pitch separates the remaining ambiguity.
        let direction = ((label / 3usize.pow(s as u32)) % 3) as f64 - 1.0;
        let start = speaker * (300.0 + 90.0 * label as f64 + 150.0 * s as f64);
        let end = start * (1.0 + 0.5 * direction);
        let mut phase = 0.0f64;
        for k in 0..syllable {
            let t = k as f64 / syllable as f64;
            let freq = start + (end - start) * t;
            phase += 2.0 * std::f64::consts::PI * freq / f64::from(RATE);
            let envelope = (std::f64::consts::PI * t).sin();
            out.push((gain * envelope * (phase.sin() + 0.3 * (2.0 * phase).sin())) as f32);
        }
    }
    out
}

/// Cuts to at most a second and places the sound at a random onset in a one-second clip.
fn place_in_second(mut sound: Vec<f32>, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let len = RATE as usize;
    sound.truncate(len);
    let onset = rng.random_range(0..=len - sound.len());
    let mut clip = vec![0f32; len];
    clip[onset..onset + sound.len()].copy_from_slice(&sound);
    clip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ds: &AudioDataset, i: usize) -> Vec<f32> {
        ds.items[i].decode().unwrap().samples
    }

    #[test]
    fn tone_keywords_are_deterministic_and_labelled_in_turn() {
        let a = keyword_task(6, 3, 7, &Voice::Tones).unwrap();
        let b = keyword_task(6, 3, 7, &Voice::Tones).unwrap();
        assert_eq!(a.labels, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(samples(&a, 4), samples(&b, 4));
        assert_eq!(samples(&a, 0).len(), 16_000);
        let c = keyword_task(6, 3, 8, &Voice::Tones).unwrap();
        assert_ne!(samples(&a, 0), samples(&c, 0));
    }

    #[test]
    fn espeak_keywords_when_installed() {
        let voice = Voice::detect();
        if voice == Voice::Tones {
            eprintln!("skipped: espeak-ng is not installed (apt-get install espeak-ng)");
            return;
        }
        let a = keyword_task(2, 2, 1, &voice).unwrap();
        let b = keyword_task(2, 2, 1, &voice).unwrap();
        assert_eq!(samples(&a, 1), samples(&b, 1));
        assert!(samples(&a, 0).iter().any(|s| s.abs() > 0.05));
    }
}
