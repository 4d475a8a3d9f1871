//! MAD-X: language adapters, invertible adapters and task adapters stacked on them (Pfeiffer,
//! Vulić, Gurevych & Ruder, 2020, "MAD-X: An Adapter-Based Framework for Multi-Task Cross-Lingual
//! Transfer", EMNLP, arXiv:2005.00052).
//!
//! Each block's MLP output goes through the language adapter and then the task adapter (the
//! `Stack` composition: `y₁ = o + L(o)`, `y₂ = y₁ + T(y₁)`); the token embeddings go through the
//! invertible adapter ([`InvertibleAdapter`]). MAD-X trains language and invertible adapters
//! first (masked language modelling in the paper), freezes them and trains the task adapter on
//! top; at inference the language adapter is swapped for the target language's
//! ([`MadxAdaptation::swap_language_adapter`]). Here the `language` phase trains them on the
//! task data unless `language_adapter` names a trained folder to reuse (suites with
//! `language_adapters` train one per language by masked language modelling); the `task` phase
//! then trains the task adapter with the language side frozen.
//!
//! The language side can also be a LoRA language adapter (`language_module: lora`, on query and
//! value) and the invertible adapter can be left out (`invertible: false`): the sequential
//! bottleneck, invertible bottleneck and LoRA language adapters compared for low-resource
//! languages.

mod config;
mod invertible;

pub use config::{LanguageModule, MadxConfig};
pub use invertible::InvertibleAdapter;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::adapter::{AdapterActivation, Bottleneck};
use crate::lora::LoraLayer;
use crate::projections::ProjectionAdapters;
use crate::{
    parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc, Phase,
};

pub struct Madx;

/// The file holding the language side (language + invertible adapters) of a saved MAD-X adapter.
pub const LANGUAGE_ADAPTER_FILE: &str = "language_adapter.safetensors";

pub struct MadxAdaptation {
    config: MadxConfig,
    invertible: Option<InvertibleAdapter>,
    /// Bottleneck language adapters (`language_module: bottleneck`).
    language: BTreeMap<usize, Bottleneck>,
    /// LoRA language adapters (`language_module: lora`).
    language_lora: Option<ProjectionAdapters<LoraLayer>>,
    task: BTreeMap<usize, Bottleneck>,
    language_params: NamedVars,
    task_params: NamedVars,
    /// What the current phase trains.
    trainable: NamedVars,
}

impl MadxAdaptation {
    pub fn new(
        config: MadxConfig,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        let hidden = backbone.info().hidden_size;
        let (lang_width, task_width, inv_width) =
            config.widths(hidden).map_err(anyhow::Error::msg)?;
        let mut language_params = NamedVars::default();
        let invertible = if config.invertible {
            let adapter = InvertibleAdapter::new(hidden, inv_width, &init.fork("invertible"))?;
            adapter.push_params("invertible_adapter", &mut language_params);
            Some(adapter)
        } else {
            None
        };
        let language_lora = match config.language_module {
            LanguageModule::Bottleneck => None,
            LanguageModule::Lora => {
                let r = config.language_lora_r;
                Some(ProjectionAdapters::build(
                    backbone,
                    &[LinearSite::Query, LinearSite::Value],
                    &init.fork("language_lora"),
                    &mut language_params,
                    |_, base, init| {
                        let (out, inp) = base.weight.dims2()?;
                        let lora = LoraLayer::new(inp, out, r, 2.0, 0.0, init)?;
                        let vars = vec![
                            ("language_lora_A.weight", lora.a.clone()),
                            ("language_lora_B.weight", lora.b.clone()),
                        ];
                        Ok((lora, vars))
                    },
                )?)
            }
        };
        let mut language = BTreeMap::new();
        let mut task = BTreeMap::new();
        let mut task_params = NamedVars::default();
        for layer in 0..backbone.info().num_layers {
            let prefix = format!("{}.output_adapter", backbone.block_path(layer));
            let stream = crate::init_stream(layer, "output_adapter");
            if config.language_module == LanguageModule::Bottleneck {
                let l = Bottleneck::new(
                    hidden,
                    lang_width,
                    AdapterActivation::Relu,
                    &init.fork(&format!("{stream}.language")),
                )?;
                l.push_params(&format!("{prefix}.language"), &mut language_params);
                language.insert(layer, l);
            }
            let t = Bottleneck::new(
                hidden,
                task_width,
                AdapterActivation::Relu,
                &init.fork(&format!("{stream}.task")),
            )?;
            t.push_params(&format!("{prefix}.task"), &mut task_params);
            task.insert(layer, t);
        }
        let mut this = Self {
            trainable: NamedVars::default(),
            config,
            invertible,
            language,
            language_lora,
            task,
            language_params,
            task_params,
        };
        match this.config.language_adapter.clone() {
            Some(dir) => {
                this.swap_language_adapter(Path::new(&dir))?;
                this.trainable = this.task_params.clone();
            }
            None => this.trainable = this.language_params.clone(),
        }
        Ok(this)
    }

    /// The invertible adapter on the token embeddings (absent with `invertible: false`).
    pub fn invertible(&self) -> Option<&InvertibleAdapter> {
        self.invertible.as_ref()
    }

