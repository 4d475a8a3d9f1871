use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use peftbench_core::{ops, ForwardCtx};

use super::{FeedForwardProj, T5Config};
use crate::sites::{Hooks, Linear, LinearSite, NormSite, Sublayer};
use crate::{Backbone, BackboneInfo};

/// Labels with this value are ignored by [`T5::loss`] (PyTorch's `ignore_index`).
const IGNORE_INDEX: i64 = -100;

/// The score transformers' beam search gives to candidates that may not be chosen.
const EXCLUDED: f32 = -1.0e9;

/// T5's layer norm: `x / sqrt(mean(x^2) + eps) * weight`, no centring and no bias (RMS norm).
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(cfg: &T5Config, get: &Getter<'_>, name: &str) -> Result<Self> {
        Ok(Self {
            weight: get(&format!("{name}.weight"), &[cfg.d_model])?,
            eps: cfg.layer_norm_epsilon,
        })
    }

    /// Built from candle primitives so that gradients reach the input and the weight.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(variance + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)
    }
}

/// Looks a tensor up by its checkpoint name, checking its shape.
type Getter<'a> = dyn Fn(&str, &[usize]) -> Result<Tensor> + 'a;

/// A bias-free projection `[out, in]` (T5 has no biases anywhere).
fn linear(get: &Getter<'_>, name: &str, out: usize, inp: usize) -> Result<Linear> {
    Ok(Linear {
        weight: get(&format!("{name}.weight"), &[out, inp])?,
        bias: None,
    })
}

/// One attention layer's projections (`SelfAttention` or `EncDecAttention`) and, in the first block
/// of each stack's self-attention only, the relative position bias table `[buckets, heads]`.
#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Option<Tensor>,
}

impl Attention {
    fn new(cfg: &T5Config, get: &Getter<'_>, name: &str, with_bias: bool) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.inner_dim());
        Ok(Self {
            q: linear(get, &format!("{name}.q"), inner, d)?,
            k: linear(get, &format!("{name}.k"), inner, d)?,
            v: linear(get, &format!("{name}.v"), inner, d)?,
            o: linear(get, &format!("{name}.o"), d, inner)?,
            relative_attention_bias: if with_bias {
                Some(get(
                    &format!("{name}.relative_attention_bias.weight"),
                    &[cfg.relative_attention_num_buckets, cfg.num_heads],
                )?)
            } else {
                None
            },
        })
    }

    /// The projection of an attention site: the self-attention sites, or the cross-attention
    /// ones on an `EncDecAttention` layer.
    fn linear(&self, site: LinearSite) -> Option<&Linear> {
        match site {
            LinearSite::Query | LinearSite::CrossQuery => Some(&self.q),
            LinearSite::Key | LinearSite::CrossKey => Some(&self.k),
            LinearSite::Value | LinearSite::CrossValue => Some(&self.v),
            LinearSite::AttentionOutput | LinearSite::CrossAttentionOutput => Some(&self.o),
            LinearSite::Fc1 | LinearSite::Fc2 => None,
        }
    }

    fn visit(
        &mut self,
        name: &str,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        for (p, lin) in [
            ("q", &mut self.q),
            ("k", &mut self.k),
            ("v", &mut self.v),
            ("o", &mut self.o),
        ] {
            f(&format!("{name}.{p}.weight"), &mut lin.weight)?;
        }
        if let Some(table) = self.relative_attention_bias.as_mut() {
            f(&format!("{name}.relative_attention_bias.weight"), table)?;
        }
        Ok(())
    }
}

/// The feed-forward block (`DenseReluDense`): `wi` is the [`LinearSite::Fc1`] site (`wi_0`, the
/// activated half, when gated) and `wo` the [`LinearSite::Fc2`] site.
#[derive(Debug, Clone)]
struct FeedForward {
    proj: FeedForwardProj,
    wi: Linear,
    /// `wi_1`, the linear half of the gated variant.
    gate: Option<Linear>,
    wo: Linear,
}

impl FeedForward {
    fn new(cfg: &T5Config, get: &Getter<'_>, name: &str) -> Result<Self> {
        let (d, f) = (cfg.d_model, cfg.d_ff);
        let proj = cfg.feed_forward_proj;
        let gate = match proj {
            FeedForwardProj::Relu => None,
            FeedForwardProj::GatedGelu => Some(linear(get, &format!("{name}.wi_1"), f, d)?),
        };
        Ok(Self {
            proj,
            wi: linear(get, &format!("{name}.{}", proj.wi_name()), f, d)?,
            gate,
            wo: linear(get, &format!("{name}.wo"), d, f)?,
        })
    }

    fn visit(
        &mut self,
        name: &str,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        f(
            &format!("{name}.{}.weight", self.proj.wi_name()),
            &mut self.wi.weight,
        )?;
        if let Some(gate) = self.gate.as_mut() {
            f(&format!("{name}.wi_1.weight"), &mut gate.weight)?;
        }
        f(&format!("{name}.wo.weight"), &mut self.wo.weight)
    }

    fn forward(
        &self,
        layer: usize,
        x: &Tensor,
        dropout: f64,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let h = hooks.linear(layer, LinearSite::Fc1, x, &self.wi, ctx)?;
        let h = match &self.gate {
            // `x.gelu()` is candle's tanh approximation, HF's `gelu_new`.
            Some(gate) => (h.gelu()? * gate.forward(x)?)?,
            None => h.relu()?,
        };
        let h = ctx.dropout(&h, dropout)?;
        hooks.linear(layer, LinearSite::Fc2, &h, &self.wo, ctx)
    }
}

