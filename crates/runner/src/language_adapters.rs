//! Language modules for methods that compose one with a task module, trained per language by
//! masked language modelling on unlabelled text with the backbone's pretrained MLM head frozen:
//!
//! * MAD-X (Pfeiffer et al. 2020): the language side (language adapters and the invertible
//!   adapter, undone before the tied output embeddings). The task adapter trains over the adapter
//!   of the language the run trains on; evaluation swaps in the adapter of the language it is
//!   evaluated on.
//! * LT-SFT (Ansell et al. 2022): a sparse language difference (both LT-SFT phases, under MLM).
//!   The task difference trains on the backbone plus the training language's difference;
//!   evaluation subtracts that and adds the evaluation language's (composable sparse fine-tuning).
//!
//! Each language's module depends only on the backbone, the method and its parameters that shape
//! the language side, the suite's `language_adapters` settings, the text length and the seed, so
//! it is trained once and kept under `<results>/language-adapters/`, shared by tasks.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use peftbench_backbones::Backbone;
use peftbench_backbones::{MlmHead, TextEncoder};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_text::synthetic::review_topics;
use peftbench_data_text::TextExample;
use peftbench_methods::lt_sft::{LtSftConfig, SparseDiff, SPARSE_DIFF_FILE};
use peftbench_methods::madx::{MadxConfig, LANGUAGE_ADAPTER_FILE};
use peftbench_methods::PeftModel;
use peftbench_suite::{canonical_json, LanguageAdapterSpec, RunSpec};
use peftbench_train::{derive_seed, train, AdamWConfig, Selection, TrainConfig, TrainModel};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::backbone::BackboneModel;
use crate::data::generated_seed;
use crate::run::RunContext;

/// How each composing method's language module is trained and kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Composition {
    /// MAD-X: the language phase only; `language_adapter.safetensors`.
    Madx,
    /// LT-SFT: both phases; `sparse_diff.safetensors`.
    LtSft,
}

impl Composition {
    fn of(method: &str) -> anyhow::Result<Self> {
        match method {
            "madx" => Ok(Self::Madx),
            "lt-sft" => Ok(Self::LtSft),
            other => anyhow::bail!("method `{other}` composes no language module"),
        }
    }

    /// The file a trained language module is kept in.
    fn file(self) -> &'static str {
        match self {
            Self::Madx => LANGUAGE_ADAPTER_FILE,
            Self::LtSft => SPARSE_DIFF_FILE,
        }
    }

    /// The method configuration that shapes the language module, defaults filled in (so a
    /// default left out and written out key the same module): all of LT-SFT's; MAD-X's without
    /// what only concerns the task adapter.
    fn language_side(self, params: &Value) -> anyhow::Result<Value> {
        Ok(match self {
            Self::Madx => {
                let config: MadxConfig = serde_json::from_value(params.clone())?;
                let mut side = serde_json::to_value(config)?;
                let object = side.as_object_mut().expect("a config is an object");
                for task_only in ["task_reduction", "language_adapter", "language_epochs"] {
                    object.remove(task_only);
                }
                side
            }
            Self::LtSft => {
                serde_json::to_value(serde_json::from_value::<LtSftConfig>(params.clone())?)?
            }
        })
    }
}

/// Version of the training recipe below: bump when it changes.
const RECIPE_VERSION: &str = "language-adapter-v1";

/// The masked language model: the backbone with the method attached, its final states mapped
/// back by the method (MAD-X's inverse invertible adapter) and scored by the frozen MLM head
/// against the word embeddings.
struct LanguageModelling<'a> {
    model: &'a PeftModel,
    head: &'a MlmHead,
    word_embeddings: Tensor,
}

impl TrainModel for LanguageModelling<'_> {
    fn trainable(&self) -> &NamedVars {
        self.model.trainable()
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let states = self.model.sequence_features(input, ctx)?;
        let states = self.model.adaptation().before_output_embeddings(states)?;
        self.head.forward(&states, &self.word_embeddings)
    }
}

