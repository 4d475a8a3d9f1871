use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use peftbench_core::{ops, ForwardCtx};

use super::config::LEGACY_EOS_TOKEN_ID;
use super::{ClipActivation, ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::encoder::Norm;
use crate::pre_norm_layer::{self, norm, visit_norm, Getter, PreNormLayer};
use crate::sites::{Hooks, Linear, LinearSite, NormSite, Sublayer};

/// Module path of block `block` of `tower` (`vision_model` or `text_model`) in HF checkpoints.
fn block_path(tower: &str, block: usize) -> String {
    format!("{tower}.encoder.layers.{block}")
}

/// One pre-norm encoder layer (`CLIPEncoderLayer`).
type Block = PreNormLayer;

/// The family name of CLIP's messages.
const FAMILY: &str = "CLIP";

fn site_suffix(site: LinearSite) -> &'static str {
    pre_norm_layer::site_suffix(site, FAMILY)
}

/// The encoder fields both towers' configurations share.
#[derive(Debug, Clone)]
struct StackDims {
    layers: usize,
    hidden: usize,
    inner: usize,
    heads: usize,
    act: ClipActivation,
    eps: f64,
    attention_dropout: f64,
}

impl From<&ClipVisionConfig> for StackDims {
    fn from(c: &ClipVisionConfig) -> Self {
        Self {
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            inner: c.intermediate_size,
            heads: c.num_attention_heads,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
            attention_dropout: c.attention_dropout,
        }
    }
}

impl From<&ClipTextConfig> for StackDims {
    fn from(c: &ClipTextConfig) -> Self {
        Self {
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            inner: c.intermediate_size,
            heads: c.num_attention_heads,
            act: c.hidden_act,
            eps: c.layer_norm_eps,
            attention_dropout: c.attention_dropout,
        }
    }
}

/// One tower's encoder (`{tower}.encoder.layers.N`) and where its blocks sit among the [`Hooks`]
/// indices.
#[derive(Debug, Clone)]
struct Stack {
    /// `vision_model` or `text_model`.
    tower: &'static str,
    /// The hook index of block 0.
    first: usize,
    dims: StackDims,
    blocks: Vec<Block>,
}

