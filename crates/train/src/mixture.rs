//! Several tasks' training examples as one [`BatchSource`] whose batches mix tasks and carry each
//! example's task id ([`Batch::task_ids`]), so a model can condition on it.
//!
//! Examples are held in memory, all tasks stacked (sequences right-padded to the widest task with
//! a pad value). How an epoch draws them ([`Mixing`]):
//!
//! * [`Mixing::Proportional`]: every example of every task once, in one seeded permutation of all
//!   of them ([`peftbench_core::shuffle::permutation`]), so a task's share of an epoch is its
//!   share of the examples;
//! * [`Mixing::Weighted`]: as many draws as there are examples; each draw picks task `t` with
//!   probability `p_t`, then that task's next example in its own seeded permutation (a new
//!   permutation each time a task runs out), so small tasks repeat and large ones are subsampled.
//!
//! Unshuffled passes (evaluation) go through the tasks in order, each in file order.

use candle_core::{DType, Device, Tensor};
use peftbench_core::shuffle::permutation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trainer::{Batch, BatchSource};

/// How an epoch draws examples from the tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum Mixing {
    /// Every example once per epoch.
    Proportional,
    /// Each draw picks a task with these probabilities (one per task, summing to 1).
    Weighted(Vec<f64>),
}

impl Mixing {
    /// Temperature sampling (T5, MHR): `p_t` proportional to `n_t^(1/temperature)`; temperature 1
    /// is proportional, and a large one approaches uniform.
    pub fn temperature(counts: &[usize], temperature: f64) -> Self {
        let weights: Vec<f64> = counts
            .iter()
            .map(|&n| (n as f64).powf(1.0 / temperature))
            .collect();
        let total: f64 = weights.iter().sum();
        Mixing::Weighted(weights.iter().map(|w| w / total).collect())
    }

    /// Every task equally likely at every draw.
    pub fn uniform(tasks: usize) -> Self {
        Mixing::Weighted(vec![1.0 / tasks as f64; tasks])
    }
}

/// Token ids `[N, T]`, or sentence pairs `[N, 2, T]` (ids, then segment ids), right-padded to
/// `width` tokens: ids with `pad`, segment ids with 0.
pub fn pad_tokens(x: &Tensor, width: usize, pad: u32) -> candle_core::Result<Tensor> {
    let axis = x.rank() - 1;
    let missing = width.saturating_sub(x.dim(axis)?);
    if missing == 0 {
        return Ok(x.clone());
    }
    let n = x.dim(0)?;
    let ids = (Tensor::ones((n, missing), DType::U32, x.device())? * f64::from(pad))?
        .to_dtype(x.dtype())?;
    let filler = match x.rank() {
        2 => ids,
        3 => {
            let segments = Tensor::zeros((n, x.dim(1)? - 1, missing), x.dtype(), x.device())?;
            Tensor::cat(&[&ids.unsqueeze(1)?, &segments], 1)?
        }
        rank => candle_core::bail!("token inputs have rank 2 or 3, not {rank}"),
    };
    Tensor::cat(&[x, &filler], axis)
}

/// The token ids of token inputs `[N, T]` or of sentence pairs `[N, 2, T]` (their first row).
fn token_ids(x: &Tensor) -> candle_core::Result<Tensor> {
    match x.rank() {
        3 => x.narrow(1, 0, 1)?.squeeze(1),
        _ => x.flatten_from(1),
    }
}

/// Purpose mixed into the shuffle seed for weighted draws ("MIXT").
const MIXTURE_DRAWS: u64 = 0x4d49_5854;

/// The examples of several tasks, batched with their task ids.
pub struct TaskMixture {
    /// All tasks' inputs stacked: task `t`'s examples are rows `offsets[t]..offsets[t] + counts[t]`.
    inputs: Tensor,
    labels: Tensor,
    /// Each stacked row's task.
    task_of: Vec<u32>,
    offsets: Vec<usize>,
    counts: Vec<usize>,
    /// Sequences: each row's own length (batches are cut to their longest member).
    lengths: Option<Vec<usize>>,
    mixing: Mixing,
}

