//! The class-incremental kind end to end on data in the real layouts: an ImageFolder tree
//! (PILOT's ImageNet-R, CUB, ... layout) and CIFAR-100's binary release, each written here from
//! generated images, streamed through a random tiny ViT by every learner, reported with Ā, A_T,
//! forgetting and the accuracy curve.

use std::path::{Path, PathBuf};

use candle_core::Device;
use peftbench_backbones::{Vit, VitConfig};
use peftbench_core::SeededInit;
use peftbench_data_vision::scenes::generate_objects;
use peftbench_data_vision::ImageSource;
use peftbench_runner::{sweep, Paths, RegistryCatalog, SweepOptions};
use peftbench_suite::{parse_suite, PlanOptions};

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

/// Generated object images of the first `classes` classes, `per_class` each, as RGB pixels.
fn images(classes: usize, per_class: usize, seed: u64) -> Vec<(u32, image::RgbImage)> {
    let ds = generate_objects(24 * per_class, seed, 32);
    ds.items
        .into_iter()
        .zip(ds.labels)
        .filter(|(_, l)| (*l as usize) < classes)
        .map(|(item, l)| match item {
            ImageSource::Rgb(img) => (l, (*img).clone()),
            _ => unreachable!("generated images are decoded"),
        })
        .collect()
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
    let paths = Paths::under(dir);
    let summary = sweep(&suite, &opts, &paths).unwrap();
    assert_eq!(summary.failed, 0, "{}", summary.runs);
    let store = peftbench_records::RecordStore::open(&paths.results).unwrap();
    let mut records = store.load_all().unwrap();
    records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    records
}

fn suite(name: &str, format: &str, root: &Path, vit: &Path, classes: usize, task: &str) -> String {
    format!(
        r#"
name: {name}
kind: class-incremental
backbone: {{ checkpoint: "{vit}" }}
data: {{ format: {format}, root: "{root}" }}
preprocess: {{ image_size: 32, interpolation: bilinear, normalization: none }}
continual: {{ init_classes: 2, increment: 2, shuffle_seed: 1993 }}
protocol: {{ train_split: train, eval_split: test, val_split: null, selection: final, on_data_error: stop }}
recipe: {{ epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0, eval_batch_size: 32 }}
seeds: [0]
tasks: [{{ name: {task}, num_classes: {classes} }}]
methods:
{EVERY_LEARNER}"#,
        vit = vit.display(),
        root = root.display()
    )
}

/// One entry per learner (MOS and SEMA with options of theirs).
const EVERY_LEARNER: &str = "  \
  - { method: lora, label: finetune-lora, learner: finetune, params: { r: 2 } }
  - { method: linear, label: simplecil, learner: simplecil }
  - { method: adapter, label: aper-adapter, learner: aper, params: { bottleneck: 4 } }
  - { method: linear, label: l2p, learner: l2p }
  - { method: lora, label: lae-lora, learner: lae, params: { r: 2 } }
  - { method: linear, label: mora, learner: mora }
  - { method: adaptformer, label: mos, learner: mos, params: { bottleneck: 4 }, learner_params: { statistics: variance } }
  - { method: linear, label: sema, learner: sema, learner_params: { threshold: 1.0 } }
";

/// An ImageFolder tree of six classes (class folders named out of label order, as WordNet ids
/// are) runs every learner through three stages and reports the stream; SEMA's record says
/// how many adapters each block ended with.
#[test]
fn class_incremental_runs_every_learner_on_an_imagefolder_tree() {
    let dir = tempfile::tempdir().unwrap();
    let vit = vit_checkpoint(dir.path());
    let root = dir.path().join("data");
    for (split, per_class, seed) in [("train", 6, 1), ("test", 3, 2)] {
        for (i, (label, img)) in images(6, per_class, seed).into_iter().enumerate() {
            let class = root.join(format!("objects/{split}/n0{}", 9 - label));
            std::fs::create_dir_all(&class).unwrap();
            img.save(class.join(format!("{i}.png"))).unwrap();
        }
    }
    let records = run(
        &suite("cl-folder", "imagefolder", &root, &vit, 6, "objects"),
        dir.path(),
    );
    assert_eq!(records.len(), 8);
    for r in &records {
        assert_eq!(r.primary_metric, "avg_incremental_accuracy", "{}", r.label);
        assert_eq!(r.metrics["stages"], 3.0);
        for key in [
            "last_accuracy",
            "forgetting",
            "accuracy@2",
            "accuracy@4",
            "accuracy@6",
        ] {
            assert!(r.metrics.contains_key(key), "{}: {key}", r.label);
        }
        // PILOT's order of six classes.
        let order: Vec<usize> = (0..6)
            .map(|p| r.metrics[&format!("class_order@{p}")] as usize)
            .collect();
        assert_eq!(
            order,
            peftbench_metrics::continual::pilot_class_order(6, 1993)
        );
    }
    let by_label = |l: &str| records.iter().find(|r| r.label == l).unwrap();
    assert_eq!(by_label("simplecil").trainable_params, 0);
    assert!(by_label("aper-adapter").trainable_params > 0);
    // Three stages of one epoch each for fine-tuning; APER trains on the first only.
    assert_eq!(by_label("finetune-lora").history.len(), 3);
    assert_eq!(by_label("aper-adapter").history.len(), 1);
    let sema = by_label("sema");
    for block in 0..2 {
        assert!(sema.metrics[&format!("sema_adapters@{block}")] >= 1.0);
    }
    assert!(sema.metrics.contains_key("sema_adapters_added"));
    let report = std::fs::read_to_string(dir.path().join("reports/cl-folder.md")).unwrap();
    assert!(
        report.contains("## Class-incremental: Ā, A_T and forgetting"),
        "{report}"
    );
    assert!(report.contains("accuracy-curve.svg"), "{report}");
}

/// CIFAR-100's binary release (records of coarse label, fine label, 3072 planar pixels; one
/// name per class) streams its 100 classes.
#[test]
fn class_incremental_reads_cifar_100s_binary_release() {
    let dir = tempfile::tempdir().unwrap();
    let vit = vit_checkpoint(dir.path());
    let release = dir.path().join("data/cifar100/cifar-100-binary");
    std::fs::create_dir_all(&release).unwrap();
    let names: Vec<String> = (0..100).map(|c| format!("class_{c}")).collect();
    std::fs::write(release.join("fine_label_names.txt"), names.join("\n")).unwrap();
    let objects = images(24, 2, 3);
    for (split, per_class) in [("train", 2), ("test", 1)] {
        let mut bytes = Vec::new();
        for class in 0..100u8 {
            for k in 0..per_class {
                let (_, img) = &objects[(class as usize * 2 + k) % objects.len()];
                bytes.extend([class / 5, class]);
                for channel in 0..3 {
                    bytes.extend(img.pixels().map(|p| p.0[channel]));
                }
            }
        }
        std::fs::write(release.join(format!("{split}.bin")), bytes).unwrap();
    }
    let text = suite(
        "cl-cifar",
        "cifar",
        &dir.path().join("data"),
        &vit,
        100,
        "cifar100",
    )
    .replace(
        "init_classes: 2, increment: 2",
        "init_classes: 0, increment: 50",
    )
    .replace(
        EVERY_LEARNER,
        "  - { method: linear, label: simplecil, learner: simplecil }\n",
    );
    let records = run(&text, dir.path());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].metrics["stages"], 2.0);
    assert!(records[0].metrics.contains_key("accuracy@100"));
}
