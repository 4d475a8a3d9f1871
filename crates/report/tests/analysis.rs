//! Intervals, ranks, group means, costs, JSON/CSV, figures, record filters and regression
//! comparisons.

use std::collections::BTreeMap;

use peftbench_metrics::bootstrap_ci95;
use peftbench_records::{Environment, EvalCorrect, RunRecord, RunStatus, SCHEMA_VERSION};
use peftbench_report::{
    compare, csv, json, plots::pareto_front, write_figures, Averaging, IntervalKind, Leaderboard,
    RecordFilter, ReportLayout, Verdict,
};
use serde_json::json;

fn record(label: &str, task: &str, seed: u64, acc: Option<f64>) -> RunRecord {
    let method = label.split('-').next().unwrap().to_string();
    let trainable = match method.as_str() {
        "lora" => 4_594,
        "bitfit" => 2_930,
        _ => 150_000,
    };
    let mut metrics = BTreeMap::new();
    if let Some(a) = acc {
        metrics.insert("test_accuracy".to_string(), a);
    }
    // 200 test examples, the first round(acc * 200) correct.
    let eval_correct = acc.map(|a| {
        let hits = (a * 200.0).round() as usize;
        EvalCorrect::from_bools(&(0..200).map(|i| i < hits).collect::<Vec<_>>())
    });
    let config = json!({"task": {"name": task}, "label": label, "seed": seed, "recipe": {"lr": 0.01},
                        "data": {"root": "/data", "format": "generated"}});
    RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: format!("{task}/{label}/seed{seed}-0000000000"),
        suite: "toy".into(),
        task: task.into(),
        group: Some(if task == "c" { "structured" } else { "natural" }.into()),
        method,
        label: label.into(),
        seed,
        config_hash: format!("{:064}", seed),
        config,
        status: if acc.is_some() {
            RunStatus::Completed
        } else {
            RunStatus::Failed
        },
        error: None,
        metrics,
        primary_metric: "test_accuracy".into(),
        selection: "final".into(),
        selected_epoch: Some(7),
        trainable_params: trainable,
        total_params: 150_000,
        adapter_bytes: Some(trainable * 4 + 512),
        peak_memory_bytes: Some((300 + seed) << 20),
        train_seconds: 10.0 + seed as f64,
        eval_seconds: 1.0,
        train_examples_per_second: 100.0,
        history: vec![],
        environment: Environment {
            git_revision: Some("abc".into()),
            git_dirty: Some(false),
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
        started_at: "2026-11-27T13:00:00.000Z".into(),
        finished_at: "2026-11-27T13:00:10.000Z".into(),
        adapter_dir: None,
        eval_correct,
        data: Vec::new(),
    }
}

/// full: a 0.60, b 0.50, c 0.40 (one seed each)
/// lora: a 0.55/0.65 (two seeds), b 0.50, c 0.45
/// bitfit: a 0.30, b 0.20, c failed
fn records() -> Vec<RunRecord> {
    vec![
        record("full", "a", 0, Some(0.60)),
        record("full", "b", 0, Some(0.50)),
        record("full", "c", 0, Some(0.40)),
        record("lora-r4", "a", 0, Some(0.55)),
        record("lora-r4", "a", 1, Some(0.65)),
        record("lora-r4", "b", 0, Some(0.50)),
        record("lora-r4", "c", 0, Some(0.45)),
        record("bitfit", "a", 0, Some(0.30)),
        record("bitfit", "b", 0, Some(0.20)),
        record("bitfit", "c", 0, None),
    ]
}

