//! Loading, validation messages, planning, overrides, filters and hashes of suites.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peftbench_suite::*;
use serde_json::{json, Value};

/// A stand-in for the methods crate: names and parameter names of the eight methods.
struct FakeCatalog;

fn params_of(method: &str) -> Option<&'static [&'static str]> {
    Some(match method {
        "full" | "linear" | "bitfit" => &[],
        "lora" => &["alpha", "dropout", "r", "target_modules", "use_rslora"],
        "adapter" => &["activation", "bottleneck", "placement"],
        "adaptformer" => &["bottleneck", "dropout", "scale"],
        "vpt-shallow" | "vpt-deep" => &["dropout", "prompts"],
        "madx" => &[
            "invertible_reduction",
            "language_adapter",
            "language_epochs",
            "language_reduction",
            "task_reduction",
        ],
        _ => return None,
    })
}

impl MethodCatalog for FakeCatalog {
    fn method_names(&self) -> Vec<String> {
        [
            "full",
            "linear",
            "bitfit",
            "lora",
            "adapter",
            "adaptformer",
            "vpt-shallow",
            "vpt-deep",
            "madx",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
    fn validate_params(&self, method: &str, params: &Value) -> Result<(), String> {
        let valid = params_of(method).ok_or_else(|| format!("unknown method `{method}`"))?;
        let obj = params.as_object().ok_or("params must be a mapping")?;
        for k in obj.keys() {
            if !valid.contains(&k.as_str()) {
                return Err(format!(
                    "unknown parameter `{k}`; valid parameters: {}",
                    if valid.is_empty() {
                        "(none)".to_string()
                    } else {
                        valid.join(", ")
                    }
                ));
            }
        }
        if let Some(r) = obj.get("r") {
            if r.as_u64().is_none_or(|r| r == 0) {
                return Err(format!("`r` must be a positive integer, got {r}"));
            }
        }
        Ok(())
    }
}

fn suites_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites")
}

const BASE: &str = "\
name: small
description: a small test suite
backbone:
  checkpoint: demo
data:
  format: generated
  image_size: 32
  train_examples: 100
  eval_examples: 50
preprocess: { image_size: 32, interpolation: bilinear, normalization: none }
protocol:
  train_split: train
  eval_split: test
  selection: final
recipe:
  epochs: 4
  lr: 1.0e-3
  warmup_epochs: 1
seeds: [0, 1]
averaging: [mean, group-mean]
groups:
  structured: [position, count]
tasks:
  - { name: position, num_classes: 9, generator: position }
  - name: count
    num_classes: 6
    generator: count
methods:
  - method: full
    recipe: { lr: 3.0e-4 }
  - method: lora
    label: lora-grid
    params: { r: 8, alpha: 8, target_modules: [query, value] }
    grid: { r: [4, 8], recipe.lr: [1.0e-3, 5.0e-4] }
  - method: vpt-deep
    params: { prompts: 4 }
";

/// Writes `text` to `<tmp>/x.yaml` and loads it.
fn load_text(text: &str) -> (tempfile::TempDir, Result<Suite, SuiteError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.yaml");
    std::fs::write(&path, text).unwrap();
    let r = load_suite(path.to_str().unwrap(), dir.path(), &FakeCatalog);
    (dir, r)
}

fn load_err(text: &str) -> String {
    match load_text(text).1 {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => {
            eprintln!("{e}");
            e.to_string()
        }
    }
}

/// 1-based line of the first line containing `needle`.
fn line_with(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

fn base_suite() -> Suite {
    load_text(BASE).1.unwrap()
}

#[test]
fn base_suite_loads() {
    let s = base_suite();
    assert_eq!(s.name, "small");
    assert_eq!(s.seeds, vec![0, 1]);
    assert_eq!(s.tasks.len(), 2);
    assert_eq!(s.tasks[1].group.as_deref(), Some("structured"));
    assert_eq!(s.methods.len(), 3);
    assert_eq!(s.methods[1].label, "lora-grid");
    assert_eq!(s.methods[1].grid[0].key, "r");
    assert_eq!(s.methods[1].grid[1].key, "recipe.lr");
    assert_eq!(s.methods[0].recipe.lr, Some(3.0e-4));
    assert_eq!(s.recipe.epochs, 4);
    // Defaults from the NOAH recipe fill the rest.
    assert_eq!(s.recipe.batch_size, 64);
    assert_eq!(s.recipe.weight_decay, 1.0e-4);
    assert_eq!(s.protocol.on_data_error, OnDataError::Stop);
    assert_eq!(s.methods[1].line, line_with(BASE, "method: lora"));
}

#[test]
fn name_defaults_to_file_stem() {
    let (_d, r) = load_text(&BASE.replace("name: small\n", ""));
    assert_eq!(r.unwrap().name, "x");
}

#[test]
fn unknown_field_names_file_line_column_and_choices() {
    let text = BASE.replace("  lr: 1.0e-3\n  warmup", "  lrr: 1.0e-3\n  warmup");
    let e = load_err(&text);
    let line = line_with(&text, "lrr:");
    assert!(e.contains(&format!("x.yaml:{line}:3:")), "{e}");
    assert!(
        e.contains("unknown field `lrr` in recipe, expected one of: epochs, batch_size"),
        "{e}"
    );
    assert!(e.contains("eval_batch_size"), "{e}");
}

#[test]
fn unknown_field_in_method_entry() {
    let text = BASE.replace(
        "    params: { prompts: 4 }",
        "    params: { prompts: 4 }\n    parms: {}",
    );
    let e = load_err(&text);
    let line = line_with(&text, "parms:");
    assert!(e.contains(&format!("x.yaml:{line}:5:")), "{e}");
    assert!(
        e.contains("unknown field `parms` in methods[vpt-deep]"),
        "{e}"
    );
    assert!(e.contains("label, params, grid, recipe"), "{e}");
}

#[test]
fn bad_enum_value_lists_variants() {
    let text = BASE.replace("selection: final", "selection: best");
    let e = load_err(&text);
    assert!(
        e.contains(&format!("x.yaml:{}:", line_with(&text, "selection: best"))),
        "{e}"
    );
    assert!(e.contains("final, best-val"), "{e}");
}

#[test]
fn unknown_method_lists_valid_methods() {
    let text = BASE.replace("method: vpt-deep", "method: lora2");
    let e = load_err(&text);
    let line = line_with(&text, "lora2");
    assert!(
        e.contains(&format!(
            "x.yaml:{line}: unknown method `lora2`; valid methods: adapter, adaptformer, bitfit, full, linear, lora, madx, vpt-deep, vpt-shallow"
        )),
        "{e}"
    );
}

#[test]
fn unknown_method_param_names_method_line() {
    let text = BASE.replace("params: { prompts: 4 }", "params: { prompts: 4, depth: 3 }");
    let e = load_err(&text);
    let line = line_with(&text, "method: vpt-deep");
    assert!(
        e.contains(&format!("x.yaml:{line}: method `vpt-deep`")),
        "{e}"
    );
    assert!(
        e.contains("unknown parameter `depth`; valid parameters: dropout, prompts"),
        "{e}"
    );
}

#[test]
fn bad_grid_param_is_caught_per_point() {
    let text = BASE.replace("r: [4, 8]", "r: [4, 0]");
    let e = load_err(&text);
    assert!(
        e.contains(&format!(
            "x.yaml:{}: method `lora`",
            line_with(&text, "method: lora")
        )),
        "{e}"
    );
    assert!(e.contains("`r` must be a positive integer"), "{e}");
    let text = BASE.replace("recipe.lr: [", "recipe.lrr: [");
    let e = load_err(&text);
    assert!(
        e.contains(&format!("x.yaml:{}:", line_with(&text, "recipe.lrr"))),
        "{e}"
    );
    assert!(e.contains("unknown grid key `recipe.lrr`"), "{e}");
    assert!(e.contains("recipe.warmup_lr"), "{e}");
}

#[test]
fn group_task_not_in_tasks() {
    let text = BASE.replace(
        "structured: [position, count]",
        "structured: [position, count, kitti]",
    );
    let e = load_err(&text);
    let line = line_with(&text, "kitti");
    assert!(
        e.contains(&format!(
            "x.yaml:{line}: group `structured` lists task `kitti`"
        )),
        "{e}"
    );
    assert!(e.contains("valid tasks: position, count"), "{e}");
}

#[test]
fn group_mean_needs_grouped_tasks() {
    let text = BASE.replace("structured: [position, count]", "structured: [position]");
    let e = load_err(&text);
    assert!(
        e.contains(&format!("x.yaml:{}:", line_with(&text, "averaging:"))),
        "{e}"
    );
    assert!(e.contains("ungrouped: count"), "{e}");
    // A task may name its group itself.
    let text = text.replace(
        "    generator: count",
        "    generator: count\n    group: structured",
    );
    let s = load_text(&text).1.unwrap();
    assert_eq!(s.groups["structured"], vec!["position", "count"]);
}

#[test]
fn duplicate_labels() {
    let text = BASE.replace(
        "  - method: vpt-deep\n",
        "  - method: full\n  - method: vpt-deep\n",
    );
    let e = load_err(&text);
    let first = line_with(&text, "method: full");
    let second = line_with(&text, "method: vpt-deep") - 1;
    assert!(
        e.contains(&format!(
            "x.yaml:{second}: duplicate label `full` (first at line {first})"
        )),
        "{e}"
    );
}

#[test]
fn empty_seeds() {
    let text = BASE.replace("seeds: [0, 1]", "seeds: []");
    let e = load_err(&text);
    assert!(
        e.contains(&format!(
            "x.yaml:{}: `seeds` is empty",
            line_with(&text, "seeds:")
        )),
        "{e}"
    );
}

#[test]
fn malformed_yaml_has_line_and_column() {
    let text = BASE.replace("seeds: [0, 1]", "seeds: [0, 1");
    let e = load_err(&text);
    assert!(
        e.starts_with(&format!("{}", Path::new("x.yaml").display())) || e.contains("x.yaml:"),
        "{e}"
    );
    let re_line = e.split("x.yaml:").nth(1).unwrap();
    let mut it = re_line.split(':');
    let line: usize = it.next().unwrap().parse().unwrap();
    let col: usize = it.next().unwrap().parse().unwrap();
    assert!(line >= line_with(&text, "seeds:") && col >= 1, "{e}");
    let e = load_err("tasks: [\n  - a\n");
    assert!(e.contains("x.yaml:"), "{e}");
}

#[test]
fn wrong_type_names_line() {
    let text = BASE.replace("epochs: 4", "epochs: four");
    let e = load_err(&text);
    assert!(
        e.contains(&format!("x.yaml:{}:", line_with(&text, "epochs: four"))),
        "{e}"
    );
    assert!(e.contains("(in recipe.epochs)"), "{e}");
    let e = load_err(&BASE.replace(
        "{ name: position, num_classes: 9,",
        "{ name: position, num_classes: x,",
    ));
    assert!(
        e.contains("x.yaml:24:") && e.contains("tasks[position].num_classes"),
        "{e}"
    );
    let e = load_err(&BASE.replace("  selection: final\n", ""));
    assert!(e.contains("missing field `selection`"), "{e}");
}

#[test]
fn semantic_checks() {
    let e = load_err(&BASE.replace("  train_examples: 100\n", ""));
    assert!(
        e.contains("x.yaml:5: `data.train_examples` is required"),
        "{e}"
    );
    let e = load_err(&BASE.replace("selection: final", "selection: best-val"));
    assert!(e.contains("needs `protocol.val_split`"), "{e}");
    let e = load_err(&BASE.replace(
        "  - { name: position, num_classes: 9, generator: position }",
        "  - { name: position, num_classes: 9 }",
    ));
    assert!(e.contains("needs a `generator`"), "{e}");
    let e = load_err(&BASE.replace("warmup_epochs: 1", "warmup_epochs: 10"));
    assert!(e.contains("warmup_epochs (10) exceeds epochs (4)"), "{e}");
    let e = load_err(&BASE.replace("- name: count\n", "- name: position\n"));
    assert!(e.contains("task `position` is listed twice"), "{e}");
    let e = load_err(&format!(
        "{BASE}published:\n  source: x\n  results:\n    lora-grid: {{ cifar: 50.0 }}\n"
    ));
    assert!(
        e.contains("names task `cifar`, which is not in `tasks`"),
        "{e}"
    );
    let e = load_err(&format!(
        "{BASE}published:\n  source: x\n  means: {{ full: 0.9, lora: 101 }}\n"
    ));
    assert!(e.contains("is not a percentage"), "{e}");
}

#[test]
fn suite_by_name_and_not_found() {
    let s = load_suite("demo", &suites_dir(), &FakeCatalog).unwrap();
    assert_eq!(s.name, "demo");
    let e = load_suite("vtab", &suites_dir(), &FakeCatalog)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no suite `vtab`"), "{e}");
    let valid = e.split("valid suites: ").nth(1).unwrap_or_default();
    let valid: Vec<&str> = valid.split(", ").collect();
    for name in [
        "ast",
        "ast-fsc",
        "demo",
        "demo-audio",
        "demo-zoo",
        "fgvc",
        "vtab1k",
    ] {
        assert!(valid.contains(&name), "{name} not listed: {e}");
    }
    let mut sorted = valid.clone();
    sorted.sort_unstable();
    assert_eq!(valid, sorted, "listed in name order");
    let listed = list_suites(&suites_dir());
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.starts_with(&["demo", "fgvc", "vtab1k"]) || names.contains(&"vtab1k"),
        "{names:?}"
    );
    assert!(listed.iter().all(|(_, d)| !d.is_empty()));
}

#[test]
fn grid_expansion_count_and_order() {
    let s = base_suite();
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    // 2 tasks x (full 1 + lora 2x2 + vpt 1) x 2 seeds
    assert_eq!(runs.len(), 2 * 6 * 2);
    let order: Vec<String> = runs
        .iter()
        .take(12)
        .map(|r| format!("{}/{}/{}", r.task.name, r.label, r.seed))
        .collect();
    assert_eq!(
        order,
        [
            "position/full/0",
            "position/full/1",
            "position/lora-grid-r4-lr0.001/0",
            "position/lora-grid-r4-lr0.001/1",
            "position/lora-grid-r4-lr0.0005/0",
            "position/lora-grid-r4-lr0.0005/1",
            "position/lora-grid-r8-lr0.001/0",
            "position/lora-grid-r8-lr0.001/1",
            "position/lora-grid-r8-lr0.0005/0",
            "position/lora-grid-r8-lr0.0005/1",
            "position/vpt-deep/0",
            "position/vpt-deep/1",
        ]
    );
    assert_eq!(runs[12].task.name, "count");
    let r = &runs[4];
    assert_eq!(
        r.params,
        json!({"alpha": 8, "r": 4, "target_modules": ["query", "value"]})
    );
    assert_eq!(r.recipe.lr, 5.0e-4);
    assert_eq!(r.recipe.epochs, 4);
    assert_eq!(runs[0].recipe.lr, 3.0e-4, "per-method recipe override");
    assert_eq!(runs[0].params, json!({}));
    assert_eq!(r.group.as_deref(), Some("structured"));
    assert_eq!(r.suite, "small");
    // Params keys are sorted.
    let keys: Vec<&String> = r.params.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // Run ids are unique and filesystem-safe.
    let ids: std::collections::BTreeSet<String> = runs.iter().map(|r| r.run_id()).collect();
    assert_eq!(ids.len(), runs.len());
    let id = runs[0].run_id();
    assert!(id.starts_with("position/full/seed0-"), "{id}");
    assert_eq!(id.len(), "position/full/seed0-".len() + 10);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c)),
        "{id}"
    );
}

