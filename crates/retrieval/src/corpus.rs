//! Document collections in BEIR's `corpus.jsonl` layout: one JSON object per line with the id in
//! `_id` (BEIR) or `docid`/`doc_id` (ir_datasets), or in a field the task names (the Hugging Face
//! HC4 corpus: `id`, with a reranking task's `corpus_id_field: id`), an optional `title` and the
//! `text`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{text_lines, ReadError};
use crate::json_fields::{json_object, optional_string_field, string_field};

/// One document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Title; empty when the collection has none.
    pub title: String,
    /// Body text.
    pub text: String,
}

impl Document {
    /// Title and text joined by a space, what BM25 indexes and the cross-encoder reads (BEIR's
    /// convention).
    pub fn full_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{} {}", self.title, self.text)
        }
    }
}

/// Document id → document, in id order.
pub type Corpus = BTreeMap<String, Document>;

/// The id fields a corpus is read with when none is configured, in the order they are looked for.
pub const DEFAULT_ID_FIELDS: [&str; 3] = ["_id", "docid", "doc_id"];

/// Reads a JSONL corpus with the ids in [`DEFAULT_ID_FIELDS`]. A repeated id, a missing id or text,
/// or a non-string field is an error naming the line.
pub fn read_corpus(path: &Path) -> Result<Corpus, ReadError> {
    read_corpus_with_ids(path, &DEFAULT_ID_FIELDS)
}

/// Reads a JSONL corpus whose ids are in the first of `id_fields` present on each line (a
/// configured field alone: `&["id"]`). Errors as [`read_corpus`]'s; a missing id names the fields
/// looked for.
pub fn read_corpus_with_ids(path: &Path, id_fields: &[&str]) -> Result<Corpus, ReadError> {
    let mut corpus = Corpus::new();
    for (line_no, line) in text_lines(path)? {
        let object = json_object(path, line_no, &line)?;
        let id = string_field(path, line_no, &object, id_fields)?;
        if id.is_empty() || id.chars().any(char::is_whitespace) {
            // TREC qrels and run files are whitespace-separated: such an id could not round-trip.
            return Err(ReadError::malformed(
                path,
                line_no,
                format!("document id `{id}` is empty or contains whitespace"),
            ));
        }
        let title = optional_string_field(path, line_no, &object, &["title"])?.unwrap_or_default();
        let text = string_field(path, line_no, &object, &["text"])?;
        if corpus.contains_key(&id) {
            return Err(ReadError::malformed(
                path,
                line_no,
                format!("document id `{id}` appears twice"),
            ));
        }
        corpus.insert(id, Document { title, text });
    }
    Ok(corpus)
}