fn layout() -> ReportLayout {
    ReportLayout {
        suite: "toy".into(),
        tasks: vec!["a".into(), "b".into(), "c".into()],
        groups: vec![
            ("natural".into(), vec!["a".into(), "b".into()]),
            ("structured".into(), vec!["c".into()]),
        ],
        averaging: vec![Averaging::Mean, Averaging::GroupMean],
        published: None,
        chance: Vec::new(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn intervals_t_over_seeds_and_bootstrap_for_one_seed() {
    let board = Leaderboard::build(&records(), &layout());
    let lora_a = &board.rows[1].cells[0];
    assert_eq!(lora_a.interval, Some(IntervalKind::TOverSeeds));
    // mean 60, std 7.0711, t(0.975, 1) = 12.7062: half width 12.7062 * 7.0711 / sqrt(2) = 63.531,
    // i.e. [-3.531, 123.531], clipped to the metric's range.
    assert_eq!(lora_a.ci95, Some((0.0, 100.0)));
    let (lo, hi) = board.rows[1].cells[1].ci95.unwrap();
    let mean = board.rows[1].cells[1].mean().unwrap();
    assert!(lo <= mean && mean <= hi && lo >= 0.0 && hi <= 100.0);

    let full_a = &board.rows[0].cells[0];
    assert_eq!(full_a.interval, Some(IntervalKind::BootstrapOverExamples));
    let flags: Vec<bool> = (0..200).map(|i| i < 120).collect();
    let (blo, bhi) = bootstrap_ci95(&flags, 1000, 0x7065_6674);
    let (lo, hi) = full_a.ci95.unwrap();
    assert!(close(lo, blo * 100.0) && close(hi, bhi * 100.0));
    assert!(
        lo < 60.0 && 60.0 < hi && hi - lo > 8.0 && hi - lo < 20.0,
        "{lo} {hi}"
    );
    assert!(full_a.interval_text().ends_with('ᵇ'));

    // A single seed without per-example results has no interval.
    let mut recs = records();
    recs[0].eval_correct = None;
    let board = Leaderboard::build(&recs, &layout());
    assert_eq!(board.rows[0].cells[0].ci95, None);
    assert_eq!(board.rows[0].cells[0].interval_text(), "n/a");
}

/// The t interval over seeds equals SciPy's `t.interval(0.95, n - 1, loc=mean, scale=sem)` on the
/// seed scores of `crates/metrics/tests/fixtures/t_intervals_scipy.json` (written by
/// `ci/fixtures/t_quantiles_scipy.py`), for every case of 3 or more seeds whose interval stays
/// inside [0, 100] (2 seeds give intervals wider than the metric's range, clipped as above).
#[test]
fn t_intervals_over_seeds_equal_scipys() {
    #[derive(serde::Deserialize)]
    struct Case {
        values: Vec<f64>,
        mean: f64,
        ci95: (f64, f64),
    }
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../../metrics/tests/fixtures/t_intervals_scipy.json"
    ))
    .unwrap();
    let cases: Vec<Case> = serde_json::from_value(fixture["summaries"].clone()).unwrap();
    let mut checked = 0;
    for case in cases {
        if case.values.len() < 3 || case.ci95.0 < 0.0 || case.ci95.1 > 100.0 {
            continue;
        }
        let recs: Vec<RunRecord> = case
            .values
            .iter()
            .enumerate()
            .map(|(seed, v)| {
                let mut r = record("lora-r4", "a", seed as u64, Some(v / 100.0));
                r.eval_correct = None;
                r
            })
            .collect();
        let board = Leaderboard::build(&recs, &layout());
        let cell = &board.rows[0].cells[0];
        assert_eq!(cell.interval, Some(IntervalKind::TOverSeeds));
        assert!((cell.mean().unwrap() - case.mean).abs() < 1e-9);
        let (lo, hi) = cell.ci95.unwrap();
        assert!(
            (lo - case.ci95.0).abs() < 1e-7 && (hi - case.ci95.1).abs() < 1e-7,
            "{:?}: ({lo}, {hi}) vs scipy {:?}",
            case.values,
            case.ci95
        );
        checked += 1;
    }
    assert!(checked >= 5, "{checked} cases");
}

#[test]
fn group_means_ranks_and_costs() {
    let board = Leaderboard::build(&records(), &layout());
    let [full, lora, bitfit] = &board.rows[..] else {
        panic!()
    };
    assert_eq!(full.group_means, [Some(55.0), Some(40.0)]);
    assert_eq!(lora.group_means, [Some(55.0), Some(45.0)]);
    assert_eq!(bitfit.group_means, [Some(25.0), None]);
    // Ranks: a: full 60 = lora 60 -> 1.5 each, bitfit 3; b: full = lora 50 -> 1.5, bitfit 3;
    // c: lora 45 -> 1, full 40 -> 2.
    assert!(close(full.avg_rank.unwrap(), (1.5 + 1.5 + 2.0) / 3.0));
    assert!(close(lora.avg_rank.unwrap(), (1.5 + 1.5 + 1.0) / 3.0));
    assert!(close(bitfit.avg_rank.unwrap(), 3.0));
    // Costs: adapter bytes averaged over completed runs, peak memory the max over all runs.
    assert!(close(
        lora.cost.adapter_bytes.unwrap(),
        (4_594 * 4 + 512) as f64
    ));
    assert_eq!(lora.cost.peak_memory_bytes, Some(301 << 20));
    assert!(close(lora.cost.train_seconds.unwrap(), 10.25));
    let md = board.markdown();
    for needle in [
        "| method | a | b | c | Natural | Structured | Mean | Group mean | Avg rank | Trainable |",
        "## 95% intervals",
        "## Cost",
        "| lora-r4 | 4594 (3.06%) | 18.9 kB | 301 MiB | 100.0 | 10.2 s |",
    ] {
        assert!(md.contains(needle), "{needle}\n{md}");
    }
}

#[test]
fn csv_and_json_carry_every_cell() {
    let board = Leaderboard::build(&records(), &layout());
    let text = csv(&board);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "suite,kind,method,name,seeds,mean,std,ci95_low,ci95_high,interval,diverged,failed,published,delta"
    );
    // 3 rows x (3 tasks + 2 groups + 2 averages) + header
    assert_eq!(lines.len(), 1 + 3 * 7);
    assert!(lines.contains(&"toy,group,lora-r4,natural,,55.0000,,,,,,,,"));
    assert!(lines.iter().any(
        |l| l.starts_with("toy,task,lora-r4,a,2,60.0000,7.0711,") && l.contains("t_over_seeds")
    ));
    assert!(lines.contains(&"toy,task,bitfit,c,0,,,,,,0,1,,"));

    let v: serde_json::Value = serde_json::from_str(&json(&board)).unwrap();
    assert_eq!(v["suite"], "toy");
    let values = v["rows"][1]["cells"][0]["values"].as_array().unwrap();
    assert!(close(values[0].as_f64().unwrap(), 55.0) && close(values[1].as_f64().unwrap(), 65.0));
    assert_eq!(v["rows"][1]["cells"][0]["interval"], "t_over_seeds");
    assert_eq!(v["rows"][2]["avg_rank"], 3.0);
}

