//! Every reader on small files in the real formats, and every kind of malformed input reported
//! with its file and line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peftbench_data_text::{
    read_classification, read_conll, read_corpus, read_sib200, Columns, LabelSet, TextDataError,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const TEXT_LABEL: Columns<'static> = Columns {
    text: "text",
    label: "label",
};

#[test]
fn sib200_layout() {
    let train = read_sib200(&fixture("sib200"), "hau_Latn", "train").unwrap();
    assert_eq!(train.len(), 3);
    assert_eq!(train[0].label, "sports");
    assert_eq!(train[2].text, "Jirgin sama ya tashi da safe.");
    let labels = LabelSet::from_labels(train.iter().map(|e| e.label.as_str()));
    assert_eq!(labels.names(), ["health", "sports", "travel"]);
    let err = read_sib200(&fixture("sib200"), "yor_Latn", "train").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("yor_Latn/train.tsv") && msg.contains("sib-200"),
        "{msg}"
    );
}

#[test]
fn csv_with_quoted_commas_and_newlines() {
    let rows = read_classification(&fixture("sentiment.csv"), None, &TEXT_LABEL).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].text, "Great film, really");
    assert_eq!(rows[1].text, "Line one\nline two");
    assert_eq!(rows[2].label, "positive");
}

#[test]
fn jsonl_with_string_or_integer_labels() {
    let rows = read_classification(&fixture("sentiment.jsonl"), None, &TEXT_LABEL).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].label, "0");
    let err = read_classification(&fixture("missing_label.jsonl"), None, &TEXT_LABEL).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("missing_label.jsonl:1: no field `label`"),
        "{err}"
    );
}

#[test]
fn tsv_wrong_column_and_field_count_are_located() {
    let err = read_classification(
        &fixture("bad_columns.tsv"),
        None,
        &Columns {
            text: "sentence",
            label: "category",
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("bad_columns.tsv:1: no column `sentence`"),
        "{err}"
    );
    let err = read_classification(
        &fixture("bad_columns.tsv"),
        None,
        &Columns {
            text: "text",
            label: "category",
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("bad_columns.tsv:2: 2 tab-separated fields, the header has 3"),
        "{err}"
    );
}

#[test]
fn conll_masakhaner_and_wikiann_layouts() {
    let masakha = read_conll(&fixture("masakhaner.txt"), false).unwrap();
    assert_eq!(
        masakha.len(),
        2,
        "-DOCSTART- skipped, blank lines split sentences"
    );
    assert_eq!(masakha[0].tokens, ["Emir", "of", "Kano"]);
    assert_eq!(masakha[0].tags, ["B-PER", "O", "B-LOC"]);
    let wikiann = read_conll(&fixture("wikiann.tsv"), true).unwrap();
    assert_eq!(wikiann[1].tokens, ["Obama", "Barack"]);
    assert_eq!(wikiann[1].tags, ["B-PER", "I-PER"]);
}

#[test]
fn conll_missing_tag_and_bad_utf8_are_located() {
    let err = read_conll(&fixture("missing_tag.txt"), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("missing_tag.txt:2: token `of` has no tag"),
        "{err}"
    );
    let err = read_conll(&fixture("not_utf8.txt"), false).unwrap_err();
    assert!(
        matches!(err, TextDataError::NotUtf8 { line: 2, .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("not_utf8.txt:2: text is not valid UTF-8"));
}

#[test]
fn plain_text_and_parquet_corpora() -> anyhow::Result<()> {
    let lines = read_corpus(&fixture("corpus.txt"), "text")?;
    assert_eq!(lines, ["first line of corpus", "second line"]);

    use arrow::array::{ArrayRef, StringArray};
    use arrow::record_batch::RecordBatch;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("train.parquet");
    let column: ArrayRef = Arc::new(StringArray::from(vec![
        Some("habari"),
        None,
        Some("asante"),
    ]));
    let batch = RecordBatch::try_from_iter([("text", column)])?;
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path)?, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    assert_eq!(read_corpus(&path, "text")?, ["habari", "asante"]);
    let err = read_corpus(&path, "content").unwrap_err();
    assert!(err.to_string().contains("no column `content`"), "{err}");
    Ok(())
}
