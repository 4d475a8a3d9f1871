use std::collections::BTreeMap;
use std::fs;

use peftbench_records::{
    config_hash, validate_run_id, Environment, EpochLog, RecordStore, RunRecord, RunStatus,
    SCHEMA_VERSION,
};
use serde_json::json;

fn environment() -> Environment {
    Environment {
        git_revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        git_dirty: Some(false),
        peftbench_version: "0.1.0".into(),
        crate_versions: BTreeMap::from([("candle-core".into(), "0.11.1".into())]),
        device: "cpu".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        cpu: Some("Test CPU".into()),
        threads: 2,
        hostname: None,
        kernels: None,
    }
}

fn record(run_id: &str, accuracy: f64) -> RunRecord {
    let config = json!({"method": {"kind": "lora", "r": 8}, "lr": 1e-3, "epochs": 2});
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: run_id.into(),
        suite: "vtab1k".into(),
        task: "cifar".into(),
        group: Some("natural".into()),
        method: "lora".into(),
        label: "lora-r8".into(),
        seed: 0,
        config_hash: config_hash(&config),
        config,
        status: RunStatus::Completed,
        error: None,
        metrics: BTreeMap::from([
            ("test_accuracy".into(), accuracy),
            ("val_accuracy".into(), 0.5),
        ]),
        primary_metric: "test_accuracy".into(),
        selection: "final epoch".into(),
        selected_epoch: Some(1),
        trainable_params: 294_912,
        total_params: 86_094_436,
        adapter_bytes: Some(1_179_648),
        peak_memory_bytes: Some(1 << 30),
        train_seconds: 12.5,
        eval_seconds: 3.25,
        train_examples_per_second: 160.0,
        history: vec![
            EpochLog {
                epoch: 0,
                train_loss: 2.3,
                lr: 1e-3,
                val_accuracy: None,
                seconds: 6.0,
            },
            EpochLog {
                epoch: 1,
                train_loss: 1.1,
                lr: 1e-5,
                val_accuracy: Some(0.5),
                seconds: 6.5,
            },
        ],
        environment: environment(),
        started_at: "2026-11-27T13:00:00.000Z".into(),
        finished_at: "2026-11-27T13:00:16.000Z".into(),
        adapter_dir: None,
        data: Vec::new(),
        eval_correct: None,
    }
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    let rec = record("vtab1k/cifar/lora-r8/seed0", 0.7125);
    let path = store.write(&rec).unwrap();
    assert_eq!(
        path,
        dir.path().join("records/vtab1k/cifar/lora-r8/seed0.json")
    );
    assert_eq!(store.get(&rec.run_id).unwrap(), Some(rec.clone()));
    assert_eq!(store.get("vtab1k/cifar/lora-r8/seed1").unwrap(), None);
    assert!(store.is_completed(&rec.run_id).unwrap());
    assert!(!store.is_completed("nope").unwrap());
    assert_eq!(rec.primary_value(), Some(0.7125));

    // Pretty, keys in struct order, statuses lowercase.
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("{\n  \"schema_version\": 1,\n  \"run_id\": "),
        "{text}"
    );
    assert!(text.contains("\"status\": \"completed\""));
    assert!(text.ends_with("}\n"));
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
        .map(|l| l.trim_start().split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "schema_version",
            "run_id",
            "suite",
            "task",
            "group",
            "method",
            "label",
            "seed",
            "config",
            "config_hash",
            "status",
            "error",
            "metrics",
            "primary_metric",
            "selection",
            "selected_epoch",
            "trainable_params",
            "total_params",
            "adapter_bytes",
            "peak_memory_bytes",
            "train_seconds",
            "eval_seconds",
            "train_examples_per_second",
            "history",
            "environment",
            "started_at",
            "finished_at",
            "adapter_dir",
        ]
    );
}

#[test]
fn diverged_record_with_non_finite_numbers_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    let mut rec = record("diverged", 0.1);
    rec.status = RunStatus::Diverged;
    rec.history[1].train_loss = f64::NAN;
    rec.history[0].train_loss = f64::INFINITY;
    rec.metrics.insert("final_loss".into(), f64::NEG_INFINITY);
    rec.train_examples_per_second = f64::INFINITY;
    let path = store.write(&rec).unwrap();
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains("\"status\": \"diverged\""));
    assert!(text.contains("\"train_loss\": \"NaN\""), "{text}");
    assert!(text.contains("\"final_loss\": \"-inf\""), "{text}");
    let back = store.get("diverged").unwrap().unwrap();
    assert!(back.history[1].train_loss.is_nan());
    assert_eq!(back.history[0].train_loss, f64::INFINITY);
    assert_eq!(back.metrics["final_loss"], f64::NEG_INFINITY);
    assert_eq!(back.train_examples_per_second, f64::INFINITY);
    // A null (as serde_json writes NaN by default) also reads, as NaN.
    let patched = text.replace("\"train_loss\": \"NaN\"", "\"train_loss\": null");
    let parsed = RunRecord::from_json(&patched).unwrap();
    assert!(parsed.history[1].train_loss.is_nan());
}

#[test]
fn nested_run_ids_and_sorted_load_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    for id in ["b/task/seed0", "a/task/seed1", "a/task/seed0", "flat"] {
        store.write(&record(id, 0.5)).unwrap();
    }
    let ids: Vec<String> = store
        .load_all()
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(
        ids,
        ["a/task/seed0", "a/task/seed1", "b/task/seed0", "flat"]
    );
    assert_eq!(
        store.artifact_dir("a/task/seed0"),
        dir.path().join("artifacts/a/task/seed0")
    );
    assert!(dir.path().join("artifacts").is_dir());
}

