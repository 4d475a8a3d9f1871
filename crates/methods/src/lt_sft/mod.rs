//! LT-SFT: Lottery-Ticket Sparse Fine-Tuning (Ansell, Ponti, Korhonen & Vulić, 2022, "Composable
//! Sparse Fine-Tuning for Cross-Lingual Transfer", ACL, arXiv:2110.07560).
//!
//! Two phases (see the crate docs on phases): (1) `full` fine-tunes the adapted weights densely;
//! (2) `sparse` keeps the `K` entries that changed most (globally, by |θ₁ − θ₀|), resets every
//! weight to its pretrained value and retrains only those `K` entries. The result is a sparse
//! difference ([`SparseDiff`]), stored sparsely (`sparse_diff.safetensors`: indices + values);
//! differences compose by addition and are removed by subtraction. The head is trained in both
//! phases and kept across them (it is not part of the sparse difference).

mod config;
mod diff;

pub use config::LtSftConfig;
pub use diff::{SparseDiff, SparseEntries};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite};
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};

use crate::shira::{to_f64_vec, top_k_positions, SparseDelta};
use crate::{
    parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc, Phase,
};

pub struct LtSft;

/// The state of one adapted weight.
enum Update {
    /// Phase 1: a dense trainable difference `[out, in]`.
    Dense(Var),
    /// Phase 2: the kept entries.
    Sparse(SparseDelta),
}

pub struct LtSftAdaptation {
    config: LtSftConfig,
    updates: BTreeMap<(usize, LinearSite), Update>,
    paths: BTreeMap<(usize, LinearSite), String>,
    params: NamedVars,
}

impl LtSftAdaptation {
    pub fn new(config: LtSftConfig, backbone: &dyn Backbone) -> Result<Self> {
        let mut updates = BTreeMap::new();
        let mut paths = BTreeMap::new();
        for layer in 0..backbone.info().num_layers {
            for &site in &config.target_modules {
                let w = &backbone.linear(layer, site).weight;
                updates.insert(
                    (layer, site),
                    Update::Dense(Var::zeros(w.shape(), w.dtype(), w.device())?),
                );
                paths.insert((layer, site), backbone.module_path(layer, site));
            }
        }
        let mut this = Self {
            config,
            updates,
            paths,
            params: NamedVars::default(),
        };
        this.collect_params();
        Ok(this)
    }

    fn collect_params(&mut self) {
        self.params = NamedVars::default();
        for (key, update) in &self.updates {
            let var = match update {
                Update::Dense(v) => v,
                Update::Sparse(d) => &d.values,
            };
            // A weight with no kept entry has nothing to train (and an optimizer cannot update an
            // empty variable).
            if var.elem_count() > 0 {
                self.params
                    .push(format!("{}.weight", self.paths[key]), var.clone());
            }
        }
    }

    /// Phase 1 -> 2: keeps the `K` largest changes over all adapted weights and resets to zero.
    fn sparsify(&mut self) -> anyhow::Result<()> {
        let mut changes = Vec::new();
        let mut sizes = Vec::new();
        for update in self.updates.values() {
            let Update::Dense(v) = update else {
                return Ok(());
            };
            let values = to_f64_vec(v.as_tensor())?;
            sizes.push(values.len());
            changes.extend(values.into_iter().map(f64::abs));
        }
        let keep = ((self.config.density * changes.len() as f64).round() as usize).max(1);
        let kept = top_k_positions(&changes, keep);
        let mut start = 0u32;
        let mut cursor = 0;
        for (update, size) in self.updates.values_mut().zip(sizes) {
            let end = start + size as u32;
            let begin = cursor;
            while cursor < kept.len() && kept[cursor] < end {
                cursor += 1;
            }
            let local: Vec<u32> = kept[begin..cursor].iter().map(|i| i - start).collect();
            let Update::Dense(v) = &*update else {
                unreachable!("checked above")
            };
            let (out, inp) = v.dims2()?;
            *update = Update::Sparse(SparseDelta::zeros((out, inp), &local, v.as_tensor())?);
            start = end;
        }
        self.collect_params();
        Ok(())
    }

    /// The trained sparse difference (after phase 2; in phase 1 the dense difference's non-zeros).
    pub fn sparse_diff(&self) -> Result<SparseDiff> {
        let mut diff = SparseDiff::default();
        for (key, update) in &self.updates {
            let (shape, indices, values, dtype) = match update {
                Update::Sparse(d) => (
                    vec![d.shape.0, d.shape.1],
                    d.indices.to_vec1::<u32>()?,
                    to_f64_vec(d.values.as_tensor())?,
                    d.values.dtype(),
                ),
                Update::Dense(v) => {
                    let all = to_f64_vec(v.as_tensor())?;
                    let indices: Vec<u32> = (0..all.len() as u32)
                        .filter(|&i| all[i as usize] != 0.0)
                        .collect();
                    let values = indices.iter().map(|&i| all[i as usize]).collect();
                    (v.dims().to_vec(), indices, values, v.dtype())
                }
            };
            diff.dtype = Some(dtype);
            diff.tensors.insert(
                format!("{}.weight", self.paths[key]),
                SparseEntries {
                    shape,
                    indices,
                    values,
                },
            );
        }
        Ok(diff)
    }
}

