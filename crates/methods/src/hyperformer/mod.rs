//! Hyperformer: bottleneck adapters whose weights a hypernetwork shared across tasks and layers
//! generates from a task embedding and a layer-id embedding (Karimi Mahabadi, Ruder, Dehghani,
//! Henderson, 2021, "Parameter-efficient Multi-task Fine-tuning for Transformers via Shared
//! Hypernetworks", ACL, arXiv:2106.04489; the "Hyperformer++" variant with one hypernetwork for all
//! layers, as VL-Adapter runs it: Sung et al., 2022, CVPR, arXiv:2112.06825, `--unique_hyper_net`).
//!
//! For task `t` and block `l`: `z = LN(W2 relu(W1 [e_t; e_l] + b1) + b2)`, the projected embedding
//! (`P` wide); then, separately for the adapter after the attention and the one after the MLP,
//! linear generators give `down = reshape(Gd z + gd)` (`[r, hidden]`), its bias, `up` (`[hidden,
//! r]`) and its bias, and, if enabled, the weight and bias of a layer norm before or after the
//! adapter. Each adapter acts on its sublayer's output before the residual add, with its own
//! residual: `y + [LN_post](up(act(down([LN_pre](y)))))` (VL-Adapter's
//! `MetaLayersAdapterController`, placed in `T5LayerSelfAttention` and `T5LayerFF`). VL-Adapter's
//! `--unique_hyper_net` controller (`AdapterLayersHyperNetController`) conditions on task and
//! layer only: the adapter position has no embedding there (that is the `efficient_unique_hyper_net`
//! variant, not implemented) but its own generators.
//!
//! Initialisation is the reference's: task and layer embeddings N(0, 1), every linear layer of the
//! projector and generators N(0, 0.01^2) with zero bias, the embedding norm's affine 1 and 0. The
//! generated weights are then about `0.01 sqrt(P)` in size and their biases exactly zero, so the
//! model starts near (not exactly at) the pretrained one; a generated layer norm (off by default)
//! starts with a weight near zero.
//!
//! Tasks: `ForwardCtx::task_ids` (none = task 0). A batch of one task runs one generated adapter
//! for all rows; a mixed batch generates every task's adapter and applies each row's own.
//! Saved in peftbench's own format (the hypernetwork's parameters by name).

mod config;
mod hypernet;

pub use config::HyperformerConfig;
pub use hypernet::{GeneratedAdapter, HyperNet, ADAPTER_NORM_EPS, EMBEDDING_NORM_EPS};

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result, Tensor};
use peftbench_backbones::{Backbone, BackboneInfo, Hooks, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::per_task::route::{Route, RouteCache};
use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

pub struct Hyperformer;

/// The shared hypernetwork attached to a backbone.
pub struct HyperformerAdaptation {
    config: HyperformerConfig,
    net: HyperNet,
    params: NamedVars,
    device: Device,
    routes: RouteCache,
}

impl HyperformerAdaptation {
    pub fn new(
        config: HyperformerConfig,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> Result<Self> {
        let info = backbone.info();
        let mut params = NamedVars::default();
        let net = HyperNet::new(
            &config,
            info.hidden_size,
            info.num_layers,
            init,
            &mut params,
        )?;
        Ok(Self {
            config,
            net,
            params,
            device: init.device().clone(),
            routes: RouteCache::default(),
        })
    }

    pub fn net(&self) -> &HyperNet {
        &self.net
    }

    /// The adapter generated for `task` in block `layer` at position `kind`.
    pub fn generated(&self, task: usize, layer: usize, kind: Sublayer) -> Result<GeneratedAdapter> {
        let tasks = Tensor::new(&[task as u32], &self.device)?;
        self.net.generate(&tasks, layer, kind)
    }

    /// `y + [LN_post](up(act(down([LN_pre](y)))))` with one task's adapter (`[1, ...]` tensors).
    fn apply_one(&self, y: &Tensor, a: &GeneratedAdapter) -> Result<Tensor> {
        let one = |t: &Tensor| t.squeeze(0);
        let mut z = y.clone();
        if let Some((w, b)) = &a.pre_norm {
            z = peftbench_core::ops::layer_norm(&z, &one(w)?, &one(b)?, ADAPTER_NORM_EPS)?;
        }
        let h = peftbench_core::ops::linear(&z, &one(&a.down_weight)?, Some(&one(&a.down_bias)?))?;
        let h = self.config.activation.apply(&h)?;
        let mut out =
            peftbench_core::ops::linear(&h, &one(&a.up_weight)?, Some(&one(&a.up_bias)?))?;
        if let Some((w, b)) = &a.post_norm {
            out = peftbench_core::ops::layer_norm(&out, &one(w)?, &one(b)?, ADAPTER_NORM_EPS)?;
        }
        y + out
    }

    /// The same with each row's own adapter (`[B, ...]` tensors, one per row of `y` `[B, T, D]`).
    fn apply_rows(&self, y: &Tensor, a: &GeneratedAdapter) -> Result<Tensor> {
        let row = |t: &Tensor| t.unsqueeze(1);
        let mut z = y.clone();
        if let Some((w, b)) = &a.pre_norm {
            z = hypernet::generated_layer_norm(&z, &row(w)?, &row(b)?)?;
        }
        let h = z
            .matmul(&a.down_weight.transpose(1, 2)?)?
            .broadcast_add(&row(&a.down_bias)?)?;
        let h = self.config.activation.apply(&h)?;
        let mut out = h
            .matmul(&a.up_weight.transpose(1, 2)?)?
            .broadcast_add(&row(&a.up_bias)?)?;
        if let Some((w, b)) = &a.post_norm {
            out = hypernet::generated_layer_norm(&out, &row(w)?, &row(b)?)?;
        }
        y + out
    }
}

/// Every field of a generated adapter's rows gathered by `rows` (u32 `[B]`).
fn gather(a: GeneratedAdapter, rows: &Tensor) -> Result<GeneratedAdapter> {
    let g = |t: Tensor| t.index_select(rows, 0);
    let pair = |p: Option<(Tensor, Tensor)>| -> Result<_> {
        p.map(|(w, b)| Ok((g(w)?, g(b)?))).transpose()
    };
    Ok(GeneratedAdapter {
        down_weight: g(a.down_weight)?,
        down_bias: g(a.down_bias)?,
        up_weight: g(a.up_weight)?,
        up_bias: g(a.up_bias)?,
        pre_norm: pair(a.pre_norm)?,
        post_norm: pair(a.post_norm)?,
    })
}

impl Hooks for HyperformerAdaptation {
    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        _input: &Tensor,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let err =
            |e: candle_core::Error| candle_core::Error::msg(format!("method `hyperformer`: {e}"));
        let route = self
            .routes
            .route(ctx, self.config.n_tasks, &self.device)
            .map_err(err)?;
        route.check_rows(output.dim(0)?).map_err(err)?;
        match &*route {
            Route::Single(task) => {
                let a = self.generated(*task, layer, kind)?;
                self.apply_one(&output, &a)
            }
            Route::Split { .. } => {
                // Every task's adapter once, then each row's own: generating per row would
                // multiply the generators' cost by the batch size.
                let tasks = Tensor::arange(0u32, self.config.n_tasks as u32, &self.device)?;
                let all = self.net.generate(&tasks, layer, kind)?;
                let ids = ctx
                    .task_ids()
                    .expect("a split route has task ids")
                    .to_dtype(DType::U32)?
                    .flatten_all()?
                    .to_device(&self.device)?;
                self.apply_rows(&output, &gather(all, &ids)?)
            }
        }
    }
}

impl Adaptation for HyperformerAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(
            dir,
            "hyperformer",
            &self.config,
            base_model,
            &self.params,
            head,
        )
    }
}

