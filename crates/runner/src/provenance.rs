//! Which pinned outside data and weights a sweep reads: its suite's manifest
//! (`manifests/<suite>.toml`, see `harness fetch`) and the receipts `harness fetch` left for each
//! artifact. Every run record carries them, and a leaderboard warns about data used without a
//! receipt (as found on disk, unverified against the pins).

use std::path::Path;

use peftbench_fetch::install::{read_receipt, receipt_path};
use peftbench_fetch::manifest::load_suite_manifest;
use peftbench_records::DataArtifact;

/// The artifacts of `suite`'s manifest under `manifests`, each with its receipt's files when
/// `harness fetch` installed it (data receipts under `data_root`, weights receipts under
/// `cache`). Empty when the suite has no manifest (generated data, the demo backbones); a
/// manifest that does not parse is an error naming its file and line.
pub fn data_artifacts(
    suite: &str,
    manifests: &Path,
    data_root: Option<&Path>,
    cache: &Path,
) -> anyhow::Result<Vec<DataArtifact>> {
    if !manifests.join(format!("{suite}.toml")).is_file() {
        return Ok(Vec::new());
    }
    let manifest = load_suite_manifest(manifests, suite)?;
    Ok(manifest
        .artifacts
        .iter()
        .map(|artifact| {
            let receipt =
                receipt_path(artifact, data_root, cache).and_then(|path| read_receipt(&path));
            DataArtifact {
                id: artifact.id.clone(),
                manifest_sha256: artifact.manifest_sha256.clone(),
                commit: artifact
                    .pinned_hub()
                    .map(|(_, _, commit)| commit.to_string()),
                receipt: receipt.is_some(),
                files: receipt
                    .map(|r| {
                        r.files
                            .into_iter()
                            .map(|f| (f.path, format!("{}:{}", f.algorithm, f.digest)))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shipped suite's manifest gives one entry per artifact, without receipts in an empty
    /// cache; a suite without a manifest gives none.
    #[test]
    fn shipped_manifests_give_their_artifacts_without_receipts_in_an_empty_cache() {
        let manifests = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests"));
        let empty = tempfile::tempdir().unwrap();
        let vtab = data_artifacts("vtab1k", manifests, Some(empty.path()), empty.path()).unwrap();
        let ids: Vec<&str> = vtab.iter().map(|a| a.id.as_str()).collect();
        assert!(
            ids.contains(&"vit-b16-in21k") && ids.contains(&"vtab-1k"),
            "{ids:?}"
        );
        assert!(vtab.iter().all(|a| !a.receipt && a.files.is_empty()));
        assert!(vtab.iter().all(|a| a.manifest_sha256.len() == 64));
        let weights = vtab.iter().find(|a| a.id == "vit-b16-in21k").unwrap();
        assert_eq!(weights.commit.as_deref().map(str::len), Some(40));
        assert!(data_artifacts("demo", manifests, None, empty.path())
            .unwrap()
            .is_empty());
    }

    /// Weights installed by `harness fetch` are recorded with their receipt's file digests.
    #[test]
    fn a_receipt_gives_the_installed_files() {
        use peftbench_fetch::install::{Receipt, ReceiptFile};

        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(manifests.join("artifacts")).unwrap();
        std::fs::write(
            manifests.join("tiny.toml"),
            "suite = \"tiny\"\nartifacts = [\"tiny-vit\"]\n",
        )
        .unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let digest = "ab".repeat(32);
        std::fs::write(
            manifests.join("artifacts/tiny-vit.toml"),
            format!(
                "id = \"tiny-vit\"\nkind = \"weights\"\ntitle = \"t\"\nlicence = \"l\"\n\
                 citation = \"c\"\nrepo = \"org/tiny-vit\"\n[[sources]]\nkind = \"hub\"\n\
                 repo = \"org/tiny-vit\"\nrevision = \"{commit}\"\n[[files]]\n\
                 path = \"model.safetensors\"\nsize = 16\nsha256 = \"{digest}\"\n"
            ),
        )
        .unwrap();
        let cache = dir.path().join("cache");
        let before = data_artifacts("tiny", &manifests, None, &cache).unwrap();
        assert_eq!(before.len(), 1);
        assert!(!before[0].receipt);
        assert_eq!(before[0].commit.as_deref(), Some(commit));
        let receipt = Receipt {
            artifact: "tiny-vit".into(),
            manifest: "manifests/artifacts/tiny-vit.toml".into(),
            manifest_sha256: before[0].manifest_sha256.clone(),
            installed_at_unix: 0,
            files: vec![ReceiptFile {
                path: "model.safetensors".into(),
                size: 16,
                algorithm: "sha256".into(),
                digest: digest.clone(),
                source: "hub".into(),
            }],
        };
        std::fs::create_dir_all(cache.join("receipts")).unwrap();
        std::fs::write(
            cache.join("receipts/tiny-vit.json"),
            serde_json::to_string(&receipt).unwrap(),
        )
        .unwrap();
        let after = data_artifacts("tiny", &manifests, None, &cache).unwrap();
        assert!(after[0].receipt);
        assert_eq!(
            after[0].files.get("model.safetensors"),
            Some(&format!("sha256:{digest}"))
        );
    }
}
