//! The dataset readers on generated fixtures in each dataset's published layout (files are empty: the
//! readers list, they do not decode).

use std::fs;
use std::path::Path;

use peftbench_data_audio::datasets::{esc50, fluent, speech_commands, urbansound};
use peftbench_data_audio::{AudioError, AudioSource};

fn touch(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"").unwrap();
}

fn names(items: &[AudioSource]) -> Vec<String> {
    items
        .iter()
        .map(|s| match s {
            AudioSource::File(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
            other => other.origin(),
        })
        .collect()
}

#[test]
fn esc50_rotates_five_folds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut csv = String::from("filename,fold,target,category,esc10,src_file,take\n");
    for i in 0..20u32 {
        let (fold, target) = (i % 5 + 1, i % 50);
        csv.push_str(&format!(
            "{fold}-{i}-A-{target}.wav,{fold},{target},class{target},False,{i},A\n"
        ));
        touch(&root.join(format!("audio/{fold}-{i}-A-{target}.wav")));
    }
    touch(&root.join("meta/esc50.csv"));
    fs::write(root.join("meta/esc50.csv"), csv).unwrap();
    let mut seen = Vec::new();
    for fold in 1..=5 {
        let test = esc50::load_split(root, "test", fold).unwrap();
        let train = esc50::load_split(root, "train", fold).unwrap();
        assert_eq!((test.len(), train.len()), (4, 16));
        assert_eq!(test.num_classes, 50);
        assert!(names(&test.items)
            .iter()
            .all(|n| n.starts_with(&format!("{fold}-"))));
        assert!(names(&train.items)
            .iter()
            .all(|n| !n.starts_with(&format!("{fold}-"))));
        seen.extend(names(&test.items));
    }
    // Every clip is tested exactly once across the rotation.
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20);
    assert!(matches!(
        esc50::load_split(root, "test", 6),
        Err(AudioError::InvalidSettings(_))
    ));
    let missing = esc50::load_split(&root.join("nope"), "test", 1)
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("nope/meta/esc50.csv") && missing.contains("ESC-50"),
        "{missing}"
    );
}

#[test]
fn esc50_bad_rows_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    touch(&dir.path().join("meta/esc50.csv"));
    fs::write(
        dir.path().join("meta/esc50.csv"),
        "filename,fold,target,category\na.wav,1,3,x\nb.wav,two,3,x\n",
    )
    .unwrap();
    let err = esc50::load_split(dir.path(), "test", 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("esc50.csv:3") && err.contains("two"), "{err}");
}

#[test]
fn urbansound8k_uses_the_given_ten_folds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut csv = String::from("slice_file_name,fsID,start,end,salience,fold,classID,class\n");
    for i in 0..30u32 {
        let (fold, class) = (i % 10 + 1, i % 10);
        let name = format!("{i}-{class}-0-0.wav");
        csv.push_str(&format!("{name},{i},0.0,4.0,1,{fold},{class},c{class}\n"));
        touch(&root.join(format!("audio/fold{fold}/{name}")));
    }
    touch(&root.join("metadata/UrbanSound8K.csv"));
    fs::write(root.join("metadata/UrbanSound8K.csv"), csv).unwrap();
    let test = urbansound::load_split(root, "test", 3).unwrap();
    let train = urbansound::load_split(root, "train", 3).unwrap();
    assert_eq!((test.len(), train.len()), (3, 27));
    for item in &test.items {
        let AudioSource::File(p) = item else { panic!() };
        assert!(p.starts_with(root.join("audio/fold3")) && p.exists());
    }
    assert_eq!(test.class_names[2], "c2");
}

