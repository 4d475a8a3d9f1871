//! NLVR2's files (`train.json`, `dev.json`, `test1.json`, `test2.json`): one JSON object per line
//! with `sentence`, `label` (the strings `"True"` / `"False"`), `identifier`
//! (`<split>-<set id>-<pair id>-<sentence id>`), and `left_url`, `right_url`, `writer`,
//! `validation`, `synset`, `query`, ... which are ignored. The pair's images are
//! `<identifier without its sentence id>-img0.png` (left) and `-img1.png` (right); some are in
//! fact JPEGs under a `.png` name, which an image reader must sniff rather than trust.
//!
//! A malformed line, a label other than `True` / `False`, or an identifier without four
//! `-`-separated parts is an error naming the file and the 1-based line. Blank lines are skipped.

use std::path::Path;

use serde::Deserialize;

use super::{read_bytes, Result, VlDataError};

/// One sentence about a pair of images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nlvr2Example {
    /// `<split>-<set id>-<pair id>-<sentence id>`, e.g. `dev-850-0-0`.
    pub identifier: String,
    pub sentence: String,
    /// Whether the sentence is true of the pair.
    pub label: bool,
    /// The left image's file name, `<split>-<set id>-<pair id>-img0.png`.
    pub left_image: String,
    /// The right image's file name, `<split>-<set id>-<pair id>-img1.png`.
    pub right_image: String,
}

#[derive(Deserialize)]
struct RawExample {
    identifier: String,
    sentence: String,
    label: String,
}

/// Reads an NLVR2 JSON-lines file.
pub fn read_nlvr2(path: &Path) -> Result<Vec<Nlvr2Example>> {
    let bytes = read_bytes(path)?;
    let bad = |line: usize, reason: String| VlDataError::BadLine {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text =
            std::str::from_utf8(raw).map_err(|_| bad(n, "text is not valid UTF-8".into()))?;
        if text.trim().is_empty() {
            continue;
        }
        let r: RawExample = serde_json::from_str(text).map_err(|e| {
            let full = e.to_string();
            let reason = full
                .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
                .unwrap_or(&full);
            bad(
                n,
                format!("invalid record: {reason} (column {})", e.column()),
            )
        })?;
        let label = match r.label.as_str() {
            "True" => true,
            "False" => false,
            other => {
                return Err(bad(
                    n,
                    format!("label must be \"True\" or \"False\", got {other:?}"),
                ))
            }
        };
        let pair = pair_of(&r.identifier).ok_or_else(|| {
            bad(
                n,
                format!(
                    "identifier {:?} is not <split>-<set id>-<pair id>-<sentence id>",
                    r.identifier
                ),
            )
        })?;
        out.push(Nlvr2Example {
            left_image: format!("{pair}-img0.png"),
            right_image: format!("{pair}-img1.png"),
            identifier: r.identifier,
            sentence: r.sentence,
            label,
        });
    }
    Ok(out)
}

/// The identifier without its sentence id, or `None` when it does not have four non-empty parts.
fn pair_of(identifier: &str) -> Option<&str> {
    let parts: Vec<&str> = identifier.split('-').collect();
    if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    identifier.rsplit_once('-').map(|(pair, _)| pair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vl::write;

    const LINES: &str = "{\"validation\": {\"A\": \"True\"}, \"sentence\": \"One image shows exactly two dogs.\", \
        \"left_url\": \"http://example.invalid/a.jpg\", \"writer\": \"W1\", \"label\": \"True\", \
        \"right_url\": \"http://example.invalid/b.jpg\", \"synset\": \"n02084071\", \"query\": \"dogs 3\", \
        \"identifier\": \"dev-850-0-0\", \"extra_validations\": {}}\r\n\
        \n\
        {\"sentence\": \"There are no cats.\", \"label\": \"False\", \"identifier\": \"test1-12-3-1\"}\n";

    #[test]
    fn lines_read_with_their_image_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "dev.json", LINES);
        let rows = read_nlvr2(&path).unwrap();
        assert_eq!(
            rows,
            vec![
                Nlvr2Example {
                    identifier: "dev-850-0-0".into(),
                    sentence: "One image shows exactly two dogs.".into(),
                    label: true,
                    left_image: "dev-850-0-img0.png".into(),
                    right_image: "dev-850-0-img1.png".into(),
                },
                Nlvr2Example {
                    identifier: "test1-12-3-1".into(),
                    sentence: "There are no cats.".into(),
                    label: false,
                    left_image: "test1-12-3-img0.png".into(),
                    right_image: "test1-12-3-img1.png".into(),
                },
            ]
        );
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "{\"sentence\": \"s\", \"label\": \"true\", \"identifier\": \"dev-1-0-0\"}",
                "label must be \"True\" or \"False\", got \"true\"",
            ),
            (
                "{\"sentence\": \"s\", \"label\": \"True\", \"identifier\": \"dev-1-0\"}",
                "identifier \"dev-1-0\" is not <split>-<set id>-<pair id>-<sentence id>",
            ),
            (
                "{\"sentence\": \"s\", \"label\": \"True\"",
                "invalid record: EOF while parsing an object (column 33)",
            ),
            (
                "{\"label\": \"True\", \"identifier\": \"dev-1-0-0\"}",
                "invalid record: missing field `sentence` (column ",
            ),
        ];
        for (bad_line, message) in cases {
            let text = format!("{}\n{bad_line}\n", LINES.lines().next().unwrap().trim_end());
            let path = write(dir.path(), "dev.json", &text);
            let err = read_nlvr2(&path).unwrap_err().to_string();
            let prefix = format!("{}:2: {message}", path.display());
            assert!(err.starts_with(&prefix), "{err}\nexpected {prefix}");
        }
    }
}
