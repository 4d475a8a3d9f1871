use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor};
use peftbench_core::{ops, ForwardCtx};

use super::SiglipVisionConfig;
use crate::encoder::Norm;
use crate::pre_norm_layer::{self, linear, norm, visit_linear, visit_norm, Getter, PreNormLayer};
use crate::sites::{Hooks, Linear, LinearSite, NoHooks, NormSite, Sublayer};
use crate::{Backbone, BackboneInfo};

/// The tower's module path in `SiglipModel` checkpoints, and the names [`SiglipVision`] reports.
const TOWER: &str = "vision_model";

/// The family name of SigLIP's messages.
const FAMILY: &str = "SigLIP";

/// One pre-norm encoder layer (`SiglipEncoderLayer`).
type Block = PreNormLayer;

fn site_suffix(site: LinearSite) -> &'static str {
    pre_norm_layer::site_suffix(site, FAMILY)
}

/// Module path of block `block` relative to the tower.
fn block_path(block: usize) -> String {
    format!("encoder.layers.{block}")
}

/// The multi-head attention-pooling head (`SiglipMultiheadAttentionPoolingHead`): a learned probe
/// attends over the tokens (PyTorch's `nn.MultiheadAttention`, its query, key and value weights
/// stacked in `in_proj_weight`), then a residual MLP after a norm.
#[derive(Debug, Clone)]
struct Head {
    /// `[1, 1, hidden]`.
    probe: Tensor,
    /// `[3 * hidden, hidden]`: the query, key and value projections, in that order.
    in_proj_weight: Tensor,
    /// `[3 * hidden]`.
    in_proj_bias: Tensor,
    out_proj: Linear,
    layernorm: Norm,
    fc1: Linear,
    fc2: Linear,
}

