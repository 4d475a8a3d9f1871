use std::collections::BTreeMap;

use peftbench_records::{Environment, EvalCorrect, RunRecord, RunStatus, SCHEMA_VERSION};
use peftbench_report::{
    format_params, per_task_records, runs_table_with_width, Averaging, Leaderboard, PublishedTable,
    ReportLayout,
};

fn env() -> Environment {
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
        hostname: Some("host".into()),
        kernels: None,
    }
}

struct Run<'a> {
    suite: &'a str,
    label: &'a str,
    method: &'a str,
    task: &'a str,
    seed: u64,
    status: RunStatus,
    acc: Option<f64>,
    trainable: u64,
    total: u64,
}

fn rec(r: Run<'_>) -> RunRecord {
    let mut metrics = BTreeMap::new();
    if let Some(a) = r.acc {
        metrics.insert("test_accuracy".to_string(), a);
    }
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: format!("{}/{}/{}/seed{}", r.suite, r.task, r.label, r.seed),
        suite: r.suite.into(),
        task: r.task.into(),
        group: None,
        method: r.method.into(),
        label: r.label.into(),
        seed: r.seed,
        config: serde_json::json!({}),
        config_hash: "0".repeat(64),
        status: r.status,
        error: match r.status {
            RunStatus::Failed => Some("out of memory\nbacktrace...".into()),
            RunStatus::Diverged => Some("loss is NaN at epoch 3".into()),
            RunStatus::Completed => None,
        },
        metrics,
        primary_metric: "test_accuracy".into(),
        selection: "final epoch".into(),
        selected_epoch: Some(9),
        trainable_params: r.trainable,
        total_params: r.total,
        adapter_bytes: None,
        peak_memory_bytes: Some(1536 * 1024 * 1024),
        train_seconds: 12.34,
        eval_seconds: 1.0,
        train_examples_per_second: 81.04,
        history: vec![],
        environment: env(),
        started_at: "2026-11-27T13:00:00.000Z".into(),
        finished_at: "2026-11-27T13:00:13.000Z".into(),
        adapter_dir: None,
        // 100 test examples, the first round(acc * 100) correct: single seeds get bootstrap intervals.
        data: Vec::new(),
        eval_correct: r.acc.map(|a| {
            let hits = (a * 100.0).round() as usize;
            EvalCorrect::from_bools(&(0..100).map(|i| i < hits).collect::<Vec<_>>())
        }),
    }
}

const LORA: (u64, u64) = (294_912, 86_094_436);
const BITFIT: (u64, u64) = (102_400, 85_900_000);
const VPT: (u64, u64) = (6_000, 85_806_000);

fn completed(
    label: &str,
    method: &str,
    task: &str,
    seed: u64,
    acc: f64,
    p: (u64, u64),
) -> RunRecord {
    rec(Run {
        suite: "toy",
        label,
        method,
        task,
        seed,
        status: RunStatus::Completed,
        acc: Some(acc),
        trainable: p.0,
        total: p.1,
    })
}

fn broken(
    label: &str,
    method: &str,
    task: &str,
    seed: u64,
    status: RunStatus,
    p: (u64, u64),
) -> RunRecord {
    rec(Run {
        suite: "toy",
        label,
        method,
        task,
        seed,
        status,
        acc: None,
        trainable: p.0,
        total: p.1,
    })
}

