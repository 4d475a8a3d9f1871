//! The pre-norm transformer encoder shared by ViT and AST (blocks named as HF's `ViTLayer`/`ASTLayer`), with
//! every PEFT site: projections, sublayer outputs, the token stream, attention prefixes and norms. Both
//! backbones build their embeddings and hand the token stream to [`Encoder::forward`], so every method
//! attaches to either through the same [`Hooks`] calls.

use candle_core::{Result, Tensor};
use peftbench_core::kernels;
use peftbench_core::ops::{self, Activation};
use peftbench_core::ForwardCtx;

use crate::sites::{Hooks, Linear, LinearSite, NormSite, Sublayer};

/// Sizes and settings of the block stack (the encoder fields of HF's ViT/AST configs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EncoderDims {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub act: Activation,
    pub layer_norm_eps: f64,
    pub qkv_bias: bool,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
}

impl EncoderDims {
    /// `(in_features, out_features)` of the projection at `site`.
    pub fn site_dims(&self, site: LinearSite) -> (usize, usize) {
        let (d, f) = (self.hidden_size, self.intermediate_size);
        match site {
            LinearSite::Fc1 => (d, f),
            LinearSite::Fc2 => (f, d),
            _ => (d, d),
        }
    }

    /// Names (relative to the model prefix) and shapes of the encoder's tensors, in checkpoint order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.hidden_size;
        let mut out = Vec::new();
        for l in 0..self.num_layers {
            let base = layer_path(l);
            for site in LinearSite::ALL {
                let (i, o) = self.site_dims(site);
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
}

/// Module path of block `layer` relative to the model prefix.
pub(crate) fn layer_path(layer: usize) -> String {
    format!("encoder.layer.{layer}")
}

/// Module path of a projection within a block (HF `ViTLayer` names, shared by AST).
pub(crate) fn site_suffix(site: LinearSite) -> &'static str {
    match site {
        LinearSite::Query => "attention.attention.query",
        LinearSite::Key => "attention.attention.key",
        LinearSite::Value => "attention.attention.value",
        LinearSite::AttentionOutput => "attention.output.dense",
        LinearSite::Fc1 => "intermediate.dense",
        LinearSite::Fc2 => "output.dense",
        cross => crate::sites::no_cross_attention("ViT-style encoder", cross),
    }
}

/// A layer norm whose affine parameters may be frozen or trained (BitFit trains the bias).
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl Norm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// The norm as a fused kernel's parameters.
    pub fn params(&self) -> kernels::NormParams<'_> {
        kernels::NormParams {
            weight: &self.weight,
            bias: &self.bias,
            eps: self.eps,
        }
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
            cross => crate::sites::no_cross_attention("ViT-style encoder", cross),
        }
    }
}

/// The block stack and the final norm.
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    dims: EncoderDims,
    blocks: Vec<Block>,
    final_norm: Norm,
}