/// An encoder block (`encoder.block.N`): `layer.0` self-attention, `layer.1` feed-forward.
#[derive(Debug, Clone)]
struct EncoderBlock {
    attention_norm: RmsNorm,
    attention: Attention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

impl EncoderBlock {
    fn new(cfg: &T5Config, get: &Getter<'_>, index: usize) -> Result<Self> {
        let base = format!("encoder.block.{index}.layer");
        Ok(Self {
            attention_norm: RmsNorm::new(cfg, get, &format!("{base}.0.layer_norm"))?,
            attention: Attention::new(cfg, get, &format!("{base}.0.SelfAttention"), index == 0)?,
            ff_norm: RmsNorm::new(cfg, get, &format!("{base}.1.layer_norm"))?,
            ff: FeedForward::new(cfg, get, &format!("{base}.1.DenseReluDense"))?,
        })
    }
}

/// A decoder block (`decoder.block.N`): `layer.0` causal self-attention, `layer.1` cross-attention
/// over the encoder output, `layer.2` feed-forward.
#[derive(Debug, Clone)]
struct DecoderBlock {
    self_norm: RmsNorm,
    self_attention: Attention,
    cross_norm: RmsNorm,
    cross_attention: Attention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

impl DecoderBlock {
    fn new(cfg: &T5Config, get: &Getter<'_>, index: usize) -> Result<Self> {
        let base = format!("decoder.block.{index}.layer");
        Ok(Self {
            self_norm: RmsNorm::new(cfg, get, &format!("{base}.0.layer_norm"))?,
            self_attention: Attention::new(
                cfg,
                get,
                &format!("{base}.0.SelfAttention"),
                index == 0,
            )?,
            cross_norm: RmsNorm::new(cfg, get, &format!("{base}.1.layer_norm"))?,
            cross_attention: Attention::new(cfg, get, &format!("{base}.1.EncDecAttention"), false)?,
            ff_norm: RmsNorm::new(cfg, get, &format!("{base}.2.layer_norm"))?,
            ff: FeedForward::new(cfg, get, &format!("{base}.2.DenseReluDense"))?,
        })
    }
}

/// The decoder's state between generation steps: every self-attention's keys and values so far
/// (`[batch, heads, steps, d_kv]`, appended each step) and every cross-attention's keys and values
/// over the encoder output (computed once), with the encoder padding mask.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    /// `[batch, 1, 1, source]`: 0 for attended encoder positions, the dtype's minimum otherwise.
    cross_mask: Tensor,
    len: usize,
}

impl DecoderCache {
    /// Decoder positions seen so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps, in order, the batch rows `rows` (u32 `[new_batch]`): beam search's reordering.
    fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        let pick = |t: &Tensor| t.index_select(rows, 0);
        for kv in self.self_kv.iter_mut().flatten() {
            *kv = (pick(&kv.0)?, pick(&kv.1)?);
        }
        for kv in self.cross_kv.iter_mut() {
            *kv = (pick(&kv.0)?, pick(&kv.1)?);
        }
        self.cross_mask = pick(&self.cross_mask)?;
        Ok(())
    }
}

/// T5 encoder-decoder with an LM head. Weights are plain tensors in HF's layout.
///
/// PEFT sites: [`Hooks`] calls use one block index for both stacks, encoder blocks first
/// (`0..num_layers`) and decoder blocks after them (`num_layers..num_layers +
/// num_decoder_layers`), so a method that adapts "every block" adapts both stacks. In each block
/// the self-attention's `q`/`k`/`v`/`o` are the [`LinearSite::Query`]…[`LinearSite::AttentionOutput`]
/// sites and the feed-forward's `wi` (`wi_0`) and `wo` the [`LinearSite::Fc1`] / [`LinearSite::Fc2`]
/// sites; in decoder blocks the cross-attention's (`EncDecAttention`) `q`/`k`/`v`/`o` are the
/// [`LinearSite::CROSS_ATTENTION`] sites ([`LinearSite::CrossQuery`]…
/// [`LinearSite::CrossAttentionOutput`]), `k` and `v` applied to the encoder output once per
/// [`DecoderCache`]. [`Hooks::sublayer`] sees the self-attention and feed-forward branches and
/// [`Hooks::norm`] the norms before them, and the encoder's final norm as [`NormSite::Final`]. The
/// cross-attention's branch and norm, the gated feed-forward's `wi_1`, the decoder's final norm,
/// and the `tokens` and `prefix` hooks are not sites yet.
#[derive(Debug, Clone)]
pub struct T5 {
    cfg: T5Config,
    /// `shared`: the token embeddings of both stacks (and the head when tied).
    shared: Tensor,
    encoder: Vec<EncoderBlock>,
    encoder_norm: RmsNorm,
    decoder: Vec<DecoderBlock>,
    /// `None` for an encoder alone (`T5EncoderModel`, as MusicGen's text encoder).
    decoder_norm: Option<RmsNorm>,
    /// `lm_head.weight` `[vocab, d_model]`; `None` when the head is `shared`.
    lm_head: Option<Tensor>,
    info: BackboneInfo,
}

impl T5 {
    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// Where the weights live.
    pub fn device(&self) -> &Device {
        self.shared.device()
    }

