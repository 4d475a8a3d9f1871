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
    /// Sequences padded to the longest of the split: each example's own length along the inputs'
    /// last axis ([`InMemoryBatches::with_lengths`]).
    lengths: Option<Vec<usize>>,
    /// Shuffled epochs batch examples of similar length ([`InMemoryBatches::with_length_buckets`]).
    length_buckets: bool,
}

/// Batches per pool that length bucketing sorts: wide enough to find texts of similar length,
/// narrow enough that a pool is still a random draw from the epoch.
const BUCKET_POOL_BATCHES: usize = 32;

/// Purpose mixed into the shuffle seed for the order of bucketed batches ("BUCK").
const BUCKET_ORDER: u64 = 0x4255_434b;

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
        Ok(Self {
            inputs,
            labels,
            lengths: None,
            length_buckets: false,
        })
    }

    /// Padded sequences (token ids right-padded to the longest example of the split) whose own
    /// lengths are `lengths`: each batch is then cut to its longest member along the inputs' last
    /// axis, and per-token labels `[N, T]` with it, so a step computes at the length of its batch
    /// rather than of the whole split. Only what was padding is cut, so a model that ignores its
    /// padding gives the same outputs up to the rounding of shorter reductions.
    pub fn with_lengths(mut self, lengths: Vec<usize>) -> anyhow::Result<Self> {
        let n = self.inputs.dim(0)?;
        let width = *self.inputs.dims().last().expect("inputs have a first axis");
        anyhow::ensure!(
            lengths.len() == n,
            "{} lengths for {n} examples",
            lengths.len()
        );
        anyhow::ensure!(
            lengths.iter().all(|&l| (1..=width).contains(&l)),
            "every length must lie in 1..={width}, the padded width"
        );
        anyhow::ensure!(
            self.labels.rank() == 1 || self.labels.dims() == self.inputs.dims(),
            "per-token labels {:?} must match the inputs {:?}",
            self.labels.dims(),
            self.inputs.dims()
        );
        self.lengths = Some(lengths);
        Ok(self)
    }

    /// Seeded length bucketing of shuffled epochs (lengths must be set): the epoch's order is cut
    /// into pools of [`BUCKET_POOL_BATCHES`] batches, each pool sorted by length (stably) and cut
    /// into batches, and the batches put in a seeded random order. Every example is still seen
    /// once per epoch; unshuffled passes (evaluation) keep file order.
    pub fn with_length_buckets(mut self) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.lengths.is_some(),
            "length bucketing needs the examples' lengths (with_lengths)"
        );
        self.length_buckets = true;
        Ok(self)
    }

    /// The example indices of each batch of one epoch.
    fn batch_indices(&self, batch_size: usize, shuffle_seed: Option<u64>) -> Vec<Vec<u32>> {
        let order = self.order(shuffle_seed);
        let (Some(seed), Some(lengths), true) = (shuffle_seed, &self.lengths, self.length_buckets)
        else {
            return order.chunks(batch_size).map(<[u32]>::to_vec).collect();
        };
        let mut batches: Vec<Vec<u32>> = Vec::new();
        for pool in order.chunks(batch_size * BUCKET_POOL_BATCHES) {
            let mut pool = pool.to_vec();
            pool.sort_by_key(|&i| lengths[i as usize]);
            batches.extend(pool.chunks(batch_size).map(<[u32]>::to_vec));
        }
        let batch_order = permutation(batches.len(), seed ^ BUCKET_ORDER);
        batch_order
            .into_iter()
            .map(|b| batches[b].clone())
            .collect()
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
        let chunks = self.batch_indices(batch_size.max(1), shuffle_seed);
        Box::new(chunks.into_iter().map(move |idx| {
            let longest = self
                .lengths
                .as_ref()
                .and_then(|lengths| idx.iter().map(|&i| lengths[i as usize]).max());
            let n = idx.len();
            let idx = Tensor::from_vec(idx, n, self.inputs.device())?;
            let mut inputs = self.inputs.index_select(&idx, 0)?;
            let mut labels = self.labels.index_select(&idx, 0)?;
            if let Some(longest) = longest {
                let axis = inputs.rank() - 1;
                if longest < inputs.dim(axis)? {
                    inputs = inputs.narrow(axis, 0, longest)?.contiguous()?;
                    if labels.rank() > 1 {
                        labels = labels.narrow(axis, 0, longest)?.contiguous()?;
                    }
                }
            }
            Ok(Batch::new(inputs, labels))
        }))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// With lengths, each batch is the same examples in the same order as without, cut to its
    /// longest member; per-token labels are cut with them.
    #[test]
    fn batches_are_cut_to_their_longest_member() {
        let lengths = [2usize, 5, 1, 3, 4, 2];
        let (n, width) = (lengths.len(), 6);
        let ids: Vec<u32> = (0..n * width)
            .map(|k| {
                let (i, t) = (k / width, k % width);
                if t < lengths[i] {
                    (10 * i + t + 1) as u32
                } else {
                    0
                }
            })
            .collect();
        let inputs = Tensor::from_vec(ids, (n, width), &Device::Cpu).unwrap();
        let per_token = InMemoryBatches::new(inputs.clone(), inputs.clone()).unwrap();
        let padded = per_token.clone();
        let cut = per_token.with_lengths(lengths.to_vec()).unwrap();
        for seed in [None, Some(7)] {
            let whole: Vec<Batch> = padded.batches(4, seed).map(Result::unwrap).collect();
            let trimmed: Vec<Batch> = cut.batches(4, seed).map(Result::unwrap).collect();
            assert_eq!(whole.len(), trimmed.len());
            for (w, t) in whole.iter().zip(&trimmed) {
                let rows = w.inputs.to_vec2::<u32>().unwrap();
                let longest = rows
                    .iter()
                    .map(|r| r.iter().filter(|&&v| v != 0).count())
                    .max()
                    .unwrap();
                assert_eq!(t.inputs.dims(), &[rows.len(), longest]);
                let kept: Vec<Vec<u32>> = rows.iter().map(|r| r[..longest].to_vec()).collect();
                assert_eq!(t.inputs.to_vec2::<u32>().unwrap(), kept);
                assert_eq!(t.labels.to_vec2::<u32>().unwrap(), kept);
            }
        }
        assert!(cut.clone().with_length_buckets().is_ok());
        assert!(
            padded.with_length_buckets().is_err(),
            "buckets need lengths"
        );
        assert!(cut.clone().with_lengths(vec![7; n]).is_err());
        assert!(cut.with_lengths(vec![1; n - 1]).is_err());
    }

    /// Bucketed epochs see every example once, in batches of similar length (narrower on average
    /// than the shuffled order's), the same for the same seed; unshuffled passes keep file order.
    #[test]
    fn length_buckets_batch_similar_lengths_once_per_epoch() {
        let n = 200;
        let lengths: Vec<usize> = (0..n).map(|i| 1 + (i * 37) % 64).collect();
        let inputs = Tensor::zeros((n, 64), DType::U32, &Device::Cpu).unwrap();
        let labels = Tensor::zeros(n, DType::U32, &Device::Cpu).unwrap();
        let plain = InMemoryBatches::new(inputs, labels)
            .unwrap()
            .with_lengths(lengths.clone())
            .unwrap();
        let bucketed = plain.clone().with_length_buckets().unwrap();
        let mean_width = |batches: &[Vec<u32>]| {
            batches
                .iter()
                .map(|b| b.iter().map(|&i| lengths[i as usize]).max().unwrap())
                .sum::<usize>() as f64
                / batches.len() as f64
        };
        let epoch = bucketed.batch_indices(8, Some(3));
        let mut seen: Vec<u32> = epoch.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n as u32).collect::<Vec<_>>());
        assert_eq!(epoch, bucketed.batch_indices(8, Some(3)));
        assert_ne!(epoch, bucketed.batch_indices(8, Some(4)));
        let shuffled = mean_width(&plain.batch_indices(8, Some(3)));
        assert!(
            mean_width(&epoch) < 0.7 * shuffled,
            "{} vs {shuffled}",
            mean_width(&epoch)
        );
        assert_eq!(
            bucketed.batch_indices(8, None),
            plain.batch_indices(8, None)
        );
    }
}
