use candle_core::{Result, Tensor};
use peftbench_backbones::Linear;
use peftbench_core::{ops, ForwardCtx, SeededInit};

/// The low-rank pair of one adapted projection.
pub struct LoraLayer {
    /// `[r, in]`, Kaiming-uniform (HF PEFT: `kaiming_uniform_(a=sqrt(5))`).
    pub a: candle_core::Var,
    /// `[out, r]`, zero.
    pub b: candle_core::Var,
    pub scaling: f64,
    pub dropout: f64,
}

impl LoraLayer {
    pub fn new(
        in_features: usize,
        out_features: usize,
        r: usize,
        scaling: f64,
        dropout: f64,
        init: &SeededInit,
    ) -> Result<Self> {
        Ok(Self {
            a: init
                .fork("lora_A")
                .kaiming_uniform((r, in_features), in_features)?,
            b: init.zeros((out_features, r))?,
            scaling,
            dropout,
        })
    }

    /// `base(x) + scaling * B A dropout(x)`.
    pub fn forward(&self, x: &Tensor, base: &Linear, ctx: &ForwardCtx) -> Result<Tensor> {
        if self.dropout == 0.0 || !ctx.is_train() {
            // Without dropout both branches read the same input: one fused node.
            return ops::lora_linear(
                x,
                &base.weight,
                base.bias.as_ref(),
                self.a.as_tensor(),
                self.b.as_tensor(),
                self.scaling,
            );
        }
        let y = base.forward(x)?;
        let h = ctx.dropout(x, self.dropout)?;
        let delta = ops::linear(
            &ops::linear(&h, self.a.as_tensor(), None)?,
            self.b.as_tensor(),
            None,
        )?;
        y + (delta * self.scaling)?
    }

    /// `W + scaling * B A`: the weight that makes the frozen projection alone equal this layer.
    pub fn merged_weight(&self, base: &Linear) -> Result<Tensor> {
        let delta = self.b.as_tensor().matmul(self.a.as_tensor())?;
        base.weight.add(&(delta * self.scaling)?)
    }
}
