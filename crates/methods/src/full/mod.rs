//! Full fine-tuning: every pretrained weight is trained (the reference point of every PEFT paper;
//! e.g. Jia et al., 2022, "Visual Prompt Tuning", arXiv:2203.12119, Table 1 "Full").

use std::path::{Path, PathBuf};

use candle_core::Var;
use peftbench_backbones::{Backbone, Hooks, Sublayer};
use peftbench_core::{NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo};

/// Full fine-tuning has no hyper-parameters of its own (the learning rate is in the recipe).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullConfig {}

pub struct FullFineTuning;

/// Replaces each pretrained tensor accepted by `select` with a variable; returns them by name.
pub(crate) fn unfreeze(
    backbone: &mut dyn Backbone,
    select: impl Fn(&str) -> bool,
) -> candle_core::Result<NamedVars> {
    let mut vars = NamedVars::default();
    backbone.visit_params(&mut |name, t| {
        if select(name) {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            vars.push(name, var);
        }
        Ok(())
    })?;
    Ok(vars)
}

/// An adaptation that trains pretrained tensors in place and adds no hooks.
pub(crate) struct Unfrozen<C> {
    pub(crate) method: &'static str,
    pub(crate) config: C,
    pub(crate) params: NamedVars,
}

/// No hooks: the branches are the pretrained ones, with their weights trained in place.
impl<C> Hooks for Unfrozen<C> {
    fn adapts_inside(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }

    fn adapts_output(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }
}

impl<C: Serialize> Adaptation for Unfrozen<C> {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn added_params(&self) -> usize {
        0
    }

    /// Nothing unfrozen (the linear probe): the backbone computes exactly its pretrained function.
    fn leaves_backbone_unchanged(&self) -> bool {
        self.params.is_empty()
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(
            dir,
            self.method,
            &self.config,
            base_model,
            &self.params,
            head,
        )
    }
}

impl Method for FullFineTuning {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "full",
            summary: "Full fine-tuning: trains every pretrained weight plus the head",
            paper: "Baseline of every PEFT paper (e.g. Jia et al., VPT, ECCV 2022)",
            params: &[],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        parse_config::<FullConfig>("full", params).map(|_| ())
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        _init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: FullConfig = parse_config("full", params).map_err(anyhow::Error::msg)?;
        let params = unfreeze(backbone, |_| true)?;
        Ok(Box::new(Unfrozen {
            method: "full",
            config,
            params,
        }))
    }
}
