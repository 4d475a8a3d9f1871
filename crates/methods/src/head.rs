//! The task's classification head, trained by every method (HF PEFT saves it under
//! `modules_to_save` as `classifier`), or one head per task for multi-task runs.

use candle_core::{DType, Result, Tensor, D};
use peftbench_core::{ops, NamedVars, SeededInit};

pub struct ClassifierHead {
    params: NamedVars,
    /// Multi-task heads: each task's class count, and the additive logit mask built from it.
    per_task: Option<PerTask>,
}

/// A head per task, stacked: `classifier.weight` `[tasks, max classes, hidden]` and
/// `classifier.bias` `[tasks, max classes]`. A task with fewer classes than the widest has its
/// extra rows masked out of the logits (they never get a gradient and stay zero).
struct PerTask {
    num_classes: Vec<usize>,
    /// `[tasks, max classes]`: 0 for a task's classes, a large negative number for the rest.
    logit_mask: Tensor,
}

/// The tensor that records a multi-task head's class counts in a saved adapter (u32 `[tasks]`).
pub const PER_TASK_CLASSES: &str = "classifier.num_classes";

/// Added to the logits of classes a task does not have: far below any real logit, finite so that
/// a softmax over a masked row stays defined.
const MASKED_LOGIT: f32 = -1e9;

impl ClassifierHead {
    /// A `hidden -> num_classes` linear layer, truncated-normal(0.02) weights and zero bias, as
    /// `ViTForImageClassification` initialises it.
    pub fn new(hidden: usize, num_classes: usize, init: &SeededInit) -> Result<Self> {
        let mut params = NamedVars::default();
        params.push(
            "classifier.weight",
            init.fork("classifier.weight")
                .trunc_normal((num_classes, hidden), 0.02)?,
        );
        params.push("classifier.bias", init.zeros(num_classes)?);
        Ok(Self {
            params,
            per_task: None,
        })
    }

    /// One head per task (`num_classes[t]` classes for task `t`), each initialised as the
    /// single-task head a run with stream `task{t}` of `init` would get; the logits of example
    /// `i` come from the head of its task (`ForwardCtx::task_ids`).
    pub fn per_task(hidden: usize, num_classes: &[usize], init: &SeededInit) -> Result<Self> {
        let widest = num_classes.iter().copied().max().unwrap_or(0);
        if num_classes.is_empty() || widest == 0 {
            candle_core::bail!("a multi-task head needs at least one task with classes");
        }
        let mut weights = Vec::with_capacity(num_classes.len());
        let mut mask = Vec::with_capacity(num_classes.len() * widest);
        for (t, &classes) in num_classes.iter().enumerate() {
            let one = init
                .fork(&format!("task{t}"))
                .fork("classifier.weight")
                .trunc_normal((classes, hidden), 0.02)?;
            let padding = Tensor::zeros((widest - classes, hidden), one.dtype(), one.device())?;
            weights.push(Tensor::cat(&[one.as_tensor(), &padding], 0)?);
            mask.extend((0..widest).map(|c| if c < classes { 0.0 } else { MASKED_LOGIT }));
        }
        let weight = Tensor::stack(&weights, 0)?;
        let mut params = NamedVars::default();
        params.push("classifier.weight", candle_core::Var::from_tensor(&weight)?);
        params.push("classifier.bias", init.zeros((num_classes.len(), widest))?);
        let logit_mask = Tensor::from_vec(mask, (num_classes.len(), widest), weight.device())?
            .to_dtype(weight.dtype())?;
        Ok(Self {
            params,
            per_task: Some(PerTask {
                num_classes: num_classes.to_vec(),
                logit_mask,
            }),
        })
    }

    /// No classifier: the modules a model trains besides its method (VL-T5's visual embedding),
    /// which HF PEFT saves under `modules_to_save` as it saves a head. Such a "head" is never
    /// applied; it only travels with the adapter into the saved file.
    pub fn modules_to_save(params: NamedVars) -> Self {
        Self {
            params,
            per_task: None,
        }
    }

    pub fn params(&self) -> &NamedVars {
        &self.params
    }

    /// Classes of the head (of the widest task's head for a multi-task head).
    pub fn num_classes(&self) -> usize {
        let bias = self.params.0[1].var.as_tensor();
        bias.dims().last().copied().unwrap_or(0)
    }

