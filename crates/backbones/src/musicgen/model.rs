use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, D};
use peftbench_core::{ops, ForwardCtx, SeededInit};
use rand::SeedableRng;

use super::{MusicgenConfig, MusicgenDecoderConfig};
use crate::encoder::Norm;
use crate::sites::{Hooks, Linear, LinearSite, NoHooks, NormSite, Sublayer};
use crate::t5::T5;
use crate::{Backbone, BackboneInfo};

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

/// transformers' `MusicgenSinusoidalPositionalEmbedding` rows `start..start + len` `[len, dim]`:
/// for frequency `i` of `dim / 2`, `cos` in the first half and `sin` in the second
/// (tensor2tensor's layout), computed in f32 as transformers does.
pub fn sinusoidal_positions(
    start: usize,
    len: usize,
    dim: usize,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let step = (10000f64.ln() / (half.max(2) - 1) as f64) as f32;
    let frequencies: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut rows = Vec::with_capacity(len * dim);
    for p in start..start + len {
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
#[derive(Debug, Clone)]
pub struct Musicgen {
    cfg: MusicgenConfig,
    info: BackboneInfo,
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

/// What decoding keeps between steps: every layer's self-attention keys and values so far
/// `[batch, steps, hidden]`, the cross-attention keys and values of the text, its mask as an
/// additive bias, and the steps done.
pub struct MusicgenCache {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    cross_bias: Tensor,
    len: usize,
}

impl MusicgenCache {
    /// Steps decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How [`Musicgen::generate`] picks tokens (MusicGen's released setting: guidance 3, top-k 250,
/// temperature 1).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    pub max_new_tokens: usize,
    /// Classifier-free guidance; 1 or less runs the conditional model alone.
    pub guidance_scale: f64,
    /// `None`: the most likely token (greedy); `Some(k)`: sample among the `k` most likely
    /// (`Some(0)`: among every token, as transformers' `top_k=0`).
    pub top_k: Option<usize>,
    pub temperature: f64,
    pub seed: u64,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            guidance_scale: 3.0,
            top_k: Some(250),
            temperature: 1.0,
            seed: 0,
        }
    }
}

/// The token `options` pick from one codebook's logits: the argmax (lowest index on ties), or a
/// draw from the softmax of the `k` largest (every token for `k` = 0) at `temperature`.
fn choose(logits: &[f32], options: &GenerationOptions, rng: &mut impl rand::Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    let Some(k) = options.top_k else {
        return argmax();
    };
    if k == 1 {
        return argmax();
    }
    let k = if k == 0 { logits.len() } else { k };
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Largest first; ties by index, so the draw is a function of the logits and the seed.
    order.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]).then(i.cmp(&j)));
    order.truncate(k.min(logits.len()));
    let top = f64::from(logits[order[0]]);
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((f64::from(logits[i]) - top) / options.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (&i, w) in order.iter().zip(&weights) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    order[order.len() - 1] as u32
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
        let text: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("text_encoder.")?.to_string(), v.clone())))
            .collect();
        let text_encoder = T5::encoder_from_tensors(
            cfg.text_encoder.clone(),
            &text,
            &format!("{origin} (text_encoder)"),
        )?;
        Self::assemble(cfg, text_encoder, tensors, origin)
    }

    /// The model around `text_encoder` from the decoder's and `enc_to_dec_proj`'s tensors.
    fn assemble(
        cfg: MusicgenConfig,
        text_encoder: T5,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        let dec = &cfg.decoder;
        dec.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        let get =
            |key: &str, shape: &[usize]| crate::checkpoint::get_tensor(tensors, key, shape, origin);
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
            info: Self::info_for(&cfg),
            cfg,
        })
    }

    /// Visits the decoder's tensors and `enc_to_dec_proj`'s under their checkpoint names, in a
    /// fixed order: what full fine-tuning and pretraining train (the text encoder stays frozen,
    /// as MusicGen is fine-tuned). Replacing a tensor by a variable's makes it trainable.
    pub fn visit_params(
        &mut self,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        let base = "decoder.model.decoder";
        for (k, table) in self.embed_tokens.iter_mut().enumerate() {
            f(&format!("{base}.embed_tokens.{k}.weight"), table)?;
        }
        let norm = |name: String,
                    n: &mut Norm,
                    f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>|
         -> Result<()> {
            f(&format!("{name}.weight"), &mut n.weight)?;
            f(&format!("{name}.bias"), &mut n.bias)
        };
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("{base}.layers.{l}");
            norm(
                format!("{p}.self_attn_layer_norm"),
                &mut layer.self_attn_layer_norm,
                f,
            )?;
            for (name, att) in [
                ("self_attn", &mut layer.self_attn),
                ("encoder_attn", &mut layer.encoder_attn),
            ] {
                f(&format!("{p}.{name}.q_proj.weight"), &mut att.q_proj.weight)?;
                f(&format!("{p}.{name}.k_proj.weight"), &mut att.k_proj.weight)?;
                f(&format!("{p}.{name}.v_proj.weight"), &mut att.v_proj.weight)?;
                f(
                    &format!("{p}.{name}.out_proj.weight"),
                    &mut att.out_proj.weight,
                )?;
            }
            norm(
                format!("{p}.encoder_attn_layer_norm"),
                &mut layer.encoder_attn_layer_norm,
                f,
            )?;
            f(&format!("{p}.fc1.weight"), &mut layer.fc1.weight)?;
            f(&format!("{p}.fc2.weight"), &mut layer.fc2.weight)?;
            norm(
                format!("{p}.final_layer_norm"),
                &mut layer.final_layer_norm,
                f,
            )?;
        }
        norm(format!("{base}.layer_norm"), &mut self.layer_norm, f)?;
        for (k, head) in self.lm_heads.iter_mut().enumerate() {
            f(&format!("decoder.lm_heads.{k}.weight"), head)?;
        }
        if let Some(proj) = self.enc_to_dec_proj.as_mut() {
            f("enc_to_dec_proj.weight", &mut proj.weight)?;
            if let Some(bias) = proj.bias.as_mut() {
                f("enc_to_dec_proj.bias", bias)?;
            }
        }
        Ok(())
    }

    /// A model drawn as transformers' `MusicgenPreTrainedModel._init_weights` draws the decoder
    /// (normal with std `initializer_factor` 0.02 for projections, embeddings and heads; unit
    /// layer norms), `enc_to_dec_proj` the same with a zero bias, and the text encoder as
    /// [`T5::random_encoder`]: the miniature the music demo pretrains itself.
    pub fn random(cfg: MusicgenConfig, init: &SeededInit) -> Result<Self> {
        let dec = &cfg.decoder;
        let std = dec.initializer_factor as f32;
        let (d, f, v) = (dec.hidden_size, dec.ffn_dim, dec.vocab_size);
        let mut tensors = HashMap::new();
        let mut normal = |name: String, shape: &[usize]| -> Result<()> {
            let t = init.fork(&name).normal(shape, std)?.as_tensor().detach();
            tensors.insert(name, t);
            Ok(())
        };
        let base = "decoder.model.decoder";
        for k in 0..dec.num_codebooks {
            normal(format!("{base}.embed_tokens.{k}.weight"), &[v + 1, d])?;
            normal(format!("decoder.lm_heads.{k}.weight"), &[v, d])?;
        }
        for l in 0..dec.num_hidden_layers {
            for attention in ["self_attn", "encoder_attn"] {
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    normal(
                        format!("{base}.layers.{l}.{attention}.{proj}.weight"),
                        &[d, d],
                    )?;
                }
            }
            normal(format!("{base}.layers.{l}.fc1.weight"), &[f, d])?;
            normal(format!("{base}.layers.{l}.fc2.weight"), &[d, f])?;
        }
        let text_d = cfg.text_encoder.d_model;
        if text_d != d {
            normal("enc_to_dec_proj.weight".into(), &[d, text_d])?;
            tensors.insert(
                "enc_to_dec_proj.bias".into(),
                init.zeros(d)?.as_tensor().detach(),
            );
        }
        let mut norms = vec![format!("{base}.layer_norm")];
        for l in 0..dec.num_hidden_layers {
            for n in [
                "self_attn_layer_norm",
                "encoder_attn_layer_norm",
                "final_layer_norm",
            ] {
                norms.push(format!("{base}.layers.{l}.{n}"));
            }
        }
        for n in norms {
            tensors.insert(
                format!("{n}.weight"),
                init.constant(d, 1.0)?.as_tensor().detach(),
            );
            tensors.insert(format!("{n}.bias"), init.zeros(d)?.as_tensor().detach());
        }
        let text = T5::random_encoder(cfg.text_encoder.clone(), &init.fork("text_encoder"))?;
        Self::assemble(cfg, text, &tensors, "random initialisation")
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
    /// padded positions (`attention_mask` 0) zeroed, as transformers does; then through the
    /// [`Hooks::conditioning`] site (adapters on the conditioning).
    pub fn encode_text(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let states =
            self.text_encoder
                .encode(input_ids, attention_mask, &NoHooks, &ForwardCtx::eval())?;
        let states = match &self.enc_to_dec_proj {
            Some(proj) => proj.forward(&states)?,
            None => states,
        };
        let zero_padding = |states: Tensor| -> Result<Tensor> {
            match attention_mask {
                Some(mask) => {
                    states.broadcast_mul(&mask.to_dtype(states.dtype())?.unsqueeze(D::Minus1)?)
                }
                None => Ok(states),
            }
        };
        // Padded positions stay zero through the conditioning adapters too.
        zero_padding(hooks.conditioning(zero_padding(states)?, attention_mask, ctx)?)
    }

    /// A cache for decoding over `text_states` `[batch, source, hidden]` (from
    /// [`Musicgen::encode_text`]), attended where `text_mask` (0/1 `[batch, source]`) is 1: every
    /// layer's cross-attention keys and values, computed once through `hooks` at the
    /// [`LinearSite::CrossKey`] / [`LinearSite::CrossValue`] sites (so the steps that follow must
    /// use the same `hooks`).
    pub fn start_decoding(
        &self,
        text_states: &Tensor,
        text_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<MusicgenCache> {
        let cross_kv = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let att = &layer.encoder_attn;
                Ok((
                    hooks.linear(l, LinearSite::CrossKey, text_states, &att.k_proj, ctx)?,
                    hooks.linear(l, LinearSite::CrossValue, text_states, &att.v_proj, ctx)?,
                ))
            })
            .collect::<Result<_>>()?;
        let cross_bias = match text_mask {
            // 0 where attended, the most negative float where padded (transformers' masks).
            Some(mask) => mask
                .to_dtype(DType::F32)?
                .affine(-f64::from(f32::MIN), f64::from(f32::MIN))?
                .unsqueeze(1)?
                .unsqueeze(1)?,
            None => Tensor::zeros(
                (1, 1, 1, text_states.dim(1)?),
                DType::F32,
                text_states.device(),
            )?,
        };
        Ok(MusicgenCache {
            self_kv: vec![None; self.layers.len()],
            cross_kv,
            cross_bias,
            len: 0,
        })
    }

    /// Runs decoder tokens `[batch, codebooks, steps]` (u32) that follow the `cache.len()` steps
    /// already in `cache`, appends their self-attention keys and values to it, and returns the
    /// logits `[batch, codebooks, steps, vocab]`: step `t`'s logits predict step `t + 1`.
    /// `hooks` sees the decoder's layers `0..num_hidden_layers`.
    pub fn decode_step(
        &self,
        tokens: &Tensor,
        cache: &mut MusicgenCache,
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
        let (d, past) = (dec.hidden_size, cache.len);
        let device = cache.cross_bias.device().clone();
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
        let positions = sinusoidal_positions(past, t, d, &device)?;
        let mut x = x
            .expect("validated: at least one codebook")
            .broadcast_add(&positions)?;
        x = ctx.dropout(&x, dec.dropout)?;

        let keys = past + t;
        let causal: Vec<f32> = (0..t)
            .flat_map(|i| (0..keys).map(move |j| if j <= past + i { 0.0 } else { f32::MIN }))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, keys), &device)?;
        let heads = dec.num_attention_heads;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.self_attn_layer_norm.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeAttention, h, ctx)?;
            let att = &layer.self_attn;
            let q = hooks.linear(l, LinearSite::Query, &h, &att.q_proj, ctx)?;
            let mut kk = hooks.linear(l, LinearSite::Key, &h, &att.k_proj, ctx)?;
            let mut v = hooks.linear(l, LinearSite::Value, &h, &att.v_proj, ctx)?;
            if let Some((pk, pv)) = &cache.self_kv[l] {
                kk = Tensor::cat(&[pk, &kk], 1)?;
                v = Tensor::cat(&[pv, &v], 1)?;
            }
            let context =
                biased_attention(&q, &kk, &v, heads, &causal, dec.attention_dropout, ctx)?;
            cache.self_kv[l] = Some((kk, v));
            let a = hooks.linear(l, LinearSite::AttentionOutput, &context, &att.out_proj, ctx)?;
            let a = hooks.sublayer(l, Sublayer::Attention, &x, a, ctx)?;
            x = (&x + ctx.dropout(&a, dec.dropout)?)?;

            let h = layer.encoder_attn_layer_norm.forward(&x)?;
            let cross = &layer.encoder_attn;
            let q = hooks.linear(l, LinearSite::CrossQuery, &h, &cross.q_proj, ctx)?;
            let (ck, cv) = &cache.cross_kv[l];
            let context = biased_attention(
                &q,
                ck,
                cv,
                heads,
                &cache.cross_bias,
                dec.attention_dropout,
                ctx,
            )?;
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
        cache.len = keys;
        let x = self.layer_norm.forward(&x)?;
        let x = hooks.norm(None, NormSite::Final, x, ctx)?;
        let logits: Vec<Tensor> = self
            .lm_heads
            .iter()
            .map(|head| ops::linear(&x, head, None))
            .collect::<Result<_>>()?;
        Tensor::stack(&logits, 1)
    }

    /// Teacher-forced logits `[batch, codebooks, steps, vocab]` for decoder tokens `[batch,
    /// codebooks, steps]` (u32; step `t`'s logits predict step `t + 1`), attending causally to
    /// themselves and to `text_states` where `text_mask` is 1: [`Musicgen::decode_step`] on a
    /// fresh cache.
    pub fn decode(
        &self,
        tokens: &Tensor,
        text_states: &Tensor,
        text_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let mut cache = self.start_decoding(text_states, text_mask, hooks, ctx)?;
        self.decode_step(tokens, &mut cache, hooks, ctx)
    }

    /// Audio codes `[batch, codebooks, frames]` for the prompts `input_ids` `[batch, source]`
    /// (0/1 `attention_mask`), generated as transformers' `generate` does: every codebook starts
    /// from the start token; each step predicts all codebooks' next tokens from the KV cache;
    /// the delay pattern (codebook `k` runs `k` steps late) forces the pad token where a codebook
    /// has not started or has ended, and is undone at the end, so `max_new_tokens + 1 -
    /// codebooks` complete frames come back. With `guidance_scale > 1` a second, unconditional
    /// copy attends to no text (transformers: zero states, masked) and the logits are
    /// `uncond + scale · (cond − uncond)` (classifier-free guidance). `top_k: None` picks the
    /// most likely token; `Some(k)` samples among the `k` most likely at `temperature`, from
    /// `seed`.
    pub fn generate(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        options: &GenerationOptions,
        hooks: &dyn Hooks,
    ) -> Result<Tensor> {
        let dec = &self.cfg.decoder;
        let codebooks = dec.num_codebooks;
        let length = options.max_new_tokens + 1;
        if length < 2 * codebooks - 1 {
            candle_core::bail!(
                "max_new_tokens {} is too few for {codebooks} delayed codebooks: at least {}",
                options.max_new_tokens,
                2 * codebooks - 2
            );
        }
        let usable = options.guidance_scale.is_finite()
            && options.temperature.is_finite()
            && options.temperature > 0.0;
        if !usable {
            candle_core::bail!(
                "generation needs a finite guidance scale and a positive temperature, not {} and {}",
                options.guidance_scale,
                options.temperature
            );
        }
        // Hooks that mix steps read the earlier ones from the context (the cache holds only the
        // decoder's own keys and values).
        let ctx = ForwardCtx::stepping();
        let (b, source) = input_ids.dims2()?;
        // transformers' generate always has a prompt mask (all ones when none is given), so the
        // null prompt of guidance is masked out either way.
        let mask = match attention_mask {
            Some(m) => m.to_dtype(DType::U32)?,
            None => Tensor::ones((b, source), DType::U32, input_ids.device())?,
        };
        let mut states = self.encode_text(input_ids, Some(&mask), hooks, &ctx)?;
        let guided = options.guidance_scale > 1.0;
        if guided {
            // transformers' null prompt: zero states, masked out entirely (not through the
            // conditioning adapters, which never saw it in training).
            let null = states.zeros_like()?;
            states = Tensor::cat(&[&states, &null], 0)?;
        }
        let mask = if guided {
            Tensor::cat(&[&mask, &mask.zeros_like()?], 0)?
        } else {
            mask
        };
        let rows = states.dim(0)?;
        let mut cache = self.start_decoding(&states, Some(&mask), hooks, &ctx)?;
        let pad = dec.pad_token_id;
        let start = dec.start_token();
        // Codebook k holds real tokens at steps k + 1 ..= k + length - codebooks.
        let valid = |k: usize, step: usize| step > k && step <= k + length - codebooks;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
        let mut sequence: Vec<Vec<Vec<u32>>> = vec![vec![vec![start]; codebooks]; b];
        let mut last = Tensor::full(start, (rows, codebooks, 1), states.device())?;
        for step in 1..length {
            let logits = self
                .decode_step(&last, &mut cache, hooks, &ctx)?
                .squeeze(2)?; // [rows, codebooks, vocab]
            let logits = if guided {
                let cond = logits.narrow(0, 0, b)?;
                let uncond = logits.narrow(0, b, b)?;
                (&uncond + ((cond - &uncond)? * options.guidance_scale)?)?
            } else {
                logits
            };
            let scores = logits.to_vec3::<f32>()?;
            let mut next = Vec::with_capacity(b * codebooks);
            for (i, row) in scores.iter().enumerate() {
                for (k, codebook) in row.iter().enumerate() {
                    let token = if valid(k, step) {
                        choose(codebook, options, &mut rng)
                    } else {
                        pad
                    };
                    sequence[i][k].push(token);
                    next.push(token);
                }
            }
            let next = Tensor::from_vec(next, (b, codebooks, 1), states.device())?;
            last = if guided {
                Tensor::cat(&[&next, &next], 0)?
            } else {
                next
            };
        }
        let frames = length - codebooks;
        let codes: Vec<u32> = sequence
            .iter()
            .flat_map(|row| {
                row.iter()
                    .enumerate()
                    .flat_map(move |(k, tokens)| tokens[k + 1..k + 1 + frames].to_vec())
            })
            .collect();
        Tensor::from_vec(codes, (b, codebooks, frames), states.device())
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
        let states = self.encode_text(input_ids, attention_mask, hooks, ctx)?;
        self.decode(tokens, &states, attention_mask, hooks, ctx)
    }

    /// transformers' `shift_tokens_right` for labels `[batch, codebooks, steps]` (u32): every
    /// codebook starts with the start token and reads its labels one step late.
    pub fn shift_right(&self, labels: &Tensor) -> Result<Tensor> {
        let (b, k, t) = labels.dims3()?;
        let start = Tensor::full(self.cfg.decoder.start_token(), (b, k, 1), labels.device())?;
        if t == 0 {
            return labels.to_dtype(DType::U32);
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

impl Musicgen {
    /// The sizes methods build from: the decoder's (the frozen text encoder is not adapted);
    /// `num_tokens` is 0 because the length varies per batch.
    pub fn info_for(cfg: &MusicgenConfig) -> BackboneInfo {
        let dec = &cfg.decoder;
        BackboneInfo {
            family: MUSICGEN_FAMILY.into(),
            hidden_size: dec.hidden_size,
            num_layers: dec.num_hidden_layers,
            num_heads: dec.num_attention_heads,
            intermediate_size: dec.ffn_dim,
            num_tokens: 0,
        }
    }
}

/// The family name methods check for (`BackboneInfo::family`).
pub const MUSICGEN_FAMILY: &str = "musicgen";

/// MusicGen's decoder as a PEFT backbone: its blocks are the decoder's layers, each with
/// self-attention, cross-attention to the text and the feed-forward sites, under transformers'
/// module names (`decoder.model.decoder.layers.3.self_attn.q_proj`), so LoRA and the other
/// registry methods attach as they do to any backbone and save in PEFT's layout. The model
/// generates codec tokens: it has no pooled or per-token features for a classifier, and training
/// and generation go through [`Musicgen::forward`] and [`Musicgen::generate`] with the method's
/// hooks.
impl Backbone for Musicgen {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn linear_dims(&self, site: LinearSite) -> (usize, usize) {
        self.info.linear_dims(site)
    }

    /// Every decoder layer has every site, cross-attention included.
    fn has_linear(&self, layer: usize, _site: LinearSite) -> bool {
        layer < self.layers.len()
    }

    fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        let l = &self.layers[layer];
        match site {
            LinearSite::Query => &l.self_attn.q_proj,
            LinearSite::Key => &l.self_attn.k_proj,
            LinearSite::Value => &l.self_attn.v_proj,
            LinearSite::AttentionOutput => &l.self_attn.out_proj,
            LinearSite::CrossQuery => &l.encoder_attn.q_proj,
            LinearSite::CrossKey => &l.encoder_attn.k_proj,
            LinearSite::CrossValue => &l.encoder_attn.v_proj,
            LinearSite::CrossAttentionOutput => &l.encoder_attn.out_proj,
            LinearSite::Fc1 => &l.fc1,
            LinearSite::Fc2 => &l.fc2,
        }
    }

    fn block_path(&self, layer: usize) -> String {
        format!("decoder.model.decoder.layers.{layer}")
    }

    fn final_norm_path(&self) -> Option<String> {
        Some("decoder.model.decoder.layer_norm".into())
    }

    fn module_path(&self, layer: usize, site: LinearSite) -> String {
        let module = match site {
            LinearSite::Query => "self_attn.q_proj",
            LinearSite::Key => "self_attn.k_proj",
            LinearSite::Value => "self_attn.v_proj",
            LinearSite::AttentionOutput => "self_attn.out_proj",
            LinearSite::CrossQuery => "encoder_attn.q_proj",
            LinearSite::CrossKey => "encoder_attn.k_proj",
            LinearSite::CrossValue => "encoder_attn.v_proj",
            LinearSite::CrossAttentionOutput => "encoder_attn.out_proj",
            LinearSite::Fc1 => "fc1",
            LinearSite::Fc2 => "fc2",
        };
        format!("{}.{module}", self.block_path(layer))
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        Musicgen::visit_params(self, f)
    }

    fn forward_features(&self, _: &Tensor, _: &dyn Hooks, _: &ForwardCtx) -> Result<Tensor> {
        candle_core::bail!(
            "MusicGen generates codec tokens and has no pooled features: music suites train it \
             through its own loss (the music-generation task kind)"
        )
    }

    fn forward_sequence(&self, _: &Tensor, _: &dyn Hooks, _: &ForwardCtx) -> Result<Tensor> {
        candle_core::bail!(
            "MusicGen generates codec tokens and has no per-token features for a classifier: \
             music suites train it through its own loss (the music-generation task kind)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Top-k sampling draws only among the k largest logits, with the softmax's frequencies;
    /// greedy takes the argmax, the lowest index on ties.
    #[test]
    fn top_k_sampling_follows_the_softmax_of_the_k_largest() {
        let logits = [0.0f32, 2.0, 1.0, 2.0, -1.0];
        let greedy = GenerationOptions {
            top_k: None,
            ..GenerationOptions::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(choose(&logits, &greedy, &mut rng), 1);
        let top3 = GenerationOptions {
            top_k: Some(3),
            ..GenerationOptions::default()
        };
        let mut counts = [0usize; 5];
        let draws = 30_000;
        for _ in 0..draws {
            counts[choose(&logits, &top3, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[0] + counts[4], 0, "outside the top 3: {counts:?}");
        // softmax over (2, 2, 1): e²/(2e² + e), e/(2e² + e).
        let e = std::f64::consts::E;
        let (high, low) = (e * e / (2.0 * e * e + e), e / (2.0 * e * e + e));
        for (i, want) in [(1, high), (3, high), (2, low)] {
            let got = counts[i] as f64 / draws as f64;
            assert!((got - want).abs() < 0.01, "token {i}: {got} vs {want}");
        }
        let everything = GenerationOptions {
            top_k: Some(0),
            ..GenerationOptions::default()
        };
        let mut seen = [false; 5];
        for _ in 0..2000 {
            seen[choose(&logits, &everything, &mut rng) as usize] = true;
        }
        assert_eq!(seen, [true; 5], "top_k 0 samples from every token");
        let top1 = GenerationOptions {
            top_k: Some(1),
            ..GenerationOptions::default()
        };
        assert_eq!(choose(&logits, &top1, &mut rng), 1);
    }
}
