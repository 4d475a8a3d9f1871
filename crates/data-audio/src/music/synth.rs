//! Rendering Standard MIDI Files to audio with a SoundFont (SF2), through the pure-Rust
//! synthesiser `rustysynth`: how the folk-song suite turns scores (Essen tunes written as MIDI by
//! `ci/folk_songs.py`) into real instrument audio without a Python or C synthesiser, a sound
//! server or a download beyond the registries (the General MIDI soundfont `TimGM6mb.sf2` comes
//! from Debian's `timgm6mb-soundfont`; `ci/folk-songs.sh` installs it).
//!
//! A [`Renderer`] holds one loaded soundfont (shared, read-only, so one renderer serves many
//! threads) and renders each MIDI file with a fresh synthesiser, reverb and chorus on, to mono
//! `f32` at 32 kHz by default (the music codec's rate). Without a length, the audio lasts as long
//! as the MIDI file plus a release tail, so the last notes decay instead of being cut; with one,
//! it is cut or padded (the synthesiser keeps running into silence) to exactly that many seconds,
//! the last few milliseconds faded so a cut note does not click.
//!
//! `rustysynth` reads SF2 only: an SF3 (Vorbis-compressed) soundfont is refused with an error
//! saying so.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustysynth::{MidiFile, MidiFileSequencer, SoundFont, Synthesizer, SynthesizerSettings};

use crate::AudioError;

/// The default output rate: the music codec's.
pub const SAMPLE_RATE: u32 = super::codec::SAMPLE_RATE;
/// The longest audio one call renders: garbage timing in a MIDI file should be an error, not an
/// allocation of gigabytes.
pub const MAX_SECONDS: f64 = 3600.0;
/// Seconds rendered after a MIDI file's last event when no length is asked, long enough for
/// General MIDI releases and the reverb to die away.
pub const DEFAULT_TAIL_SECONDS: f32 = 1.0;
/// Seconds faded out at the end of a clip cut to a fixed length.
const FADE_SECONDS: f32 = 0.01;

/// A loaded soundfont and the output settings; renders any number of MIDI files, from any number
/// of threads.
#[derive(Clone)]
pub struct Renderer {
    soundfont: Arc<SoundFont>,
    /// Where the soundfont was read from, for messages.
    origin: PathBuf,
    sample_rate: u32,
    tail_seconds: f32,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("soundfont", &self.origin)
            .field("sample_rate", &self.sample_rate)
            .field("tail_seconds", &self.tail_seconds)
            .finish()
    }
}

impl Renderer {
    /// Loads the SF2 soundfont at `path` (32 kHz output, a [`DEFAULT_TAIL_SECONDS`] tail). A
    /// missing file is an I/O error naming it; a file that is not an SF2 soundfont (an SF3, say)
    /// is an error naming it and the reason.
    pub fn load(path: &Path) -> Result<Self, AudioError> {
        let bytes = std::fs::read(path).map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let soundfont = SoundFont::new(&mut Cursor::new(bytes)).map_err(|e| {
            let hint = if matches!(e, rustysynth::SoundFontError::UnsupportedSampleFormat) {
                " (rustysynth reads SF2 soundfonts only, not SF3)"
            } else {
                ""
            };
            AudioError::CorruptAudio {
                origin: format!("soundfont {}", path.display()),
                reason: format!("not a usable SF2 soundfont: {e}{hint}"),
            }
        })?;
        Ok(Self {
            soundfont: Arc::new(soundfont),
            origin: path.to_path_buf(),
            sample_rate: SAMPLE_RATE,
            tail_seconds: DEFAULT_TAIL_SECONDS,
        })
    }

    /// The same soundfont rendering at `rate` Hz (rustysynth accepts 16 to 192 kHz).
    pub fn with_sample_rate(mut self, rate: u32) -> Result<Self, AudioError> {
        if !(16_000..=192_000).contains(&rate) {
            return Err(AudioError::InvalidSettings(format!(
                "a SoundFont renderer's sample rate must be 16000 to 192000 Hz, not {rate}"
            )));
        }
        self.sample_rate = rate;
        Ok(self)
    }

