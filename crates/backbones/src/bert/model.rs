use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use peftbench_core::{ops, ForwardCtx, SeededInit};

use super::BertConfig;
use crate::checkpoint::get_tensor;
use crate::sites::{Hooks, Linear, LinearSite, NormSite, Sublayer};
use crate::{Backbone, BackboneInfo};

/// How [`Backbone::forward_features`] turns the token states into one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token's final state (`[CLS]` / `<s>`), as BERT's and XLM-R's classifiers read it
    /// (without BERT's extra pooler layer, which most PEFT setups leave out).
    #[default]
    Cls,
    /// The mean of the final states of the attended tokens (sentence-transformers' mean pooling).
    Mean,
}

/// A layer norm whose affine parameters may be frozen or trained (BitFit trains the bias).
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
}

impl Norm {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// One post-norm block, named as in HF's `BertLayer`.
#[derive(Debug, Clone)]
struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    fc1: Linear,
    fc2: Linear,
    /// `attention.output.LayerNorm`: normalises stream + attention branch.
    attention_norm: Norm,
    /// `output.LayerNorm`: normalises stream + MLP branch.
    output_norm: Norm,
}

impl Block {
    fn linear(&self, site: LinearSite) -> &Linear {
        match site {
            LinearSite::Query => &self.query,
            LinearSite::Key => &self.key,
            LinearSite::Value => &self.value,
            LinearSite::AttentionOutput => &self.attention_output,
            LinearSite::Fc1 => &self.fc1,
            LinearSite::Fc2 => &self.fc2,
            cross => crate::sites::no_cross_attention("BERT-family", cross),
        }
    }
}

/// A BERT-family encoder (BERT, mBERT, MiniLM, XLM-R). Weights are plain tensors; see
/// [`Backbone::visit_params`] for training them.
#[derive(Debug, Clone)]
pub struct Bert {
    cfg: BertConfig,
    info: BackboneInfo,
    pooling: Pooling,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: Norm,
    blocks: Vec<Block>,
}

fn site_suffix(site: LinearSite) -> &'static str {
    match site {
        LinearSite::Query => "attention.self.query",
        LinearSite::Key => "attention.self.key",
        LinearSite::Value => "attention.self.value",
        LinearSite::AttentionOutput => "attention.output.dense",
        LinearSite::Fc1 => "intermediate.dense",
        LinearSite::Fc2 => "output.dense",
        cross => crate::sites::no_cross_attention("BERT-family", cross),
    }
}

fn site_dims(cfg: &BertConfig, site: LinearSite) -> (usize, usize) {
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    match site {
        LinearSite::Fc1 => (d, f),
        LinearSite::Fc2 => (f, d),
        _ => (d, d),
    }
}

/// Finds the prefix (`bert.`, `roberta.`, or none) under which `tensors` hold the encoder.
pub(crate) fn encoder_prefix(tensors: &HashMap<String, Tensor>, origin: &str) -> Result<String> {
    for prefix in ["", "bert.", "roberta."] {
        if tensors.contains_key(&format!("{prefix}embeddings.word_embeddings.weight")) {
            return Ok(prefix.to_string());
        }
    }
    candle_core::bail!(
        "{origin}: no `embeddings.word_embeddings.weight` (with or without a `bert.` / `roberta.` \
         prefix): not a BERT-family checkpoint"
    )
}

/// Reads `config.json`, naming the file in errors.
pub(crate) fn read_config(path: &Path) -> Result<BertConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))
}

impl Bert {
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Chooses how [`Backbone::forward_features`] pools tokens (CLS by default).
    pub fn set_pooling(&mut self, pooling: Pooling) {
        self.pooling = pooling;
    }

    /// The `[vocab, hidden]` token embeddings (tied to the masked-LM decoder).
    pub fn word_embeddings(&self) -> &Tensor {
        &self.word_embeddings
    }

    /// The sizes methods see, from the configuration alone.
    pub fn info_for(cfg: &BertConfig) -> BackboneInfo {
        BackboneInfo {
            family: cfg.model_type.clone(),
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_hidden_layers,
            num_heads: cfg.num_attention_heads,
            intermediate_size: cfg.intermediate_size,
            num_tokens: cfg.max_tokens(),
        }
    }

