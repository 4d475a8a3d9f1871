//! The vision-language demo's data: generated scenes with VQA-, GQA-, NLVR2- and caption-style
//! annotations ([`peftbench_data_vision::vl_scenes`]), written once into the cache in the
//! published files' layout, so `harness suite demo-vl` reads them through the same readers as
//! the real datasets.

use std::path::PathBuf;

use peftbench_data_vision::vl_scenes::{write_demo_vl, DemoVlSpec};
use peftbench_suite::RunSpec;
use sha2::{Digest, Sha256};

use crate::Paths;

/// The generated data of a `generated` vision-language suite: written under
/// `<cache>/demo-vl/<hash of what shapes it>/` unless already there; returns that folder (the
/// data root, one folder per task).
pub fn ensure_demo_vl_data(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<PathBuf> {
    let demo = DemoVlSpec {
        image_size: spec
            .data
            .image_size
            .unwrap_or(DemoVlSpec::default().image_size),
        train_images: spec
            .data
            .train_examples
            .expect("suite validation requires train_examples for generated data"),
        eval_images: spec
            .data
            .eval_examples
            .expect("suite validation requires eval_examples for generated data"),
        ..DemoVlSpec::default()
    };
    let key = format!(
        "seed={} size={} train={} eval={} generator={} layout=2",
        demo.seed,
        demo.image_size,
        demo.train_images,
        demo.eval_images,
        env!("CARGO_PKG_VERSION")
    );
    let hash: String = Sha256::digest(key.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = paths.cache.join("demo-vl").join(hash);
    let done = root.join(".complete");
    if !done.is_file() {
        if !quiet {
            eprintln!(
                "generating the vision-language demo data ({} + {} scenes) into {}",
                demo.train_images,
                demo.eval_images,
                root.display()
            );
        }
        write_demo_vl(&root, &demo)
            .map_err(|e| anyhow::anyhow!("writing the demo data into {}: {e}", root.display()))?;
        std::fs::write(&done, key)?;
    }
    Ok(root)
}