/// Four tasks; groups natural = [a, b, c], structured = [d].
///
/// lora-r8: a = 70, 72, 74 (72.0 ±2.0); b = 80 (one seed); c = 50, 60 (55.0 ±7.1); d not run.
///   mean over 3 of 4 = (72 + 80 + 55) / 3 = 69.0*; group mean = natural 69.0 only = 69.0*.
/// bitfit: a 60, b 70, c 40, d 20 (+ a diverged seed on d).
///   mean = 190 / 4 = 47.5; group mean = (56.667 + 20) / 2 = 38.333.
/// vpt: a diverged, b failed (twice: failed + completed without a metric).
fn records() -> Vec<RunRecord> {
    vec![
        completed("lora-r8", "lora", "a", 0, 0.70, LORA),
        completed("bitfit", "bitfit", "a", 0, 0.60, BITFIT),
        completed("lora-r8", "lora", "a", 1, 0.72, LORA),
        completed("lora-r8", "lora", "a", 2, 0.74, LORA),
        completed("lora-r8", "lora", "b", 0, 0.80, LORA),
        completed("lora-r8", "lora", "c", 1, 0.60, LORA),
        completed("lora-r8", "lora", "c", 0, 0.50, LORA),
        completed("bitfit", "bitfit", "b", 0, 0.70, BITFIT),
        completed("bitfit", "bitfit", "c", 0, 0.40, BITFIT),
        completed("bitfit", "bitfit", "d", 0, 0.20, BITFIT),
        broken("bitfit", "bitfit", "d", 1, RunStatus::Diverged, BITFIT),
        broken("vpt", "vpt", "a", 0, RunStatus::Diverged, VPT),
        broken("vpt", "vpt", "b", 0, RunStatus::Failed, VPT),
        broken("vpt", "vpt", "b", 1, RunStatus::Completed, VPT),
        // Ignored: another suite, and a task outside the layout.
        rec(Run {
            suite: "other",
            label: "lora-r8",
            method: "lora",
            task: "a",
            seed: 0,
            status: RunStatus::Completed,
            acc: Some(0.01),
            trainable: 1,
            total: 2,
        }),
        completed("lora-r8", "lora", "zzz", 0, 0.99, LORA),
    ]
}

fn layout(published: Option<PublishedTable>) -> ReportLayout {
    ReportLayout {
        suite: "toy".into(),
        tasks: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        groups: vec![
            ("natural".into(), vec!["a".into(), "b".into(), "c".into()]),
            ("structured".into(), vec!["d".into()]),
        ],
        averaging: vec![Averaging::Mean, Averaging::GroupMean],
        published,
        chance: Vec::new(),
    }
}

/// Published LoRA: a 74.6, b 80.0, c 50.0, d 41.0; quoted group mean 60.0.
/// Mean computed from the tasks: 245.6 / 4 = 61.4.
fn published() -> PublishedTable {
    PublishedTable {
        source: "Test et al. 2026, Table 1".into(),
        results: BTreeMap::from([(
            "LoRA".to_string(),
            BTreeMap::from([
                ("a".to_string(), 74.6),
                ("b".to_string(), 80.0),
                ("c".to_string(), 50.0),
                ("d".to_string(), 41.0),
            ]),
        )]),
        means: BTreeMap::from([("LoRA".to_string(), 60.0)]),
        means_averaging: Averaging::GroupMean,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn cells_means_std_and_group_means() {
    let board = Leaderboard::build(&records(), &layout(None));
    let labels: Vec<&str> = board.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["lora-r8", "bitfit", "vpt"], "first-seen order");
    assert_eq!(board.runs, 14);
    assert_eq!(board.ignored_tasks, [("zzz".to_string(), 1)]);
    assert_eq!(board.seeds, [0, 1, 2]);

    let lora = &board.rows[0];
    let a = lora.cells[0].summary.unwrap();
    assert_eq!(a.n, 3);
    assert!(close(a.mean, 72.0) && close(a.std, 2.0), "{a:?}");
    assert_eq!(lora.cells[0].seeds, [0, 1, 2]);
    assert_eq!(lora.cells[0].text(), "72.0 ±2.0 (3)");
    assert_eq!(lora.cells[1].text(), "80.0 (1)");
    let c = lora.cells[2].summary.unwrap();
    assert!(close(c.mean, 55.0) && close(c.std, 50f64.sqrt()), "{c:?}");
    assert_eq!(lora.cells[2].text(), "55.0 ±7.1 (2)");
    assert_eq!(lora.cells[3].text(), "—");

    let (mean, group) = (&lora.averages[0], &lora.averages[1]);
    assert!(close(mean.value.unwrap(), 69.0));
    assert_eq!((mean.tasks_used, mean.tasks_total), (3, 4));
    assert!(mean.is_partial());
    assert_eq!(mean.text(), "69.0*");
    assert!(close(group.value.unwrap(), 69.0));
    assert_eq!((group.tasks_used, group.tasks_total), (3, 4));
    assert_eq!((group.groups_used, group.groups_total), (1, 2));
    assert_eq!(group.text(), "69.0*");

    let bitfit = &board.rows[1];
    assert_eq!(bitfit.cells[3].text(), "20.0 (1; 1 diverged)");
    assert!(close(bitfit.averages[0].value.unwrap(), 47.5));
    assert!(!bitfit.averages[0].is_partial());
    assert!(close(
        bitfit.averages[1].value.unwrap(),
        (170.0 / 3.0 + 20.0) / 2.0
    ));
    assert_eq!(bitfit.averages[1].text(), "38.3");

    let vpt = &board.rows[2];
    assert_eq!(vpt.cells[0].text(), "diverged");
    assert_eq!(vpt.cells[1].text(), "failed");
    assert_eq!(
        vpt.cells[1].failed, 2,
        "completed without its metric counts as failed"
    );
    assert_eq!(vpt.averages[0].value, None);
    assert_eq!(vpt.averages[0].text(), "—");

    let t = lora.trainable.unwrap();
    assert!(close(t.params, 294_912.0));
    assert_eq!(t.text(), "0.29M (0.34%)");
    assert_eq!(vpt.trainable.unwrap().text(), "6000 (<0.01%)");
}

#[test]
fn mixed_diverged_and_failed_cell() {
    let recs = vec![
        broken("m", "m", "a", 0, RunStatus::Diverged, VPT),
        broken("m", "m", "a", 1, RunStatus::Failed, VPT),
    ];
    let board = Leaderboard::build(&recs, &layout(None));
    assert_eq!(board.rows[0].cells[0].text(), "diverged/failed");
}

#[test]
fn explicit_row_order() {
    let order = vec![
        "vpt".to_string(),
        "missing".to_string(),
        "lora-r8".to_string(),
    ];
    let board = Leaderboard::build_with_order(&records(), &layout(None), &order);
    let labels: Vec<&str> = board.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["vpt", "lora-r8", "bitfit"]);
}

