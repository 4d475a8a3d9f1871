//! Text classification files: one example per record with a text column and a label column.
//!
//! Formats, chosen by extension: `.tsv` (tab-separated with a header row, as SIB-200 ships
//! `train.tsv` / `dev.tsv` / `test.tsv` with `index_id`, `category`, `text`), `.csv` (RFC 4180,
//! quoted fields may hold commas and newlines), `.jsonl` (one JSON object per line; the label may be
//! a string, an integer or a boolean, read as `true` / `false`). Column names come from the suite's
//! `columns`.
//!
//! Sentence-pair tasks (GLUE / SuperGLUE: RTE's premise and hypothesis, BoolQ's passage and
//! question) name a second text column ([`PairColumns::text_pair`]) and are read by
//! [`read_pair_classification`]; a `prefix` column's value is written before the first text as
//! `<prefix>: <text>` (WiC's target word: `word: sentence1` paired with `sentence2`).

use std::path::Path;

use crate::error::{read_bytes, utf8_lines, Result, TextDataError};

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    pub text: String,
    /// The label as written in the file (class names are mapped to ids by [`crate::LabelSet`]).
    pub label: String,
}

/// One labelled pair of texts, tokenised as one sequence (`[CLS] text [SEP] text_pair [SEP]` for
/// BERT-family tokenizers, with segment ids 0 and 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairExample {
    /// The first text, after its prefix when the columns name one.
    pub text: String,
    pub text_pair: String,
    /// The label as written in the file; a JSON boolean reads as `true` / `false`.
    pub label: String,
}

/// File formats for classification data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Tsv,
    Csv,
    Jsonl,
}

impl TableFormat {
    /// The format a path's extension names.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "tsv" => Some(Self::Tsv),
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

/// Which columns hold the text and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns<'a> {
    pub text: &'a str,
    pub label: &'a str,
}

/// Which columns hold the two texts of a pair, an optional prefix of the first, and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairColumns<'a> {
    pub text: &'a str,
    pub text_pair: &'a str,
    /// A column whose value is written before the first text as `<prefix>: <text>`.
    pub prefix: Option<&'a str>,
    pub label: &'a str,
}

/// SIB-200's columns.
pub const SIB200_COLUMNS: Columns<'static> = Columns {
    text: "text",
    label: "category",
};

/// Reads a classification file; the format follows the extension unless `format` is given.
pub fn read_classification(
    path: &Path,
    format: Option<TableFormat>,
    columns: &Columns<'_>,
) -> Result<Vec<TextExample>> {
    let records = read_records(path, format, &[columns.text], columns.label)?;
    Ok(records
        .into_iter()
        .map(|r| TextExample {
            text: r.texts.into_iter().next().expect("one text column asked"),
            label: r.label,
        })
        .collect())
}

/// Reads a sentence-pair classification file (TSV, CSV or JSONL as [`read_classification`]): the
/// first text is `<prefix>: <text>` when `columns.prefix` is set.
pub fn read_pair_classification(
    path: &Path,
    format: Option<TableFormat>,
    columns: &PairColumns<'_>,
) -> Result<Vec<PairExample>> {
    let mut names = vec![columns.text, columns.text_pair];
    names.extend(columns.prefix);
    let records = read_records(path, format, &names, columns.label)?;
    Ok(records
        .into_iter()
        .map(|r| {
            let mut texts = r.texts.into_iter();
            let mut next = || texts.next().expect("a value for every column asked");
            let (text, text_pair) = (next(), next());
            PairExample {
                text: match columns.prefix {
                    Some(_) => format!("{}: {text}", next()),
                    None => text,
                },
                text_pair,
                label: r.label,
            }
        })
        .collect())
}

/// One record: the asked text columns' values, in the order asked, and the label.
struct Record {
    texts: Vec<String>,
    label: String,
}

