//! What the harness's CLI tests share: running the binary in a scratch folder, its output, and the
//! run records a sweep left.

// Each test binary includes this module and uses only some of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

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
