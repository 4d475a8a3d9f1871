//! The places in a transformer block where PEFT methods attach.

use candle_core::{Result, Tensor};
pub use peftbench_core::kernels::{Bottleneck, LowRank};
use peftbench_core::{ops, ForwardCtx};

/// A linear projection inside a block. Named by role; each backbone maps roles to its own module
/// paths (`Backbone::module_path`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LinearSite {
    Query,
    Key,
    Value,
    /// The attention output projection.
    AttentionOutput,
    /// The MLP's first (expanding) projection.
    Fc1,
    /// The MLP's second (contracting) projection.
    Fc2,
    /// The decoder cross-attention's query projection (encoder-decoder models only, e.g. T5's
    /// `EncDecAttention.q`); not in [`LinearSite::ALL`].
    CrossQuery,
    /// The decoder cross-attention's key projection, applied to the encoder output.
    CrossKey,
    /// The decoder cross-attention's value projection, applied to the encoder output.
    CrossValue,
    /// The decoder cross-attention's output projection.
    CrossAttentionOutput,
}

impl LinearSite {
    pub const ALL: [LinearSite; 6] = [
        Self::Query,
        Self::Key,
        Self::Value,
        Self::AttentionOutput,
        Self::Fc1,
        Self::Fc2,
    ];

    /// The decoder cross-attention projections of encoder-decoder models. Kept apart from
    /// [`LinearSite::ALL`] (the sites every backbone has), so presets such as `all-linear` and
    /// the configurations written before them are unchanged; encoder-only backbones have none.
    pub const CROSS_ATTENTION: [LinearSite; 4] = [
        Self::CrossQuery,
        Self::CrossKey,
        Self::CrossValue,
        Self::CrossAttentionOutput,
    ];

    /// Whether the site is a decoder cross-attention projection ([`LinearSite::CROSS_ATTENTION`]).
    pub fn is_cross_attention(self) -> bool {
        Self::CROSS_ATTENTION.contains(&self)
    }

    /// The name used in suite files (`target_modules: [query, value]`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Key => "key",
            Self::Value => "value",
            Self::AttentionOutput => "attention_output",
            Self::Fc1 => "fc1",
            Self::Fc2 => "fc2",
            Self::CrossQuery => "cross_query",
            Self::CrossKey => "cross_key",
            Self::CrossValue => "cross_value",
            Self::CrossAttentionOutput => "cross_attention_output",
        }
    }

    /// The site named `name` ([`LinearSite::ALL`] and [`LinearSite::CROSS_ATTENTION`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::CROSS_ATTENTION)
            .find(|s| s.name() == name)
    }
}

/// For encoder-only backbones' site lookups: cross-attention sites are refused before a method
/// attaches ([`crate::BackboneInfo::check_sites`]), so reaching one is a bug in the caller.
pub(crate) fn no_cross_attention(family: &str, site: LinearSite) -> ! {
    panic!(
        "a {family} backbone has no cross-attention: `{}` is a site of encoder-decoder models only",
        site.name()
    )
}

/// The two residual branches of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sublayer {
    Attention,
    Mlp,
}

impl Sublayer {
    /// The projections inside the branch.
    pub fn sites(self) -> &'static [LinearSite] {
        match self {
            Self::Attention => &[
                LinearSite::Query,
                LinearSite::Key,
                LinearSite::Value,
                LinearSite::AttentionOutput,
            ],
            Self::Mlp => &[LinearSite::Fc1, LinearSite::Fc2],
        }
    }
}

/// Normalisation layers (for methods that scale/shift features after them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormSite {
    BeforeAttention,
    BeforeMlp,
    /// The encoder's final norm (`layer` is `None`).
    Final,
}

/// A frozen (or, for full fine-tuning, variable) linear layer in PyTorch's `[out, in]` layout.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// The projection, with a LoRA update when `low_rank` is given, as a fused kernel's parameters.
    pub fn projection<'a>(
        &'a self,
        low_rank: Option<LowRank<'a>>,
    ) -> peftbench_core::kernels::Projection<'a> {
        peftbench_core::kernels::Projection {
            weight: &self.weight,
            bias: self.bias.as_ref(),
            low_rank,
        }
    }
}

