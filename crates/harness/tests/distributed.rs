//! Sweeps split across shards, worker processes and Slurm arrays give the same table as one
//! process; reports, exports and regression checks from records alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use peftbench_backbones::{Vit, VitConfig};
use peftbench_core::SeededInit;

mod common;
use common::{harness, run, text};

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tiny suite (random 2-layer ViT, 16x16 generated images): 2 tasks x 2 methods, one seed.
fn write_suite(dir: &Path) -> PathBuf {
    let backbone = dir.join("backbone");
    let mut vit = Vit::random(
        VitConfig::new(16, 2, 2, 32, 16, 8),
        &SeededInit::new(0, &Device::Cpu),
    )
    .unwrap();
    vit.save(&backbone).unwrap();
    let text = format!(
        "name: tiny
backbone: {{ checkpoint: {} }}
data: {{ format: generated, image_size: 16, train_examples: 32, eval_examples: 24 }}
preprocess: {{ image_size: 16, interpolation: bilinear, normalization: none }}
protocol: {{ train_split: train, eval_split: test, selection: final }}
recipe: {{ epochs: 1, batch_size: 16, lr: 1.0e-2, warmup_epochs: 0, drop_path: 0.0, eval_batch_size: 32 }}
seeds: [0]
averaging: [mean, group-mean]
tolerance: 0.5
groups: {{ structured: [position, count] }}
tasks:
  - {{ name: position, num_classes: 9, generator: position }}
  - {{ name: count, num_classes: 6, generator: count, tolerance: 5.0 }}
methods:
  - method: linear
  - method: bitfit
",
        backbone.display()
    );
    let path = dir.join("tiny.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn record_files(results: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![results.join("records")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn csv(dir: &Path, suite: &Path, from: &[&str]) -> String {
    let mut cmd = harness(dir);
    cmd.arg("report")
        .arg(suite)
        .args(["--format", "csv", "--no-write"]);
    for f in from {
        cmd.args(["--from", f]);
    }
    ok(&mut cmd)
}

#[test]
fn shards_merge_and_device_workers_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let suite = write_suite(d);
    ok(harness(d)
        .arg("suite")
        .arg(&suite)
        .args(["--results", "all"]));
    let single = csv(d, &suite, &["all"]);
    assert_eq!(
        single.lines().filter(|l| l.contains(",task,")).count(),
        4,
        "{single}"
    );

    // Three shards into their own directories: disjoint, together the whole plan.
    std::fs::remove_file(d.join("reports/tiny.md")).unwrap();
    for i in 1..=3 {
        let out = ok(harness(d).arg("suite").arg(&suite).args([
            "--shard",
            &format!("{i}/3"),
            "--results",
            &format!("shard{i}"),
        ]));
        assert!(out.contains("This shard is done"), "{out}");
    }
    let sizes: Vec<usize> = (1..=3)
        .map(|i| record_files(&d.join(format!("shard{i}"))).len())
        .collect();
    assert_eq!(sizes, [2, 1, 1]);
    assert!(
        !d.join("reports/tiny.md").exists(),
        "shards leave the leaderboard to report"
    );
    ok(harness(d).args(["merge", "shard1", "shard2", "shard3", "--into", "merged"]));
    assert_eq!(record_files(&d.join("merged")).len(), 4);
    assert_eq!(csv(d, &suite, &["merged"]), single);
    assert_eq!(csv(d, &suite, &["shard1", "shard2", "shard3"]), single);
    // Adapters came along.
    assert!(d.join("merged/artifacts/count/bitfit").is_dir());

    // Two CPU workers sharing one results directory.
    let out = ok(harness(d).arg("suite").arg(&suite).args([
        "--devices",
        "cpu,cpu",
        "--results",
        "workers",
    ]));
    assert!(out.contains("worker 2/2 on cpu: shard 2/2"), "{out}");
    assert!(out.contains("linear"), "the leaderboard is printed: {out}");
    assert!(d.join("workers/workers/worker-1.log").is_file());
    assert_eq!(csv(d, &suite, &["workers"]), single);

    // The Parquet export reads back as the same table, and compares clean.
    ok(harness(d).args([
        "report",
        "--from",
        "all",
        "--parquet",
        "all.parquet",
        "--no-write",
    ]));
    assert_eq!(csv(d, &suite, &["all.parquet"]), single);
    let out = run(harness(d).args(["compare", "all.parquet", "merged", "--suites-dir", "."]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 regression(s)"), "{}", text(&out));
}

#[test]
fn compare_exits_1_on_regression_and_2_on_different_experiments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let suite = write_suite(d);
    ok(harness(d)
        .arg("suite")
        .arg(&suite)
        .args(["--results", "base"]));

    // Lower one accuracy by 2 points: beyond position's 0.5 tolerance, within count's 5.0.
    let lower = |results: &str, task: &str| {
        for f in record_files(&d.join(results)) {
            let mut r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            if r["task"] == task && r["label"] == "linear" {
                let a = r["metrics"]["test_accuracy"].as_f64().unwrap();
                r["metrics"]["test_accuracy"] = serde_json::json!(a - 0.02);
                std::fs::write(&f, serde_json::to_string_pretty(&r).unwrap()).unwrap();
            }
        }
    };
    let copy = |to: &str| ok(harness(d).args(["merge", "base", "--into", to]));
    copy("count-lower");
    lower("count-lower", "count");
    let out = run(harness(d).args(["compare", "base", "count-lower", "--suites-dir", "."]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    copy("position-lower");
    lower("position-lower", "position");
    let out = run(harness(d).args([
        "compare",
        "base",
        "position-lower",
        "--suites-dir",
        ".",
        "--output",
        "diff.md",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let diff = std::fs::read_to_string(d.join("diff.md")).unwrap();
    assert!(
        diff.contains("| tiny | position | linear |")
            && diff.contains("-2.00 | ±0.5 | **REGRESSION** |"),
        "{diff}"
    );

    // Another learning rate is another experiment: refused, naming the difference.
    let edited = std::fs::read_to_string(&suite)
        .unwrap()
        .replace("lr: 1.0e-2", "lr: 2.0e-2");
    std::fs::write(&suite, edited).unwrap();
    ok(harness(d)
        .arg("suite")
        .arg(&suite)
        .args(["--results", "other-lr"]));
    let out = run(harness(d).args(["compare", "base", "other-lr", "--suites-dir", "."]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("recipe.lr: 0.01 vs 0.02"),
        "{}",
        text(&out)
    );
}

#[test]
fn slurm_writes_a_job_array_script() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let suite = write_suite(d);
    ok(harness(d).arg("slurm").arg(&suite).args([
        "--gpus",
        "0",
        "--cpus",
        "2",
        "--mem",
        "4G",
        "--partition",
        "debug",
        "--time",
        "00:10:00",
        "--limit",
        "16",
        "--results",
        "shared",
        "--output",
        "tiny.sbatch",
    ]));
    let script = std::fs::read_to_string(d.join("tiny.sbatch")).unwrap();
    for needle in [
        "#SBATCH --array=1-4\n",
        "#SBATCH --partition=debug\n",
        "#SBATCH --time=00:10:00\n",
        "#SBATCH --cpus-per-task=2\n",
        "#SBATCH --mem=4G\n",
        "--shard \"${SLURM_ARRAY_TASK_ID}/4\" --device cpu",
        "--limit 16",
    ] {
        assert!(script.contains(needle), "{needle}\n{script}");
    }
    assert!(!script.contains("--gres"), "{script}");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(d.join("tiny.sbatch"))
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax));

    ok(harness(d).arg("slurm").arg(&suite).args([
        "--array-of",
        "shards",
        "--shards",
        "3",
        "--gpus",
        "1",
        "--max-parallel",
        "2",
        "--output",
        "s.sbatch",
    ]));
    let script = std::fs::read_to_string(d.join("s.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=1-3%2\n") && script.contains("#SBATCH --gres=gpu:1\n"),
        "{script}"
    );
    assert!(script.contains("/3\" --device cuda"), "{script}");
}