#[test]
fn published_differences() {
    let board = Leaderboard::build(&records(), &layout(Some(published())));
    let lora = &board.rows[0];
    let p = lora
        .published
        .as_ref()
        .expect("matched through method 'lora'");
    assert_eq!(p.label, "LoRA");
    assert_eq!(p.cells, [Some(74.6), Some(80.0), Some(50.0), Some(41.0)]);
    assert!(close(p.deltas[0].unwrap(), 72.0 - 74.6));
    assert!(close(p.deltas[1].unwrap(), 0.0));
    assert!(close(p.deltas[2].unwrap(), 5.0));
    assert_eq!(p.deltas[3], None, "we have no value for d");
    // Mean: computed from all four published tasks; Δ over the same three tasks as ours (partial).
    assert!(close(p.averages[0].unwrap(), 61.4));
    let (d, same_tasks) = p.average_deltas[0].unwrap();
    assert!(same_tasks && close(d, 69.0 - (74.6 + 80.0 + 50.0) / 3.0));
    // Group mean: quoted 60.0; Δ against the published natural-group mean over a, b, c.
    assert_eq!(p.averages[1], Some(60.0));
    let (d, same_tasks) = p.average_deltas[1].unwrap();
    assert!(same_tasks && close(d, 69.0 - (74.6 + 80.0 + 50.0) / 3.0));
    assert!(board.rows[1].published.is_none());

    let text = board.terminal_with_width(220);
    assert!(text.contains("LoRA (published)"), "{text}");
    assert!(text.contains("74.6 (Δ-2.6)"), "{text}");
    assert!(text.contains("80.0 (Δ+0.0)"), "{text}");
    assert!(text.contains("60.0 (Δ+0.8*)"), "{text}");
}

#[test]
fn published_difference_on_complete_rows() {
    // A complete row compares to the quoted/computed full averages, without a star.
    let mut recs = records();
    recs.push(completed("lora-r8", "lora", "d", 0, 0.45, LORA));
    let mut table = published();
    table.means_averaging = Averaging::Mean;
    table.means.insert("LoRA".into(), 61.5);
    let board = Leaderboard::build(&recs, &layout(Some(table)));
    let p = board.rows[0].published.as_ref().unwrap();
    // ours: mean (72 + 80 + 55 + 45) / 4 = 63.0, group ((72+80+55)/3 + 45) / 2 = 57.0
    assert!(close(board.rows[0].averages[0].value.unwrap(), 63.0));
    assert!(close(board.rows[0].averages[1].value.unwrap(), 57.0));
    assert_eq!(p.averages[0], Some(61.5), "quoted mean wins");
    let (d, same) = p.average_deltas[0].unwrap();
    assert!(!same && close(d, 1.5));
    // Group mean computed from published tasks: ((74.6 + 80 + 50) / 3 + 41) / 2 = 54.6
    assert!(close(p.averages[1].unwrap(), 54.6));
    let (d, same) = p.average_deltas[1].unwrap();
    assert!(!same && close(d, 57.0 - 54.6));
    let md = board.markdown();
    assert!(md.contains("61.5 (Δ+1.5)"), "{md}");
    assert!(md.contains("54.6 (Δ+2.4)"), "{md}");
}

