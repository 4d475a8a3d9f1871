use candle_core::{Result, Tensor, Var, D};
use peftbench_backbones::Linear;
use peftbench_core::{ForwardCtx, SeededInit};

use crate::lora::LoraLayer;

/// One DoRA-adapted projection: a LoRA pair for the direction and a magnitude per output row.
pub struct DoraLayer {
    pub lora: LoraLayer,
    /// `[out]`, initialised to the row norms of the frozen weight.
    pub magnitude: Var,
}

impl DoraLayer {
    pub fn new(
        base: &Linear,
        r: usize,
        scaling: f64,
        dropout: f64,
        init: &SeededInit,
    ) -> Result<Self> {
        let (out, inp) = base.weight.dims2()?;
        let lora = LoraLayer::new(inp, out, r, scaling, dropout, init)?;
        let magnitude = Var::from_tensor(&row_norms(&base.weight)?.to_dtype(init.dtype())?)?;
        Ok(Self { lora, magnitude })
    }

    /// `W + scaling · B A`.
    fn directional(&self, base: &Linear) -> Result<Tensor> {
        self.lora.merged_weight(base)
    }

    /// `m / ||W + s·BA||_row`, the norm detached as in the paper (§4.3) and HF PEFT: it is
    /// treated as a constant in backpropagation, which saves memory and changes little.
    fn magnitude_scale(&self, base: &Linear) -> Result<Tensor> {
        let norm = row_norms(&self.directional(base)?)?.detach();
        self.magnitude.as_tensor().div(&norm)
    }

    /// `(m / ||W'||) ⊙ (W x + s·B A dropout(x)) + b`: the bias is not rescaled (PEFT's
    /// `DoraLinearLayer`).
    pub fn forward(&self, x: &Tensor, base: &Linear, ctx: &ForwardCtx) -> Result<Tensor> {
        let unbiased = Linear {
            weight: base.weight.clone(),
            bias: None,
        };
        let y = self.lora.forward(x, &unbiased, ctx)?;
        let y = y.broadcast_mul(&self.magnitude_scale(base)?)?;
        match &base.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// The weight that makes the frozen projection alone equal this layer (bias unchanged).
    pub fn merged_weight(&self, base: &Linear) -> Result<Tensor> {
        self.directional(base)?
            .broadcast_mul(&self.magnitude_scale(base)?.unsqueeze(1)?)
    }
}

/// L2 norm of every row of a `[out, in]` weight.
fn row_norms(w: &Tensor) -> Result<Tensor> {
    w.sqr()?.sum(D::Minus1)?.sqrt()
}
