//! The readers on small files in the real layouts, and the errors on malformed ones: each names
//! the file and line.

use std::path::{Path, PathBuf};

use peftbench_metrics::trec::Run;
use peftbench_retrieval::corpus::{read_corpus_with_ids, DEFAULT_ID_FIELDS};
use peftbench_retrieval::{
    read_corpus, read_id_triples, read_qrels, read_queries, read_run, read_text_triples, write_run,
    ReadError,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Asserts that reading failed at `line` of `path` with a message containing `needle`.
fn assert_malformed<T: std::fmt::Debug>(
    result: Result<T, ReadError>,
    path: &Path,
    line: usize,
    needle: &str,
) {
    let error = result.expect_err("should be rejected");
    let message = error.to_string();
    match &error {
        ReadError::Malformed {
            path: p, line: l, ..
        } => {
            assert_eq!((p.as_path(), *l), (path, line), "{message}");
        }
        other => panic!("expected a malformed-line error, got {other}"),
    }
    assert!(message.contains(needle), "`{message}` lacks `{needle}`");
    assert!(
        message.starts_with(&format!("{}:{line}:", path.display())),
        "{message}"
    );
}

const CORPUS: &str = r#"{"_id": "d1", "title": "Berlin", "text": "Die Hauptstadt Deutschlands."}
{"_id": "d2", "text": "Paris est la capitale de la France."}

{"docid": "d3", "title": null, "text": "Helsinki on Suomen pääkaupunki."}
"#;

#[test]
fn reads_beir_corpus_queries_qrels_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = read_corpus(&write(dir.path(), "corpus.jsonl", CORPUS.as_bytes())).unwrap();
    assert_eq!(corpus.len(), 3);
    assert_eq!(
        corpus["d1"].full_text(),
        "Berlin Die Hauptstadt Deutschlands."
    );
    assert_eq!(corpus["d3"].title, "");

    let tsv = read_queries(&write(
        dir.path(),
        "q.tsv",
        "1\tcapital of Germany\r\n2\tFinland\n".as_bytes(),
    ))
    .unwrap();
    assert_eq!(tsv["1"], "capital of Germany");
    let jsonl = read_queries(&write(
        dir.path(),
        "q.jsonl",
        br#"{"_id": "1", "text": "capital"}
{"_id": 2, "text": "Finland", "metadata": {}}
"#,
    ))
    .unwrap();
    assert_eq!(jsonl["2"], "Finland");

    let qrels = read_qrels(
        &write(dir.path(), "qrels", b"1 0 d1 2\n1\t0\td2 0\n2 Q0 d3 1\n"),
        Some(&corpus),
    )
    .unwrap();
    assert_eq!(qrels.query("1").unwrap()["d1"], 2);
    let run = read_run(
        &write(
            dir.path(),
            "run",
            b"1 Q0 d2 1 3.5 bm25\n1 Q0 d1 2 1e1 bm25\n",
        ),
        Some(&corpus),
    )
    .unwrap();
    assert_eq!(run.ranking("1"), vec![("d1", 10.0), ("d2", 3.5)]);
}

#[test]
fn run_writer_round_trips_in_trec_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::new();
    for (q, d, s) in [
        ("q2", "b", 0.1),
        ("q1", "a", 1.0 / 3.0),
        ("q1", "c", 1.0 / 3.0),
        ("q1", "z", 7.0),
    ] {
        run.insert(q, d, s).unwrap();
    }
    let path = dir.path().join("out/run.trec");
    write_run(&path, &run, "rerank").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "q1 Q0 z 1 7 rerank\nq1 Q0 c 2 0.3333333333333333 rerank\nq1 Q0 a 3 0.3333333333333333 rerank\nq2 Q0 b 1 0.1 rerank\n"
    );
    assert_eq!(read_run(&path, None).unwrap(), run);
    assert!(write_run(&path, &run, "two words").is_err());
}

#[test]
fn malformed_trec_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = read_corpus(&write(dir.path(), "corpus.jsonl", CORPUS.as_bytes())).unwrap();

    let p = write(dir.path(), "qrels1", b"1 0 d1 1\n1 0 d2\n");
    assert_malformed(read_qrels(&p, None), &p, 2, "expected 4 fields");
    let p = write(dir.path(), "qrels2", b"1 0 d1 1\n\n1 0 d9 1\n");
    assert_malformed(
        read_qrels(&p, Some(&corpus)),
        &p,
        3,
        "unknown document id `d9`",
    );
    let p = write(dir.path(), "qrels3", b"1 0 d1 high\n");
    assert_malformed(read_qrels(&p, None), &p, 1, "not an integer");
    let p = write(dir.path(), "qrels4", b"1 0 d1 1\n1 0 d1 0\n");
    assert_malformed(read_qrels(&p, None), &p, 2, "judged twice");

    let p = write(dir.path(), "run1", b"1 Q0 d1 1 2.0 tag extra\n");
    assert_malformed(read_run(&p, None), &p, 1, "expected 6 fields");
    let p = write(dir.path(), "run2", b"1 Q0 d1 1 2.0 t\n1 Q0 d1 2 1.0 t\n");
    assert_malformed(read_run(&p, None), &p, 2, "retrieved twice");
    let p = write(dir.path(), "run3", b"1 Q0 d1 1 nan t\n");
    assert_malformed(read_run(&p, None), &p, 1, "non-finite");
    let p = write(dir.path(), "run4", b"1 Q0 d1 1 2.0 t\n1 Q0 dx 2 1.0 t\n");
    assert_malformed(
        read_run(&p, Some(&corpus)),
        &p,
        2,
        "unknown document id `dx`",
    );
}

