//! Audio suites as a user runs them: a tiny version of `demo-audio` (generated keywords on an AST,
//! several methods, SpecAugment on training clips) and a cross-validated ESC-50 sweep over real
//! WAV files in the published layout, whose report states that cells average the folds.

use std::path::{Path, PathBuf};

use candle_core::Device;
use peftbench_backbones::{Ast, AstConfig};
use peftbench_core::SeededInit;

mod common;
use common::{harness, records, text};

/// A tiny random AST checkpoint (1 s clips: 100 frames x 128 mel bins, 16x16 patches, stride 16).
fn tiny_ast(dir: &Path) -> PathBuf {
    let path = dir.join("backbone");
    let mut cfg = AstConfig::new(16, 2, 2, 32, 100, 128);
    cfg.frequency_stride = 16;
    cfg.time_stride = 16;
    let mut ast = Ast::random(cfg, &SeededInit::new(0, &Device::Cpu)).unwrap();
    ast.save(&path).unwrap();
    path
}

fn suite_text(
    name: &str,
    backbone: &Path,
    data: &str,
    tasks: &str,
    methods: &str,
    folds: &str,
) -> String {
    format!(
        "name: {name}
description: tiny audio suite
backbone:
  checkpoint: {backbone}
data:
{data}
audio: {{ target_frames: 100, freq_mask: 24, time_mask: 10 }}
protocol: {{ train_split: train, eval_split: test, selection: final{folds} }}
recipe: {{ epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0, drop_path: 0.0, eval_batch_size: 16 }}
seeds: [0]
averaging: [mean]
tasks:
{tasks}
methods:
{methods}",
        backbone = backbone.display()
    )
}

#[test]
fn tiny_demo_audio_trains_several_methods_on_generated_keywords() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = tiny_ast(dir.path());
    let suite = dir.path().join("tiny-audio.yaml");
    std::fs::write(
        &suite,
        suite_text(
            "tiny-audio",
            &backbone,
            "  format: generated\n  train_examples: 24\n  eval_examples: 16",
            "  - { name: keywords, num_classes: 4, generator: keywords }",
            "  - method: linear\n  - method: lora\n    params: { r: 2, target_modules: [query, key] }\n  - method: vpt-deep\n    params: { prompts: 2 }\n  - method: prefix-tuning\n    params: { num_virtual_tokens: 2 }\n",
            "",
        ),
    )
    .unwrap();
    let out = harness(dir.path())
        .arg("suite")
        .arg(&suite)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    assert_eq!(all.len(), 4);
    for r in &all {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["config"]["audio"]["target_frames"], 100);
    }
    let table = text(&out);
    assert!(table.contains("prefix-tuning"), "{table}");
}

/// A 16-bit mono PCM WAV file of `samples` at `rate`.
fn write_wav(path: &Path, samples: &[f32], rate: u32) {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

#[test]
fn esc50_sweeps_every_fold_and_reports_the_fold_average() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = tiny_ast(dir.path());
    // Two clips per fold (classes 0 and 1 as low and high tones) at ESC-50's 44.1 kHz, half a second.
    let root = dir.path().join("data/esc50");
    std::fs::create_dir_all(root.join("meta")).unwrap();
    std::fs::create_dir_all(root.join("audio")).unwrap();
    let mut csv = String::from("filename,fold,target,category,esc10,src_file,take\n");
    for fold in 1..=5 {
        for (target, (category, freq)) in
            [("dog", 300.0f32), ("rooster", 2000.0)].iter().enumerate()
        {
            let name = format!("{fold}-{target}-A-0.wav");
            let samples: Vec<f32> = (0..22_050)
                .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / 44_100.0).sin())
                .collect();
            write_wav(&root.join("audio").join(&name), &samples, 44_100);
            csv.push_str(&format!("{name},{fold},{target},{category},False,x,A\n"));
        }
    }
    std::fs::write(root.join("meta/esc50.csv"), csv).unwrap();
    let suite = dir.path().join("tiny-esc.yaml");
    let data = format!(
        "  format: esc50\n  root: {}",
        dir.path().join("data").display()
    );
    std::fs::write(
        &suite,
        suite_text(
            "tiny-esc",
            &backbone,
            &data,
            "  - { name: esc50, num_classes: 50 }",
            "  - method: bitfit\n",
            ", folds: 5",
        ),
    )
    .unwrap();
    let out = harness(dir.path())
        .arg("suite")
        .arg(&suite)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    let mut folds: Vec<u64> = all
        .iter()
        .map(|r| r["config"]["fold"].as_u64().unwrap())
        .collect();
    folds.sort();
    assert_eq!(folds, [1, 2, 3, 4, 5]);
    assert!(all
        .iter()
        .all(|r| r["run_id"].as_str().unwrap().contains("-fold")));
    let report = std::fs::read_to_string(dir.path().join("reports/tiny-esc.md")).unwrap();
    assert!(report.contains("5 cross-validation folds"), "{report}");
    assert!(report.contains("(5)"), "{report}");
    // The filter banks were computed once and cached on disk for later sweeps.
    assert!(dir.path().join("cache/audio-features").is_dir());
}
