//! The Parquet export: every field survives the round trip, the schema matches the README, and
//! results directories, exports and record files combine without double counting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use peftbench_records::{
    config_hash, load_records, merge_records, parquet_schema, read_parquet, write_parquet,
    DataArtifact, Environment, EpochLog, EvalCorrect, RecordSource, RecordStore, RunRecord,
    RunStatus, PARQUET_COLUMNS, SCHEMA_VERSION,
};
use serde_json::json;

fn record(task: &str, seed: u64, status: RunStatus, accuracy: Option<f64>) -> RunRecord {
    let config = json!({"task": task, "seed": seed, "recipe": {"lr": 1e-3}});
    let mut metrics = BTreeMap::new();
    if let Some(a) = accuracy {
        metrics.insert("test_accuracy".to_string(), a);
        metrics.insert("val_accuracy".to_string(), f64::NAN);
    }
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: format!("{task}/lora-r8/seed{seed}-0123456789"),
        suite: "vtab1k".into(),
        task: task.into(),
        group: (task == "cifar").then(|| "natural".to_string()),
        method: "lora".into(),
        label: "lora-r8".into(),
        seed,
        config_hash: config_hash(&config),
        config,
        status,
        error: (status != RunStatus::Completed).then(|| "loss became NaN".to_string()),
        metrics,
        primary_metric: "test_accuracy".into(),
        selection: "final".into(),
        selected_epoch: accuracy.map(|_| 9),
        trainable_params: 294_912,
        total_params: 86_094_436,
        adapter_bytes: accuracy.map(|_| 1_179_648),
        peak_memory_bytes: Some(1 << 30),
        train_seconds: 12.5,
        eval_seconds: f64::INFINITY,
        train_examples_per_second: 160.0,
        history: vec![EpochLog {
            epoch: 0,
            train_loss: f64::NAN,
            lr: 1e-3,
            val_accuracy: Some(0.5),
            seconds: 6.0,
        }],
        environment: Environment {
            git_revision: Some("0123456789abcdef".into()),
            git_dirty: (seed == 0).then_some(true),
            peftbench_version: "0.1.0".into(),
            crate_versions: BTreeMap::from([("candle-core".into(), "0.11.1".into())]),
            device: "cpu".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            cpu: None,
            threads: 2,
            hostname: Some("node-7".into()),
            kernels: None,
        },
        started_at: "2026-11-27T13:00:00.000Z".into(),
        finished_at: format!("2026-11-27T13:00:1{seed}.000Z"),
        adapter_dir: accuracy.map(|_| format!("artifacts/{task}/lora-r8/seed{seed}")),
        data: Vec::new(),
        eval_correct: accuracy.map(|_| EvalCorrect::from_bools(&[true, false, true])),
    }
}

/// Equality that treats NaN as equal to NaN (records hold NaN losses).
fn same(a: &RunRecord, b: &RunRecord) -> bool {
    a.to_json().unwrap() == b.to_json().unwrap()
}

#[test]
fn parquet_round_trips_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut with_data = record("cifar", 0, RunStatus::Completed, Some(0.7125));
    with_data.data = vec![DataArtifact {
        id: "vtab-1k".into(),
        manifest_sha256: "ab".repeat(32),
        commit: None,
        receipt: true,
        files: BTreeMap::from([(
            "vtab-1k.zip".to_string(),
            format!("sha256:{}", "cd".repeat(32)),
        )]),
    }];
    let records = vec![
        with_data,
        record("cifar", 1, RunStatus::Diverged, None),
        record("dtd", 0, RunStatus::Failed, None),
    ];
    let path = dir.path().join("runs.parquet");
    write_parquet(&records, &path).unwrap();
    let back = read_parquet(&path).unwrap();
    assert_eq!(back.len(), 3);
    for (a, b) in records.iter().zip(&back) {
        assert!(
            same(a, b),
            "{}\n!=\n{}",
            a.to_json().unwrap(),
            b.to_json().unwrap()
        );
    }
    // Exports written before the `data` column existed still read (the committed baseline).
    let baseline = read_parquet(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../ci/baselines/demo.parquet"
    )))
    .unwrap();
    assert!(!baseline.is_empty() && baseline.iter().all(|r| r.data.is_empty()));
    // An empty export is a valid file too.
    write_parquet(&[], &path).unwrap();
    assert!(read_parquet(&path).unwrap().is_empty());
}

#[test]
fn schema_matches_the_documented_columns() {
    let schema = parquet_schema();
    assert_eq!(schema.fields().len(), PARQUET_COLUMNS.len());
    for (field, (name, ty, nullable, _)) in schema.fields().iter().zip(PARQUET_COLUMNS) {
        assert_eq!(field.name(), name);
        assert_eq!(&field.data_type().to_string(), ty, "{name}");
        assert_eq!(field.is_nullable(), *nullable, "{name}");
    }
    // The README documents every column with its type.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for (name, ty, _, _) in PARQUET_COLUMNS {
        assert!(
            readme.contains(&format!("| `{name}` | {ty} |")),
            "README lacks the row of column `{name}` ({ty})"
        );
    }
}

#[test]
fn sources_combine_directories_exports_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = RecordStore::open(&dir.path().join("shard-1")).unwrap();
    let b = RecordStore::open(&dir.path().join("shard-2")).unwrap();
    a.write(&record("cifar", 0, RunStatus::Completed, Some(0.7)))
        .unwrap();
    // A failed attempt in one shard and the completed rerun in another: the completed one counts.
    a.write(&record("dtd", 0, RunStatus::Failed, None)).unwrap();
    b.write(&record("dtd", 0, RunStatus::Completed, Some(0.5)))
        .unwrap();
    // The same completed run copied into both: counted once.
    b.write(&record("cifar", 0, RunStatus::Completed, Some(0.7)))
        .unwrap();
    let parquet = dir.path().join("more.parquet");
    write_parquet(
        &[record("cifar", 1, RunStatus::Completed, Some(0.6))],
        &parquet,
    )
    .unwrap();

    let paths: Vec<PathBuf> = vec![a.root().into(), b.records_dir(), parquet.clone()];
    let all = load_records(&paths).unwrap();
    let summary: Vec<(String, RunStatus)> =
        all.iter().map(|r| (r.run_id.clone(), r.status)).collect();
    assert_eq!(
        summary,
        vec![
            (
                "cifar/lora-r8/seed0-0123456789".into(),
                RunStatus::Completed
            ),
            (
                "cifar/lora-r8/seed1-0123456789".into(),
                RunStatus::Completed
            ),
            ("dtd/lora-r8/seed0-0123456789".into(), RunStatus::Completed),
        ]
    );
    let file = a.record_path("cifar/lora-r8/seed0-0123456789");
    assert_eq!(
        RecordSource::from_path(&file).unwrap(),
        RecordSource::RecordFile(file.clone())
    );
    assert_eq!(
        RecordSource::from_path(&file)
            .unwrap()
            .load()
            .unwrap()
            .len(),
        1
    );
    let err = RecordSource::from_path(dir.path()).unwrap_err().to_string();
    assert!(err.contains("without a records/ folder"), "{err}");
}

#[test]
fn conflicting_completed_runs_are_an_error_naming_both_sources() {
    let one = record("cifar", 0, RunStatus::Completed, Some(0.7));
    let other = record("cifar", 0, RunStatus::Completed, Some(0.6));
    let err = merge_records(vec![("a".into(), vec![one]), ("b".into(), vec![other])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("completed twice"), "{err}");
    assert!(err.contains("a has") && err.contains("b has"), "{err}");
}