/// Reads the `texts` columns and the `label` column of every record of a file.
fn read_records(
    path: &Path,
    format: Option<TableFormat>,
    texts: &[&str],
    label: &str,
) -> Result<Vec<Record>> {
    let format = match format.or_else(|| TableFormat::from_path(path)) {
        Some(f) => f,
        None => {
            return Err(TextDataError::bad(
                path,
                0,
                "unknown format: use a .tsv, .csv or .jsonl extension or set `format`",
            ))
        }
    };
    let bytes = read_bytes(path, "")?;
    match format {
        TableFormat::Tsv => read_tsv(path, &bytes, texts, label),
        TableFormat::Csv => read_csv(path, &bytes, texts, label),
        TableFormat::Jsonl => read_jsonl(path, &bytes, texts, label),
    }
}

/// The positions of the text columns and the label column in a header row.
fn column_positions(
    path: &Path,
    header: &[&str],
    texts: &[&str],
    label: &str,
) -> Result<(Vec<usize>, usize)> {
    let find = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            TextDataError::bad(
                path,
                1,
                format!("no column `{name}` in the header (columns: {header:?})"),
            )
        })
    };
    let texts = texts.iter().map(|t| find(t)).collect::<Result<_>>()?;
    Ok((texts, find(label)?))
}

fn read_tsv(path: &Path, bytes: &[u8], texts: &[&str], label: &str) -> Result<Vec<Record>> {
    let mut lines = utf8_lines(path, bytes);
    let header = match lines.next() {
        Some(line) => line?.1,
        None => return Err(TextDataError::bad(path, 1, "empty file (no header row)")),
    };
    let header: Vec<&str> = header.split('\t').collect();
    let (text_at, label_at) = column_positions(path, &header, texts, label)?;
    let mut out = Vec::new();
    for line in lines {
        let (n, line) = line?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != header.len() {
            return Err(TextDataError::bad(
                path,
                n,
                format!(
                    "{} tab-separated fields, the header has {}",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        out.push(Record {
            texts: text_at.iter().map(|&i| fields[i].to_string()).collect(),
            label: non_empty_label(path, n, fields[label_at])?,
        });
    }
    Ok(out)
}

fn non_empty_label(path: &Path, line: usize, label: &str) -> Result<String> {
    let label = label.trim();
    if label.is_empty() {
        return Err(TextDataError::bad(path, line, "empty label"));
    }
    Ok(label.to_string())
}

fn read_csv(path: &Path, bytes: &[u8], texts: &[&str], label: &str) -> Result<Vec<Record>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line() as usize);
        match e.kind() {
            csv::ErrorKind::Utf8 { .. } => TextDataError::NotUtf8 {
                path: path.to_path_buf(),
                line,
            },
            _ => TextDataError::bad(path, line, e.to_string()),
        }
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_string)
        .collect();
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let (text_at, label_at) = column_positions(path, &header_refs, texts, label)?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        out.push(Record {
            texts: text_at.iter().map(|&i| record[i].to_string()).collect(),
            label: non_empty_label(path, line, &record[label_at])?,
        });
    }
    Ok(out)
}

