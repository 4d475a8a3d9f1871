//! Document collections in BEIR's `corpus.jsonl` layout: one JSON object per line with the id in
//! `_id` (BEIR) or `docid`/`doc_id` (HC4, ir_datasets), an optional `title` and the `text`.

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

/// Reads a JSONL corpus. A repeated id, a missing id or text, or a non-string field is an error
/// naming the line.
pub fn read_corpus(path: &Path) -> Result<Corpus, ReadError> {
    let mut corpus = Corpus::new();
    for (line_no, line) in text_lines(path)? {
        let object = json_object(path, line_no, &line)?;
        let id = string_field(path, line_no, &object, &["_id", "docid", "doc_id"])?;
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
