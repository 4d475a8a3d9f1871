//! Field access for the JSONL readers, with errors that name the file, line and field.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::ReadError;

/// Parses one line as a JSON object.
pub(crate) fn json_object(
    path: &Path,
    line_no: usize,
    line: &str,
) -> Result<Map<String, Value>, ReadError> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ReadError::malformed(
            path,
            line_no,
            "expected a JSON object",
        )),
        Err(e) => Err(ReadError::malformed(
            path,
            line_no,
            format!("invalid JSON: {e}"),
        )),
    }
}

/// The first of `names` present in `object`, as a string. Ids written as JSON numbers are
/// accepted in their decimal form (BEIR's MS MARCO export has them); anything else is an error.
pub(crate) fn string_field(
    path: &Path,
    line_no: usize,
    object: &Map<String, Value>,
    names: &[&str],
) -> Result<String, ReadError> {
    optional_string_field(path, line_no, object, names)?.ok_or_else(|| {
        ReadError::malformed(
            path,
            line_no,
            format!("missing field (one of {})", names.join(", ")),
        )
    })
}

/// Like [`string_field`], but `None` when none of `names` is present (or the value is null).
pub(crate) fn optional_string_field(
    path: &Path,
    line_no: usize,
    object: &Map<String, Value>,
    names: &[&str],
) -> Result<Option<String>, ReadError> {
    let Some((name, value)) = names
        .iter()
        .find_map(|n| object.get(*n).map(|value| (*n, value)))
    else {
        return Ok(None);
    };
    match value {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Value::Null => Ok(None),
        other => Err(ReadError::malformed(
            path,
            line_no,
            format!("field `{name}` should be a string, found {other}"),
        )),
    }
}