fn read_jsonl(path: &Path, bytes: &[u8], texts: &[&str], label: &str) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for line in utf8_lines(path, bytes) {
        let (n, line) = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TextDataError::bad(path, n, format!("invalid JSON: {e}")))?;
        let field = |name: &str| {
            value
                .get(name)
                .ok_or_else(|| TextDataError::bad(path, n, format!("no field `{name}`")))
        };
        let texts = texts
            .iter()
            .map(|&name| {
                field(name)?
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| TextDataError::bad(path, n, format!("`{name}` is not a string")))
            })
            .collect::<Result<_>>()?;
        let label = match field(label)? {
            serde_json::Value::String(s) => non_empty_label(path, n, s)?,
            serde_json::Value::Number(x) if x.is_i64() || x.is_u64() => x.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(TextDataError::bad(
                    path,
                    n,
                    format!("`{label}` must be a string, an integer or a boolean, got {other}"),
                ))
            }
        };
        out.push(Record { texts, label });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// SuperGLUE's JSONL layouts: RTE's string labels, BoolQ's boolean ones, WiC's target word
    /// as the prefix of its first sentence; TSV pairs read the same way.
    #[test]
    fn pairs_read_from_superglue_style_jsonl_and_tsv() {
        let dir = tempfile::tempdir().unwrap();
        let rte = write(
            dir.path(),
            "rte.jsonl",
            "{\"premise\": \"A cat sleeps.\", \"hypothesis\": \"An animal rests.\", \"label\": \"entailment\", \"idx\": 0}\n\n\
             {\"premise\": \"It rains.\", \"hypothesis\": \"It is dry.\", \"label\": \"not_entailment\", \"idx\": 1}\n",
        );
        let columns = PairColumns {
            text: "premise",
            text_pair: "hypothesis",
            prefix: None,
            label: "label",
        };
        let rows = read_pair_classification(&rte, None, &columns).unwrap();
        assert_eq!(
            rows,
            vec![
                PairExample {
                    text: "A cat sleeps.".into(),
                    text_pair: "An animal rests.".into(),
                    label: "entailment".into(),
                },
                PairExample {
                    text: "It rains.".into(),
                    text_pair: "It is dry.".into(),
                    label: "not_entailment".into(),
                },
            ]
        );

        let boolq = write(
            dir.path(),
            "boolq.jsonl",
            "{\"question\": \"is ice cold\", \"passage\": \"Ice is frozen water.\", \"label\": true}\n\
             {\"question\": \"is fire cold\", \"passage\": \"Fire is hot.\", \"label\": false}\n",
        );
        let columns = PairColumns {
            text: "passage",
            text_pair: "question",
            prefix: None,
            label: "label",
        };
        let rows = read_pair_classification(&boolq, None, &columns).unwrap();
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["true", "false"]);
        assert_eq!(rows[1].text, "Fire is hot.");
        assert_eq!(rows[1].text_pair, "is fire cold");

        let wic = write(
            dir.path(),
            "wic.jsonl",
            "{\"word\": \"bank\", \"sentence1\": \"She sat on the bank.\", \"sentence2\": \"The bank lent money.\", \"label\": false}\n",
        );
        let columns = PairColumns {
            text: "sentence1",
            text_pair: "sentence2",
            prefix: Some("word"),
            label: "label",
        };
        let rows = read_pair_classification(&wic, None, &columns).unwrap();
        assert_eq!(rows[0].text, "bank: She sat on the bank.");
        assert_eq!(rows[0].text_pair, "The bank lent money.");
        assert_eq!(rows[0].label, "false");

        let tsv = write(
            dir.path(),
            "rte.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\tA cat sleeps.\tAn animal rests.\tentailment\n",
        );
        let columns = PairColumns {
            text: "sentence1",
            text_pair: "sentence2",
            prefix: None,
            label: "label",
        };
        let rows = read_pair_classification(&tsv, None, &columns).unwrap();
        assert_eq!(rows[0].text_pair, "An animal rests.");
        assert_eq!(rows[0].label, "entailment");

        // Single-text reading accepts boolean labels too.
        let single = read_classification(
            &boolq,
            None,
            &Columns {
                text: "question",
                label: "label",
            },
        )
        .unwrap();
        assert_eq!(single[0].label, "true");
    }

    /// A record without the second text, or with a non-string one, names the file, line and field.
    #[test]
    fn a_missing_or_non_string_pair_field_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "cb.jsonl",
            "{\"premise\": \"a\", \"hypothesis\": \"b\", \"label\": \"neutral\"}\n\
             {\"premise\": \"a\", \"label\": \"neutral\"}\n",
        );
        let columns = PairColumns {
            text: "premise",
            text_pair: "hypothesis",
            prefix: None,
            label: "label",
        };
        let err = read_pair_classification(&path, None, &columns)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cb.jsonl:2: no field `hypothesis`"), "{err}");
        std::fs::write(
            &path,
            "{\"premise\": \"a\", \"hypothesis\": 3, \"label\": \"neutral\"}\n",
        )
        .unwrap();
        let err = read_pair_classification(&path, None, &columns)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cb.jsonl:1: `hypothesis` is not a string"),
            "{err}"
        );
        let tsv = write(dir.path(), "cb.tsv", "premise\tlabel\na\tneutral\n");
        let err = read_pair_classification(&tsv, None, &columns)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cb.tsv:1: no column `hypothesis`"), "{err}");
    }
}
