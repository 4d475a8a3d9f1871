use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use peftbench_core::{ops, ForwardCtx, SeededInit};

use super::VitConfig;
use crate::encoder::{self, Encoder, EncoderDims};
use crate::sites::{Hooks, Linear, LinearSite, NoHooks};
use crate::{Backbone, BackboneInfo};

/// The ViT encoder. Weights are plain tensors; see [`Backbone::visit_params`] for training them.
#[derive(Debug, Clone)]
pub struct Vit {
    cfg: VitConfig,
    info: BackboneInfo,
    /// `[hidden, channels, patch, patch]`, the patch-embedding convolution.
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    position_embeddings: Tensor,
    encoder: Encoder,
}

/// Module path of block `layer` in HF checkpoints (ViTForImageClassification layout).
fn layer_path(layer: usize) -> String {
    format!("vit.{}", encoder::layer_path(layer))
}

impl VitConfig {
    pub(crate) fn encoder_dims(&self) -> EncoderDims {
        EncoderDims {
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
            qkv_bias: self.qkv_bias,
            hidden_dropout: self.hidden_dropout_prob,
            attention_dropout: self.attention_probs_dropout_prob,
        }
    }
}

impl Vit {
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// The sizes methods see, from the configuration alone.
    pub fn info_for(cfg: &VitConfig) -> BackboneInfo {
        BackboneInfo {
            family: "vit".into(),
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_hidden_layers,
            num_heads: cfg.num_attention_heads,
            intermediate_size: cfg.intermediate_size,
            num_tokens: cfg.num_patches() + 1,
        }
    }

    /// Builds the model from named tensors (keys with or without the `vit.` prefix), checking
    /// every shape. `origin` names the source in errors.
    pub fn from_tensors(
        cfg: VitConfig,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(format!("{origin}: {e}")))?;
        let prefix = if tensors.contains_key("vit.embeddings.cls_token") {
            "vit."
        } else {
            ""
        };
        let get = |name: &str, shape: &[usize]| {
            crate::checkpoint::get_tensor(tensors, &format!("{prefix}{name}"), shape, origin)
        };
        let (d, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let encoder = Encoder::from_tensors(cfg.encoder_dims(), &get)?;
        Ok(Self {
            info: Self::info_for(&cfg),
            patch_weight: get(
                "embeddings.patch_embeddings.projection.weight",
                &[d, c, p, p],
            )?,
            patch_bias: get("embeddings.patch_embeddings.projection.bias", &[d])?,
            cls_token: get("embeddings.cls_token", &[1, 1, d])?,
            position_embeddings: get(
                "embeddings.position_embeddings",
                &[1, cfg.num_patches() + 1, d],
            )?,
            encoder,
            cfg,
        })
    }

    /// Loads `config.json` + `model.safetensors` from a checkpoint folder.
    pub fn load(config_path: &Path, weights_path: &Path, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(config_path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let cfg: VitConfig = serde_json::from_str(&text)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", config_path.display())))?;
        let tensors = candle_core::safetensors::load(weights_path, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights_path.display())))?;
        Self::from_tensors(cfg, &tensors, &weights_path.display().to_string())
    }

    /// A randomly initialised model as HF's `ViTPreTrainedModel._init_weights` does it
    /// (truncated normal 0.02 for weights and tokens, zero biases, unit norms), from a seed.
    pub fn random(cfg: VitConfig, init: &SeededInit) -> Result<Self> {
        let std = cfg.initializer_range as f32;
        let mut tensors = HashMap::new();
        let shapes = Self::param_shapes(&cfg);
        for (name, shape) in shapes {
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

    /// Names (without the `vit.` prefix) and shapes of every tensor, in checkpoint order.
    fn param_shapes(cfg: &VitConfig) -> Vec<(String, Vec<usize>)> {
        let (d, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let mut out = vec![
            ("embeddings.cls_token".to_string(), vec![1, 1, d]),
            (
                "embeddings.position_embeddings".to_string(),
                vec![1, cfg.num_patches() + 1, d],
            ),
            (
                "embeddings.patch_embeddings.projection.weight".to_string(),
                vec![d, c, p, p],
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

    /// Writes `config.json` and `model.safetensors` (HF `ViTModel` keys) into `dir`.
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let config = serde_json::to_string_pretty(&self.cfg.to_hf_json())
            .map_err(candle_core::Error::wrap)?;
        std::fs::write(dir.join("config.json"), config)?;
        let mut tensors = HashMap::new();
        self.visit_params(&mut |name, t| {
            let key = name.strip_prefix("vit.").unwrap_or(name).to_string();
            tensors.insert(key, t.detach());
            Ok(())
        })?;
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))
    }

    /// Patch embedding as a matmul over non-overlapping patches (equal to the strided convolution,
    /// and cheaper to differentiate than candle's conv2d).
    fn embed_patches(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let p = self.cfg.patch_size;
        if c != self.cfg.num_channels || h != self.cfg.image_size || w != self.cfg.image_size {
            candle_core::bail!(
                "ViT expects [batch, {}, {}, {}] pixels, got {:?}",
                self.cfg.num_channels,
                self.cfg.image_size,
                self.cfg.image_size,
                pixels.dims()
            );
        }
        let (gh, gw) = (h / p, w / p);
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * p * p))?;
        let weight = self
            .patch_weight
            .reshape((self.cfg.hidden_size, c * p * p))?;
        ops::linear(&patches, &weight, Some(&self.patch_bias))
    }

    /// The token stream entering the first block: CLS and patch embeddings plus positions.
    fn embed(&self, pixels: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let patches = self.embed_patches(pixels)?;
        let b = patches.dim(0)?;
        let cls = self.cls_token.broadcast_as((b, 1, self.cfg.hidden_size))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embeddings)?;
        ctx.dropout(&x, self.cfg.hidden_dropout_prob)
    }

    /// The token stream after the final norm, `[batch, tokens, hidden]`.
    pub fn forward_tokens(
        &self,
        pixels: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.encoder.forward(self.embed(pixels, ctx)?, hooks, ctx)
    }
}

impl Backbone for Vit {
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
        layer_path(layer)
    }

    fn final_norm_path(&self) -> Option<String> {
        Some("vit.layernorm".into())
    }

    fn module_path(&self, layer: usize, site: LinearSite) -> String {
        format!("{}.{}", layer_path(layer), encoder::site_suffix(site))
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        f("vit.embeddings.cls_token", &mut self.cls_token)?;
        f(
            "vit.embeddings.position_embeddings",
            &mut self.position_embeddings,
        )?;
        f(
            "vit.embeddings.patch_embeddings.projection.weight",
            &mut self.patch_weight,
        )?;
        f(
            "vit.embeddings.patch_embeddings.projection.bias",
            &mut self.patch_bias,
        )?;
        self.encoder.visit_params("vit.", f)
    }

    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.forward_tokens(input, hooks, ctx)?.i((.., 0, ..))
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
        self.encoder
            .forward_from(stream.clone(), blocks, hooks, ctx)?
            .i((.., 0, ..))
    }

    /// The patch tokens' states (CLS and any prompts removed).
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