#[test]
fn speech_commands_v2_lists_and_35_words() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let words: Vec<String> = (0..35).map(|i| format!("word{i:02}")).collect();
    for w in &words {
        for n in 0..3 {
            touch(&root.join(format!("{w}/spk_nohash_{n}.wav")));
        }
    }
    touch(&root.join("_background_noise_/white_noise.wav"));
    let val: Vec<String> = words
        .iter()
        .map(|w| format!("{w}/spk_nohash_1.wav"))
        .collect();
    let test: Vec<String> = words
        .iter()
        .map(|w| format!("{w}/spk_nohash_2.wav"))
        .collect();
    fs::write(root.join("validation_list.txt"), val.join("\n")).unwrap();
    fs::write(root.join("testing_list.txt"), test.join("\n") + "\n").unwrap();
    let train = speech_commands::load_split(root, "train").unwrap();
    let valid = speech_commands::load_split(root, "validation").unwrap();
    let testing = speech_commands::load_split(root, "test").unwrap();
    assert_eq!(train.num_classes, speech_commands::NUM_CLASSES);
    assert_eq!((train.len(), valid.len(), testing.len()), (35, 35, 35));
    assert!(names(&train.items).iter().all(|n| n == "spk_nohash_0.wav"));
    assert!(names(&testing.items)
        .iter()
        .all(|n| n == "spk_nohash_2.wav"));
    assert_eq!(train.labels[..3], [0, 1, 2]);
    assert!(!train.class_names.iter().any(|c| c.starts_with('_')));
}

#[test]
fn fluent_speech_commands_intents_from_action_object_location() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let header = ",path,speakerId,transcription,action,object,location\n";
    let train = format!(
        "{header}0,wavs/speakers/a/1.wav,a,\"Turn on the lights, please\",activate,lights,none\n\
         1,wavs/speakers/a/2.wav,a,Heat up the kitchen,increase,heat,kitchen\n\
         2,wavs/speakers/b/3.wav,b,Lights on,activate,lights,none\n"
    );
    let test = format!(
        "{header}0,wavs/speakers/c/4.wav,c,More heat in the kitchen,increase,heat,kitchen\n"
    );
    touch(&root.join("data/train_data.csv"));
    fs::write(root.join("data/train_data.csv"), train).unwrap();
    fs::write(root.join("data/test_data.csv"), test).unwrap();
    let tr = fluent::load_split(root, "train").unwrap();
    assert_eq!(tr.num_classes, 2);
    assert_eq!(
        tr.class_names,
        vec!["activate|lights|none", "increase|heat|kitchen"]
    );
    assert_eq!(tr.labels, vec![0, 1, 0]);
    let te = fluent::load_split(root, "test").unwrap();
    assert_eq!(te.labels, vec![1]);
    let AudioSource::File(p) = &te.items[0] else {
        panic!()
    };
    assert_eq!(p, &root.join("wavs/speakers/c/4.wav"));
}

// Readers with a published class count (ESC-50's 50, UrbanSound8K's 10) read one's own clips in
// their layout with more classes with the data's own number, instead of failing on the first label
// beyond it; fewer classes keep the published count.

#[test]
fn esc50_layout_with_more_classes_counts_the_datas() {
    for (classes, expected) in [(64u32, 64), (12, esc50::NUM_CLASSES)] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut csv = String::from("filename,fold,target,category,esc10,src_file,take\n");
        for target in 0..classes {
            let fold = target % 5 + 1;
            let name = format!("{fold}-{target}-A-{target}.wav");
            csv.push_str(&format!(
                "{name},{fold},{target},sound{target},False,{target},A\n"
            ));
            touch(&root.join("audio").join(&name));
        }
        touch(&root.join("meta/esc50.csv"));
        fs::write(root.join("meta/esc50.csv"), csv).unwrap();
        for split in ["train", "test"] {
            let ds = esc50::load_split(root, split, 1).unwrap();
            assert_eq!(ds.num_classes, expected, "{split}");
            assert_eq!(ds.class_names.len(), expected);
        }
        let test = esc50::load_split(root, "test", 1).unwrap();
        assert_eq!(
            test.class_names[classes as usize - 1],
            format!("sound{}", classes - 1)
        );
    }
}

#[test]
fn urbansound8k_layout_with_more_classes_counts_the_datas() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut csv = String::from("slice_file_name,fsID,start,end,salience,fold,classID,class\n");
    for class in 0..14u32 {
        // Four more than UrbanSound8K's ten.
        let fold = class % 10 + 1;
        let name = format!("{class}-{class}-0-0.wav");
        csv.push_str(&format!(
            "{name},{class},0.0,4.0,1,{fold},{class},c{class}\n"
        ));
        touch(&root.join(format!("audio/fold{fold}/{name}")));
    }
    touch(&root.join("metadata/UrbanSound8K.csv"));
    fs::write(root.join("metadata/UrbanSound8K.csv"), csv).unwrap();
    let train = urbansound::load_split(root, "train", 1).unwrap();
    assert_eq!(train.num_classes, 14);
    assert_eq!(train.class_names[13], "c13");
}
