//! Unlabelled corpora for masked-language modelling (language adapters): plain text with one
//! passage per line (blank lines skipped), or parquet files with a string column (e.g. `text`,
//! as Hugging Face datasets store them).

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{read_bytes, utf8_lines, Result, TextDataError};

/// Reads a corpus: parquet when the extension is `.parquet` (column `column`), else plain text.
pub fn read_corpus(path: &Path, column: &str) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "parquet") {
        return read_parquet_column(path, column);
    }
    let bytes = read_bytes(path, "")?;
    let mut out = Vec::new();
    for line in utf8_lines(path, &bytes) {
        let (_, line) = line?;
        let line = line.trim();
        if !line.is_empty() {
            out.push(line.to_string());
        }
    }
    Ok(out)
}

/// Every non-null value of string column `column` (parquet stores text as validated UTF-8).
fn read_parquet_column(path: &Path, column: &str) -> Result<Vec<String>> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TextDataError::Missing {
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            TextDataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let bad = |reason: String| TextDataError::bad(path, 0, reason);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(format!("not a parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let index = schema.index_of(column).map_err(|_| {
        let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
        bad(format!("no column `{column}` (columns: {names:?})"))
    })?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let array = batch.column(0);
        match array.data_type() {
            DataType::Utf8 => {
                let strings = array.as_string::<i32>();
                out.extend(
                    (0..strings.len())
                        .filter(|&i| strings.is_valid(i))
                        .map(|i| strings.value(i).to_string()),
                );
            }
            DataType::LargeUtf8 => {
                let strings = array.as_string::<i64>();
                out.extend(
                    (0..strings.len())
                        .filter(|&i| strings.is_valid(i))
                        .map(|i| strings.value(i).to_string()),
                );
            }
            other => return Err(bad(format!("column `{column}` holds {other}, not strings"))),
        }
    }
    Ok(out)
}