#[test]
fn no_groups_means_no_group_mean_column() {
    let mut l = layout(None);
    l.groups.clear();
    let board = Leaderboard::build(&records(), &l);
    assert_eq!(board.averaging, [Averaging::Mean]);
    assert!(!board.terminal_with_width(160).contains("Group mean"));
}

#[test]
fn empty_leaderboard_renders() {
    let board = Leaderboard::build(&[], &layout(None));
    assert!(board.rows.is_empty());
    let md = board.markdown();
    assert!(md.contains("0 runs in total"), "{md}");
    board.terminal_with_width(100);
}

#[test]
fn params_format() {
    assert_eq!(format_params(0.0), "0");
    assert_eq!(format_params(9_999.0), "9999");
    assert_eq!(format_params(77_669.0), "0.08M");
    assert_eq!(format_params(85_876_325.0), "85.88M");
    assert_eq!(format_params(7.0e9), "7.00B");
}

#[test]
fn write_markdown_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let board = Leaderboard::build(&records(), &layout(Some(published())));
    let reports = dir.path().join("reports");
    let path = board.write_markdown(&reports).unwrap();
    assert_eq!(path, reports.join("toy.md"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), board.markdown());
    // Overwrite leaves no temporary files behind.
    board.write_markdown(&reports).unwrap();
    assert_eq!(std::fs::read_dir(&reports).unwrap().count(), 1);
}

#[test]
fn snapshot_terminal() {
    let board = Leaderboard::build(&records(), &layout(Some(published())));
    insta::assert_snapshot!("terminal", board.terminal_with_width(220));
}

#[test]
fn snapshot_terminal_narrow() {
    let board = Leaderboard::build(&records(), &layout(Some(published())));
    insta::assert_snapshot!("terminal_narrow", board.terminal_with_width(80));
}

#[test]
fn snapshot_markdown() {
    let board = Leaderboard::build(&records(), &layout(Some(published())));
    insta::assert_snapshot!("markdown", board.markdown());
}

#[test]
fn snapshot_runs_table() {
    let recs: Vec<RunRecord> = records().into_iter().take(14).collect();
    insta::assert_snapshot!("runs_table", runs_table_with_width(&recs[9..], 100));
}

