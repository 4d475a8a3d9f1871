//! The vision-language kinds end to end on tiny random models: generated scenes written in the
//! published layouts, read back by the task readers, a text-only T5 adapted by registry methods
//! reading frozen ViT patch features (generation, scored per task), and CLIP's two towers
//! adapted for image-text retrieval (Recall@K). Random models score near nothing; what is checked
//! is that every piece runs, records what it should, and gives the same numbers twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftbench_backbones::{Backbone, Vit, VitConfig, T5};
use peftbench_core::SeededInit;
use peftbench_runner::demo_clip::{ensure_demo_clip_with, DemoClipRecipe};
use peftbench_runner::demo_t5::{word_level_tokenizer, DemoT5Recipe};
use peftbench_runner::{sweep, Paths, RegistryCatalog, SweepOptions};
use peftbench_suite::{parse_suite, PlanOptions};

/// The demo language's words, as the tokenizers are built from.
fn corpus() -> Vec<String> {
    let mut lines = peftbench_data_vision::vl_scenes::text_corpus(0, 200);
    lines.push(peftbench_data_vision::vl_scenes::vocabulary().join(" "));
    lines
}

/// A random tiny T5 with a word-level tokenizer, saved as a checkpoint folder.
fn t5_checkpoint(dir: &Path) -> PathBuf {
    let folder = dir.join("t5");
    std::fs::create_dir_all(&folder).unwrap();
    let tokenizer = word_level_tokenizer(&corpus(), 4).unwrap();
    tokenizer
        .save(folder.join("tokenizer.json"), false)
        .unwrap();
    let cfg = DemoT5Recipe::default().config(tokenizer.get_vocab_size(true), 0.0);
    let mut model = T5::random(cfg.clone(), &SeededInit::new(1, &Device::Cpu)).unwrap();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    model
        .visit_params(&mut |name, t| {
            tensors.insert(name.to_string(), t.clone());
            Ok(())
        })
        .unwrap();
    candle_core::safetensors::save(&tensors, folder.join("model.safetensors")).unwrap();
    let mut json = serde_json::to_value(&cfg).unwrap();
    json["model_type"] = "t5".into();
    std::fs::write(folder.join("config.json"), json.to_string()).unwrap();
    folder
}

/// A random tiny ViT reading 32 x 32 images, saved as a checkpoint folder.
fn vit_checkpoint(dir: &Path) -> PathBuf {
    let folder = dir.join("vit");
    let mut vit = Vit::random(
        VitConfig::new(32, 2, 2, 64, 32, 8),
        &SeededInit::new(2, &Device::Cpu),
    )
    .unwrap();
    vit.save(&folder).unwrap();
    folder
}

fn run(suite_text: &str, dir: &Path) -> Vec<peftbench_records::RunRecord> {
    let suite = parse_suite(suite_text, &dir.join("suite.yaml"), &RegistryCatalog).unwrap();
    let opts = SweepOptions {
        plan: PlanOptions::default(),
        dry_run: false,
        device: Default::default(),
        retry_failed: false,
        quiet: true,
    };
    let summary = sweep(&suite, &opts, &Paths::under(dir)).unwrap();
    assert_eq!(summary.failed, 0, "{}", summary.runs);
    let store = peftbench_records::RecordStore::open(&Paths::under(dir).results).unwrap();
    let mut records = store.load_all().unwrap();
    records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    records
}