fn opts(filter: &[&str], overrides: &[&str]) -> PlanOptions {
    PlanOptions {
        filter: filter.iter().map(|s| s.to_string()).collect(),
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn filters() {
    let s = base_suite();
    let p = |f: &[&str]| plan(&s, &opts(f, &[]), &FakeCatalog);
    let runs = p(&["task=count"]).unwrap();
    assert_eq!(runs.len(), 12);
    assert!(runs.iter().all(|r| r.task.name == "count"));
    // comma = AND
    let runs = p(&["task=count,method=lora,seed=1"]).unwrap();
    assert_eq!(runs.len(), 4);
    // several terms = OR
    let runs = p(&["method=full", "label=vpt-deep"]).unwrap();
    assert_eq!(runs.len(), 8);
    let runs = p(&["label=lora-grid-r8-lr0.001"]).unwrap();
    assert_eq!(runs.len(), 4);
    let runs = p(&["group=structured,seed=0"]).unwrap();
    assert_eq!(runs.len(), 12);
    // bare substring of the run id
    let runs = p(&["r4-lr0.0005/seed1"]).unwrap();
    assert_eq!(runs.len(), 2);
    let id = runs[0].run_id();
    assert_eq!(p(&[&id]).unwrap().len(), 1);

    let e = p(&["tsk=count"]).unwrap_err().to_string();
    assert!(
        e.contains("unknown key `tsk`; valid keys: task, method, label, group, seed"),
        "{e}"
    );
    let e = p(&["task=cifar"]).unwrap_err().to_string();
    assert!(
        e.contains("no task `cifar`") && e.contains("valid tasks: position, count"),
        "{e}"
    );
    let e = p(&["method=adapter"]).unwrap_err().to_string();
    assert!(e.contains("valid methods: full, lora, vpt-deep"), "{e}");
    let e = p(&["label=lora"]).unwrap_err().to_string();
    assert!(
        e.contains("valid labels: full, lora-grid-r4-lr0.001"),
        "{e}"
    );
    let e = p(&["nothing-matches-this"]).unwrap_err().to_string();
    assert!(e.contains("selects no runs"), "{e}");
}

#[test]
fn overrides() {
    let s = base_suite();
    let runs = plan(
        &s,
        &opts(
            &[],
            &["recipe.lr=2e-3", "seeds=[7]", "recipe.grad_clip=1.0"],
        ),
        &FakeCatalog,
    )
    .unwrap();
    assert_eq!(runs.len(), 12);
    assert!(runs
        .iter()
        .all(|r| r.recipe.lr == 2.0e-3 && r.seed == 7 && r.recipe.grad_clip == Some(1.0)));
    let runs = plan(&s, &opts(&[], &["seeds=3"]), &FakeCatalog).unwrap();
    assert!(runs.iter().all(|r| r.seed == 3));

    // params.* applies to the selected methods and is validated by the catalog.
    let runs = plan(
        &s,
        &opts(&["method=vpt-deep"], &["params.prompts=16"]),
        &FakeCatalog,
    )
    .unwrap();
    assert!(runs.iter().all(|r| r.params["prompts"] == json!(16)));
    let e = plan(&s, &opts(&[], &["params.prompts=16"]), &FakeCatalog)
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid override `params.prompts=16`"), "{e}");
    assert!(
        e.contains("method `full`") && e.contains("unknown parameter `prompts`"),
        "{e}"
    );
    let e = plan(&s, &opts(&["method=lora"], &["params.r=2"]), &FakeCatalog)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`r` is a grid axis"), "{e}");
    let runs = plan(
        &s,
        &opts(&["method=lora"], &["params.alpha=16"]),
        &FakeCatalog,
    )
    .unwrap();
    assert!(runs.iter().all(|r| r.params["alpha"] == json!(16)));

    // protocol.selection
    let runs = plan(
        &s,
        &opts(
            &[],
            &["protocol.selection=best-val", "protocol.val_split=val"],
        ),
        &FakeCatalog,
    )
    .unwrap();
    assert!(runs
        .iter()
        .all(|r| r.protocol.selection == Selection::BestVal));
    let e = plan(
        &s,
        &opts(&[], &["protocol.selection=best-val"]),
        &FakeCatalog,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("val_split"), "{e}");

    // Unknown keys list the valid ones; bad values say why.
    let e = plan(&s, &opts(&[], &["recipe.lrr=1"]), &FakeCatalog)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown recipe field `lrr`; expected one of: epochs, batch_size, lr"),
        "{e}"
    );
    let e = plan(&s, &opts(&[], &["optimizer=sgd"]), &FakeCatalog)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown key `optimizer`") && e.contains("params.<name>") && e.contains("seeds"),
        "{e}"
    );
    let e = plan(&s, &opts(&[], &["recipe.epochs=many"]), &FakeCatalog)
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid recipe"), "{e}");
    let e = plan(&s, &opts(&[], &["seeds=[]"]), &FakeCatalog)
        .unwrap_err()
        .to_string();
    assert!(e.contains("seeds is empty"), "{e}");

    // --epochs and --limit
    let o = PlanOptions {
        epochs: Some(1),
        limit: Some(32),
        ..Default::default()
    };
    let runs = plan(&s, &o, &FakeCatalog).unwrap();
    assert!(runs
        .iter()
        .all(|r| r.recipe.epochs == 1 && r.recipe.warmup_epochs <= 1 && r.limit == Some(32)));
    let o = PlanOptions {
        limit: Some(0),
        ..Default::default()
    };
    assert!(plan(&s, &o, &FakeCatalog).is_err());
}

