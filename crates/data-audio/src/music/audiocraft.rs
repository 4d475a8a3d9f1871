//! AudioCraft's dataset manifests (facebookresearch/audiocraft, `audiocraft/data/audio_dataset.py`
//! and `music_dataset.py`): a folder (one per split, `egs/<name>/`) holding `data.jsonl` or
//! `data.jsonl.gz`, one line per audio file,
//!
//! ```json
//! {"path": "dataset/example/electro_1.mp3", "duration": 15.024, "sample_rate": 48000,
//!  "amplitude": null, "weight": null, "info_path": null}
//! ```
//!
//! and beside each audio file a `.json` of the same name with its description and tags (`title`,
//! `artist`, `key`, `bpm`, `genre`, `moods`, `keywords`, `description`, `name`, `instrument`).
//! The prompt is the `description`, as AudioCraft's text-to-music configuration conditions on
//! it; the work is the `artist` (AudioCraft's anonymised artist id, which it keeps out of two
//! splits), or the file's name where there is none (then each file is its own work, and splits
//! are only as disjoint as the files). A file without a sidecar, or a sidecar without a description, is an
//! error naming it: a clip without text cannot train a text-to-music model.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::folder::metadata_of;
use super::{work_id, MusicClip};
use crate::AudioError;

/// The manifest of `dir` (`data.jsonl`, else `data.jsonl.gz`); relative audio paths are joined
/// to `base` (AudioCraft resolves them from where it runs, usually its repository).
pub fn load_manifest(dir: &Path, base: &Path) -> Result<Vec<MusicClip>, AudioError> {
    let plain = dir.join("data.jsonl");
    let gzipped = dir.join("data.jsonl.gz");
    let (path, text) = if plain.is_file() {
        (plain.clone(), read(&plain, false)?)
    } else if gzipped.is_file() {
        (gzipped.clone(), read(&gzipped, true)?)
    } else {
        return Err(AudioError::MissingDataset {
            looked_in: vec![plain, gzipped],
            hint:
                "hint: an AudioCraft manifest folder (egs/<split>/) holds data.jsonl, written by \
                   `python -m audiocraft.data.audio_dataset <audio dir> <egs dir>/data.jsonl`"
                    .into(),
        });
    };
    text.trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| clip_of_line(line, i + 1, &path, base))
        .collect()
}

fn read(path: &Path, gzipped: bool) -> Result<String, AudioError> {
    let io = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    if !gzipped {
        return String::from_utf8(bytes)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)));
    }
    let mut text = String::new();
    // Every member: a manifest concatenated from several gzipped files reads whole, as Python's
    // gzip reads it.
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .map_err(io)?;
    Ok(text)
}

fn clip_of_line(
    line: &str,
    number: usize,
    path: &Path,
    base: &Path,
) -> Result<MusicClip, AudioError> {
    let bad = |reason: String| AudioError::BadMetadataLine {
        path: path.to_path_buf(),
        line: number,
        text: line.chars().take(200).collect(),
        reason,
    };
    let meta: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
    let audio = meta
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing field `path`".into()))?;
    let duration = meta
        .get("duration")
        .and_then(Value::as_f64)
        .filter(|d| d.is_finite() && *d > 0.0)
        .ok_or_else(|| {
            bad("missing field `duration`, or not a positive number of seconds".into())
        })?;
    let sample_rate = meta
        .get("sample_rate")
        .and_then(Value::as_u64)
        .and_then(|r| u32::try_from(r).ok())
        .ok_or_else(|| bad("missing or non-integer field `sample_rate`".into()))?;
    let audio = PathBuf::from(audio);
    let audio = if audio.is_absolute() {
        audio
    } else {
        base.join(audio)
    };
    let sidecar = audio.with_extension("json");
    let text = std::fs::read_to_string(&sidecar).map_err(|e| {
        bad(format!(
            "its metadata {} cannot be read ({e}); AudioCraft's music datasets keep each file's \
             description in a .json beside it",
            sidecar.display()
        ))
    })?;
    let info: Value = serde_json::from_str(&text).map_err(|e| AudioError::BadMetadataLine {
        path: sidecar.clone(),
        line: e.line(),
        text: String::new(),
        reason: format!("not JSON: {e}"),
    })?;
    let Value::Object(mut info) = info else {
        return Err(AudioError::BadMetadataLine {
            path: sidecar,
            line: 1,
            text: String::new(),
            reason: "not a JSON object".into(),
        });
    };
    let prompt = match info.remove("description") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.trim() != "None" => {
            s.trim().to_string()
        }
        _ => {
            return Err(AudioError::BadMetadataLine {
                path: sidecar,
                line: 1,
                text: String::new(),
                reason: "no `description`, the text AudioCraft conditions on".into(),
            })
        }
    };
    // The artist (trimmed; a number is an id too; "" and "None" are none, as AudioCraft reads
    // them), or the file itself.
    let work = match info.get("artist").and_then(work_id) {
        Some(artist) => artist,
        None => audio
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    Ok(MusicClip {
        audio,
        duration: Some(duration),
        sample_rate: Some(sample_rate),
        prompt,
        work,
        metadata: metadata_of(info),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// AudioCraft's own example line (`egs/example/data.jsonl`) with a sidecar in the shape of
    /// its example's; the gzipped manifest reads the same; a missing sidecar is named.
    #[test]
    fn reads_audiocraft_manifests_and_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let line = r#"{"path": "dataset/example/electro_1.mp3", "duration": 15.024, "sample_rate": 48000, "amplitude": null, "weight": null, "info_path": null}"#;
        std::fs::create_dir_all(base.join("dataset/example")).unwrap();
        std::fs::write(
            base.join("dataset/example/electro_1.json"),
            r#"{"key": "", "artist": "Voyager I", "sample_rate": 48000, "file_extension": "mp3", "description": "A cool song from Voyager.", "keywords": "bright", "duration": 15.0, "bpm": "", "genre": "electronic", "title": "Electro 1", "name": "electro_1", "instrument": "Mix", "moods": ["uplifting", "motivational"]}"#,
        )
        .unwrap();
        let egs = base.join("egs/train");
        std::fs::create_dir_all(&egs).unwrap();
        std::fs::write(egs.join("data.jsonl"), format!("{line}\n")).unwrap();
        let clips = load_manifest(&egs, base).unwrap();
        assert_eq!(clips.len(), 1);
        let clip = &clips[0];
        assert_eq!(clip.audio, base.join("dataset/example/electro_1.mp3"));
        assert_eq!(
            (clip.duration, clip.sample_rate),
            (Some(15.024), Some(48000))
        );
        assert_eq!(clip.prompt, "A cool song from Voyager.");
        assert_eq!(clip.work, "Voyager I");
        assert_eq!(clip.metadata["genre"], "electronic");
        assert_eq!(clip.metadata["moods"], r#"["uplifting","motivational"]"#);

        std::fs::remove_file(egs.join("data.jsonl")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(egs.join("data.jsonl.gz")).unwrap(),
            flate2::Compression::default(),
        );
        writeln!(gz, "{line}").unwrap();
        gz.finish().unwrap();
        assert_eq!(load_manifest(&egs, base).unwrap(), clips);

        std::fs::remove_file(base.join("dataset/example/electro_1.json")).unwrap();
        let err = load_manifest(&egs, base).unwrap_err().to_string();
        assert!(
            err.contains("data.jsonl.gz:1:") && err.contains("electro_1.json"),
            "{err}"
        );
        let err = load_manifest(&base.join("egs/valid"), base)
            .unwrap_err()
            .to_string();
        assert!(err.contains("egs/valid/data.jsonl"), "{err}");
    }
}
