//! EnCodec (Défossez, Copet, Synnaeve, Adi, "High Fidelity Neural Audio Compression", 2022) as
//! MusicGen reads and writes it: the 32 kHz model that `facebook/musicgen-small` carries as its
//! `audio_encoder` (strides 8, 5, 4, 4, so 50 frames a second; 4 codebooks of 2048 codes at
//! bandwidth 2.2), in transformers' `EncodecModel` layout and configuration.
//!
//! Its own implementation, not candle-transformers' `encodec`: that one pads convolutions by
//! replicating the edge sample where EnCodec reflects, which an LSTM then carries some twenty
//! frames into the clip, and does not trim its transposed convolutions, so its decoded audio is
//! longer and shifted (measured on the fixture below: 22 of 100 frames' codes differ, and 64,740
//! samples come back for 64,000). Here, as in transformers:
//! - convolutions pad `kernel − stride` (dilated kernel) split half and half (the extra half
//!   right), plus what completes the last frame, by reflection (or zeros, `pad_mode: constant`);
//!   causal ones pad everything on the left;
//! - transposed convolutions trim the same `kernel − stride` after the fact;
//! - weight norm `g · v / ‖v‖` over all but the first dimension;
//! - residual blocks `ELU → conv(k, dilation) → ELU → conv(1)`, added to the input (or to a 1x1
//!   shortcut); a two-layer LSTM added to its input; ELU everywhere else.
//! - Codes: residual vector quantisation, each level's nearest codeword (squared distance, the
//!   first on a tie) of what the levels before left, with as many levels as the bandwidth buys.
//!
//! Checked against transformers on a random miniature of the 32 kHz model
//! (`ci/fixtures/encodec_random.py`, `tests/encodec.rs`): the codes are transformers' and the
//! decoded audio is within float rounding of it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, D};
use serde::Deserialize;

/// transformers' `EncodecConfig` (the fields the model reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EncodecConfig {
    pub target_bandwidths: Vec<f64>,
    pub sampling_rate: usize,
    pub audio_channels: usize,
    #[serde(default)]
    pub normalize: bool,
    pub hidden_size: usize,
    pub num_filters: usize,
    pub num_residual_layers: usize,
    pub upsampling_ratios: Vec<usize>,
    pub norm_type: String,
    pub kernel_size: usize,
    pub last_kernel_size: usize,
    pub residual_kernel_size: usize,
    pub dilation_growth_rate: usize,
    pub use_causal_conv: bool,
    pub pad_mode: String,
    pub compress: usize,
    pub num_lstm_layers: usize,
    pub trim_right_ratio: f64,
    pub codebook_size: usize,
    #[serde(default)]
    pub codebook_dim: Option<usize>,
    pub use_conv_shortcut: bool,
}

impl EncodecConfig {
    /// Samples per frame.
    pub fn hop(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// Frames a second (rounded up, as transformers).
    pub fn frame_rate(&self) -> usize {
        self.sampling_rate.div_ceil(self.hop())
    }

    /// Codebooks at `bandwidth` kbps: transformers' `get_num_quantizers_for_bandwidth`.
    pub fn codebooks_at(&self, bandwidth: f64) -> usize {
        let bits = (self.codebook_size as f64).log2();
        ((bandwidth * 1000.0 / (self.frame_rate() as f64 * bits)).floor() as usize).max(1)
    }
}

type Tensors = HashMap<String, Tensor>;

fn get(tensors: &Tensors, name: &str, shape: &[usize]) -> Result<Tensor> {
    let t = tensors
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("EnCodec weights have no `{name}`")))?;
    if t.dims() != shape {
        candle_core::bail!("EnCodec `{name}` is {:?}, expected {shape:?}", t.dims());
    }
    t.to_dtype(DType::F32)
}

