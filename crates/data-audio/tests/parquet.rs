//! Hugging Face parquet copies with their own column names: the ESC-50 copy's `target` and `fold`,
//! written here as small files in the hub layout (the bytes are not audio: the readers list clips,
//! they do not decode).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, Int64Array, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Fields};
use arrow::record_batch::RecordBatch;
use peftbench_data_audio::datasets::hf_parquet::{self, Folds};
use peftbench_data_audio::{AudioError, AudioSource};

/// One parquet file with an `audio` struct `{bytes, path}` (bytes `clip<id>`), and integer columns.
fn write_copy(path: &Path, ids: &[u32], int_columns: &[(&str, Vec<i64>)]) {
    let bytes: ArrayRef = Arc::new(BinaryArray::from_iter_values(
        ids.iter().map(|i| format!("clip{i}").into_bytes()),
    ));
    let paths: ArrayRef = Arc::new(StringArray::from_iter_values(
        ids.iter().map(|i| format!("{i}.wav")),
    ));
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let audio: ArrayRef = Arc::new(StructArray::new(fields, vec![bytes, paths], None));
    let mut columns = vec![("audio".to_string(), audio)];
    for (name, values) in int_columns {
        columns.push((
            name.to_string(),
            Arc::new(Int64Array::from(values.clone())) as ArrayRef,
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn clips(items: &[AudioSource]) -> Vec<String> {
    items
        .iter()
        .map(|s| match s {
            AudioSource::Encoded { bytes, .. } => String::from_utf8(bytes.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// ESC-50's copy: two `train` shards, `target` labels, folds 1 to 5 (clip `i` in fold `i % 5 + 1`).
fn esc50_copy(root: &Path) {
    let data = root.join("esc50/data");
    for (shard, ids) in [(0u32, 0..6u32), (1, 6..10)] {
        let ids: Vec<u32> = ids.collect();
        let target = ids.iter().map(|&i| i64::from(i % 3)).collect();
        let fold = ids.iter().map(|&i| i64::from(i % 5 + 1)).collect();
        write_copy(
            &data.join(format!("train-0000{shard}-of-00002.parquet")),
            &ids,
            &[
                ("target", target),
                ("fold", fold),
                ("esc10", vec![0; ids.len()]),
            ],
        );
    }
}

#[test]
fn a_fold_column_holds_out_one_fold() {
    let dir = tempfile::tempdir().unwrap();
    esc50_copy(dir.path());
    let folds = |held_out| Folds {
        column: "fold",
        held_out,
        count: 5,
    };
    let load = |split, held_out| {
        hf_parquet::load_fold_split(
            dir.path(),
            "esc50",
            split,
            "audio",
            "target",
            folds(held_out),
            None,
        )
    };
    let test = load("test", 2).unwrap();
    assert_eq!(clips(&test.items), ["clip1", "clip6"]);
    assert_eq!(test.labels, [1, 0]);
    assert_eq!(test.name, "parquet/esc50/fold2/test");
    // Classes counted over every fold: the test side alone has labels 0 and 1 only.
    assert_eq!(test.num_classes, 3);
    match &test.items[1] {
        AudioSource::Encoded { origin, .. } => {
            assert!(
                origin.ends_with("train-00001-of-00002.parquet row 0"),
                "{origin}"
            )
        }
        other => panic!("{other:?}"),
    }
    let train = load("train", 2).unwrap();
    assert_eq!(train.len(), 8);
    assert!(!clips(&train.items).contains(&"clip1".to_string()));
    // Every clip is held out exactly once over the five folds.
    let mut all: Vec<String> = (1..=5)
        .flat_map(|k| clips(&load("test", k).unwrap().items))
        .collect();
    all.sort();
    assert_eq!(all.len(), 10);
    all.dedup();
    assert_eq!(all.len(), 10);

    // A fold outside 1..=count names the file and row; so does a missing column.
    let e = hf_parquet::load_fold_split(
        dir.path(),
        "esc50",
        "test",
        "audio",
        "target",
        Folds {
            column: "fold",
            held_out: 1,
            count: 4,
        },
        None,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("train-00000-of-00002.parquet") && msg.contains("row 4: fold 5"),
        "{msg}"
    );
    let e = hf_parquet::load_fold_split(
        dir.path(),
        "esc50",
        "test",
        "audio",
        "target",
        Folds {
            column: "split",
            held_out: 1,
            count: 5,
        },
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&e, AudioError::Parquet { reason, .. } if reason.contains("no column \"split\"") && reason.contains("target, fold")),
        "{e}"
    );
    // Splits other than train and test are refused, as by the folder readers.
    assert!(load("validation", 1).is_ok());
    assert!(load("dev", 1).is_err());
}

#[test]
fn a_label_column_other_than_label() {
    let dir = tempfile::tempdir().unwrap();
    esc50_copy(dir.path());
    // Without folds: the `train` split's files, labels from `target`.
    let ds =
        hf_parquet::load_split(dir.path(), "esc50", "train", "audio", "target", Some(50)).unwrap();
    assert_eq!(ds.len(), 10);
    assert_eq!(ds.labels[..4], [0, 1, 2, 0]);
    assert_eq!(ds.num_classes, 50);
    // A task folder without files says where it looked and how to name the columns.
    let e = hf_parquet::load_split(dir.path(), "esc50", "test", "audio", "target", Some(50))
        .unwrap_err();
    match &e {
        AudioError::MissingDataset { looked_in, hint } => {
            assert!(looked_in.contains(&dir.path().join("esc50/data/test-*.parquet")));
            assert!(
                hint.contains("columns: { label: target, fold: fold }"),
                "{hint}"
            );
        }
        other => panic!("{other}"),
    }
    // The default column name is not there: the error lists the columns that are.
    let e = hf_parquet::load_split(dir.path(), "esc50", "train", "audio", "label", Some(50))
        .unwrap_err()
        .to_string();
    assert!(e.contains("label") && e.contains("target"), "{e}");
}
