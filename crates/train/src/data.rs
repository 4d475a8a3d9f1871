//! An in-memory [`BatchSource`]: inputs `[N, ...]` and labels `[N]` already in tensors. Useful for
//! tests, for cached features (linear probes) and for small data sets that fit on the device.

use candle_core::{DType, Tensor};
use peftbench_core::shuffle::permutation;

use crate::trainer::{Batch, BatchSource};

/// Examples held as two tensors that share their first dimension.
#[derive(Clone)]
pub struct InMemoryBatches {
    inputs: Tensor,
    labels: Tensor,
}

impl InMemoryBatches {
    /// `inputs` `[N, ...]`, `labels` `[N]` or per token `[N, T]` (converted to u32).
    pub fn new(inputs: Tensor, labels: Tensor) -> anyhow::Result<Self> {
        let n = inputs.dim(0)?;
        anyhow::ensure!(
            labels.dims().first() == Some(&n),
            "labels {:?} do not match {n} inputs",
            labels.dims()
        );
        let labels = labels.to_dtype(DType::U32)?;
        Ok(Self { inputs, labels })
    }

    pub fn inputs(&self) -> &Tensor {
        &self.inputs
    }

    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// The example order of one epoch: `0..N`, or [`permutation`]`(N, seed)` (the order every
    /// batch source uses).
    pub fn order(&self, shuffle_seed: Option<u64>) -> Vec<u32> {
        let n = self.num_examples();
        match shuffle_seed {
            Some(seed) => permutation(n, seed).into_iter().map(|i| i as u32).collect(),
            None => (0..n as u32).collect(),
        }
    }
}

impl BatchSource for InMemoryBatches {
    fn num_examples(&self) -> usize {
        self.labels.dim(0).unwrap_or(0)
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let order = self.order(shuffle_seed);
        let batch_size = batch_size.max(1);
        let chunks: Vec<Vec<u32>> = order.chunks(batch_size).map(<[u32]>::to_vec).collect();
        Box::new(chunks.into_iter().map(move |idx| {
            let n = idx.len();
            let idx = Tensor::from_vec(idx, n, self.inputs.device())?;
            let inputs = self.inputs.index_select(&idx, 0)?;
            let labels = self.labels.index_select(&idx, 0)?;
            Ok(Batch::new(inputs, labels))
        }))
    }
}