    /// The same soundfont with `seconds` of release tail after a MIDI file's end (used when no
    /// length is asked).
    pub fn with_tail(mut self, seconds: f32) -> Result<Self, AudioError> {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(AudioError::InvalidSettings(format!(
                "a release tail must be a non-negative number of seconds, not {seconds}"
            )));
        }
        self.tail_seconds = seconds;
        Ok(self)
    }

    /// The output rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Where the soundfont was loaded from.
    pub fn soundfont_path(&self) -> &Path {
        &self.origin
    }

    /// The soundfont's own name (its `INAM` field), e.g. "TimGM6mb".
    pub fn soundfont_name(&self) -> &str {
        self.soundfont.get_info().get_bank_name()
    }

    /// Renders the Standard MIDI File `midi` (format 0 or 1) to mono samples (the mean of the
    /// synthesiser's left and right), `seconds` long when given, else the file's length plus the
    /// release tail. Errors name the data as "MIDI data"; [`Renderer::render_file`] names the file.
    pub fn render(&self, midi: &[u8], seconds: Option<f32>) -> Result<Vec<f32>, AudioError> {
        self.render_named(midi, seconds, &format!("MIDI data ({} bytes)", midi.len()))
    }

    /// [`Renderer::render`] of the MIDI file at `path`; errors name the path.
    pub fn render_file(&self, path: &Path, seconds: Option<f32>) -> Result<Vec<f32>, AudioError> {
        let midi = std::fs::read(path).map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.render_named(&midi, seconds, &path.display().to_string())
    }

    fn render_named(
        &self,
        midi: &[u8],
        seconds: Option<f32>,
        origin: &str,
    ) -> Result<Vec<f32>, AudioError> {
        if let Some(s) = seconds {
            if !(s.is_finite() && s > 0.0) {
                return Err(AudioError::InvalidSettings(format!(
                    "rendering {origin}: a clip length must be a positive number of seconds, not {s}"
                )));
            }
        }
        let (file, length) = parse_midi(midi, origin)?;
        let rate = self.sample_rate as f64;
        let duration = match seconds {
            Some(s) => f64::from(s),
            None => length + f64::from(self.tail_seconds),
        };
        if duration > MAX_SECONDS {
            return Err(AudioError::InvalidSettings(format!(
                "rendering {origin}: {duration:.0} s of audio asked, more than {MAX_SECONDS} s"
            )));
        }
        let frames = match seconds {
            Some(_) => (duration * rate).round() as usize,
            None => (duration * rate).ceil() as usize,
        };
        let settings = SynthesizerSettings::new(self.sample_rate as i32);
        let synthesizer = Synthesizer::new(&self.soundfont, &settings).map_err(|e| {
            AudioError::InvalidSettings(format!(
                "cannot start a synthesiser with {}: {e}",
                self.origin.display()
            ))
        })?;
        let mut sequencer = MidiFileSequencer::new(synthesizer);
        sequencer.play(&Arc::new(file), false);
        let mut left = vec![0f32; frames];
        let mut right = vec![0f32; frames];
        sequencer.render(&mut left, &mut right);
        let mut mono: Vec<f32> = left
            .iter()
            .zip(&right)
            .map(|(l, r)| 0.5 * (l + r))
            .collect();
        if seconds.is_some() {
            // A note still sounding at the cut would end in a click.
            let fade = ((f64::from(FADE_SECONDS) * rate) as usize).min(mono.len());
            let start = mono.len() - fade;
            for (i, s) in mono[start..].iter_mut().enumerate() {
                *s *= 1.0 - (i + 1) as f32 / fade as f32;
            }
        }
        Ok(mono)
    }
}

