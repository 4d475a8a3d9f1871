//! MusicCaps (Agostinelli et al., 2023, with MusicLM): `musiccaps-public.csv`, one ten-second
//! clip of a YouTube video per row, with columns `ytid, start_s, end_s,
//! audioset_positive_labels, aspect_list, caption, author_id, is_balanced_subset,
//! is_audioset_eval` (booleans `True` / `False`; `aspect_list` a Python list literal; some
//! captions span lines). The audio is not distributed: clips are downloaded per row and, by the
//! common convention (its download scripts, stable-audio-metrics), named `<ytid>.wav` in one
//! folder. The prompt is the caption; the work is the video (one clip per video).

use std::path::Path;

use super::MusicClip;
use crate::AudioError;

/// Every row of `csv_path`, its audio `<audio_dir>/<ytid>.wav`.
pub fn load(csv_path: &Path, audio_dir: &Path) -> Result<Vec<MusicClip>, AudioError> {
    let rows = super::song_describer::read_csv(
        csv_path,
        "hint: MusicCaps' metadata is musiccaps-public.csv (Google's release, also on the Hugging \
         Face hub as google/MusicCaps); its clips are downloaded per row as <ytid>.wav",
        &[
            "ytid",
            "start_s",
            "end_s",
            "caption",
            "aspect_list",
            "is_audioset_eval",
        ],
    )?;
    rows.into_iter()
        .map(|(line, mut row)| {
            let text = row.get("ytid").cloned().unwrap_or_default();
            let bad = |reason: String| AudioError::BadMetadataLine {
                path: csv_path.to_path_buf(),
                line,
                text: text.clone(),
                reason,
            };
            let seconds = |key: &str| -> Result<f64, AudioError> {
                row[key]
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        bad(format!("`{key}` {:?} is not a number of seconds", row[key]))
                    })
            };
            let duration = seconds("end_s")? - seconds("start_s")?;
            if duration <= 0.0 {
                return Err(bad("`end_s` is not after `start_s`".into()));
            }
            let aspects =
                python_list(&row["aspect_list"]).map_err(|e| bad(format!("`aspect_list`: {e}")))?;
            let ytid = row.remove("ytid").unwrap_or_default();
            let prompt = row.remove("caption").unwrap_or_default();
            if ytid.is_empty() || prompt.trim().is_empty() {
                return Err(bad("empty `ytid` or `caption`".into()));
            }
            row.insert("aspect_list".into(), aspects.join(", "));
            Ok(MusicClip {
                audio: audio_dir.join(format!("{ytid}.wav")),
                duration: Some(duration),
                sample_rate: None,
                prompt,
                work: ytid,
                metadata: row,
            })
        })
        .collect()
}

/// The items of a Python list literal of strings (`['a', "b's", 'c']`).
pub fn python_list(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| format!("{text:?} is not a list"))?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let Some(quote) = chars.next() else {
            return Ok(items);
        };
        if quote != '\'' && quote != '"' {
            return Err(format!("{text:?}: an item is not a quoted string"));
        }
        let mut item = String::new();
        loop {
            match chars.next() {
                Some('\\') => item.extend(chars.next()),
                Some(c) if c == quote => break,
                Some(c) => item.push(c),
                None => return Err(format!("{text:?}: an unterminated string")),
            }
        }
        items.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in the release's layout, one caption over two lines and an aspect with an
    /// apostrophe in double quotes (doubled inside the quoted CSV field, as the release has it).
    #[test]
    fn reads_the_release_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("musiccaps-public.csv");
        std::fs::write(
            &csv,
            "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval\n\
             -0Gj8-vB1q4,30,40,\"/m/0140xf,/m/02cjck\",\"['low quality', 'sustained strings melody', \"\"children's song\"\"]\",\"The low quality recording features a ballad.\nIt sounds sad.\",4,False,True\n\
             -0SdAVK79lg,30,40,/m/0155w,\"['guitar song', 'piano']\",This song features an electric guitar.,0,False,False\n",
        )
        .unwrap();
        let clips = load(&csv, Path::new("/audio")).unwrap();
        assert_eq!(clips.len(), 2);
        assert_eq!(clips[0].audio, Path::new("/audio/-0Gj8-vB1q4.wav"));
        assert_eq!(clips[0].duration, Some(10.0));
        assert_eq!(clips[0].work, "-0Gj8-vB1q4");
        assert_eq!(
            clips[0].prompt,
            "The low quality recording features a ballad.\nIt sounds sad."
        );
        assert_eq!(
            clips[0].metadata["aspect_list"],
            "low quality, sustained strings melody, children's song"
        );
        assert_eq!(clips[0].metadata["is_audioset_eval"], "True");
        assert_eq!(clips[1].metadata["audioset_positive_labels"], "/m/0155w");

        std::fs::write(
            &csv,
            "ytid,start_s,end_s,aspect_list,caption,is_audioset_eval\nabc,30,forty,\"['a']\",c,False\n",
        )
        .unwrap();
        let err = load(&csv, Path::new("/audio")).unwrap_err().to_string();
        assert!(
            err.contains("musiccaps-public.csv:2:") && err.contains("`end_s`"),
            "{err}"
        );
    }

    #[test]
    fn python_lists_parse() {
        assert_eq!(python_list("[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            python_list(r#"['a', "b's",'c\'d']"#).unwrap(),
            ["a", "b's", "c'd"]
        );
        assert!(python_list("['a'").is_err());
        assert!(python_list("[a]").is_err());
    }
}
