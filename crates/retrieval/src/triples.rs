//! MS MARCO-style training triples, one `(query, positive passage, negative passage)` per line:
//! either as text (`triples.train.small.tsv`: `query<TAB>positive<TAB>negative`) or as ids
//! (`qidpidtriples.train.full.tsv`: `qid<TAB>pid<TAB>nid`) resolved against queries and a corpus.

use std::path::Path;

use crate::corpus::Corpus;
use crate::error::{text_lines, ReadError};
use crate::queries::Queries;

/// One training example for a cross-encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triple {
    /// Query text.
    pub query: String,
    /// Text of a relevant passage.
    pub positive: String,
    /// Text of a non-relevant passage.
    pub negative: String,
}

/// Reads text triples (`query<TAB>positive<TAB>negative`).
pub fn read_text_triples(path: &Path) -> Result<Vec<Triple>, ReadError> {
    text_lines(path)?
        .into_iter()
        .map(|(line_no, line)| {
            let [query, positive, negative] = three_fields(path, line_no, &line)?;
            Ok(Triple {
                query: query.to_string(),
                positive: positive.to_string(),
                negative: negative.to_string(),
            })
        })
        .collect()
}

/// Reads id triples (`qid<TAB>positive docid<TAB>negative docid`), looking the texts up; an id
/// missing from `queries` or `corpus` is an error naming the line.
pub fn read_id_triples(
    path: &Path,
    queries: &Queries,
    corpus: &Corpus,
) -> Result<Vec<Triple>, ReadError> {
    text_lines(path)?
        .into_iter()
        .map(|(line_no, line)| {
            let [query_id, positive_id, negative_id] = three_fields(path, line_no, &line)?;
            let query = queries.get(query_id.trim()).ok_or_else(|| {
                ReadError::malformed(path, line_no, format!("unknown query id `{query_id}`"))
            })?;
            let passage = |id: &str| {
                corpus.get(id.trim()).map(|d| d.full_text()).ok_or_else(|| {
                    ReadError::malformed(path, line_no, format!("unknown document id `{id}`"))
                })
            };
            Ok(Triple {
                query: query.clone(),
                positive: passage(positive_id)?,
                negative: passage(negative_id)?,
            })
        })
        .collect()
}

fn three_fields<'a>(path: &Path, line_no: usize, line: &'a str) -> Result<[&'a str; 3], ReadError> {
    let fields: Vec<&str> = line.split('\t').collect();
    match fields[..] {
        [a, b, c] => Ok([a, b, c]),
        _ => Err(ReadError::malformed(
            path,
            line_no,
            format!(
                "expected 3 tab-separated fields (query, positive, negative), found {}",
                fields.len()
            ),
        )),
    }
}