impl TaskMixture {
    /// Task `t`'s examples are `tasks[t]` (inputs `[n_t, ...]` and labels `[n_t]`). Inputs whose
    /// last axis differs between tasks (token ids padded per task) are right-padded with `pad`
    /// to the widest; then each row's length is its count of non-`pad` positions.
    pub fn new(
        tasks: Vec<(Tensor, Tensor)>,
        pad: Option<u32>,
        mixing: Mixing,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!tasks.is_empty(), "a task mixture needs at least one task");
        if let Mixing::Weighted(p) = &mixing {
            anyhow::ensure!(
                p.len() == tasks.len() && p.iter().all(|&x| x >= 0.0 && x.is_finite()),
                "mixing weights {p:?} do not fit {} tasks",
                tasks.len()
            );
        }
        let counts: Vec<usize> = tasks
            .iter()
            .map(|(inputs, _)| inputs.dim(0))
            .collect::<candle_core::Result<_>>()?;
        anyhow::ensure!(
            counts.iter().all(|&n| n > 0),
            "every task of a mixture needs examples (counts {counts:?})"
        );
        let widest = tasks
            .iter()
            .map(|(inputs, _)| inputs.dims().last().copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let mut inputs = Vec::with_capacity(tasks.len());
        let mut labels = Vec::with_capacity(tasks.len());
        for (x, y) in tasks {
            let x = match pad {
                Some(pad) => pad_tokens(&x, widest, pad)?,
                None => x,
            };
            inputs.push(x);
            labels.push(y.to_dtype(DType::U32)?);
        }
        let inputs = Tensor::cat(&inputs, 0)?;
        let labels = Tensor::cat(&labels, 0)?;
        let lengths = match pad {
            Some(pad) => Some(
                token_ids(&inputs)?
                    .to_dtype(DType::U32)?
                    .to_vec2::<u32>()?
                    .iter()
                    .map(|row| row.iter().rposition(|&v| v != pad).map_or(1, |p| p + 1))
                    .collect(),
            ),
            None => None,
        };
        let mut offsets = Vec::with_capacity(counts.len());
        let mut task_of = Vec::with_capacity(counts.iter().sum());
        let mut at = 0;
        for (t, &n) in counts.iter().enumerate() {
            offsets.push(at);
            task_of.extend(std::iter::repeat_n(t as u32, n));
            at += n;
        }
        Ok(Self {
            inputs,
            labels,
            task_of,
            offsets,
            counts,
            lengths,
            mixing,
        })
    }

    /// The first `shots` examples of each class of each task, in order (a few-shot training
    /// set); same mixing.
    pub fn first_per_class(&self, shots: usize) -> anyhow::Result<Self> {
        let labels = self.labels.to_vec1::<u32>()?;
        let mut taken: std::collections::BTreeMap<(u32, u32), usize> = Default::default();
        let mut tasks = Vec::with_capacity(self.counts.len());
        for (t, (&offset, &count)) in self.offsets.iter().zip(&self.counts).enumerate() {
            let rows: Vec<u32> = (offset..offset + count)
                .filter(|&row| {
                    let seen = taken.entry((t as u32, labels[row])).or_default();
                    *seen += 1;
                    *seen <= shots
                })
                .map(|row| row as u32)
                .collect();
            let n = rows.len();
            let index = Tensor::from_vec(rows, n, self.device())?;
            tasks.push((
                self.inputs.index_select(&index, 0)?,
                self.labels.index_select(&index, 0)?,
            ));
        }
        let mut subset = TaskMixture::new(tasks, None, self.mixing.clone())?;
        if let Some(lengths) = &self.lengths {
            let mut kept = Vec::new();
            let mut seen: std::collections::BTreeMap<(u32, u32), usize> = Default::default();
            for (row, &length) in lengths.iter().enumerate() {
                let entry = seen.entry((self.task_of[row], labels[row])).or_default();
                *entry += 1;
                if *entry <= shots {
                    kept.push(length);
                }
            }
            subset.lengths = Some(kept);
        }
        Ok(subset)
    }

    /// Examples per task.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// The stacked rows of one epoch, in order.
    fn epoch_order(&self, shuffle_seed: Option<u64>) -> Vec<u32> {
        epoch_order(&self.counts, &self.mixing, shuffle_seed)
    }

    fn device(&self) -> &Device {
        self.inputs.device()
    }
}

/// The rows of one epoch over tasks of `counts` examples stacked in task order (task `t`'s rows
/// follow those of the tasks before it), drawn by `mixing` with `shuffle_seed` (see the module
/// docs); in stacked order when `None`. What [`TaskMixture`] batches, for sources that hold their
/// examples otherwise.
pub fn epoch_order(counts: &[usize], mixing: &Mixing, shuffle_seed: Option<u64>) -> Vec<u32> {
    let total: usize = counts.iter().sum();
    let Some(seed) = shuffle_seed else {
        return (0..total as u32).collect();
    };
    let offsets: Vec<usize> = counts
        .iter()
        .scan(0, |start, &n| {
            let offset = *start;
            *start += n;
            Some(offset)
        })
        .collect();
    match mixing {
        Mixing::Proportional => permutation(total, seed)
            .into_iter()
            .map(|i| i as u32)
            .collect(),
        Mixing::Weighted(p) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ MIXTURE_DRAWS);
            let mut cycles: Vec<(Vec<usize>, usize)> = vec![(Vec::new(), 0); counts.len()];
            let mut refills = vec![0u64; counts.len()];
            let mass: f64 = p.iter().sum();
            (0..total)
                .map(|_| {
                    let mut u = rng.random::<f64>() * mass;
                    let mut task = p.len() - 1;
                    for (t, &w) in p.iter().enumerate() {
                        if u < w {
                            task = t;
                            break;
                        }
                        u -= w;
                    }
                    let (order, next) = &mut cycles[task];
                    if *next == order.len() {
                        let cycle_seed = crate::derive_seed(&[seed, task as u64, refills[task]]);
                        *order = permutation(counts[task], cycle_seed);
                        *next = 0;
                        refills[task] += 1;
                    }
                    let row = offsets[task] + order[*next];
                    *next += 1;
                    row as u32
                })
                .collect()
        }
    }
}