#[test]
fn config_hash_is_stable() {
    let s = base_suite();
    let a = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    let b = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    assert_eq!(a[0].config_hash(), b[0].config_hash());
    assert_eq!(a[0].config_hash().len(), 64);
    // A clone, and a JSON round trip, hash the same.
    let rt: RunSpec = serde_json::from_str(&serde_json::to_string(&a[3]).unwrap()).unwrap();
    assert_eq!(rt.config_hash(), a[3].config_hash());
    // Changing lr changes the hash.
    let mut c = a[0].clone();
    c.recipe.lr *= 2.0;
    assert_ne!(c.config_hash(), a[0].config_hash());
    let mut c = a[0].clone();
    c.limit = Some(10);
    assert_ne!(c.config_hash(), a[0].config_hash());
    // Moving the data keeps the runs' identity.
    let mut c = a[0].clone();
    c.data.root = Some("/elsewhere/data".into());
    assert_eq!(c.config_hash(), a[0].config_hash());
    // Key order in the YAML does not matter.
    let reordered = BASE
        .replace(
            "params: { r: 8, alpha: 8, target_modules: [query, value] }",
            "params: { target_modules: [query, value], alpha: 8, r: 8 }",
        )
        .replace(
            "recipe:\n  epochs: 4\n  lr: 1.0e-3\n",
            "recipe:\n  lr: 1.0e-3\n  epochs: 4\n",
        )
        .replace(
            "preprocess: { image_size: 32, interpolation: bilinear, normalization: none }",
            "preprocess: { normalization: none, interpolation: bilinear, image_size: 32 }",
        );
    assert_ne!(reordered, BASE);
    let s2 = load_text(&reordered).1.unwrap();
    let a2 = plan(&s2, &PlanOptions::default(), &FakeCatalog).unwrap();
    let h1: Vec<String> = a.iter().map(|r| r.run_id()).collect();
    let h2: Vec<String> = a2.iter().map(|r| r.run_id()).collect();
    assert_eq!(h1, h2);
}

