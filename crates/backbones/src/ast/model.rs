use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use peftbench_core::{ops, ForwardCtx, SeededInit};

use super::AstConfig;
use crate::encoder::{self, Encoder};
use crate::sites::{Hooks, Linear, LinearSite, NoHooks};
use crate::{Backbone, BackboneInfo};

/// Key prefix of the encoder in HF checkpoints.
const PREFIX: &str = "audio_spectrogram_transformer.";

/// The AST encoder. Weights are plain tensors; see [`Backbone::visit_params`] for training them.
#[derive(Debug, Clone)]
pub struct Ast {
    cfg: AstConfig,
    info: BackboneInfo,
    /// `[hidden, 1, patch, patch]`, the patch-embedding convolution over `[mel, time]`.
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    distillation_token: Tensor,
    /// `[1, 2 + patches, hidden]`.
    position_embeddings: Tensor,
    /// For each patch (frequency-major, as HF flattens the convolution output) the 256 flat input
    /// positions it covers, in the convolution weight's `(mel, time)` order: `[patches * patch^2]`.
    patch_index: Tensor,
    encoder: Encoder,
}

/// Flat `[time, mel]` input positions of every (overlapping) patch; see [`Ast::patch_index`].
fn patch_index(cfg: &AstConfig, device: &Device) -> Result<Tensor> {
    let (p, bins) = (cfg.patch_size, cfg.num_mel_bins);
    let mut index = Vec::with_capacity(cfg.num_patches() * p * p);
    for i in 0..cfg.frequency_out() {
        for j in 0..cfg.time_out() {
            for a in 0..p {
                for b in 0..p {
                    let (mel, time) = (i * cfg.frequency_stride + a, j * cfg.time_stride + b);
                    index.push((time * bins + mel) as u32);
                }
            }
        }
    }
    Tensor::from_vec(index, cfg.num_patches() * p * p, device)
}

impl Ast {
    pub fn config(&self) -> &AstConfig {
        &self.cfg
    }

    /// The sizes methods are checked against, from the configuration alone.
    pub fn info_for(cfg: &AstConfig) -> BackboneInfo {
        BackboneInfo {
            family: "ast".into(),
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_hidden_layers,
            num_heads: cfg.num_attention_heads,
            intermediate_size: cfg.intermediate_size,
            num_tokens: cfg.num_patches() + 2,
        }
    }

    /// Builds the model from named tensors (keys with or without the `audio_spectrogram_transformer.`
    /// prefix; a classifier head is ignored), checking every shape. `origin` names the source in errors.
    pub fn from_tensors(
        cfg: AstConfig,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        let prefix = if tensors.contains_key(&format!("{PREFIX}embeddings.cls_token")) {
            PREFIX
        } else {
            ""
        };
        let get = |name: &str, shape: &[usize]| {
            crate::checkpoint::get_tensor(tensors, &format!("{prefix}{name}"), shape, origin)
        };
        let (d, p) = (cfg.hidden_size, cfg.patch_size);
        let encoder = Encoder::from_tensors(cfg.encoder_dims(), &get)?;
        let patch_weight = get(
            "embeddings.patch_embeddings.projection.weight",
            &[d, 1, p, p],
        )?;
        Ok(Self {
            info: Self::info_for(&cfg),
            patch_index: patch_index(&cfg, patch_weight.device())?,
            patch_weight,
            patch_bias: get("embeddings.patch_embeddings.projection.bias", &[d])?,
            cls_token: get("embeddings.cls_token", &[1, 1, d])?,
            distillation_token: get("embeddings.distillation_token", &[1, 1, d])?,
            position_embeddings: get(
                "embeddings.position_embeddings",
                &[1, cfg.num_patches() + 2, d],
            )?,
            encoder,
            cfg,
        })
    }