#[test]
fn pareto_front_keeps_undominated_points() {
    let p = |l: &str, x: f64, y: f64| (l.to_string(), x, y);
    let points = vec![
        p("linear", 500.0, 20.0),
        p("bitfit", 3_000.0, 25.0),
        p("vpt", 1_500.0, 19.0),
        p("lora", 4_600.0, 31.0),
        p("adapter", 4_900.0, 25.0),
        p("full", 150_000.0, 41.0),
    ];
    let front: Vec<&str> = pareto_front(&points)
        .into_iter()
        .map(|i| points[i].0.as_str())
        .collect();
    assert_eq!(front, ["linear", "bitfit", "lora", "full"]);
}

/// Dark pixels in a band of rows of an RGB image: text drawn there.
fn dark_pixels(img: &image::RgbImage, rows: std::ops::Range<u32>) -> usize {
    rows.flat_map(|y| (0..img.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
        .count()
}

#[test]
fn figures_are_written_as_svg_and_png_with_text() {
    let dir = tempfile::tempdir().unwrap();
    let board = Leaderboard::build(&records(), &layout());
    let figures = write_figures(&board, dir.path()).unwrap();
    let names: Vec<&str> = figures.iter().map(|f| f.svg.as_str()).collect();
    assert_eq!(
        names,
        [
            "toy/accuracy-vs-params.svg",
            "toy/accuracy-vs-adapter-bytes.svg",
            "toy/per-task.svg"
        ]
    );
    for f in &figures {
        let svg = std::fs::read_to_string(dir.path().join(&f.svg)).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        assert!(svg.contains(&f.title), "title text in {}", f.svg);
        let png = image::open(dir.path().join(&f.png)).unwrap().to_rgb8();
        // The caption (top 40 rows) has text in it: the embedded font rendered.
        assert!(
            dark_pixels(&png, 0..40) > 200,
            "no caption text in {}",
            f.png
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("toy/accuracy-vs-params.svg")).unwrap();
    assert!(svg.contains("lora-r4") && svg.contains("Pareto front"));
    let md = board.markdown_with_figures(&figures);
    assert!(md.contains("![toy: accuracy vs trainable parameters](toy/accuracy-vs-params.svg) ([PNG](toy/accuracy-vs-params.png))"));
}

#[test]
fn layout_from_records_and_filters() {
    let recs = records();
    let l = ReportLayout::from_records("toy", &recs);
    assert_eq!(l.tasks, ["a", "b", "c"]);
    assert_eq!(
        l.groups,
        [
            (
                "natural".to_string(),
                vec!["a".to_string(), "b".to_string()]
            ),
            ("structured".to_string(), vec!["c".to_string()])
        ]
    );
    assert_eq!(l.averaging, [Averaging::Mean, Averaging::GroupMean]);

    let f = RecordFilter::parse(&["method=lora,task=a".into(), "bitfit/seed0".into()]).unwrap();
    let kept: Vec<&str> = recs
        .iter()
        .filter(|r| f.matches(r))
        .map(|r| r.run_id.as_str())
        .collect();
    assert_eq!(
        kept,
        [
            "a/lora-r4/seed0-0000000000",
            "a/lora-r4/seed1-0000000000",
            "a/bitfit/seed0-0000000000",
            "b/bitfit/seed0-0000000000",
            "c/bitfit/seed0-0000000000"
        ]
    );
    let f = RecordFilter::parse(&["status=failed".into()]).unwrap();
    assert_eq!(recs.iter().filter(|r| f.matches(r)).count(), 1);
    let e = RecordFilter::parse(&["colour=red".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown key `colour`") && e.contains("suite, task"),
        "{e}"
    );
}

#[test]
fn compare_flags_regressions_beyond_each_tasks_tolerance() {
    let base = records();
    let mut cur = records();
    cur[0].metrics.insert("test_accuracy".into(), 0.58); // full/a -2.0: within a's 3.0
    cur[1].metrics.insert("test_accuracy".into(), 0.47); // full/b -3.0: beyond b's 1.0
    cur[2].metrics.insert("test_accuracy".into(), 0.45); // full/c +5.0: improved
    cur.retain(|r| !(r.label == "bitfit" && r.task == "b")); // missing
    cur.push(record("vpt", "a", 0, Some(0.1))); // new
    let tol = |_: &str, task: &str| if task == "a" { 3.0 } else { 1.0 };
    let c = compare(&base, &cur, &tol).unwrap();
    let verdict = |task: &str, label: &str| {
        c.rows
            .iter()
            .find(|r| r.task == task && r.label == label)
            .unwrap()
            .verdict
    };
    assert_eq!(verdict("a", "full"), Verdict::Ok);
    assert_eq!(verdict("b", "full"), Verdict::Regression);
    assert_eq!(verdict("c", "full"), Verdict::Improved);
    assert_eq!(verdict("b", "bitfit"), Verdict::Missing);
    assert_eq!(
        verdict("c", "bitfit"),
        Verdict::Failed,
        "failed in both: still a failure"
    );
    assert_eq!(verdict("a", "vpt"), Verdict::New);
    assert!(c.has_regression());
    let md = c.markdown();
    assert!(
        md.contains("| toy | b | full | 50.00 (1) | 47.00 (1) | -3.00 | ±1.0 | **REGRESSION** |"),
        "{md}"
    );
    // Regressions are listed first.
    let first = md.lines().nth(6).unwrap();
    assert!(first.contains("**"), "{md}");

    // The same records compare clean (bitfit/c failed on both sides is still reported).
    let ok: Vec<RunRecord> = records()
        .into_iter()
        .filter(|r| r.status == RunStatus::Completed)
        .collect();
    let c = compare(&ok, &ok, &tol).unwrap();
    assert!(!c.has_regression());
}

#[test]
fn compare_refuses_different_suites_configs_and_metrics() {
    let base = records();
    let mut other_suite = records();
    other_suite[0].suite = "vtab".into();
    let e = compare(&base, &other_suite, &|_, _| 1.0).unwrap_err();
    assert!(e.contains("different suites") && e.contains("vtab"), "{e}");

    let mut other_lr = records();
    other_lr[3].config["recipe"]["lr"] = json!(0.001);
    let e = compare(&base, &other_lr, &|_, _| 1.0).unwrap_err();
    assert!(e.contains("toy/a/lora-r4: configuration differs"), "{e}");
    assert!(e.contains("recipe.lr: 0.01 vs 0.001"), "{e}");

    let mut other_metric = records();
    for r in &mut other_metric {
        r.primary_metric = "val_accuracy".into();
    }
    let e = compare(&base, &other_metric, &|_, _| 1.0).unwrap_err();
    assert!(
        e.contains("primary metric `test_accuracy` (baseline) vs `val_accuracy`"),
        "{e}"
    );

    // The seed and the data folder may differ.
    let mut moved = records();
    for r in &mut moved {
        r.config["data"]["root"] = json!("/elsewhere");
    }
    assert!(compare(&base, &moved, &|_, _| 1.0).is_ok());
}

/// With at least two seeds on both sides, the tolerance widens to the 95% Welch half-width of the
/// difference of the means, so a drop the seeds already spread over is not a regression; a drop
/// beyond it still is, and one-seed comparisons keep the task's tolerance.
#[test]
fn compare_widens_the_tolerance_to_the_seeds_spread() {
    let side = |values: [f64; 3]| -> Vec<RunRecord> {
        values
            .iter()
            .enumerate()
            .map(|(seed, &v)| record("lora", "a", seed as u64, Some(v)))
            .collect()
    };
    // Baseline 60, 62, 64 (mean 62, std 2); current 58, 60, 62 (mean 60, std 2): se = sqrt(8/3) =
    // 1.633, Welch df = 4, t = 2.776: half-width 4.53 points.
    let base = side([0.60, 0.62, 0.64]);
    let close_call = compare(&base, &side([0.58, 0.60, 0.62]), &|_, _| 1.0).unwrap();
    let row = &close_call.rows[0];
    assert_eq!(row.verdict, Verdict::Ok);
    assert!(row.tolerance_from_seeds);
    assert!(
        (row.tolerance - 2.776_445 * (8.0f64 / 3.0).sqrt()).abs() < 1e-3,
        "{}",
        row.tolerance
    );
    assert!(
        close_call.markdown().contains("±4.5ˢ"),
        "{}",
        close_call.markdown()
    );
    // Ten points down is beyond what three seeds of spread 2 explain.
    let real_drop = compare(&base, &side([0.50, 0.52, 0.54]), &|_, _| 1.0).unwrap();
    assert_eq!(real_drop.rows[0].verdict, Verdict::Regression);
    // One seed: the task's own tolerance.
    let one = compare(
        &base[..1],
        &[record("lora", "a", 0, Some(0.58))],
        &|_, _| 1.0,
    )
    .unwrap();
    assert!(!one.rows[0].tolerance_from_seeds);
    assert_eq!(one.rows[0].tolerance, 1.0);
    assert_eq!(one.rows[0].verdict, Verdict::Regression);
}

/// A class-incremental record of `label`: a 3-stage stream of 4 classes each whose curve is
/// `curve` (fractions), with the metrics a stream run writes.
fn stream_record(label: &str, seed: u64, curve: [f64; 3], forgetting: f64) -> RunRecord {
    let mut r = record(label, "a", seed, Some(0.0));
    r.suite = "cl".into();
    r.primary_metric = "avg_incremental_accuracy".into();
    r.metrics = BTreeMap::from([
        (
            "avg_incremental_accuracy".to_string(),
            curve.iter().sum::<f64>() / 3.0,
        ),
        ("last_accuracy".to_string(), curve[2]),
        ("forgetting".to_string(), forgetting),
        ("accuracy@4".to_string(), curve[0]),
        ("accuracy@8".to_string(), curve[1]),
        ("accuracy@12".to_string(), curve[2]),
    ]);
    r
}

/// Ā, A_T and forgetting side by side over seeds, and the curve figure by classes seen.
#[test]
fn class_incremental_runs_get_their_table_and_curve() {
    let records = vec![
        stream_record("finetune", 0, [0.9, 0.5, 0.3], 0.6),
        stream_record("finetune", 1, [0.9, 0.6, 0.4], 0.5),
        stream_record("simplecil", 0, [0.9, 0.85, 0.8], 0.1),
    ];
    let layout = ReportLayout {
        suite: "cl".into(),
        tasks: vec!["a".into()],
        groups: vec![],
        averaging: vec![Averaging::Mean],
        published: None,
        chance: vec![None],
    };
    let board = Leaderboard::build(&records, &layout);
    let table = board.continual.as_ref().unwrap();
    let finetune = &table.rows[0];
    assert_eq!(
        (finetune.label.as_str(), finetune.runs, finetune.stages),
        ("finetune", 2, 3)
    );
    assert!(close(
        finetune.average.mean,
        100.0 * (1.7 / 3.0 + 1.9 / 3.0) / 2.0
    ));
    assert!(close(finetune.last.mean, 35.0));
    assert!(close(finetune.last.std.unwrap(), (2.0f64 * 25.0).sqrt()));
    assert_eq!(
        finetune.curve.iter().map(|p| p.0).collect::<Vec<_>>(),
        [4, 8, 12]
    );
    assert!(close(finetune.curve[1].1, 55.0));
    assert_eq!(table.rows[1].last.std, None);
    let md = board.markdown();
    assert!(
        md.contains("| finetune | a | 60.0 ±4.7 | 35.0 ±7.1 | 55.0 ±7.1 | 3 | 2 |"),
        "{md}"
    );
    assert!(
        md.contains("| simplecil | a | 85.0 | 80.0 | 10.0 | 3 | 1 |"),
        "{md}"
    );

    let dir = tempfile::tempdir().unwrap();
    let figures = write_figures(&board, dir.path()).unwrap();
    let curve = figures
        .iter()
        .find(|f| f.svg == "cl/accuracy-curve.svg")
        .expect("a curve figure");
    let svg = std::fs::read_to_string(dir.path().join(&curve.svg)).unwrap();
    assert!(svg.contains("Classes seen") && svg.contains("simplecil"));
    // Classification suites have no such table or figure.
    let plain = Leaderboard::build(&self::records(), &self::layout());
    assert!(plain.continual.is_none());
    assert!(!plain.markdown().contains("Class-incremental"));
}

/// Music records measured in a pretrained embedding's space (`music.embedding`) get its Fréchet
/// and kernel distances as columns after the codec's, and its references in the task's line;
/// records without one keep the codec's columns only.
#[test]
fn music_table_shows_embedding_distances_when_recorded() {
    use peftbench_report::music::{music_table, COLUMNS};
    let music = |label: &str, seed: u64, crepe: bool| {
        let mut r = record(label, "han", seed, Some(0.5));
        r.metrics.clear();
        r.primary_metric = "ce_reduction".into();
        for (k, v) in [
            ("ce", 3.5),
            ("fd_codec", 1.0),
            ("fd_codec_floor", 0.5),
            ("kd_codec", 0.002),
        ] {
            r.metrics.insert(k.into(), v);
        }
        if crepe {
            for (k, v) in [
                ("fd_crepe_tiny", 40.0 + seed as f64),
                ("kd_crepe_tiny", 0.25),
                ("fd_crepe_tiny_floor", 12.5),
                ("fd_crepe_tiny_source", 30.0),
            ] {
                r.metrics.insert(k.into(), v);
            }
        }
        r
    };
    let labels = vec!["lora".to_string()];
    let tasks = vec!["han".to_string()];

    let records = [music("lora", 0, true), music("lora", 1, true)];
    let refs: Vec<&RunRecord> = records.iter().collect();
    let table = music_table(&refs, &labels, &tasks).unwrap();
    let titles: Vec<&str> = table.columns.iter().map(|c| c.title.as_str()).collect();
    let kd_codec = titles.iter().position(|t| *t == "KD codec ×1e3").unwrap();
    assert_eq!(
        titles[kd_codec + 1..kd_codec + 3],
        ["FD crepe-tiny", "KD crepe-tiny"]
    );
    let fd = table.rows[0].values[kd_codec + 1].unwrap();
    assert!((fd.mean - 40.5).abs() < 1e-12, "{fd:?}");
    let kd = table.rows[0].values[kd_codec + 2].unwrap();
    assert!((kd.mean - 0.25).abs() < 1e-12, "{kd:?}");
    let md = table.markdown();
    assert!(
        md.contains("crepe-tiny: FD noise floor 12.500, source style against the target 30.000"),
        "{md}"
    );
    assert!(md.contains("not a VGGish FAD"), "{md}");

    let records = [music("lora", 0, false)];
    let refs: Vec<&RunRecord> = records.iter().collect();
    let table = music_table(&refs, &labels, &tasks).unwrap();
    assert_eq!(table.columns.len(), COLUMNS.len());
    assert!(!table.markdown().contains("crepe"));
}