impl Head {
    fn new(get: &Getter<'_>, cfg: &SiglipVisionConfig) -> Result<Self> {
        let (d, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        Ok(Self {
            probe: get("head.probe", &[1, 1, d])?,
            in_proj_weight: get("head.attention.in_proj_weight", &[3 * d, d])?,
            in_proj_bias: get("head.attention.in_proj_bias", &[3 * d])?,
            out_proj: linear(get, "head.attention.out_proj", d, d)?,
            layernorm: norm(get, "head.layernorm", d, eps)?,
            fc1: linear(get, "head.mlp.fc1", f, d)?,
            fc2: linear(get, "head.mlp.fc2", d, f)?,
        })
    }

    fn visit(
        &mut self,
        base: &str,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        f(&format!("{base}.probe"), &mut self.probe)?;
        f(
            &format!("{base}.attention.in_proj_weight"),
            &mut self.in_proj_weight,
        )?;
        f(
            &format!("{base}.attention.in_proj_bias"),
            &mut self.in_proj_bias,
        )?;
        visit_linear(&format!("{base}.attention.out_proj"), &mut self.out_proj, f)?;
        visit_norm(&format!("{base}.layernorm"), &mut self.layernorm, f)?;
        visit_linear(&format!("{base}.mlp.fc1"), &mut self.fc1, f)?;
        visit_linear(&format!("{base}.mlp.fc2"), &mut self.fc2, f)
    }

    /// `[batch, hidden]` from the tokens `[batch, tokens, hidden]`.
    fn forward(&self, x: &Tensor, cfg: &SiglipVisionConfig, ctx: &ForwardCtx) -> Result<Tensor> {
        let (b, _, d) = x.dims3()?;
        let part = |i: usize| -> Result<(Tensor, Tensor)> {
            Ok((
                self.in_proj_weight.narrow(0, i * d, d)?,
                self.in_proj_bias.narrow(0, i * d, d)?,
            ))
        };
        let ((wq, bq), (wk, bk), (wv, bv)) = (part(0)?, part(1)?, part(2)?);
        let probe = self.probe.broadcast_as((b, 1, d))?.contiguous()?;
        let q = ops::linear(&probe, &wq, Some(&bq))?;
        let k = ops::linear(x, &wk, Some(&bk))?;
        let v = ops::linear(x, &wv, Some(&bv))?;
        // `nn.MultiheadAttention`'s own dropout is 0 in the head.
        let context = ops::attention(&q, &k, &v, cfg.num_attention_heads, None, 0.0, ctx)?;
        let h = self.out_proj.forward(&context)?;
        let m = self.layernorm.forward(&h)?;
        let m = self.fc1.forward(&m)?;
        let m = cfg.hidden_act.apply(&m)?;
        let m = self.fc2.forward(&m)?;
        (h + m)?.squeeze(1)
    }
}

/// What [`SiglipVision::forward`] returns.
#[derive(Debug, Clone)]
pub struct SiglipVisionOutput {
    /// `[batch, patches, hidden]`: the patch tokens after `post_layernorm` (and
    /// [`Hooks::norm`] at [`NormSite::Final`]), transformers' `last_hidden_state`; tokens a method
    /// inserted (prompts) removed.
    pub last_hidden_state: Tensor,
    /// `[batch, hidden]`: the attention-pooling head's output (transformers' `pooler_output`),
    /// `None` when the configuration has no head (`vision_use_head` false).
    pub pooler_output: Option<Tensor>,
}

/// SigLIP's vision tower (`SiglipVisionTransformer`): a bias-carrying patch convolution plus
/// learned position embeddings (no class token), pre-norm encoder layers, `post_layernorm`, and
/// optionally the attention-pooling head. Weights are plain tensors.
///
/// Loads the `vision_model.*` tensors of a `SiglipModel` checkpoint (the text tower, `logit_scale`
/// and `logit_bias` are ignored) or a `SiglipVisionModel` checkpoint, whose tensors transformers 5
/// saves without the `vision_model.` prefix; names are reported with it either way
/// ([`Backbone::visit_params`], [`Backbone::module_path`]).
///
/// PEFT sites, in block `l` (`vision_model.encoder.layers.l`): `self_attn.{q,k,v,out}_proj` are the
/// [`LinearSite::Query`]…[`LinearSite::AttentionOutput`] sites and `mlp.fc1` / `mlp.fc2` the
/// [`LinearSite::Fc1`] / [`LinearSite::Fc2`] sites; [`Hooks::tokens`] sees the stream entering the
/// block, [`Hooks::prefix`] may prepend keys and values to its attention, [`Hooks::sublayer`]
/// sees the attention and MLP branches and [`Hooks::norm`] `layer_norm1` / `layer_norm2`
/// ([`NormSite::BeforeAttention`] / [`NormSite::BeforeMlp`]) and `post_layernorm`
/// ([`NormSite::Final`]). The pooling head is not a site; it attends over the whole final stream,
/// inserted tokens included.
#[derive(Debug, Clone)]
pub struct SiglipVision {
    cfg: SiglipVisionConfig,
    info: BackboneInfo,
    /// `[hidden, channels, patch, patch]`.
    patch_weight: Tensor,
    /// `[hidden]`.
    patch_bias: Tensor,
    /// `[patches, hidden]`.
    position_embedding: Tensor,
    blocks: Vec<Block>,
    post_layernorm: Norm,
    head: Option<Head>,
}

impl SiglipVision {
    pub fn config(&self) -> &SiglipVisionConfig {
        &self.cfg
    }

    /// The sizes methods see, from the configuration alone (`num_tokens` is the patch count:
    /// there is no class token).
    pub fn info_for(cfg: &SiglipVisionConfig) -> BackboneInfo {
        BackboneInfo {
            family: "siglip".into(),
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_hidden_layers,
            num_heads: cfg.num_attention_heads,
            intermediate_size: cfg.intermediate_size,
            num_tokens: cfg.num_patches(),
        }
    }

    /// Whether the tower ends in the attention-pooling head (`vision_use_head`).
    pub fn has_head(&self) -> bool {
        self.head.is_some()
    }

