//! The adapters of "Exploring Adapter Design Tradeoffs for Low Resource Music Generation"
//! (Mehta, Chauhan, Choudhury, 2025), for MusicGen's hook sites
//! ([`peftbench_backbones::Musicgen`]): three kinds, each at three placements.
//!
//! Kinds ([`AdapterKind`]):
//! - `linear`: a bottleneck `up(ReLU(down(x)))`;
//! - `conv`: a bottleneck with residual dilated causal convolutions over time and a causal
//!   squeeze-and-excitation gate ([`conv`]): local ornamentation (causal on the text too);
//! - `transformer`: a bottleneck with a small pre-norm transformer block ([`transformer`]):
//!   long-range structure; causal inside the decoder, bidirectional on the text.
//!
//! Placements ([`Placement`]):
//! - `conditioning`: a stack of `depth` adapters on the text states between the encoder and the
//!   decoder (the [`Hooks::conditioning`] site), each added to its input;
//! - `block`: one adapter in every decoder block, parallel to the MLP: it reads the residual
//!   stream the MLP sublayer reads, before that sublayer's norm (as AdaptFormer), and its output
//!   is added to the MLP's;
//! - `post`: a stack after the decoder's final norm, before the codebook heads.
//!
//! Every adapter's up-projection starts at zero, so the model is unchanged at initialisation.
//! Adapters that read earlier steps (convolutional and transformer ones in the decoder) keep
//! what they need of them in [`ForwardCtx::steps_so_far`] while the decoder generates from its
//! cache one step at a time (the convolutional one its bottleneck states, the transformer one
//! its keys and values): each step's output is the one teacher forcing computes, so generation
//! runs the model that was trained.
//! The study sizes adapters by absolute parameter count (2 to 70M on musicgen-small; large sizes
//! fit only as stacks): [`MusicAdapterConfig::count`] is the closed form and
//! [`width_for_params`] the width that comes closest to a target. The kinds attach to MusicGen
//! only, as the registry's `music-linear`, `music-conv` and `music-transformer` ([`method`]).

pub mod conv;
pub mod method;
pub mod transformer;

use std::collections::BTreeMap;

use candle_core::{Result, Tensor};
use peftbench_backbones::{Hooks, NormSite, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use serde::{Deserialize, Serialize};

use crate::adapter::{AdapterActivation, Bottleneck};
use conv::ConvAdapter;
use transformer::TransformerAdapter;

/// Which adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterKind {
    Linear,
    Conv,
    Transformer,
}

/// Where the adapters sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    Conditioning,
    Block,
    Post,
}

/// One configuration of the study's grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MusicAdapterConfig {
    pub kind: AdapterKind,
    pub placement: Placement,
    /// Bottleneck width of every adapter.
    pub width: usize,
    /// Adapters chained at `conditioning` and `post` (the study's stacks); 1 at `block`.
    #[serde(default = "one")]
    pub depth: usize,
}

fn one() -> usize {
    1
}

impl MusicAdapterConfig {
    /// Scalars of one adapter of this kind on states `hidden` wide.
    pub fn adapter_count(&self, hidden: usize) -> usize {
        let w = self.width;
        let ends = 2 * hidden * w + w + hidden;
        match self.kind {
            AdapterKind::Linear => ends,
            AdapterKind::Conv => {
                let squeezed = (w / conv::SE_REDUCTION).max(1);
                ends + conv::DILATIONS.len() * (conv::KERNEL * w * w + w)
                    + 2 * w * squeezed
                    + squeezed
                    + w
            }
            AdapterKind::Transformer => ends + 8 * w * w + 11 * w,
        }
    }

    /// Scalars of the whole configuration on a decoder of `layers` blocks `hidden` wide.
    pub fn count(&self, hidden: usize, layers: usize) -> usize {
        let adapters = match self.placement {
            Placement::Block => layers,
            Placement::Conditioning | Placement::Post => self.depth,
        };
        adapters * self.adapter_count(hidden)
    }
}

/// The width (1 to `hidden`) whose configuration comes closest to `target` scalars (the
/// narrower on a tie), `config`'s own width ignored.
pub fn width_for_params(
    config: &MusicAdapterConfig,
    target: usize,
    hidden: usize,
    layers: usize,
) -> usize {
    (1..=hidden)
        .min_by_key(|&width| {
            let count = MusicAdapterConfig {
                width,
                ..config.clone()
            }
            .count(hidden, layers);
            (count.abs_diff(target), width)
        })
        .unwrap_or(1)
}

enum Layer {
    Linear(Bottleneck),
    Conv(ConvAdapter),
    Transformer(TransformerAdapter),
}