    /// Builds the model from tensors under HF's `T5ForConditionalGeneration` names, checking every
    /// shape. The head is `lm_head.weight` when `tie_word_embeddings` is false (FLAN-T5) and the
    /// embeddings otherwise. `origin` names the source in errors.
    pub fn from_tensors(
        cfg: T5Config,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        let get =
            |key: &str, shape: &[usize]| crate::checkpoint::get_tensor(tensors, key, shape, origin);
        let (v, d) = (cfg.vocab_size, cfg.d_model);
        // Older files store the embeddings only under the stacks' names.
        let shared_key = ["shared.weight", "encoder.embed_tokens.weight"]
            .into_iter()
            .find(|k| tensors.contains_key(*k))
            .unwrap_or("shared.weight");
        // A tied checkpoint may still carry a copy of the head; it must stay one tensor.
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(get("lm_head.weight", &[v, d])?)
        };
        let norm = |name: &str| RmsNorm::new(&cfg, &get, name);
        Ok(Self {
            shared: get(shared_key, &[v, d])?,
            encoder: (0..cfg.num_layers)
                .map(|l| EncoderBlock::new(&cfg, &get, l))
                .collect::<Result<_>>()?,
            encoder_norm: norm("encoder.final_layer_norm")?,
            decoder: (0..cfg.decoder_layers())
                .map(|l| DecoderBlock::new(&cfg, &get, l))
                .collect::<Result<_>>()?,
            decoder_norm: Some(norm("decoder.final_layer_norm")?),
            lm_head,
            info: Self::info_for(&cfg),
            cfg,
        })
    }

    /// The encoder alone, from tensors under HF's `T5EncoderModel` names (`shared.weight`,
    /// `encoder.*`): MusicGen's text encoder. It encodes like a whole T5 and refuses to decode;
    /// its configuration records no decoder blocks.
    pub fn encoder_from_tensors(
        cfg: T5Config,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        let cfg = T5Config {
            num_decoder_layers: Some(0),
            ..cfg
        };
        let get =
            |key: &str, shape: &[usize]| crate::checkpoint::get_tensor(tensors, key, shape, origin);
        let shared_key = ["shared.weight", "encoder.embed_tokens.weight"]
            .into_iter()
            .find(|k| tensors.contains_key(*k))
            .unwrap_or("shared.weight");
        Ok(Self {
            shared: get(shared_key, &[cfg.vocab_size, cfg.d_model])?,
            encoder: (0..cfg.num_layers)
                .map(|l| EncoderBlock::new(&cfg, &get, l))
                .collect::<Result<_>>()?,
            encoder_norm: RmsNorm::new(&cfg, &get, "encoder.final_layer_norm")?,
            decoder: Vec::new(),
            decoder_norm: None,
            lm_head: None,
            info: Self::info_for(&cfg),
            cfg,
        })
    }

    /// The error of decoding with an encoder alone.
    fn no_decoder(&self) -> candle_core::Error {
        candle_core::Error::Msg(
            "this T5 holds only its encoder (T5EncoderModel): it cannot decode".into(),
        )
    }

    /// Loads `config.json` + `model.safetensors` of a checkpoint folder.
    pub fn load(config_path: &Path, weights_path: &Path, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let cfg: T5Config = serde_json::from_str(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let tensors = candle_core::safetensors::load(weights_path, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights_path.display())))?;
        Self::from_tensors(cfg, &tensors, &weights_path.display().to_string())
    }

    /// The sizes methods build from: both stacks' blocks count as layers (encoder first), and
    /// `num_tokens` is 0 because the input length varies per batch.
    pub fn info_for(cfg: &T5Config) -> BackboneInfo {
        BackboneInfo {
            family: "t5".into(),
            hidden_size: cfg.d_model,
            num_layers: cfg.num_layers + cfg.decoder_layers(),
            num_heads: cfg.num_heads,
            intermediate_size: cfg.d_ff,
            num_tokens: 0,
        }
    }

    /// 1 where `ids` `[batch, tokens]` is not `pad_token_id`, 0 where it is (u32).
    pub fn padding_mask(&self, ids: &Tensor) -> Result<Tensor> {
        ids.to_dtype(DType::U32)?
            .ne(self.cfg.pad_token_id)?
            .to_dtype(DType::U32)
    }

    /// Blocks of both stacks, the index space of the [`Hooks`] calls (see [`T5`]).
    pub fn num_blocks(&self) -> usize {
        self.encoder.len() + self.decoder.len()
    }

    /// The token embeddings `[batch, tokens, d_model]` of `ids` (the encoder's and decoder's input
    /// before dropout): what [`T5::encode_embeddings`] takes, with other embeddings (visual
    /// features) placed beside them.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.shared
            .index_select(&ids.to_dtype(DType::U32)?.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.d_model))
    }

    /// `[batch, tokens]` 0/1 mask to an additive `[batch, 1, 1, tokens]` bias: 0 where attended,
    /// the dtype's minimum where masked (as transformers' extended masks).
    fn mask_bias(&self, mask: &Tensor) -> Result<Tensor> {
        mask.to_dtype(self.shared.dtype())?
            .affine(-f64::from(f32::MIN), f64::from(f32::MIN))?
            .unsqueeze(1)?
            .unsqueeze(1)
    }

    /// The relative position bias `[1, heads, queries, keys]` of `table` for queries at positions
    /// `offset..offset + queries` over keys at `0..keys`.
    fn position_bias(
        &self,
        table: &Tensor,
        queries: usize,
        keys: usize,
        offset: usize,
        bidirectional: bool,
    ) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..queries)
            .flat_map(|i| {
                (0..keys).map(move |j| {
                    relative_position_bucket(
                        j as i64 - (i + offset) as i64,
                        bidirectional,
                        self.cfg.relative_attention_num_buckets,
                        self.cfg.relative_attention_max_distance,
                    )
                })
            })
            .collect();
        let buckets = Tensor::from_vec(buckets, queries * keys, table.device())?;
        table
            .index_select(&buckets, 0)?
            .reshape((queries, keys, self.cfg.num_heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }

    /// `[batch, tokens, inner]` to `[batch, heads, tokens, d_kv]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.cfg.num_heads, self.cfg.d_kv))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `softmax(q k^T + bias) v` with heads split, no `1/sqrt(d_kv)` (T5 folds it into the
    /// initialisation of `q`); `bias` broadcasts to `[batch, heads, queries, keys]`. Returns the
    /// context `[batch, queries, inner]` before the output projection.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (b, t, _) = q.dims3()?;
        let scores = self.split_heads(q)?.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = ops::softmax_last_dim(&scores)?;
        let probs = ctx.dropout(&probs, self.cfg.dropout_rate)?;
        probs
            .matmul(v)?
            .transpose(1, 2)?
            .reshape((b, t, self.cfg.inner_dim()))
    }

    /// The encoder output `[batch, source, d_model]` (after the final norm) for token ids
    /// `[batch, source]`; `attention_mask` (0/1, `[batch, source]`) defaults to every token.
    pub fn encode(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.encode_embeddings(&self.embed(input_ids)?, attention_mask, hooks, ctx)
    }

    /// [`T5::encode`] from input embeddings `[batch, source, d_model]` (transformers'
    /// `inputs_embeds`): VL-T5 feeds the text's token embeddings followed by projected visual
    /// features.
    pub fn encode_embeddings(
        &self,
        embeddings: &Tensor,
        attention_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let (_, s, _) = embeddings.dims3()?;
        let p = self.cfg.dropout_rate;
        let mut x = ctx.dropout(embeddings, p)?;
        let table = self.encoder[0]
            .attention
            .relative_attention_bias
            .as_ref()
            .expect("the first block has the bias table");
        // Shared by every block: only the first one has a table.
        let mut bias = self.position_bias(table, s, s, 0, true)?;
        if let Some(mask) = attention_mask {
            bias = bias.broadcast_add(&self.mask_bias(mask)?)?;
        }
        for (l, block) in self.encoder.iter().enumerate() {
            let h = block.attention_norm.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeAttention, h, ctx)?;
            let att = &block.attention;
            let q = hooks.linear(l, LinearSite::Query, &h, &att.q, ctx)?;
            let k = self.split_heads(&hooks.linear(l, LinearSite::Key, &h, &att.k, ctx)?)?;
            let v = self.split_heads(&hooks.linear(l, LinearSite::Value, &h, &att.v, ctx)?)?;
            let context = self.attend(&q, &k, &v, &bias, ctx)?;
            let a = hooks.linear(l, LinearSite::AttentionOutput, &context, &att.o, ctx)?;
            let a = hooks.sublayer(l, Sublayer::Attention, &x, a, ctx)?;
            x = (&x + ctx.dropout(&a, p)?)?;
            let h = block.ff_norm.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeMlp, h, ctx)?;
            let m = block.ff.forward(l, &h, p, hooks, ctx)?;
            let m = hooks.sublayer(l, Sublayer::Mlp, &x, m, ctx)?;
            x = (&x + ctx.dropout(&m, p)?)?;
        }
        let x = self.encoder_norm.forward(&x)?;
        let x = hooks.norm(None, NormSite::Final, x, ctx)?;
        ctx.dropout(&x, p)
    }

    /// A cache for decoding over `encoder_states` `[batch, source, d_model]`: every block's
    /// cross-attention keys and values, computed once through `hooks` at the
    /// [`LinearSite::CrossKey`] / [`LinearSite::CrossValue`] sites (so the decoding steps that
    /// follow must use the same `hooks`); `attention_mask` is the encoder's.
    pub fn start_decoding(
        &self,
        encoder_states: &Tensor,
        attention_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<DecoderCache> {
        if self.decoder.is_empty() {
            return Err(self.no_decoder());
        }
        let (b, s, _) = encoder_states.dims3()?;
        let offset = self.encoder.len();
        let cross_kv = self
            .decoder
            .iter()
            .enumerate()
            .map(|(j, block)| {
                let (l, att) = (offset + j, &block.cross_attention);
                let k = hooks.linear(l, LinearSite::CrossKey, encoder_states, &att.k, ctx)?;
                let v = hooks.linear(l, LinearSite::CrossValue, encoder_states, &att.v, ctx)?;
                Ok((self.split_heads(&k)?, self.split_heads(&v)?))
            })
            .collect::<Result<_>>()?;
        let cross_mask = match attention_mask {
            Some(mask) => self.mask_bias(mask)?,
            None => Tensor::zeros((b, 1, 1, s), self.shared.dtype(), self.shared.device())?,
        };
        Ok(DecoderCache {
            self_kv: vec![None; self.decoder.len()],
            cross_kv,
            cross_mask,
            len: 0,
        })
    }

    /// Runs decoder tokens `[batch, steps]` that follow the `cache.len()` positions already in
    /// `cache`, appends their self-attention keys and values to it, and returns the logits
    /// `[batch, steps, vocab]`. `decoder_attention_mask` `[batch, cache.len() + steps]` (0/1) masks
    /// padded decoder positions on top of the causal mask; `None` attends every earlier position.
    pub fn decode(
        &self,
        decoder_input_ids: &Tensor,
        decoder_attention_mask: Option<&Tensor>,
        cache: &mut DecoderCache,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let decoder_norm = self
            .decoder_norm
            .as_ref()
            .ok_or_else(|| self.no_decoder())?;
        let (_, t) = decoder_input_ids.dims2()?;
        let (past, p) = (cache.len, self.cfg.dropout_rate);
        let keys = past + t;
        let offset = self.encoder.len();
        let mut x = ctx.dropout(&self.embed(decoder_input_ids)?, p)?;
        let table = self.decoder[0]
            .self_attention
            .relative_attention_bias
            .as_ref()
            .expect("the first block has the bias table");
        let causal: Vec<f32> = (0..t)
            .flat_map(|i| (0..keys).map(move |j| if j <= past + i { 0.0 } else { f32::MIN }))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, keys), x.device())?.to_dtype(x.dtype())?;
        let mut bias = self
            .position_bias(table, t, keys, past, false)?
            .broadcast_add(&causal)?;
        if let Some(mask) = decoder_attention_mask {
            bias = bias.broadcast_add(&self.mask_bias(mask)?)?;
        }
        for (j, block) in self.decoder.iter().enumerate() {
            let l = offset + j;
            let h = block.self_norm.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeAttention, h, ctx)?;
            let att = &block.self_attention;
            let q = hooks.linear(l, LinearSite::Query, &h, &att.q, ctx)?;
            let mut k = self.split_heads(&hooks.linear(l, LinearSite::Key, &h, &att.k, ctx)?)?;
            let mut v =
                self.split_heads(&hooks.linear(l, LinearSite::Value, &h, &att.v, ctx)?)?;
            if let Some((pk, pv)) = &cache.self_kv[j] {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            let context = self.attend(&q, &k, &v, &bias, ctx)?;
            cache.self_kv[j] = Some((k, v));
            let a = hooks.linear(l, LinearSite::AttentionOutput, &context, &att.o, ctx)?;
            let a = hooks.sublayer(l, Sublayer::Attention, &x, a, ctx)?;
            x = (&x + ctx.dropout(&a, p)?)?;

            let h = block.cross_norm.forward(&x)?;
            let cross = &block.cross_attention;
            let (ck, cv) = &cache.cross_kv[j];
            let q = hooks.linear(l, LinearSite::CrossQuery, &h, &cross.q, ctx)?;
            let context = self.attend(&q, ck, cv, &cache.cross_mask, ctx)?;
            let a = hooks.linear(l, LinearSite::CrossAttentionOutput, &context, &cross.o, ctx)?;
            x = (&x + ctx.dropout(&a, p)?)?;

            let h = block.ff_norm.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeMlp, h, ctx)?;
            let m = block.ff.forward(l, &h, p, hooks, ctx)?;
            let m = hooks.sublayer(l, Sublayer::Mlp, &x, m, ctx)?;
            x = (&x + ctx.dropout(&m, p)?)?;
        }
        cache.len = keys;
        let mut x = ctx.dropout(&decoder_norm.forward(&x)?, p)?;
        if self.cfg.scales_decoder_output() {
            // transformers rescales before the tied head (T5 v1.0), by d_model^-0.5.
            x = (x * (self.cfg.d_model as f64).powf(-0.5))?;
        }
        ops::linear(&x, self.lm_head.as_ref().unwrap_or(&self.shared), None)
    }

    /// Teacher-forced logits `[batch, target, vocab]`: the encoder over `input_ids` `[batch,
    /// source]` and the decoder over `decoder_input_ids` `[batch, target]` (usually
    /// [`T5::shift_right`] of the labels). The masks are 0/1 over each side's tokens; `None`
    /// attends every token (the decoder is causal either way).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        decoder_input_ids: &Tensor,
        decoder_attention_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let states = self.encode(input_ids, attention_mask, hooks, ctx)?;
        let mut cache = self.start_decoding(&states, attention_mask, hooks, ctx)?;
        self.decode(
            decoder_input_ids,
            decoder_attention_mask,
            &mut cache,
            hooks,
            ctx,
        )
    }

    /// The decoder input for `labels` `[batch, target]` (i64): `decoder_start_token_id`, then the
    /// labels but the last, with the ignored `-100` replaced by `pad_token_id` (HF's `_shift_right`).
    pub fn shift_right(&self, labels: &Tensor) -> Result<Tensor> {
        let labels = labels.to_dtype(DType::I64)?;
        let (b, t) = labels.dims2()?;
        let start = Tensor::full(
            i64::from(self.cfg.decoder_start_token_id),
            (b, 1),
            labels.device(),
        )?;
        let shifted = Tensor::cat(&[&start, &labels.narrow(1, 0, t - 1)?], 1)?;
        let pad = Tensor::full(i64::from(self.cfg.pad_token_id), (b, t), labels.device())?;
        shifted.eq(IGNORE_INDEX)?.where_cond(&pad, &shifted)
    }

    /// Mean cross-entropy of `logits` `[batch, target, vocab]` against `labels` `[batch, target]`
    /// over the labels that are not `-100` (PyTorch's `CrossEntropyLoss(ignore_index=-100)`, the
    /// `loss` transformers returns; NaN when every label is ignored, as there).
    pub fn loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let vocab = logits.dim(D::Minus1)?;
        let logits = logits.reshape(((), vocab))?;
        let labels = labels.to_dtype(DType::I64)?.flatten_all()?;
        let kept = labels.ne(IGNORE_INDEX)?.to_dtype(logits.dtype())?;
        let index = labels.maximum(0i64)?.to_dtype(DType::U32)?.unsqueeze(1)?;
        let picked = ops::log_softmax_last_dim(&logits)?
            .gather(&index, 1)?
            .squeeze(1)?;
        let total = (picked * &kept)?.sum_all()?.neg()?;
        total / kept.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?
    }

    /// The last position's log-probabilities as f32 rows.
    fn last_log_probs(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
        let last = logits.i((.., logits.dim(1)? - 1, ..))?;
        ops::log_softmax_last_dim(&last.to_dtype(DType::F32)?)?.to_vec2()
    }

    /// Greedy decoding as transformers' `generate(num_beams=1, do_sample=False)`: sequences start
    /// with `decoder_start_token_id`, a finished one (its end token emitted) continues with
    /// `pad_token_id`, and decoding stops when all are finished or `max_length` tokens long.
    /// Every row has the length of the longest.
    pub fn greedy(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        max_length: usize,
        hooks: &dyn Hooks,
    ) -> Result<Vec<Vec<u32>>> {
        let states = self.encode(input_ids, attention_mask, hooks, &ForwardCtx::eval())?;
        self.greedy_from(&states, attention_mask, max_length, hooks)
    }

    /// [`T5::greedy`] from the encoder output `states` `[batch, source, d_model]` and its mask
    /// (an encoder fed other embeddings, see [`T5::encode_embeddings`]).
    pub fn greedy_from(
        &self,
        states: &Tensor,
        attention_mask: Option<&Tensor>,
        max_length: usize,
        hooks: &dyn Hooks,
    ) -> Result<Vec<Vec<u32>>> {
        let ctx = ForwardCtx::eval();
        let mut cache = self.start_decoding(states, attention_mask, hooks, &ctx)?;
        let b = states.dim(0)?;
        let mut sequences = vec![vec![self.cfg.decoder_start_token_id]; b];
        let mut finished = vec![false; b];
        while sequences[0].len() < max_length && !finished.iter().all(|&f| f) {
            let last: Vec<u32> = sequences.iter().map(|s| s[s.len() - 1]).collect();
            let ids = Tensor::from_vec(last, (b, 1), states.device())?;
            let logits = self.decode(&ids, None, &mut cache, hooks, &ctx)?;
            for (row, scores) in Self::last_log_probs(&logits)?.iter().enumerate() {
                let token = if finished[row] {
                    self.cfg.pad_token_id
                } else {
                    argmax(scores)
                };
                finished[row] |= token == self.cfg.eos_token_id;
                sequences[row].push(token);
            }
        }
        Ok(sequences)
    }

    /// Beam search as transformers' `generate(num_beams, do_sample=False)` with `length_penalty`
    /// (1.0 there by default) and `early_stopping=False`: each step keeps the `2 * num_beams` best
    /// continuations of the running beams by summed log-probability; of those, the ones among the
    /// best `num_beams` that end (end token, or `max_length` reached) compete for the `num_beams`
    /// finished slots with score `sum / generated^length_penalty`, and the best `num_beams` others
    /// run on. A batch row stops taking finished beams once its best running beam, scored at the
    /// current length, cannot beat its worst finished one. Returns each row's best finished
    /// sequence; rows are filled to the longest with `pad_token_id`, or with the end token when
    /// `pad_token_id` is 0 (what transformers writes, its fill value being `pad or eos`).
    pub fn beam_search(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        num_beams: usize,
        max_length: usize,
        length_penalty: f64,
        hooks: &dyn Hooks,
    ) -> Result<Vec<Vec<u32>>> {
        let states = self.encode(input_ids, attention_mask, hooks, &ForwardCtx::eval())?;
        self.beam_search_from(
            &states,
            attention_mask,
            num_beams,
            max_length,
            length_penalty,
            hooks,
        )
    }

    /// [`T5::beam_search`] from the encoder output `states` `[batch, source, d_model]` and its
    /// mask (an encoder fed other embeddings, see [`T5::encode_embeddings`]).
    pub fn beam_search_from(
        &self,
        states: &Tensor,
        attention_mask: Option<&Tensor>,
        num_beams: usize,
        max_length: usize,
        length_penalty: f64,
        hooks: &dyn Hooks,
    ) -> Result<Vec<Vec<u32>>> {
        if num_beams == 0 {
            candle_core::bail!("beam search needs at least one beam");
        }
        let ctx = ForwardCtx::eval();
        let b = states.dim(0)?;
        let device = states.device();
        // Beam k of row r is batch entry r * num_beams + k.
        let expand: Vec<u32> = (0..b as u32)
            .flat_map(|r| std::iter::repeat_n(r, num_beams))
            .collect();
        let expand = Tensor::from_vec(expand, b * num_beams, device)?;
        let mask = attention_mask
            .map(|m| m.index_select(&expand, 0))
            .transpose()?;
        let mut cache = self.start_decoding(
            &states.index_select(&expand, 0)?,
            mask.as_ref(),
            hooks,
            &ctx,
        )?;
        let mut rows: Vec<BeamRow> = (0..b)
            .map(|_| BeamRow::new(num_beams, self.cfg.decoder_start_token_id))
            .collect();
        let mut cur_len = 1;
        loop {
            let last: Vec<u32> = rows
                .iter()
                .flat_map(|row| row.running.iter().map(|s| s[s.len() - 1]))
                .collect();
            let ids = Tensor::from_vec(last, (b * num_beams, 1), device)?;
            let logits = self.decode(&ids, None, &mut cache, hooks, &ctx)?;
            let log_probs = Self::last_log_probs(&logits)?;
            let mut parents = Vec::with_capacity(b * num_beams);
            let mut all_end = true;
            for (r, row) in rows.iter_mut().enumerate() {
                let rows_log_probs = &log_probs[r * num_beams..(r + 1) * num_beams];
                let ends = row.step(
                    rows_log_probs,
                    cur_len,
                    max_length,
                    length_penalty,
                    self.cfg.eos_token_id,
                );
                all_end &= ends;
                parents.extend(row.parents.iter().map(|&k| (r * num_beams + k) as u32));
            }
            cache.select_rows(&Tensor::from_vec(parents, b * num_beams, device)?)?;
            cur_len += 1;
            let mut improvable = false;
            for row in rows.iter_mut() {
                row.check_improvable(cur_len, length_penalty);
                improvable |= row.improvable;
            }
            if !improvable || all_end {
                break;
            }
        }
        let fill = if self.cfg.pad_token_id != 0 {
            self.cfg.pad_token_id
        } else {
            self.cfg.eos_token_id
        };
        let longest = rows.iter().map(|r| r.finished[0].len()).max().unwrap_or(1);
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut best = row.finished.into_iter().next().unwrap_or_default();
                best.resize(longest, fill);
                best
            })
            .collect())
    }
}