    /// Builds the tower from tensors under HF's names, with or without the `vision_model.` prefix,
    /// checking every shape; other tensors (a text tower, `logit_scale`, head tensors when
    /// `vision_use_head` is false) are ignored. `origin` names the source in errors.
    pub fn from_tensors(
        cfg: SiglipVisionConfig,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        const PATCH: &str = "embeddings.patch_embedding.weight";
        let prefix = if tensors.contains_key(&format!("{TOWER}.{PATCH}")) {
            format!("{TOWER}.")
        } else if tensors.contains_key(PATCH) {
            String::new()
        } else {
            candle_core::bail!(
                "{origin}: no SigLIP vision tower (neither `{TOWER}.{PATCH}` nor `{PATCH}`)"
            )
        };
        let get = |name: &str, shape: &[usize]| {
            crate::checkpoint::get_tensor(tensors, &format!("{prefix}{name}"), shape, origin)
        };
        let (d, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let blocks = (0..cfg.num_hidden_layers)
            .map(|l| {
                let (d, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
                Block::new(&get, &block_path(l), d, f, eps, FAMILY)
            })
            .collect::<Result<_>>()?;
        let head = if cfg.vision_use_head {
            Some(Head::new(&get, &cfg)?)
        } else {
            None
        };
        Ok(Self {
            info: Self::info_for(&cfg),
            patch_weight: get(PATCH, &[d, c, p, p])?,
            patch_bias: get("embeddings.patch_embedding.bias", &[d])?,
            position_embedding: get(
                "embeddings.position_embedding.weight",
                &[cfg.num_patches(), d],
            )?,
            blocks,
            post_layernorm: norm(&get, "post_layernorm", d, cfg.layer_norm_eps)?,
            head,
            cfg,
        })
    }

    /// Loads `config.json` (a `SiglipModel`'s or a `SiglipVisionModel`'s, see
    /// [`SiglipVisionConfig::from_hf_json`]) and `model.safetensors` of a checkpoint folder.
    pub fn load(config_path: &Path, weights_path: &Path, device: &Device) -> Result<Self> {
        let config_error =
            |e: String| candle_core::Error::Msg(format!("{}: {e}", config_path.display()));
        let text = std::fs::read_to_string(config_path).map_err(|e| config_error(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        let cfg = SiglipVisionConfig::from_hf_json(&value).map_err(config_error)?;
        let tensors = candle_core::safetensors::load(weights_path, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights_path.display())))?;
        Self::from_tensors(cfg, &tensors, &weights_path.display().to_string())
    }

    /// The stream entering the first block: the patch convolution (as a matmul over
    /// non-overlapping patches, equal to it and cheaper to differentiate than candle's conv2d)
    /// plus the position embeddings.
    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, c, h, w) = pixels.dims4()?;
        if c != cfg.num_channels || h != cfg.image_size || w != cfg.image_size {
            candle_core::bail!(
                "SigLIP expects [batch, {}, {}, {}] pixels, got {:?}",
                cfg.num_channels,
                cfg.image_size,
                cfg.image_size,
                pixels.dims()
            );
        }
        let (p, d) = (cfg.patch_size, cfg.hidden_size);
        let (gh, gw) = (h / p, w / p);
        let patches = pixels
            .to_dtype(self.patch_weight.dtype())?
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * p * p))?;
        let weight = self.patch_weight.reshape((d, c * p * p))?;
        ops::linear(&patches, &weight, Some(&self.patch_bias))?
            .broadcast_add(&self.position_embedding)
    }

    fn attention(
        &self,
        l: usize,
        x: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let block = &self.blocks[l];
        let q = hooks.linear(l, LinearSite::Query, x, &block.q_proj, ctx)?;
        let mut k = hooks.linear(l, LinearSite::Key, x, &block.k_proj, ctx)?;
        let mut v = hooks.linear(l, LinearSite::Value, x, &block.v_proj, ctx)?;
        if let Some((pk, pv)) = hooks.prefix(l, x.dim(0)?, ctx)? {
            k = Tensor::cat(&[&pk, &k], 1)?;
            v = Tensor::cat(&[&pv, &v], 1)?;
        }
        let context = ops::attention(
            &q,
            &k,
            &v,
            self.cfg.num_attention_heads,
            None,
            self.cfg.attention_dropout,
            ctx,
        )?;
        hooks.linear(
            l,
            LinearSite::AttentionOutput,
            &context,
            &block.out_proj,
            ctx,
        )
    }

    /// Runs the stream entering block `layers.start` through the blocks `layers`.
    fn blocks(
        &self,
        mut x: Tensor,
        layers: std::ops::Range<usize>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        for l in layers {
            let block = &self.blocks[l];
            x = hooks.tokens(l, x, ctx)?;
            let h = block.layer_norm1.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeAttention, h, ctx)?;
            let a = self.attention(l, &h, hooks, ctx)?;
            let a = hooks.sublayer(l, Sublayer::Attention, &x, a, ctx)?;
            x = (&x + ctx.drop_path(&a)?)?;
            let h = block.layer_norm2.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeMlp, h, ctx)?;
            let m = hooks.linear(l, LinearSite::Fc1, &h, &block.fc1, ctx)?;
            let m = self.cfg.hidden_act.apply(&m)?;
            let m = hooks.linear(l, LinearSite::Fc2, &m, &block.fc2, ctx)?;
            let m = hooks.sublayer(l, Sublayer::Mlp, &x, m, ctx)?;
            x = (&x + ctx.drop_path(&m)?)?;
        }
        Ok(x)
    }

    /// The stream entering block `first` through the remaining blocks and `post_layernorm`:
    /// every token, inserted ones included.
    fn forward_from(
        &self,
        x: Tensor,
        first: usize,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let x = self.blocks(x, first..self.blocks.len(), hooks, ctx)?;
        let x = self.post_layernorm.forward(&x)?;
        hooks.norm(None, NormSite::Final, x, ctx)
    }

    /// The final stream's patch tokens (the last `patches` tokens: methods insert theirs before
    /// the patches).
    fn patch_tokens(&self, states: &Tensor) -> Result<Tensor> {
        let patches = self.cfg.num_patches();
        states.narrow(1, states.dim(1)? - patches, patches)
    }

    /// `[batch, hidden]`: the head's output, or without a head the mean of the patch tokens.
    fn pool(&self, states: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        match &self.head {
            Some(head) => head.forward(states, &self.cfg, ctx),
            None => self.patch_tokens(states)?.mean(1),
        }
    }

    fn outputs(&self, states: Tensor, ctx: &ForwardCtx) -> Result<SiglipVisionOutput> {
        let pooler_output = match &self.head {
            Some(head) => Some(head.forward(&states, &self.cfg, ctx)?),
            None => None,
        };
        Ok(SiglipVisionOutput {
            last_hidden_state: self.patch_tokens(&states)?,
            pooler_output,
        })
    }

    /// The tower on `pixels` `[batch, channels, image, image]` (already normalised with SigLIP's
    /// mean and std, 0.5 per channel): the patch tokens after `post_layernorm` and the head's
    /// pooled output (see [`SiglipVisionOutput`]).
    pub fn forward(
        &self,
        pixels: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<SiglipVisionOutput> {
        let states = self.forward_from(self.embed(pixels)?, 0, hooks, ctx)?;
        self.outputs(states, ctx)
    }
}