const PARAMS: &[ParamDoc] = &[
    ParamDoc { name: "n_tasks", default: "1", doc: "number of tasks, one learned embedding each; examples carry task ids 0 to n_tasks-1" },
    ParamDoc { name: "reduction_factor", default: "8", doc: "bottleneck = hidden size / reduction_factor (VL-Adapter's script; Hyperformer's default is 16)" },
    ParamDoc { name: "task_embedding_dim", default: "512", doc: "width of the task and layer-id embeddings" },
    ParamDoc { name: "task_hidden_dim", default: "128", doc: "hidden width of the task projector MLP" },
    ParamDoc { name: "projected_task_embedding_dim", default: "8", doc: "width of the projected embedding the generators read (VL-Adapter's script; Hyperformer's default is 64)" },
    ParamDoc { name: "activation", default: "gelu_tanh", doc: "the adapters' non-linearity: gelu_tanh (gelu_new), gelu, relu or silu (swish, Hyperformer's default)" },
    ParamDoc { name: "embedding_layer_norm", default: "true", doc: "layer norm on the projected embedding" },
    ParamDoc { name: "layer_norm_before", default: "false", doc: "a generated layer norm on each adapter's input" },
    ParamDoc { name: "layer_norm_after", default: "false", doc: "a generated layer norm on each adapter's output (Hyperformer's default: true)" },
];

impl Method for Hyperformer {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "hyperformer",
            summary: "Adapters after attention and MLP whose weights one shared hypernetwork generates from task and layer embeddings",
            paper: "Karimi Mahabadi et al., Hyperformer, ACL 2021 (arXiv:2106.04489); VL-Adapter's unique hypernetwork, CVPR 2022 (arXiv:2112.06825)",
            params: PARAMS,
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<HyperformerConfig>("hyperformer", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> std::result::Result<(), String> {
        let config = parse_config::<HyperformerConfig>("hyperformer", params)?;
        if config.bottleneck(info.hidden_size) == 0 {
            return Err(format!(
                "method `hyperformer`: field `reduction_factor` is {} but the hidden size is {}; allowed range: 1 to {}",
                config.reduction_factor, info.hidden_size, info.hidden_size
            ));
        }
        Ok(())
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: HyperformerConfig =
            parse_config("hyperformer", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        self.check_backbone(params, backbone.info())
            .map_err(anyhow::Error::msg)?;
        Ok(Box::new(HyperformerAdaptation::new(
            config, backbone, init,
        )?))
    }
}

#[cfg(test)]
mod tests;
