//! Run records as one Apache Parquet file (one row per run), for pandas, polars, DuckDB and Spark.
//!
//! The columns are listed, with their Arrow types and meaning, in [`PARQUET_COLUMNS`] (the README's
//! table is checked against it). Scalar fields become typed columns; nested fields (the run
//! configuration, the metrics map, the per-epoch history, crate versions) are JSON text, which every
//! reader can parse (`json.loads`, DuckDB's `->>`, polars' `str.json_decode`). [`read_parquet`]
//! rebuilds the exact records, so `harness compare` and `harness report` accept the file wherever
//! they accept a results directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{write_atomic, Environment, EvalCorrect, RunRecord, RunStatus, SCHEMA_VERSION};

/// Every column of the Parquet export: name, Arrow type, nullable, meaning. Accuracies and other
/// metrics are fractions in [0, 1], as in the JSON records.
pub const PARQUET_COLUMNS: &[(&str, &str, bool, &str)] = &[
    ("schema_version", "UInt32", false, "record schema version"),
    (
        "run_id",
        "Utf8",
        false,
        "`<task>/<label>/seed<N>-<config hash prefix>`",
    ),
    ("suite", "Utf8", false, "suite name"),
    ("task", "Utf8", false, "task name"),
    (
        "group",
        "Utf8",
        true,
        "task group (VTAB natural/specialized/structured)",
    ),
    ("method", "Utf8", false, "registered method name (`lora`)"),
    (
        "label",
        "Utf8",
        false,
        "row label, method plus grid values (`lora-r8`)",
    ),
    ("seed", "UInt64", false, "seed"),
    (
        "config_hash",
        "Utf8",
        false,
        "SHA-256 of the canonical run configuration",
    ),
    ("config", "Utf8", false, "the full run configuration, JSON"),
    (
        "status",
        "Utf8",
        false,
        "`completed`, `diverged` or `failed`",
    ),
    ("error", "Utf8", true, "why a run diverged or failed"),
    (
        "primary_metric",
        "Utf8",
        false,
        "the metric reports rank by (`test_accuracy`)",
    ),
    (
        "primary_value",
        "Float64",
        true,
        "value of the primary metric (fraction)",
    ),
    (
        "metrics",
        "Utf8",
        false,
        "all metrics, JSON object (fractions)",
    ),
    (
        "selection",
        "Utf8",
        false,
        "model-selection rule (`final`, `best-val`)",
    ),
    ("selected_epoch", "UInt64", true, "epoch evaluated"),
    (
        "trainable_params",
        "UInt64",
        false,
        "trainable parameters (head included)",
    ),
    (
        "total_params",
        "UInt64",
        false,
        "all parameters of the adapted model",
    ),
    (
        "adapter_bytes",
        "UInt64",
        true,
        "size of the saved adapter on disk",
    ),
    (
        "peak_memory_bytes",
        "UInt64",
        true,
        "peak resident (or device) memory",
    ),
    ("train_seconds", "Float64", false, "training wall time"),
    ("eval_seconds", "Float64", false, "evaluation wall time"),
    (
        "train_examples_per_second",
        "Float64",
        false,
        "training throughput",
    ),
    ("history", "Utf8", false, "per-epoch log, JSON list"),
    ("git_revision", "Utf8", true, "git commit of the harness"),
    (
        "git_dirty",
        "Boolean",
        true,
        "tracked files had uncommitted changes",
    ),
    ("peftbench_version", "Utf8", false, "peftbench version"),
    (
        "crate_versions",
        "Utf8",
        false,
        "versions of candle and friends, JSON object",
    ),
    ("device", "Utf8", false, "`cpu`, `cuda:0`, ..."),
    ("os", "Utf8", false, "operating system"),
    ("arch", "Utf8", false, "CPU architecture"),
    ("cpu", "Utf8", true, "CPU model"),
    ("threads", "UInt64", false, "available parallelism"),
    ("hostname", "Utf8", true, "host the run ran on"),
    ("started_at", "Utf8", false, "RFC 3339 UTC start time"),
    ("finished_at", "Utf8", false, "RFC 3339 UTC end time"),
    (
        "adapter_dir",
        "Utf8",
        true,
        "adapter folder, relative to the results directory",
    ),
    (
        "eval_examples",
        "UInt64",
        true,
        "evaluation examples with per-example correctness",
    ),
    (
        "eval_correct",
        "Utf8",
        true,
        "per-example correctness, packed bits as hex (see `EvalCorrect`)",
    ),
    (
        "kernels",
        "Utf8",
        true,
        "instruction sets of the CPU kernels (`gemm avx512f+fma; elementwise avx2+fma`)",
    ),
    (
        "data",
        "Utf8",
        true,
        "manifest artifacts the run read (ids, manifest SHA-256, weights commit, receipt, file digests), JSON; null without a manifest",
    ),
];

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("record parts serialise to JSON")
}