#[test]
fn vision_language_runs_train_decode_and_score_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let t5 = t5_checkpoint(dir.path());
    let vit = vit_checkpoint(dir.path());
    let suite = format!(
        r#"
name: vl-tiny
kind: vision-language
backbone: {{ checkpoint: "{t5}" }}
data: {{ format: generated, image_size: 32, train_examples: 6, eval_examples: 4 }}
vision_language:
  visual_backbone: {{ checkpoint: "{vit}" }}
  preprocess: {{ image_size: 32, interpolation: bilinear, normalization: none }}
  max_text_tokens: 16
  max_target_tokens: 12
  num_beams: 2
  max_length: 6
  train_layer_norms: true
protocol: {{ train_split: train, eval_split: test, val_split: null, selection: final, on_data_error: stop }}
recipe: {{ epochs: 1, batch_size: 16, lr: 1.0e-3, warmup_epochs: 0, eval_batch_size: 16 }}
seeds: [0]
multitask: {{ name: vl, tasks: [vqa, gqa, nlvr2, captions] }}
tasks:
  - {{ name: vqa, vl_task: vqa-karpathy, generator: vl-scenes }}
  - {{ name: gqa, vl_task: gqa, generator: vl-scenes }}
  - {{ name: nlvr2, vl_task: nlvr2, generator: vl-scenes }}
  - {{ name: captions, vl_task: captions, generator: vl-scenes }}
methods:
  - {{ method: lora, params: {{ r: 2, target_modules: [query, value, cross_query] }} }}
  - {{ method: per-task, label: adapter-per-task, params: {{ method: adapter, params: {{ bottleneck: 4 }} }} }}
"#,
        t5 = t5.display(),
        vit = vit.display()
    );
    let records = run(&suite, dir.path());
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.primary_metric, "task_score");
        for task in ["vqa", "gqa", "nlvr2", "captions"] {
            let score = r.metrics[&format!("task_score@{task}")];
            assert!((0.0..=10.0).contains(&score), "{task}: {score}");
            assert!(r.metrics[&format!("eval_examples@{task}")] > 0.0);
        }
        for metric in [
            "vqa_accuracy@vqa",
            "cider@captions",
            "bleu4@captions",
            "nlvr2_consistency@nlvr2",
        ] {
            assert!(
                r.metrics.contains_key(metric),
                "{metric}: {:?}",
                r.metrics.keys()
            );
        }
        // Both counts: the method alone, and what trains (method, visual projection, layer norms).
        let strict = r.metrics["params_strict"];
        assert!(strict > 0.0 && (r.trainable_params as f64) > strict);
        assert_eq!(r.metrics["params_vl_adapter"], r.trainable_params as f64);
        assert!(r.adapter_bytes.unwrap_or(0) > 0);
    }
    // Reproducible: the same suite in another folder gives the same numbers.
    let again = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(again.path().join("cache")).unwrap();
    let copy = |name: &str| {
        let from = dir.path().join(name);
        let to = again.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    };
    copy("t5");
    copy("vit");
    let suite_again = suite
        .replace(
            &t5.display().to_string(),
            &again.path().join("t5").display().to_string(),
        )
        .replace(
            &vit.display().to_string(),
            &again.path().join("vit").display().to_string(),
        );
    let repeated = run(&suite_again, again.path());
    for (a, b) in records.iter().zip(&repeated) {
        let scores = |r: &peftbench_records::RunRecord| {
            r.metrics
                .iter()
                .filter(|(k, _)| k.contains('@'))
                .map(|(k, v)| (k.clone(), *v))
                .collect::<Vec<_>>()
        };
        assert_eq!(scores(a), scores(b));
    }
}

