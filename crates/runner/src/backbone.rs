//! Turning a suite's `backbone:` into a loaded model.

use std::path::Path;

use candle_core::Device;
use peftbench_backbones::{resolve_checkpoint, Ast, Backbone, BackboneInfo, Vit};
use peftbench_suite::{BackboneSpec, RunSpec};

use crate::{demo, demo_audio, Paths};

/// The hub caches searched, in order: the project's own, then Hugging Face's.
pub fn hub_caches(paths: &Paths) -> Vec<hf_hub::Cache> {
    vec![
        hf_hub::Cache::new(paths.cache.join("hub")),
        peftbench_backbones::checkpoint::hf_cache(),
    ]
}

/// The pretrained encoders a suite can adapt. Each run attaches its method to a clone, so a new
/// family is one more variant here and one more arm in [`BackboneModel::from_config`].
#[derive(Debug, Clone)]
pub enum BackboneModel {
    Vit(Vit),
    Ast(Ast),
}

impl BackboneModel {
    /// Loads a checkpoint folder's weights as the family its `config.json` names (`model_type`);
    /// an AST's position embeddings are adapted to `audio_frames` when given.
    pub fn from_config(
        config: &Path,
        weights: &Path,
        device: &Device,
        audio_frames: Option<usize>,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        match json.get("model_type").and_then(|t| t.as_str()) {
            Some("audio-spectrogram-transformer") => {
                Ok(Self::Ast(Ast::load(config, weights, device, audio_frames)?))
            }
            Some("vit") | None => Ok(Self::Vit(Vit::load(config, weights, device)?)),
            Some(other) => anyhow::bail!(
                "{}: model_type `{other}` is not a backbone the runner loads (vit, \
                 audio-spectrogram-transformer)",
                config.display()
            ),
        }
    }

    /// A fresh copy for one run's method to attach to.
    pub fn boxed(&self) -> Box<dyn Backbone> {
        match self {
            Self::Vit(m) => Box::new(m.clone()),
            Self::Ast(m) => Box::new(m.clone()),
        }
    }

    /// Whether the training-mode forward pass equals the evaluation-mode one (no dropout), so a
    /// frozen backbone's features can be computed once.
    pub fn deterministic_in_training(&self) -> bool {
        let (hidden, attention) = match self {
            Self::Vit(m) => (
                m.config().hidden_dropout_prob,
                m.config().attention_probs_dropout_prob,
            ),
            Self::Ast(m) => (
                m.config().hidden_dropout_prob,
                m.config().attention_probs_dropout_prob,
            ),
        };
        hidden == 0.0 && attention == 0.0
    }

    /// The sizes methods are checked against.
    pub fn info(&self) -> BackboneInfo {
        self.boxed_ref().info().clone()
    }

    fn boxed_ref(&self) -> &dyn Backbone {
        match self {
            Self::Vit(m) => m,
            Self::Ast(m) => m,
        }
    }

    /// The family name, for errors.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Vit(_) => "vit",
            Self::Ast(_) => "ast",
        }
    }

    /// Checks that the suite feeds this backbone the input it takes: images for a ViT, filter banks
    /// with the model's mel bins for an AST.
    pub fn check_input(&self, spec: &RunSpec) -> anyhow::Result<()> {
        match (self, &spec.audio) {
            (Self::Vit(_), None) | (Self::Ast(_), Some(_)) => {}
            (Self::Vit(_), Some(_)) => anyhow::bail!(
                "suite `{}` has audio input but its backbone is a ViT; use an AST checkpoint",
                spec.suite
            ),
            (Self::Ast(_), None) => anyhow::bail!(
                "suite `{}` has image input but its backbone is an AST; use an image backbone",
                spec.suite
            ),
        }
        if let (Self::Ast(m), Some(audio)) = (self, &spec.audio) {
            anyhow::ensure!(
                m.config().num_mel_bins == audio.num_mel_bins,
                "suite `{}` computes {} mel bins but the AST takes {}",
                spec.suite,
                audio.num_mel_bins,
                m.config().num_mel_bins
            );
        }
        Ok(())
    }
}

/// A loaded backbone and the name adapters record as their base model.
pub struct LoadedBackbone {
    pub model: BackboneModel,
    pub name: String,
}

/// Loads `spec`: an embedded demo backbone (pretrained on first use), a local folder or a hub id.
/// `audio_frames`: the suite's input frames, for an AST.
pub fn load_backbone(
    spec: &BackboneSpec,
    paths: &Paths,
    device: &Device,
    quiet: bool,
    audio_frames: Option<usize>,
) -> anyhow::Result<LoadedBackbone> {
    let (files, name) = if spec.checkpoint == demo::DEMO_CHECKPOINT {
        (
            demo::ensure_demo_backbone(paths, quiet)?,
            demo::DEMO_REPO_ID.to_string(),
        )
    } else if spec.checkpoint == demo_audio::DEMO_AUDIO_CHECKPOINT {
        (
            demo_audio::ensure_demo_ast(paths, quiet)?,
            demo_audio::DEMO_AUDIO_REPO_ID.to_string(),
        )
    } else {
        (
            resolve_checkpoint(
                &spec.checkpoint,
                spec.revision.as_deref(),
                &hub_caches(paths),
            )?,
            spec.checkpoint.clone(),
        )
    };
    let model = BackboneModel::from_config(&files.config, &files.weights, device, audio_frames)?;
    Ok(LoadedBackbone { model, name })
}
