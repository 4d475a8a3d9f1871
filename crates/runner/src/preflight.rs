//! Checks made before anything trains, so a bad configuration fails in seconds rather than hours
//! into a sweep: every run's method configuration against the backbone's sizes (a rank above a
//! layer's width, a Compacter width that does not divide the hidden size, ...).

use peftbench_backbones::{info_from_config, Ast, BackboneInfo, Bert, Vit, T5};
use peftbench_methods::find_method;
use peftbench_suite::{BackboneSpec, RunSpec};

use crate::backbone::resolve_files;
use crate::{demo, demo_audio, demo_clip, demo_t5, demo_text, Paths};

/// The backbone's sizes from its configuration alone (no weights loaded, the demo backbone not
/// pretrained): what `--dry-run` checks methods against.
pub fn backbone_info(spec: &BackboneSpec, paths: &Paths) -> anyhow::Result<BackboneInfo> {
    if spec.checkpoint == demo::DEMO_CHECKPOINT {
        return Ok(Vit::info_for(&demo::DemoRecipe::default().config));
    }
    if spec.checkpoint == demo_audio::DEMO_AUDIO_CHECKPOINT {
        return Ok(Ast::info_for(&demo_audio::DemoAstRecipe::default().config));
    }
    if spec.checkpoint == demo_t5::DEMO_T5_CHECKPOINT {
        // Nor do they on the demo T5's vocabulary.
        return Ok(T5::info_for(
            &demo_t5::DemoT5Recipe::default().config(0, 0.0),
        ));
    }
    if spec.checkpoint == demo_clip::DEMO_CLIP_CHECKPOINT {
        // Its image tower's sizes, as the loaded CLIP reports them; no vocabulary needed.
        return Ok(demo_clip::DemoClipRecipe::default().info());
    }
    if spec.checkpoint == demo_text::DEMO_TEXT_CHECKPOINT {
        // The sizes methods are checked against do not depend on the vocabulary.
        return Ok(Bert::info_for(
            &demo_text::DemoTextRecipe::default().config(0),
        ));
    }
    let files = resolve_files(spec, paths)?;
    info_from_config(&files.config).map_err(anyhow::Error::msg)
}

/// Checks every distinct method configuration of `specs` against `info`; the error lists every
/// offending configuration with the first run that uses it.
pub fn check_methods(specs: &[RunSpec], info: &BackboneInfo) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for spec in specs {
        if !seen.insert((spec.method.clone(), spec.params.to_string())) {
            continue;
        }
        let method = find_method(&spec.method).map_err(anyhow::Error::msg)?;
        if let Err(e) = method.check_backbone(&spec.params, info) {
            problems.push(format!("  {} (run {}): {e}", spec.label, spec.run_id()));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} method configuration(s) do not fit backbone `{}` (hidden {}, MLP {}, {} layers):\n{}",
        problems.len(),
        specs[0].backbone.checkpoint,
        info.hidden_size,
        info.intermediate_size,
        info.num_layers,
        problems.join("\n")
    )
}