/// T5 as a PEFT backbone: blocks are numbered encoder first, then decoder (see [`T5`]); the
/// pooled features of [`Backbone::forward_features`] are the encoder output averaged over the
/// tokens that are not padding (what a classification head on an encoder-decoder reads), and
/// [`Backbone::forward_sequence`] the encoder output itself. Generation and teacher-forced
/// training go through [`T5::forward`], [`T5::greedy`] and [`T5::beam_search`] with the same hooks.
impl Backbone for T5 {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn linear_dims(&self, site: LinearSite) -> (usize, usize) {
        let (d, inner, ff) = (self.cfg.d_model, self.cfg.inner_dim(), self.cfg.d_ff);
        match site {
            LinearSite::Fc1 => (d, ff),
            LinearSite::Fc2 => (ff, d),
            LinearSite::AttentionOutput | LinearSite::CrossAttentionOutput => (inner, d),
            LinearSite::Query
            | LinearSite::Key
            | LinearSite::Value
            | LinearSite::CrossQuery
            | LinearSite::CrossKey
            | LinearSite::CrossValue => (d, inner),
        }
    }

    /// Whether block `layer` has the projection `site`: every block has the self-attention and
    /// feed-forward sites ([`LinearSite::ALL`]), decoder blocks also the cross-attention ones
    /// ([`LinearSite::CROSS_ATTENTION`]).
    fn has_linear(&self, layer: usize, site: LinearSite) -> bool {
        layer < self.num_blocks() && (!site.is_cross_attention() || layer >= self.encoder.len())
    }

