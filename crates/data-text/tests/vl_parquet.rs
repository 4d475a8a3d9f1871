//! The Hugging Face parquet copies of VQAv2, GQA and Flickr30k, read from files the `datasets`
//! library wrote in the copies' layouts (`ci/fixtures/vl_parquet.py`, which also wrote what the
//! readers must return), and bad files reported by path and row.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use peftbench_data_text::vl::parquet::{
    read_flickr30k_parquet, read_gqa_parquet, read_vqa_parquet, shards, EncodedImage,
};
use peftbench_data_text::vl::VlDataError;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vl_parquet")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn sha256(image: &EncodedImage) -> String {
    Sha256::digest(&image.bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The hub's shard names are found, a missing split gives none.
#[test]
fn shards_follow_the_hub_layouts() {
    let vqa = shards(&fixtures().join("vqa/data"), "validation");
    assert_eq!(
        vqa,
        vec![fixtures().join("vqa/data/validation-00000-of-00001.parquet")]
    );
    assert!(shards(&fixtures().join("vqa/data"), "train").is_empty());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("testdev")).unwrap();
    std::fs::write(dir.path().join("testdev/0000.parquet"), b"").unwrap();
    assert_eq!(
        shards(dir.path(), "testdev"),
        vec![dir.path().join("testdev/0000.parquet")]
    );
}

/// Every question with its ten answers in file order; each image once, from its first row.
#[test]
fn vqa_copy_reads_questions_and_each_image_once() {
    let files = shards(&fixtures().join("vqa/data"), "validation");
    let (questions, images) = read_vqa_parquet(&files).unwrap();
    let want = &expected()["vqa"];
    let want_questions = want["questions"].as_array().unwrap();
    assert_eq!(questions.len(), want_questions.len());
    for (q, w) in questions.iter().zip(want_questions) {
        assert_eq!(q.question_id, w["question_id"].as_u64().unwrap());
        assert_eq!(q.image_id, w["image_id"].as_u64().unwrap());
        assert_eq!(q.question, w["question"].as_str().unwrap());
        assert_eq!(q.question_type, w["question_type"].as_str().unwrap());
        assert_eq!(q.answer_type, w["answer_type"].as_str().unwrap());
        assert_eq!(
            q.multiple_choice_answer,
            w["multiple_choice_answer"].as_str().unwrap()
        );
        assert_eq!(q.answers, strings(&w["answers"]));
    }
    let want_images = want["images"].as_array().unwrap();
    assert_eq!(images.len(), want_images.len());
    for (image, w) in images.iter().zip(want_images) {
        assert_eq!(image.id, w["id"].as_str().unwrap());
        assert_eq!(sha256(image), w["sha256"].as_str().unwrap());
        assert_eq!(
            image.origin,
            format!("{} row {}", files[0].display(), w["row"].as_u64().unwrap())
        );
    }
}

/// Questions sorted by id as the JSON reader sorts them, their structural types read from the
/// `types` struct, and only the images a question shows, in the order first shown.
#[test]
fn gqa_copy_joins_questions_and_images_on_image_id() {
    let root = fixtures().join("gqa");
    let (questions, images) = read_gqa_parquet(
        &shards(&root.join("testdev_balanced_instructions"), "testdev"),
        &shards(&root.join("testdev_balanced_images"), "testdev"),
    )
    .unwrap();
    let want = &expected()["gqa"];
    let got: Vec<Value> = questions
        .iter()
        .map(|q| {
            serde_json::json!({"question_id": q.question_id, "image_id": q.image_id,
                "question": q.question, "answer": q.answer, "structural": q.structural})
        })
        .collect();
    assert_eq!(Value::Array(got), want["questions"]);
    let got: Vec<(String, String)> = images.iter().map(|i| (i.id.clone(), sha256(i))).collect();
    let wanted: Vec<(String, String)> = want["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap().to_string(),
                w["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, wanted);
}

/// Captions trimmed, the file name as the image's path, and `keep` choosing the images.
#[test]
fn flickr30k_copy_reads_captions_and_keeps_the_chosen_images() {
    let files = shards(&fixtures().join("flickr30k/data"), "test");
    let all = read_flickr30k_parquet(&files, &|_| true).unwrap();
    let want = expected()["flickr30k"].as_array().unwrap().clone();
    assert_eq!(all.len(), want.len());
    for ((image, bytes), w) in all.iter().zip(&want) {
        assert_eq!(image.path, w["filename"].as_str().unwrap());
        assert_eq!(image.id, w["img_id"].as_u64().unwrap());
        assert_eq!(image.split, "test");
        assert_eq!(image.captions, strings(&w["captions"]));
        assert_eq!(sha256(bytes), w["sha256"].as_str().unwrap());
    }
    let second = want[1]["filename"].as_str().unwrap().to_string();
    let kept = read_flickr30k_parquet(&files, &|name| name == second).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].0.path, second);
}

/// A file of another copy names the missing column and the columns it has; a file that is not
/// parquet says so with its path; a question whose image is in no image file names both.
#[test]
fn wrong_files_are_named() {
    let images = shards(&fixtures().join("gqa/testdev_balanced_images"), "testdev");
    let err = read_vqa_parquet(&images).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no column `question_id` (the file has: id, image)",
            images[0].display()
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let not_parquet = dir.path().join("validation-00000-of-00001.parquet");
    std::fs::write(&not_parquet, "question_id,image_id\n").unwrap();
    let err = read_vqa_parquet(std::slice::from_ref(&not_parquet)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: not a parquet file", not_parquet.display())),
        "{err}"
    );

    let instructions = shards(
        &fixtures().join("gqa/testdev_balanced_instructions"),
        "testdev",
    );
    let err = read_gqa_parquet(&instructions, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: question 20968378 shows image n288870, which is in none of the image files ()",
            instructions[0].display()
        )
    );
}

/// A null value is reported with the file and its row.
#[test]
fn a_null_value_names_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("testdev-00000-of-00001.parquet");
    let column = |values: Vec<Option<&str>>| Arc::new(StringArray::from(values)) as ArrayRef;
    let batch = RecordBatch::try_from_iter([
        ("id", column(vec![Some("1"), Some("2")])),
        ("imageId", column(vec![Some("n1"), Some("n2")])),
        (
            "question",
            column(vec![Some("Is it red?"), Some("Is it blue?")]),
        ),
        ("answer", column(vec![Some("yes"), None])),
    ])
    .unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let err = read_gqa_parquet(std::slice::from_ref(&path), &[]).unwrap_err();
    assert!(
        matches!(err, VlDataError::Parquet { row: Some(1), .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{} row 1: `answer` is null", path.display())
    );
}
