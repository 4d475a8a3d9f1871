//! Generated folk-like melodies in two styles, the music demo's data (nothing downloaded): a
//! style is a scale and a set of instruments, as a raga and its instruments are in the adapter
//! study. `pentatonic` melodies (prompted as Chinese folk songs) use the major pentatonic scale
//! and flute, shakuhachi, koto and fiddle timbres; `diatonic` ones (German folk songs) the major
//! scale, leading tone included, and accordion, violin, clarinet and piano timbres. A melody is a
//! seeded walk over its scale (mostly steps, some leaps, ending on the tonic) in a random key and
//! tempo; each note is rendered additively (harmonic amplitudes per instrument, a short attack
//! and release, plucked instruments decaying) at the codec's 32 kHz.

use std::f32::consts::PI;

use rand::{Rng, SeedableRng};

use super::codec::SAMPLE_RATE;

/// The two styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Pentatonic,
    Diatonic,
}

/// An instrument: relative amplitudes of its harmonics, and its decay per second (0: sustained).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Instrument {
    pub name: &'static str,
    pub harmonics: &'static [f32],
    pub decay: f32,
}

const PENTATONIC_INSTRUMENTS: [Instrument; 4] = [
    Instrument {
        name: "pan flute",
        harmonics: &[1.0, 0.12, 0.05],
        decay: 0.0,
    },
    Instrument {
        name: "shakuhachi",
        harmonics: &[1.0, 0.35, 0.12, 0.06],
        decay: 0.0,
    },
    Instrument {
        name: "koto",
        harmonics: &[1.0, 0.6, 0.4, 0.25, 0.15],
        decay: 3.0,
    },
    Instrument {
        name: "fiddle",
        harmonics: &[1.0, 0.5, 0.33, 0.25, 0.2],
        decay: 0.0,
    },
];

const DIATONIC_INSTRUMENTS: [Instrument; 4] = [
    Instrument {
        name: "accordion",
        harmonics: &[1.0, 0.1, 0.6, 0.1, 0.4, 0.05, 0.3],
        decay: 0.0,
    },
    Instrument {
        name: "violin",
        harmonics: &[1.0, 0.5, 0.33, 0.25, 0.2, 0.16],
        decay: 0.0,
    },
    Instrument {
        name: "clarinet",
        harmonics: &[1.0, 0.05, 0.5, 0.05, 0.3, 0.03, 0.2],
        decay: 0.0,
    },
    Instrument {
        name: "piano",
        harmonics: &[1.0, 0.5, 0.3, 0.2, 0.1],
        decay: 2.0,
    },
];

impl Style {
    /// Semitones above the tonic of the scale's degrees.
    pub fn scale(self) -> &'static [u8] {
        match self {
            Style::Pentatonic => &[0, 2, 4, 7, 9],
            Style::Diatonic => &[0, 2, 4, 5, 7, 9, 11],
        }
    }

    pub fn instruments(self) -> &'static [Instrument] {
        match self {
            Style::Pentatonic => &PENTATONIC_INSTRUMENTS,
            Style::Diatonic => &DIATONIC_INSTRUMENTS,
        }
    }

    /// How the prompts name the style.
    pub fn prompt_name(self) -> &'static str {
        match self {
            Style::Pentatonic => "Chinese folk song",
            Style::Diatonic => "German folk song",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Style::Pentatonic => "pentatonic",
            Style::Diatonic => "diatonic",
        }
    }
}

/// One generated clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Melody {
    /// Mono audio at [`SAMPLE_RATE`].
    pub samples: Vec<f32>,
    /// e.g. "Chinese folk song, koto, 96 bpm".
    pub prompt: String,
    /// The tune: one clip per tune here (`<style>-<index>`).
    pub work: String,
    /// MIDI notes in order, with their start (seconds).
    pub notes: Vec<(u8, f32)>,
    pub instrument: &'static str,
}

/// Clip length of the demo, seconds.
pub const SECONDS: f32 = 4.0;

/// `count` melodies of `style`, the same for the same seed.
pub fn generate(style: Style, count: usize, seed: u64) -> Vec<Melody> {
    (0..count)
        .map(|i| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            melody(style, i, &mut rng)
        })
        .collect()
}

fn melody(style: Style, index: usize, rng: &mut impl Rng) -> Melody {
    let scale = style.scale();
    let instrument = style.instruments()[rng.random_range(0..style.instruments().len())];
    // Tonics C5 to F#5, so the walk (an octave either side) stays between C4 and C8, where the
    // codec resolves semitones.
    let tonic: u8 = rng.random_range(72..79);
    let bpm: u32 = rng.random_range(84..=120);
    let beat = 60.0 / bpm as f32;
    // A walk over scale positions (position p is degree p mod len, octave p div len).
    let len = scale.len() as i32;
    let mut position: i32 = rng.random_range(0..len);
    let pitch =
        |p: i32| tonic as i32 + 12 * p.div_euclid(len) + scale[p.rem_euclid(len) as usize] as i32;
    let mut notes = Vec::new();
    let mut time = 0f32;
    // The closing tonic keeps at least half a beat.
    while time < SECONDS - 1.5 * beat {
        notes.push((pitch(position) as u8, time));
        time += if rng.random_bool(0.4) {
            beat / 2.0
        } else {
            beat
        };
        let step: i32 = match rng.random_range(0..10) {
            0..=5 => {
                if rng.random_bool(0.5) {
                    1
                } else {
                    -1
                }
            }
            6..=7 => {
                if rng.random_bool(0.5) {
                    2
                } else {
                    -2
                }
            }
            8 => 0,
            _ => {
                if rng.random_bool(0.5) {
                    3
                } else {
                    -3
                }
            }
        };
        position = (position + step).clamp(-len, 2 * len - 1);
    }
    notes.push((tonic, time));
    let samples = render(&notes, &instrument);
    Melody {
        samples,
        prompt: format!("{}, {}, {bpm} bpm", style.prompt_name(), instrument.name),
        work: format!("{}-{index}", style.tag()),
        notes,
        instrument: instrument.name,
    }
}