    /// The frozen projection at `site` of block `layer` (encoder blocks first, see [`T5`]).
    ///
    /// # Panics
    /// When block `layer` has no such projection ([`Backbone::has_linear`]): a cross-attention site of
    /// an encoder block, or a block past the last.
    fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        let (attention, ff) = match layer.checked_sub(self.encoder.len()) {
            None if site.is_cross_attention() => panic!(
                "T5 encoder block {layer} has no cross-attention (`{}`): decoder blocks are {}..{}",
                site.name(),
                self.encoder.len(),
                self.num_blocks()
            ),
            None => (&self.encoder[layer].attention, &self.encoder[layer].ff),
            Some(j) if site.is_cross_attention() => {
                (&self.decoder[j].cross_attention, &self.decoder[j].ff)
            }
            Some(j) => (&self.decoder[j].self_attention, &self.decoder[j].ff),
        };
        match site {
            LinearSite::Fc1 => &ff.wi,
            LinearSite::Fc2 => &ff.wo,
            _ => attention
                .linear(site)
                .expect("attention sites are the non-MLP ones"),
        }
    }

    /// The projection's module path in HF checkpoints, e.g. `decoder.block.1.layer.0.SelfAttention.q`
    /// or, for the cross-attention sites, `decoder.block.1.layer.1.EncDecAttention.q`.
    ///
    /// # Panics
    /// For a cross-attention site of an encoder block (see [`Backbone::has_linear`]).
    fn module_path(&self, layer: usize, site: LinearSite) -> String {
        let (stack, block, ff_layer) = match layer.checked_sub(self.encoder.len()) {
            None => ("encoder", layer, 1),
            Some(j) => ("decoder", j, 2),
        };
        let base = format!("{stack}.block.{block}.layer");
        let wi = self.cfg.feed_forward_proj.wi_name();
        match site {
            LinearSite::Query => format!("{base}.0.SelfAttention.q"),
            LinearSite::Key => format!("{base}.0.SelfAttention.k"),
            LinearSite::Value => format!("{base}.0.SelfAttention.v"),
            LinearSite::AttentionOutput => format!("{base}.0.SelfAttention.o"),
            LinearSite::Fc1 => format!("{base}.{ff_layer}.DenseReluDense.{wi}"),
            LinearSite::Fc2 => format!("{base}.{ff_layer}.DenseReluDense.wo"),
            cross if stack == "encoder" => panic!(
                "T5 encoder block {layer} has no cross-attention (`{}`)",
                cross.name()
            ),
            LinearSite::CrossQuery => format!("{base}.1.EncDecAttention.q"),
            LinearSite::CrossKey => format!("{base}.1.EncDecAttention.k"),
            LinearSite::CrossValue => format!("{base}.1.EncDecAttention.v"),
            LinearSite::CrossAttentionOutput => format!("{base}.1.EncDecAttention.o"),
        }
    }

    /// Visits every tensor under its HF name, in a fixed order (`lm_head.weight` only when the
    /// head is separate).
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        f("shared.weight", &mut self.shared)?;
        for (l, block) in self.encoder.iter_mut().enumerate() {
            let base = format!("encoder.block.{l}.layer");
            f(
                &format!("{base}.0.layer_norm.weight"),
                &mut block.attention_norm.weight,
            )?;
            block
                .attention
                .visit(&format!("{base}.0.SelfAttention"), f)?;
            f(
                &format!("{base}.1.layer_norm.weight"),
                &mut block.ff_norm.weight,
            )?;
            block.ff.visit(&format!("{base}.1.DenseReluDense"), f)?;
        }
        f(
            "encoder.final_layer_norm.weight",
            &mut self.encoder_norm.weight,
        )?;
        for (l, block) in self.decoder.iter_mut().enumerate() {
            let base = format!("decoder.block.{l}.layer");
            f(
                &format!("{base}.0.layer_norm.weight"),
                &mut block.self_norm.weight,
            )?;
            block
                .self_attention
                .visit(&format!("{base}.0.SelfAttention"), f)?;
            f(
                &format!("{base}.1.layer_norm.weight"),
                &mut block.cross_norm.weight,
            )?;
            block
                .cross_attention
                .visit(&format!("{base}.1.EncDecAttention"), f)?;
            f(
                &format!("{base}.2.layer_norm.weight"),
                &mut block.ff_norm.weight,
            )?;
            block.ff.visit(&format!("{base}.2.DenseReluDense"), f)?;
        }
        if let Some(norm) = self.decoder_norm.as_mut() {
            f("decoder.final_layer_norm.weight", &mut norm.weight)?;
        }
        if let Some(head) = self.lm_head.as_mut() {
            f("lm_head.weight", head)?;
        }
        Ok(())
    }

    fn block_path(&self, layer: usize) -> String {
        match layer.checked_sub(self.encoder.len()) {
            None => format!("encoder.block.{layer}"),
            Some(j) => format!("decoder.block.{j}"),
        }
    }

    /// The encoder's final norm, the one [`NormSite::Final`] hooks see.
    fn final_norm_path(&self) -> Option<String> {
        Some("encoder.final_layer_norm".into())
    }

    /// Token ids `[batch, tokens]` (padding = `pad_token_id`) to the encoder output averaged over
    /// the tokens that are not padding.
    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let mask = self.padding_mask(input)?;
        let states = self.encode(input, Some(&mask), hooks, ctx)?;
        let weights = mask.to_dtype(states.dtype())?.unsqueeze(D::Minus1)?;
        let counts = weights.sum(1)?.clamp(1.0, f64::MAX)?;
        states
            .broadcast_mul(&weights)?
            .sum(1)?
            .broadcast_div(&counts)
    }

    fn forward_sequence(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let mask = self.padding_mask(input)?;
        self.encode(input, Some(&mask), hooks, ctx)
    }
}