impl Stack {
    fn new(get: &Getter<'_>, tower: &'static str, first: usize, dims: StackDims) -> Result<Self> {
        let blocks = (0..dims.layers)
            .map(|i| {
                Block::new(
                    get,
                    &block_path(tower, i),
                    dims.hidden,
                    dims.inner,
                    dims.eps,
                    FAMILY,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            tower,
            first,
            dims,
            blocks,
        })
    }

    fn block_path(&self, block: usize) -> String {
        block_path(self.tower, block)
    }

    fn visit(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        for i in 0..self.blocks.len() {
            let base = self.block_path(i);
            self.blocks[i].visit(&base, f)?;
        }
        Ok(())
    }

    /// Runs the stream `[batch, tokens, hidden]` through every block. `bias` (`[batch or 1, 1,
    /// tokens, tokens]`, added to the attention scores) is the text tower's causal and padding
    /// mask; the vision tower attends everywhere.
    fn forward(
        &self,
        mut x: Tensor,
        bias: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        for (i, block) in self.blocks.iter().enumerate() {
            let l = self.first + i;
            let h = block.layer_norm1.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeAttention, h, ctx)?;
            let a = self.attention(l, block, &h, bias, hooks, ctx)?;
            let a = hooks.sublayer(l, Sublayer::Attention, &x, a, ctx)?;
            x = (&x + ctx.drop_path(&a)?)?;
            let h = block.layer_norm2.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeMlp, h, ctx)?;
            let m = hooks.linear(l, LinearSite::Fc1, &h, &block.fc1, ctx)?;
            let m = self.dims.act.apply(&m)?;
            let m = hooks.linear(l, LinearSite::Fc2, &m, &block.fc2, ctx)?;
            let m = hooks.sublayer(l, Sublayer::Mlp, &x, m, ctx)?;
            x = (&x + ctx.drop_path(&m)?)?;
        }
        Ok(x)
    }

    fn attention(
        &self,
        l: usize,
        block: &Block,
        x: &Tensor,
        bias: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let q = hooks.linear(l, LinearSite::Query, x, &block.q_proj, ctx)?;
        let k = hooks.linear(l, LinearSite::Key, x, &block.k_proj, ctx)?;
        let v = hooks.linear(l, LinearSite::Value, x, &block.v_proj, ctx)?;
        let context = match bias {
            // The fused kernel (with its own backward) takes only a per-key mask.
            None => {
                let d = &self.dims;
                ops::attention(&q, &k, &v, d.heads, None, d.attention_dropout, ctx)?
            }
            Some(bias) => self.masked_attention(&q, &k, &v, bias, ctx)?,
        };
        hooks.linear(
            l,
            LinearSite::AttentionOutput,
            &context,
            &block.out_proj,
            ctx,
        )
    }

    /// `softmax(q k^T / sqrt(head_dim) + bias) v` on `[batch, tokens, hidden]` projections, from
    /// primitives that implement backward; returns `[batch, tokens, hidden]`.
    fn masked_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (b, t, d) = q.dims3()?;
        let heads = self.dims.heads;
        let head_dim = d / heads;
        let split = |x: &Tensor| {
            x.reshape((b, t, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scores = (split(q)?.matmul(&split(k)?.t()?)? * (head_dim as f64).powf(-0.5))?
            .broadcast_add(bias)?;
        let probs = ctx.dropout(
            &ops::softmax_last_dim(&scores)?,
            self.dims.attention_dropout,
        )?;
        probs
            .matmul(&split(v)?)?
            .transpose(1, 2)?
            .reshape((b, t, d))
    }
}

/// `vision_model`: patch and class embeddings, the pre-encoder norm CLIP adds (`pre_layrnorm`,
/// spelled so in the checkpoints), the encoder and the norm of the pooled class token.
#[derive(Debug, Clone)]
struct Vision {
    /// `[hidden]`.
    class_embedding: Tensor,
    /// `[hidden, channels, patch, patch]`: the bias-free patch convolution.
    patch_embedding: Tensor,
    /// `[1 + patches, hidden]`.
    position_embedding: Tensor,
    pre_layrnorm: Norm,
    stack: Stack,
    post_layernorm: Norm,
}

/// `text_model`: token and position embeddings, the causal encoder and the final norm.
#[derive(Debug, Clone)]
struct Text {
    /// `[vocab, hidden]`.
    token_embedding: Tensor,
    /// `[max_positions, hidden]`.
    position_embedding: Tensor,
    stack: Stack,
    final_layer_norm: Norm,
}

/// What [`Clip::vision`] returns.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// `[batch, 1 + patches, hidden]`: the last block's output (class token first), after the
    /// pre-encoder norm and without the post-norm, as transformers' `last_hidden_state`.
    pub last_hidden_state: Tensor,
    /// `[batch, projection_dim]`: the post-normed class token through `visual_projection`, not
    /// L2-normalised (transformers' `get_image_features`).
    pub image_embeds: Tensor,
}

/// What [`Clip::text`] returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `[batch, tokens, hidden]`, after the final norm.
    pub last_hidden_state: Tensor,
    /// `[batch, projection_dim]`: the pooled token through `text_projection`, not L2-normalised
    /// (transformers' `get_text_features`).
    pub text_embeds: Tensor,
}

/// CLIP's two towers and projections, loading HF `CLIPModel` checkpoints. Weights are plain
/// tensors under HF names.
///
/// PEFT sites: [`Hooks`] calls use one block index for both towers, vision blocks first
/// (`0..vision layers`) and text blocks after them (`vision layers..vision + text layers`), as
/// [`crate::T5`] numbers its decoder after its encoder, so a method that adapts "every block"
/// adapts both towers and one that wants a single tower picks its range
/// ([`Clip::num_vision_blocks`]). In each block `self_attn.{q,k,v,out}_proj` are the
/// [`LinearSite::Query`]…[`LinearSite::AttentionOutput`] sites and `mlp.fc1` / `mlp.fc2` the
/// [`LinearSite::Fc1`] / [`LinearSite::Fc2`] sites; [`Hooks::sublayer`] sees the attention and MLP
/// branches and [`Hooks::norm`] `layer_norm1` / `layer_norm2` ([`NormSite::BeforeAttention`] /
/// [`NormSite::BeforeMlp`]). The two towers' widths may differ, hence [`Clip::linear_dims`] takes
/// the block. Not sites yet: the embeddings' norms (`pre_layrnorm`, `post_layernorm`,
/// `final_layer_norm`), the projections, and the `tokens` and `prefix` hooks.
#[derive(Debug, Clone)]
pub struct Clip {
    cfg: ClipConfig,
    vision: Vision,
    text: Text,
    /// `[projection_dim, vision hidden]`, bias-free.
    visual_projection: Tensor,
    /// `[projection_dim, text hidden]`, bias-free.
    text_projection: Tensor,
    /// A scalar: the log of the inverse temperature of [`Clip::logits_per_image`].
    logit_scale: Tensor,
}

