use candle_core::{Result, Tensor, Var};
use peftbench_core::{ops, NamedVars, SeededInit};

/// `up(silu(depthwise_conv(down(x))))` over `[batch, tokens, hidden]`.
pub struct ConvBranch {
    pub down_weight: Var,
    pub down_bias: Var,
    /// `[bottleneck, kernel]`: one filter per channel.
    pub conv_weight: Var,
    pub conv_bias: Var,
    pub up_weight: Var,
    pub up_bias: Var,
}

impl ConvBranch {
    pub fn new(hidden: usize, bottleneck: usize, kernel: usize, init: &SeededInit) -> Result<Self> {
        // PyTorch's Conv1d default: U(±1/sqrt(fan_in)), fan_in = kernel for a depthwise filter.
        let bound = 1.0 / (kernel as f32).sqrt();
        Ok(Self {
            down_weight: init
                .fork("down")
                .kaiming_uniform((bottleneck, hidden), hidden)?,
            down_bias: init.zeros(bottleneck)?,
            conv_weight: init
                .fork("conv")
                .uniform((bottleneck, kernel), -bound, bound)?,
            conv_bias: init.zeros(bottleneck)?,
            up_weight: init.zeros((hidden, bottleneck))?,
            up_bias: init.zeros(hidden)?,
        })
    }

    pub fn push_params(&self, prefix: &str, params: &mut NamedVars) {
        params.push(format!("{prefix}.down.weight"), self.down_weight.clone());
        params.push(format!("{prefix}.down.bias"), self.down_bias.clone());
        params.push(format!("{prefix}.conv.weight"), self.conv_weight.clone());
        params.push(format!("{prefix}.conv.bias"), self.conv_bias.clone());
        params.push(format!("{prefix}.up.weight"), self.up_weight.clone());
        params.push(format!("{prefix}.up.bias"), self.up_bias.clone());
    }

    /// Depthwise convolution along the token axis of `[batch, tokens, channels]`, zero-padded so
    /// the sequence keeps its length: `y[t, c] = Σ_j w[c, j] x[t + j - (K-1)/2, c] + b[c]`.
    /// Written as a sum of shifted copies: autograd-safe and the same on every device.
    pub fn depthwise_conv(&self, x: &Tensor) -> Result<Tensor> {
        let (_, tokens, _) = x.dims3()?;
        let w = self.conv_weight.as_tensor();
        let kernel = w.dim(1)?;
        let pad = (kernel - 1) / 2;
        let padded = x.pad_with_zeros(1, pad, pad)?;
        let mut y = self.conv_bias.as_tensor().unsqueeze(0)?.unsqueeze(0)?;
        for j in 0..kernel {
            let tap = w.narrow(1, j, 1)?.squeeze(1)?;
            y = y.broadcast_add(&padded.narrow(1, j, tokens)?.broadcast_mul(&tap)?)?;
        }
        Ok(y)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = ops::linear(
            x,
            self.down_weight.as_tensor(),
            Some(self.down_bias.as_tensor()),
        )?;
        let h = self.depthwise_conv(&h)?.silu()?;
        ops::linear(
            &h,
            self.up_weight.as_tensor(),
            Some(self.up_bias.as_tensor()),
        )
    }
}
