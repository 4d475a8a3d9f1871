use candle_core::{Result, Tensor};
use peftbench_core::{ops, ForwardCtx, SeededInit};

use crate::adapter::{AdapterActivation, Bottleneck};
use crate::shira::to_f64_vec;

/// A bottleneck adapter whose two weight matrices are each split into `n` non-overlapping sparse
/// modules (a seeded random, balanced partition of their entries). Biases stay dense.
pub struct SparseMixtureAdapter {
    /// The dense adapter: the union of all modules, i.e. the merged adapter.
    pub adapter: Bottleneck,
    /// `n` 0/1 masks per weight, summing to all-ones.
    pub down_masks: Vec<Tensor>,
    pub up_masks: Vec<Tensor>,
    pub hierarchical: bool,
}

/// `n` masks of `shape` partitioning its entries: entry `p` belongs to module `rank(noise_p) % n`.
fn partition(
    shape: (usize, usize),
    n: usize,
    init: &SeededInit,
    like: &Tensor,
) -> Result<Vec<Tensor>> {
    let noise = to_f64_vec(init.fork("partition").uniform(shape, 0.0, 1.0)?.as_tensor())?;
    let mut order: Vec<usize> = (0..noise.len()).collect();
    order.sort_by(|&a, &b| noise[a].total_cmp(&noise[b]));
    let mut module_of = vec![0usize; noise.len()];
    for (rank, &p) in order.iter().enumerate() {
        module_of[p] = rank % n;
    }
    (0..n)
        .map(|m| {
            let mask: Vec<f64> = module_of
                .iter()
                .map(|&k| f64::from(u8::from(k == m)))
                .collect();
            Tensor::from_vec(mask, shape, like.device())?.to_dtype(like.dtype())
        })
        .collect()
}

impl SparseMixtureAdapter {
    pub fn new(
        adapter: Bottleneck,
        modules: usize,
        hierarchical: bool,
        init: &SeededInit,
    ) -> Result<Self> {
        let down = adapter.down_weight.as_tensor();
        let up = adapter.up_weight.as_tensor();
        Ok(Self {
            down_masks: partition(down.dims2()?, modules, &init.fork("down_masks"), down)?,
            up_masks: partition(up.dims2()?, modules, &init.fork("up_masks"), up)?,
            adapter,
            hierarchical,
        })
    }

    /// The mask active in this training step: one module, or with the hierarchical strategy, with
    /// probability 1/2 a pair of neighbouring modules (the coarse level).
    fn draw(&self, masks: &[Tensor], ctx: &ForwardCtx) -> Result<Tensor> {
        if self.hierarchical && ctx.choose(2) == 1 {
            let pair = ctx.choose(masks.len() / 2);
            &masks[2 * pair] + &masks[2 * pair + 1]
        } else {
            Ok(masks[ctx.choose(masks.len())].clone())
        }
    }

    /// Training: a stochastically chosen sparse module of each weight (chosen independently).
    /// Evaluation: the mixture of all modules, `Σ_m W ⊙ M_m`, which is the dense (merged) adapter.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let (down_mask, up_mask) = if ctx.is_train() {
            (
                self.draw(&self.down_masks, ctx)?,
                self.draw(&self.up_masks, ctx)?,
            )
        } else {
            (sum(&self.down_masks)?, sum(&self.up_masks)?)
        };
        let a = &self.adapter;
        let h = ops::linear(
            x,
            &(a.down_weight.as_tensor() * down_mask)?,
            Some(a.down_bias.as_tensor()),
        )?;
        let h = match a.activation {
            AdapterActivation::Relu => h.relu()?,
            AdapterActivation::Gelu => h.gelu_erf()?,
            AdapterActivation::Silu => h.silu()?,
        };
        ops::linear(
            &h,
            &(a.up_weight.as_tensor() * up_mask)?,
            Some(a.up_bias.as_tensor()),
        )
    }
}

fn sum(masks: &[Tensor]) -> Result<Tensor> {
    let mut total = masks[0].clone();
    for m in &masks[1..] {
        total = (total + m)?;
    }
    Ok(total)
}