#[test]
fn leftover_temp_files_are_ignored_and_overwrite_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    let id = "suite/task/seed0";
    let first = record(id, 0.25);
    let path = store.write(&first).unwrap();

    // Simulate a writer killed mid-write: a half-written temporary file beside the record, the
    // kind write() creates (".<name>.XXXXXX.tmp"), plus one in a fresh folder.
    let full = first.to_json().unwrap();
    let parent = path.parent().unwrap();
    fs::write(
        parent.join(".seed0.json.a1b2c3.tmp"),
        &full[..full.len() / 2],
    )
    .unwrap();
    fs::create_dir_all(dir.path().join("records/other")).unwrap();
    fs::write(dir.path().join("records/other/.x.json.zzz.tmp"), "{\"sche").unwrap();

    let all = store.load_all().unwrap();
    assert_eq!(all, vec![first.clone()]);

    // Overwrite: the new record replaces the old one whole; no temporary file remains.
    let second = record(id, 0.75);
    store.write(&second).unwrap();
    assert_eq!(store.get(id).unwrap().unwrap(), second);
    let names: Vec<String> = fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".tmp")).count(),
        1,
        "only the simulated leftover remains: {names:?}"
    );
    assert_eq!(store.load_all().unwrap(), vec![second]);
}

#[test]
fn concurrent_readers_never_see_partial_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    let id = "race";
    store.write(&record(id, 0.0)).unwrap();
    let reader_store = store.clone();
    let reader = std::thread::spawn(move || {
        for _ in 0..100 {
            let rec = reader_store.get(id).expect("always a complete record");
            assert!(rec.is_some());
        }
    });
    for i in 0..100 {
        store.write(&record(id, i as f64 / 100.0)).unwrap();
    }
    reader.join().unwrap();
}

#[test]
fn corrupt_record_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    store.write(&record("good", 0.5)).unwrap();
    let bad = dir.path().join("records/nested/bad.json");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    fs::write(&bad, "{ not json").unwrap();

    let err = format!("{:#}", store.load_all().unwrap_err());
    assert!(err.contains(&bad.display().to_string()), "{err}");

    let err = format!("{:#}", store.get("nested/bad").unwrap_err());
    assert!(err.contains(&bad.display().to_string()), "{err}");

    let (records, errors) = store.load_all_lenient().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, bad);
    assert!(errors[0].to_string().contains("bad.json"));
}

#[test]
fn mismatched_run_id_and_newer_schema_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    let path = store.write(&record("a", 0.5)).unwrap();
    fs::copy(&path, dir.path().join("records/b.json")).unwrap();
    let err = format!("{:#}", store.load_all().unwrap_err());
    assert!(err.contains("b.json") && err.contains("\"a\""), "{err}");

    let mut newer = serde_json::to_value(record("c", 0.5)).unwrap();
    newer["schema_version"] = json!(SCHEMA_VERSION + 1);
    let err = RunRecord::from_json(&newer.to_string())
        .unwrap_err()
        .to_string();
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn rejects_unsafe_run_ids() {
    for bad in [
        "",
        "..",
        "../x",
        "a/../../x",
        "a/..",
        "/abs",
        "a//b",
        "a/",
        "./a",
        "a\\b",
        ".hidden",
    ] {
        assert!(validate_run_id(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["a", "suite/task/lora-r8/seed0", "x.y", "a..b"] {
        validate_run_id(good).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    assert!(store.write(&record("../escape", 0.5)).is_err());
    assert!(store.get("../escape").is_err());
    assert!(!dir.path().join("escape.json").exists());
    let panicked = std::panic::catch_unwind(|| store.record_path("a/../b")).is_err();
    assert!(panicked);
}

#[test]
fn config_hash_ignores_key_order() {
    let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
    let b: serde_json::Value =
        serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2]}, "b": 1}"#).unwrap();
    assert_eq!(config_hash(&a), config_hash(&b));
    assert_eq!(config_hash(&a).len(), 64);
    assert_ne!(config_hash(&a), config_hash(&json!({"b": 2})));
    // sha256 of "{}"
    assert_eq!(
        config_hash(&json!({})),
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
}

#[test]
fn environment_capture() {
    let env = Environment::capture("cpu", BTreeMap::new());
    assert_eq!(env.device, "cpu");
    assert_eq!(env.os, std::env::consts::OS);
    assert!(env.threads >= 1);
    assert!(!env.peftbench_version.is_empty());
    if let Some(rev) = &env.git_revision {
        assert_eq!(rev.len(), 40, "{rev}");
        assert!(env.git_dirty.is_some());
    }
}

/// Writer half of `killed_writer_leaves_loadable_store`: runs only in the child process.
#[test]
#[ignore = "helper run as a child process by killed_writer_leaves_loadable_store"]
fn child_writer_loop() {
    let Ok(dir) = std::env::var("PEFTBENCH_RECORDS_CHILD_DIR") else {
        return;
    };
    let store = RecordStore::open(std::path::Path::new(&dir)).unwrap();
    for i in 0.. {
        store
            .write(&record(&format!("k/seed{}", i % 3), 0.5))
            .unwrap();
    }
}

#[test]
fn killed_writer_leaves_loadable_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer_loop",
            "--include-ignored",
            "--quiet",
        ])
        .env("PEFTBENCH_RECORDS_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    // Let it write a while, then SIGKILL it, most likely mid-write.
    let start = std::time::Instant::now();
    while store.load_all().unwrap().len() < 3 && start.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    child.kill().unwrap();
    child.wait().unwrap();
    let all = store.load_all().unwrap();
    assert_eq!(all.len(), 3, "every record complete after the kill");
}
