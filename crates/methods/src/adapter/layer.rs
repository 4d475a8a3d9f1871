use candle_core::{Result, Tensor, Var};
use peftbench_backbones::Bottleneck as FusedBottleneck;
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};

use super::AdapterActivation;

/// `up(act(down(x)))` with biases: `down` Kaiming-uniform, `up` zero (so the branch starts at 0).
pub struct Bottleneck {
    pub down_weight: Var,
    pub down_bias: Var,
    pub up_weight: Var,
    pub up_bias: Var,
    pub activation: AdapterActivation,
}

impl Bottleneck {
    pub fn new(
        hidden: usize,
        bottleneck: usize,
        activation: AdapterActivation,
        init: &SeededInit,
    ) -> Result<Self> {
        Ok(Self {
            down_weight: init
                .fork("down")
                .kaiming_uniform((bottleneck, hidden), hidden)?,
            down_bias: init.zeros(bottleneck)?,
            up_weight: init.zeros((hidden, bottleneck))?,
            up_bias: init.zeros(hidden)?,
            activation,
        })
    }

    pub fn push_params(&self, prefix: &str, params: &mut NamedVars) {
        params.push(format!("{prefix}.down.weight"), self.down_weight.clone());
        params.push(format!("{prefix}.down.bias"), self.down_bias.clone());
        params.push(format!("{prefix}.up.weight"), self.up_weight.clone());
        params.push(format!("{prefix}.up.bias"), self.up_bias.clone());
    }

    /// This adapter as the fused kernel runs it (`peftbench_core::kernels::bottleneck_residual`),
    /// where [`Bottleneck::forward`] is what that kernel computes: with the ReLU.
    pub fn fused(&self) -> Option<FusedBottleneck<'_>> {
        match self.activation {
            AdapterActivation::Relu => Some(FusedBottleneck {
                down_weight: self.down_weight.as_tensor(),
                down_bias: self.down_bias.as_tensor(),
                up_weight: self.up_weight.as_tensor(),
                up_bias: self.up_bias.as_tensor(),
            }),
            AdapterActivation::Gelu | AdapterActivation::Silu => None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with_dropout(x, 0.0, &ForwardCtx::eval())
    }

    /// The branch with dropout `p` on the bottleneck activations (training only).
    pub fn forward_with_dropout(&self, x: &Tensor, p: f64, ctx: &ForwardCtx) -> Result<Tensor> {
        let h = ops::linear(
            x,
            self.down_weight.as_tensor(),
            Some(self.down_bias.as_tensor()),
        )?;
        let h = match self.activation {
            AdapterActivation::Relu => h.relu()?,
            AdapterActivation::Gelu => h.gelu_erf()?,
            AdapterActivation::Silu => h.silu()?,
        };
        let h = ctx.dropout(&h, p)?;
        ops::linear(
            &h,
            self.up_weight.as_tensor(),
            Some(self.up_bias.as_tensor()),
        )
    }
}
