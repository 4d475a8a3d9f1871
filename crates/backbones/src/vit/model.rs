use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use peftbench_core::{ops, ForwardCtx, SeededInit};

use super::VitConfig;
use crate::sites::{Hooks, Linear, LinearSite, NormSite, Sublayer};
use crate::{Backbone, BackboneInfo};

/// A layer norm whose affine parameters may be frozen or trained (BitFit trains the bias).
#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// One pre-norm transformer block, named as in HF's `ViTLayer`.
#[derive(Debug, Clone)]
struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    fc1: Linear,
    fc2: Linear,
    layernorm_before: Norm,
    layernorm_after: Norm,
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
        }
    }
}

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
    blocks: Vec<Block>,
    final_norm: Norm,
}

/// Module path of block `layer` in HF checkpoints (ViTForImageClassification layout).
fn layer_path(layer: usize) -> String {
    format!("vit.encoder.layer.{layer}")
}

fn site_suffix(site: LinearSite) -> &'static str {
    match site {
        LinearSite::Query => "attention.attention.query",
        LinearSite::Key => "attention.attention.key",
        LinearSite::Value => "attention.attention.value",
        LinearSite::AttentionOutput => "attention.output.dense",
        LinearSite::Fc1 => "intermediate.dense",
        LinearSite::Fc2 => "output.dense",
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
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let key = format!("{prefix}{name}");
            let t = tensors.get(&key).ok_or_else(|| {
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
        let (d, f, c, p) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_channels,
            cfg.patch_size,
        );
        let linear = |name: String, out: usize, inp: usize, bias: bool| -> Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{name}.weight"), &[out, inp])?,
                bias: if bias {
                    Some(get(&format!("{name}.bias"), &[out])?)
                } else {
                    None
                },
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
                query: linear(site(LinearSite::Query), d, d, cfg.qkv_bias)?,
                key: linear(site(LinearSite::Key), d, d, cfg.qkv_bias)?,
                value: linear(site(LinearSite::Value), d, d, cfg.qkv_bias)?,
                attention_output: linear(site(LinearSite::AttentionOutput), d, d, true)?,
                fc1: linear(site(LinearSite::Fc1), f, d, true)?,
                fc2: linear(site(LinearSite::Fc2), d, f, true)?,
                layernorm_before: norm(format!("{base}.layernorm_before"))?,
                layernorm_after: norm(format!("{base}.layernorm_after"))?,
            });
        }
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
            blocks,
            final_norm: norm("layernorm".into())?,
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
        for l in 0..cfg.num_hidden_layers {
            let base = format!("encoder.layer.{l}");
            for site in LinearSite::ALL {
                let (i, o) = site_dims(cfg, site);
                out.push((format!("{base}.{}.weight", site_suffix(site)), vec![o, i]));
                out.push((format!("{base}.{}.bias", site_suffix(site)), vec![o]));
            }
            for n in ["layernorm_before", "layernorm_after"] {
                out.push((format!("{base}.{n}.weight"), vec![d]));
                out.push((format!("{base}.{n}.bias"), vec![d]));
            }
        }
        out.push(("layernorm.weight".into(), vec![d]));
        out.push(("layernorm.bias".into(), vec![d]));
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

    fn attention(
        &self,
        layer: usize,
        x: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let block = &self.blocks[layer];
        let b = x.dim(0)?;
        let q = hooks.linear(layer, LinearSite::Query, x, &block.query, ctx)?;
        let mut k = hooks.linear(layer, LinearSite::Key, x, &block.key, ctx)?;
        let mut v = hooks.linear(layer, LinearSite::Value, x, &block.value, ctx)?;
        if let Some((pk, pv)) = hooks.prefix(layer, b)? {
            k = Tensor::cat(&[&pk, &k], 1)?;
            v = Tensor::cat(&[&pv, &v], 1)?;
        }
        let context = ops::attention(
            &q,
            &k,
            &v,
            self.cfg.num_attention_heads,
            None,
            self.cfg.attention_probs_dropout_prob,
            ctx,
        )?;
        hooks.linear(
            layer,
            LinearSite::AttentionOutput,
            &context,
            &block.attention_output,
            ctx,
        )
    }

    fn mlp(&self, layer: usize, x: &Tensor, hooks: &dyn Hooks, ctx: &ForwardCtx) -> Result<Tensor> {
        let block = &self.blocks[layer];
        let h = hooks.linear(layer, LinearSite::Fc1, x, &block.fc1, ctx)?;
        let h = self.cfg.hidden_act.apply(&h)?;
        let h = hooks.linear(layer, LinearSite::Fc2, &h, &block.fc2, ctx)?;
        ctx.dropout(&h, self.cfg.hidden_dropout_prob)
    }

    /// The token stream after the final norm, `[batch, tokens, hidden]`.
    pub fn forward_tokens(
        &self,
        pixels: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let patches = self.embed_patches(pixels)?;
        let b = patches.dim(0)?;
        let cls = self.cls_token.broadcast_as((b, 1, self.cfg.hidden_size))?;
        let mut x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embeddings)?;
        x = ctx.dropout(&x, self.cfg.hidden_dropout_prob)?;
        for (l, block) in self.blocks.iter().enumerate() {
            x = hooks.tokens(l, x, ctx)?;
            let h = block.layernorm_before.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeAttention, h)?;
            let a = self.attention(l, &h, hooks, ctx)?;
            let a = hooks.sublayer(l, Sublayer::Attention, &x, a, ctx)?;
            x = (&x + ctx.drop_path(&a)?)?;
            let h = block.layernorm_after.forward(&x)?;
            let h = hooks.norm(Some(l), NormSite::BeforeMlp, h)?;
            let m = self.mlp(l, &h, hooks, ctx)?;
            let m = hooks.sublayer(l, Sublayer::Mlp, &x, m, ctx)?;
            x = (&x + ctx.drop_path(&m)?)?;
        }
        let x = self.final_norm.forward(&x)?;
        hooks.norm(None, NormSite::Final, x)
    }
}

fn site_dims(cfg: &VitConfig, site: LinearSite) -> (usize, usize) {
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    match site {
        LinearSite::Fc1 => (d, f),
        LinearSite::Fc2 => (f, d),
        _ => (d, d),
    }
}

impl Backbone for Vit {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn linear_dims(&self, site: LinearSite) -> (usize, usize) {
        site_dims(&self.cfg, site)
    }

    fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        self.blocks[layer].linear(site)
    }

    fn module_path(&self, layer: usize, site: LinearSite) -> String {
        format!("{}.{}", layer_path(layer), site_suffix(site))
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
        for (l, block) in self.blocks.iter_mut().enumerate() {
            let base = layer_path(l);
            let Block {
                query,
                key,
                value,
                attention_output,
                fc1,
                fc2,
                layernorm_before,
                layernorm_after,
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
                ("layernorm_before", layernorm_before),
                ("layernorm_after", layernorm_after),
            ] {
                f(&format!("{base}.{name}.weight"), &mut norm.weight)?;
                f(&format!("{base}.{name}.bias"), &mut norm.bias)?;
            }
        }
        f("vit.layernorm.weight", &mut self.final_norm.weight)?;
        f("vit.layernorm.bias", &mut self.final_norm.bias)
    }

    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.forward_tokens(input, hooks, ctx)?.i((.., 0, ..))
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