#[test]
fn canonical_json_sorts_keys() {
    let mut s = String::new();
    canonical_json(&json!({"b": 1, "a": {"d": [1, 2.5], "c": null}}), &mut s);
    assert_eq!(s, r#"{"a":{"c":null,"d":[1,2.5]},"b":1}"#);
}

#[test]
fn recipe_fields_constant_matches_struct() {
    let v = serde_json::to_value(Recipe::default()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut expected: Vec<&str> = RECIPE_FIELDS.to_vec();
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected);
    // `folds` is serialised only when set.
    let mut protocol = base_suite().protocol;
    protocol.folds = Some(5);
    let v = serde_json::to_value(protocol).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut expected: Vec<&str> = PROTOCOL_FIELDS.to_vec();
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected);
}

const VTAB: [(&str, usize, &str); 19] = [
    ("cifar", 100, "natural"),
    ("caltech101", 102, "natural"),
    ("dtd", 47, "natural"),
    ("oxford_flowers102", 102, "natural"),
    ("oxford_iiit_pet", 37, "natural"),
    ("svhn", 10, "natural"),
    ("sun397", 397, "natural"),
    ("patch_camelyon", 2, "specialized"),
    ("eurosat", 10, "specialized"),
    ("resisc45", 45, "specialized"),
    ("diabetic_retinopathy", 5, "specialized"),
    ("clevr_count", 8, "structured"),
    ("clevr_dist", 6, "structured"),
    ("dmlab", 6, "structured"),
    ("kitti", 4, "structured"),
    ("dsprites_loc", 16, "structured"),
    ("dsprites_ori", 16, "structured"),
    ("smallnorb_azi", 18, "structured"),
    ("smallnorb_ele", 9, "structured"),
];

#[test]
fn shipped_vtab1k() {
    let s = load_suite("vtab1k", &suites_dir(), &FakeCatalog).unwrap();
    assert_eq!(s.name, "vtab1k");
    assert_eq!(s.backbone.checkpoint, "google/vit-base-patch16-224-in21k");
    assert_eq!(s.data.format, DataFormat::Noah);
    assert_eq!(
        s.preprocess.as_ref().unwrap().normalization,
        Normalization::Imagenet
    );
    assert_eq!(s.preprocess.as_ref().unwrap().image_size, 224);
    assert_eq!(s.protocol.selection, Selection::Final);
    assert_eq!(s.recipe, Recipe::default(), "the NOAH/FacT recipe");
    assert_eq!(s.averaging, vec![Averaging::Mean, Averaging::GroupMean]);
    assert_eq!(s.tasks.len(), 19);
    for (t, (name, classes, group)) in s.tasks.iter().zip(VTAB) {
        assert_eq!(
            (t.name.as_str(), t.num_classes, t.group.as_deref()),
            (name, classes, Some(group))
        );
    }
    let sizes: BTreeMap<&str, usize> = s
        .groups
        .iter()
        .map(|(g, m)| (g.as_str(), m.len()))
        .collect();
    assert_eq!(
        sizes,
        BTreeMap::from([("natural", 7), ("specialized", 4), ("structured", 8)])
    );
    let labels: Vec<&str> = s.methods.iter().map(|m| m.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "full",
            "linear",
            "bitfit",
            "lora",
            "adapter",
            "adaptformer",
            "vpt-shallow",
            "vpt-deep"
        ]
    );
    let lora = &s.methods[3];
    assert_eq!(
        lora.params,
        json!({"r": 8, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"], "use_rslora": false})
    );

    let p = s.published.as_ref().unwrap();
    assert_eq!(p.metric, "accuracy");
    let mut published: Vec<&str> = p.results.keys().map(|k| k.as_str()).collect();
    published.sort();
    let mut expected = labels.clone();
    expected.sort();
    assert_eq!(published, expected);
    for (label, row) in &p.results {
        assert_eq!(row.len(), 19, "{label}");
        // The published plain and group means agree with the per-task numbers.
        let vals: Vec<f64> = VTAB.iter().map(|(t, _, _)| row[*t]).collect();
        let mean = vals.iter().sum::<f64>() / 19.0;
        assert!(
            (mean - p.means[label]).abs() < 0.01,
            "{label}: {mean} vs {}",
            p.means[label]
        );
        let g = |r: std::ops::Range<usize>| vals[r.clone()].iter().sum::<f64>() / r.len() as f64;
        let gm = (g(0..7) + g(7..11) + g(11..19)) / 3.0;
        assert!((gm - p.group_means[label]).abs() < 0.01, "{label}: {gm}");
    }
    assert_eq!(p.results["lora"]["cifar"], 67.1);
    assert_eq!(p.results["adaptformer"]["smallnorb_ele"], 41.1);
    assert_eq!(p.results["full"]["sun397"], 38.8);

    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    assert_eq!(runs.len(), 19 * 8);
    assert_eq!(
        runs.iter().find(|r| r.label == "full").unwrap().recipe.lr,
        1.0e-4
    );
}

#[test]
fn shipped_fgvc_and_demo() {
    let s = load_suite("fgvc", &suites_dir(), &FakeCatalog).unwrap();
    let tasks: Vec<(&str, usize)> = s
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.num_classes))
        .collect();
    assert_eq!(
        tasks,
        [
            ("cub", 200),
            ("nabirds", 555),
            ("oxford_flowers", 102),
            ("stanford_dogs", 120),
            ("stanford_cars", 196)
        ]
    );
    assert_eq!(s.data.format, DataFormat::Fgvc);
    let p = s.published.unwrap();
    assert_eq!(p.means["vpt-deep"], 89.10);
    assert_eq!(p.means.len(), 9);

    let s = load_suite("demo", &suites_dir(), &FakeCatalog).unwrap();
    assert_eq!(s.backbone.checkpoint, "demo");
    assert_eq!(s.data.format, DataFormat::Generated);
    assert_eq!(
        (s.data.train_examples, s.data.eval_examples),
        (Some(600), Some(400))
    );
    assert_eq!(s.preprocess.as_ref().unwrap().image_size, 32);
    assert_eq!(
        s.preprocess.as_ref().unwrap().normalization,
        Normalization::None
    );
    let gens: Vec<Option<Generator>> = s.tasks.iter().map(|t| t.generator).collect();
    assert_eq!(
        gens,
        [
            Some(Generator::Position),
            Some(Generator::Orientation),
            Some(Generator::Count)
        ]
    );
    assert_eq!(s.seeds, vec![0, 1, 2]);
    assert_eq!(s.methods.len(), 8);
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    assert_eq!(runs.len(), 3 * 8 * 3);
    // full, linear and the PEFT methods have their own learning rates (three seeds each).
    assert_eq!(runs[0].recipe.lr, 1.0e-3);
    assert_eq!(runs[3].recipe.lr, 1.0e-2);
    assert_eq!(runs[6].recipe.lr, 1.0e-2);
    assert_eq!(runs[0].recipe.drop_path, 0.0);
}

#[test]
fn k_fold_protocol_runs_every_fold_per_seed_and_keeps_other_hashes() {
    let plain = plan(&base_suite(), &PlanOptions::default(), &FakeCatalog).unwrap();
    assert!(plain.iter().all(|r| r.fold.is_none()));
    let text = BASE.replace("  selection: final\n", "  selection: final\n  folds: 5\n");
    let s = load_text(&text).1.unwrap();
    assert_eq!(s.protocol.folds, Some(5));
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    assert_eq!(runs.len(), plain.len() * 5);
    let first: Vec<(u64, Option<u32>)> = runs.iter().take(6).map(|r| (r.seed, r.fold)).collect();
    assert_eq!(
        first,
        [
            (0, Some(1)),
            (0, Some(2)),
            (0, Some(3)),
            (0, Some(4)),
            (0, Some(5)),
            (1, Some(1))
        ]
    );
    // Each fold is its own configuration.
    assert_ne!(runs[0].config_hash(), runs[1].config_hash());
    // A suite without folds serialises exactly as before the field existed.
    let json = serde_json::to_value(&plain[0]).unwrap();
    assert!(json.get("fold").is_none() && json["protocol"].get("folds").is_none());
    let err = load_err(&BASE.replace("  selection: final\n", "  selection: final\n  folds: 1\n"));
    assert!(err.contains("folds"), "{err}");
}

