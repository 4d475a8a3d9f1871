//! Music clips with text prompts, for adapting a text-to-music model to a style: the project's
//! folder format ([`folder`]), AudioCraft's manifests ([`audiocraft`]), MusicCaps' CSV
//! ([`musiccaps`]) and the Song Describer Dataset's CSV ([`song_describer`]), all read into
//! [`MusicClip`]s; and the two ways a low-resource study cuts them, both by work (a tune, a
//! track, a recording: never a clip of one work in training and another in test):
//! [`split_by_work`] and [`training_subset`].

pub mod audiocraft;
pub mod codec;
pub mod folder;
pub mod melodies;
pub mod musiccaps;
pub mod song_describer;
pub mod synth;
pub mod wav;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::AudioError;

/// One clip: where its audio is, what it is, and which work it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct MusicClip {
    pub audio: PathBuf,
    /// Seconds, when the manifest says.
    pub duration: Option<f64>,
    /// Hz, when the manifest says.
    pub sample_rate: Option<u32>,
    /// The text the model is conditioned on.
    pub prompt: String,
    /// The work the clip comes from: clips of one work stay in one split.
    pub work: String,
    /// Everything else the manifest holds, as text (style, artist, key, tags, ...).
    pub metadata: BTreeMap<String, String>,
}

/// Clips in `train`, `val` and `test`, no work in two of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MusicSplits {
    pub train: Vec<MusicClip>,
    pub val: Vec<MusicClip>,
    pub test: Vec<MusicClip>,
}