    /// Builds the encoder from named tensors (keys with or without the `bert.` / `roberta.`
    /// prefix; task heads are ignored), checking every shape. `origin` names the source in errors.
    pub fn from_tensors(
        cfg: BertConfig,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        let prefix = encoder_prefix(tensors, origin)?;
        let get = |name: &str, shape: &[usize]| {
            get_tensor(tensors, &format!("{prefix}{name}"), shape, origin)
        };
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        let linear = |name: String, out: usize, inp: usize| -> Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{name}.weight"), &[out, inp])?,
                bias: Some(get(&format!("{name}.bias"), &[out])?),
            })
        };
        let norm = |name: String| -> Result<Norm> {
            Ok(Norm {
                weight: get(&format!("{name}.weight"), &[d])?,
                bias: get(&format!("{name}.bias"), &[d])?,
                eps: cfg.layer_norm_eps,
            })
        };
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let base = format!("encoder.layer.{l}");
            let site = |s: LinearSite| format!("{base}.{}", site_suffix(s));
            blocks.push(Block {
                query: linear(site(LinearSite::Query), d, d)?,
                key: linear(site(LinearSite::Key), d, d)?,
                value: linear(site(LinearSite::Value), d, d)?,
                attention_output: linear(site(LinearSite::AttentionOutput), d, d)?,
                fc1: linear(site(LinearSite::Fc1), f, d)?,
                fc2: linear(site(LinearSite::Fc2), d, f)?,
                attention_norm: norm(format!("{base}.attention.output.LayerNorm"))?,
                output_norm: norm(format!("{base}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            info: Self::info_for(&cfg),
            pooling: Pooling::default(),
            word_embeddings: get("embeddings.word_embeddings.weight", &[cfg.vocab_size, d])?,
            position_embeddings: get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, d],
            )?,
            token_type_embeddings: get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, d],
            )?,
            embeddings_norm: norm("embeddings.LayerNorm".into())?,
            blocks,
            cfg,
        })
    }

    /// Loads `config.json` + `model.safetensors` from a checkpoint folder.
    pub fn load(config_path: &Path, weights_path: &Path, device: &Device) -> Result<Self> {
        let cfg = read_config(config_path)?;
        let tensors = candle_core::safetensors::load(weights_path, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights_path.display())))?;
        Self::from_tensors(cfg, &tensors, &weights_path.display().to_string())
    }

    /// A randomly initialised encoder as HF's `BertPreTrainedModel._init_weights` does it
    /// (normal 0.02 for weights and embeddings, the padding embedding zero, zero biases, unit
    /// norms), from a seed.
    pub fn random(cfg: BertConfig, init: &SeededInit) -> Result<Self> {
        let std = cfg.initializer_range as f32;
        let mut tensors = HashMap::new();
        for (name, shape) in Self::param_shapes(&cfg) {
            let value = if name.ends_with("LayerNorm.weight") {
                init.constant(shape.as_slice(), 1.0)?.as_tensor().detach()
            } else if name.ends_with(".bias") {
                init.zeros(shape.as_slice())?.as_tensor().detach()
            } else {
                let w = init.fork(&name).normal(shape.as_slice(), std)?;
                let w = w.as_tensor().detach();
                if name == "embeddings.word_embeddings.weight" {
                    zero_row(&w, cfg.pad_token_id as usize)?
                } else {
                    w
                }
            };
            tensors.insert(name, value);
        }
        Self::from_tensors(cfg, &tensors, "random init")
    }

    /// Names (without the model prefix) and shapes of every tensor, in checkpoint order.
    fn param_shapes(cfg: &BertConfig) -> Vec<(String, Vec<usize>)> {
        let d = cfg.hidden_size;
        let mut out = vec![
            (
                "embeddings.word_embeddings.weight".to_string(),
                vec![cfg.vocab_size, d],
            ),
            (
                "embeddings.position_embeddings.weight".to_string(),
                vec![cfg.max_position_embeddings, d],
            ),
            (
                "embeddings.token_type_embeddings.weight".to_string(),
                vec![cfg.type_vocab_size, d],
            ),
            ("embeddings.LayerNorm.weight".to_string(), vec![d]),
            ("embeddings.LayerNorm.bias".to_string(), vec![d]),
        ];
        for l in 0..cfg.num_hidden_layers {
            let base = format!("encoder.layer.{l}");
            for site in LinearSite::ALL {
                let (i, o) = site_dims(cfg, site);
                out.push((format!("{base}.{}.weight", site_suffix(site)), vec![o, i]));
                out.push((format!("{base}.{}.bias", site_suffix(site)), vec![o]));
            }
            for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                out.push((format!("{base}.{n}.weight"), vec![d]));
                out.push((format!("{base}.{n}.bias"), vec![d]));
            }
        }
        out
    }

    /// Converts every weight to `dtype` (f64 for finite-difference gradient checks).
    pub fn cast(&mut self, dtype: DType) -> Result<()> {
        self.visit_params(&mut |_, t| {
            *t = t.to_dtype(dtype)?;
            Ok(())
        })
    }

    /// Every encoder tensor under its HF checkpoint name (`bert.…` / `roberta.…`).
    pub fn named_tensors(&mut self) -> Result<HashMap<String, Tensor>> {
        let mut tensors = HashMap::new();
        self.visit_params(&mut |name, t| {
            tensors.insert(name.to_string(), t.detach());
            Ok(())
        })?;
        Ok(tensors)
    }

    /// The attention mask as 0/1 in the model's dtype: `attention_mask` when given, otherwise
    /// every token that is not `pad_token_id` (tokenizers pad with it and never emit it otherwise).
    pub fn mask_for(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let dtype = self.word_embeddings.dtype();
        match attention_mask {
            Some(mask) => {
                if mask.dims() != ids.dims() {
                    candle_core::bail!(
                        "attention mask {:?} does not match token ids {:?}",
                        mask.dims(),
                        ids.dims()
                    );
                }
                mask.to_dtype(dtype)
            }
            None => ids.ne(self.cfg.pad_token_id)?.to_dtype(dtype),
        }
    }

    /// Word + position + token-type embeddings, normalised (the input of block 0).
    fn embed(
        &self,
        ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let d = self.cfg.hidden_size;
        if t > self.cfg.max_tokens() {
            candle_core::bail!(
                "{t} tokens exceed the model's {} positions",
                self.cfg.max_tokens()
            );
        }
        let words = self
            .word_embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        let positions = if self.cfg.roberta_positions() {
            // HF's create_position_ids_from_input_ids: pad + cumsum(not pad), padding at pad.
            let not_pad = ids.ne(self.cfg.pad_token_id)?.to_dtype(DType::F32)?;
            let numbered = (not_pad.cumsum(1)? * &not_pad)?;
            let ids = (numbered + f64::from(self.cfg.pad_token_id))?.to_dtype(DType::U32)?;
            self.position_embeddings
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, t, d))?
        } else {
            self.position_embeddings.narrow(0, 0, t)?.unsqueeze(0)?
        };
        let types = match token_type_ids {
            Some(types) => self
                .token_type_embeddings
                .index_select(&types.to_dtype(DType::U32)?.flatten_all()?, 0)?
                .reshape((b, t, d))?,
            None => self.token_type_embeddings.i(0)?.reshape((1, 1, d))?,
        };
        let x = words.broadcast_add(&positions)?.broadcast_add(&types)?;
        let x = self.embeddings_norm.forward(&x)?;
        let x = hooks.norm(Some(0), NormSite::BeforeAttention, x, ctx)?;
        ctx.dropout(&x, self.cfg.hidden_dropout_prob)
    }

    fn attention(
        &self,
        layer: usize,
        x: &Tensor,
        mask_bias: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let block = &self.blocks[layer];
        let (b, t, d) = x.dims3()?;
        let (heads, hd) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let q = hooks.linear(layer, LinearSite::Query, x, &block.query, ctx)?;
        let mut k = hooks.linear(layer, LinearSite::Key, x, &block.key, ctx)?;
        let mut v = hooks.linear(layer, LinearSite::Value, x, &block.value, ctx)?;
        let mut mask_bias = mask_bias.clone();
        if let Some((pk, pv)) = hooks.prefix(layer, b, ctx)? {
            // Prefix keys are always attended.
            let p = pk.dim(1)?;
            let attended = Tensor::zeros((b, 1, 1, p), mask_bias.dtype(), mask_bias.device())?;
            mask_bias = Tensor::cat(&[&attended, &mask_bias], 3)?;
            k = Tensor::cat(&[&pk, &k], 1)?;
            v = Tensor::cat(&[&pv, &v], 1)?;
        }
        let s = k.dim(1)?;
        let split = |x: Tensor, n: usize| -> Result<Tensor> {
            x.reshape((b, n, heads, hd))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (split(q, t)?, split(k, s)?, split(v, s)?);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let scores = scores.broadcast_add(&mask_bias)?;
        let probs = ops::softmax_last_dim(&scores)?;
        let probs = ctx.dropout(&probs, self.cfg.attention_probs_dropout_prob)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let out = hooks.linear(
            layer,
            LinearSite::AttentionOutput,
            &context,
            &block.attention_output,
            ctx,
        )?;
        ctx.dropout(&out, self.cfg.hidden_dropout_prob)
    }

    fn mlp(&self, layer: usize, x: &Tensor, hooks: &dyn Hooks, ctx: &ForwardCtx) -> Result<Tensor> {
        let block = &self.blocks[layer];
        let h = hooks.linear(layer, LinearSite::Fc1, x, &block.fc1, ctx)?;
        let h = self.cfg.hidden_act.apply(&h)?;
        let h = hooks.linear(layer, LinearSite::Fc2, &h, &block.fc2, ctx)?;
        ctx.dropout(&h, self.cfg.hidden_dropout_prob)
    }

    /// The final token states `[batch, tokens', hidden]` and the 0/1 mask `[batch, tokens']` over
    /// them, for token ids `[batch, tokens]` (u32 or i64). `attention_mask` defaults to the
    /// non-padding tokens, `token_type_ids` to segment 0.
    ///
    /// BERT is post-norm, so each block computes `h = LN(x + attn(x))`, `x = LN(h + mlp(h))`; the
    /// hooks see each branch output before its residual add, and each norm's output as the norm
    /// feeding the next site (the embedding norm is block 0's `BeforeAttention`, a block's
    /// attention norm its `BeforeMlp`, its output norm the next block's `BeforeAttention` or,
    /// after the last block, `Final`). Tokens a `tokens` hook inserts (prompts) are expected right
    /// after the first token, as VPT places them, and are always attended; `tokens'` counts them.
    pub fn forward_tokens(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<(Tensor, Tensor)> {
        let ids = ids.to_dtype(DType::U32)?;
        let mut mask = self.mask_for(&ids, attention_mask)?;
        let mut x = self.embed(&ids, token_type_ids, hooks, ctx)?;
        let layers = self.blocks.len();
        for (l, block) in self.blocks.iter().enumerate() {
            x = hooks.tokens(l, x, ctx)?;
            mask = extend_mask_for_prompts(&mask, x.dim(1)?)?;
            // 0 where attended, the dtype's minimum where masked (as HF's extended mask).
            let mask_bias = mask
                .affine(-f64::from(f32::MIN), f64::from(f32::MIN))?
                .unsqueeze(1)?
                .unsqueeze(1)?;
            let a = self.attention(l, &x, &mask_bias, hooks, ctx)?;
            let a = hooks.sublayer(l, Sublayer::Attention, &x, a, ctx)?;
            let h = block.attention_norm.forward(&(&x + a)?)?;
            let h = hooks.norm(Some(l), NormSite::BeforeMlp, h, ctx)?;
            let m = self.mlp(l, &h, hooks, ctx)?;
            let m = hooks.sublayer(l, Sublayer::Mlp, &h, m, ctx)?;
            x = block.output_norm.forward(&(&h + m)?)?;
            x = if l + 1 < layers {
                hooks.norm(Some(l + 1), NormSite::BeforeAttention, x, ctx)?
            } else {
                hooks.norm(None, NormSite::Final, x, ctx)?
            };
        }
        Ok((x, mask))
    }

    /// One vector per text `[batch, hidden]` from [`Bert::forward_tokens`]' output, by `pooling`.
    pub fn pool(states: &Tensor, mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
        match pooling {
            Pooling::Cls => states.i((.., 0, ..)),
            Pooling::Mean => {
                let mask = mask.to_dtype(states.dtype())?.unsqueeze(D::Minus1)?;
                let summed = states.broadcast_mul(&mask)?.sum(1)?;
                // sentence-transformers clamps the count at 1e-9; a row always has [CLS].
                let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)
            }
        }
    }
}

