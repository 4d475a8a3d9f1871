//! The study's three adapter kinds as registry methods (`music-linear`, `music-conv`,
//! `music-transformer`), each at any of the three placements, sized by width or by a target
//! parameter count. They attach to MusicGen only ([`MUSICGEN_FAMILY`]) and save in peftbench's
//! own format (PEFT has no such adapters).

use std::path::{Path, PathBuf};

use peftbench_backbones::musicgen::MUSICGEN_FAMILY;
use peftbench_backbones::{Backbone, BackboneInfo};
use peftbench_core::{NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use super::{width_for_params, AdapterKind, MusicAdapterConfig, MusicAdapters, Placement};
use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

/// One kind of the study's adapters as a method.
pub struct MusicAdapterMethod {
    kind: AdapterKind,
    name: &'static str,
    summary: &'static str,
}

pub static MUSIC_LINEAR: MusicAdapterMethod = MusicAdapterMethod {
    kind: AdapterKind::Linear,
    name: "music-linear",
    summary: "Linear bottleneck adapter (down, ReLU, up) for MusicGen, on the text conditioning, in every decoder block or stacked after the decoder",
};

pub static MUSIC_CONV: MusicAdapterMethod = MusicAdapterMethod {
    kind: AdapterKind::Conv,
    name: "music-conv",
    summary: "Convolutional adapter for MusicGen: dilated causal 1-D convolutions with squeeze-and-excitation in a bottleneck (local ornamentation)",
};

pub static MUSIC_TRANSFORMER: MusicAdapterMethod = MusicAdapterMethod {
    kind: AdapterKind::Transformer,
    name: "music-transformer",
    summary: "Transformer adapter for MusicGen: a small causal pre-norm transformer block in a bottleneck (long-range structure)",
};

const PAPER: &str = "Mehta, Chauhan, Choudhury, Exploring Adapter Design Tradeoffs for Low Resource Music Generation, 2025 (arXiv:2506.21298)";

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "placement",
        default: "block",
        doc: "conditioning (on the text states), block (parallel to every decoder MLP) or post (a stack before the heads)",
    },
    ParamDoc {
        name: "width",
        default: "16",
        doc: "bottleneck width of every adapter (or give `params`)",
    },
    ParamDoc {
        name: "params",
        default: "none",
        doc: "target parameter count: the width whose count comes closest (the study's 2/8/20/40/70M)",
    },
    ParamDoc {
        name: "depth",
        default: "1",
        doc: "adapters stacked at conditioning and post (1 at block)",
    },
];

/// A method entry's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MusicAdapterParams {
    #[serde(default = "block")]
    placement: Placement,
    #[serde(default)]
    width: Option<usize>,
    #[serde(default)]
    params: Option<usize>,
    #[serde(default = "one")]
    depth: usize,
}

fn block() -> Placement {
    Placement::Block
}

fn one() -> usize {
    1
}

/// Width used when neither `width` nor `params` is given.
const DEFAULT_WIDTH: usize = 16;

impl MusicAdapterMethod {
    fn parse(&self, params: &serde_json::Value) -> Result<MusicAdapterParams, String> {
        let p: MusicAdapterParams = parse_config(self.name, params)?;
        let field = |f: &str, why: &str| format!("method `{}`: field `{f}` {why}", self.name);
        if p.width.is_some() && p.params.is_some() {
            return Err(field(
                "params",
                "and `width` both size the adapters: give one",
            ));
        }
        if p.width == Some(0) || p.params == Some(0) {
            return Err(field("width", "must be at least 1 (as must `params`)"));
        }
        if p.depth == 0 {
            return Err(field("depth", "must be at least 1"));
        }
        if p.placement == Placement::Block && p.depth != 1 {
            return Err(field(
                "depth",
                "is 1 at `placement: block` (one adapter in every decoder block); stacks are for conditioning and post",
            ));
        }
        Ok(p)
    }

    /// The configuration `params` asks for on a decoder of `info`'s sizes.
    fn config(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> Result<MusicAdapterConfig, String> {
        let p = self.parse(params)?;
        let mut config = MusicAdapterConfig {
            kind: self.kind,
            placement: p.placement,
            width: p.width.unwrap_or(DEFAULT_WIDTH),
            depth: p.depth,
        };
        if let Some(target) = p.params {
            config.width = width_for_params(&config, target, info.hidden_size, info.num_layers);
        }
        if config.width > info.hidden_size {
            return Err(format!(
                "method `{}`: field `width` is {}; allowed range: 1 to the hidden size {}",
                self.name, config.width, info.hidden_size
            ));
        }
        Ok(config)
    }
}

impl Method for MusicAdapterMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: self.name,
            summary: self.summary,
            paper: PAPER,
            params: PARAMS,
        }
    }

    fn backbone_families(&self) -> Option<&'static [&'static str]> {
        Some(&[MUSICGEN_FAMILY])
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        self.parse(params).map(|_| ())
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> Result<(), String> {
        if info.family != MUSICGEN_FAMILY {
            return Err(format!(
                "method `{}` adapts MusicGen's text conditioning, decoder blocks or heads; the {} backbone has none (use it on a music-generation suite)",
                self.name, info.family
            ));
        }
        self.config(params, info).map(|_| ())
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let info = backbone.info().clone();
        self.check_backbone(params, &info)
            .map_err(anyhow::Error::msg)?;
        let config = self.config(params, &info).map_err(anyhow::Error::msg)?;
        Ok(Box::new(MusicAdapters::new(
            config,
            info.hidden_size,
            info.num_layers,
            init,
        )?))
    }
}

impl Adaptation for MusicAdapters {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn leaves_backbone_unchanged(&self) -> bool {
        true
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let name = match self.config.kind {
            AdapterKind::Linear => MUSIC_LINEAR.name,
            AdapterKind::Conv => MUSIC_CONV.name,
            AdapterKind::Transformer => MUSIC_TRANSFORMER.name,
        };
        peft_format::write_native(dir, name, &self.config, base_model, &self.params, head)
    }
}
