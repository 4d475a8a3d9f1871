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
pub mod clip;
pub mod crepe;
pub mod encodec;
mod encoder;
pub mod musicgen;
mod pre_norm_layer;
mod python_package;
pub mod siglip;
pub mod sites;
pub mod t5;
pub mod vggish;
pub mod vit;

pub use ast::{Ast, AstConfig};
pub use bert::{Bert, BertConfig, MlmHead, Pooling, TextEncoder, TokenizedBatch};
pub use checkpoint::{resolve_checkpoint, CheckpointError, ResolvedCheckpoint};
pub use clip::{
    Clip, ClipConfig, ClipTextBackbone, ClipTextOutput, ClipVisionBackbone, ClipVisionOutput,
};
pub use crepe::{Crepe, CrepeCapacity};
pub use musicgen::{Musicgen, MusicgenConfig, MusicgenDecoderConfig};
pub use siglip::{SiglipVision, SiglipVisionConfig, SiglipVisionOutput};
pub use sites::{Bottleneck, Hooks, Linear, LinearSite, LowRank, NoHooks, NormSite, Sublayer};
pub use t5::{DecoderCache, T5Config, T5};
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

impl BackboneInfo {
    /// `(in_features, out_features)` of the projection at `site`: the attention projections map
    /// the hidden size to itself, the MLP widens to the intermediate size and back. Known from
    /// the configuration alone, so configurations can be checked before weights are loaded.
    pub fn linear_dims(&self, site: LinearSite) -> (usize, usize) {
        let (d, f) = (self.hidden_size, self.intermediate_size);
        match site {
            LinearSite::Fc1 => (d, f),
            LinearSite::Fc2 => (f, d),
            LinearSite::Query
            | LinearSite::Key
            | LinearSite::Value
            | LinearSite::AttentionOutput => (d, d),
            // Only encoder-decoder families have these ([`BackboneInfo::check_sites`]); their
            // widths are those of the self-attention.
            LinearSite::CrossQuery
            | LinearSite::CrossKey
            | LinearSite::CrossValue
            | LinearSite::CrossAttentionOutput => (d, d),
        }
    }

    /// Whether the family has a decoder with cross-attention over an encoder output.
    pub fn has_cross_attention(&self) -> bool {
        ENCODER_DECODER_FAMILIES.contains(&self.family.as_str())
    }

    /// Checks that every site of `sites` exists in this backbone: the cross-attention sites
    /// ([`LinearSite::CROSS_ATTENTION`]) only exist in encoder-decoder families. Methods call
    /// this at `check_backbone` (dry run, preflight) and before attaching, so a configuration
    /// naming them on an encoder-only backbone fails with this message instead of at run time.
    pub fn check_sites(&self, sites: &[LinearSite]) -> std::result::Result<(), String> {
        match sites.iter().find(|s| s.is_cross_attention()) {
            Some(site) if !self.has_cross_attention() => Err(format!(
                "`{}` targets decoder cross-attention, but the {} backbone is encoder-only and has no cross-attention (cross-attention sites exist in encoder-decoder models: {})",
                site.name(),
                self.family,
                ENCODER_DECODER_FAMILIES.join(", ")
            )),
            _ => Ok(()),
        }
    }
}

impl BackboneInfo {
    /// Checks that the backbone calls the [`Hooks::tokens`] and [`Hooks::prefix`] sites that
    /// prompt and prefix methods train through. The encoders do; T5's and CLIP's towers
    /// ([`PROMPT_FREE_FAMILIES`]) do not call them yet, so a prompt method there would train
    /// parameters that never reach the output.
    pub fn check_prompt_sites(&self, method: &str) -> std::result::Result<(), String> {
        if PROMPT_FREE_FAMILIES.contains(&self.family.as_str()) {
            Err(format!(
                "method `{method}` inserts prompt tokens or attention prefixes, which the {} backbone does not take (its blocks call the linear, sublayer and norm sites only)",
                self.family
            ))
        } else {
            Ok(())
        }
    }
}

/// Families whose blocks call neither [`Hooks::tokens`] nor [`Hooks::prefix`].
pub const PROMPT_FREE_FAMILIES: &[&str] = &[
    "t5",
    clip::CLIP_VISION_FAMILY,
    clip::CLIP_TEXT_FAMILY,
    musicgen::MUSICGEN_FAMILY,
];

/// Families whose blocks include a decoder cross-attention ([`LinearSite::CROSS_ATTENTION`]).
pub const ENCODER_DECODER_FAMILIES: &[&str] = &["t5", musicgen::MUSICGEN_FAMILY];

