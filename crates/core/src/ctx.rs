//! The context of one forward pass: training or evaluation, the seeded randomness that
//! dropout and stochastic depth draw from (candle's own RNG is not seedable on every device),
//! and, while a decoder generates step by step, the earlier steps that hooks mixing steps read.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Train/eval mode plus a seeded RNG for masks. Cheap to create; one per forward pass or per run.
pub struct ForwardCtx {
    train: bool,
    /// Probability of dropping a residual branch per example (stochastic depth) in training.
    pub drop_path: f64,
    rng: RefCell<ChaCha8Rng>,
    /// Multi-task data: the task of each example of the batch, u32 `[B]`, for methods that condition
    /// on it (per-task adapters, Hyperformer, Poly/MHR routing). `None` for single-task runs.
    task_ids: Option<Tensor>,
    /// While stepping through a decoder's cache ([`ForwardCtx::stepping`]): each hook site's
    /// inputs so far, by site.
    steps: Option<RefCell<HashMap<String, Tensor>>>,
}

impl ForwardCtx {
    /// Evaluation: no dropout, no stochastic depth.
    pub fn eval() -> Self {
        Self {
            train: false,
            drop_path: 0.0,
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(0)),
            task_ids: None,
            steps: None,
        }
    }

    /// Evaluation of a decoder generating step by step through its key-value cache: each pass
    /// sees only its new steps, and hooks that mix steps read the earlier ones with
    /// [`ForwardCtx::steps_so_far`]. One per generated sequence.
    pub fn stepping() -> Self {
        Self {
            steps: Some(RefCell::new(HashMap::new())),
            ..Self::eval()
        }
    }

    /// For a hook that mixes a decoder's steps (a causal convolution, attention over the
    /// states) at `site`: its input at every step so far, `[batch, steps, hidden]`, ending with
    /// this pass's `input`. Stepping ([`ForwardCtx::stepping`]), that is the inputs of the
    /// earlier passes at `site` with `input` appended (and kept for the next pass); otherwise a
    /// pass sees all its steps at once, and it is `input`.
    pub fn steps_so_far(&self, site: &str, input: &Tensor) -> Result<Tensor> {
        let Some(steps) = &self.steps else {
            return Ok(input.clone());
        };
        let mut steps = steps.borrow_mut();
        let all = match steps.get(site) {
            Some(earlier) => Tensor::cat(&[earlier, input], 1)?,
            None => input.clone(),
        };
        steps.insert(site.to_string(), all.clone());
        Ok(all)
    }

    /// Training with masks drawn from `seed`.
    pub fn train(seed: u64, drop_path: f64) -> Self {
        Self {
            train: true,
            drop_path,
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(seed)),
            task_ids: None,
            steps: None,
        }
    }

    /// This pass with each example's task, u32 `[B]` (multi-task batches).
    pub fn with_task_ids(mut self, task_ids: Option<Tensor>) -> Self {
        self.task_ids = task_ids;
        self
    }

    /// The task of each example of the batch (u32 `[B]`), when the data is multi-task.
    pub fn task_ids(&self) -> Option<&Tensor> {
        self.task_ids.as_ref()
    }

    pub fn is_train(&self) -> bool {
        self.train
    }

    /// A uniformly random index in `0..n` from this pass's seeded stream, for training-time choices
    /// such as which sparse module MoSA activates.
    pub fn choose(&self, n: usize) -> usize {
        self.rng.borrow_mut().random_range(0..n)
    }

    /// A f32 tensor of `shape` with values uniform in `[0, 1)` from this pass's seeded stream, for
    /// sampled relaxations (Poly/MHR's relaxed-Bernoulli routing).
    pub fn uniform(&self, shape: impl Into<candle_core::Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let mut rng = self.rng.borrow_mut();
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|_| rng.random::<f32>())
            .collect();
        Tensor::from_vec(values, shape, device)
    }

    /// Inverted dropout with probability `p`: identity in evaluation or when `p == 0`.
    pub fn dropout(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        if !self.train || p <= 0.0 {
            return Ok(x.clone());
        }
        let mask = self
            .keep_mask(x.elem_count(), p, x.device())?
            .reshape(x.shape())?;
        x.mul(&mask.to_dtype(x.dtype())?)
    }

    /// Whether [`ForwardCtx::drop_path`] can drop a branch (training with a positive rate).
    pub fn drops_paths(&self) -> bool {
        self.train && self.drop_path > 0.0
    }

    /// Stochastic depth on a residual branch `[batch, ...]`: each example's branch is dropped with
    /// probability `drop_path` and the kept ones rescaled, as timm's `DropPath`.
    pub fn drop_path(&self, branch: &Tensor) -> Result<Tensor> {
        if !self.train || self.drop_path <= 0.0 {
            return Ok(branch.clone());
        }
        let batch = branch.dim(0)?;
        let mut shape = vec![batch];
        shape.extend(std::iter::repeat_n(1, branch.rank() - 1));
        let mask = self
            .keep_mask(batch, self.drop_path, branch.device())?
            .reshape(shape)?;
        branch.broadcast_mul(&mask.to_dtype(branch.dtype())?)
    }

    /// A `[n]` f32 tensor of `0` (dropped, probability `p`) or `1/(1-p)` (kept).
    fn keep_mask(&self, n: usize, p: f64, device: &Device) -> Result<Tensor> {
        let scale = (1.0 / (1.0 - p)) as f32;
        let mut rng = self.rng.borrow_mut();
        let values: Vec<f32> = (0..n)
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
            .collect();
        Tensor::from_vec(values, n, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_is_identity_and_train_is_seeded() -> Result<()> {
        let x = Tensor::ones((4, 3, 2), candle_core::DType::F32, &Device::Cpu)?;
        let eval = ForwardCtx::eval();
        assert_eq!(eval.drop_path(&x)?.sum_all()?.to_scalar::<f32>()?, 24.0);
        let a = ForwardCtx::train(7, 0.5)
            .drop_path(&x)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = ForwardCtx::train(7, 0.5)
            .drop_path(&x)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        // Whole examples are dropped or kept and rescaled by 1/(1-p).
        for chunk in a.chunks(6) {
            assert!(chunk.iter().all(|&v| v == 0.0) || chunk.iter().all(|&v| v == 2.0));
        }
        Ok(())
    }

    #[test]
    fn stepping_keeps_each_sites_steps_and_other_passes_see_their_own() -> Result<()> {
        let step = |v: f32| Tensor::full(v, (2, 1, 3), &Device::Cpu);
        let stepping = ForwardCtx::stepping();
        stepping.steps_so_far("a", &step(1.0)?)?;
        stepping.steps_so_far("b", &step(9.0)?)?;
        let a = stepping.steps_so_far("a", &step(2.0)?)?;
        assert_eq!(a.dims3()?, (2, 2, 3));
        assert_eq!(a.to_vec3::<f32>()?[1], vec![vec![1.0; 3], vec![2.0; 3]]);
        assert_eq!(stepping.steps_so_far("b", &step(8.0)?)?.dims3()?, (2, 2, 3));
        let whole = ForwardCtx::eval();
        whole.steps_so_far("a", &step(1.0)?)?;
        assert_eq!(whole.steps_so_far("a", &step(2.0)?)?.dims3()?, (2, 1, 3));
        Ok(())
    }
}
