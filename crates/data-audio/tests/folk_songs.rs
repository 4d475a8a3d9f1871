//! The folk-songs data as `ci/folk-songs.sh` writes it, read back through the folder format: every
//! style loads with splits disjoint by work, every clip decodes at the stated rate and length and
//! is not silent, and a clip's WAV is its MIDI file rendered. The data is generated (its licence
//! forbids committing it), so the test skips with a message when it is absent: it looks at
//! `$PEFTBENCH_FOLK_SONGS` (an error if set and missing), `$PEFTBENCH_DATA/folk-songs` and
//! `target/data/folk-songs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use peftbench_data_audio::decode_file;
use peftbench_data_audio::music::folder::load_style;
use peftbench_data_audio::music::synth::Renderer;
use peftbench_data_audio::music::wav::normalise_peak;
use peftbench_data_audio::music::MusicClip;
use rayon::prelude::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("PEFTBENCH_FOLK_SONGS") {
        let root = PathBuf::from(root);
        assert!(
            root.join("dataset.json").is_file(),
            "PEFTBENCH_FOLK_SONGS={} has no dataset.json; write it with ci/folk-songs.sh --out DIR",
            root.display()
        );
        return Some(root);
    }
    let candidates: Vec<PathBuf> = std::env::var_os("PEFTBENCH_DATA")
        .map(|d| PathBuf::from(d).join("folk-songs"))
        .into_iter()
        .chain([workspace().join("target/data/folk-songs")])
        .collect();
    let found = candidates
        .iter()
        .find(|p| p.join("dataset.json").is_file())
        .cloned();
    if found.is_none() {
        eprintln!(
            "skipped: no folk-songs data (looked in {candidates:?}); write it with \
             ci/folk-songs.sh (about two minutes), or set PEFTBENCH_FOLK_SONGS"
        );
    }
    found
}

fn soundfont() -> Option<PathBuf> {
    let asked = std::env::var_os("PEFTBENCH_SOUNDFONT").map(PathBuf::from);
    if let Some(path) = &asked {
        assert!(
            path.is_file(),
            "PEFTBENCH_SOUNDFONT={} is no file",
            path.display()
        );
    }
    asked
        .into_iter()
        .chain([
            PathBuf::from("/usr/share/sounds/sf2/TimGM6mb.sf2"),
            workspace().join("target/folk-songs/soundfont/usr/share/sounds/sf2/TimGM6mb.sf2"),
        ])
        .find(|p| p.is_file())
}

#[test]
fn folk_songs_load_decode_and_split_by_work() {
    let Some(root) = data_root() else { return };
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(info["sample_rate"], 32000);
    assert_eq!(info["channels"], 1);
    assert!(info["licence"].as_str().unwrap().contains("non-commercial"));
    let clip_seconds = info["clip_seconds"].as_f64().unwrap();
    let styles: Vec<String> = info["styles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(!styles.is_empty());

    let mut works_of_style: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut all: Vec<(String, MusicClip)> = Vec::new();
    for style in &styles {
        // Splits disjoint by work: load_style refuses anything else.
        let splits = load_style(&root, style).unwrap();
        assert!(
            !splits.train.is_empty() && !splits.test.is_empty(),
            "{style}: empty split"
        );
        let clips: Vec<MusicClip> = [splits.train, splits.val, splits.test].concat();
        let count = clips.len();
        for clip in &clips {
            assert_eq!(clip.metadata["style"], *style);
            assert!(!clip.prompt.is_empty() && clip.prompt.contains(&clip.metadata["instrument"]));
            assert_eq!(
                clip.duration,
                Some(clip_seconds),
                "{}",
                clip.audio.display()
            );
            assert_eq!(clip.sample_rate, Some(32000));
            works_of_style
                .entry(style)
                .or_default()
                .insert(clip.work.clone());
        }
        let stated = info["collections"][style]["clips"].as_u64().unwrap();
        assert_eq!(count as u64, stated, "{style}: dataset.json's clip count");
        eprintln!(
            "{style}: {count} clips of {} works",
            works_of_style[style.as_str()].len()
        );
        all.extend(clips.into_iter().map(|c| (style.clone(), c)));
    }
    // No work in two styles either (a target test tune is no source training tune).
    let styles_of: Vec<&BTreeSet<String>> = works_of_style.values().collect();
    for (i, a) in styles_of.iter().enumerate() {
        for b in &styles_of[i + 1..] {
            assert!(a.is_disjoint(b));
        }
    }

    // Every clip decodes at 32 kHz with its stated length and is not silent.
    let frames = (clip_seconds * 32000.0).round() as usize;
    let started = std::time::Instant::now();
    let bad: Vec<String> = all
        .par_iter()
        .filter_map(|(_, clip)| {
            let audio = match decode_file(&clip.audio) {
                Ok(a) => a,
                Err(e) => return Some(e.to_string()),
            };
            let peak = audio.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
            (audio.sample_rate != 32000 || audio.samples.len() != frames || peak < 0.05).then(
                || {
                    format!(
                        "{}: {} Hz, {} samples, peak {peak}",
                        clip.audio.display(),
                        audio.sample_rate,
                        audio.samples.len()
                    )
                },
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} bad clips, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    eprintln!(
        "decoded {} clips in {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );

    // A clip's audio is its MIDI file rendered (the first clip of each style).
    let Some(soundfont) = soundfont() else {
        eprintln!("skipped the re-render check: no soundfont (install it with ci/folk-songs.sh)");
        return;
    };
    let renderer = Renderer::load(&soundfont).unwrap();
    let peak = info["settings"]["peak"].as_f64().unwrap_or(0.0) as f32;
    for style in &styles {
        let (_, clip) = all.iter().find(|(s, _)| s == style).unwrap();
        let stem = clip.audio.file_stem().unwrap().to_string_lossy();
        let midi = root.join("midi").join(style).join(format!("{stem}.mid"));
        let mut again = renderer
            .render_file(&midi, Some(clip_seconds as f32))
            .unwrap();
        if peak > 0.0 {
            again = normalise_peak(&again, peak);
        }
        let stored = decode_file(&clip.audio).unwrap().samples;
        let worst = again
            .iter()
            .zip(&stored)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst < 2e-4,
            "{}: differs from its MIDI by {worst}",
            clip.audio.display()
        );
    }
}
