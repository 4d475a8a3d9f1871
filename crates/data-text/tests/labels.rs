//! A task's classes come from its data when the data format's own class list does not fit it: a
//! topic set of one's own in SIB-200's layout is read as it is, and a mismatch names the labels
//! the data has and the ones the format expects.

use std::path::Path;

use peftbench_data_text::{read_sib200, LabelSet, SIB200_CATEGORIES, SIB200_LABELS};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn sib200_data_keeps_the_datasets_category_order() {
    // Three of the seven categories present: ids still follow SIB-200's list.
    let train = read_sib200(&fixtures().join("sib200"), "hau_Latn", "train").unwrap();
    let labels = LabelSet::for_task(
        7,
        Some(SIB200_LABELS),
        train.iter().map(|e| e.label.as_str()),
    )
    .unwrap();
    assert_eq!(labels.names(), SIB200_CATEGORIES);
}

#[test]
fn own_topics_in_the_sib200_layout_are_read_from_the_data() {
    let train = read_sib200(&fixtures().join("sib200_own_topics"), "eng_Latn", "train").unwrap();
    let labels = LabelSet::for_task(
        19,
        Some(SIB200_LABELS),
        train.iter().map(|e| e.label.as_str()),
    )
    .unwrap();
    assert_eq!(labels.len(), 19);
    assert_eq!(labels.name(0), Some("agriculture"));
    assert_eq!(labels.name(18), Some("weather"));
    assert!(labels.id("science/technology").is_none());
}

#[test]
fn a_mismatch_names_the_datas_labels_and_the_formats() {
    let train = read_sib200(&fixtures().join("sib200_own_topics"), "eng_Latn", "train").unwrap();
    let err = LabelSet::for_task(
        7,
        Some(SIB200_LABELS),
        train.iter().map(|e| e.label.as_str()),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("declares num_classes 7 but its data has 19 labels (agriculture, banking,")
            && msg.contains("weather)")
            && msg.contains("the sib200 format's classes are 7 (science/technology, travel,")
            && msg.contains("declare num_classes 19"),
        "{msg}"
    );
    // Without a format list, only the data's labels are named.
    let err = LabelSet::for_task(3, None, ["b", "a", "b"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the task declares num_classes 3 but its data has 2 labels (a, b); declare num_classes \
         2, or list the task's `labels` to fix their order and number"
    );
}
