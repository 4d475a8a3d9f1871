//! The shared hypernetwork: (task, layer) -> projected embedding -> adapter weights.

use candle_core::{Result, Tensor, Var, D};
use peftbench_backbones::Sublayer;
use peftbench_core::{ops, NamedVars, SeededInit};

use super::HyperformerConfig;

/// Layer norm of the projected embedding (`unique_hyper_net_layer_norm`), eps as the reference's.
pub const EMBEDDING_NORM_EPS: f64 = 1e-6;

/// `nn.Linear` initialised as the reference's `linear_layer`: weight N(0, 0.01^2), bias 0.
pub struct Dense {
    pub weight: Var,
    pub bias: Var,
}

impl Dense {
    fn new(out: usize, inp: usize, init: &SeededInit) -> Result<Self> {
        Ok(Self {
            weight: init.fork("weight").normal((out, inp), 1e-2)?,
            bias: init.zeros(out)?,
        })
    }

    fn push(&self, prefix: &str, params: &mut NamedVars) {
        params.push(format!("{prefix}.weight"), self.weight.clone());
        params.push(format!("{prefix}.bias"), self.bias.clone());
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, self.weight.as_tensor(), Some(self.bias.as_tensor()))
    }
}

/// A generated layer norm's weight and bias generators (`LayerNormHyperNet`).
pub struct NormGenerators {
    pub weight: Dense,
    pub bias: Dense,
}

/// The generators of one adapter position (self-attention or feed-forward), shared by all layers
/// (VL-Adapter's `AdapterLayersHyperNetController`: one `AdapterLayersHyperNet` per matrix and
/// position, each a weight and a bias generator).
pub struct PositionGenerators {
    pub down_weight: Dense,
    pub down_bias: Dense,
    pub up_weight: Dense,
    pub up_bias: Dense,
    pub pre_norm: Option<NormGenerators>,
    pub post_norm: Option<NormGenerators>,
}

/// Adapter parameters generated for `k` (task, layer) pairs of one position.
pub struct GeneratedAdapter {
    /// `[k, bottleneck, hidden]` (PyTorch's `[out, in]` per pair).
    pub down_weight: Tensor,
    /// `[k, bottleneck]`.
    pub down_bias: Tensor,
    /// `[k, hidden, bottleneck]`.
    pub up_weight: Tensor,
    /// `[k, hidden]`.
    pub up_bias: Tensor,
    /// Weight and bias `[k, hidden]` of the layer norm on the adapter's input.
    pub pre_norm: Option<(Tensor, Tensor)>,
    /// Weight and bias `[k, hidden]` of the layer norm on the adapter's output.
    pub post_norm: Option<(Tensor, Tensor)>,
}

/// Everything Hyperformer trains.
pub struct HyperNet {
    pub hidden: usize,
    pub bottleneck: usize,
    /// `[n_tasks, task_embedding_dim]`, N(0, 1) (`torch.randn`).
    pub task_embeddings: Var,
    /// `[num_layers, task_embedding_dim]`, N(0, 1) (`nn.Embedding`'s default).
    pub layer_embeddings: Var,
    /// The task projector `Linear(2E, H) -> ReLU -> Linear(H, P)` (`TaskHyperNet`).
    pub projector_in: Dense,
    pub projector_out: Dense,
    /// Affine of the layer norm on the projected embedding (ones and zeros, PyTorch's default).
    pub embedding_norm: Option<(Var, Var)>,
    pub attention: PositionGenerators,
    pub mlp: PositionGenerators,
}