    /// Loads `config.json` + `model.safetensors` from a checkpoint folder; with `max_length`, adapts the
    /// position embeddings to that many input frames (see [`Ast::with_max_length`]).
    pub fn load(
        config_path: &Path,
        weights_path: &Path,
        device: &Device,
        max_length: Option<usize>,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let cfg: AstConfig = serde_json::from_str(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let tensors = candle_core::safetensors::load(weights_path, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights_path.display())))?;
        let ast = Self::from_tensors(cfg, &tensors, &weights_path.display().to_string())?;
        match max_length {
            Some(frames) => ast.with_max_length(frames),
            None => Ok(ast),
        }
    }

    /// The same model for inputs of `frames` frames. The patch-position embeddings, a
    /// `[frequency_out, time_out]` grid, are adapted along time as AST's recipe does for fine-tuning on
    /// shorter or longer clips: a shorter grid keeps the centre columns, a longer one is linearly
    /// interpolated (bilinear with `align_corners=False`, which is linear along the one changed axis).
    pub fn with_max_length(mut self, frames: usize) -> Result<Self> {
        if frames == self.cfg.max_length {
            return Ok(self);
        }
        let mut cfg = self.cfg.clone();
        cfg.max_length = frames;
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let (fo, t_old, t_new, d) = (
            self.cfg.frequency_out(),
            self.cfg.time_out(),
            cfg.time_out(),
            cfg.hidden_size,
        );
        let pos = self.position_embeddings.to_dtype(DType::F32)?.i(0)?;
        let tokens = pos.narrow(0, 0, 2)?;
        let grid: Vec<Vec<f32>> = pos.narrow(0, 2, fo * t_old)?.to_vec2()?;
        let mut out = Vec::with_capacity(fo * t_new * d);
        for f in 0..fo {
            let row = &grid[f * t_old..(f + 1) * t_old];
            for j in 0..t_new {
                if t_new < t_old {
                    out.extend_from_slice(&row[t_old / 2 - t_new / 2 + j]);
                } else {
                    let src = ((j as f64 + 0.5) * t_old as f64 / t_new as f64 - 0.5).max(0.0);
                    let lo = (src.floor() as usize).min(t_old - 1);
                    let hi = (lo + 1).min(t_old - 1);
                    let w = (src - lo as f64) as f32;
                    out.extend(
                        row[lo]
                            .iter()
                            .zip(&row[hi])
                            .map(|(a, b)| a * (1.0 - w) + b * w),
                    );
                }
            }
        }
        let device = self.position_embeddings.device().clone();
        let patches = Tensor::from_vec(out, (fo * t_new, d), &device)?;
        let dtype = self.position_embeddings.dtype();
        self.position_embeddings = Tensor::cat(&[&tokens, &patches], 0)?
            .unsqueeze(0)?
            .to_dtype(dtype)?;
        self.patch_index = patch_index(&cfg, &device)?;
        self.info = Self::info_for(&cfg);
        self.cfg = cfg;
        Ok(self)
    }

    /// A randomly initialised model as HF's `ASTPreTrainedModel._init_weights` does it (truncated
    /// normal 0.02 for weights and tokens, zero biases, unit norms), from a seed.
    pub fn random(cfg: AstConfig, init: &SeededInit) -> Result<Self> {
        let std = cfg.initializer_range as f32;
        let mut tensors = HashMap::new();
        for (name, shape) in Self::param_shapes(&cfg) {
            let var = if name.ends_with("layernorm_before.weight")
                || name.ends_with("layernorm_after.weight")
                || name == "layernorm.weight"
            {
                init.constant(shape.as_slice(), 1.0)?
            } else if name.ends_with(".bias") {
                init.zeros(shape.as_slice())?
            } else {
                init.fork(&name).trunc_normal(shape.as_slice(), std)?
            };
            tensors.insert(name, var.as_tensor().detach());
        }
        Self::from_tensors(cfg, &tensors, "random init")
    }

    /// Names (without the prefix) and shapes of every tensor, in checkpoint order.
    fn param_shapes(cfg: &AstConfig) -> Vec<(String, Vec<usize>)> {
        let (d, p) = (cfg.hidden_size, cfg.patch_size);
        let mut out = vec![
            ("embeddings.cls_token".to_string(), vec![1, 1, d]),
            ("embeddings.distillation_token".to_string(), vec![1, 1, d]),
            (
                "embeddings.position_embeddings".to_string(),
                vec![1, cfg.num_patches() + 2, d],
            ),
            (
                "embeddings.patch_embeddings.projection.weight".to_string(),
                vec![d, 1, p, p],
            ),
            (
                "embeddings.patch_embeddings.projection.bias".to_string(),
                vec![d],
            ),
        ];
        out.extend(cfg.encoder_dims().param_shapes());
        out
    }

    /// Converts every weight to `dtype` (f64 for finite-difference gradient checks).
    pub fn cast(&mut self, dtype: DType) -> Result<()> {
        self.visit_params(&mut |_, t| {
            *t = t.to_dtype(dtype)?;
            Ok(())
        })
    }

    /// Writes `config.json` and `model.safetensors` (HF `ASTModel` keys) into `dir`.
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let config = serde_json::to_string_pretty(&self.cfg.to_hf_json())
            .map_err(candle_core::Error::wrap)?;
        std::fs::write(dir.join("config.json"), config)?;
        let mut tensors = HashMap::new();
        self.visit_params(&mut |name, t| {
            tensors.insert(name.to_string(), t.detach());
            Ok(())
        })?;
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))
    }

    /// Patch embedding of `[batch, time, mel]` inputs: gathers each overlapping 16x16 patch and applies
    /// the convolution as one matmul (equal to HF's strided `Conv2d` over the transposed input).
    fn embed_patches(&self, input: &Tensor) -> Result<Tensor> {
        let (b, t, f) = input.dims3()?;
        if t != self.cfg.max_length || f != self.cfg.num_mel_bins {
            candle_core::bail!(
                "AST expects [batch, {} frames, {} mel bins] inputs, got {:?}",
                self.cfg.max_length,
                self.cfg.num_mel_bins,
                input.dims()
            );
        }
        let (d, p) = (self.cfg.hidden_size, self.cfg.patch_size);
        let patches = input
            .reshape((b, t * f))?
            .index_select(&self.patch_index, 1)?
            .reshape((b, self.cfg.num_patches(), p * p))?;
        let weight = self.patch_weight.reshape((d, p * p))?;
        ops::linear(&patches, &weight, Some(&self.patch_bias))
    }

    /// The token stream after the final norm, `[batch, tokens, hidden]` (CLS, distillation, patches).
    pub fn forward_tokens(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.encoder.forward(self.embed(input, ctx)?, hooks, ctx)
    }

    /// The token stream entering the first block: CLS, distillation and patch embeddings plus
    /// positions.
    fn embed(&self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let patches = self.embed_patches(input)?;
        let b = patches.dim(0)?;
        let shape = (b, 1, self.cfg.hidden_size);
        let cls = self.cls_token.broadcast_as(shape)?;
        let dist = self.distillation_token.broadcast_as(shape)?;
        let x =
            Tensor::cat(&[&cls, &dist, &patches], 1)?.broadcast_add(&self.position_embeddings)?;
        ctx.dropout(&x, self.cfg.hidden_dropout_prob)
    }

    /// The mean of the CLS and distillation tokens' final states (HF's `ASTModel` pooler).
    /// Prompt methods insert their tokens after the CLS token, so the distillation token is found
    /// as the token just before the patches.
    fn pool(&self, tokens: &Tensor) -> Result<Tensor> {
        let dist = tokens.dim(1)? - self.cfg.num_patches() - 1;
        (tokens.i((.., 0, ..))? + tokens.i((.., dist, ..))?)? * 0.5
    }
}

