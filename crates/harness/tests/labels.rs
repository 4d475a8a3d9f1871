//! Readers of datasets with a published class count read one's own clips in ESC-50's or
//! UrbanSound8K's layout with more classes than the published 50 or 10 with their own number,
//! instead of failing on the first label beyond it; fewer classes keep the published count.

use std::fs;
use std::path::Path;

use peftbench_data_audio::datasets::{esc50, urbansound};

fn touch(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"").unwrap();
}

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