impl HyperNet {
    pub fn new(
        config: &HyperformerConfig,
        hidden: usize,
        num_layers: usize,
        init: &SeededInit,
        params: &mut NamedVars,
    ) -> Result<Self> {
        let (e, h, p) = (
            config.task_embedding_dim,
            config.task_hidden_dim,
            config.projected_task_embedding_dim,
        );
        let d = config.bottleneck(hidden);
        let stream = |name: &str| init.fork(&format!("hyperformer.{name}"));
        let task_embeddings = stream("task_embeddings").normal((config.n_tasks, e), 1.0)?;
        let layer_embeddings = stream("layer_id_embeddings").normal((num_layers, e), 1.0)?;
        params.push("hyperformer.task_embeddings", task_embeddings.clone());
        params.push("hyperformer.layer_id_embeddings", layer_embeddings.clone());
        let projector_in = Dense::new(h, 2 * e, &stream("task_hypernet.0"))?;
        let projector_out = Dense::new(p, h, &stream("task_hypernet.2"))?;
        projector_in.push("hyperformer.task_hypernet.0", params);
        projector_out.push("hyperformer.task_hypernet.2", params);
        let embedding_norm = if config.embedding_layer_norm {
            let norm = (init.constant(p, 1.0)?, init.zeros(p)?);
            params.push("hyperformer.layer_norm.weight", norm.0.clone());
            params.push("hyperformer.layer_norm.bias", norm.1.clone());
            Some(norm)
        } else {
            None
        };
        let position = |name: &str, params: &mut NamedVars| -> Result<PositionGenerators> {
            let dense = |part: &str, out: usize, params: &mut NamedVars| -> Result<Dense> {
                let path = format!("{name}.{part}");
                let dense = Dense::new(out, p, &stream(&path))?;
                dense.push(&format!("hyperformer.{path}"), params);
                Ok(dense)
            };
            let norm = |which: &str, on: bool, params: &mut NamedVars| -> Result<_> {
                on.then(|| {
                    Ok(NormGenerators {
                        weight: dense(&format!("{which}.weight_generator"), hidden, params)?,
                        bias: dense(&format!("{which}.bias_generator"), hidden, params)?,
                    })
                })
                .transpose()
            };
            Ok(PositionGenerators {
                down_weight: dense("down.weight_generator", d * hidden, params)?,
                down_bias: dense("down.bias_generator", d, params)?,
                up_weight: dense("up.weight_generator", hidden * d, params)?,
                up_bias: dense("up.bias_generator", hidden, params)?,
                pre_norm: norm("pre_layernorm", config.layer_norm_before, params)?,
                post_norm: norm("post_layernorm", config.layer_norm_after, params)?,
            })
        };
        let attention = position("self_attention", params)?;
        let mlp = position("feed_forward", params)?;
        Ok(Self {
            hidden,
            bottleneck: d,
            task_embeddings,
            layer_embeddings,
            projector_in,
            projector_out,
            embedding_norm,
            attention,
            mlp,
        })
    }

    /// The projected embeddings `[k, P]` of tasks `tasks` (u32 `[k]`) at block `layer`:
    /// `LN(W2 relu(W1 [task; layer] + b1) + b2)` (VL-Adapter's `get_embedding`).
    pub fn embedding(&self, tasks: &Tensor, layer: usize) -> Result<Tensor> {
        let k = tasks.dim(0)?;
        let task = self.task_embeddings.as_tensor().index_select(tasks, 0)?;
        let e = task.dim(1)?;
        let layer = self
            .layer_embeddings
            .as_tensor()
            .narrow(0, layer, 1)?
            .broadcast_as((k, e))?;
        let joint = Tensor::cat(&[&task, &layer], 1)?;
        let z = self
            .projector_out
            .forward(&self.projector_in.forward(&joint)?.relu()?)?;
        match &self.embedding_norm {
            Some((w, b)) => ops::layer_norm(&z, w.as_tensor(), b.as_tensor(), EMBEDDING_NORM_EPS),
            None => Ok(z),
        }
    }

    /// The adapter of position `kind` in block `layer` for tasks `tasks` (u32 `[k]`).
    pub fn generate(
        &self,
        tasks: &Tensor,
        layer: usize,
        kind: Sublayer,
    ) -> Result<GeneratedAdapter> {
        let z = self.embedding(tasks, layer)?;
        let k = z.dim(0)?;
        let (d, h) = (self.bottleneck, self.hidden);
        let g = match kind {
            Sublayer::Attention => &self.attention,
            Sublayer::Mlp => &self.mlp,
        };
        let norm = |n: &Option<NormGenerators>| -> Result<Option<(Tensor, Tensor)>> {
            n.as_ref()
                .map(|n| Ok((n.weight.forward(&z)?, n.bias.forward(&z)?)))
                .transpose()
        };
        Ok(GeneratedAdapter {
            down_weight: g.down_weight.forward(&z)?.reshape((k, d, h))?,
            down_bias: g.down_bias.forward(&z)?,
            up_weight: g.up_weight.forward(&z)?.reshape((k, h, d))?,
            up_bias: g.up_bias.forward(&z)?,
            pre_norm: norm(&g.pre_norm)?,
            post_norm: norm(&g.post_norm)?,
        })
    }
}

/// Layer norm with no affine, then the generated per-row affine `weight`/`bias` `[B, 1, hidden]`
/// (F.layer_norm's default eps, 1e-5, as the reference's `apply_layer_norm`).
pub fn generated_layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + ADAPTER_NORM_EPS)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

pub const ADAPTER_NORM_EPS: f64 = 1e-5;
