//! Text classification files: one example per record with a text column and a label column.
//!
//! Formats, chosen by extension: `.tsv` (tab-separated with a header row, as SIB-200 ships
//! `train.tsv` / `dev.tsv` / `test.tsv` with `index_id`, `category`, `text`), `.csv` (RFC 4180,
//! quoted fields may hold commas and newlines), `.jsonl` (one JSON object per line; the label may be
//! a string or an integer). Column names come from the suite (`text_column`, `label_column`).

use std::path::Path;

use crate::error::{read_bytes, utf8_lines, Result, TextDataError};

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    pub text: String,
    /// The label as written in the file (class names are mapped to ids by [`crate::LabelSet`]).
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
        TableFormat::Tsv => read_tsv(path, &bytes, columns),
        TableFormat::Csv => read_csv(path, &bytes, columns),
        TableFormat::Jsonl => read_jsonl(path, &bytes, columns),
    }
}

/// The positions of the text and label columns in a header row.
fn column_positions(path: &Path, header: &[&str], columns: &Columns<'_>) -> Result<(usize, usize)> {
    let find = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            TextDataError::bad(
                path,
                1,
                format!("no column `{name}` in the header (columns: {header:?})"),
            )
        })
    };
    Ok((find(columns.text)?, find(columns.label)?))
}

fn read_tsv(path: &Path, bytes: &[u8], columns: &Columns<'_>) -> Result<Vec<TextExample>> {
    let mut lines = utf8_lines(path, bytes);
    let header = match lines.next() {
        Some(line) => line?.1,
        None => return Err(TextDataError::bad(path, 1, "empty file (no header row)")),
    };
    let header: Vec<&str> = header.split('\t').collect();
    let (text_at, label_at) = column_positions(path, &header, columns)?;
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
        out.push(TextExample {
            text: fields[text_at].to_string(),
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

fn read_csv(path: &Path, bytes: &[u8], columns: &Columns<'_>) -> Result<Vec<TextExample>> {
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
    let (text_at, label_at) = column_positions(path, &header_refs, columns)?;
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        out.push(TextExample {
            text: record[text_at].to_string(),
            label: non_empty_label(path, line, &record[label_at])?,
        });
    }
    Ok(out)
}

fn read_jsonl(path: &Path, bytes: &[u8], columns: &Columns<'_>) -> Result<Vec<TextExample>> {
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
        let text = field(columns.text)?
            .as_str()
            .ok_or_else(|| {
                TextDataError::bad(path, n, format!("`{}` is not a string", columns.text))
            })?
            .to_string();
        let label = match field(columns.label)? {
            serde_json::Value::String(s) => non_empty_label(path, n, s)?,
            serde_json::Value::Number(x) if x.is_i64() || x.is_u64() => x.to_string(),
            other => {
                return Err(TextDataError::bad(
                    path,
                    n,
                    format!(
                        "`{}` must be a string or an integer, got {other}",
                        columns.label
                    ),
                ))
            }
        };
        out.push(TextExample { text, label });
    }
    Ok(out)
}