/// Callbacks a backbone makes during its forward pass. Every default leaves the pretrained model
/// unchanged, so a method overrides only the sites it uses. A decoder generating step by step
/// passes only the new steps; a hook that mixes steps (a causal convolution, attention over the
/// states) reads the earlier ones with [`peftbench_core::ForwardCtx::steps_so_far`].
pub trait Hooks {
    /// Output of projection `site` of block `layer` for input `x`. Default: the frozen projection.
    fn linear(
        &self,
        _layer: usize,
        _site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        base.forward(x)
    }

    /// Output of a residual branch just before it is added to the stream. `input` is the stream
    /// entering the branch (before its norm), `output` the branch's output.
    fn sublayer(
        &self,
        _layer: usize,
        _kind: Sublayer,
        _input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        Ok(output)
    }

    /// The token stream `[batch, tokens, hidden]` entering block `layer` (prompt insertion).
    fn tokens(&self, _layer: usize, tokens: Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        Ok(tokens)
    }

    /// Extra keys and values `[batch, prefix, hidden]` prepended in block `layer`'s attention.
    /// `ctx` carries the batch's task ids, so a multi-task method can choose per example.
    fn prefix(
        &self,
        _layer: usize,
        _batch: usize,
        _ctx: &ForwardCtx,
    ) -> Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }

    /// The conditioning states `[batch, source, hidden]` an encoder-decoder's decoder attends
    /// to (MusicGen's projected text states), before any block reads them; `mask` (0/1 `[batch,
    /// source]`) marks the real positions. Default: unchanged.
    fn conditioning(
        &self,
        states: Tensor,
        _mask: Option<&Tensor>,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        Ok(states)
    }

    /// Whether the hooks inside residual branch `kind` of block `layer` may change it: [`Hooks::norm`]
    /// at the branch's norm, [`Hooks::linear`] at its projections ([`Sublayer::sites`]) and, for
    /// attention, [`Hooks::prefix`]. `false` promises that those keep their defaults there, except
    /// for projections whose LoRA update [`Hooks::low_rank`] gives; a ViT-style encoder then runs
    /// the branch as one fused node
    /// (`peftbench_core::ops::fused_attention_sublayer`) that calls none of them. The methods'
    /// `fused_sublayers` test holds each promise to the composed path bit for bit, so a wrong one
    /// fails a test instead of changing results. Default: `true` (the composed path, always right).
    fn adapts_inside(&self, _layer: usize, _kind: Sublayer) -> bool {
        true
    }

    /// The LoRA update `scaling * B A` of projection `site` of block `layer`, where
    /// [`Hooks::linear`] there computes exactly `ops::lora_linear(x, W, bias, A, B, scaling)`
    /// (LoRA without dropout): a fused branch then runs it itself, so a method whose only change
    /// inside a branch is such updates can say `false` to [`Hooks::adapts_inside`]. Default: none.
    fn low_rank(&self, _layer: usize, _site: LinearSite) -> Option<LowRank<'_>> {
        None
    }

    /// Whether [`Hooks::sublayer`] may change the output of residual branch `kind` of block
    /// `layer`. `false` promises it returns the output unchanged there; with
    /// [`Hooks::adapts_inside`] also `false`, the encoder then adds the branch to the stream
    /// inside the fused node. Held to the composed path by the same test. Default: `true`.
    fn adapts_output(&self, _layer: usize, _kind: Sublayer) -> bool {
        true
    }

    /// The bottleneck adapter that [`Hooks::sublayer`] applies to the output of residual branch
    /// `kind` of block `layer`, where it computes exactly `o + up(relu(down(o)))` with
    /// `ops::linear` for both projections (no dropout): a ViT-style encoder then adds the adapted
    /// output to the stream in one fused node (`peftbench_core::ops::fused_bottleneck_residual`)
    /// instead of calling the hook. Held to the composed path by the methods' `fused_sublayers`
    /// test. Default: none.
    fn output_bottleneck(&self, _layer: usize, _kind: Sublayer) -> Option<Bottleneck<'_>> {
        None
    }

    /// Output of a normalisation layer (`layer` is `None` for the final norm). `ctx` carries the
    /// batch's task ids, so a multi-task method can choose per example.
    fn norm(
        &self,
        _layer: Option<usize>,
        _site: NormSite,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        Ok(output)
    }
}

/// The pretrained model unchanged.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn adapts_inside(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }

    fn adapts_output(&self, _layer: usize, _kind: Sublayer) -> bool {
        false
    }
}