impl BatchSource for TaskMixture {
    fn num_examples(&self) -> usize {
        self.counts.iter().sum()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let order = self.epoch_order(shuffle_seed);
        let chunks: Vec<Vec<u32>> = order
            .chunks(batch_size.max(1))
            .map(<[u32]>::to_vec)
            .collect();
        Box::new(chunks.into_iter().map(move |rows| {
            let n = rows.len();
            let tasks: Vec<u32> = rows.iter().map(|&r| self.task_of[r as usize]).collect();
            let longest = self
                .lengths
                .as_ref()
                .and_then(|lengths| rows.iter().map(|&r| lengths[r as usize]).max());
            let index = Tensor::from_vec(rows, n, self.device())?;
            let mut inputs = self.inputs.index_select(&index, 0)?;
            if let Some(longest) = longest {
                let axis = inputs.rank() - 1;
                if longest < inputs.dim(axis)? {
                    inputs = inputs.narrow(axis, 0, longest)?.contiguous()?;
                }
            }
            let mut batch = Batch::new(inputs, self.labels.index_select(&index, 0)?);
            batch.task_ids = Some(Tensor::from_vec(tasks, n, self.device())?);
            Ok(batch)
        }))
    }
}

/// One task's split seen as a task of a multi-task model: its batches carry task id `task`.
pub struct WithTaskId<'a> {
    pub source: &'a dyn BatchSource,
    pub task: u32,
}