#[test]
fn tolerances_default_per_suite_and_per_task() {
    let s = base_suite();
    assert_eq!(s.tolerance, DEFAULT_TOLERANCE);
    assert_eq!(s.tolerance_of("count"), DEFAULT_TOLERANCE);
    let text = BASE
        .replace("seeds: [0, 1]\n", "seeds: [0, 1]\ntolerance: 0.5\n")
        .replace(
            "    generator: count\n",
            "    generator: count\n    tolerance: 3.0\n",
        );
    let s = load_text(&text).1.unwrap();
    assert_eq!(s.tolerance_of("position"), 0.5);
    assert_eq!(s.tolerance_of("count"), 3.0);
    // Tolerances are not part of any run's identity.
    let before = plan(&base_suite(), &PlanOptions::default(), &FakeCatalog).unwrap();
    let after = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    assert_eq!(before, after);

    let bad = BASE.replace(
        "    generator: count\n",
        "    generator: count\n    tolerance: -1\n",
    );
    let e = load_err(&bad);
    let line = line_with(&bad, "tolerance: -1");
    assert!(e.contains(&format!("x.yaml:{line}:")), "{e}");
    assert!(e.contains("task `count` tolerance -1"), "{e}");
}

#[test]
fn shards_partition_the_plan() {
    let s = base_suite();
    let all = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    let ids = |runs: &[RunSpec]| runs.iter().map(RunSpec::run_id).collect::<Vec<_>>();
    let mut union = Vec::new();
    let mut sizes = Vec::new();
    for i in 1..=5 {
        let o = PlanOptions {
            shards: vec![format!("{i}/5").parse().unwrap()],
            ..Default::default()
        };
        let part = plan(&s, &o, &FakeCatalog).unwrap();
        sizes.push(part.len());
        union.extend(ids(&part));
    }
    // Disjoint, complete, balanced.
    let mut sorted_union = union.clone();
    sorted_union.sort();
    sorted_union.dedup();
    assert_eq!(sorted_union.len(), all.len());
    let mut expected = ids(&all);
    expected.sort();
    assert_eq!(sorted_union, expected);
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );

    // A shard of a shard splits that shard further.
    let o = |shards: &[&str]| PlanOptions {
        shards: shards.iter().map(|s| s.parse().unwrap()).collect(),
        ..Default::default()
    };
    let outer = plan(&s, &o(&["2/3"]), &FakeCatalog).unwrap();
    let a = plan(&s, &o(&["2/3", "1/2"]), &FakeCatalog).unwrap();
    let b = plan(&s, &o(&["2/3", "2/2"]), &FakeCatalog).unwrap();
    assert_eq!(a.len() + b.len(), outer.len());

    for bad in ["0/3", "4/3", "1/0", "x", "1/2/3", "-1/2"] {
        let e = bad.parse::<Shard>().unwrap_err();
        assert!(e.contains("expected I/N"), "{bad}: {e}");
    }
    assert_eq!("3/8".parse::<Shard>().unwrap().to_string(), "3/8");
}

#[test]
fn audio_suites_take_an_audio_section_instead_of_preprocess() {
    let audio = BASE
        .replace(
            "preprocess: { image_size: 32, interpolation: bilinear, normalization: none }\n",
            "audio: { target_frames: 100, freq_mask: 24, time_mask: 10 }\n",
        )
        .replace("generator: position", "generator: keywords")
        .replace("generator: orientation", "generator: keywords")
        .replace("generator: count", "generator: keywords");
    let s = load_text(&audio).1.unwrap();
    let a = s.audio.as_ref().unwrap();
    assert_eq!((a.target_frames, a.num_mel_bins), (100, 128));
    assert!(s.preprocess.is_none());
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    let json = serde_json::to_value(&runs[0]).unwrap();
    assert!(json.get("preprocess").is_none() && json["audio"]["time_mask"] == 10);
    // An image suite's run serialises without an `audio` key (its config hashes are unchanged).
    let plain = plan(&base_suite(), &PlanOptions::default(), &FakeCatalog).unwrap();
    assert!(serde_json::to_value(&plain[0])
        .unwrap()
        .get("audio")
        .is_none());

    let e = load_err(&audio.replace(
        "audio: { target_frames: 100, freq_mask: 24, time_mask: 10 }\n",
        "",
    ));
    assert!(e.contains("needs an `audio` section"), "{e}");
    let e = load_err(&format!("{BASE}audio: {{ target_frames: 100 }}\n"));
    assert!(e.contains("`audio` is for audio suites"), "{e}");
    let e = load_err(&audio.replacen("generator: keywords", "generator: position", 1));
    assert!(e.contains("mixes image, audio"), "{e}");
}

const TEXT: &str = "\
name: words
backbone: { checkpoint: demo-text }
data: { format: generated, train_examples: 100, eval_examples: 50 }
text: { max_tokens: 24 }
protocol: { train_split: train, eval_split: test, selection: final }
seeds: [0]
tasks:
  - { name: sentiment-en, num_classes: 2, generator: sentiment, language: en }
  - { name: sentiment-en-de, num_classes: 2, generator: sentiment, language: en, eval_language: de }
methods:
  - method: lora
";

#[test]
fn text_suites_take_a_text_section_and_languages() {
    let s = load_text(TEXT).1.unwrap();
    assert_eq!(s.text.as_ref().unwrap().max_tokens, 24);
    assert_eq!(s.tasks[0].eval_language(), Some("en"));
    assert_eq!(s.tasks[1].eval_language(), Some("de"));
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    let json = serde_json::to_value(&runs[1]).unwrap();
    assert_eq!(json["text"]["max_tokens"], 24);
    assert_eq!(json["task"]["eval_language"], "de");
    // Image runs serialise without the text keys: their config hashes are unchanged.
    let plain = serde_json::to_value(
        &plan(&base_suite(), &PlanOptions::default(), &FakeCatalog).unwrap()[0],
    )
    .unwrap();
    assert!(plain.get("text").is_none() && plain["task"].get("language").is_none());

    let e = load_err(&TEXT.replace("text: { max_tokens: 24 }\n", ""));
    assert!(e.contains("needs a `text` section"), "{e}");
    let e = load_err(&TEXT.replace("max_tokens: 24", "max_tokens: 2"));
    assert!(e.contains("at least 3"), "{e}");
    let e = load_err(&TEXT.replacen(", language: en }", " }", 1));
    assert!(
        e.contains("needs a `language`") && e.contains("x.yaml:8:"),
        "{e}"
    );
    let e = load_err(&TEXT.replace(
        "text: { max_tokens: 24 }",
        "text: { max_tokens: 24 }\npreprocess: { image_size: 32, interpolation: bilinear, normalization: none }",
    ));
    assert!(
        e.contains("`preprocess` is for image suites, and this is a text suite"),
        "{e}"
    );
    let e = load_err(&TEXT.replacen("generator: sentiment", "generator: keywords", 1));
    assert!(e.contains("mixes image, audio"), "{e}");
    let e = load_err(&TEXT.replacen("language: en }", "language: en, labels: [neg] }", 1));
    assert!(e.contains("lists 1 classes but num_classes is 2"), "{e}");
    let e = load_err(&TEXT.replacen("language: en }", "language: en, columns: { text: t } }", 1));
    assert!(
        e.contains("`columns` only applies to data format `table`"),
        "{e}"
    );
    let e = load_err(&BASE.replace("generator: count", "generator: count\n    language: en"));
    assert!(e.contains("`language` only applies to text tasks"), "{e}");

    // NER files are found by language: a CoNLL task without one is an error.
    let conll = TEXT
        .replace(
            "format: generated, train_examples: 100, eval_examples: 50",
            "format: conll, root: /data",
        )
        .replace("generator: sentiment, ", "");
    assert_eq!(load_text(&conll).1.unwrap().data.format, DataFormat::Conll);
    let e = load_err(&conll.replacen(", language: en }", " }", 1));
    assert!(e.contains("needs a `language`"), "{e}");

    // A custom table task: columns default to `text` and `label`, languages are optional.
    let table = TEXT
        .replace("format: generated, train_examples: 100, eval_examples: 50", "format: table, root: /data")
        .replace(
            "  - { name: sentiment-en, num_classes: 2, generator: sentiment, language: en }\n  - { name: sentiment-en-de, num_classes: 2, generator: sentiment, language: en, eval_language: de }\n",
            "  - name: reviews\n    num_classes: 3\n    columns: { text: review, label: stars }\n    labels: [low, mid, high]\n",
        );
    let s = load_text(&table).1.unwrap();
    let task = &s.tasks[0];
    assert_eq!(task.columns.as_ref().unwrap().text, "review");
    assert_eq!(task.columns.as_ref().unwrap().label, "stars");
    assert_eq!(task.labels.as_ref().unwrap()[2], "high");
    assert_eq!(task.language, None);
}

