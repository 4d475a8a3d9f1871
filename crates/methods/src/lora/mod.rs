//! LoRA: low-rank updates of frozen projections (Hu et al., 2022, "LoRA: Low-Rank Adaptation of
//! Large Language Models", ICLR, arXiv:2106.09685), with the rsLoRA scaling option (Kalajdzievski,
//! 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA", arXiv:2312.03732).
//!
//! `y = W x + b + (alpha / r) * B A dropout(x)`: only the delta is scaled, never the base output;
//! `A` is Kaiming-uniform and `B` zero, so the model is unchanged at initialisation. Saved in Hugging
//! Face PEFT's format.

pub(crate) mod config;
mod layer;
mod model;

pub use config::{LoraConfig, PRESETS};
pub use layer::LoraLayer;
pub use model::LoraAdaptation;

use peftbench_backbones::{Backbone, BackboneInfo};
use peftbench_core::SeededInit;

use crate::{parse_config, Adaptation, Method, MethodInfo, ParamDoc};

pub struct Lora;

/// LoRA's documented parameters (DoRA shares them).
pub const PARAMS: &[ParamDoc] = &[
        ParamDoc {
            name: "r",
            default: "8",
            doc: "rank of the update",
        },
        ParamDoc {
            name: "alpha",
            default: "8",
            doc: "scale numerator: delta is scaled alpha/r (alpha/sqrt(r) with use_rslora)",
        },
        ParamDoc {
            name: "dropout",
            default: "0.0",
            doc: "dropout on the LoRA branch input",
        },
        ParamDoc {
            name: "target_modules",
            default: "[query, value]",
            doc: "projections to adapt: query, key, value, attention_output, fc1, fc2 (encoder-decoder models also cross_query, cross_key, cross_value, cross_attention_output); or a preset qv, qkv, all-linear",
        },
        ParamDoc {
            name: "use_rslora",
            default: "false",
            doc: "scale by alpha/sqrt(r) (rank-stabilised LoRA)",
        },
        ParamDoc {
            name: "layers_to_transform",
            default: "every block",
            doc: "blocks to adapt (0 = first), a list or one index; the frozen blocks below are computed once per example",
        },
];

impl Method for Lora {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "lora",
            summary: "LoRA: trainable low-rank update B·A on chosen projections, scaled alpha/r",
            paper: "Hu et al., LoRA, ICLR 2022 (arXiv:2106.09685); rsLoRA: Kalajdzievski 2023",
            params: PARAMS,
        }
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        parse_config::<LoraConfig>("lora", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> Result<(), String> {
        parse_config::<LoraConfig>("lora", params)?.check_widths("lora", info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: LoraConfig = parse_config("lora", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(LoraAdaptation::new(config, backbone, init)?))
    }
}