    /// Each task's class count, for a multi-task head.
    pub fn task_classes(&self) -> Option<&[usize]> {
        self.per_task.as_ref().map(|p| p.num_classes.as_slice())
    }

    /// What a saved adapter stores besides the parameters: a multi-task head's class counts.
    pub fn saved_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut tensors: Vec<(String, Tensor)> = self.params.tensors().into_iter().collect();
        if let Some(p) = &self.per_task {
            let counts: Vec<u32> = p.num_classes.iter().map(|&c| c as u32).collect();
            let n = counts.len();
            tensors.push((
                PER_TASK_CLASSES.into(),
                Tensor::from_vec(counts, n, &candle_core::Device::Cpu)?,
            ));
        }
        Ok(tensors)
    }

    /// Logits `[B, classes]` (or `[B, T, classes]` for token features). A multi-task head needs
    /// each example's task (u32 `[B]`); without task ids every example is task 0.
    pub fn forward_tasks(&self, features: &Tensor, task_ids: Option<&Tensor>) -> Result<Tensor> {
        let weight = self.params.0[0].var.as_tensor();
        let bias = self.params.0[1].var.as_tensor();
        let Some(per_task) = &self.per_task else {
            return ops::linear(features, weight, Some(bias));
        };
        let batch = features.dim(0)?;
        let ids = match task_ids {
            Some(ids) => ids.to_dtype(DType::U32)?,
            None => Tensor::zeros(batch, DType::U32, features.device())?,
        };
        if features.rank() != 2 {
            candle_core::bail!("a multi-task head reads pooled features [B, hidden]");
        }
        // Example i's logits: W[task_i] f_i + b[task_i], masked to its task's classes.
        let w = weight.index_select(&ids, 0)?; // [B, C, H]
        let logits = w
            .matmul(&features.unsqueeze(D::Minus1)?.contiguous()?)?
            .squeeze(D::Minus1)?; // [B, C]
        let bias = bias.index_select(&ids, 0)?;
        let mask = per_task.logit_mask.index_select(&ids, 0)?;
        (logits + bias)? + mask
    }

    /// Single-task logits (task 0 for a multi-task head).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        self.forward_tasks(features, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A multi-task head gives each example its own task's single-task logits, masked to its classes.
    #[test]
    fn per_task_head_selects_each_example_s_head() -> Result<()> {
        let init = SeededInit::new(3, &Device::Cpu);
        let head = ClassifierHead::per_task(4, &[2, 3], &init)?;
        // Trained-looking biases, so the selection of the bias is checked too.
        head.params.0[1].var.set(&Tensor::new(
            &[[0.5f32, -0.5, 0.0], [1.0, 2.0, 3.0]],
            &Device::Cpu,
        )?)?;
        let features = Tensor::new(&[[1f32, 2., 3., 4.], [0.5, -1., 0., 2.]], &Device::Cpu)?;
        let ids = Tensor::new(&[1u32, 0], &Device::Cpu)?;
        let logits = head
            .forward_tasks(&features, Some(&ids))?
            .to_vec2::<f32>()?;
        let single = |t: usize, classes: usize, row: usize| -> Result<Vec<f32>> {
            let w = head.params.0[0]
                .var
                .as_tensor()
                .get(t)?
                .narrow(0, 0, classes)?;
            let b = head.params.0[1]
                .var
                .as_tensor()
                .get(t)?
                .narrow(0, 0, classes)?;
            ops::linear(&features.narrow(0, row, 1)?, &w, Some(&b))?
                .squeeze(0)?
                .to_vec1::<f32>()
        };
        let task1 = single(1, 3, 0)?;
        for (a, b) in logits[0].iter().zip(&task1) {
            assert!((a - b).abs() < 1e-5, "{logits:?} vs {task1:?}");
        }
        let task0 = single(0, 2, 1)?;
        assert!((logits[1][0] - task0[0]).abs() < 1e-5);
        assert!((logits[1][1] - task0[1]).abs() < 1e-5);
        assert!(logits[1][2] < -1e8, "task 0 has no third class");
        // Task t's head starts as the head of stream `task{t}`.
        let alone = ClassifierHead::new(4, 3, &init.fork("task1"))?;
        assert_eq!(
            head.params.0[0].var.as_tensor().get(1)?.to_vec2::<f32>()?,
            alone.params.0[0].var.as_tensor().to_vec2::<f32>()?
        );
        Ok(())
    }
}