/// One batch row's beams during [`T5::beam_search`], in transformers' vectorised bookkeeping.
struct BeamRow {
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    /// Which running beam each running beam of the next step continues.
    parents: Vec<usize>,
    finished: Vec<Vec<u32>>,
    finished_scores: Vec<f32>,
    is_finished: Vec<bool>,
    /// False once no running beam can beat the worst finished one (no more finished updates).
    improvable: bool,
}

impl BeamRow {
    fn new(beams: usize, start: u32) -> Self {
        // Only the first beam is live at first, so the first step does not pick duplicates.
        let mut running_scores = vec![EXCLUDED; beams];
        running_scores[0] = 0.0;
        Self {
            running: vec![vec![start]; beams],
            running_scores,
            parents: (0..beams).collect(),
            finished: vec![vec![start]; beams],
            finished_scores: vec![EXCLUDED; beams],
            is_finished: vec![false; beams],
            improvable: true,
        }
    }

    /// Extends the beams by one token; returns whether every kept continuation ends here.
    fn step(
        &mut self,
        log_probs: &[Vec<f32>],
        cur_len: usize,
        max_length: usize,
        length_penalty: f64,
        eos: u32,
    ) -> bool {
        let beams = self.running.len();
        let vocab = log_probs[0].len();
        let mut scored: Vec<(f32, usize)> = log_probs
            .iter()
            .zip(&self.running_scores)
            .flat_map(|(row, &score)| row.iter().map(move |&lp| lp + score))
            .enumerate()
            .map(|(i, s)| (s, i))
            .collect();
        let keep = 2 * beams;
        top_k(&mut scored, keep);
        let candidates: Vec<(f32, usize, Vec<u32>, bool)> = scored
            .into_iter()
            .map(|(score, i)| {
                let (beam, token) = (i / vocab, (i % vocab) as u32);
                let mut seq = self.running[beam].clone();
                seq.push(token);
                let ends = token == eos || cur_len + 1 >= max_length;
                (score, beam, seq, ends)
            })
            .collect();

        // The next running beams: the best continuations that do not end.
        let mut running: Vec<(f32, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (if c.3 { c.0 + EXCLUDED } else { c.0 }, i))
            .collect();
        top_k(&mut running, beams);
        self.parents = running.iter().map(|&(_, i)| candidates[i].1).collect();
        self.running = running
            .iter()
            .map(|&(_, i)| candidates[i].2.clone())
            .collect();
        self.running_scores = running.iter().map(|&(s, _)| s).collect();

        // The finished slots: the best of the old ones and the top-`beams` candidates that end.
        let norm = ((cur_len + 1 - 1) as f64).powf(length_penalty) as f32;
        let mut merged: Vec<(f32, Vec<u32>, bool)> = self
            .finished
            .drain(..)
            .zip(&self.finished_scores)
            .zip(&self.is_finished)
            .map(|((seq, &s), &f)| (s, seq, f))
            .collect();
        for (i, (score, _, seq, ends)) in candidates.iter().enumerate() {
            let just_finished = *ends && i < beams;
            let mut s = score / norm;
            if !self.improvable {
                s += EXCLUDED;
            }
            if !just_finished {
                s += EXCLUDED;
            }
            merged.push((s, seq.clone(), just_finished));
        }
        let mut order: Vec<(f32, usize)> =
            merged.iter().enumerate().map(|(i, m)| (m.0, i)).collect();
        top_k(&mut order, beams);
        self.finished_scores = order.iter().map(|&(s, _)| s).collect();
        self.is_finished = order.iter().map(|&(_, i)| merged[i].2).collect();
        self.finished = order.iter().map(|&(_, i)| merged[i].1.clone()).collect();
        candidates.iter().all(|c| c.3)
    }