impl Hooks for LtSftAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match self.updates.get(&(layer, site)) {
            Some(Update::Dense(v)) => {
                ops::linear(x, &(&base.weight + v.as_tensor())?, base.bias.as_ref())
            }
            Some(Update::Sparse(d)) => d.forward(x, base),
            None => base.forward(x),
        }
    }
}

impl Adaptation for LtSftAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn phases(&self) -> Vec<Phase> {
        vec![
            Phase {
                name: "full",
                epochs: self.config.full_epochs,
                lr: self.config.full_lr,
            },
            Phase {
                name: "sparse",
                epochs: self.config.sparse_epochs,
                lr: None,
            },
        ]
    }

    fn enter_phase(&mut self, index: usize) -> anyhow::Result<()> {
        if index == 1 {
            self.sparsify()?;
        }
        Ok(())
    }

    /// A saved LT-SFT adapter is its sparse difference (`sparse_diff.safetensors`): the kept
    /// entries become the sparse updates of the second phase, with their trained values.
    fn restore(
        &mut self,
        dir: &Path,
        _tensors: &BTreeMap<String, Tensor>,
    ) -> anyhow::Result<crate::Restored> {
        let path = dir.join(SPARSE_DIFF_FILE);
        let diff = SparseDiff::load(&path)?;
        let mut set = Vec::new();
        for (key, update) in self.updates.iter_mut() {
            let name = format!("{}.weight", self.paths[key]);
            let entries = diff
                .tensors
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("{}: no entries for `{name}`", path.display()))?;
            let like = match update {
                Update::Dense(v) => v.as_tensor().clone(),
                Update::Sparse(d) => d.values.as_tensor().clone(),
            };
            let (out, inp) = match entries.shape[..] {
                [out, inp] => (out, inp),
                _ => anyhow::bail!(
                    "{}: `{name}` has shape {:?}; expected a matrix",
                    path.display(),
                    entries.shape
                ),
            };
            let delta = SparseDelta::zeros((out, inp), &entries.indices, &like)?;
            let n = entries.values.len();
            delta.values.set(
                &Tensor::from_vec(entries.values.clone(), n, like.device())?
                    .to_dtype(like.dtype())?,
            )?;
            *update = Update::Sparse(delta);
            if n > 0 {
                set.push(name);
            }
        }
        self.collect_params();
        Ok(crate::Restored {
            used: Vec::new(),
            set,
        })
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let diff_path = dir.join(SPARSE_DIFF_FILE);
        self.sparse_diff()?.save(&diff_path)?;
        let mut files = peft_format::write_native(
            dir,
            "lt-sft",
            &self.config,
            base_model,
            &NamedVars::default(),
            head,
        )?;
        files.push(diff_path);
        Ok(files)
    }
}

/// The sparse difference's file in an LT-SFT adapter folder.
pub const SPARSE_DIFF_FILE: &str = "sparse_diff.safetensors";

impl Method for LtSft {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "lt-sft",
            summary: "LT-SFT: full fine-tune, keep the top-K changed weights, reset, retrain only those; composable sparse diff",
            paper: "Ansell et al., Composable Sparse Fine-Tuning for Cross-Lingual Transfer, ACL 2022 (arXiv:2110.07560)",
            params: &[
                ParamDoc { name: "density", default: "0.01", doc: "fraction K of the adapted weights kept, in (0, 1)" },
                ParamDoc { name: "target_modules", default: "[query, key, value, attention_output, fc1, fc2]", doc: "weights fine-tuned and sparsified" },
                ParamDoc { name: "full_epochs", default: "null", doc: "epochs of the dense phase (null = recipe)" },
                ParamDoc { name: "full_lr", default: "null", doc: "learning rate of the dense phase (null = recipe)" },
                ParamDoc { name: "sparse_epochs", default: "null", doc: "epochs of the sparse phase (null = recipe)" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<LtSftConfig>("lt-sft", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &peftbench_backbones::BackboneInfo,
    ) -> std::result::Result<(), String> {
        let config = parse_config::<LtSftConfig>("lt-sft", params)?;
        crate::check_sites("lt-sft", &config.target_modules, info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        _init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: LtSftConfig = parse_config("lt-sft", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(LtSftAdaptation::new(config, backbone)?))
    }
}