/// The sizes of the checkpoint whose Hugging Face `config.json` is at `path`, without loading its
/// weights (the architecture is read off `model_type`): enough to check methods' configurations.
pub fn info_from_config(path: &std::path::Path) -> std::result::Result<BackboneInfo, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let model_type = value
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("vit")
        .to_string();
    let parse_error = |e: serde_json::Error| format!("{}: {e}", path.display());
    match model_type.as_str() {
        "vit" => Ok(Vit::info_for(
            &serde_json::from_value(value).map_err(parse_error)?,
        )),
        "audio-spectrogram-transformer" => Ok(Ast::info_for(
            &serde_json::from_value(value).map_err(parse_error)?,
        )),
        "bert" | "roberta" | "xlm-roberta" | "camembert" => Ok(Bert::info_for(
            &serde_json::from_value(value).map_err(parse_error)?,
        )),
        "t5" => Ok(T5::info_for(
            &serde_json::from_value(value).map_err(parse_error)?,
        )),
        "musicgen" => Ok(Musicgen::info_for(
            &serde_json::from_value(value).map_err(parse_error)?,
        )),
        // A dual encoder's methods are checked against its image tower (both towers are).
        "clip" => Ok(clip::vision_info(
            &serde_json::from_value(value).map_err(parse_error)?,
        )),
        "siglip" | "siglip_vision_model" => SiglipVisionConfig::from_hf_json(&value)
            .map(|c| SiglipVision::info_for(&c))
            .map_err(|e| format!("{}: {e}", path.display())),
        other => Err(format!(
            "{}: model_type `{other}` is not a supported backbone (vit, audio-spectrogram-transformer, bert, roberta, xlm-roberta, t5, clip, siglip, musicgen)",
            path.display()
        )),
    }
}

/// A pretrained encoder that exposes PEFT sites.
pub trait Backbone {
    fn info(&self) -> &BackboneInfo;

    /// `(in_features, out_features)` of the projection at `site` (same in every layer).
    fn linear_dims(&self, site: LinearSite) -> (usize, usize);

    /// Whether block `layer` has the projection `site`. Every block of an encoder has every
    /// site of [`LinearSite::ALL`]; an encoder-decoder's cross-attention sites exist in its
    /// decoder blocks only, so methods adapting chosen sites skip the blocks without them.
    fn has_linear(&self, layer: usize, site: LinearSite) -> bool {
        layer < self.info().num_layers && !site.is_cross_attention()
    }

    /// The frozen projection at `site` of block `layer` (one that [`Backbone::has_linear`]).
    fn linear(&self, layer: usize, site: LinearSite) -> &Linear;

    /// Block `layer`'s module path in Hugging Face checkpoints (`vit.encoder.layer.3`,
    /// `bert.encoder.layer.3`): where methods name the modules they add to a block.
    fn block_path(&self, layer: usize) -> String;

    /// The module path of the norm after the last block (`vit.layernorm`), if the family has one
    /// (post-norm BERT does not).
    fn final_norm_path(&self) -> Option<String>;

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

    /// The token stream `[batch, tokens, hidden]` entering block `blocks` of the pretrained model,
    /// no method attached: the embeddings and the first `blocks` blocks. A method that leaves
    /// those blocks untouched sees the same stream every epoch, so the runner computes it once
    /// per example (frozen-prefix caching) and trains from it with
    /// [`Backbone::forward_features_from`]. `None` where the stream alone cannot resume the
    /// forward pass (the default; BERT's padding mask is not part of it).
    fn forward_frozen_prefix(
        &self,
        _input: &Tensor,
        _blocks: usize,
        _ctx: &ForwardCtx,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// [`Backbone::forward_features`] resumed from a stream that
    /// [`Backbone::forward_frozen_prefix`] returned for the first `blocks` blocks: the remaining
    /// blocks with `hooks`, the final norm and the pooling. Equals `forward_features` on the
    /// original input when `hooks` changes nothing in the first `blocks` blocks.
    fn forward_features_from(
        &self,
        _stream: &Tensor,
        _blocks: usize,
        _hooks: &dyn Hooks,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        candle_core::bail!(
            "a {} backbone cannot resume its forward pass from a cached token stream",
            self.info().family
        )
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_come_from_the_configuration_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let vit = VitConfig::new(48, 3, 4, 96, 32, 8);
        std::fs::write(&path, vit.to_hf_json().to_string()).unwrap();
        let info = info_from_config(&path).unwrap();
        assert_eq!(info, Vit::info_for(&vit));
        assert_eq!(info.linear_dims(LinearSite::Fc1), (48, 96));
        assert_eq!(info.linear_dims(LinearSite::Fc2), (96, 48));
        assert_eq!(info.linear_dims(LinearSite::Value), (48, 48));

        let bert = BertConfig::xlm_roberta_base();
        std::fs::write(&path, bert.to_hf_json().to_string()).unwrap();
        let info = info_from_config(&path).unwrap();
        assert_eq!(
            (info.family.as_str(), info.intermediate_size),
            ("xlm-roberta", 3072)
        );

        std::fs::write(&path, r#"{"model_type": "gpt2"}"#).unwrap();
        let err = info_from_config(&path).unwrap_err();
        assert!(
            err.contains("model_type `gpt2` is not a supported backbone"),
            "{err}"
        );
    }
}