impl Backbone for SiglipVision {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn linear_dims(&self, site: LinearSite) -> (usize, usize) {
        self.info.linear_dims(site)
    }

    fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        self.blocks[layer].linear(site)
    }

    /// `vision_model.encoder.layers.{layer}`.
    fn block_path(&self, layer: usize) -> String {
        format!("{TOWER}.{}", block_path(layer))
    }

    fn final_norm_path(&self) -> Option<String> {
        Some(format!("{TOWER}.post_layernorm"))
    }

    /// E.g. `vision_model.encoder.layers.3.self_attn.q_proj`.
    fn module_path(&self, layer: usize, site: LinearSite) -> String {
        format!("{}.{}", self.block_path(layer), site_suffix(site))
    }

    /// Every tensor under its `SiglipModel` name (`vision_model.…`): the embeddings, the blocks,
    /// `post_layernorm` and the head.
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        f(
            &format!("{TOWER}.embeddings.patch_embedding.weight"),
            &mut self.patch_weight,
        )?;
        f(
            &format!("{TOWER}.embeddings.patch_embedding.bias"),
            &mut self.patch_bias,
        )?;
        f(
            &format!("{TOWER}.embeddings.position_embedding.weight"),
            &mut self.position_embedding,
        )?;
        for (l, block) in self.blocks.iter_mut().enumerate() {
            block.visit(&format!("{TOWER}.{}", block_path(l)), f)?;
        }
        visit_norm(
            &format!("{TOWER}.post_layernorm"),
            &mut self.post_layernorm,
            f,
        )?;
        match self.head.as_mut() {
            Some(head) => head.visit(&format!("{TOWER}.head"), f),
            None => Ok(()),
        }
    }

    /// The head's pooled output, or the mean of the patch tokens when there is no head.
    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let states = self.forward_from(self.embed(input)?, 0, hooks, ctx)?;
        self.pool(&states, ctx)
    }

    /// The patch tokens after `post_layernorm` (any prompts removed).
    fn forward_sequence(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let states = self.forward_from(self.embed(input)?, 0, hooks, ctx)?;
        self.patch_tokens(&states)
    }

    fn forward_frozen_prefix(
        &self,
        input: &Tensor,
        blocks: usize,
        ctx: &ForwardCtx,
    ) -> Result<Option<Tensor>> {
        let x = self.embed(input)?;
        Ok(Some(self.blocks(x, 0..blocks, &NoHooks, ctx)?))
    }

    fn forward_features_from(
        &self,
        stream: &Tensor,
        blocks: usize,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let states = self.forward_from(stream.clone(), blocks, hooks, ctx)?;
        self.pool(&states, ctx)
    }
}
