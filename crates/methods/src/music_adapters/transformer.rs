//! The transformer adapter of the study: a bottleneck whose hidden states pass through small
//! pre-norm transformer blocks (layer norm, multi-head self-attention, feed-forward, each
//! residual). Inside the autoregressive decoder the attention is causal; on the text
//! conditioning it sees the whole prompt.

use candle_core::{Result, Tensor, Var};
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};

/// The feed-forward's expansion of the adapter width.
pub const FFN_FACTOR: usize = 2;
/// Most attention heads (fewer when the width does not divide).
pub const MAX_HEADS: usize = 4;

struct Block {
    norm1: (Var, Var),
    q: (Var, Var),
    k: (Var, Var),
    v: (Var, Var),
    o: (Var, Var),
    norm2: (Var, Var),
    fc1: (Var, Var),
    fc2: (Var, Var),
}

/// `up(blocks(down(x)))`; `up` starts at zero.
pub struct TransformerAdapter {
    down: (Var, Var),
    blocks: Vec<Block>,
    up: (Var, Var),
    heads: usize,
    causal: bool,
}

fn linear(init: &SeededInit, name: &str, out: usize, inp: usize) -> Result<(Var, Var)> {
    Ok((
        init.fork(name).kaiming_uniform((out, inp), inp)?,
        init.zeros(out)?,
    ))
}

fn norm(init: &SeededInit, width: usize) -> Result<(Var, Var)> {
    Ok((init.constant(width, 1.0)?, init.zeros(width)?))
}

fn apply(x: &Tensor, (w, b): &(Var, Var)) -> Result<Tensor> {
    ops::linear(x, w.as_tensor(), Some(b.as_tensor()))
}

impl TransformerAdapter {
    pub fn new(
        hidden: usize,
        width: usize,
        blocks: usize,
        causal: bool,
        init: &SeededInit,
    ) -> Result<Self> {
        let heads = (1..=MAX_HEADS)
            .rev()
            .find(|h| width.is_multiple_of(*h))
            .unwrap_or(1);
        let ffn = FFN_FACTOR * width;
        let blocks = (0..blocks)
            .map(|i| {
                let b = init.fork(&format!("block{i}"));
                Ok(Block {
                    norm1: norm(&b, width)?,
                    q: linear(&b, "q", width, width)?,
                    k: linear(&b, "k", width, width)?,
                    v: linear(&b, "v", width, width)?,
                    o: linear(&b, "o", width, width)?,
                    norm2: norm(&b, width)?,
                    fc1: linear(&b, "fc1", ffn, width)?,
                    fc2: linear(&b, "fc2", width, ffn)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            down: linear(init, "down", width, hidden)?,
            blocks,
            up: (init.zeros((hidden, width))?, init.zeros(hidden)?),
            heads,
            causal,
        })
    }

    /// Scalars: down and up (`2·hidden·width + width + hidden`) and per block
    /// `8·width² + 11·width` (two norms, four projections, the feed-forward at
    /// [`FFN_FACTOR`] = 2).
    pub fn params(&self, prefix: &str, params: &mut NamedVars) {
        let mut push = |name: String, (w, b): &(Var, Var)| {
            params.push(format!("{name}.weight"), w.clone());
            params.push(format!("{name}.bias"), b.clone());
        };
        push(format!("{prefix}.down"), &self.down);
        for (i, block) in self.blocks.iter().enumerate() {
            let p = format!("{prefix}.block{i}");
            push(format!("{p}.norm1"), &block.norm1);
            push(format!("{p}.q"), &block.q);
            push(format!("{p}.k"), &block.k);
            push(format!("{p}.v"), &block.v);
            push(format!("{p}.o"), &block.o);
            push(format!("{p}.norm2"), &block.norm2);
            push(format!("{p}.fc1"), &block.fc1);
            push(format!("{p}.fc2"), &block.fc2);
        }
        push(format!("{prefix}.up"), &self.up);
    }

    /// The adapter's output `[batch, steps, hidden]` for `x` `[batch, steps, hidden]`; `mask`
    /// (0/1 `[batch, steps]`) keeps padded positions out of the attention's keys.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.run(x, mask, None)
    }

    /// The output for the new steps `x` of a decoder stepping through its cache: every block's
    /// keys and values of the earlier steps come from `ctx` under `site` (a cache of the
    /// adapter's own), so only the new steps are computed (outside stepping, as
    /// [`TransformerAdapter::forward`] without a mask).
    pub fn forward_steps(&self, site: &str, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.run(x, None, Some((site, ctx)))
    }

    fn run(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        steps: Option<(&str, &ForwardCtx)>,
    ) -> Result<Tensor> {
        let mut h = apply(x, &self.down)?;
        let (b, t, w) = h.dims3()?;
        let head_dim = w / self.heads;
        // The new steps are the last `t` of `total`: query `i` is step `total - t + i`.
        let bias = |total: usize| -> Result<Tensor> {
            let earlier = total - t;
            let bias: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..total).map(move |j| {
                        if j <= earlier + i || !self.causal {
                            0.0
                        } else {
                            f32::MIN
                        }
                    })
                })
                .collect();
            let bias = Tensor::from_vec(bias, (1, 1, t, total), x.device())?.to_dtype(x.dtype())?;
            match mask {
                Some(mask) => {
                    let keys = mask
                        .to_dtype(x.dtype())?
                        .affine(-f64::from(f32::MIN), f64::from(f32::MIN))?
                        .reshape((b, 1, 1, total))?;
                    bias.broadcast_add(&keys)
                }
                None => Ok(bias),
            }
        };
        let split = |x: &Tensor| {
            let len = x.dim(1)?;
            x.reshape((b, len, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        // With the earlier steps' keys or values of block `j`, when stepping.
        let so_far = |j: usize, what: &str, new: Tensor| match steps {
            Some((site, ctx)) => ctx.steps_so_far(&format!("{site}.block{j}.{what}"), &new),
            None => Ok(new),
        };
        for (j, block) in self.blocks.iter().enumerate() {
            let n = ops::layer_norm(
                &h,
                block.norm1.0.as_tensor(),
                block.norm1.1.as_tensor(),
                1e-5,
            )?;
            let keys = so_far(j, "key", apply(&n, &block.k)?)?;
            let values = so_far(j, "value", apply(&n, &block.v)?)?;
            let bias = bias(keys.dim(1)?)?;
            let (q, k, v) = (
                split(&apply(&n, &block.q)?)?,
                split(&keys)?,
                split(&values)?,
            );
            let scores =
                (q.matmul(&k.t()?)? * (head_dim as f64).powf(-0.5))?.broadcast_add(&bias)?;
            let context = ops::softmax_last_dim(&scores)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, w))?;
            h = (&h + apply(&context, &block.o)?)?;
            let n = ops::layer_norm(
                &h,
                block.norm2.0.as_tensor(),
                block.norm2.1.as_tensor(),
                1e-5,
            )?;
            h = (&h + apply(&apply(&n, &block.fc1)?.gelu_erf()?, &block.fc2)?)?;
        }
        apply(&h, &self.up)
    }
}