/// Where `language`'s adapter for `spec` is kept: `<results>/language-adapters/<language>-<hash>`.
fn adapter_dir(
    spec: &RunSpec,
    composition: Composition,
    la: &LanguageAdapterSpec,
    language: &str,
    results: &Path,
) -> anyhow::Result<PathBuf> {
    let language_side = composition.language_side(&spec.params)?;
    let key = serde_json::json!({
        "version": RECIPE_VERSION,
        "backbone": spec.backbone,
        "method": spec.method,
        "language_side": language_side,
        "settings": la,
        "max_tokens": spec.text.as_ref().map(|t| t.max_tokens),
        "language": language,
        "seed": spec.seed,
    });
    let mut s = String::new();
    canonical_json(&key, &mut s);
    let hash: String = Sha256::digest(s.as_bytes())
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(results
        .join("language-adapters")
        .join(format!("{language}-{hash}")))
}

/// The unlabelled texts of `language`: generated reviews, or the suite's corpus file.
fn texts(
    spec: &RunSpec,
    la: &LanguageAdapterSpec,
    language: &str,
    data_root: Option<&Path>,
) -> anyhow::Result<Vec<TextExample>> {
    let texts: Vec<String> = match &la.corpus {
        None => review_topics(
            language,
            la.max_texts,
            generated_seed(&format!("language-adapter/{language}"), "corpus"),
        )
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no generated text in language `{language}` for its language adapter \
                     (generated languages: {})",
                peftbench_data_text::synthetic::NEGATION_LANGUAGES.join(", ")
            )
        })?
        .into_iter()
        .map(|e| e.text)
        .collect(),
        Some(template) => {
            let root = data_root.ok_or_else(|| {
                anyhow::anyhow!(
                    "task `{}`: language adapter corpora need a data root (--data-dir)",
                    spec.task.name
                )
            })?;
            let path = root.join(template.replace("{language}", language));
            anyhow::ensure!(
                path.is_file(),
                "the language adapter corpus of `{language}` is not at {} (suite section \
                 `language_adapters.corpus`: plain text, one text per line, or parquet with a \
                 `text` column)",
                path.display()
            );
            let mut all = peftbench_data_text::read_corpus(&path, "text")?;
            all.truncate(la.max_texts);
            all
        }
    };
    anyhow::ensure!(
        !texts.is_empty(),
        "no text to train the `{language}` adapter on"
    );
    Ok(texts
        .into_iter()
        .map(|text| TextExample {
            text,
            label: String::new(),
        })
        .collect())
}