/// The parsed MIDI file and its length in seconds (the time of its last event).
fn parse_midi(midi: &[u8], origin: &str) -> Result<(MidiFile, f64), AudioError> {
    let corrupt = |reason: String| AudioError::CorruptAudio {
        origin: origin.to_string(),
        reason,
    };
    // rustysynth would read SMPTE time codes as negative ticks per beat and play every event at
    // once: refuse them. Bytes 12..14 of the header chunk are the time division.
    if midi.len() >= 14 && midi[..4] == *b"MThd" && midi[12] & 0x80 != 0 {
        return Err(corrupt(
            "SMPTE time division is not supported, only ticks per quarter note".into(),
        ));
    }
    // The length of a file without tracks unwraps a missing last event: refuse it here. Bytes
    // 10..12 count the tracks.
    if midi.len() >= 14 && midi[..4] == *b"MThd" && midi[10..12] == [0, 0] {
        return Err(corrupt("the file has no tracks".into()));
    }
    // The parser trusts its input in other places too (tick sums can overflow): a panic on
    // malformed bytes becomes this file's error, not the caller's crash.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        MidiFile::new(&mut Cursor::new(midi)).map(|file| {
            let length = file.get_length();
            (file, length)
        })
    }));
    match parsed {
        Ok(Ok((file, length))) if length.is_finite() && length >= 0.0 => Ok((file, length)),
        Ok(Ok((_, length))) => Err(corrupt(format!(
            "not a playable Standard MIDI File: its events end at {length} s"
        ))),
        Ok(Err(e)) => Err(corrupt(format!("not a Standard MIDI File: {e}"))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(corrupt(format!(
                "not a Standard MIDI File (the parser failed: {what})"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::codec::{band_power, semitone_features, HOP, LOWEST_NOTE};
    use std::sync::OnceLock;

    /// Ticks per quarter note in the test files; at the default 120 bpm a tick is 1/960 s.
    const DIVISION: u16 = 480;

    /// A MIDI variable-length quantity.
    fn vlq(mut value: u32) -> Vec<u8> {
        let mut bytes = vec![(value & 0x7f) as u8];
        value >>= 7;
        while value > 0 {
            bytes.push((value & 0x7f) as u8 | 0x80);
            value >>= 7;
        }
        bytes.reverse();
        bytes
    }

    /// A format-0 file, written byte by byte: tempo 120 bpm, program `program` on channel 0,
    /// `note` from `start` to `end` ticks at velocity 100, end of track.
    fn one_note(program: u8, note: u8, start: u32, end: u32) -> Vec<u8> {
        let mut track = vec![0x00, 0xff, 0x51, 0x03, 0x07, 0xa1, 0x20]; // 500,000 µs a beat
        track.extend([0x00, 0xc0, program]);
        track.extend(vlq(start));
        track.extend([0x90, note, 100]);
        track.extend(vlq(end - start));
        track.extend([0x80, note, 64]);
        track.extend([0x00, 0xff, 0x2f, 0x00]);
        let mut file = b"MThd".to_vec();
        file.extend(6u32.to_be_bytes());
        file.extend(0u16.to_be_bytes()); // format 0
        file.extend(1u16.to_be_bytes()); // one track
        file.extend(DIVISION.to_be_bytes());
        file.extend(b"MTrk");
        file.extend((track.len() as u32).to_be_bytes());
        file.extend(track);
        file
    }

    /// The General MIDI soundfont `ci/folk-songs.sh` installs, if it is anywhere we look.
    fn soundfont() -> Option<&'static Renderer> {
        static RENDERER: OnceLock<Option<Renderer>> = OnceLock::new();
        RENDERER
            .get_or_init(|| {
                let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
                let asked = std::env::var_os("PEFTBENCH_SOUNDFONT").map(PathBuf::from);
                if let Some(path) = &asked {
                    // A soundfont named on purpose and missing is a mistake, not a skip.
                    assert!(path.is_file(), "PEFTBENCH_SOUNDFONT={} is no file", path.display());
                }
                let candidates: Vec<PathBuf> = asked
                    .into_iter()
                    .chain([
                        PathBuf::from("/usr/share/sounds/sf2/TimGM6mb.sf2"),
                        workspace.join("target/folk-songs/soundfont/usr/share/sounds/sf2/TimGM6mb.sf2"),
                    ])
                    .collect();
                match candidates.iter().find(|p| p.is_file()) {
                    Some(path) => Some(Renderer::load(path).expect("the soundfont loads")),
                    None => {
                        eprintln!(
                            "skipped: no General MIDI soundfont (looked at {candidates:?}); install \
                             it with ci/folk-songs.sh or set PEFTBENCH_SOUNDFONT to an SF2 file"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The semitone (MIDI note) holding most of the energy of `samples` from `from` to `to`
    /// seconds.
    fn dominant_note(samples: &[f32], from: f32, to: f32) -> usize {
        let frames = semitone_features(samples);
        let rate = SAMPLE_RATE as f32;
        let range = (from * rate) as usize / HOP..(to * rate) as usize / HOP;
        let mut total = [0f32; crate::music::codec::BANDS];
        for frame in &frames[range] {
            for (t, p) in total.iter_mut().zip(band_power(frame)) {
                *t += p;
            }
        }
        let band = (0..total.len())
            .max_by(|&a, &b| total[a].total_cmp(&total[b]))
            .unwrap();
        band + LOWEST_NOTE
    }

    fn peak(samples: &[f32]) -> f32 {
        samples.iter().fold(0f32, |m, s| m.max(s.abs()))
    }

    /// A note played from 0.5 s to 1.5 s sounds at its pitch, not before it starts, and decays
    /// within the tail; the program change is obeyed (a flute and a trumpet differ).
    #[test]
    fn a_note_renders_at_its_pitch_and_time() {
        let Some(renderer) = soundfont() else { return };
        for note in [69u8, 76] {
            let audio = renderer
                .render(&one_note(73, note, 480, 1440), None)
                .unwrap();
            // 1.5 s of events and the 1 s tail.
            assert_eq!(audio.len(), (2.5 * SAMPLE_RATE as f32).ceil() as usize);
            let before = peak(&audio[..(0.49 * SAMPLE_RATE as f32) as usize]);
            assert!(before < 1e-4, "sound before the note starts: {before}");
            let during = &audio[(0.6 * SAMPLE_RATE as f32) as usize..SAMPLE_RATE as usize * 3 / 2];
            assert!(peak(during) > 0.02, "the note is silent: {}", peak(during));
            assert_eq!(
                dominant_note(&audio, 0.7, 1.4),
                note as usize,
                "note {note}"
            );
            let end = peak(&audio[audio.len() - 3200..]);
            assert!(end < 0.1 * peak(during), "still loud at the end: {end}");
        }
        // The same note on a trumpet: the synthesiser switched instruments.
        let flute = renderer.render(&one_note(73, 69, 480, 1440), None).unwrap();
        let trumpet = renderer.render(&one_note(56, 69, 480, 1440), None).unwrap();
        let diff: f32 = flute
            .iter()
            .zip(&trumpet)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / flute.len() as f32;
        assert!(diff > 1e-3, "flute and trumpet render alike: {diff}");
    }

    /// A fixed length cuts a long file and pads a short one, fading the cut.
    #[test]
    fn a_length_cuts_or_pads() {
        let Some(renderer) = soundfont() else { return };
        let long = one_note(0, 60, 0, 4800); // 5 s
        let cut = renderer.render(&long, Some(2.0)).unwrap();
        assert_eq!(cut.len(), 64_000);
        assert!(peak(&cut[30_000..60_000]) > 0.01);
        assert_eq!(*cut.last().unwrap(), 0.0);
        let padded = renderer
            .render(&one_note(73, 72, 0, 480), Some(3.0))
            .unwrap();
        assert_eq!(padded.len(), 96_000);
        assert!(peak(&padded[80_000..]) < 1e-3, "no silence after the tail");
        let fast = renderer
            .clone()
            .with_sample_rate(16_000)
            .unwrap()
            .render(&long, Some(1.0))
            .unwrap();
        assert_eq!(fast.len(), 16_000);
        eprintln!("soundfont name: {:?}", renderer.soundfont_name());
    }

    /// Bad input is an error naming where it came from, never a panic; bad settings are refused.
    #[test]
    fn bad_input_is_an_error_naming_its_origin() {
        let Some(renderer) = soundfont() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.mid");
        std::fs::write(&path, b"MThd\x00\x00\x00\x06\x00\x00\x00\x01").unwrap();
        let err = renderer.render_file(&path, None).unwrap_err().to_string();
        assert!(
            err.contains("broken.mid") && err.contains("not a Standard MIDI File"),
            "{err}"
        );
        let err = renderer.render(b"RIFF....", None).unwrap_err().to_string();
        assert!(err.contains("MIDI data (8 bytes)"), "{err}");
        // A file whose header promises no track has no events at all.
        let empty = b"MThd\x00\x00\x00\x06\x00\x00\x00\x00\x01\xe0";
        let err = renderer.render(empty, None).unwrap_err().to_string();
        assert!(
            err.contains("MIDI data") && err.contains("no tracks"),
            "{err}"
        );
        let mut smpte = one_note(0, 60, 0, 480);
        smpte[12] = 0xe7;
        let err = renderer.render(&smpte, None).unwrap_err().to_string();
        assert!(err.contains("SMPTE"), "{err}");
        let missing = dir.path().join("none.mid");
        let err = renderer
            .render_file(&missing, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.mid"), "{err}");
        assert!(renderer
            .render(&one_note(0, 60, 0, 480), Some(0.0))
            .is_err());
        // Two hours of ticks at 480 a beat and 120 bpm.
        let err = renderer
            .render(&one_note(0, 60, 0, 7_000_000), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 3600 s"), "{err}");
        assert!(renderer.clone().with_sample_rate(8_000).is_err());
        assert!(renderer.clone().with_tail(f32::NAN).is_err());
    }

    /// A soundfont that is missing or not SF2 is an error naming the file; needs no soundfont.
    #[test]
    fn a_bad_soundfont_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sf2");
        let err = Renderer::load(&missing).unwrap_err().to_string();
        assert!(err.contains("none.sf2"), "{err}");
        let junk = dir.path().join("junk.sf2");
        std::fs::write(&junk, b"RIFF\x04\x00\x00\x00sfbk").unwrap();
        let err = Renderer::load(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.sf2") && err.contains("not a usable SF2 soundfont"),
            "{err}"
        );
    }
}
