//! Records the versions of the numeric dependencies from Cargo.lock, so every result says exactly
//! which candle (etc.) produced it.

use std::path::Path;

const TRACKED: &[&str] = &[
    "candle-core",
    "candle-nn",
    "safetensors",
    "hf-hub",
    "image",
    "parquet",
    "gemm",
];

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found = Vec::new();
    let mut name: Option<String> = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            if TRACKED.contains(&n.as_str()) {
                found.push(format!("{n}={}", v.trim_matches('"')));
            }
        }
    }
    println!("cargo:rustc-env=PEFTBENCH_DEP_VERSIONS={}", found.join(","));
}
