//! Poly (Polytropon) and MHR: multi-task LoRA skills mixed per task by a learned router (Ponti et
//! al., 2023, "Combining Parameter-efficient Modules for Task-level Generalisation", EACL; Caccia
//! et al., 2023, "Multi-Head Adapter Routing for Cross-Task Generalization", NeurIPS), as Hugging
//! Face PEFT's `poly` tuner computes and saves them.
//!
//! Every adapted projection holds `n_skills` LoRA pairs of rank `r` and its own router, logits
//! `[n_tasks, n_splits * n_skills]`. An example of task `t` gets per split the weights
//! `z / (sum(z) + 1e-12)`, `z` = sigmoid of `t`'s logits in evaluation or a relaxed Bernoulli
//! sample of them (temperature 1) in training, and the projection `W x + b + (1 / r) x A_t B_t`
//! with `A_t = sum_k w_k A_k` per split. MHR (`n_splits > 1`) cuts every skill into heads along
//! its input and output widths, each head routed on its own; Poly is the one-split case. Both are
//! one implementation under two registry names: `poly` (PEFT's defaults, one split) and `mhr`
//! (more than one split, [`config::MHR_DEFAULT_SPLITS`] by default); PEFT saves both as
//! `peft_type: POLY` with `poly_type: "poly"`, and an adapter loads as `mhr` when its
//! `n_splits` is above 1.
//!
//! Single-task data (no task ids) is task 0. [`Transfer`](crate::Transfer) carries a trained
//! adapter to a new task: MHR-z trains a fresh routing row over frozen skills, MHR-μ averages each
//! split's skills into one pair and fine-tunes it.

pub mod config;
pub mod layer;
mod model;

pub use config::PolyConfig;
pub use layer::PolyLayer;
pub use model::PolyAdaptation;

use peftbench_backbones::{Backbone, BackboneInfo};
use peftbench_core::SeededInit;

use crate::{Adaptation, Method, MethodInfo, ParamDoc};

/// Registry name of one-split routing (Polytropon).
pub const POLY_NAME: &str = "poly";
/// Registry name of multi-head routing.
pub const MHR_NAME: &str = "mhr";

/// Poly or MHR: the same method, told apart by the default and allowed range of `n_splits`.
pub struct PolyMethod {
    name: &'static str,
}

pub const POLY: PolyMethod = PolyMethod { name: POLY_NAME };
pub const MHR: PolyMethod = PolyMethod { name: MHR_NAME };

macro_rules! params {
    ($splits_default:expr, $splits_doc:expr) => {
        &[
            ParamDoc {
                name: "r",
                default: "8",
                doc: "rank of every skill (LoRA pair); the update is scaled 1/r as PEFT's",
            },
            ParamDoc {
                name: "n_tasks",
                default: "1",
                doc: "tasks with a routing row each; single-task data is task 0",
            },
            ParamDoc {
                name: "n_skills",
                default: "4",
                doc: "skills (LoRA pairs) per adapted projection, mixed per task",
            },
            ParamDoc {
                name: "n_splits",
                default: $splits_default,
                doc: $splits_doc,
            },
            ParamDoc {
                name: "poly_type",
                default: "poly",
                doc: "router type; PEFT has only `poly` (learned logits per task)",
            },
            ParamDoc {
                name: "target_modules",
                default: "[query, value]",
                doc: "projections to adapt: query, key, value, attention_output, fc1, fc2; or a preset qv, qkv, all-linear",
            },
            ParamDoc {
                name: "init_weights",
                default: "true",
                doc: "B starts at zero (identity at initialisation); false draws it Kaiming-uniform",
            },
            ParamDoc {
                name: "router_lr_multiplier",
                default: "100",
                doc: "learning rate of the routing logits relative to the recipe's (mttl: 0.1 vs 1e-3)",
            },
        ]
    };
}

const POLY_PARAMS: &[ParamDoc] = params!(
    "1",
    "heads per skill along input/output widths, routed separately; 1 = Poly, more = MHR (method `mhr`)"
);
const MHR_PARAMS: &[ParamDoc] = params!(
    "8",
    "heads per skill along input/output widths, routed separately: 2 or more, dividing every adapted width"
);

impl Method for PolyMethod {
    fn info(&self) -> MethodInfo {
        if self.name == MHR_NAME {
            MethodInfo {
                name: MHR_NAME,
                summary: "MHR: Poly's LoRA skills cut into n_splits heads, each head routed per task",
                paper: "Caccia et al., Multi-Head Adapter Routing for Cross-Task Generalization, NeurIPS 2023 (arXiv:2211.03831)",
                params: MHR_PARAMS,
            }
        } else {
            MethodInfo {
                name: POLY_NAME,
                summary: "Poly (Polytropon): per task, a learned mixture of n_skills LoRA skills on chosen projections",
                paper: "Ponti et al., Combining Parameter-efficient Modules for Task-level Generalisation, EACL 2023 (arXiv:2202.13914)",
                params: POLY_PARAMS,
            }
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        PolyConfig::parse(self.name, params)?.check(self.name)
    }

    /// MHR-z (a new routing row over frozen skills) and MHR-μ (the skills' average, fine-tuned).
    fn transfers(&self) -> &'static [crate::Transfer] {
        &[crate::Transfer::Routing, crate::Transfer::AverageSkills]
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> Result<(), String> {
        PolyConfig::parse(self.name, params)?.check_widths(self.name, info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config = PolyConfig::parse(self.name, params).map_err(anyhow::Error::msg)?;
        config.check(self.name).map_err(anyhow::Error::msg)?;
        Ok(Box::new(PolyAdaptation::new(config, backbone, init)?))
    }
}

#[cfg(test)]
mod tests;
