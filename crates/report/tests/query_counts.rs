//! What leaderboards say about the data behind their numbers: how many queries a ranking task's
//! averages are over, and which pinned data was read without a fetch receipt.

use std::collections::BTreeMap;

use peftbench_records::{Environment, RunRecord, RunStatus, SCHEMA_VERSION};
use peftbench_report::{Averaging, Leaderboard, QueryCounts, ReportLayout};

fn ranking_record(task: &str, label: &str, ndcg: f64, counts: Option<[f64; 3]>) -> RunRecord {
    let mut metrics = BTreeMap::from([("ndcg_cut_10".to_string(), ndcg)]);
    if let Some([judged, retrieved, evaluated]) = counts {
        metrics.insert("queries_judged".into(), judged);
        metrics.insert("queries_retrieved".into(), retrieved);
        metrics.insert("queries_evaluated".into(), evaluated);
    }
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: format!("rr/{task}/{label}/seed0"),
        suite: "rr".into(),
        task: task.into(),
        group: None,
        method: label.into(),
        label: label.into(),
        seed: 0,
        config: serde_json::json!({}),
        config_hash: "0".repeat(64),
        status: RunStatus::Completed,
        error: None,
        metrics,
        primary_metric: "ndcg_cut_10".into(),
        selection: "final".into(),
        selected_epoch: Some(0),
        trainable_params: 10,
        total_params: 100,
        adapter_bytes: None,
        peak_memory_bytes: None,
        train_seconds: 1.0,
        eval_seconds: 1.0,
        train_examples_per_second: 1.0,
        history: vec![],
        environment: Environment {
            git_revision: None,
            git_dirty: None,
            peftbench_version: "0.1.0".into(),
            crate_versions: BTreeMap::new(),
            device: "cpu".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            cpu: None,
            threads: 2,
            hostname: None,
            kernels: None,
        },
        started_at: "2026-12-01T00:00:00.000Z".into(),
        finished_at: "2026-12-01T00:00:01.000Z".into(),
        adapter_dir: None,
        data: Vec::new(),
        eval_correct: None,
    }
}

fn layout() -> ReportLayout {
    ReportLayout {
        suite: "rr".into(),
        tasks: vec!["en".into(), "en-de".into()],
        groups: vec![],
        averaging: vec![Averaging::Mean],
        published: None,
        chance: Vec::new(),
    }
}

#[test]
fn ranking_tasks_show_judged_retrieved_and_averaged_queries() {
    let records = [
        ranking_record("en", "lora", 0.5, Some([50.0, 50.0, 50.0])),
        ranking_record("en-de", "lora", 0.3, Some([400.0, 326.0, 400.0])),
        ranking_record("en-de", "full", 0.4, Some([400.0, 326.0, 400.0])),
    ];
    let board = Leaderboard::build(&records, &layout());
    assert_eq!(
        board.query_counts,
        vec![
            (
                "en".to_string(),
                QueryCounts {
                    judged: 50,
                    retrieved: 50,
                    evaluated: 50
                }
            ),
            (
                "en-de".to_string(),
                QueryCounts {
                    judged: 400,
                    retrieved: 326,
                    evaluated: 400
                }
            ),
        ]
    );
    let note = "Queries judged / with first-stage candidates / averaged over: en 50/50/50, en-de 400/326/400";
    assert!(board.markdown().contains(note), "{}", board.markdown());
    assert!(board.terminal().contains(note), "{}", board.terminal());
}

#[test]
fn classification_leaderboards_have_no_query_counts() {
    let records = [ranking_record("en", "lora", 0.5, None)];
    let board = Leaderboard::build(&records, &layout());
    assert!(board.query_counts.is_empty());
    assert!(!board.markdown().contains("Queries judged"));
}

#[test]
fn data_read_without_a_fetch_receipt_is_warned_about() {
    let artifact = |id: &str, receipt| peftbench_records::DataArtifact {
        id: id.into(),
        manifest_sha256: "0".repeat(64),
        commit: None,
        receipt,
        files: BTreeMap::new(),
    };
    let mut fetched = ranking_record("en", "lora", 0.5, None);
    fetched.data = vec![artifact("weights", true), artifact("corpus", true)];
    let mut found = ranking_record("en-de", "lora", 0.5, None);
    found.data = vec![artifact("weights", true), artifact("clef", false)];
    let board = Leaderboard::build(&[fetched.clone()], &layout());
    assert!(board.unverified_data.is_empty());
    assert!(!board
        .markdown()
        .contains("without a `harness fetch` receipt"));
    let board = Leaderboard::build(&[fetched, found], &layout());
    assert_eq!(board.unverified_data, vec!["clef".to_string()]);
    assert!(
        board
            .terminal()
            .contains("Warning: read without a `harness fetch` receipt, so unverified against the manifest's pins: clef"),
        "{}",
        board.terminal()
    );
}