/// Sets row `row` of a `[rows, cols]` matrix to zero.
fn zero_row(w: &Tensor, row: usize) -> Result<Tensor> {
    let (rows, _) = w.dims2()?;
    let keep: Vec<f32> = (0..rows)
        .map(|r| if r == row { 0.0 } else { 1.0 })
        .collect();
    let keep = Tensor::from_vec(keep, (rows, 1), w.device())?.to_dtype(w.dtype())?;
    w.broadcast_mul(&keep)
}

/// The mask after a `tokens` hook grew the stream to `tokens` entries: the new ones (inserted
/// after the first token) are attended.
fn extend_mask_for_prompts(mask: &Tensor, tokens: usize) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    if tokens == t {
        return Ok(mask.clone());
    }
    if tokens < t {
        candle_core::bail!("a tokens hook removed tokens ({t} -> {tokens})");
    }
    let prompts = Tensor::ones((b, tokens - t), mask.dtype(), mask.device())?;
    Tensor::cat(
        &[&mask.narrow(1, 0, 1)?, &prompts, &mask.narrow(1, 1, t - 1)?],
        1,
    )
}

impl Backbone for Bert {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn linear_dims(&self, site: LinearSite) -> (usize, usize) {
        site_dims(&self.cfg, site)
    }

    fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        self.blocks[layer].linear(site)
    }

    fn block_path(&self, layer: usize) -> String {
        format!("{}.encoder.layer.{layer}", self.cfg.base_model_prefix())
    }

    fn final_norm_path(&self) -> Option<String> {
        None
    }

    fn module_path(&self, layer: usize, site: LinearSite) -> String {
        format!("{}.{}", self.block_path(layer), site_suffix(site))
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        let p = self.cfg.base_model_prefix();
        f(
            &format!("{p}.embeddings.word_embeddings.weight"),
            &mut self.word_embeddings,
        )?;
        f(
            &format!("{p}.embeddings.position_embeddings.weight"),
            &mut self.position_embeddings,
        )?;
        f(
            &format!("{p}.embeddings.token_type_embeddings.weight"),
            &mut self.token_type_embeddings,
        )?;
        f(
            &format!("{p}.embeddings.LayerNorm.weight"),
            &mut self.embeddings_norm.weight,
        )?;
        f(
            &format!("{p}.embeddings.LayerNorm.bias"),
            &mut self.embeddings_norm.bias,
        )?;
        for (l, block) in self.blocks.iter_mut().enumerate() {
            let base = format!("{p}.encoder.layer.{l}");
            let Block {
                query,
                key,
                value,
                attention_output,
                fc1,
                fc2,
                attention_norm,
                output_norm,
            } = block;
            for (site, lin) in [
                (LinearSite::Query, query),
                (LinearSite::Key, key),
                (LinearSite::Value, value),
                (LinearSite::AttentionOutput, attention_output),
                (LinearSite::Fc1, fc1),
                (LinearSite::Fc2, fc2),
            ] {
                let path = format!("{base}.{}", site_suffix(site));
                f(&format!("{path}.weight"), &mut lin.weight)?;
                if let Some(bias) = lin.bias.as_mut() {
                    f(&format!("{path}.bias"), bias)?;
                }
            }
            for (name, norm) in [
                ("attention.output.LayerNorm", attention_norm),
                ("output.LayerNorm", output_norm),
            ] {
                f(&format!("{base}.{name}.weight"), &mut norm.weight)?;
                f(&format!("{base}.{name}.bias"), &mut norm.bias)?;
            }
        }
        Ok(())
    }

    /// Token ids `[batch, tokens]` (padding = `pad_token_id`), or sentence pairs `[batch, 2,
    /// tokens]` (see [`split_pair_input`]), to pooled features `[batch, hidden]`.
    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (ids, types) = split_pair_input(input)?;
        let (states, mask) = self.forward_tokens(&ids, None, types.as_ref(), hooks, ctx)?;
        Self::pool(&states, &mask, self.pooling)
    }

    fn forward_sequence(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (ids, types) = split_pair_input(input)?;
        let t = ids.dim(1)?;
        let (states, _) = self.forward_tokens(&ids, None, types.as_ref(), hooks, ctx)?;
        drop_prompt_states(&states, t)
    }
}