/// A reranking suite: tasks come from `retrieval.tasks` (one relevance logit each), `protocol`
/// may be left out, and each run carries its own task's files only.
#[test]
fn reranking_suites_take_their_tasks_from_retrieval() {
    let s = load_suite("demo-rerank", &suites_dir(), &FakeCatalog).unwrap();
    let names: Vec<&str> = s.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["en", "de", "en-de"]);
    assert!(s.tasks.iter().all(|t| t.num_classes == 1));
    assert_eq!(s.protocol.eval_split, "test");
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    assert_eq!(runs.len(), 3 * s.methods.len());
    for run in &runs {
        let r = run.retrieval.as_ref().unwrap();
        assert_eq!(r.task.name, run.task.name);
        assert_eq!(r.rerank_depth, 50);
    }
    // Adding a task leaves the other tasks' runs as they were.
    let src = std::fs::read_to_string(suites_dir().join("demo-rerank.yaml")).unwrap();
    let more = src.replace(
        "  tasks:\n",
        "  tasks:\n    - { name: fr, query_language: fr, document_language: fr, queries: queries/fr.tsv, corpus: corpus/fr.jsonl, qrels: qrels/fr.qrels }\n",
    );
    let (_dir, more) = load_text(&more);
    let more = plan(&more.unwrap(), &PlanOptions::default(), &FakeCatalog).unwrap();
    for run in &runs {
        assert!(
            more.iter().any(|m| m.run_id() == run.run_id()),
            "{}",
            run.run_id()
        );
    }
    assert_eq!(more.len(), runs.len() + s.methods.len());

    // The shipped CLEF/HC4 suite loads too (its data is not here).
    let x = load_suite("xling-rerank", &suites_dir(), &FakeCatalog).unwrap();
    assert_eq!(x.tasks.len(), 12);
    assert_eq!(x.data.format, DataFormat::Trec);

    let e = load_err(&src.replace(
        "retrieval:\n",
        "tasks: [{ name: a, num_classes: 2 }]\nretrieval:\n",
    ));
    assert!(e.contains("lists its tasks under `retrieval.tasks`"), "{e}");
    let e = load_err(&src.replace("  rerank_depth: 50", "  rerank_depth: 0"));
    assert!(e.contains("rerank_depth` must be at least 1"), "{e}");
    let e = load_err(
        &BASE
            .replace(
                "  image_size: 32\n  train_examples: 100\n  eval_examples: 50\n",
                "",
            )
            .replace("format: generated", "format: trec"),
    );
    assert!(e.contains("needs a `retrieval` section"), "{e}");
}

/// `language_adapters` belongs to text suites, needs a corpus template for data on disk, and only
/// composing methods' runs carry it.
#[test]
fn language_adapters_apply_to_composing_methods_of_text_suites() {
    let src = std::fs::read_to_string(suites_dir().join("demo-rerank.yaml")).unwrap();
    let s = load_text(&src).1.unwrap();
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    for run in &runs {
        assert_eq!(
            run.language_adapters.is_some(),
            run.method == "madx",
            "{}",
            run.label
        );
    }
    let section = "language_adapters: { max_texts: 10, epochs: 1, batch_size: 8, lr: 1.0e-3 }\n";
    let e = load_err(&format!("{BASE}{section}"));
    assert!(e.contains("`language_adapters` is for text suites"), "{e}");
    let on_disk = src.replace(
        "  format: generated\n  train_examples: 2400           # English training triples\n  eval_examples: 240             # reviews per language in each collection\n",
        "  format: trec\n",
    );
    let e = load_err(&on_disk);
    assert!(e.contains("`language_adapters.corpus` is required"), "{e}");
    let e = load_err(&on_disk.replace(
        "  max_texts: 1000\n",
        "  max_texts: 1000\n  corpus: mlm/en.txt\n",
    ));
    assert!(e.contains("has no `{language}`"), "{e}");
    load_text(&on_disk.replace(
        "  max_texts: 1000\n",
        "  max_texts: 1000\n  corpus: mlm/{language}.txt\n",
    ))
    .1
    .unwrap();
    // A reranking suite has no validation split or folds.
    let e = load_err(&src.replace(
        "recipe:\n",
        "protocol: { train_split: train, eval_split: test, val_split: dev, selection: final }\nrecipe:\n",
    ));
    assert!(
        e.contains("`protocol.folds` and `protocol.val_split` do not apply"),
        "{e}"
    );
    // A composing method needs every classification task's language.
    let table = "name: t\nbackbone: { checkpoint: demo-text }\ndata: { format: table }\ntext: { max_tokens: 16 }\nprotocol: { train_split: train, eval_split: test, selection: final }\nseeds: [0]\nlanguage_adapters: { corpus: \"mlm/{language}.txt\", max_texts: 10, epochs: 1, batch_size: 8, lr: 1.0e-3 }\ntasks:\n  - { name: reviews, num_classes: 2 }\nmethods:\n  - method: madx\n";
    let e = load_err(table);
    assert!(e.contains("task `reviews` names no `language`"), "{e}");
    load_text(&table.replace("num_classes: 2 }", "num_classes: 2, language: en }"))
        .1
        .unwrap();
}

/// An `audio-parquet` suite on the Hugging Face ESC-50 copy: labels in `target`, folds in `fold`.
const AUDIO_PARQUET: &str = "\
name: esc50-hf
backbone:
  checkpoint: demo
data:
  format: audio-parquet
  root: /data
audio: { target_frames: 100 }
protocol:
  train_split: train
  eval_split: test
  selection: final
  folds: 5
seeds: [0]
tasks:
  - name: esc50
    num_classes: 50
    columns: { label: target, fold: fold }
methods:
  - method: linear
";