impl BatchSource for WithTaskId<'_> {
    fn num_examples(&self) -> usize {
        self.source.num_examples()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let task = self.task;
        Box::new(
            self.source
                .batches(batch_size, shuffle_seed)
                .map(move |batch| {
                    let mut batch = batch?;
                    let n = batch.len();
                    batch.task_ids =
                        Some(Tensor::from_vec(vec![task; n], n, batch.labels.device())?);
                    Ok(batch)
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tasks whose inputs encode (task, example): rows are `[task, index]`.
    fn tasks(counts: &[usize]) -> Vec<(Tensor, Tensor)> {
        counts
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                let rows: Vec<f32> = (0..n).flat_map(|i| [t as f32, i as f32]).collect();
                let inputs = Tensor::from_vec(rows, (n, 2), &Device::Cpu).unwrap();
                let labels = Tensor::from_vec(vec![t as u32; n], n, &Device::Cpu).unwrap();
                (inputs, labels)
            })
            .collect()
    }

    fn epoch(mixture: &TaskMixture, seed: Option<u64>) -> Vec<(u32, u32, usize)> {
        let mut out = Vec::new();
        for batch in mixture.batches(7, seed) {
            let batch = batch.unwrap();
            let ids = batch.task_ids.unwrap().to_vec1::<u32>().unwrap();
            let rows = batch.inputs.to_vec2::<f32>().unwrap();
            for (id, row) in ids.iter().zip(rows) {
                out.push((*id, row[0] as u32, row[1] as usize));
            }
        }
        out
    }

    /// Every example's task id is the task its input came from, through shuffling and batching;
    /// a proportional epoch sees every example once, mixed across tasks within batches.
    #[test]
    fn task_ids_follow_their_examples_through_shuffled_batches() {
        let mixture = TaskMixture::new(tasks(&[20, 9, 5]), None, Mixing::Proportional).unwrap();
        let seen = epoch(&mixture, Some(11));
        assert!(seen.iter().all(|(id, task, _)| id == task));
        let mut examples: Vec<(u32, usize)> = seen.iter().map(|&(_, t, i)| (t, i)).collect();
        examples.sort_unstable();
        let all: Vec<(u32, usize)> = [20usize, 9, 5]
            .iter()
            .enumerate()
            .flat_map(|(t, &n)| (0..n).map(move |i| (t as u32, i)))
            .collect();
        assert_eq!(examples, all);
        let first_batch: std::collections::BTreeSet<u32> =
            seen[..7].iter().map(|&(id, _, _)| id).collect();
        assert!(first_batch.len() > 1, "batches mix tasks");
        assert_eq!(seen, epoch(&mixture, Some(11)), "same seed, same epoch");
        assert_ne!(seen, epoch(&mixture, Some(12)));
        // Unshuffled: tasks in order, each in file order.
        assert_eq!(
            epoch(&mixture, None),
            all.iter().map(|&(t, i)| (t, t, i)).collect::<Vec<_>>()
        );
    }

    /// Temperature draws follow `n^(1/T)`: with T = 2, a task with 4x the examples is drawn about
    /// twice as often; labels and inputs stay paired.
    #[test]
    fn temperature_sampling_draws_tasks_at_the_given_rates() {
        let counts = [400usize, 100];
        let mixing = Mixing::temperature(&counts, 2.0);
        assert_eq!(mixing, Mixing::Weighted(vec![2.0 / 3.0, 1.0 / 3.0]));
        let mixture = TaskMixture::new(tasks(&counts), None, mixing).unwrap();
        let seen = epoch(&mixture, Some(3));
        assert_eq!(seen.len(), 500);
        let small = seen.iter().filter(|(id, _, _)| *id == 1).count();
        assert!(
            (140..200).contains(&small),
            "{small} of 500 draws from the small task"
        );
        assert!(seen.iter().all(|(id, task, _)| id == task));
        // The small task repeats its examples only after a full pass over them.
        let small_order: Vec<usize> = seen
            .iter()
            .filter(|(id, _, _)| *id == 1)
            .map(|&(_, _, i)| i)
            .collect();
        let mut first_pass = small_order[..100].to_vec();
        first_pass.sort_unstable();
        assert_eq!(first_pass, (0..100).collect::<Vec<_>>());
        assert_eq!(Mixing::uniform(4), Mixing::Weighted(vec![0.25; 4]));
    }

    /// Token ids of tasks padded to different widths are padded to the widest; each batch is cut
    /// to its longest member.
    #[test]
    fn sequences_pad_to_the_widest_task_and_cut_per_batch() {
        let a = Tensor::new(&[[5u32, 6, 0], [7, 0, 0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[8u32, 9, 10, 11, 12]], &Device::Cpu).unwrap();
        let labels = |n: usize| Tensor::zeros(n, DType::U32, &Device::Cpu).unwrap();
        let mixture = TaskMixture::new(
            vec![(a, labels(2)), (b, labels(1))],
            Some(0),
            Mixing::Proportional,
        )
        .unwrap();
        let batches: Vec<Batch> = mixture.batches(2, None).map(Result::unwrap).collect();
        assert_eq!(
            batches[0].inputs.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6], vec![7, 0]]
        );
        assert_eq!(
            batches[1].inputs.to_vec2::<u32>().unwrap(),
            vec![vec![8, 9, 10, 11, 12]]
        );
        assert_eq!(
            batches[1]
                .task_ids
                .as_ref()
                .unwrap()
                .to_vec1::<u32>()
                .unwrap(),
            vec![1]
        );
    }

    /// A few-shot subset keeps the first `shots` examples of each class of each task, in order.
    #[test]
    fn first_per_class_keeps_the_first_shots_of_every_class() {
        let inputs = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let labels = Tensor::new(&[0u32, 1, 0, 0, 1, 1, 2, 0], &Device::Cpu).unwrap();
        let mixture = TaskMixture::new(vec![(inputs, labels)], None, Mixing::Proportional).unwrap();
        let few = mixture.first_per_class(2).unwrap();
        assert_eq!(few.counts(), &[5]);
        let batch = few.batches(16, None).next().unwrap().unwrap();
        assert_eq!(
            batch
                .inputs
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![0.0, 1.0, 2.0, 4.0, 6.0]
        );
    }

    /// Sentence pairs `[N, 2, T]` pad their ids with the pad id and their segment ids with 0,
    /// and a batch is cut to its longest ids row.
    #[test]
    fn sentence_pairs_pad_ids_and_segments_apart() {
        let a = Tensor::new(&[[[5u32, 6], [0, 1]]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[[8u32, 9, 10, 1], [0, 0, 1, 0]]], &Device::Cpu).unwrap();
        let labels = || Tensor::zeros(1, DType::U32, &Device::Cpu).unwrap();
        let mixture = TaskMixture::new(
            vec![(a, labels()), (b, labels())],
            Some(1),
            Mixing::Proportional,
        )
        .unwrap();
        let first = mixture.batches(1, None).next().unwrap().unwrap();
        assert_eq!(
            first.inputs.to_vec3::<u32>().unwrap(),
            vec![vec![vec![5, 6], vec![0, 1]]]
        );
        let both = mixture.batches(2, None).next().unwrap().unwrap();
        assert_eq!(
            both.inputs.to_vec3::<u32>().unwrap(),
            vec![
                vec![vec![5, 6, 1], vec![0, 1, 0]],
                vec![vec![8, 9, 10], vec![0, 0, 1]]
            ]
        );
    }
}
