//! The project's folder format for music in styles: `<root>/<style>/{train,val,test}.jsonl`, one
//! clip per line:
//!
//! ```json
//! {"path": "audio/tune-12.wav", "duration": 10.0, "sample_rate": 32000,
//!  "prompt": "a german folk song in 3/4", "work": "tune-12", "key": "G", "region": "Europe"}
//! ```
//!
//! `path` (relative to the style's folder, or absolute), `prompt` and `work` are required;
//! `duration` and `sample_rate` are optional; every other field is kept as metadata. A work with
//! clips in two splits is an error: splits are by work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{check_disjoint_works, work_id, MusicClip, MusicSplits};
use crate::datasets::read_metadata;
use crate::AudioError;

/// The splits a style folder holds; `val` may be absent.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Split `split` of style `style` under `root`.
pub fn load_split(root: &Path, style: &str, split: &str) -> Result<Vec<MusicClip>, AudioError> {
    let dir = root.join(style);
    let path = dir.join(format!("{split}.jsonl"));
    let text = read_metadata(
        &path,
        "hint: a style folder holds train.jsonl, val.jsonl and test.jsonl, one clip per line with \
         `path`, `prompt` and `work` (see crates/data-audio/src/music/folder.rs)",
    )?;
    text.trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| clip_of_line(line, i + 1, &path, &dir))
        .collect()
}

/// Every split of style `style` (an absent `val.jsonl` gives no validation clips), checked to
/// share no work.
pub fn load_style(root: &Path, style: &str) -> Result<MusicSplits, AudioError> {
    let val = if root.join(style).join("val.jsonl").is_file() {
        load_split(root, style, "val")?
    } else {
        Vec::new()
    };
    let splits = MusicSplits {
        train: load_split(root, style, "train")?,
        val,
        test: load_split(root, style, "test")?,
    };
    check_disjoint_works(
        &[
            ("train", &splits.train),
            ("val", &splits.val),
            ("test", &splits.test),
        ],
        &root.join(style),
    )?;
    Ok(splits)
}

fn clip_of_line(
    line: &str,
    number: usize,
    path: &Path,
    dir: &Path,
) -> Result<MusicClip, AudioError> {
    let bad = |reason: String| AudioError::BadMetadataLine {
        path: path.to_path_buf(),
        line: number,
        text: line.chars().take(200).collect(),
        reason,
    };
    let value: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(bad("not a JSON object".into()));
    };
    let mut text = |key: &str| -> Result<String, AudioError> {
        match fields.remove(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(other) => Err(bad(format!(
                "field `{key}` must be a non-empty string, not {other}"
            ))),
            None => Err(bad(format!("missing field `{key}`"))),
        }
    };
    let audio = text("path")?;
    let prompt = text("prompt")?;
    let work = match fields.remove("work") {
        Some(value) => work_id(&value)
            .ok_or_else(|| bad(format!("field `work` must name the work, not {value}")))?,
        None => return Err(bad("missing field `work`".into())),
    };
    let duration = match fields.remove("duration") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_f64().filter(|d| *d > 0.0).ok_or_else(|| {
            bad(format!(
                "field `duration` must be a positive number of seconds, not {v}"
            ))
        })?),
    };
    let sample_rate = match fields.remove("sample_rate") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .filter(|r| *r > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "field `sample_rate` must be a positive integer, not {v}"
                    ))
                })?,
        ),
    };
    let audio = PathBuf::from(audio);
    Ok(MusicClip {
        audio: if audio.is_absolute() {
            audio
        } else {
            dir.join(audio)
        },
        duration,
        sample_rate,
        prompt,
        work,
        metadata: metadata_of(fields),
    })
}

/// Fields as text: strings as they are, everything else as JSON.
pub(crate) fn metadata_of(fields: serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    fields
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), lines.join("\n")).unwrap();
    }

    #[test]
    fn a_style_folder_reads_its_splits() {
        let root = tempfile::tempdir().unwrap();
        let style = root.path().join("german");
        write(
            &style,
            "train.jsonl",
            &[
                r#"{"path": "a/1.wav", "duration": 10.0, "sample_rate": 32000, "prompt": "a waltz", "work": "t1", "key": "G", "bars": 16}"#,
                r#"{"path": "a/2.wav", "prompt": "a waltz, second half", "work": "t1"}"#,
                "",
                r#"{"path": "/abs/3.wav", "prompt": "a march", "work": 7.0}"#,
            ],
        );
        write(
            &style,
            "test.jsonl",
            &[r#"{"path": "b/9.wav", "prompt": "a song", "work": "t9"}"#],
        );
        let splits = load_style(root.path(), "german").unwrap();
        assert_eq!(splits.train.len(), 3);
        assert!(splits.val.is_empty());
        let first = &splits.train[0];
        assert_eq!(first.audio, style.join("a/1.wav"));
        assert_eq!(
            (first.duration, first.sample_rate),
            (Some(10.0), Some(32000))
        );
        assert_eq!(first.metadata["key"], "G");
        assert_eq!(first.metadata["bars"], "16");
        assert_eq!(splits.train[2].audio, PathBuf::from("/abs/3.wav"));
        assert_eq!(splits.train[2].work, "7");

        // A work in two splits; a line that is not JSON; a missing field; a bad value.
        write(
            &style,
            "val.jsonl",
            &[r#"{"path": "c.wav", "prompt": "x", "work": "t9"}"#],
        );
        let err = load_style(root.path(), "german").unwrap_err().to_string();
        assert!(
            err.contains("work `t9` has clips in split `val` and in split `test`"),
            "{err}"
        );
        for (line, want) in [
            ("{not json", "not JSON"),
            (
                r#"{"path": "c.wav", "work": "w"}"#,
                "missing field `prompt`",
            ),
            (
                r#"{"path": "c.wav", "prompt": "p", "work": "w", "duration": -1}"#,
                "field `duration` must be",
            ),
        ] {
            write(&style, "val.jsonl", &["", line]);
            let err = load_split(root.path(), "german", "val")
                .unwrap_err()
                .to_string();
            assert!(err.contains("val.jsonl:2:") && err.contains(want), "{err}");
        }
        let err = load_split(root.path(), "greek", "train")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("greek/train.jsonl") && err.contains("hint: a style folder"),
            "{err}"
        );
    }
}
