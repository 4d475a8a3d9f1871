//! Convolutional adapter: a bottleneck adapter with a depthwise convolution over the token
//! sequence, parallel to each MLP, as studied for audio and music transformers (Ding & Lerch,
//! 2024, "Parameter-Efficient Transfer Learning for Music Foundation Models", arXiv:2411.19371;
//! the Conformer-style convolutional adapter of Cappellazzo et al., 2024, "Parameter-Efficient
//! Transfer Learning of Audio Spectrogram Transformers", MLSP, arXiv:2312.03694).
//!
//! `mlp(x) + s · up(silu(dwconv(down(x))))`, the branch reading the same residual stream as the
//! MLP. The convolution mixes neighbouring tokens (on ViT, the CLS token and the patches in
//! raster order; on spectrogram transformers, neighbouring time-frequency patches), which a
//! token-wise adapter cannot. The Conformer module's batch norm is left out: its running
//! statistics would make train and eval behave differently on few-shot data. The up-projection
//! starts at zero, so the model is unchanged at initialisation.

mod config;
mod layer;

pub use config::ConvAdapterConfig;
pub use layer::ConvBranch;

use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_backbones::{Backbone, BackboneInfo, Hooks, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

pub struct ConvAdapter;

pub struct ConvAdapterAdaptation {
    config: ConvAdapterConfig,
    /// One branch per block.
    branches: Vec<ConvBranch>,
    params: NamedVars,
}

impl ConvAdapterAdaptation {
    pub fn new(
        config: ConvAdapterConfig,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> Result<Self> {
        let hidden = backbone.info().hidden_size;
        let mut branches = Vec::new();
        let mut params = NamedVars::default();
        for layer in 0..backbone.info().num_layers {
            let prefix = format!("{}.conv_adapter", backbone.block_path(layer));
            let branch = ConvBranch::new(
                hidden,
                config.bottleneck,
                config.kernel_size,
                &init.fork(&crate::init_stream(layer, "conv_adapter")),
            )?;
            branch.push_params(&prefix, &mut params);
            branches.push(branch);
        }
        Ok(Self {
            config,
            branches,
            params,
        })
    }
}

impl Hooks for ConvAdapterAdaptation {
    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        if kind != Sublayer::Mlp {
            return Ok(output);
        }
        let branch = self.branches[layer].forward(input)?;
        &output + (branch * self.config.scale)?
    }
}

impl Adaptation for ConvAdapterAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(
            dir,
            "conv-adapter",
            &self.config,
            base_model,
            &self.params,
            head,
        )
    }
}

impl Method for ConvAdapter {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "conv-adapter",
            summary: "Convolutional adapter: bottleneck with a depthwise conv over tokens, parallel to each MLP",
            paper: "Ding & Lerch, PETL for Music Foundation Models, 2024 (arXiv:2411.19371); Cappellazzo et al., MLSP 2024 (arXiv:2312.03694)",
            params: &[
                ParamDoc { name: "bottleneck", default: "8", doc: "channels of the bottleneck" },
                ParamDoc { name: "kernel_size", default: "3", doc: "taps of the depthwise conv over tokens (odd)" },
                ParamDoc { name: "scale", default: "1.0", doc: "factor on the branch output" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<ConvAdapterConfig>("conv-adapter", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> std::result::Result<(), String> {
        let config = parse_config::<ConvAdapterConfig>("conv-adapter", params)?;
        let hidden = info.hidden_size;
        if config.bottleneck > hidden {
            return Err(format!("method `conv-adapter`: field `bottleneck` is {}; allowed range: 1 to the hidden size {hidden}", config.bottleneck));
        }
        Ok(())
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: ConvAdapterConfig =
            parse_config("conv-adapter", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(ConvAdapterAdaptation::new(
            config, backbone, init,
        )?))
    }
}