/// Splits `clips` by work: the works (sorted, then shuffled with `seed`) are dealt so that
/// about `val` and `test` of the clips (fractions) land in those splits and the rest in
/// `train`; every clip of a work goes where its work goes. Clips keep their order within a split.
pub fn split_by_work(
    clips: &[MusicClip],
    val: f64,
    test: f64,
    seed: u64,
) -> Result<MusicSplits, AudioError> {
    if !(0.0..1.0).contains(&val) || !(0.0..1.0).contains(&test) || val + test >= 1.0 {
        return Err(AudioError::InvalidSettings(format!(
            "split fractions val {val} and test {test} must be in [0, 1) and leave some for training"
        )));
    }
    let mut works: Vec<&str> = clips
        .iter()
        .map(|c| c.work.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    works.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut size: BTreeMap<&str, usize> = BTreeMap::new();
    for clip in clips {
        *size.entry(clip.work.as_str()).or_default() += 1;
    }
    let total = clips.len() as f64;
    let (test_target, val_target) = (test * total, val * total);
    // A work joins a held-out split only if that brings the split nearer its target.
    let nearer = |have: usize, n: usize, target: f64| {
        ((have + n) as f64 - target).abs() < (have as f64 - target).abs()
    };
    let mut side: BTreeMap<&str, u8> = BTreeMap::new();
    let (mut in_test, mut in_val) = (0usize, 0usize);
    for work in works {
        let n = size[work];
        let part = if nearer(in_test, n, test_target) {
            in_test += n;
            2
        } else if nearer(in_val, n, val_target) {
            in_val += n;
            1
        } else {
            0
        };
        side.insert(work, part);
    }
    let mut splits = MusicSplits::default();
    for clip in clips {
        match side[clip.work.as_str()] {
            2 => splits.test.push(clip.clone()),
            1 => splits.val.push(clip.clone()),
            _ => splits.train.push(clip.clone()),
        }
    }
    for (name, clips, asked) in [
        ("train", &splits.train, true),
        ("val", &splits.val, val > 0.0),
        ("test", &splits.test, test > 0.0),
    ] {
        if asked && clips.is_empty() {
            return Err(AudioError::InvalidSettings(format!(
                "splitting {} clips of {} works by work leaves `{name}` empty (val {val}, test \
                 {test}): too few works for these fractions",
                size.values().sum::<usize>(),
                size.len()
            )));
        }
    }
    Ok(splits)
}

/// `clips` with their work set to metadata field `key` (the Song Describer Dataset's
/// `artist_id`, say, to split by artist rather than by track); a clip without the field is an
/// error naming it.
pub fn regroup_by(clips: &[MusicClip], key: &str) -> Result<Vec<MusicClip>, AudioError> {
    clips
        .iter()
        .map(|clip| {
            let work = clip
                .metadata
                .get(key)
                .map(|w| w.trim())
                .filter(|w| !w.is_empty())
                .ok_or_else(|| {
                    AudioError::InvalidSettings(format!(
                        "clip {} has no `{key}` to group its work by",
                        clip.audio.display()
                    ))
                })?;
            Ok(MusicClip {
                work: work.to_string(),
                ..clip.clone()
            })
        })
        .collect()
}

/// A work id as text: trimmed; an integral number without a fractional part (`7.0` is `7`).
pub(crate) fn work_id(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => {
            let s = s.trim();
            (!s.is_empty() && s != "None").then(|| s.to_string())
        }
        serde_json::Value::Number(n) => Some(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// A low-resource training set of `size` clips from `clips`: whole works, in an order shuffled
/// with `seed`, until `size` clips are taken (the last work cut to fit). The subsets of one seed
/// are nested: the first 32 clips of the 128-clip subset are the 32-clip subset.
pub fn training_subset(
    clips: &[MusicClip],
    size: usize,
    seed: u64,
) -> Result<Vec<MusicClip>, AudioError> {
    if size > clips.len() {
        return Err(AudioError::InvalidSettings(format!(
            "a training subset of {size} clips asked of {} clips",
            clips.len()
        )));
    }
    let mut works: Vec<&str> = clips
        .iter()
        .map(|c| c.work.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    works.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut subset = Vec::with_capacity(size);
    for work in works {
        for clip in clips.iter().filter(|c| c.work == work) {
            if subset.len() == size {
                return Ok(subset);
            }
            subset.push(clip.clone());
        }
    }
    Ok(subset)
}

/// Checks that no work has clips in two of `splits` (name, clips); the error names the work,
/// both splits and where they were read from.
pub fn check_disjoint_works(
    splits: &[(&str, &[MusicClip])],
    origin: &Path,
) -> Result<(), AudioError> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, clips) in splits {
        for clip in *clips {
            match seen.get(clip.work.as_str()) {
                Some(first) if first != name => {
                    return Err(AudioError::InvalidSettings(format!(
                        "{}: work `{}` has clips in split `{first}` and in split `{name}`; \
                         splits must be by work, never by clip",
                        origin.display(),
                        clip.work
                    )))
                }
                _ => {
                    seen.insert(clip.work.as_str(), name);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clips(works: &[(&str, usize)]) -> Vec<MusicClip> {
        works
            .iter()
            .flat_map(|(work, n)| {
                (0..*n).map(move |i| MusicClip {
                    audio: PathBuf::from(format!("{work}-{i}.wav")),
                    duration: None,
                    sample_rate: None,
                    prompt: String::new(),
                    work: work.to_string(),
                    metadata: BTreeMap::new(),
                })
            })
            .collect()
    }

    fn works(clips: &[MusicClip]) -> BTreeSet<String> {
        clips.iter().map(|c| c.work.clone()).collect()
    }

    /// Every clip lands in one split, no work in two, the fractions roughly kept, the same for
    /// the same seed.
    #[test]
    fn splits_are_by_work() {
        let all = clips(&[
            ("a", 3),
            ("b", 1),
            ("c", 4),
            ("d", 2),
            ("e", 5),
            ("f", 1),
            ("g", 4),
        ]);
        let s = split_by_work(&all, 0.2, 0.2, 7).unwrap();
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), all.len());
        let (tr, va, te) = (works(&s.train), works(&s.val), works(&s.test));
        assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
        assert!(!s.val.is_empty() && !s.test.is_empty() && s.train.len() >= 10);
        assert_eq!(s, split_by_work(&all, 0.2, 0.2, 7).unwrap());
        check_disjoint_works(
            &[("train", &s.train), ("val", &s.val), ("test", &s.test)],
            Path::new("x"),
        )
        .unwrap();
        let err = check_disjoint_works(
            &[("train", &all[..2]), ("test", &all[1..3])],
            Path::new("m"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("work `a` has clips in split `train` and in split `test`"),
            "{err}"
        );
        assert!(split_by_work(&all, 0.6, 0.5, 0).is_err());
        // One work cannot be split; a large work does not overshoot a small test fraction.
        let err = split_by_work(&clips(&[("only", 5)]), 0.0, 0.2, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("leaves `test` empty") || err.contains("leaves `train` empty"),
            "{err}"
        );
        let lopsided = clips(&[("big", 20), ("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        for seed in 0..8 {
            let s = split_by_work(&lopsided, 0.0, 0.1, seed).unwrap();
            assert!(
                s.test.len() <= 4,
                "seed {seed}: {} test clips",
                s.test.len()
            );
            assert_eq!(s.train.len() + s.test.len(), 24);
        }
        // Regrouping by a metadata field.
        let mut tagged = clips(&[("t1", 1), ("t2", 1)]);
        for c in &mut tagged {
            c.metadata.insert("artist_id".into(), "A".into());
        }
        let by_artist = regroup_by(&tagged, "artist_id").unwrap();
        assert!(by_artist.iter().all(|c| c.work == "A"));
        assert!(regroup_by(&tagged, "album").is_err());
        assert_eq!(work_id(&serde_json::json!(7.0)).unwrap(), "7");
        assert_eq!(work_id(&serde_json::json!(" t1 ")).unwrap(), "t1");
        assert!(work_id(&serde_json::json!("None")).is_none());
    }

    /// Subsets take whole works first, are nested across sizes, and refuse more than there is.
    #[test]
    fn training_subsets_are_nested_and_by_work() {
        let all = clips(&[("a", 3), ("b", 1), ("c", 4), ("d", 2), ("e", 5)]);
        let small = training_subset(&all, 4, 3).unwrap();
        let large = training_subset(&all, 10, 3).unwrap();
        assert_eq!(small.len(), 4);
        assert_eq!(large[..4], small[..]);
        // Only the last work taken may be cut.
        let taken = works(&large);
        let whole = taken
            .iter()
            .filter(|w| {
                large.iter().filter(|c| &c.work == *w).count()
                    == all.iter().filter(|c| &c.work == *w).count()
            })
            .count();
        assert!(whole + 1 >= taken.len());
        assert!(training_subset(&all, 16, 3).is_err());
    }
}