    /// The language and invertible adapters' tensors, by name.
    pub fn language_tensors(&self) -> BTreeMap<String, Tensor> {
        self.language_params.tensors()
    }

    /// Replaces the language side with the one saved in `dir` (`language_adapter.safetensors`),
    /// e.g. the target language's at zero-shot transfer. The task adapter is untouched.
    pub fn swap_language_adapter(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(LANGUAGE_ADAPTER_FILE);
        let tensors =
            candle_core::safetensors::load(&path, &candle_core::Device::Cpu).map_err(|e| {
                anyhow::anyhow!("method `madx`: language_adapter {}: {e}", path.display())
            })?;
        self.language_params
            .load(&tensors.into_iter().collect())
            .map_err(|e| anyhow::anyhow!("method `madx`: language_adapter {}: {e}", path.display()))
    }
}

impl Hooks for MadxAdaptation {
    fn tokens(&self, layer: usize, tokens: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        match (&self.invertible, layer) {
            (Some(invertible), 0) => invertible.forward(&tokens),
            _ => Ok(tokens),
        }
    }

    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match &self.language_lora {
            Some(lora) => lora.linear(layer, site, x, base, |l| l.forward(x, base, ctx)),
            None => base.forward(x),
        }
    }

    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        _input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match (kind, self.task.get(&layer)) {
            (Sublayer::Mlp, Some(t)) => {
                let y = match self.language.get(&layer) {
                    Some(l) => (&output + l.forward(&output)?)?,
                    None => output,
                };
                &y + t.forward(&y)?
            }
            _ => Ok(output),
        }
    }
}

impl Adaptation for MadxAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    /// Every added scalar, language side included (it is part of the model at inference).
    fn added_params(&self) -> usize {
        self.language_params.count() + self.task_params.count()
    }

    fn phases(&self) -> Vec<Phase> {
        if self.config.language_adapter.is_some() {
            return Vec::new();
        }
        vec![
            Phase {
                name: "language",
                epochs: self.config.language_epochs,
                lr: None,
            },
            Phase {
                name: "task",
                epochs: None,
                lr: None,
            },
        ]
    }

    fn enter_phase(&mut self, index: usize) -> anyhow::Result<()> {
        self.trainable = if index == 0 {
            self.language_params.clone()
        } else {
            self.task_params.clone()
        };
        Ok(())
    }

    fn swap_language_module(&self, dir: &Path) -> anyhow::Result<()> {
        self.swap_language_adapter(dir)
    }

    /// MAD-X applies the inverse of the invertible adapter before the output embeddings, so a
    /// masked-LM head tied to the input embeddings sees states in the embeddings' space.
    fn before_output_embeddings(&self, states: Tensor) -> Result<Tensor> {
        match &self.invertible {
            Some(invertible) => invertible.inverse(&states),
            None => Ok(states),
        }
    }

    /// A saved MAD-X adapter is a trained task adapter (the adapter file) over the language side
    /// it was trained with (`language_adapter.safetensors` beside it): the language side is read
    /// from the folder, and the task adapter is what the file's tensors fill.
    fn restore(
        &mut self,
        dir: &Path,
        _tensors: &BTreeMap<String, Tensor>,
    ) -> anyhow::Result<crate::Restored> {
        self.swap_language_adapter(dir)?;
        self.trainable = self.task_params.clone();
        Ok(crate::Restored::default())
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = peft_format::write_native(
            dir,
            "madx",
            &self.config,
            base_model,
            &self.task_params,
            head,
        )?;
        let language: HashMap<String, Tensor> = self.language_tensors().into_iter().collect();
        let path = dir.join(LANGUAGE_ADAPTER_FILE);
        candle_core::safetensors::save(&language, &path)?;
        files.push(path);
        Ok(files)
    }
}

impl Method for Madx {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "madx",
            summary: "MAD-X: invertible adapter on embeddings + language adapter with a task adapter stacked on it",
            paper: "Pfeiffer et al., MAD-X, EMNLP 2020 (arXiv:2005.00052)",
            params: &[
                ParamDoc { name: "language_reduction", default: "2", doc: "hidden / bottleneck of the language adapters" },
                ParamDoc { name: "task_reduction", default: "16", doc: "hidden / bottleneck of the task adapters" },
                ParamDoc { name: "invertible_reduction", default: "2", doc: "reduction of the invertible adapter's coupling nets" },
                ParamDoc { name: "language_adapter", default: "null", doc: "trained MAD-X folder whose language side is reused, frozen" },
                ParamDoc { name: "language_epochs", default: "null", doc: "epochs of the language phase (null = recipe)" },
                ParamDoc { name: "language_module", default: "bottleneck", doc: "language adapter: bottleneck (after the MLP) or lora (query, value)" },
                ParamDoc { name: "language_lora_r", default: "8", doc: "rank of a lora language adapter (alpha 2r)" },
                ParamDoc { name: "invertible", default: "true", doc: "invertible adapter on the token embeddings" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<MadxConfig>("madx", params)?.check()
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: MadxConfig = parse_config("madx", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(MadxAdaptation::new(config, backbone, init)?))
    }
}