fn strings(records: &[RunRecord], f: impl Fn(&RunRecord) -> Option<String>) -> ArrayRef {
    Arc::new(records.iter().map(f).collect::<StringArray>())
}

fn u64s(records: &[RunRecord], f: impl Fn(&RunRecord) -> Option<u64>) -> ArrayRef {
    Arc::new(records.iter().map(f).collect::<UInt64Array>())
}

fn f64s(records: &[RunRecord], f: impl Fn(&RunRecord) -> Option<f64>) -> ArrayRef {
    Arc::new(records.iter().map(f).collect::<Float64Array>())
}

fn columns(records: &[RunRecord]) -> Vec<ArrayRef> {
    let s = |v: &str| Some(v.to_string());
    vec![
        Arc::new(
            records
                .iter()
                .map(|r| Some(r.schema_version))
                .collect::<UInt32Array>(),
        ),
        strings(records, |r| s(&r.run_id)),
        strings(records, |r| s(&r.suite)),
        strings(records, |r| s(&r.task)),
        strings(records, |r| r.group.clone()),
        strings(records, |r| s(&r.method)),
        strings(records, |r| s(&r.label)),
        u64s(records, |r| Some(r.seed)),
        strings(records, |r| s(&r.config_hash)),
        strings(records, |r| Some(json(&r.config))),
        strings(records, |r| s(r.status.as_str())),
        strings(records, |r| r.error.clone()),
        strings(records, |r| s(&r.primary_metric)),
        f64s(records, |r| r.primary_value()),
        strings(records, |r| Some(metrics_json(&r.metrics))),
        strings(records, |r| s(&r.selection)),
        u64s(records, |r| r.selected_epoch.map(|e| e as u64)),
        u64s(records, |r| Some(r.trainable_params)),
        u64s(records, |r| Some(r.total_params)),
        u64s(records, |r| r.adapter_bytes),
        u64s(records, |r| r.peak_memory_bytes),
        f64s(records, |r| Some(r.train_seconds)),
        f64s(records, |r| Some(r.eval_seconds)),
        f64s(records, |r| Some(r.train_examples_per_second)),
        strings(records, |r| Some(json(&r.history))),
        strings(records, |r| r.environment.git_revision.clone()),
        Arc::new(
            records
                .iter()
                .map(|r| r.environment.git_dirty)
                .collect::<BooleanArray>(),
        ),
        strings(records, |r| s(&r.environment.peftbench_version)),
        strings(records, |r| Some(json(&r.environment.crate_versions))),
        strings(records, |r| s(&r.environment.device)),
        strings(records, |r| s(&r.environment.os)),
        strings(records, |r| s(&r.environment.arch)),
        strings(records, |r| r.environment.cpu.clone()),
        u64s(records, |r| Some(r.environment.threads as u64)),
        strings(records, |r| r.environment.hostname.clone()),
        strings(records, |r| s(&r.started_at)),
        strings(records, |r| s(&r.finished_at)),
        strings(records, |r| r.adapter_dir.clone()),
        u64s(records, |r| {
            r.eval_correct.as_ref().map(|c| c.examples as u64)
        }),
        strings(records, |r| {
            r.eval_correct.as_ref().map(|c| c.bits_hex.clone())
        }),
        strings(records, |r| r.environment.kernels.clone()),
        strings(records, |r| (!r.data.is_empty()).then(|| json(&r.data))),
    ]
}

