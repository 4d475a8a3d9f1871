use candle_core::{DType, Result, Tensor, Var};
use peftbench_backbones::Linear;
use peftbench_core::ops;

/// A trainable sparse update of a frozen `[out, in]` weight: `values[i]` is added at the flat
/// (row-major) position `indices[i]`. Shared by SHiRA and LT-SFT's sparse phase.
pub struct SparseDelta {
    /// `[out, in]` of the adapted weight.
    pub shape: (usize, usize),
    /// Flat positions, ascending (u32 `[k]`).
    pub indices: Tensor,
    /// Trainable values `[k]`, zero at initialisation.
    pub values: Var,
}

impl SparseDelta {
    /// A zero update at `indices` (flat, ascending) in the dtype and device of `like`.
    pub fn zeros(shape: (usize, usize), indices: &[u32], like: &Tensor) -> Result<Self> {
        let device = like.device();
        Ok(Self {
            shape,
            indices: Tensor::from_slice(indices, indices.len(), device)?,
            values: Var::zeros(indices.len(), like.dtype(), device)?,
        })
    }

    /// `W + scatter(values)`: the adapted weight (differentiable in `values`).
    pub fn apply(&self, weight: &Tensor) -> Result<Tensor> {
        weight
            .flatten_all()?
            .index_add(&self.indices, self.values.as_tensor(), 0)?
            .reshape(weight.shape())
    }

    /// `x (W + Δ)^T + b`.
    pub fn forward(&self, x: &Tensor, base: &Linear) -> Result<Tensor> {
        ops::linear(x, &self.apply(&base.weight)?, base.bias.as_ref())
    }

    /// `[2, k]` row and column indices (PEFT's `shira_indices`), i32.
    pub fn coordinates(&self) -> Result<Tensor> {
        let flat: Vec<u32> = self.indices.to_vec1()?;
        let cols = self.shape.1 as u32;
        let mut coords: Vec<i32> = flat.iter().map(|&i| (i / cols) as i32).collect();
        coords.extend(flat.iter().map(|&i| (i % cols) as i32));
        Tensor::from_vec(coords, (2, flat.len()), self.indices.device())
    }
}

/// The `k` positions of largest `scores`, ascending; ties go to the lower position.
///
/// A selection, not a sort: `O(n)` to split off the `k` best (a total order, so the result is
/// the same as a full sort's first `k`), then `O(k log k)` to sort them. ViT-B/16 weights have
/// 2.4M entries per MLP projection.
pub fn top_k_positions(scores: &[f64], k: usize) -> Vec<u32> {
    let k = k.min(scores.len());
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    let better = |a: &u32, b: &u32| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    };
    if k < order.len() {
        order.select_nth_unstable_by(k, better);
    }
    order.truncate(k);
    order.sort_unstable();
    order
}

/// The values of any tensor as f64, row-major.
pub fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()
}

/// Adds (`sign` 1) or removes (`sign` -1) a sparse update in place in fused host weights: the
/// cost of switching SHiRA adapters, `O(k)` instead of a dense `O(out * in)` rewrite.
pub fn scatter_in_place(weight: &mut [f32], indices: &[u32], values: &[f32], sign: f32) {
    for (&i, &v) in indices.iter().zip(values) {
        weight[i as usize] += sign * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_equals_the_first_k_of_a_full_sort_ties_to_the_lower_position() {
        // Many ties (scores in 0..7) so the tie rule decides most of the kept set.
        let scores: Vec<f64> = (0..500u64).map(|i| ((i * 7919) % 7) as f64).collect();
        for k in [0, 1, 37, 71, 72, 250, 499, 500, 600] {
            let mut order: Vec<u32> = (0..scores.len() as u32).collect();
            order.sort_by(|&a, &b| {
                scores[b as usize]
                    .total_cmp(&scores[a as usize])
                    .then(a.cmp(&b))
            });
            let mut expected = order[..k.min(order.len())].to_vec();
            expected.sort_unstable();
            assert_eq!(top_k_positions(&scores, k), expected, "k = {k}");
        }
    }
}