#[test]
fn non_utf8_and_bad_json_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "q.tsv", b"1\tfine\n2\tcaf\xe9 latin-1\n");
    assert_malformed(read_queries(&p), &p, 2, "not valid UTF-8");
    let p = write(dir.path(), "q2.tsv", b"1\tone\ttwo\n");
    assert_malformed(read_queries(&p), &p, 1, "expected 2 tab-separated fields");
    let p = write(dir.path(), "q3.tsv", b"1\tone\n1\tagain\n");
    assert_malformed(read_queries(&p), &p, 2, "appears twice");

    let p = write(
        dir.path(),
        "c1.jsonl",
        b"{\"_id\": \"d1\", \"text\": \"ok\"}\n{\"_id\": \"d2\"}\n",
    );
    assert_malformed(read_corpus(&p), &p, 2, "missing field (one of text)");
    let p = write(
        dir.path(),
        "c2.jsonl",
        b"{\"_id\": \"d1\", \"text\": \"ok\"\n",
    );
    assert_malformed(read_corpus(&p), &p, 1, "invalid JSON");
    let p = write(
        dir.path(),
        "c3.jsonl",
        b"{\"_id\": \"d 1\", \"text\": \"ok\"}\n",
    );
    assert_malformed(read_corpus(&p), &p, 1, "whitespace");
    let p = write(
        dir.path(),
        "c4.jsonl",
        b"{\"_id\": \"d1\", \"text\": [\"a\"]}\n",
    );
    assert_malformed(read_corpus(&p), &p, 1, "should be a string");
    let p = write(
        dir.path(),
        "c5.jsonl",
        b"{\"_id\": \"d1\", \"text\": \"\xff\"}\n",
    );
    assert_malformed(read_corpus(&p), &p, 1, "not valid UTF-8");

    let missing = dir.path().join("absent.tsv");
    let error = read_queries(&missing).unwrap_err();
    assert!(matches!(error, ReadError::Io { .. }));
    assert!(error.to_string().contains("absent.tsv"), "{error}");
}

#[test]
fn triples_as_text_and_as_ids() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "t.tsv",
        b"what is bm25\tBM25 is a ranking function\tcats sleep\n",
    );
    let triples = read_text_triples(&p).unwrap();
    assert_eq!(triples[0].negative, "cats sleep");
    let p = write(dir.path(), "bad.tsv", b"q\tpos\n");
    assert_malformed(
        read_text_triples(&p),
        &p,
        1,
        "expected 3 tab-separated fields",
    );

    let corpus = read_corpus(&write(dir.path(), "corpus.jsonl", CORPUS.as_bytes())).unwrap();
    let queries = read_queries(&write(dir.path(), "q.tsv", b"7\tcapital of France\n")).unwrap();
    let p = write(dir.path(), "ids.tsv", b"7\td2\td1\n");
    let triples = read_id_triples(&p, &queries, &corpus).unwrap();
    assert_eq!(triples[0].positive, "Paris est la capitale de la France.");
    assert_eq!(triples[0].negative, "Berlin Die Hauptstadt Deutschlands.");
    let p = write(dir.path(), "ids2.tsv", b"7\td2\td1\n7\td2\td404\n");
    assert_malformed(
        read_id_triples(&p, &queries, &corpus),
        &p,
        2,
        "unknown document id `d404`",
    );
    let p = write(dir.path(), "ids3.tsv", b"8\td2\td1\n");
    assert_malformed(
        read_id_triples(&p, &queries, &corpus),
        &p,
        1,
        "unknown query id `8`",
    );
}

/// Corpora that name the id field otherwise (the Hugging Face HC4 copy: `id`) are read with that
/// field alone; the default fields do not include it.
#[test]
fn corpus_with_a_configured_id_field() {
    let dir = tempfile::tempdir().unwrap();
    let hc4 = b"{\"id\": \"a1\", \"title\": \"T\", \"text\": \"one\", \"url\": \"u\"}\n{\"id\": 7, \"text\": \"two\"}\n";
    let p = write(dir.path(), "hc4.jsonl", hc4);
    assert_malformed(
        read_corpus(&p),
        &p,
        1,
        "missing field (one of _id, docid, doc_id)",
    );
    let corpus = read_corpus_with_ids(&p, &["id"]).unwrap();
    assert_eq!(corpus.keys().collect::<Vec<_>>(), ["7", "a1"]);
    assert_eq!(corpus["a1"].full_text(), "T one");
    // A configured field is the only one read: a BEIR line has no `id`.
    let p = write(
        dir.path(),
        "mixed.jsonl",
        b"{\"id\": \"a1\", \"text\": \"one\"}\n{\"_id\": \"b2\", \"text\": \"two\"}\n",
    );
    assert_malformed(
        read_corpus_with_ids(&p, &["id"]),
        &p,
        2,
        "missing field (one of id)",
    );
    // The default fields, given explicitly, read as `read_corpus`.
    let p = write(dir.path(), "beir.jsonl", CORPUS.as_bytes());
    assert_eq!(
        read_corpus_with_ids(&p, &DEFAULT_ID_FIELDS).unwrap(),
        read_corpus(&p).unwrap()
    );
}
