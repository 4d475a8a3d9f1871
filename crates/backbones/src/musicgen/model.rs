use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, D};
use peftbench_core::{ops, ForwardCtx};

use super::{MusicgenConfig, MusicgenDecoderConfig};
use crate::encoder::Norm;
use crate::sites::{Hooks, Linear, LinearSite, NoHooks, NormSite, Sublayer};
use crate::t5::T5;

/// Looks a tensor up by its checkpoint name, checking its shape.
type Getter<'a> = dyn Fn(&str, &[usize]) -> Result<Tensor> + 'a;

/// transformers' `nn.LayerNorm` default.
const LAYER_NORM_EPS: f64 = 1e-5;

fn linear(get: &Getter<'_>, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
    Ok(Linear {
        weight: get(&format!("{name}.weight"), &[out, inp])?,
        bias: if bias {
            Some(get(&format!("{name}.bias"), &[out])?)
        } else {
            None
        },
    })
}

fn norm(get: &Getter<'_>, name: &str, width: usize) -> Result<Norm> {
    Ok(Norm {
        weight: get(&format!("{name}.weight"), &[width])?,
        bias: get(&format!("{name}.bias"), &[width])?,
        eps: LAYER_NORM_EPS,
    })
}

/// One attention's bias-free projections (`self_attn` or `encoder_attn`).
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
}

impl Attention {
    fn new(get: &Getter<'_>, name: &str, d: usize) -> Result<Self> {
        let proj = |p: &str| linear(get, &format!("{name}.{p}"), d, d, false);
        Ok(Self {
            q_proj: proj("q_proj")?,
            k_proj: proj("k_proj")?,
            v_proj: proj("v_proj")?,
            out_proj: proj("out_proj")?,
        })
    }
}

/// `MusicgenDecoderLayer`: pre-norm self-attention (causal), cross-attention to the text, and a
/// GELU feed-forward, each added to the stream.
#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: Norm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: Norm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: Norm,
}

impl DecoderLayer {
    fn new(cfg: &MusicgenDecoderConfig, get: &Getter<'_>, l: usize) -> Result<Self> {
        let base = format!("decoder.model.decoder.layers.{l}");
        let d = cfg.hidden_size;
        Ok(Self {
            self_attn: Attention::new(get, &format!("{base}.self_attn"), d)?,
            self_attn_layer_norm: norm(get, &format!("{base}.self_attn_layer_norm"), d)?,
            encoder_attn: Attention::new(get, &format!("{base}.encoder_attn"), d)?,
            encoder_attn_layer_norm: norm(get, &format!("{base}.encoder_attn_layer_norm"), d)?,
            fc1: linear(get, &format!("{base}.fc1"), cfg.ffn_dim, d, false)?,
            fc2: linear(get, &format!("{base}.fc2"), d, cfg.ffn_dim, false)?,
            final_layer_norm: norm(get, &format!("{base}.final_layer_norm"), d)?,
        })
    }
}

/// transformers' `MusicgenSinusoidalPositionalEmbedding` rows `0..len` `[len, dim]`: for
/// frequency `i` of `dim / 2`, `cos` in the first half and `sin` in the second (tensor2tensor's
/// layout), computed in f32 as transformers does.
pub fn sinusoidal_positions(len: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let step = (10000f64.ln() / (half.max(2) - 1) as f64) as f32;
    let frequencies: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut rows = Vec::with_capacity(len * dim);
    for p in 0..len {
        let angles: Vec<f32> = frequencies.iter().map(|f| p as f32 * f).collect();
        rows.extend(angles.iter().map(|a| a.cos()));
        rows.extend(angles.iter().map(|a| a.sin()));
        if dim % 2 == 1 {
            rows.push(0.0);
        }
    }
    Tensor::from_vec(rows, (len, dim), device)
}

/// MusicGen: the T5 text encoder, `enc_to_dec_proj` and the multi-codebook decoder with its
/// heads. See the module documentation.
pub struct Musicgen {
    cfg: MusicgenConfig,
    text_encoder: T5,
    /// `[decoder hidden, text hidden]` with a bias; absent when the widths agree.
    enc_to_dec_proj: Option<Linear>,
    /// One `[vocab + 1, hidden]` table per codebook (the extra row is the pad/start token).
    embed_tokens: Vec<Tensor>,
    layers: Vec<DecoderLayer>,
    layer_norm: Norm,
    /// One `[vocab, hidden]` head per codebook.
    lm_heads: Vec<Tensor>,
}

impl Musicgen {
    pub fn config(&self) -> &MusicgenConfig {
        &self.cfg
    }

    pub fn text_encoder(&self) -> &T5 {
        &self.text_encoder
    }