/// Parquet copies with other column names: `columns` of an `audio-parquet` task names the audio,
/// label and fold columns; a fold column cross-validates with `protocol.folds`.
#[test]
fn audio_parquet_tasks_name_their_columns() {
    let s = load_text(AUDIO_PARQUET).1.unwrap();
    let task = &s.tasks[0];
    assert_eq!(task.columns, None);
    let columns = task.audio_columns.as_ref().unwrap();
    assert_eq!(
        (columns.audio.as_str(), columns.label.as_str()),
        ("audio", "target")
    );
    assert_eq!(columns.fold.as_deref(), Some("fold"));
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    assert_eq!(runs.len(), 5);
    let json = serde_json::to_value(&runs[0]).unwrap();
    assert_eq!(
        json["task"]["audio_columns"],
        json!({ "audio": "audio", "label": "target", "fold": "fold" })
    );
    // The columns are part of the configuration, and survive a JSON round trip.
    let rt: RunSpec = serde_json::from_str(&serde_json::to_string(&runs[0]).unwrap()).unwrap();
    assert_eq!(rt.config_hash(), runs[0].config_hash());
    let (_d, other) = load_text(&AUDIO_PARQUET.replace("label: target", "label: classID"));
    let other = plan(&other.unwrap(), &PlanOptions::default(), &FakeCatalog).unwrap();
    assert_ne!(other[0].config_hash(), runs[0].config_hash());

    // Spelling out the defaults is the same configuration as leaving `columns` out.
    let fixed = AUDIO_PARQUET.replace("  folds: 5\n", "");
    let bare = fixed.replace("    columns: { label: target, fold: fold }\n", "");
    let spelled = fixed.replace(
        "columns: { label: target, fold: fold }",
        "columns: { audio: audio, label: label }",
    );
    let hashes = |text: &str| -> Vec<String> {
        let s = load_text(text).1.unwrap();
        assert_eq!(s.tasks[0].audio_columns, None);
        let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
        assert!(serde_json::to_value(&runs[0]).unwrap()["task"]
            .get("audio_columns")
            .is_none());
        runs.iter().map(|r| r.config_hash()).collect()
    };
    assert_eq!(hashes(&bare), hashes(&spelled));
    // Only the label renamed: no folds needed.
    let s = load_text(&fixed.replace("label: target, fold: fold", "label: target"))
        .1
        .unwrap();
    assert_eq!(
        s.tasks[0].audio_columns.as_ref().unwrap().fold,
        None::<String>
    );
}

/// A bad column option is an error naming the file and the line of the offending key.
#[test]
fn bad_column_options_name_file_and_line() {
    let columns_line = line_with(AUDIO_PARQUET, "columns:");
    let at = |e: &str, line: usize| {
        assert!(e.contains(&format!("x.yaml:{line}:")), "{e}");
    };
    // `text` is a table task's column.
    let e = load_err(&AUDIO_PARQUET.replace("label: target,", "text: caption, label: target,"));
    assert!(
        e.contains("`columns.text` does not apply to data format `audio-parquet`")
            && e.contains("`audio`, `label` and `fold`"),
        "{e}"
    );
    at(&e, columns_line);
    // A fold column without `protocol.folds`, and folds without a fold column.
    let e = load_err(&AUDIO_PARQUET.replace("  folds: 5\n", ""));
    assert!(e.contains("`columns.fold` needs `protocol.folds`"), "{e}");
    at(&e, columns_line - 1);
    let e = load_err(&AUDIO_PARQUET.replace(", fold: fold }", " }"));
    assert!(
        e.contains("`protocol.folds` needs the column holding each clip's fold"),
        "{e}"
    );
    at(&e, columns_line);
    let e = load_err(&AUDIO_PARQUET.replace("    columns: { label: target, fold: fold }\n", ""));
    assert!(e.contains("`protocol.folds` needs the column"), "{e}");
    at(&e, line_with(AUDIO_PARQUET, "- name: esc50"));
    // Empty names, one column read twice, unknown keys.
    let e = load_err(&AUDIO_PARQUET.replace("label: target", "label: ''"));
    assert!(e.contains("`columns.label` is empty"), "{e}");
    at(&e, columns_line);
    let e = load_err(&AUDIO_PARQUET.replace("label: target", "label: fold"));
    assert!(
        e.contains("`columns.label` and `columns.fold` name the same column `fold`"),
        "{e}"
    );
    at(&e, columns_line);
    let e = load_err(&AUDIO_PARQUET.replace("label: target", "lable: target"));
    assert!(e.contains("lable"), "{e}");
    at(&e, columns_line);
    // Folders read their published columns; tables take no audio or fold column.
    let e = load_err(&AUDIO_PARQUET.replace("format: audio-parquet", "format: esc50"));
    assert!(
        e.contains("`columns` only applies to data formats `table` and `audio-parquet`")
            && e.contains("`esc50`"),
        "{e}"
    );
    at(&e, columns_line);
    let table = TEXT
        .replace(
            "format: generated, train_examples: 100, eval_examples: 50",
            "format: table, root: /data",
        )
        .replace(
            "  - { name: sentiment-en, num_classes: 2, generator: sentiment, language: en }\n  - { name: sentiment-en-de, num_classes: 2, generator: sentiment, language: en, eval_language: de }\n",
            "  - name: reviews\n    num_classes: 3\n    columns:\n      text: review\n      fold: split\n",
        );
    let e = load_err(&table);
    assert!(
        e.contains("`columns.fold` does not apply to data format `table`")
            && e.contains("`text` and `label`"),
        "{e}"
    );
    at(&e, line_with(&table, "fold: split"));
}

/// Every shipped suite plans runs that serialise without the column options' keys: absent options
/// leave every configuration hash as it was.
#[test]
fn shipped_suites_serialise_without_the_column_option_keys() {
    struct AnyMethod(Vec<String>);
    impl MethodCatalog for AnyMethod {
        fn method_names(&self) -> Vec<String> {
            self.0.clone()
        }
        fn validate_params(&self, _: &str, _: &Value) -> Result<(), String> {
            Ok(())
        }
    }
    let mut names = Vec::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(suites_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let src = std::fs::read_to_string(&path).unwrap();
            for line in src.lines() {
                if let Some(rest) = line.split("method: ").nth(1) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| !matches!(c, ' ' | ',' | '}' | '#'))
                        .collect();
                    names.push(name);
                }
            }
            files.push(path);
        }
    }
    let catalog = AnyMethod(names);
    // The task fields and retrieval task fields serialised before the options existed.
    let task_keys = [
        "name",
        "num_classes",
        "generator",
        "group",
        "language",
        "eval_language",
        "columns",
        "labels",
        // Only `skills`-generator tasks have it; none existed before it.
        "skills",
        // Only vision-language tasks have it; none existed before it.
        "vl_task",
    ];
    let rerank_task_keys = [
        "name",
        "query_language",
        "document_language",
        "queries",
        "first_stage_queries",
        "corpus",
        "qrels",
        "run",
    ];
    assert!(files.len() >= 10, "{files:?}");
    for path in files {
        let s = load_suite(path.to_str().unwrap(), &suites_dir(), &catalog)
            .unwrap_or_else(|e| panic!("{e}"));
        for run in plan(&s, &PlanOptions::default(), &catalog).unwrap() {
            let json = serde_json::to_value(&run).unwrap();
            for key in json["task"].as_object().unwrap().keys() {
                assert!(task_keys.contains(&key.as_str()), "{}: {key}", s.name);
            }
            if let Some(task) = json.get("retrieval").map(|r| &r["task"]) {
                for key in task.as_object().unwrap().keys() {
                    assert!(
                        rerank_task_keys.contains(&key.as_str()),
                        "{}: {key}",
                        s.name
                    );
                }
            }
        }
    }
}

