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
    // Each `[[package]]` block: name, version, and a `source` line unless it is a path crate of
    // this workspace (as `gemm` is: crates/gemm, patched in for the upstream crate).
    for block in text.split("[[package]]") {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        let (Some(name), Some(version)) = (field("name = "), field("version = ")) else {
            continue;
        };
        if TRACKED.contains(&name.as_str()) {
            let ours = if field("source = ").is_none() {
                " (this workspace)"
            } else {
                ""
            };
            found.push(format!("{name}={version}{ours}"));
        }
    }
    println!("cargo:rustc-env=PEFTBENCH_DEP_VERSIONS={}", found.join(","));
}