/// Additive rendering of `notes` (MIDI, start) over [`SECONDS`]: each note lasts until the next
/// (the last to the end), with a 10 ms attack and a 30 ms release.
fn render(notes: &[(u8, f32)], instrument: &Instrument) -> Vec<f32> {
    let rate = SAMPLE_RATE as f32;
    let total = (SECONDS * rate) as usize;
    let mut out = vec![0f32; total];
    let norm: f32 = instrument.harmonics.iter().sum();
    for (i, &(note, start)) in notes.iter().enumerate() {
        let end = notes.get(i + 1).map_or(SECONDS, |n| n.1).min(SECONDS);
        let f0 = 440.0 * 2f32.powf((note as f32 - 69.0) / 12.0);
        let (first, last) = ((start * rate) as usize, (end * rate) as usize);
        for (n, sample) in out.iter_mut().enumerate().take(last).skip(first) {
            let t = (n - first) as f32 / rate;
            let left = (last - n) as f32 / rate;
            let envelope =
                (t / 0.01).min(1.0) * (left / 0.03).min(1.0) * (-instrument.decay * t).exp();
            let mut v = 0f32;
            for (h, &a) in instrument.harmonics.iter().enumerate() {
                let f = f0 * (h + 1) as f32;
                if f < rate / 2.0 {
                    v += a * (2.0 * PI * f * t).sin();
                }
            }
            *sample += 0.3 * envelope * v / norm;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use peftbench_metrics::pitch_class::{non_pentatonic_fraction, pitch_class_histogram};

    use super::super::codec::{band_power, resynthesise, semitone_features, Rvq, LOWEST_NOTE};
    use super::*;

    fn non_pentatonic(frames: &[[f32; 88]]) -> f64 {
        let powers: Vec<[f32; 88]> = frames.iter().map(band_power).collect();
        non_pentatonic_fraction(&pitch_class_histogram(&powers, LOWEST_NOTE)).expect("not silent")
    }

    /// The styles keep their scales, their instruments and their prompts; a seed gives the same
    /// clips; one work per clip.
    #[test]
    fn melodies_follow_their_style() {
        let han = generate(Style::Pentatonic, 6, 1);
        assert_eq!(han, generate(Style::Pentatonic, 6, 1));
        assert_ne!(han, generate(Style::Pentatonic, 6, 2));
        for m in &han {
            let tonic = m.notes.last().unwrap().0;
            assert!(m
                .notes
                .iter()
                .all(|(n, _)| [0, 2, 4, 7, 9].contains(&((n + 12 - tonic % 12) % 12))));
            assert!(m.prompt.starts_with("Chinese folk song, "));
            assert_eq!(m.samples.len(), 4 * 32_000);
            assert!(m.samples.iter().all(|s| s.abs() <= 1.0));
        }
        let works: std::collections::BTreeSet<_> = han.iter().map(|m| &m.work).collect();
        assert_eq!(works.len(), 6);
    }

    /// The style signal is in the audio and survives the codec: pentatonic melodies leave less
    /// energy outside a pentatonic scale than diatonic ones (clip by clip, each in its own key,
    /// averaged), before and after an RVQ round trip with resynthesis (codec fitted on both
    /// styles).
    #[test]
    fn the_style_survives_the_codec() {
        let frames = |style| -> Vec<Vec<[f32; 88]>> {
            generate(style, 6, 3)
                .iter()
                .map(|m| semitone_features(&m.samples))
                .collect()
        };
        let (han, german) = (frames(Style::Pentatonic), frames(Style::Diatonic));
        let all: Vec<[f32; 88]> = han.iter().chain(&german).flatten().copied().collect();
        let rvq = Rvq::fit(&all, 4, 32, 0).unwrap();
        let mean = |clips: &[Vec<[f32; 88]>], codec: bool| -> f64 {
            clips
                .iter()
                .map(|f| {
                    if codec {
                        non_pentatonic(&semitone_features(&resynthesise(
                            &rvq.decode(&rvq.encode(f)).unwrap(),
                        )))
                    } else {
                        non_pentatonic(f)
                    }
                })
                .sum::<f64>()
                / clips.len() as f64
        };
        let (h, g) = (mean(&han, false), mean(&german, false));
        let (h2, g2) = (mean(&han, true), mean(&german, true));
        eprintln!(
            "non-pentatonic energy: original {h:.3} / {g:.3}; through rvq-semitone {h2:.3} / {g2:.3}"
        );
        assert!(
            h < 0.05 && g > h + 0.1,
            "original: pentatonic {h:.3}, diatonic {g:.3}"
        );
        assert!(
            g2 > h2 + 0.1,
            "through the codec: pentatonic {h2:.3}, diatonic {g2:.3}"
        );
    }
}