    /// transformers' early-stop heuristic for `early_stopping=False`: the best running beam scored
    /// at the current generated length against the worst finished slot (any unfilled slot keeps
    /// the row open).
    fn check_improvable(&mut self, cur_len: usize, length_penalty: f64) {
        let best = self.running_scores[0] / ((cur_len - 1) as f64).powf(length_penalty) as f32;
        let worst = self
            .finished_scores
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        self.improvable &= self
            .is_finished
            .iter()
            .any(|&f| best > if f { worst } else { EXCLUDED });
    }
}

/// Keeps the `k` highest `(score, index)` pairs, best first; equal scores keep the lower index
/// first.
fn top_k(items: &mut Vec<(f32, usize)>, k: usize) {
    items.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    items.truncate(k);
}

/// The index of the largest value, the first one on ties (as `torch.argmax`).
fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// T5's bucket for a key `relative` positions after the query (negative: before). Bidirectional
/// attention gives half the buckets to each direction; causal attention only looks back. Below
/// half of a direction's buckets each distance has its own bucket, above that they grow
/// logarithmically up to `max_distance`, beyond which all share the last one. The logarithm is
/// taken in f32 as transformers does, so that the rounding down agrees.
fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            bucket += buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = buckets / 2;
    let offset = if distance < max_exact {
        distance
    } else {
        let ratio = (distance as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32);
        (max_exact + (ratio * (buckets - max_exact) as f32) as i64).min(buckets - 1)
    };
    (bucket + offset) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets that transformers 5.24's `_relative_position_bucket` gives for 32 buckets up to
    /// distance 128 (t5-base's settings).
    #[test]
    fn buckets_follow_transformers() {
        let bi = |r| relative_position_bucket(r, true, 32, 128);
        let causal = |r| relative_position_bucket(r, false, 32, 128);
        assert_eq!([bi(0), bi(-1), bi(1), bi(-7), bi(7)], [0, 1, 17, 7, 23]);
        // Logarithmic: 8 + floor(ln(d / 8) / ln(16) * 8).
        assert_eq!([bi(-8), bi(-16), bi(-100), bi(-1000)], [8, 10, 15, 15]);
        assert_eq!([bi(1000)], [31]);
        assert_eq!([causal(3), causal(0), causal(-5)], [0, 0, 5]);
        // Causal: 16 + floor(ln(d / 16) / ln(8) * 16).
        assert_eq!([causal(-16), causal(-32), causal(-127)], [16, 21, 31]);
    }
}
