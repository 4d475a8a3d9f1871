//! TREC qrels (`qid iter docid rel`) and run (`qid Q0 docid rank score tag`) files, whitespace
//! separated, as `trec_eval` reads them. The run's rank column is checked to be present but not
//! used: `trec_eval` ranks by score (see [`peftbench_metrics::trec`]).

use std::io::Write;
use std::path::Path;

use peftbench_metrics::trec::{Qrels, Run, TrecError};

use crate::corpus::Corpus;
use crate::error::{text_lines, ReadError};

/// Reads a qrels file. With `corpus`, a judged document missing from it is an error (a qrels file
/// of another collection, or a corpus truncated by mistake).
pub fn read_qrels(path: &Path, corpus: Option<&Corpus>) -> Result<Qrels, ReadError> {
    let mut qrels = Qrels::new();
    for (line_no, line) in text_lines(path)? {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [query, _iteration, doc, grade] = fields[..] else {
            return Err(ReadError::malformed(
                path,
                line_no,
                format!(
                    "expected 4 fields (qid iter docid rel), found {}",
                    fields.len()
                ),
            ));
        };
        let grade: i64 = grade.parse().map_err(|_| {
            ReadError::malformed(
                path,
                line_no,
                format!("relevance `{grade}` is not an integer"),
            )
        })?;
        check_known(path, line_no, doc, corpus)?;
        qrels
            .insert(query, doc, grade)
            .map_err(|e| trec_error(path, line_no, e))?;
    }
    Ok(qrels)
}

/// Reads a run file. With `corpus`, a retrieved document missing from it is an error.
pub fn read_run(path: &Path, corpus: Option<&Corpus>) -> Result<Run, ReadError> {
    let mut run = Run::new();
    for (line_no, line) in text_lines(path)? {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [query, _q0, doc, _rank, score, _tag] = fields[..] else {
            return Err(ReadError::malformed(
                path,
                line_no,
                format!(
                    "expected 6 fields (qid Q0 docid rank score tag), found {}",
                    fields.len()
                ),
            ));
        };
        let score: f64 = score.parse().map_err(|_| {
            ReadError::malformed(path, line_no, format!("score `{score}` is not a number"))
        })?;
        check_known(path, line_no, doc, corpus)?;
        run.insert(query, doc, score)
            .map_err(|e| trec_error(path, line_no, e))?;
    }
    Ok(run)
}

/// Writes `run` as a TREC run file: per query (in id order) the documents in `trec_eval`'s ranking
/// order with ranks from 1, scores in the shortest form that reads back exactly. Written to a
/// temporary file and renamed, so a killed run never leaves half a file.
pub fn write_run(path: &Path, run: &Run, tag: &str) -> Result<(), ReadError> {
    if tag.is_empty() || tag.chars().any(char::is_whitespace) {
        return Err(ReadError::malformed(
            path,
            0,
            format!("run tag `{tag}` is empty or contains whitespace"),
        ));
    }
    let mut text = Vec::new();
    for query in run.queries() {
        for (rank, (doc, score)) in run.ranking(query).into_iter().enumerate() {
            writeln!(text, "{query} Q0 {doc} {} {score} {tag}", rank + 1)
                .expect("writing to memory");
        }
    }
    let directory = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(directory).map_err(|e| ReadError::io(directory, e))?;
    let mut file =
        tempfile::NamedTempFile::new_in(directory).map_err(|e| ReadError::io(path, e))?;
    file.write_all(&text).map_err(|e| ReadError::io(path, e))?;
    file.persist(path)
        .map_err(|e| ReadError::io(path, e.error))?;
    Ok(())
}

fn check_known(
    path: &Path,
    line_no: usize,
    doc: &str,
    corpus: Option<&Corpus>,
) -> Result<(), ReadError> {
    match corpus {
        Some(corpus) if !corpus.contains_key(doc) => Err(ReadError::malformed(
            path,
            line_no,
            format!("unknown document id `{doc}` (not in the corpus)"),
        )),
        _ => Ok(()),
    }
}

fn trec_error(path: &Path, line_no: usize, error: TrecError) -> ReadError {
    ReadError::malformed(path, line_no, error.to_string())
}
