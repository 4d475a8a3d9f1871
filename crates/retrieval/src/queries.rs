//! Queries, as TSV (`qid<TAB>text`, MS MARCO's `queries.*.tsv`) or JSONL (`{"_id": .., "text": ..}`,
//! BEIR's `queries.jsonl`; `qid`/`query` are accepted as the field names too, as in HC4 and
//! ir_datasets exports).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{text_lines, ReadError};
use crate::json_fields::{json_object, string_field};

/// Query id → query text, in id order.
pub type Queries = BTreeMap<String, String>;

/// Reads queries, choosing the layout from the extension: `.jsonl` is JSON lines, anything else
/// (`.tsv`, `.txt`) is `qid<TAB>text`. A repeated query id is an error.
pub fn read_queries(path: &Path) -> Result<Queries, ReadError> {
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut queries = Queries::new();
    for (line_no, line) in text_lines(path)? {
        let (id, text) = if jsonl {
            let object = json_object(path, line_no, &line)?;
            (
                string_field(path, line_no, &object, &["_id", "qid", "query_id"])?,
                string_field(path, line_no, &object, &["text", "query"])?,
            )
        } else {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != 2 {
                return Err(ReadError::malformed(
                    path,
                    line_no,
                    format!(
                        "expected 2 tab-separated fields (qid, text), found {}",
                        fields.len()
                    ),
                ));
            }
            (fields[0].trim().to_string(), fields[1].to_string())
        };
        if id.is_empty() {
            return Err(ReadError::malformed(path, line_no, "empty query id"));
        }
        if queries.contains_key(&id) {
            return Err(ReadError::malformed(
                path,
                line_no,
                format!("query id `{id}` appears twice"),
            ));
        }
        queries.insert(id, text);
    }
    Ok(queries)
}
