use peftbench_core::ops::Activation;
use serde::{Deserialize, Serialize};

/// Hyperformer hyper-parameters. Defaults: VL-Adapter's Hyperformer (`MetaAdapterConfig` with
/// `--unique_hyper_net --projected_task_embedding_dim 8 --reduction_factor 8`, its
/// `scripts/image/hyperformer.sh`): 512-wide task and layer embeddings, a 128-wide task projector,
/// GELU (tanh, `gelu_new`), no layer norms inside the adapters. The Hyperformer repository's own
/// defaults differ: reduction factor 16, projected width 64, swish, a generated layer norm after
/// each adapter (`reduction_factor: 16, projected_task_embedding_dim: 64, activation: silu,
/// layer_norm_after: true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HyperformerConfig {
    /// Number of tasks (one learned embedding each); single-task data is task 0.
    pub n_tasks: usize,
    /// Bottleneck width = hidden size / reduction factor (integer division, as the reference).
    pub reduction_factor: usize,
    /// Width of the task and layer-id embeddings.
    pub task_embedding_dim: usize,
    /// Hidden width of the task projector MLP.
    pub task_hidden_dim: usize,
    /// Width of the projected (task, layer) embedding the generators read.
    pub projected_task_embedding_dim: usize,
    /// The adapters' non-linearity.
    pub activation: Activation,
    /// Layer norm (eps 1e-6, learned affine) on the projected embedding
    /// (`unique_hyper_net_layer_norm`).
    pub embedding_layer_norm: bool,
    /// A layer norm with generated weight and bias on each adapter's input.
    pub layer_norm_before: bool,
    /// A layer norm with generated weight and bias on each adapter's output (before its residual).
    pub layer_norm_after: bool,
}

impl Default for HyperformerConfig {
    fn default() -> Self {
        Self {
            n_tasks: 1,
            reduction_factor: 8,
            task_embedding_dim: 512,
            task_hidden_dim: 128,
            projected_task_embedding_dim: 8,
            activation: Activation::GeluTanh,
            embedding_layer_norm: true,
            layer_norm_before: false,
            layer_norm_after: false,
        }
    }
}

impl HyperformerConfig {
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("n_tasks", self.n_tasks),
            ("reduction_factor", self.reduction_factor),
            ("task_embedding_dim", self.task_embedding_dim),
            ("task_hidden_dim", self.task_hidden_dim),
            (
                "projected_task_embedding_dim",
                self.projected_task_embedding_dim,
            ),
        ] {
            if value == 0 {
                return Err(format!("method `hyperformer`: {field} must be at least 1"));
            }
        }
        Ok(())
    }

    /// The bottleneck width on a backbone of width `hidden`.
    pub fn bottleneck(&self, hidden: usize) -> usize {
        hidden / self.reduction_factor
    }
}