/// The Hugging Face parquet copies (written by the `datasets` library, `ci/fixtures/vl_parquet.py`)
/// run through the whole kind: images decoded from the parquet bytes, encoded once, trained on
/// and decoded. The copies hold evaluation splits only, so this run trains on them too.
#[test]
fn vision_language_runs_on_hugging_face_parquet_copies() {
    let dir = tempfile::tempdir().unwrap();
    let t5 = t5_checkpoint(dir.path());
    let vit = vit_checkpoint(dir.path());
    let copies =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data-text/tests/fixtures/vl_parquet");
    let suite = format!(
        r#"
name: vl-copies
kind: vision-language
backbone: {{ checkpoint: "{t5}" }}
data: {{ format: vision-language, root: "{root}" }}
vision_language:
  visual_backbone: {{ checkpoint: "{vit}" }}
  preprocess: {{ image_size: 32, interpolation: bilinear, normalization: none }}
  max_text_tokens: 16
  max_target_tokens: 12
  num_beams: 1
  max_length: 4
  train_layer_norms: false
protocol: {{ train_split: test, eval_split: test, val_split: null, selection: final, on_data_error: stop }}
recipe: {{ epochs: 1, batch_size: 4, lr: 1.0e-3, warmup_epochs: 0, eval_batch_size: 4 }}
seeds: [0]
multitask: {{ name: vl, tasks: [vqa, gqa, flickr30k] }}
tasks:
  - {{ name: vqa, vl_task: vqa }}
  - {{ name: gqa, vl_task: gqa }}
  - {{ name: flickr30k, vl_task: captions }}
methods:
  - {{ method: lora, params: {{ r: 2, target_modules: [query, value] }} }}
"#,
        t5 = t5.display(),
        vit = vit.display(),
        root = copies.display()
    );
    let records = run(&suite, dir.path());
    assert_eq!(records.len(), 1);
    let r = &records[0];
    for (task, examples) in [("vqa", 4.0), ("gqa", 3.0), ("flickr30k", 2.0)] {
        assert_eq!(
            r.metrics[&format!("eval_examples@{task}")],
            examples,
            "{task}"
        );
        assert!(r.metrics.contains_key(&format!("task_score@{task}")));
    }
}

#[test]
fn image_text_retrieval_runs_train_both_towers_and_report_recalls() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny demo CLIP, trained for one epoch on a few scenes: its snapshot folder holds the
    // config, weights and tokenizer as a downloaded checkpoint does.
    let recipe = DemoClipRecipe {
        vision_layers: 1,
        text_layers: 1,
        train_scenes: 16,
        eval_scenes: 8,
        epochs: 1,
        batch_size: 8,
        ..DemoClipRecipe::default()
    };
    let files = ensure_demo_clip_with(&Paths::under(dir.path()), &recipe, true).unwrap();
    let folder = files.config.parent().unwrap().to_path_buf();
    let suite = format!(
        r#"
name: retrieval-tiny
kind: image-text-retrieval
backbone: {{ checkpoint: "{clip}" }}
data: {{ format: generated, image_size: 32, train_examples: 8, eval_examples: 8 }}
image_text_retrieval:
  preprocess: {{ image_size: 32, interpolation: bilinear, normalization: none }}
  max_text_tokens: 16
protocol: {{ train_split: train, eval_split: test, val_split: null, selection: final, on_data_error: stop }}
recipe: {{ epochs: 1, batch_size: 4, lr: 1.0e-3, warmup_epochs: 0, eval_batch_size: 8 }}
seeds: [0]
tasks:
  - {{ name: captions, vl_task: captions, generator: vl-scenes }}
methods:
  - {{ method: lora, params: {{ r: 2 }} }}
  - {{ method: adapter, params: {{ bottleneck: 4 }} }}
"#,
        clip = folder.display()
    );
    let records = run(&suite, dir.path());
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.primary_metric, "rsum");
        let rsum = r.metrics["rsum"];
        let recalls: f64 = ["text_to_image", "image_to_text"]
            .iter()
            .flat_map(|d| [1, 5, 10].map(|k| r.metrics[&format!("{d}_r{k}")]))
            .sum();
        assert!((rsum - recalls).abs() < 1e-9, "{rsum} vs {recalls}");
        // 4 test images (half the evaluation scenes), 5 captions each.
        assert_eq!(r.metrics["eval_images"], 4.0);
        assert_eq!(r.metrics["eval_captions"], 20.0);
        // R@10 with 4 images finds every caption's image.
        assert_eq!(r.metrics["text_to_image_r10"], 1.0);
    }
}
