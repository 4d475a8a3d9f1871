//! The Fréchet and kernel distances against the reference implementations' values on committed
//! embedding sets (`ci/fixtures/frechet_reference.py`: pytorch-fid's `calculate_frechet_distance`
//! and torchmetrics' `poly_mmd`).

use std::path::{Path, PathBuf};

use peftbench_metrics::frechet::{frechet_distance, kernel_distance, Embeddings, GaussianStats};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frechet")
}

fn set(name: &str) -> Embeddings {
    Embeddings::read_npy(&fixtures().join(format!("{name}.npy"))).unwrap()
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
        .unwrap()
}

#[test]
fn frechet_distance_matches_pytorch_fid() {
    let want = &expected()["frechet"];
    for (a, b) in [("a", "b"), ("c", "d"), ("a", "a")] {
        let got = frechet_distance(
            &GaussianStats::of(&set(a)).unwrap(),
            &GaussianStats::of(&set(b)).unwrap(),
        )
        .unwrap();
        let reference = want[format!("{a}-{b}")].as_f64().unwrap();
        assert!(
            (got - reference).abs() < 1e-9 * reference.abs().max(1.0),
            "{a}-{b}: {got} against pytorch-fid's {reference}"
        );
    }
}

#[test]
fn kernel_distance_matches_torchmetrics() {
    let want = &expected()["kernel"];
    for (a, b) in [("c", "d"), ("c", "c")] {
        let got = kernel_distance(&set(a), &set(b)).unwrap();
        let reference = want[format!("{a}-{b}")].as_f64().unwrap();
        assert!(
            (got - reference).abs() < 1e-9 * reference.abs().max(1.0),
            "{a}-{b}: {got} against torchmetrics' {reference}"
        );
    }
}

/// A file that is not 2-D floats is named with what it holds.
#[test]
fn bad_npy_files_are_named() {
    let dir = std::env::temp_dir().join(format!("peftbench-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_npy = dir.join("x.npy");
    std::fs::write(&not_npy, b"hello").unwrap();
    let err = Embeddings::read_npy(&not_npy).unwrap_err();
    assert!(
        err.starts_with(&format!("{}: not a .npy file", not_npy.display())),
        "{err}"
    );
    let missing = dir.join("missing.npy");
    assert!(Embeddings::read_npy(&missing)
        .unwrap_err()
        .starts_with(&missing.display().to_string()));
    std::fs::remove_dir_all(&dir).unwrap();
}