impl Backbone for Ast {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn linear_dims(&self, site: LinearSite) -> (usize, usize) {
        self.cfg.encoder_dims().site_dims(site)
    }

    fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        self.encoder.linear(layer, site)
    }

    fn block_path(&self, layer: usize) -> String {
        format!("{PREFIX}{}", encoder::layer_path(layer))
    }

    fn final_norm_path(&self) -> Option<String> {
        Some(format!("{PREFIX}layernorm"))
    }

    fn module_path(&self, layer: usize, site: LinearSite) -> String {
        format!(
            "{PREFIX}{}.{}",
            encoder::layer_path(layer),
            encoder::site_suffix(site)
        )
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        f(
            &format!("{PREFIX}embeddings.cls_token"),
            &mut self.cls_token,
        )?;
        f(
            &format!("{PREFIX}embeddings.distillation_token"),
            &mut self.distillation_token,
        )?;
        f(
            &format!("{PREFIX}embeddings.position_embeddings"),
            &mut self.position_embeddings,
        )?;
        f(
            &format!("{PREFIX}embeddings.patch_embeddings.projection.weight"),
            &mut self.patch_weight,
        )?;
        f(
            &format!("{PREFIX}embeddings.patch_embeddings.projection.bias"),
            &mut self.patch_bias,
        )?;
        self.encoder.visit_params(PREFIX, f)
    }

    /// Mean of the CLS and distillation tokens after the final norm (HF `ASTModel`'s pooled output).
    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.pool(&self.forward_tokens(input, hooks, ctx)?)
    }

    fn forward_frozen_prefix(
        &self,
        input: &Tensor,
        blocks: usize,
        ctx: &ForwardCtx,
    ) -> Result<Option<Tensor>> {
        let x = self.embed(input, ctx)?;
        Ok(Some(self.encoder.blocks(x, 0..blocks, &NoHooks, ctx)?))
    }

    fn forward_features_from(
        &self,
        stream: &Tensor,
        blocks: usize,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.pool(
            &self
                .encoder
                .forward_from(stream.clone(), blocks, hooks, ctx)?,
        )
    }

    /// The patch tokens' states (CLS, distillation and any prompt tokens removed).
    fn forward_sequence(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let states = self.forward_tokens(input, hooks, ctx)?;
        let patches = self.cfg.num_patches();
        states.narrow(1, states.dim(1)? - patches, patches)
    }
}