/// The folder holding `language`'s module for `spec` (MAD-X's `language_adapter.safetensors`,
/// LT-SFT's `sparse_diff.safetensors`), trained now if no earlier run left it.
fn language_module(
    spec: &RunSpec,
    language: &str,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<PathBuf> {
    let la = spec
        .language_adapters
        .as_ref()
        .expect("a run with language adapters");
    let composition = Composition::of(&spec.method)?;
    let dir = adapter_dir(spec, composition, la, language, ctx.store.root())?;
    if dir.join(composition.file()).is_file() {
        return Ok(dir);
    }
    let (BackboneModel::Bert(bert), Some(head)) = (&ctx.backbone.model, &ctx.backbone.mlm_head)
    else {
        anyhow::bail!(
            "language modules are trained by masked language modelling against the checkpoint's \
             MLM head (`cls.predictions.*` or `lm_head.*`), and `{}` has none",
            ctx.backbone.name
        );
    };
    let encoder: &TextEncoder = ctx
        .text_encoder
        .expect("text suites load their backbone's tokenizer");
    let seed = derive_seed(&[
        spec.seed,
        generated_seed(&format!("language-adapter/{language}"), "training"),
    ]);
    let batches = crate::demo_text::masked_copies(
        encoder,
        &texts(spec, la, language, ctx.data_root)?,
        1,
        seed,
        ctx.device,
    )?;
    let mut params = spec.params.clone();
    // MAD-X without a saved language side starts in its language phase, where only the language
    // and invertible adapters train; LT-SFT trains both of its phases.
    let phases = match composition {
        Composition::Madx => {
            params["language_adapter"] = Value::Null;
            1
        }
        Composition::LtSft => 2,
    };
    let init = SeededInit::new(
        derive_seed(&[spec.seed, crate::run::MODEL_INIT]),
        ctx.device,
    );
    let mut model = PeftModel::new(&spec.method, &params, ctx.backbone.model.boxed(), 2, &init)?;
    let cfg = TrainConfig {
        epochs: la.epochs,
        batch_size: la.batch_size,
        eval_batch_size: la.batch_size,
        lr: la.lr,
        min_lr: 0.0,
        warmup_epochs: 0,
        warmup_lr: 0.0,
        adamw: AdamWConfig::default(),
        label_smoothing: 0.0,
        grad_clip: Some(1.0),
        drop_path: 0.0,
        seed,
        selection: Selection::Final,
    };
    for phase in 0..phases {
        model.enter_phase(phase)?;
        let lm = LanguageModelling {
            model: &model,
            head,
            word_embeddings: bert.word_embeddings().clone(),
        };
        let phase_cfg = TrainConfig {
            seed: derive_seed(&[seed, phase as u64]),
            ..cfg.clone()
        };
        if let peftbench_train::TrainOutcome::Diverged { epoch, loss, .. } =
            train(&lm, &batches, None, &phase_cfg, progress)?
        {
            anyhow::bail!(
                "the `{language}` language module diverged (loss {loss} at epoch {epoch})"
            );
        }
    }
    crate::pretraining::publish_dir(&dir, |staging| {
        model.save(staging, &ctx.backbone.name)?;
        Ok(())
    })?;
    Ok(dir)
}

/// The model a composing run trains (classification head of `num_classes`), over the language
/// module of `language`: MAD-X with that language adapter as its frozen language side, LT-SFT on
/// the backbone plus that language's difference. Other runs get the plain model.
pub(crate) fn composed_model(
    spec: &RunSpec,
    language: Option<&str>,
    num_classes: usize,
    init: &SeededInit,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<PeftModel> {
    let (params, backbone) = composed_parts(spec, language, ctx, progress)?;
    PeftModel::new(&spec.method, &params, backbone, num_classes, init)
}

/// A saved composing model loaded back: for LT-SFT the backbone carries the training language's
/// difference again (MAD-X's saved adapter names its language side itself).
pub(crate) fn composed_from_adapter(
    spec: &RunSpec,
    language: Option<&str>,
    dir: &Path,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<PeftModel> {
    let backbone = match Composition::of(&spec.method) {
        Ok(Composition::LtSft) if spec.language_adapters.is_some() => {
            composed_parts(spec, language, ctx, progress)?.1
        }
        _ => ctx.backbone.model.boxed(),
    };
    PeftModel::from_adapter(dir, backbone)
}

/// The method parameters and backbone of a run over `language`'s module.
fn composed_parts(
    spec: &RunSpec,
    language: Option<&str>,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<(Value, Box<dyn Backbone>)> {
    let mut backbone = ctx.backbone.model.boxed();
    if spec.language_adapters.is_none() {
        return Ok((spec.params.clone(), backbone));
    }
    let language = language.ok_or_else(|| {
        anyhow::anyhow!(
            "task `{}` names no `language`, so no language module can be chosen for it",
            spec.task.name
        )
    })?;
    let dir = language_module(spec, language, ctx, progress)?;
    let mut params = spec.params.clone();
    match Composition::of(&spec.method)? {
        Composition::Madx => params["language_adapter"] = Value::from(dir.display().to_string()),
        Composition::LtSft => {
            SparseDiff::load(&dir.join(SPARSE_DIFF_FILE))?.apply_to(backbone.as_mut(), 1.0)?
        }
    }
    Ok((params, backbone))
}

/// Replaces the model's language module of `source` with `target`'s when they differ (zero-shot
/// transfer), for composing runs: MAD-X swaps its language adapter, LT-SFT subtracts the source
/// language's difference from the backbone and adds the target's.
pub(crate) fn swap_for_evaluation(
    spec: &RunSpec,
    model: &mut PeftModel,
    source: Option<&str>,
    target: Option<&str>,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<()> {
    let (Some(_), Some(source), Some(target)) = (&spec.language_adapters, source, target) else {
        return Ok(());
    };
    if source == target {
        return Ok(());
    }
    let dir = language_module(spec, target, ctx, progress)?;
    match Composition::of(&spec.method)? {
        Composition::Madx => model.adaptation().swap_language_module(&dir),
        Composition::LtSft => {
            let trained = language_module(spec, source, ctx, progress)?;
            let backbone = model.backbone_mut();
            SparseDiff::load(&trained.join(SPARSE_DIFF_FILE))?.apply_to(backbone, -1.0)?;
            SparseDiff::load(&dir.join(SPARSE_DIFF_FILE))?.apply_to(backbone, 1.0)
        }
    }
}
