//! Frozen pretrained encoders and the sites where PEFT methods attach to them.
//!
//! A backbone keeps its pretrained weights as plain tensors (no gradient bookkeeping) and calls a
//! [`Hooks`] implementation at every site a method may want: each linear projection, each sublayer's
//! output before its residual add, the token stream entering each block, the attention keys/values
//! (prefixes) and each normalisation. A method is a `Hooks` plus the parameters it trains; methods
//! that train pretrained weights themselves (full fine-tuning, BitFit) swap those tensors for
//! variables through [`Backbone::visit_params`].

pub mod ast;
pub mod bert;
pub mod checkpoint;
mod encoder;
pub mod sites;
pub mod vit;

pub use ast::{Ast, AstConfig};
pub use bert::{Bert, BertConfig, MlmHead, Pooling, TextEncoder, TokenizedBatch};
pub use checkpoint::{resolve_checkpoint, CheckpointError, ResolvedCheckpoint};
pub use sites::{Hooks, Linear, LinearSite, NoHooks, NormSite, Sublayer};
pub use vit::{Vit, VitConfig};

use candle_core::{Result, Tensor};
use peftbench_core::ForwardCtx;

/// Sizes a method needs to build its parameters, independent of the architecture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackboneInfo {
    /// Architecture family, e.g. `"vit"`, `"bert"`, `"xlm-roberta"`.
    pub family: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    /// Tokens per example entering the first block (CLS included), before any method adds prompts.
    pub num_tokens: usize,
}

/// A pretrained encoder that exposes PEFT sites.
pub trait Backbone {
    fn info(&self) -> &BackboneInfo;

    /// `(in_features, out_features)` of the projection at `site` (same in every layer).
    fn linear_dims(&self, site: LinearSite) -> (usize, usize);

    /// The frozen projection at `site` of block `layer`.
    fn linear(&self, layer: usize, site: LinearSite) -> &Linear;

    /// The projection's module path in Hugging Face checkpoints, e.g.
    /// `vit.encoder.layer.0.attention.attention.query` (used for PEFT on-disk names).
    fn module_path(&self, layer: usize, site: LinearSite) -> String;

    /// Visits every pretrained tensor with its checkpoint name, in a fixed order. Methods replace
    /// tensors by variables here (a `Var`'s tensor shares storage, so optimizer steps are seen).
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()>;

    /// Pooled features `[batch, hidden]` (the CLS token after the final norm for ViT).
    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor>;

    /// Per-token features `[batch, tokens, hidden]` after the final norm, one row per input token
    /// (tokens a method inserts, such as prompts, removed): for token-level heads.
    fn forward_sequence(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor>;

    /// Number of pretrained scalars.
    fn num_params(&mut self) -> usize {
        let mut n = 0;
        let _ = self.visit_params(&mut |_, t| {
            n += t.elem_count();
            Ok(())
        });
        n
    }
}