/// A reranking task names its corpus's id field (`corpus_id_field: id` for HC4); an empty name is
/// an error on its line, and tasks without it serialise as before.
#[test]
fn reranking_tasks_name_their_corpus_id_field() {
    let src = std::fs::read_to_string(suites_dir().join("demo-rerank.yaml")).unwrap();
    let base = plan(
        &load_text(&src).1.unwrap(),
        &PlanOptions::default(),
        &FakeCatalog,
    )
    .unwrap();
    let with = src.replacen(
        "corpus: corpus/de.jsonl,",
        "corpus: corpus/de.jsonl, corpus_id_field: id,",
        1,
    );
    let s = load_text(&with).1.unwrap();
    let r = s.retrieval.as_ref().unwrap();
    assert_eq!(r.tasks[1].corpus_id_field.as_deref(), Some("id"));
    assert_eq!(r.tasks[1].corpus_id_fields(), ["id"]);
    assert_eq!(r.tasks[0].corpus_id_fields(), ["_id", "docid", "doc_id"]);
    let runs = plan(&s, &PlanOptions::default(), &FakeCatalog).unwrap();
    for (a, b) in base.iter().zip(&runs) {
        // Only the task that sets it is a new configuration.
        assert_eq!(
            a.config_hash() == b.config_hash(),
            a.task.name != "de",
            "{}",
            a.run_id()
        );
    }
    let e = load_err(&with.replace("corpus_id_field: id", "corpus_id_field: ''"));
    assert!(
        e.contains("`corpus_id_field` \"\" is not a JSON field name"),
        "{e}"
    );
    assert!(
        e.contains(&format!("x.yaml:{}:", line_with(&with, "corpus_id_field"))),
        "{e}"
    );
}

/// BASE with a `multitask` section over its two tasks (`extra` lines added inside it).
fn multitask_suite(extra: &str) -> String {
    BASE.replace(
        "averaging: [mean, group-mean]\n",
        &format!("averaging: [mean, group-mean]\nmultitask:\n  name: both\n  tasks: [position, count]\n{extra}"),
    )
}

/// A multi-task suite plans one run per method, grid point and seed over all its tasks, whose
/// `task` is the run's name with the widest member's classes; its kind says so.
#[test]
fn a_multitask_suite_plans_one_run_over_its_tasks() {
    let (_dir, suite) = load_text(&multitask_suite("  sampling: temperature\n"));
    let suite = suite.unwrap();
    assert_eq!(suite.kind, TaskKind::ImageMultiTask);
    let runs = plan(&suite, &PlanOptions::default(), &FakeCatalog).unwrap();
    // full (1) + lora grid (4) + vpt-deep (1), 2 seeds each.
    assert_eq!(runs.len(), 12);
    for r in &runs {
        assert_eq!(r.task.name, "both");
        assert_eq!(r.task.num_classes, 9);
        let mt = r.multitask.as_ref().unwrap();
        assert_eq!(mt.sampling, Sampling::Temperature);
        assert_eq!(mt.temperature, 2.0);
        let names: Vec<&str> = mt.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["position", "count"]);
        // Read back from its record, the run is a multi-task run again.
        let back: RunSpec = serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
        assert_eq!(&back, r);
    }
    let filtered = PlanOptions {
        filter: vec!["task=both".into()],
        ..Default::default()
    };
    assert_eq!(plan(&suite, &filtered, &FakeCatalog).unwrap().len(), 12);
}

/// Mistakes in a `multitask` section are errors naming the section's line and the problem.
#[test]
fn multitask_mistakes_name_the_section() {
    let line = line_with(&multitask_suite(""), "multitask:");
    for (text, expected) in [
        (
            multitask_suite("").replace("tasks: [position, count]", "tasks: [position, colour]"),
            "lists `colour`, which is not in `tasks`",
        ),
        (
            multitask_suite("").replace("tasks: [position, count]", "tasks: [position]"),
            "at least two tasks",
        ),
        (
            multitask_suite("  heads: shared\n"),
            "`multitask.heads: shared` needs one label set",
        ),
        (
            multitask_suite("  temperature: 0\n"),
            "`multitask.temperature` must be a positive number",
        ),
        (
            multitask_suite("  held_out: { tasks: [count] }\n"),
            "`count` is listed twice",
        ),
        (
            multitask_suite("").replace("name: both", "name: count"),
            "is also a task's name",
        ),
    ] {
        let e = load_err(&text);
        assert!(e.contains(&format!("x.yaml:{line}")), "{e}");
        assert!(e.contains(expected), "{e}");
    }
    // A task that is neither trained together nor held out.
    let e = load_err(
        &multitask_suite("").replace("tasks: [position, count]", "tasks: [position, position]"),
    );
    assert!(e.contains("twice"), "{e}");
}

const CONTINUAL: &str = "\
name: cl
kind: class-incremental
backbone: { checkpoint: demo }
data: { format: generated, image_size: 16, train_examples: 96, eval_examples: 48 }
preprocess: { image_size: 16, interpolation: bilinear, normalization: none }
continual: { increment: 8, shuffle_seed: 1993 }
protocol: { train_split: train, eval_split: test, val_split: null, selection: final, on_data_error: stop }
recipe: { epochs: 2, lr: 1.0e-3, warmup_epochs: 0 }
seeds: [0]
tasks: [{ name: objects, num_classes: 24, generator: objects }]
methods:
  - { method: linear, label: sema, learner: sema, learner_params: { threshold: 1.0 } }
  - { method: adaptformer, label: mos, learner: mos, learner_params: { statistics: variance } }
  - { method: linear, label: mora, learner: mora }
";

/// `learner_params` reach the runs of their entry; an entry without them plans exactly as one
/// with none (its configuration hash unchanged); a wrong key, a wrong value, options for a
/// learner that takes none, and options outside a continual suite name the file and line.
#[test]
fn learner_params_are_checked_per_learner() {
    let (_d, suite) = load_text(CONTINUAL);
    let runs = plan(&suite.unwrap(), &PlanOptions::default(), &FakeCatalog).unwrap();
    let run = |label: &str| {
        runs.iter()
            .find(|r| r.label == label)
            .unwrap()
            .continual
            .clone()
            .unwrap()
    };
    assert_eq!(run("sema").sema_params().threshold, 1.0);
    assert_eq!(run("sema").sema_params().expandable_blocks, None);
    assert_eq!(
        run("mos").mos_params().statistics,
        ClassStatistics::Variance
    );
    assert_eq!(run("mora").learner_params, json!({}));
    let with_empty = CONTINUAL.replace("learner: mora }", "learner: mora, learner_params: {} }");
    let (_d, suite) = load_text(&with_empty);
    let again = plan(&suite.unwrap(), &PlanOptions::default(), &FakeCatalog).unwrap();
    let hash = |runs: &[RunSpec]| {
        runs.iter()
            .find(|r| r.label == "mora")
            .unwrap()
            .config_hash()
    };
    assert_eq!(hash(&runs), hash(&again));

    let line = line_with(CONTINUAL, "label: sema");
    let e = load_err(&CONTINUAL.replace("threshold: 1.0", "treshold: 1.0"));
    assert!(e.contains(&format!("x.yaml:{line}:")), "{e}");
    assert!(
        e.contains("`learner_params` of method `sema` (learner `sema`): unknown field `treshold`"),
        "{e}"
    );
    let e = load_err(&CONTINUAL.replace("threshold: 1.0", "threshold: -1.0"));
    assert!(
        e.contains("`threshold` -1 must be a number of standard deviations"),
        "{e}"
    );
    let e = load_err(&CONTINUAL.replace("threshold: 1.0", "expandable_blocks: 0"));
    assert!(e.contains("`expandable_blocks` must be at least 1"), "{e}");
    let e = load_err(&CONTINUAL.replace("statistics: variance", "statistics: diagonal"));
    assert!(e.contains("unknown variant `diagonal`"), "{e}");
    let e = load_err(&CONTINUAL.replace(
        "learner: mora }",
        "learner: mora, learner_params: { top_k: 3 } }",
    ));
    assert!(
        e.contains("learner `mora` takes no `learner_params`"),
        "{e}"
    );
    let e = load_err(&BASE.replace(
        "params: { prompts: 4 }",
        "params: { prompts: 4 }\n    learner_params: { threshold: 1 }",
    ));
    assert!(e.contains("are for continual suites"), "{e}");
}
