//! The convolutional adapter of the study: a bottleneck whose hidden channels pass through
//! residual dilated 1-D convolutions over time and a squeeze-and-excitation gate. Inside an
//! autoregressive decoder every part is causal, or a teacher-forced likelihood would see the
//! future: each convolution reads only the current and earlier steps (left padding), and the
//! squeeze is the running mean over the steps so far rather than over the whole clip.

use candle_core::{Result, Tensor, Var};
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};

/// Taps of every convolution.
pub const KERNEL: usize = 3;
/// The dilations of the residual convolutions, one convolution each (receptive field
/// `1 + (KERNEL - 1) · Σ dilations` steps).
pub const DILATIONS: [usize; 3] = [1, 2, 4];
/// The squeeze-and-excitation gate's reduction of the channels.
pub const SE_REDUCTION: usize = 4;

/// One causal convolution `w → w` channels: `y_t = b + Σ_j W_j x_{t - j·dilation}`.
struct CausalConv {
    /// Tap `j`'s `[w, w]`.
    taps: Vec<Var>,
    bias: Var,
    dilation: usize,
}

impl CausalConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let mut y: Option<Tensor> = None;
        for (j, tap) in self.taps.iter().enumerate() {
            let shift = j * self.dilation;
            if shift >= t {
                break;
            }
            // x moved `shift` steps later, zeros before: step t reads x_{t - shift}.
            let moved = if shift == 0 {
                x.clone()
            } else {
                Tensor::cat(
                    &[
                        &Tensor::zeros((b, shift, w), x.dtype(), x.device())?,
                        &x.narrow(1, 0, t - shift)?,
                    ],
                    1,
                )?
            };
            let part = ops::linear(&moved, tap.as_tensor(), None)?;
            y = Some(match y {
                None => part,
                Some(sum) => (sum + part)?,
            });
        }
        y.expect("tap 0 always applies")
            .broadcast_add(self.bias.as_tensor())
    }
}

/// `up(SE(h + Σ residual causal convs))`, `h = down(x)`; `up` starts at zero.
pub struct ConvAdapter {
    down_weight: Var,
    down_bias: Var,
    convs: Vec<CausalConv>,
    se_reduce: (Var, Var),
    se_expand: (Var, Var),
    up_weight: Var,
    up_bias: Var,
}

impl ConvAdapter {
    pub fn new(hidden: usize, width: usize, init: &SeededInit) -> Result<Self> {
        let squeezed = (width / SE_REDUCTION).max(1);
        let convs = DILATIONS
            .iter()
            .enumerate()
            .map(|(i, &dilation)| {
                let mut fork = init.fork(&format!("conv{i}"));
                Ok(CausalConv {
                    taps: (0..KERNEL)
                        .map(|_| fork.kaiming_uniform((width, width), width * KERNEL))
                        .collect::<Result<_>>()?,
                    bias: init.zeros(width)?,
                    dilation,
                })
            })
            .collect::<Result<_>>()?;
        let mut se = init.fork("se");
        Ok(Self {
            down_weight: init.fork("down").kaiming_uniform((width, hidden), hidden)?,
            down_bias: init.zeros(width)?,
            convs,
            se_reduce: (
                se.kaiming_uniform((squeezed, width), width)?,
                init.zeros(squeezed)?,
            ),
            se_expand: (
                se.kaiming_uniform((width, squeezed), squeezed)?,
                init.zeros(width)?,
            ),
            up_weight: init.zeros((hidden, width))?,
            up_bias: init.zeros(hidden)?,
        })
    }

    /// Scalars: down and up (`2·hidden·width + width + hidden`), every convolution
    /// (`KERNEL·width² + width` each) and the gate (`2·width·squeezed + squeezed + width`).
    pub fn params(&self, prefix: &str, params: &mut NamedVars) {
        params.push(format!("{prefix}.down.weight"), self.down_weight.clone());
        params.push(format!("{prefix}.down.bias"), self.down_bias.clone());
        for (i, conv) in self.convs.iter().enumerate() {
            for (j, tap) in conv.taps.iter().enumerate() {
                params.push(format!("{prefix}.conv{i}.tap{j}"), tap.clone());
            }
            params.push(format!("{prefix}.conv{i}.bias"), conv.bias.clone());
        }
        params.push(
            format!("{prefix}.se.reduce.weight"),
            self.se_reduce.0.clone(),
        );
        params.push(format!("{prefix}.se.reduce.bias"), self.se_reduce.1.clone());
        params.push(
            format!("{prefix}.se.expand.weight"),
            self.se_expand.0.clone(),
        );
        params.push(format!("{prefix}.se.expand.bias"), self.se_expand.1.clone());
        params.push(format!("{prefix}.up.weight"), self.up_weight.clone());
        params.push(format!("{prefix}.up.bias"), self.up_bias.clone());
    }

    /// The adapter's output `[batch, steps, hidden]` for `x` `[batch, steps, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, None)
    }

    /// The output for the new steps `x` of a decoder stepping through its cache: the bottleneck
    /// states of the earlier steps come from `ctx` under `site` (outside stepping, as
    /// [`ConvAdapter::forward`]).
    pub fn forward_steps(&self, site: &str, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.run(x, Some((site, ctx)))
    }

    fn run(&self, x: &Tensor, steps: Option<(&str, &ForwardCtx)>) -> Result<Tensor> {
        let new = ops::linear(
            x,
            self.down_weight.as_tensor(),
            Some(self.down_bias.as_tensor()),
        )?;
        // The convolutions and the squeeze read earlier steps: they run over all of them, in the
        // bottleneck's width, and only the new steps go on.
        let mut h = match steps {
            Some((site, ctx)) => ctx.steps_so_far(site, &new)?,
            None => new,
        };
        for conv in &self.convs {
            h = (&h + conv.forward(&h)?.gelu_erf()?)?;
        }
        // Causal squeeze: the mean of the steps so far.
        let t = h.dim(1)?;
        let counts = Tensor::arange(1u32, t as u32 + 1, h.device())?
            .to_dtype(h.dtype())?
            .reshape((1, t, 1))?;
        let running_mean = h.cumsum(1)?.broadcast_div(&counts)?;
        let gate = ops::linear(
            &ops::linear(
                &running_mean,
                self.se_reduce.0.as_tensor(),
                Some(self.se_reduce.1.as_tensor()),
            )?
            .relu()?,
            self.se_expand.0.as_tensor(),
            Some(self.se_expand.1.as_tensor()),
        )?;
        let gate = candle_nn::ops::sigmoid(&gate)?;
        let h = (h * gate)?.narrow(1, t - x.dim(1)?, x.dim(1)?)?;
        ops::linear(
            &h,
            self.up_weight.as_tensor(),
            Some(self.up_bias.as_tensor()),
        )
    }
}