/// The model input of a text backbone: token ids `[batch, tokens]`, or, for sentence pairs (a
/// cross-encoder's `[CLS] query [SEP] document [SEP]`), ids and segment ids stacked as `[batch, 2,
/// tokens]` (row 0 the ids, row 1 the token type of each). A `[batch, tokens]` input is all
/// segment 0, as HF's default `token_type_ids`.
pub fn split_pair_input(input: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
    match input.rank() {
        2 => Ok((input.clone(), None)),
        3 if input.dim(1)? == 2 => Ok((
            input.i((.., 0, ..))?.contiguous()?,
            Some(input.i((.., 1, ..))?.contiguous()?),
        )),
        _ => candle_core::bail!(
            "text input must be token ids [batch, tokens] or pairs [batch, 2, tokens], got {:?}",
            input.dims()
        ),
    }
}

/// The states of the input's own tokens: prompts a hook inserted after the first token removed.
fn drop_prompt_states(states: &Tensor, tokens: usize) -> Result<Tensor> {
    let t = states.dim(1)?;
    if t == tokens {
        return Ok(states.clone());
    }
    let prompts = t - tokens;
    Tensor::cat(
        &[
            &states.narrow(1, 0, 1)?,
            &states.narrow(1, 1 + prompts, tokens - 1)?,
        ],
        1,
    )
}