impl Layer {
    fn new(
        config: &MusicAdapterConfig,
        hidden: usize,
        causal: bool,
        init: &SeededInit,
    ) -> Result<Self> {
        Ok(match config.kind {
            AdapterKind::Linear => Layer::Linear(Bottleneck::new(
                hidden,
                config.width,
                AdapterActivation::Relu,
                init,
            )?),
            AdapterKind::Conv => Layer::Conv(ConvAdapter::new(hidden, config.width, init)?),
            AdapterKind::Transformer => Layer::Transformer(TransformerAdapter::new(
                hidden,
                config.width,
                1,
                causal,
                init,
            )?),
        })
    }

    /// `mask` (0/1 `[batch, steps]`): the real positions, for the transformer's keys.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Layer::Linear(b) => b.forward(x),
            Layer::Conv(c) => c.forward(x),
            Layer::Transformer(t) => t.forward(x, mask),
        }
    }

    /// The output for `x`'s steps inside the decoder, where `site` names this adapter: a layer
    /// that reads earlier steps gets those of earlier passes from `ctx` while generation steps
    /// through the decoder's cache.
    fn forward_steps(&self, site: &str, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        match self {
            Layer::Linear(b) => b.forward(x),
            Layer::Conv(c) => c.forward_steps(site, x, ctx),
            Layer::Transformer(t) => t.forward_steps(site, x, ctx),
        }
    }

    fn params(&self, prefix: &str, params: &mut NamedVars) {
        match self {
            Layer::Linear(b) => b.push_params(prefix, params),
            Layer::Conv(c) => c.params(prefix, params),
            Layer::Transformer(t) => t.params(prefix, params),
        }
    }
}

/// A configuration's adapters on a MusicGen decoder, as its hooks.
pub struct MusicAdapters {
    config: MusicAdapterConfig,
    /// `block`: one per decoder block (by block); `conditioning` / `post`: the stack (by depth).
    layers: BTreeMap<usize, Layer>,
    params: NamedVars,
}

impl MusicAdapters {
    /// The adapters of `config` for a decoder of `layers` blocks `hidden` wide (the text states
    /// are projected to the same width).
    pub fn new(
        config: MusicAdapterConfig,
        hidden: usize,
        layers: usize,
        init: &SeededInit,
    ) -> Result<Self> {
        if config.width == 0 || config.depth == 0 {
            candle_core::bail!("music adapters need a width and a depth of at least 1");
        }
        if config.placement == Placement::Block && config.depth != 1 {
            candle_core::bail!(
                "`block` placement puts one adapter in every decoder block: depth must be 1, not {}",
                config.depth
            );
        }
        let (count, causal, name) = match config.placement {
            Placement::Block => (layers, true, "block"),
            Placement::Post => (config.depth, true, "post"),
            Placement::Conditioning => (config.depth, false, "conditioning"),
        };
        let mut params = NamedVars::default();
        let mut built = BTreeMap::new();
        for i in 0..count {
            let layer = Layer::new(&config, hidden, causal, &init.fork(&format!("{name}{i}")))?;
            layer.params(&format!("music_adapter.{name}.{i}"), &mut params);
            built.insert(i, layer);
        }
        Ok(Self {
            config,
            layers: built,
            params,
        })
    }

    pub fn config(&self) -> &MusicAdapterConfig {
        &self.config
    }

    /// Every adapter's parameters.
    pub fn trainable(&self) -> &NamedVars {
        &self.params
    }

    /// The text states through the conditioning stack, each adapter added to its input; `mask`
    /// marks the real positions.
    fn text_stack(&self, x: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x;
        for layer in self.layers.values() {
            x = (&x + layer.forward(&x, mask)?)?;
        }
        Ok(x)
    }

    /// The decoder's states through the `post` stack, each adapter added to its input.
    fn post_stack(&self, x: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let mut x = x;
        for (i, layer) in &self.layers {
            x = (&x + layer.forward_steps(&format!("music_adapter.post.{i}"), &x, ctx)?)?;
        }
        Ok(x)
    }
}

impl Hooks for MusicAdapters {
    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        input: &Tensor,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match (self.config.placement, kind, self.layers.get(&layer)) {
            (Placement::Block, Sublayer::Mlp, Some(adapter)) => {
                let site = format!("music_adapter.block.{layer}");
                output + adapter.forward_steps(&site, input, ctx)?
            }
            _ => Ok(output),
        }
    }

    fn conditioning(
        &self,
        states: Tensor,
        mask: Option<&Tensor>,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match self.config.placement {
            Placement::Conditioning => self.text_stack(states, mask),
            _ => Ok(states),
        }
    }

    fn norm(
        &self,
        layer: Option<usize>,
        site: NormSite,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match (self.config.placement, layer, site) {
            (Placement::Post, None, NormSite::Final) => self.post_stack(output, ctx),
            _ => Ok(output),
        }
    }
}

#[cfg(test)]
mod tests;