/// Weight norm's weight: `g · v / ‖v‖`, the norm over all but the first dimension.
fn weight_norm(tensors: &Tensors, name: &str, shape: &[usize]) -> Result<Tensor> {
    let v = get(tensors, &format!("{name}.weight_v"), shape)?;
    let g = get(tensors, &format!("{name}.weight_g"), &[shape[0], 1, 1])?;
    let norm = v.sqr()?.sum_keepdim((1, 2))?.sqrt()?;
    v.broadcast_mul(&g)?.broadcast_div(&norm)
}

/// `x` `[B, C, L]` padded by `left` and `right` samples: reflected (transformers' `_pad1d`,
/// which zero-pads first when the signal is shorter than the padding) or zeros.
fn pad(x: &Tensor, left: usize, right: usize, reflect: bool) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    if !reflect {
        return x.pad_with_zeros(D::Minus1, left, right);
    }
    let length = x.dim(D::Minus1)?;
    let max_pad = left.max(right);
    let (x, extra) = if length <= max_pad {
        let extra = max_pad - length + 1;
        (x.pad_with_zeros(D::Minus1, 0, extra)?, extra)
    } else {
        (x.clone(), 0)
    };
    let n = length + extra;
    let index: Vec<u32> = (0..left)
        .map(|i| (left - i) as u32)
        .chain((0..n).map(|i| i as u32))
        .chain((0..right).map(|i| (n - 2 - i) as u32))
        .collect();
    let index = Tensor::from_vec(index, left + n + right, x.device())?;
    let padded = x.index_select(&index, D::Minus1)?;
    padded.narrow(D::Minus1, 0, left + n + right - extra)
}

/// `EncodecConv1d`.
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    dilation: usize,
    causal: bool,
    reflect: bool,
}

impl Conv {
    fn new(
        cfg: &EncodecConfig,
        tensors: &Tensors,
        name: &str,
        (inp, out, kernel): (usize, usize, usize),
        stride: usize,
        dilation: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: weight_norm(tensors, &format!("{name}.conv"), &[out, inp, kernel])?,
            bias: get(tensors, &format!("{name}.conv.bias"), &[out])?,
            stride,
            dilation,
            causal: cfg.use_causal_conv,
            reflect: cfg.pad_mode == "reflect",
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kernel = (self.weight.dim(2)? - 1) * self.dilation + 1;
        let padding_total = kernel - self.stride;
        let length = x.dim(D::Minus1)? as f64;
        // transformers' `_get_extra_padding_for_conv1d`: what completes the last frame.
        let frames = ((length - kernel as f64 + padding_total as f64) / self.stride as f64 + 1.0)
            .ceil()
            - 1.0;
        let ideal = frames * self.stride as f64 + kernel as f64 - padding_total as f64;
        let extra = (ideal - length).max(0.0) as usize;
        let x = if self.causal {
            pad(x, padding_total, extra, self.reflect)?
        } else {
            let right = padding_total / 2;
            pad(x, padding_total - right, right + extra, self.reflect)?
        };
        x.conv1d(&self.weight, 0, self.stride, self.dilation, 1)?
            .broadcast_add(&self.bias.reshape((1, (), 1))?)
    }
}

/// `EncodecConvTranspose1d`, its padding trimmed.
struct ConvTranspose {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    causal: bool,
    trim_right_ratio: f64,
}

impl ConvTranspose {
    fn new(
        cfg: &EncodecConfig,
        tensors: &Tensors,
        name: &str,
        (inp, out, kernel): (usize, usize, usize),
        stride: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: weight_norm(tensors, &format!("{name}.conv"), &[inp, out, kernel])?,
            bias: get(tensors, &format!("{name}.conv.bias"), &[out])?,
            stride,
            causal: cfg.use_causal_conv,
            trim_right_ratio: cfg.trim_right_ratio,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let padding_total = self.weight.dim(2)? - self.stride;
        let y = x
            .conv_transpose1d(&self.weight, 0, 0, self.stride, 1, 1)?
            .broadcast_add(&self.bias.reshape((1, (), 1))?)?;
        let right = if self.causal {
            (padding_total as f64 * self.trim_right_ratio).ceil() as usize
        } else {
            padding_total / 2
        };
        let left = padding_total - right;
        let length = y.dim(D::Minus1)?;
        y.narrow(D::Minus1, left, length - left - right)
    }
}

