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
//! task data unless `language_adapter` names a trained folder to reuse; the `task` phase then
//! trains the task adapter with the language side frozen.

mod config;
mod invertible;

pub use config::MadxConfig;
pub use invertible::InvertibleAdapter;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, Hooks, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::adapter::{AdapterActivation, Bottleneck};
use crate::{
    parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc, Phase,
};

pub struct Madx;

/// The file holding the language side (language + invertible adapters) of a saved MAD-X adapter.
pub const LANGUAGE_ADAPTER_FILE: &str = "language_adapter.safetensors";

pub struct MadxAdaptation {
    config: MadxConfig,
    invertible: InvertibleAdapter,
    language: BTreeMap<usize, Bottleneck>,
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
        let invertible = InvertibleAdapter::new(hidden, inv_width, &init.fork("invertible"))?;
        let mut language_params = NamedVars::default();
        invertible.push_params("invertible_adapter", &mut language_params);
        let mut language = BTreeMap::new();
        let mut task = BTreeMap::new();
        let mut task_params = NamedVars::default();
        for layer in 0..backbone.info().num_layers {
            let prefix = format!("{}.output_adapter", backbone.block_path(layer));
            let stream = crate::init_stream(layer, "output_adapter");
            let l = Bottleneck::new(
                hidden,
                lang_width,
                AdapterActivation::Relu,
                &init.fork(&format!("{stream}.language")),
            )?;
            l.push_params(&format!("{prefix}.language"), &mut language_params);
            let t = Bottleneck::new(
                hidden,
                task_width,
                AdapterActivation::Relu,
                &init.fork(&format!("{stream}.task")),
            )?;
            t.push_params(&format!("{prefix}.task"), &mut task_params);
            language.insert(layer, l);
            task.insert(layer, t);
        }
        let mut this = Self {
            trainable: NamedVars::default(),
            config,
            invertible,
            language,
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

    pub fn invertible(&self) -> &InvertibleAdapter {
        &self.invertible
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
        if layer == 0 {
            self.invertible.forward(&tokens)
        } else {
            Ok(tokens)
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
        match (kind, self.language.get(&layer), self.task.get(&layer)) {
            (Sublayer::Mlp, Some(l), Some(t)) => {
                let y = (&output + l.forward(&output)?)?;
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
        self.invertible.inverse(&states)
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