/// The metrics map as the JSON records write it (non-finite values as `"NaN"`, `"inf"`).
fn metrics_json(metrics: &BTreeMap<String, f64>) -> String {
    #[derive(serde::Serialize)]
    struct M<'a>(#[serde(with = "crate::float_map")] &'a BTreeMap<String, f64>);
    json(&M(metrics))
}

fn parse_metrics(text: &str) -> Result<BTreeMap<String, f64>> {
    #[derive(serde::Deserialize)]
    struct M(#[serde(with = "crate::float_map")] BTreeMap<String, f64>);
    Ok(serde_json::from_str::<M>(text)?.0)
}

fn arrow_type(name: &str) -> DataType {
    match name {
        "UInt32" => DataType::UInt32,
        "UInt64" => DataType::UInt64,
        "Float64" => DataType::Float64,
        "Boolean" => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

/// The Arrow schema of the export (from [`PARQUET_COLUMNS`]).
pub fn parquet_schema() -> Schema {
    Schema::new(
        PARQUET_COLUMNS
            .iter()
            .map(|(name, ty, nullable, _)| Field::new(*name, arrow_type(ty), *nullable))
            .collect::<Vec<_>>(),
    )
    .with_metadata(std::collections::HashMap::from([(
        "peftbench.schema_version".to_string(),
        SCHEMA_VERSION.to_string(),
    )]))
}

/// Writes `records` as one Parquet file (Snappy-compressed, one row group), atomically.
pub fn write_parquet(records: &[RunRecord], path: &Path) -> Result<()> {
    let schema = Arc::new(parquet_schema());
    let batch = RecordBatch::try_new(schema.clone(), columns(records))
        .context("building the Arrow batch of run records")?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    write_atomic(path, &buf)
}

struct Columns<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl Columns<'_> {
    fn column(&self, name: &str) -> Result<&ArrayRef> {
        self.batch.column_by_name(name).with_context(|| {
            format!(
                "{}: no column `{name}`; is it a peftbench records export?",
                self.path.display()
            )
        })
    }

    fn wrong_type(&self, name: &str, want: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: column `{name}` is not {want} (it is {})",
            self.path.display(),
            self.batch
                .column_by_name(name)
                .map(|c| c.data_type().to_string())
                .unwrap_or_default()
        )
    }

    fn opt_str(&self, name: &str, row: usize) -> Result<Option<String>> {
        let c = self.column(name)?;
        let a = c
            .as_string_opt::<i32>()
            .ok_or_else(|| self.wrong_type(name, "Utf8"))?;
        Ok((!a.is_null(row)).then(|| a.value(row).to_string()))
    }

    /// A column added after the first exports: absent in those, read as null.
    fn opt_str_if_present(&self, name: &str, row: usize) -> Result<Option<String>> {
        match self.batch.column_by_name(name) {
            Some(_) => self.opt_str(name, row),
            None => Ok(None),
        }
    }

    fn str(&self, name: &str, row: usize) -> Result<String> {
        self.opt_str(name, row)?
            .with_context(|| format!("{}: null `{name}` in row {row}", self.path.display()))
    }

    fn opt_u64(&self, name: &str, row: usize) -> Result<Option<u64>> {
        let c = self.column(name)?;
        if let Some(a) = c.as_primitive_opt::<UInt64Type>() {
            return Ok((!a.is_null(row)).then(|| a.value(row)));
        }
        if let Some(a) = c.as_primitive_opt::<UInt32Type>() {
            return Ok((!a.is_null(row)).then(|| a.value(row) as u64));
        }
        Err(self.wrong_type(name, "UInt64"))
    }

    fn u64(&self, name: &str, row: usize) -> Result<u64> {
        self.opt_u64(name, row)?
            .with_context(|| format!("{}: null `{name}` in row {row}", self.path.display()))
    }

    fn f64(&self, name: &str, row: usize) -> Result<f64> {
        let a = self
            .column(name)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| self.wrong_type(name, "Float64"))?;
        Ok(if a.is_null(row) {
            f64::NAN
        } else {
            a.value(row)
        })
    }

    fn opt_bool(&self, name: &str, row: usize) -> Result<Option<bool>> {
        let a = self
            .column(name)?
            .as_boolean_opt()
            .ok_or_else(|| self.wrong_type(name, "Boolean"))?;
        Ok((!a.is_null(row)).then(|| a.value(row)))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str, row: usize) -> Result<T> {
        let text = self.str(name, row)?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: row {row}: `{name}` is not valid JSON",
                self.path.display()
            )
        })
    }

    fn record(&self, row: usize) -> Result<RunRecord> {
        let status = match self.str("status", row)?.as_str() {
            "completed" => RunStatus::Completed,
            "diverged" => RunStatus::Diverged,
            "failed" => RunStatus::Failed,
            other => bail!(
                "{}: row {row}: unknown status {other:?}",
                self.path.display()
            ),
        };
        let schema_version = self.u64("schema_version", row)? as u32;
        if schema_version > SCHEMA_VERSION {
            bail!(
                "{}: row {row}: record schema version {schema_version} is newer than supported version {SCHEMA_VERSION}",
                self.path.display()
            );
        }
        let eval_correct = match (
            self.opt_u64("eval_examples", row)?,
            self.opt_str("eval_correct", row)?,
        ) {
            (Some(n), Some(bits)) => Some(EvalCorrect {
                examples: n as usize,
                bits_hex: bits,
            }),
            _ => None,
        };
        Ok(RunRecord {
            schema_version,
            run_id: self.str("run_id", row)?,
            suite: self.str("suite", row)?,
            task: self.str("task", row)?,
            group: self.opt_str("group", row)?,
            method: self.str("method", row)?,
            label: self.str("label", row)?,
            seed: self.u64("seed", row)?,
            config: self.json("config", row)?,
            config_hash: self.str("config_hash", row)?,
            status,
            error: self.opt_str("error", row)?,
            metrics: parse_metrics(&self.str("metrics", row)?).with_context(|| {
                format!("{}: row {row}: invalid `metrics`", self.path.display())
            })?,
            primary_metric: self.str("primary_metric", row)?,
            selection: self.str("selection", row)?,
            selected_epoch: self.opt_u64("selected_epoch", row)?.map(|e| e as usize),
            trainable_params: self.u64("trainable_params", row)?,
            total_params: self.u64("total_params", row)?,
            adapter_bytes: self.opt_u64("adapter_bytes", row)?,
            peak_memory_bytes: self.opt_u64("peak_memory_bytes", row)?,
            train_seconds: self.f64("train_seconds", row)?,
            eval_seconds: self.f64("eval_seconds", row)?,
            train_examples_per_second: self.f64("train_examples_per_second", row)?,
            history: self.json("history", row)?,
            environment: Environment {
                git_revision: self.opt_str("git_revision", row)?,
                git_dirty: self.opt_bool("git_dirty", row)?,
                peftbench_version: self.str("peftbench_version", row)?,
                crate_versions: self.json("crate_versions", row)?,
                device: self.str("device", row)?,
                os: self.str("os", row)?,
                arch: self.str("arch", row)?,
                cpu: self.opt_str("cpu", row)?,
                threads: self.u64("threads", row)? as usize,
                hostname: self.opt_str("hostname", row)?,
                kernels: self.opt_str_if_present("kernels", row)?,
            },
            started_at: self.str("started_at", row)?,
            finished_at: self.str("finished_at", row)?,
            adapter_dir: self.opt_str("adapter_dir", row)?,
            eval_correct,
            data: match self.opt_str_if_present("data", row)? {
                Some(text) => serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{}: row {row}: `data` is not valid JSON",
                        self.path.display()
                    )
                })?,
                None => Vec::new(),
            },
        })
    }
}

/// Reads a file written by [`write_parquet`] back into records (sorted by run id).
pub fn read_parquet(path: &Path) -> Result<Vec<RunRecord>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?
        .build()?;
    let mut records = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", path.display()))?;
        let cols = Columns {
            batch: &batch,
            path,
        };
        for row in 0..batch.num_rows() {
            records.push(cols.record(row)?);
        }
    }
    records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(records)
}
