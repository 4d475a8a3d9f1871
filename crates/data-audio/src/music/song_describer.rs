//! The Song Describer Dataset (Manco et al., 2023; MTG): `song_describer.csv`, one caption per
//! row with columns `caption_id, track_id, caption, is_valid_subset, familiarity, artist_id,
//! album_id, path, duration`. `path` names the full track (`NN/<track_id>.mp3`, NN the id modulo
//! 100) while the release ships two-minute excerpts as `audio/NN/<track_id>.2min.mp3`, which is
//! what this reads; `duration` is the full track's length, so it is kept as metadata
//! (`track_duration`) rather than as the clip's. `is_valid_subset` is `True`, `False` or empty
//! (read as false, as its authors do). The prompt is the caption; the work is the track (about
//! 1.6 captions each); `music::regroup_by(&clips, "artist_id")` makes it the artist, since 108 of
//! its 191 artists have several tracks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::MusicClip;
use crate::AudioError;

/// Every caption of `csv_path`; audio under `audio_dir` (the release's `audio/` folder).
pub fn load(csv_path: &Path, audio_dir: &Path) -> Result<Vec<MusicClip>, AudioError> {
    let rows = read_csv(
        csv_path,
        "hint: the Song Describer Dataset's song_describer.csv and audio.zip are on Zenodo \
         (record 10072001); unzip the audio beside it",
        &[
            "caption_id",
            "track_id",
            "caption",
            "is_valid_subset",
            "path",
            "duration",
        ],
    )?;
    rows.into_iter()
        .map(|(line, mut row)| {
            let text = row.get("caption_id").cloned().unwrap_or_default();
            let bad = |reason: String| AudioError::BadMetadataLine {
                path: csv_path.to_path_buf(),
                line,
                text: text.clone(),
                reason,
            };
            let path = PathBuf::from(&row["path"]);
            let folder = path.parent().filter(|f| {
                !f.as_os_str().is_empty()
                    && f.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
            });
            let (Some(folder), Some(stem)) = (folder, path.file_stem()) else {
                return Err(bad(format!(
                    "`path` {:?} is not NN/<track>.mp3",
                    row["path"]
                )));
            };
            let audio = audio_dir
                .join(folder)
                .join(format!("{}.2min.mp3", stem.to_string_lossy()));
            let valid = match row["is_valid_subset"].as_str() {
                "True" | "true" => "true",
                "False" | "false" | "" => "false",
                other => {
                    return Err(bad(format!(
                        "`is_valid_subset` {other:?} is not True/False"
                    )))
                }
            };
            row.insert("is_valid_subset".into(), valid.into());
            if let Some(d) = row.remove("duration") {
                row.insert("track_duration".into(), d);
            }
            let prompt = row.remove("caption").unwrap_or_default();
            let work = row.remove("track_id").unwrap_or_default();
            if prompt.trim().is_empty() || work.is_empty() {
                return Err(bad("empty `caption` or `track_id`".into()));
            }
            row.remove("path");
            Ok(MusicClip {
                audio,
                duration: None,
                sample_rate: None,
                prompt,
                work,
                metadata: row,
            })
        })
        .collect()
}

/// The rows of a CSV file with a header (quoted fields may span lines) as `(line of the row's
/// start, column -> value)`; `required` columns must exist, or the error lists the file's.
pub(crate) fn read_csv(
    path: &Path,
    hint: &str,
    required: &[&str],
) -> Result<Vec<(usize, BTreeMap<String, String>)>, AudioError> {
    if !path.is_file() {
        return Err(AudioError::MissingDataset {
            looked_in: vec![path.to_path_buf()],
            hint: hint.to_string(),
        });
    }
    let bad = |line: usize, reason: String| AudioError::BadMetadataLine {
        path: path.to_path_buf(),
        line,
        text: String::new(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| bad(1, e.to_string()))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad(1, e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if let Some(missing) = required.iter().find(|r| !header.iter().any(|h| h == *r)) {
        return Err(bad(
            1,
            format!("no column `{missing}`; the file has: {}", header.join(", ")),
        ));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            bad(line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let row = header
            .iter()
            .cloned()
            .zip(record.iter().map(|v| v.trim().to_string()))
            .collect();
        rows.push((line, row));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_release_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("song_describer.csv");
        std::fs::write(
            &csv,
            "caption_id,track_id,caption,is_valid_subset,familiarity,artist_id,album_id,path,duration\n\
             1,1086905,\"A soft, slow piano piece.\",True,0,490521,128063,05/1086905.mp3,182.5\n\
             7,1086905,Calm piano.,,2,490521,128063,05/1086905.mp3,182.5\n\
             9,14,Loud guitars.,False,1,3,4,14/14.mp3,300.0\n",
        )
        .unwrap();
        let clips = load(&csv, Path::new("/sdd/audio")).unwrap();
        assert_eq!(clips.len(), 3);
        assert_eq!(clips[0].audio, Path::new("/sdd/audio/05/1086905.2min.mp3"));
        assert_eq!(clips[0].prompt, "A soft, slow piano piece.");
        assert_eq!(clips[0].work, "1086905");
        assert_eq!(clips[1].work, clips[0].work);
        assert_eq!(clips[0].metadata["is_valid_subset"], "true");
        assert_eq!(clips[1].metadata["is_valid_subset"], "false");
        assert_eq!(clips[0].metadata["track_duration"], "182.5");
        assert_eq!(clips[0].metadata["artist_id"], "490521");
        assert_eq!(clips[0].duration, None);

        std::fs::write(&csv, "caption_id,track_id,caption\n1,2,x\n").unwrap();
        let err = load(&csv, Path::new("/sdd/audio")).unwrap_err().to_string();
        assert!(
            err.contains("song_describer.csv:1:") && err.contains("no column `is_valid_subset`"),
            "{err}"
        );
        let err = load(&dir.path().join("missing.csv"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.csv") && err.contains("Zenodo"),
            "{err}"
        );
    }
}