/// V-PETL's published LoRA row (its README, as `suites/vtab1k.yaml` cites it): our averaging conventions must reproduce its quoted
/// plain mean 72.25 and group mean 74.60 from the 19 task values.
#[test]
fn vtab_conventions_reproduce_published_means() {
    let groups: Vec<(&str, Vec<&str>)> = vec![
        (
            "natural",
            vec![
                "cifar",
                "caltech101",
                "dtd",
                "oxford_flowers102",
                "oxford_iiit_pet",
                "svhn",
                "sun397",
            ],
        ),
        (
            "specialized",
            vec![
                "patch_camelyon",
                "eurosat",
                "resisc45",
                "diabetic_retinopathy",
            ],
        ),
        (
            "structured",
            vec![
                "clevr_count",
                "clevr_dist",
                "dmlab",
                "kitti",
                "dsprites_loc",
                "dsprites_ori",
                "smallnorb_azi",
                "smallnorb_ele",
            ],
        ),
    ];
    let lora = [
        67.1, 91.4, 69.4, 98.8, 90.4, 85.3, 54.0, 84.9, 95.3, 84.4, 73.6, 82.9, 69.2, 49.8, 78.5,
        75.7, 47.1, 31.0, 44.0,
    ];
    let tasks: Vec<String> = groups
        .iter()
        .flat_map(|(_, t)| t.iter().map(|s| s.to_string()))
        .collect();
    let layout = ReportLayout {
        suite: "toy".into(),
        tasks: tasks.clone(),
        groups: groups
            .iter()
            .map(|(g, t)| (g.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect(),
        averaging: vec![Averaging::Mean, Averaging::GroupMean],
        published: Some(PublishedTable {
            source: "V-PETL README".into(),
            results: BTreeMap::from([(
                "LoRA".to_string(),
                tasks.iter().cloned().zip(lora).collect(),
            )]),
            means: BTreeMap::new(),
            means_averaging: Averaging::GroupMean,
        }),
        chance: Vec::new(),
    };
    let recs: Vec<RunRecord> = tasks
        .iter()
        .zip(lora)
        .map(|(t, v)| completed("lora", "lora", t, 0, v / 100.0, LORA))
        .collect();
    let board = Leaderboard::build(&recs, &layout);
    let row = &board.rows[0];
    assert!((row.averages[0].value.unwrap() - 72.25).abs() < 0.01);
    assert!((row.averages[1].value.unwrap() - 74.60).abs() < 0.01);
    assert!(!row.averages[0].is_partial() && !row.averages[1].is_partial());
    let p = row.published.as_ref().unwrap();
    assert!((p.averages[0].unwrap() - 72.25).abs() < 0.01);
    assert!((p.averages[1].unwrap() - 74.60).abs() < 0.01);
    for d in &p.deltas {
        assert!(d.unwrap().abs() < 1e-9);
    }
    for d in &p.average_deltas {
        assert!(d.unwrap().0.abs() < 1e-9);
    }
}

/// A multi-task run's record fills one column per member task: each member's accuracy, its own
/// slice of the per-example correctness for the interval, and the run's cost on every member.
#[test]
fn a_multi_task_record_fills_a_column_per_member() {
    let mut run = completed("poly", "poly", "skills", 0, 0.75, LORA);
    run.metrics.insert("test_accuracy@a".into(), 0.5);
    run.metrics.insert("test_accuracy@b".into(), 1.0);
    run.metrics.insert("eval_examples@a".into(), 2.0);
    run.metrics.insert("eval_examples@b".into(), 3.0);
    run.config =
        serde_json::json!({ "multitask": { "tasks": [{ "name": "a" }, { "name": "b" }] } });
    run.eval_correct = Some(EvalCorrect::from_bools(&[true, false, true, true, true]));
    let split = per_task_records(std::slice::from_ref(&run));
    let tasks: Vec<&str> = split.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(tasks, ["a", "b"]);
    assert_eq!(
        split[0].eval_correct.as_ref().unwrap().to_bools().unwrap(),
        [true, false]
    );
    assert_eq!(
        split[1].eval_correct.as_ref().unwrap().to_bools().unwrap(),
        [true, true, true]
    );
    let board = Leaderboard::build(&[run], &layout(None));
    let poly = &board.rows[0];
    assert_eq!(poly.cells[0].text(), "50.0 (1)");
    assert_eq!(poly.cells[1].text(), "100.0 (1)");
    assert_eq!(poly.cells[2].text(), "—");
    assert!(board.ignored_tasks.is_empty(), "{:?}", board.ignored_tasks);
    // A single-task record passes through unchanged.
    let single = completed("lora-r8", "lora", "a", 0, 0.70, LORA);
    assert_eq!(
        per_task_records(std::slice::from_ref(&single)),
        vec![single]
    );
}

/// A layout that knows its tasks' chance levels puts them in a `chance` row under the methods.
#[test]
fn chance_levels_get_their_own_row() {
    let mut with_chance = layout(None);
    with_chance.chance = vec![Some(100.0 / 9.0), Some(12.5), None, Some(50.0)];
    let board = Leaderboard::build(&records(), &with_chance);
    let terminal = board.terminal();
    let row = terminal
        .lines()
        .find(|l| l.contains("chance"))
        .expect("a chance row");
    for level in ["11.1", "12.5", "50.0"] {
        assert!(row.contains(level), "{row}");
    }
    assert!(
        board
            .markdown()
            .contains("| chance | 11.1 | 12.5 |  | 50.0 |"),
        "{}",
        board.markdown()
    );
    assert!(!Leaderboard::build(&records(), &layout(None))
        .terminal()
        .contains("chance"));
}
