//! Language adapters for methods that compose a language module under a task module (MAD-X,
//! Pfeiffer et al. 2020): per language, the method's language side (language adapters and the
//! invertible adapter) is trained by masked language modelling on unlabelled text with the
//! backbone and its pretrained MLM head frozen, the invertible adapter undone before the tied
//! output embeddings. A run then trains its task adapter over the adapter of the language it
//! trains on and is evaluated with the adapter of the language it is evaluated on: zero-shot
//! cross-lingual transfer by swapping adapters.
//!
//! Each language's adapter depends only on the backbone, the method's language-side parameters,
//! the suite's `language_adapters` settings, the text length and the seed, so it is trained once
//! and kept under `<results>/language-adapters/`, shared by tasks and methods.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use peftbench_backbones::{MlmHead, TextEncoder};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_text::synthetic::review_topics;
use peftbench_data_text::TextExample;
use peftbench_methods::madx::LANGUAGE_ADAPTER_FILE;
use peftbench_methods::PeftModel;
use peftbench_suite::{canonical_json, DataFormat, LanguageAdapterSpec, RunSpec};
use peftbench_train::{derive_seed, train, AdamWConfig, Selection, TrainConfig, TrainModel};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::backbone::BackboneModel;
use crate::data::generated_seed;
use crate::run::RunContext;

/// Method parameters that shape the language side (the task adapter's do not).
const LANGUAGE_SIDE_PARAMS: [&str; 2] = ["language_reduction", "invertible_reduction"];

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
    la: &LanguageAdapterSpec,
    language: &str,
    results: &Path,
) -> PathBuf {
    let language_side: serde_json::Map<String, Value> = LANGUAGE_SIDE_PARAMS
        .iter()
        .filter_map(|k| spec.params.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let key = serde_json::json!({
        "version": RECIPE_VERSION,
        "backbone": spec.backbone,
        "method": spec.method,
        "language_side": language_side,
        "settings": la,
        "max_tokens": spec.text.as_ref().map(|t| t.max_tokens),
        "language": language,
        "seed": spec.seed,
        "data": if spec.data.format == DataFormat::Generated { "generated" } else { "corpus" },
    });
    let mut s = String::new();
    canonical_json(&key, &mut s);
    let hash: String = Sha256::digest(s.as_bytes())
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect();
    results
        .join("language-adapters")
        .join(format!("{language}-{hash}"))
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

/// The folder holding `language`'s adapter for `spec` (`language_adapter.safetensors`), trained
/// now if no earlier run left it.
pub(crate) fn language_adapter(
    spec: &RunSpec,
    language: &str,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<PathBuf> {
    let la = spec
        .language_adapters
        .as_ref()
        .expect("a run with language adapters");
    let dir = adapter_dir(spec, la, language, ctx.store.root());
    if dir.join(LANGUAGE_ADAPTER_FILE).is_file() {
        return Ok(dir);
    }
    let (BackboneModel::Bert(bert), Some(head)) = (&ctx.backbone.model, &ctx.backbone.mlm_head)
    else {
        anyhow::bail!(
            "language adapters are trained by masked language modelling against the checkpoint's \
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
    // The method without a saved language side starts in its language phase: only the language
    // and invertible adapters train.
    let mut params = spec.params.clone();
    params["language_adapter"] = Value::Null;
    let init = SeededInit::new(derive_seed(&[spec.seed, 0x006d_6f64_656c]), ctx.device);
    let mut model = PeftModel::new(&spec.method, &params, ctx.backbone.model.boxed(), 2, &init)?;
    model.enter_phase(0)?;
    let lm = LanguageModelling {
        model: &model,
        head,
        word_embeddings: bert.word_embeddings().clone(),
    };
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
    match train(&lm, &batches, None, &cfg, progress)? {
        peftbench_train::TrainOutcome::Completed(_) => {}
        peftbench_train::TrainOutcome::Diverged { epoch, loss, .. } => anyhow::bail!(
            "the `{language}` language adapter diverged (loss {loss} at epoch {epoch})"
        ),
    }
    drop(lm);
    // Written under a temporary name and renamed, so a killed run leaves nothing half-written.
    let staging = dir.with_extension(format!("staging-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    model.save(&staging, &ctx.backbone.name)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&staging, &dir)?;
    Ok(dir)
}

/// The run's method parameters with `language`'s trained adapter as its frozen language side
/// (`language_adapter`), for composing methods in suites with `language_adapters`; the
/// parameters as they are otherwise.
pub(crate) fn composed_params(
    spec: &RunSpec,
    language: Option<&str>,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<Value> {
    if spec.language_adapters.is_none() {
        return Ok(spec.params.clone());
    }
    let language = language.ok_or_else(|| {
        anyhow::anyhow!(
            "task `{}` names no `language`, so no language adapter can be chosen for it",
            spec.task.name
        )
    })?;
    let dir = language_adapter(spec, language, ctx, progress)?;
    let mut params = spec.params.clone();
    params["language_adapter"] = Value::from(dir.display().to_string());
    Ok(params)
}

/// Swaps the model's language module for `target`'s when it differs from `source` (zero-shot
/// transfer), for composing runs.
pub(crate) fn swap_for_evaluation(
    spec: &RunSpec,
    model: &PeftModel,
    source: Option<&str>,
    target: Option<&str>,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<()> {
    match (&spec.language_adapters, target) {
        (Some(_), Some(target)) if Some(target) != source => {
            let dir = language_adapter(spec, target, ctx, progress)?;
            model.adaptation().swap_language_module(&dir)
        }
        _ => Ok(()),
    }
}