impl Encoder {
    /// Builds the encoder from a tensor lookup `get(name relative to the model prefix, shape)` that checks
    /// shapes and names the source in its errors.
    pub fn from_tensors(
        dims: EncoderDims,
        get: &dyn Fn(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Self> {
        let (d, f) = (dims.hidden_size, dims.intermediate_size);
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
                eps: dims.layer_norm_eps,
            })
        };
        let mut blocks = Vec::with_capacity(dims.num_layers);
        for l in 0..dims.num_layers {
            let base = layer_path(l);
            let site = |s: LinearSite| format!("{base}.{}", site_suffix(s));
            blocks.push(Block {
                query: linear(site(LinearSite::Query), d, d, dims.qkv_bias)?,
                key: linear(site(LinearSite::Key), d, d, dims.qkv_bias)?,
                value: linear(site(LinearSite::Value), d, d, dims.qkv_bias)?,
                attention_output: linear(site(LinearSite::AttentionOutput), d, d, true)?,
                fc1: linear(site(LinearSite::Fc1), f, d, true)?,
                fc2: linear(site(LinearSite::Fc2), d, f, true)?,
                layernorm_before: norm(format!("{base}.layernorm_before"))?,
                layernorm_after: norm(format!("{base}.layernorm_after"))?,
            });
        }
        Ok(Self {
            final_norm: norm("layernorm".into())?,
            blocks,
            dims,
        })
    }

    pub fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        self.blocks[layer].linear(site)
    }

    /// Visits the encoder's tensors named `{prefix}encoder.layer.N...` and `{prefix}layernorm.*`.
    pub fn visit_params(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        for (l, block) in self.blocks.iter_mut().enumerate() {
            let base = format!("{prefix}{}", layer_path(l));
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
        f(
            &format!("{prefix}layernorm.weight"),
            &mut self.final_norm.weight,
        )?;
        f(
            &format!("{prefix}layernorm.bias"),
            &mut self.final_norm.bias,
        )
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
        if let Some((pk, pv)) = hooks.prefix(layer, b, ctx)? {
            k = Tensor::cat(&[&pk, &k], 1)?;
            v = Tensor::cat(&[&pv, &v], 1)?;
        }
        let context = ops::attention(
            &q,
            &k,
            &v,
            self.dims.num_heads,
            None,
            self.dims.attention_dropout,
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
        let h = self.dims.act.apply(&h)?;
        let h = hooks.linear(layer, LinearSite::Fc2, &h, &block.fc2, ctx)?;
        ctx.dropout(&h, self.dims.hidden_dropout)
    }

    /// Runs the embedded token stream `[batch, tokens, hidden]` through every block and the final norm.
    pub fn forward(&self, x: Tensor, hooks: &dyn Hooks, ctx: &ForwardCtx) -> Result<Tensor> {
        self.forward_from(x, 0, hooks, ctx)
    }

    /// Runs the stream entering block `first` through the blocks from `first` on and the final
    /// norm: [`Encoder::forward`] resumed after [`Encoder::blocks`] ran the blocks below.
    pub fn forward_from(
        &self,
        x: Tensor,
        first: usize,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let x = self.blocks(x, first..self.blocks.len(), hooks, ctx)?;
        let x = self.final_norm.forward(&x)?;
        hooks.norm(None, NormSite::Final, x, ctx)
    }

    /// Runs the stream entering block `layers.start` through the blocks `layers`.
    pub fn blocks(
        &self,
        mut x: Tensor,
        layers: std::ops::Range<usize>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        for l in layers {
            x = hooks.tokens(l, x, ctx)?;
            x = self.residual(l, Sublayer::Attention, x, hooks, ctx)?;
            x = self.residual(l, Sublayer::Mlp, x, hooks, ctx)?;
        }
        Ok(x)
    }

    /// The stream after block `layer`'s branch `kind`: `x + drop_path(sublayer(branch(x)))`.
    ///
    /// The branch runs as one fused node where the method adapts nothing inside it
    /// ([`Hooks::adapts_inside`]), its weights frozen or trained; the node adds `x` too where,
    /// further, the method leaves the branch's output alone ([`Hooks::adapts_output`]) and nothing
    /// random comes between (drop-path, the MLP's dropout). Where the method's change to the
    /// output is a bottleneck adapter ([`Hooks::output_bottleneck`]), a second fused node applies
    /// it and adds `x`. Otherwise the branch is composed and every hook called. The numbers are
    /// the same on each path.
    fn residual(
        &self,
        layer: usize,
        kind: Sublayer,
        x: Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let dropout = |p: f64| p > 0.0 && ctx.is_train();
        let random_inside = match kind {
            Sublayer::Attention => dropout(self.dims.attention_dropout),
            Sublayer::Mlp => false,
        };
        let random_after =
            ctx.drops_paths() || (kind == Sublayer::Mlp && dropout(self.dims.hidden_dropout));
        let mut fused = None;
        if !random_inside && !hooks.adapts_inside(layer, kind) {
            let bottleneck = if random_after {
                None
            } else {
                hooks.output_bottleneck(layer, kind)
            };
            let residual =
                !random_after && bottleneck.is_none() && !hooks.adapts_output(layer, kind);
            fused = self.fused_branch(layer, kind, &x, hooks, residual)?;
            if let (Some(out), Some(adapter)) = (&fused, bottleneck) {
                if let Some(stream) = ops::fused_bottleneck_residual(&x, out, adapter)? {
                    return Ok(stream);
                }
            }
            if residual {
                if let Some(stream) = fused {
                    return Ok(stream);
                }
            }
        }
        let out = match (fused, kind) {
            (Some(out), Sublayer::Attention) => out,
            (Some(out), Sublayer::Mlp) => ctx.dropout(&out, self.dims.hidden_dropout)?,
            (None, Sublayer::Attention) => {
                let h = self.blocks[layer].layernorm_before.forward(&x)?;
                let h = hooks.norm(Some(layer), NormSite::BeforeAttention, h, ctx)?;
                self.attention(layer, &h, hooks, ctx)?
            }
            (None, Sublayer::Mlp) => {
                let h = self.blocks[layer].layernorm_after.forward(&x)?;
                let h = hooks.norm(Some(layer), NormSite::BeforeMlp, h, ctx)?;
                self.mlp(layer, &h, hooks, ctx)?
            }
        };
        let out = hooks.sublayer(layer, kind, &x, out, ctx)?;
        &x + ctx.drop_path(&out)?
    }

    /// Block `layer`'s branch `kind` on `x` as one fused node (plus `x` when `residual`), with
    /// the method's LoRA updates ([`Hooks::low_rank`]), or `None` where the kernels cannot run it
    /// (device, dtype, activation, a LoRA on trained weights).
    fn fused_branch(
        &self,
        layer: usize,
        kind: Sublayer,
        x: &Tensor,
        hooks: &dyn Hooks,
        residual: bool,
    ) -> Result<Option<Tensor>> {
        let block = &self.blocks[layer];
        let projection = |site| block.linear(site).projection(hooks.low_rank(layer, site));
        match kind {
            Sublayer::Attention => {
                let projections = [
                    LinearSite::Query,
                    LinearSite::Key,
                    LinearSite::Value,
                    LinearSite::AttentionOutput,
                ]
                .map(projection);
                let norm = block.layernorm_before.params();
                let heads = self.dims.num_heads;
                ops::fused_attention_sublayer(x, norm, projections, heads, residual)
            }
            Sublayer::Mlp => {
                let norm = block.layernorm_after.params();
                let (fc1, fc2) = (projection(LinearSite::Fc1), projection(LinearSite::Fc2));
                ops::fused_mlp_sublayer(x, norm, fc1, fc2, self.dims.act, residual)
            }
        }
    }
}
