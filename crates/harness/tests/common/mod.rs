//! What the harness's CLI tests share: running the binary in a scratch folder, its output, and the
//! run records a sweep left.

// Each test binary includes this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use peftbench_backbones::{Bert, BertConfig};
use peftbench_core::SeededInit;
use peftbench_data_text::TextExample;
use peftbench_runner::demo_text::word_level_tokenizer;

/// The `harness` binary run in `dir`, with its own cache, offline, and no data root from the
/// environment.
pub fn harness(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.current_dir(dir)
        .env("PEFTBENCH_CACHE", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("PEFTBENCH_DATA");
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("harness runs")
}

/// Standard output and standard error together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every run record under `dir/results/records` (temporary `.`-files skipped), each whole JSON.
pub fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("results/records")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
            {
                out.push(
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                        .expect("record is whole JSON"),
                );
            }
        }
    }
    out
}

/// A tiny random BERT checkpoint folder (`dir/bert`: hidden 16, one block, two segments) with a
/// word-level `tokenizer.json` covering `corpus`.
pub fn tiny_bert(dir: &Path, corpus: &[TextExample]) -> PathBuf {
    let path = dir.join("bert");
    std::fs::create_dir_all(&path).unwrap();
    let tokenizer = word_level_tokenizer(corpus).unwrap();
    tokenizer.save(path.join("tokenizer.json"), false).unwrap();
    let mut cfg = BertConfig::new(tokenizer.get_vocab_size(true), 16, 1, 2, 32);
    cfg.max_position_embeddings = 32;
    let mut bert = Bert::random(cfg.clone(), &SeededInit::new(0, &Device::Cpu)).unwrap();
    std::fs::write(
        path.join("config.json"),
        serde_json::to_string(&cfg.to_hf_json()).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(
        &bert.named_tensors().unwrap(),
        path.join("model.safetensors"),
    )
    .unwrap();
    path
}