    /// Builds the model from tensors under `MusicgenForConditionalGeneration`'s names
    /// (`text_encoder.*`, `enc_to_dec_proj.*`, `decoder.model.decoder.*`, `decoder.lm_heads.*`;
    /// `audio_encoder.*` is not read), checking every shape. `origin` names the source in errors.
    pub fn from_tensors(
        cfg: MusicgenConfig,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        let dec = &cfg.decoder;
        dec.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        let text: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("text_encoder.")?.to_string(), v.clone())))
            .collect();
        let text_encoder = T5::encoder_from_tensors(
            cfg.text_encoder.clone(),
            &text,
            &format!("{origin} (text_encoder)"),
        )?;
        let get = |key: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors.get(key).ok_or_else(|| {
                candle_core::Error::Msg(format!("{origin}: missing tensor `{key}`"))
            })?;
            if t.dims() != shape {
                candle_core::bail!(
                    "{origin}: tensor `{key}` has shape {:?}, expected {shape:?}",
                    t.dims()
                );
            }
            t.to_dtype(DType::F32)
        };
        let (d, text_d, v) = (dec.hidden_size, cfg.text_encoder.d_model, dec.vocab_size);
        let enc_to_dec_proj = if text_d == d {
            None
        } else {
            Some(linear(&get, "enc_to_dec_proj", d, text_d, true)?)
        };
        let base = "decoder.model.decoder";
        Ok(Self {
            enc_to_dec_proj,
            embed_tokens: (0..dec.num_codebooks)
                .map(|k| get(&format!("{base}.embed_tokens.{k}.weight"), &[v + 1, d]))
                .collect::<Result<_>>()?,
            layers: (0..dec.num_hidden_layers)
                .map(|l| DecoderLayer::new(dec, &get, l))
                .collect::<Result<_>>()?,
            layer_norm: norm(&get, &format!("{base}.layer_norm"), d)?,
            lm_heads: (0..dec.num_codebooks)
                .map(|k| get(&format!("decoder.lm_heads.{k}.weight"), &[v, d]))
                .collect::<Result<_>>()?,
            text_encoder,
            cfg,
        })
    }

    /// Loads `config.json` + `model.safetensors` of a checkpoint folder.
    pub fn load(config_path: &Path, weights_path: &Path, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let cfg: MusicgenConfig = serde_json::from_str(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let tensors = candle_core::safetensors::load(weights_path, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights_path.display())))?;
        Self::from_tensors(cfg, &tensors, &weights_path.display().to_string())
    }

    /// The text states the decoder attends to, `[batch, source, hidden]`: the frozen T5
    /// encoder's output for `input_ids` `[batch, source]`, projected by `enc_to_dec_proj`, with
    /// padded positions (`attention_mask` 0) zeroed, as transformers does.
    pub fn encode_text(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let states =
            self.text_encoder
                .encode(input_ids, attention_mask, &NoHooks, &ForwardCtx::eval())?;
        let states = match &self.enc_to_dec_proj {
            Some(proj) => proj.forward(&states)?,
            None => states,
        };
        match attention_mask {
            Some(mask) => {
                states.broadcast_mul(&mask.to_dtype(states.dtype())?.unsqueeze(D::Minus1)?)
            }
            None => Ok(states),
        }
    }

    /// Teacher-forced logits `[batch, codebooks, steps, vocab]` for decoder tokens `[batch,
    /// codebooks, steps]` (u32; codebook `k` of step `t` is the input of step `t`'s prediction
    /// of step `t + 1`), attending causally to themselves and to `text_states` `[batch, source,
    /// hidden]` (from [`Musicgen::encode_text`]) where `text_mask` (0/1 `[batch, source]`) is 1.
    /// `hooks` sees the decoder's layers `0..num_hidden_layers`.
    pub fn decode(
        &self,
        tokens: &Tensor,
        text_states: &Tensor,
        text_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let dec = &self.cfg.decoder;
        let (b, k, t) = tokens.dims3()?;
        if k != dec.num_codebooks {
            candle_core::bail!(
                "decoder tokens have {k} codebooks, the model {}",
                dec.num_codebooks
            );
        }
        let d = dec.hidden_size;
        let device = text_states.device();
        // The sum of every codebook's embedding of its token, plus the step's position.
        let mut x: Option<Tensor> = None;
        for (codebook, table) in self.embed_tokens.iter().enumerate() {
            let ids = tokens
                .narrow(1, codebook, 1)?
                .flatten_all()?
                .to_dtype(DType::U32)?;
            let e = table.index_select(&ids, 0)?.reshape((b, t, d))?;
            x = Some(match x {
                None => e,
                Some(sum) => (sum + e)?,
            });
        }
        let positions = sinusoidal_positions(t, d, device)?;
        let mut x = x
            .expect("validated: at least one codebook")
            .broadcast_add(&positions)?;
        x = ctx.dropout(&x, dec.dropout)?;

        let causal: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::MIN }))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), device)?;
        let cross_bias = match text_mask {
            // 0 where attended, the most negative float where padded (transformers' masks).
            Some(mask) => mask
                .to_dtype(DType::F32)?
                .affine(-f64::from(f32::MIN), f64::from(f32::MIN))?
                .unsqueeze(1)?
                .unsqueeze(1)?,
            None => Tensor::zeros((1, 1, 1, text_states.dim(1)?), DType::F32, device)?,
        };
        let heads = dec.num_attention_heads;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.self_attn_layer_norm.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeAttention, h, ctx)?;
            let att = &layer.self_attn;
            let q = hooks.linear(l, LinearSite::Query, &h, &att.q_proj, ctx)?;
            let kk = hooks.linear(l, LinearSite::Key, &h, &att.k_proj, ctx)?;
            let v = hooks.linear(l, LinearSite::Value, &h, &att.v_proj, ctx)?;
            let context =
                biased_attention(&q, &kk, &v, heads, &causal, dec.attention_dropout, ctx)?;
            let a = hooks.linear(l, LinearSite::AttentionOutput, &context, &att.out_proj, ctx)?;
            let a = hooks.sublayer(l, Sublayer::Attention, &x, a, ctx)?;
            x = (&x + ctx.dropout(&a, dec.dropout)?)?;

            let h = layer.encoder_attn_layer_norm.forward(&x)?;
            let cross = &layer.encoder_attn;
            let q = hooks.linear(l, LinearSite::CrossQuery, &h, &cross.q_proj, ctx)?;
            let kk = hooks.linear(l, LinearSite::CrossKey, text_states, &cross.k_proj, ctx)?;
            let v = hooks.linear(l, LinearSite::CrossValue, text_states, &cross.v_proj, ctx)?;
            let context =
                biased_attention(&q, &kk, &v, heads, &cross_bias, dec.attention_dropout, ctx)?;
            let a = hooks.linear(
                l,
                LinearSite::CrossAttentionOutput,
                &context,
                &cross.out_proj,
                ctx,
            )?;
            x = (&x + ctx.dropout(&a, dec.dropout)?)?;

            let h = layer.final_layer_norm.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeMlp, h, ctx)?;
            let m = hooks
                .linear(l, LinearSite::Fc1, &h, &layer.fc1, ctx)?
                .gelu_erf()?;
            let m = ctx.dropout(&m, dec.activation_dropout)?;
            let m = hooks.linear(l, LinearSite::Fc2, &m, &layer.fc2, ctx)?;
            let m = hooks.sublayer(l, Sublayer::Mlp, &x, m, ctx)?;
            x = (&x + ctx.dropout(&m, dec.dropout)?)?;
        }
        let x = self.layer_norm.forward(&x)?;
        let x = hooks.norm(None, NormSite::Final, x, ctx)?;
        let logits: Vec<Tensor> = self
            .lm_heads
            .iter()
            .map(|head| ops::linear(&x, head, None))
            .collect::<Result<_>>()?;
        Tensor::stack(&logits, 1)
    }

    /// [`Musicgen::encode_text`] then [`Musicgen::decode`].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        tokens: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let states = self.encode_text(input_ids, attention_mask)?;
        self.decode(tokens, &states, attention_mask, hooks, ctx)
    }

    /// transformers' `shift_tokens_right` for labels `[batch, codebooks, steps]` (u32): every
    /// codebook starts with the start token and reads its labels one step late.
    pub fn shift_right(&self, labels: &Tensor) -> Result<Tensor> {
        let (b, k, t) = labels.dims3()?;
        let start = Tensor::full(self.cfg.decoder.start_token(), (b, k, 1), labels.device())?;
        if t == 0 {
            return Ok(labels.clone());
        }
        Tensor::cat(
            &[&start, &labels.to_dtype(DType::U32)?.narrow(2, 0, t - 1)?],
            2,
        )
    }
}

/// `softmax(q kᵀ / sqrt(head_dim) + bias) v` for `q` `[batch, queries, hidden]` and `k`, `v`
/// `[batch, keys, hidden]`, `bias` broadcast to `[batch, heads, queries, keys]`; composed from
/// candle primitives (gradients reach every input).
fn biased_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: &Tensor,
    dropout: f64,
    ctx: &ForwardCtx,
) -> Result<Tensor> {
    let (b, tq, d) = q.dims3()?;
    let tk = k.dim(1)?;
    let head_dim = d / heads;
    let split = |x: &Tensor, len: usize| {
        x.reshape((b, len, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let scores = (split(q, tq)?.matmul(&split(k, tk)?.t()?)? * (head_dim as f64).powf(-0.5))?
        .broadcast_add(bias)?;
    let probs = ctx.dropout(&ops::softmax_last_dim(&scores)?, dropout)?;
    probs
        .matmul(&split(v, tk)?)?
        .transpose(1, 2)?
        .reshape((b, tq, d))
}