/// `EncodecResnetBlock`.
struct ResBlock {
    first: Conv,
    second: Conv,
    shortcut: Option<Conv>,
}

impl ResBlock {
    fn new(
        cfg: &EncodecConfig,
        tensors: &Tensors,
        name: &str,
        dim: usize,
        dilation: usize,
    ) -> Result<Self> {
        let hidden = dim / cfg.compress;
        Ok(Self {
            first: Conv::new(
                cfg,
                tensors,
                &format!("{name}.block.1"),
                (dim, hidden, cfg.residual_kernel_size),
                1,
                dilation,
            )?,
            second: Conv::new(
                cfg,
                tensors,
                &format!("{name}.block.3"),
                (hidden, dim, 1),
                1,
                1,
            )?,
            shortcut: if cfg.use_conv_shortcut {
                Some(Conv::new(
                    cfg,
                    tensors,
                    &format!("{name}.shortcut"),
                    (dim, dim, 1),
                    1,
                    1,
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.first.forward(&x.elu(1.0)?)?;
        let h = self.second.forward(&h.elu(1.0)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// `EncodecLSTM`: PyTorch's multi-layer LSTM over time, added to its input.
struct Lstm {
    /// Per layer: `W_ih`, `W_hh` `[4H, H]` and the summed biases `[4H]` (gates i, f, g, o).
    layers: Vec<(Tensor, Tensor, Tensor)>,
}

impl Lstm {
    fn new(cfg: &EncodecConfig, tensors: &Tensors, name: &str, dim: usize) -> Result<Self> {
        let layers = (0..cfg.num_lstm_layers)
            .map(|l| {
                let w = |kind: &str| {
                    get(
                        tensors,
                        &format!("{name}.lstm.{kind}_l{l}"),
                        &[4 * dim, dim],
                    )
                };
                let b = |kind: &str| get(tensors, &format!("{name}.lstm.{kind}_l{l}"), &[4 * dim]);
                Ok((
                    w("weight_ih")?,
                    w("weight_hh")?,
                    (b("bias_ih")? + b("bias_hh")?)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// `x` `[B, C, T]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let mut seq = x.transpose(1, 2)?.contiguous()?; // [B, T, C]
        for (w_ih, w_hh, bias) in &self.layers {
            let inputs = seq
                .reshape((b * t, c))?
                .matmul(&w_ih.t()?)?
                .broadcast_add(bias)?
                .reshape((b, t, 4 * c))?;
            let mut h = Tensor::zeros((b, c), DType::F32, x.device())?;
            let mut cell = h.clone();
            let mut outputs = Vec::with_capacity(t);
            let w_hh_t = w_hh.t()?.contiguous()?;
            for step in 0..t {
                let gates = (inputs.narrow(1, step, 1)?.squeeze(1)? + h.matmul(&w_hh_t)?)?;
                let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, c)?)?;
                let f = candle_nn::ops::sigmoid(&gates.narrow(1, c, c)?)?;
                let g = gates.narrow(1, 2 * c, c)?.tanh()?;
                let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * c, c)?)?;
                cell = ((f * &cell)? + (i * g)?)?;
                h = (o * cell.tanh()?)?;
                outputs.push(h.clone());
            }
            seq = Tensor::stack(&outputs, 1)?;
        }
        x + seq.transpose(1, 2)?
    }
}

enum Layer {
    Conv(Conv),
    ConvTranspose(ConvTranspose),
    Res(ResBlock),
    Lstm(Lstm),
    Elu,
}

impl Layer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::ConvTranspose(c) => c.forward(x),
            Layer::Res(r) => r.forward(x),
            Layer::Lstm(l) => l.forward(x),
            Layer::Elu => x.elu(1.0),
        }
    }
}

fn run(layers: &[Layer], x: &Tensor) -> Result<Tensor> {
    layers.iter().try_fold(x.clone(), |x, l| l.forward(&x))
}

/// The EnCodec model: encoder, residual quantiser, decoder.
pub struct Encodec {
    cfg: EncodecConfig,
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    /// Each level's codewords `[codes, dim]`.
    codebooks: Vec<Tensor>,
    device: Device,
}

impl Encodec {
    /// The model of `cfg` from `tensors` named `<prefix><transformers name>` (`audio_encoder.` in
    /// a MusicGen checkpoint), weight norm as `weight_g` / `weight_v` or as transformers 5's
    /// `parametrizations.weight.original0` / `original1`.
    pub fn from_tensors(
        cfg: EncodecConfig,
        tensors: &Tensors,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        if cfg.norm_type != "weight_norm" || cfg.normalize || cfg.audio_channels != 1 {
            candle_core::bail!(
                "EnCodec: only mono, weight-normed, unnormalised models (MusicGen's) are supported"
            );
        }
        let t: Tensors = tensors
            .iter()
            .filter_map(|(k, v)| {
                let k = k
                    .strip_prefix(prefix)?
                    .replace("parametrizations.weight.original0", "weight_g")
                    .replace("parametrizations.weight.original1", "weight_v");
                Some((k, v.clone()))
            })
            .collect();
        let f = cfg.num_filters;
        let mut encoder = vec![Layer::Conv(Conv::new(
            &cfg,
            &t,
            "encoder.layers.0",
            (1, f, cfg.kernel_size),
            1,
            1,
        )?)];
        let mut scaling = 1;
        for &ratio in cfg.upsampling_ratios.iter().rev() {
            let scale = scaling * f;
            for j in 0..cfg.num_residual_layers {
                let name = format!("encoder.layers.{}", encoder.len());
                let dilation = cfg.dilation_growth_rate.pow(j as u32);
                encoder.push(Layer::Res(ResBlock::new(&cfg, &t, &name, scale, dilation)?));
            }
            encoder.push(Layer::Elu);
            let name = format!("encoder.layers.{}", encoder.len());
            encoder.push(Layer::Conv(Conv::new(
                &cfg,
                &t,
                &name,
                (scale, 2 * scale, 2 * ratio),
                ratio,
                1,
            )?));
            scaling *= 2;
        }
        let name = format!("encoder.layers.{}", encoder.len());
        encoder.push(Layer::Lstm(Lstm::new(&cfg, &t, &name, scaling * f)?));
        encoder.push(Layer::Elu);
        let name = format!("encoder.layers.{}", encoder.len());
        encoder.push(Layer::Conv(Conv::new(
            &cfg,
            &t,
            &name,
            (scaling * f, cfg.hidden_size, cfg.last_kernel_size),
            1,
            1,
        )?));

        let mut scaling = 1usize << cfg.upsampling_ratios.len();
        let mut decoder = vec![Layer::Conv(Conv::new(
            &cfg,
            &t,
            "decoder.layers.0",
            (cfg.hidden_size, scaling * f, cfg.kernel_size),
            1,
            1,
        )?)];
        decoder.push(Layer::Lstm(Lstm::new(
            &cfg,
            &t,
            "decoder.layers.1",
            scaling * f,
        )?));
        for &ratio in &cfg.upsampling_ratios {
            let scale = scaling * f;
            decoder.push(Layer::Elu);
            let name = format!("decoder.layers.{}", decoder.len());
            decoder.push(Layer::ConvTranspose(ConvTranspose::new(
                &cfg,
                &t,
                &name,
                (scale, scale / 2, 2 * ratio),
                ratio,
            )?));
            for j in 0..cfg.num_residual_layers {
                let name = format!("decoder.layers.{}", decoder.len());
                let dilation = cfg.dilation_growth_rate.pow(j as u32);
                decoder.push(Layer::Res(ResBlock::new(
                    &cfg,
                    &t,
                    &name,
                    scale / 2,
                    dilation,
                )?));
            }
            scaling /= 2;
        }
        decoder.push(Layer::Elu);
        let name = format!("decoder.layers.{}", decoder.len());
        decoder.push(Layer::Conv(Conv::new(
            &cfg,
            &t,
            &name,
            (f, 1, cfg.last_kernel_size),
            1,
            1,
        )?));

        let dim = cfg.codebook_dim.unwrap_or(cfg.hidden_size);
        let levels = cfg.codebooks_at(cfg.target_bandwidths.iter().copied().fold(0.0, f64::max));
        let codebooks = (0..levels)
            .map(|l| {
                get(
                    &t,
                    &format!("quantizer.layers.{l}.codebook.embed"),
                    &[cfg.codebook_size, dim],
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            encoder,
            decoder,
            codebooks,
            device: device.clone(),
        })
    }

    /// `config` (an EnCodec `config.json`, or a MusicGen one's `audio_encoder`) and the tensors
    /// under `prefix` of `weights`.
    pub fn load(
        config: &serde_json::Value,
        weights: &Path,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        let cfg: EncodecConfig = serde_json::from_value(config.clone())
            .map_err(|e| candle_core::Error::Msg(format!("EnCodec config: {e}")))?;
        let tensors = candle_core::safetensors::load(weights, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights.display())))?;
        Self::from_tensors(cfg, &tensors, prefix, device)
    }

    pub fn config(&self) -> &EncodecConfig {
        &self.cfg
    }

    /// Codebooks per frame (at the configuration's highest bandwidth).
    pub fn codebooks(&self) -> usize {
        self.codebooks.len()
    }

    /// The codes `[codebooks][frames]` of mono `samples` at the model's rate.
    pub fn encode(&self, samples: &[f32]) -> Result<Vec<Vec<u32>>> {
        let x = Tensor::from_slice(samples, (1, 1, samples.len()), &self.device)?;
        let embeddings = run(&self.encoder, &x)?.squeeze(0)?.t()?.contiguous()?; // [T, D]
        let mut residual = embeddings;
        let mut codes = Vec::with_capacity(self.codebooks.len());
        for codebook in &self.codebooks {
            // Squared distance up to the residual's own norm: ‖e‖² − 2 r·e.
            let scores = (codebook
                .sqr()?
                .sum(1)?
                .unsqueeze(0)?
                .broadcast_sub(&(residual.matmul(&codebook.t()?)? * 2.0)?))?;
            let index = scores.argmin(1)?;
            residual = (residual - codebook.index_select(&index, 0)?)?;
            codes.push(index.to_vec1::<u32>()?);
        }
        Ok(codes)
    }

    /// Mono audio of codes `[codebooks][frames]` (frames × hop samples).
    pub fn decode(&self, codes: &[Vec<u32>]) -> Result<Vec<f32>> {
        if codes.len() > self.codebooks.len() {
            candle_core::bail!(
                "{} codebooks of codes for an EnCodec of {}",
                codes.len(),
                self.codebooks.len()
            );
        }
        let mut embeddings: Option<Tensor> = None;
        for (row, codebook) in codes.iter().zip(&self.codebooks) {
            let index = Tensor::from_slice(row, row.len(), &self.device)?;
            let e = codebook.index_select(&index, 0)?;
            embeddings = Some(match embeddings {
                None => e,
                Some(sum) => (sum + e)?,
            });
        }
        let embeddings = embeddings
            .ok_or_else(|| candle_core::Error::Msg("no codes to decode".into()))?
            .t()?
            .unsqueeze(0)?
            .contiguous()?;
        run(&self.decoder, &embeddings)?
            .flatten_all()?
            .to_vec1::<f32>()
    }
}
