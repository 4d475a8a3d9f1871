use candle_core::{Result, Tensor};
use peftbench_backbones::Linear;
use peftbench_core::{ops, ForwardCtx, SeededInit};

use crate::lora::LoraLayer;

/// Both branches of one adapted projection. Each is a LoRA pair (`A` Kaiming-uniform, `B` zero),
/// so the layer equals the frozen one at initialisation.
pub struct HydraLayer {
    /// `in -> out`, reads the layer's input.
    pub parallel: LoraLayer,
    /// `out -> out`, reads the frozen layer's output.
    pub sequential: LoraLayer,
    pub scale: f64,
    pub dropout: f64,
}

impl HydraLayer {
    pub fn new(
        base: &Linear,
        parallel_r: usize,
        sequential_r: usize,
        scale: f64,
        dropout: f64,
        init: &SeededInit,
    ) -> Result<Self> {
        let (out, inp) = base.weight.dims2()?;
        Ok(Self {
            parallel: LoraLayer::new(inp, out, parallel_r, scale, dropout, &init.fork("parallel"))?,
            sequential: LoraLayer::new(
                out,
                out,
                sequential_r,
                scale,
                dropout,
                &init.fork("sequential"),
            )?,
            scale,
            dropout,
        })
    }

    fn branch(lora: &LoraLayer, x: &Tensor) -> Result<Tensor> {
        ops::linear(
            &ops::linear(x, lora.a.as_tensor(), None)?,
            lora.b.as_tensor(),
            None,
        )
    }

    /// `y + s (B_p A_p x + B_s A_s y)` with `y = W x + b`.
    pub fn forward(&self, x: &Tensor, base: &Linear, ctx: &ForwardCtx) -> Result<Tensor> {
        let y = base.forward(x)?;
        let parallel = Self::branch(&self.parallel, &ctx.dropout(x, self.dropout)?)?;
        let sequential = Self::branch(&self.sequential, &ctx.dropout(&y, self.dropout)?)?;
        &y + ((parallel + sequential)? * self.scale)?
    }

    /// `W' = W + s (B_p A_p + B_s A_s W)` and `b' = b + s B_s A_s b`.
    pub fn merged(&self, base: &Linear) -> Result<Linear> {
        let seq = self
            .sequential
            .b
            .as_tensor()
            .matmul(self.sequential.a.as_tensor())?;
        let par = self
            .parallel
            .b
            .as_tensor()
            .matmul(self.parallel.a.as_tensor())?;
        let delta = (par + seq.matmul(&base.weight)?)?;
        let weight = (&base.weight + (delta * self.scale)?)?;
        let bias = match &base.bias {
            Some(b) => {
                let db = seq.matmul(&b.unsqueeze(1)?)?.squeeze(1)?;
                Some((b + (db * self.scale)?)?)
            }
            None => None,
        };
        Ok(Linear { weight, bias })
    }
}