impl Clip {
    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// Builds the model from tensors under HF's `CLIPModel` names, checking every shape (other
    /// tensors, such as the `position_ids` buffers of older files, are ignored). `origin` names
    /// the source in errors.
    pub fn from_tensors(
        cfg: ClipConfig,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        let get =
            |key: &str, shape: &[usize]| crate::checkpoint::get_tensor(tensors, key, shape, origin);
        let (vc, tc) = (&cfg.vision_config, &cfg.text_config);
        let (dv, dt) = (vc.hidden_size, tc.hidden_size);
        let p = vc.patch_size;
        let vision = Vision {
            class_embedding: get("vision_model.embeddings.class_embedding", &[dv])?,
            patch_embedding: get(
                "vision_model.embeddings.patch_embedding.weight",
                &[dv, vc.num_channels, p, p],
            )?,
            position_embedding: get(
                "vision_model.embeddings.position_embedding.weight",
                &[vc.num_patches() + 1, dv],
            )?,
            pre_layrnorm: norm(&get, "vision_model.pre_layrnorm", dv, vc.layer_norm_eps)?,
            stack: Stack::new(&get, "vision_model", 0, vc.into())?,
            post_layernorm: norm(&get, "vision_model.post_layernorm", dv, vc.layer_norm_eps)?,
        };
        let text = Text {
            token_embedding: get(
                "text_model.embeddings.token_embedding.weight",
                &[tc.vocab_size, dt],
            )?,
            position_embedding: get(
                "text_model.embeddings.position_embedding.weight",
                &[tc.max_position_embeddings, dt],
            )?,
            stack: Stack::new(&get, "text_model", vc.num_hidden_layers, tc.into())?,
            final_layer_norm: norm(&get, "text_model.final_layer_norm", dt, tc.layer_norm_eps)?,
        };
        Ok(Self {
            visual_projection: get("visual_projection.weight", &[cfg.projection_dim, dv])?,
            text_projection: get("text_projection.weight", &[cfg.projection_dim, dt])?,
            logit_scale: get("logit_scale", &[])?,
            vision,
            text,
            cfg,
        })
    }

