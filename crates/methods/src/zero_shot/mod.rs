//! No adaptation: the pretrained model as it is, the zero-shot row of a generative study (the
//! music study's unadapted MusicGen prompted with the target style). It trains nothing; the
//! music-generation kind scores such a run without training. Classification needs a trained
//! head, which is `linear` (the linear probe), so other backbones refuse it.

use peftbench_backbones::musicgen::MUSICGEN_FAMILY;
use peftbench_backbones::{Backbone, BackboneInfo};
use peftbench_core::{NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use crate::full::Unfrozen;
use crate::{parse_config, Adaptation, Method, MethodInfo};

/// No hyper-parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroShotConfig {}

pub struct ZeroShot;

impl Method for ZeroShot {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "zero-shot",
            summary: "No adaptation: the pretrained generative model scored as it is (music suites' unadapted baseline)",
            paper: "Standard baseline (e.g. the unadapted MusicGen of Mehta et al., 2025, arXiv:2506.21298)",
            params: &[],
        }
    }

    fn backbone_families(&self) -> Option<&'static [&'static str]> {
        Some(&[MUSICGEN_FAMILY])
    }

    fn validate(&self, params: &serde_json::Value) -> Result<(), String> {
        parse_config::<ZeroShotConfig>("zero-shot", params).map(|_| ())
    }

    fn check_backbone(
        &self,
        _params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> Result<(), String> {
        if info.family == MUSICGEN_FAMILY {
            Ok(())
        } else {
            Err(format!(
                "method `zero-shot` scores a generative model as it is; a {} backbone classifies through a trained head (use `linear`, the linear probe)",
                info.family
            ))
        }
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        _init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        self.check_backbone(params, backbone.info())
            .map_err(anyhow::Error::msg)?;
        let config: ZeroShotConfig =
            parse_config("zero-shot", params).map_err(anyhow::Error::msg)?;
        Ok(Box::new(Unfrozen {
            method: "zero-shot",
            config,
            params: NamedVars::default(),
        }))
    }
}
