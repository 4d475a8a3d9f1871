//! `harness suite --devices A,B,...`: one worker process per device, each running its shard of
//! the plan into the shared results directory, then the leaderboard.
//!
//! Processes rather than threads: each worker owns its device, and its records' peak memory is
//! its own (the measure is per process).

use std::ffi::OsString;
use std::fs::File;
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use peftbench_core::DeviceSpec;
use peftbench_records::RecordStore;
use peftbench_runner::{backbone::load_backbone, sweep::report, Paths};
use peftbench_suite::{PlanOptions, Shard, Suite};

/// `0` is `cuda:0`; anything else as `--device` reads it (`cpu`, `cuda`, `cuda:1`).
pub fn parse_device(s: &str) -> anyhow::Result<DeviceSpec> {
    let s = s.trim();
    if let Ok(n) = s.parse::<usize>() {
        return Ok(DeviceSpec::Cuda(n));
    }
    s.parse()
        .map_err(|e: String| anyhow::anyhow!("--devices: {e}"))
}

/// This process's arguments without `--devices`/`--device` (and their values).
fn worker_args() -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let text = a.to_string_lossy();
        if text == "--devices" || text == "--device" {
            args.next();
            continue;
        }
        if text.starts_with("--devices=") || text.starts_with("--device=") {
            continue;
        }
        out.push(a);
    }
    out
}

pub fn run_workers(
    suite: &Suite,
    plan: &PlanOptions,
    devices: &[String],
    paths: &Paths,
) -> anyhow::Result<ExitCode> {
    let devices: Vec<DeviceSpec> = devices
        .iter()
        .map(|d| parse_device(d))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!devices.is_empty(), "--devices lists no device");
    // The backbone is resolved (and the demo one pretrained and cached) once here, so workers
    // starting together do not race to write the same cache entry.
    load_backbone(
        &suite.backbone,
        paths,
        &DeviceSpec::Cpu.open()?,
        false,
        suite.audio.as_ref().map(|a| a.target_frames),
    )?;

    let exe = std::env::current_exe().context("locating the harness binary")?;
    let logs = paths.results.join("workers");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let n = devices.len();
    let mut children = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        let shard = Shard {
            index: i + 1,
            count: n,
        };
        let log_path = logs.join(format!("worker-{}.log", i + 1));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&exe)
            .args(worker_args())
            .arg("--shard")
            .arg(shard.to_string())
            .arg("--device")
            .arg(device.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting worker {} on {device}", i + 1))?;
        println!(
            "worker {}/{n} on {device}: shard {shard}, log {}",
            i + 1,
            log_path.display()
        );
        children.push((i + 1, *device, log_path, child));
    }
    let mut worst = 0u8;
    for (i, device, log_path, mut child) in children {
        let status = child.wait()?;
        let code = status.code().unwrap_or(2) as u8;
        if code != 0 {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            eprintln!(
                "worker {i} on {device} exited with {code}; last lines of {}:",
                log_path.display()
            );
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        }
        // 2 (error) outranks 3 (some runs failed).
        worst = match (worst, code) {
            (2, _) | (_, 2) => 2,
            (a, b) => a.max(b),
        };
    }
    if worst == 2 {
        anyhow::bail!("a worker failed (see its log above)");
    }
    if plan.shards.is_empty() {
        let store = RecordStore::open(&paths.results)?;
        let (table, _, path) = report(suite, plan, &store, &paths.reports)?;
        println!("{table}");
        println!("Leaderboard written to {}", path.display());
    }
    Ok(ExitCode::from(worst))
}