    /// Loads `config.json` + `model.safetensors` of a checkpoint folder.
    pub fn load(config_path: &Path, weights_path: &Path, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let cfg: ClipConfig = serde_json::from_str(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let tensors = candle_core::safetensors::load(weights_path, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights_path.display())))?;
        Self::from_tensors(cfg, &tensors, &weights_path.display().to_string())
    }

    /// Blocks of both towers, the index space of the [`Hooks`] calls (see [`Clip`]).
    pub fn num_blocks(&self) -> usize {
        self.vision.stack.blocks.len() + self.text.stack.blocks.len()
    }

    /// Vision blocks: hook indices below this are the vision tower's, the rest the text tower's.
    pub fn num_vision_blocks(&self) -> usize {
        self.vision.stack.blocks.len()
    }

    /// The tower holding hook block `layer`, and the block's index within it.
    fn stack(&self, layer: usize) -> (&Stack, usize) {
        match layer.checked_sub(self.num_vision_blocks()) {
            None => (&self.vision.stack, layer),
            Some(j) => (&self.text.stack, j),
        }
    }

    /// The frozen projection at `site` of hook block `layer`.
    pub fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        let (stack, block) = self.stack(layer);
        stack.blocks[block].linear(site)
    }

    /// `(in_features, out_features)` of the projection at `site` of hook block `layer` (the
    /// towers' widths differ).
    pub fn linear_dims(&self, layer: usize, site: LinearSite) -> (usize, usize) {
        let (stack, _) = self.stack(layer);
        let (d, f) = (stack.dims.hidden, stack.dims.inner);
        match site {
            LinearSite::Fc1 => (d, f),
            LinearSite::Fc2 => (f, d),
            _ => (d, d),
        }
    }

    /// Hook block `layer`'s module path in HF checkpoints, e.g. `text_model.encoder.layers.0`.
    pub fn block_path(&self, layer: usize) -> String {
        let (stack, block) = self.stack(layer);
        stack.block_path(block)
    }

    /// The projection's module path in HF checkpoints, e.g.
    /// `vision_model.encoder.layers.3.self_attn.q_proj`.
    pub fn module_path(&self, layer: usize, site: LinearSite) -> String {
        format!("{}.{}", self.block_path(layer), site_suffix(site))
    }

    /// Visits every tensor under its HF name, in a fixed order: the vision tower, the text tower,
    /// the projections and `logit_scale`.
    pub fn visit_params(
        &mut self,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        let v = &mut self.vision;
        f(
            "vision_model.embeddings.class_embedding",
            &mut v.class_embedding,
        )?;
        f(
            "vision_model.embeddings.patch_embedding.weight",
            &mut v.patch_embedding,
        )?;
        f(
            "vision_model.embeddings.position_embedding.weight",
            &mut v.position_embedding,
        )?;
        visit_norm("vision_model.pre_layrnorm", &mut v.pre_layrnorm, f)?;
        v.stack.visit(f)?;
        visit_norm("vision_model.post_layernorm", &mut v.post_layernorm, f)?;
        let t = &mut self.text;
        f(
            "text_model.embeddings.token_embedding.weight",
            &mut t.token_embedding,
        )?;
        f(
            "text_model.embeddings.position_embedding.weight",
            &mut t.position_embedding,
        )?;
        t.stack.visit(f)?;
        visit_norm("text_model.final_layer_norm", &mut t.final_layer_norm, f)?;
        f("visual_projection.weight", &mut self.visual_projection)?;
        f("text_projection.weight", &mut self.text_projection)?;
        f("logit_scale", &mut self.logit_scale)
    }

    /// The stream entering the first vision block: the class embedding before the patch
    /// embeddings, plus positions, through `pre_layrnorm`. The patch convolution is a matmul over
    /// non-overlapping patches (equal to it, and cheaper to differentiate than candle's conv2d).
    fn embed_image(&self, pixels: &Tensor) -> Result<Tensor> {
        let vc = &self.cfg.vision_config;
        let (b, c, h, w) = pixels.dims4()?;
        if c != vc.num_channels || h != vc.image_size || w != vc.image_size {
            candle_core::bail!(
                "CLIP expects [batch, {}, {}, {}] pixels, got {:?}",
                vc.num_channels,
                vc.image_size,
                vc.image_size,
                pixels.dims()
            );
        }
        let (p, d) = (vc.patch_size, vc.hidden_size);
        let (gh, gw) = (h / p, w / p);
        let patches = pixels
            .to_dtype(self.vision.patch_embedding.dtype())?
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * p * p))?;
        let weight = self.vision.patch_embedding.reshape((d, c * p * p))?;
        let patches = ops::linear(&patches, &weight, None)?;
        let class = self
            .vision
            .class_embedding
            .reshape((1, 1, d))?
            .repeat((b, 1, 1))?;
        let x =
            Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.vision.position_embedding)?;
        self.vision.pre_layrnorm.forward(&x)
    }

    /// The vision tower on `pixels` `[batch, channels, image, image]` (already normalised with
    /// CLIP's mean and std): the token states and the projected image embedding of the class
    /// token.
    pub fn vision(
        &self,
        pixels: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<ClipVisionOutput> {
        let x = self.embed_image(pixels)?;
        let last_hidden_state = self.vision.stack.forward(x, None, hooks, ctx)?;
        let pooled = self
            .vision
            .post_layernorm
            .forward(&last_hidden_state.i((.., 0, ..))?)?;
        Ok(ClipVisionOutput {
            image_embeds: ops::linear(&pooled, &self.visual_projection, None)?,
            last_hidden_state,
        })
    }

    /// The additive attention bias `[batch or 1, 1, tokens, tokens]` of the text tower: 0 where
    /// query `i` may see key `j` (`j <= i`, and key `j` not padding), the dtype's minimum
    /// elsewhere, as transformers' causal masks.
    fn text_bias(&self, tokens: usize, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let dtype = self.text.token_embedding.dtype();
        let device = self.text.token_embedding.device();
        let causal: Vec<u8> = (0..tokens)
            .flat_map(|i| (0..tokens).map(move |j| u8::from(j <= i)))
            .collect();
        let mut allowed = Tensor::from_vec(causal, (1, tokens, tokens), device)?.to_dtype(dtype)?;
        if let Some(mask) = attention_mask {
            allowed = allowed.broadcast_mul(&mask.to_dtype(dtype)?.unsqueeze(1)?)?;
        }
        allowed
            .affine(-f64::from(f32::MIN), f64::from(f32::MIN))?
            .unsqueeze(1)
    }

    /// The position whose state is the sentence's (the rule of [`Clip::text`]); the legacy rule
    /// works because OpenAI's tokenizer gives its end token the highest id.
    pub(crate) fn pooled_position(&self, ids: &[u32]) -> usize {
        let eos = self.cfg.text_config.eos_token_id;
        if eos == LEGACY_EOS_TOKEN_ID {
            let mut best = 0;
            for (i, &id) in ids.iter().enumerate() {
                if id > ids[best] {
                    best = i;
                }
            }
            best
        } else {
            ids.iter().position(|&id| id == eos).unwrap_or(0)
        }
    }

    /// The text tower on `input_ids` `[batch, tokens]` (at most `max_position_embeddings`
    /// tokens) with an optional 0/1 padding mask `[batch, tokens]`: the token states after the
    /// final norm and the projected state at the end token. The pooled position follows
    /// transformers 5's `CLIPTextTransformer`: with the legacy `eos_token_id` 2 (OpenAI's
    /// checkpoints) the first position of the highest id, otherwise the first position of
    /// `eos_token_id` (the first position when a row has none). With right padding the mask
    /// changes only the padded positions' states.
    pub fn text(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<ClipTextOutput> {
        let (b, t) = input_ids.dims2()?;
        let tc = &self.cfg.text_config;
        if t > tc.max_position_embeddings {
            candle_core::bail!(
                "CLIP's text tower takes at most {} tokens, got {t}",
                tc.max_position_embeddings
            );
        }
        let ids = input_ids.to_dtype(DType::U32)?;
        let x = self
            .text
            .token_embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, tc.hidden_size))?
            .broadcast_add(&self.text.position_embedding.narrow(0, 0, t)?)?;
        let bias = self.text_bias(t, attention_mask)?;
        let x = self.text.stack.forward(x, Some(&bias), hooks, ctx)?;
        let last_hidden_state = self.text.final_layer_norm.forward(&x)?;
        let rows: Vec<u32> = ids
            .to_vec2::<u32>()?
            .iter()
            .enumerate()
            .map(|(r, row)| (r * t + self.pooled_position(row)) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, input_ids.device())?;
        let pooled = last_hidden_state
            .reshape((b * t, tc.hidden_size))?
            .index_select(&rows, 0)?;
        Ok(ClipTextOutput {
            text_embeds: ops::linear(&pooled, &self.text_projection, None)?,
            last_hidden_state,
        })
    }

    /// The vision tower's `post_layernorm` (the norm of the pooled class token).
    pub(crate) fn vision_post_layernorm(&self) -> &Norm {
        &self.vision.post_layernorm
    }

    /// `visual_projection.weight` `[projection_dim, vision hidden]`.
    pub fn visual_projection(&self) -> &Tensor {
        &self.visual_projection
    }

    /// `text_projection.weight` `[projection_dim, text hidden]`.
    pub fn text_projection(&self) -> &Tensor {
        &self.text_projection
    }

    /// The checkpoint's `logit_scale` (a scalar; its `exp` multiplies the cosine similarities).
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// `[images, texts]` similarity logits, transformers' `logits_per_image`: the cosine
    /// similarity of the L2-normalised embeddings times `exp(logit_scale)`.
    pub fn logits_per_image(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let normalise = |x: &Tensor| x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?);
        normalise(image_embeds)?
            .matmul(&normalise(text_embeds)?.t()?)?
            .broadcast_mul(&self.logit_scale.exp()?)
    }
}
