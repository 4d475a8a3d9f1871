//! Frozen-prefix caching: a method placed only in the top blocks (LoRA or DoRA with
//! `layers_to_transform`, the bottleneck adapter with `layers`) leaves the blocks below exactly pretrained, so the token stream entering
//! its first adapted block is the same every epoch, and for every run of the task whose method
//! starts at that block or above. It is computed once per task, in evaluation mode, kept in
//! memory, and the runs train from it: each step runs only the adapted blocks.
//!
//! Used under the conditions of the frozen-feature cache ([`crate::features`]): no drop-path or
//! dropout (training-mode blocks would differ from the cached evaluation-mode ones), no randomly
//! augmented inputs, one training phase, sequence-level heads. The cached streams are large
//! (tokens x hidden per example), so they are kept only within a memory budget
//! ([`prefix_cache_budget`]); the evaluation split, read once per run, is cached only when it fits
//! beside the training splits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::Tensor;
use peftbench_core::{ForwardCtx, NamedVars};
use peftbench_methods::PeftModel;
use peftbench_train::{BatchSource, InMemoryBatches, TrainModel};

use crate::run::PreparedTask;

/// The environment variable that sets [`prefix_cache_budget`], in MiB (0 turns caching off).
pub const BUDGET_VARIABLE: &str = "PEFTBENCH_PREFIX_CACHE_MIB";

/// Bytes of cached streams the process may hold, over all tasks and folds:
/// `$PEFTBENCH_PREFIX_CACHE_MIB` MiB, default 4096. ViT-B/16 at 224 px takes 0.6 MB per
/// example, so VTAB-1k's 1,000 training images take 0.6 GB.
pub fn prefix_cache_budget() -> anyhow::Result<u64> {
    budget_from(std::env::var(BUDGET_VARIABLE).ok().as_deref())
}

/// The budget in bytes from the variable's value (`None`: unset).
fn budget_from(value: Option<&str>) -> anyhow::Result<u64> {
    let Some(text) = value else {
        return Ok(4096 << 20);
    };
    text.trim()
        .parse::<u64>()
        .ok()
        .and_then(|mib| mib.checked_mul(1 << 20))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{BUDGET_VARIABLE}={text:?}: expected a whole number of MiB (0 turns the frozen-prefix cache off)"
            )
        })
}

/// A task's splits as the token streams `[N, tokens, hidden]` entering block `blocks`, with their
/// labels, in file order.
pub struct FrozenPrefix {
    /// How many pretrained blocks the streams have been through.
    pub blocks: usize,
    pub train: InMemoryBatches,
    pub val: Option<InMemoryBatches>,
    /// `None` when the evaluation split did not fit the budget beside the others.
    pub eval: Option<InMemoryBatches>,
    /// Time spent computing them (charged to the first run that needed them).
    pub seconds: f64,
    bytes: u64,
    /// The count of held bytes these are part of, until dropped.
    held: &'static AtomicU64,
}

impl Drop for FrozenPrefix {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Bytes of streams held by every [`PrefixCache`] of the process (a sweep keeps the prepared
/// splits of all folds of the current task).
static HELD: AtomicU64 = AtomicU64::new(0);

/// What [`PrefixCache::get_or_compute`] found.
pub struct CachedPrefix {
    pub prefix: Arc<FrozenPrefix>,
    /// Whether this call computed it.
    pub computed: bool,
}

/// The frozen prefixes of one task, by depth, shared by all of its runs.
pub struct PrefixCache {
    cached: Mutex<BTreeMap<usize, Arc<FrozenPrefix>>>,
    held: &'static AtomicU64,
}

impl Default for PrefixCache {
    fn default() -> Self {
        Self {
            cached: Mutex::default(),
            held: &HELD,
        }
    }
}

impl PrefixCache {
    /// Streams for a method that leaves the first `untouched` blocks pretrained: the deepest
    /// cached prefix of at most `untouched` blocks (the method's hooks change nothing in the
    /// blocks between), else one computed at `untouched` blocks with `model`'s backbone, which
    /// replaces the task's others. `None` when the backbone cannot resume from a stream or the
    /// training splits do not fit in `budget` bytes beside the streams the process holds.
    pub fn get_or_compute(
        &self,
        task: &PreparedTask,
        model: &PeftModel,
        untouched: usize,
        batch_size: usize,
        budget: u64,
    ) -> anyhow::Result<Option<CachedPrefix>> {
        let mut cached = self
            .cached
            .lock()
            .expect("no run panicked holding the cache");
        if let Some((_, prefix)) = cached.range(1..=untouched).next_back() {
            return Ok(Some(CachedPrefix {
                prefix: prefix.clone(),
                computed: false,
            }));
        }
        cached.clear();
        let start = Instant::now();
        let available = budget.saturating_sub(self.held.load(Ordering::Relaxed));
        let mut left = available;
        let Some(train) = streams_of(task.train.as_ref(), model, untouched, batch_size, &mut left)?
        else {
            return Ok(None);
        };
        let val = match task.val.as_deref() {
            Some(v) => match streams_of(v, model, untouched, batch_size, &mut left)? {
                Some(streams) => Some(streams),
                None => return Ok(None),
            },
            None => None,
        };
        let eval = streams_of(task.eval.as_ref(), model, untouched, batch_size, &mut left)?;
        let bytes = available - left;
        self.held.fetch_add(bytes, Ordering::Relaxed);
        let prefix = Arc::new(FrozenPrefix {
            blocks: untouched,
            train,
            val,
            eval,
            seconds: start.elapsed().as_secs_f64(),
            bytes,
            held: self.held,
        });
        cached.insert(untouched, prefix.clone());
        Ok(Some(CachedPrefix {
            prefix,
            computed: true,
        }))
    }
}

/// The streams of one split after `blocks` pretrained blocks, or `None` when the backbone cannot
/// resume from them or they would exceed `budget` bytes (which they are charged against).
fn streams_of(
    source: &dyn BatchSource,
    model: &PeftModel,
    blocks: usize,
    batch_size: usize,
    budget: &mut u64,
) -> anyhow::Result<Option<InMemoryBatches>> {
    let ctx = ForwardCtx::eval();
    let n = source.num_examples() as u64;
    let (mut streams, mut labels) = (Vec::new(), Vec::new());
    for batch in source.batches(batch_size, None) {
        let batch = batch?;
        let Some(stream) = model
            .backbone()
            .forward_frozen_prefix(&batch.inputs, blocks, &ctx)?
        else {
            return Ok(None);
        };
        if streams.is_empty() {
            // Every example's stream has the same size: decide before computing the rest.
            let per_example = (stream.elem_count() * stream.dtype().size_in_bytes()) as u64
                / stream.dim(0)?.max(1) as u64;
            if per_example * n > *budget {
                return Ok(None);
            }
            *budget -= per_example * n;
        }
        streams.push(stream.detach());
        labels.push(batch.labels);
    }
    anyhow::ensure!(!streams.is_empty(), "no examples to compute streams for");
    Ok(Some(InMemoryBatches::new(
        Tensor::cat(&streams, 0)?.contiguous()?,
        Tensor::cat(&labels, 0)?.contiguous()?,
    )?))
}

/// Trains and evaluates a model from cached streams (its inputs are streams entering block
/// `blocks`): the method's blocks, the final norm, the pooling and the head.
pub struct ResumeFromPrefix<'a> {
    pub model: &'a PeftModel,
    pub blocks: usize,
}

impl TrainModel for ResumeFromPrefix<'_> {
    fn trainable(&self) -> &NamedVars {
        self.model.trainable()
    }

    fn logits(&self, stream: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let features = self.model.backbone().forward_features_from(
            stream,
            self.blocks,
            self.model.adaptation(),
            ctx,
        )?;
        self.model.head().forward(&features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use peftbench_backbones::{Vit, VitConfig};
    use peftbench_core::SeededInit;
    use peftbench_train::{evaluate, train, Selection, TrainConfig, TrainOutcome};

    use crate::test_support::{image_task, max_abs_diff, trainable_values};

    /// LoRA on every projection of the blocks `layers` of a 3-block ViT.
    fn lora_top(layers: &[usize]) -> anyhow::Result<PeftModel> {
        let init = SeededInit::new(3, &Device::Cpu);
        let vit = Vit::random(VitConfig::new(16, 3, 2, 32, 16, 8), &init.fork("vit"))?;
        let params = serde_json::json!({
            "r": 2, "target_modules": "all-linear", "layers_to_transform": layers
        });
        PeftModel::new("lora", &params, Box::new(vit), 3, &init)
    }

    /// An image task whose prefix cache counts its bytes on its own: tests run side by side.
    fn task(examples: usize) -> anyhow::Result<PreparedTask> {
        let mut task = image_task(examples)?;
        task.prefixes = PrefixCache {
            cached: Mutex::default(),
            held: Box::leak(Box::new(AtomicU64::new(0))),
        };
        Ok(task)
    }

    /// Training the top blocks from the cached stream is training the whole model: same batches,
    /// same updates, same weights and evaluation (up to float rounding of the batched forward).
    #[test]
    fn training_from_the_cached_prefix_trains_like_the_whole_model() -> anyhow::Result<()> {
        let task = task(24)?;
        let mut cfg = TrainConfig::vtab_recipe(7);
        cfg.epochs = 3;
        cfg.batch_size = 8;
        cfg.drop_path = 0.0;
        cfg.selection = Selection::Final;

        let whole = lora_top(&[2])?;
        assert_eq!(whole.adaptation().untouched_blocks(), 2);
        let outcome = train(&whole, task.train.as_ref(), None, &cfg, &mut |_| {})?;
        assert!(matches!(outcome, TrainOutcome::Completed(_)));

        let cached = lora_top(&[2])?;
        let found = task
            .prefixes
            .get_or_compute(&task, &cached, 2, 64, 1 << 30)?
            .expect("fits the budget");
        assert!(found.computed);
        let prefix = found.prefix;
        assert_eq!(prefix.blocks, 2);
        // CLS + 4 patches, 16 wide.
        assert_eq!(prefix.train.inputs().dims(), &[24, 5, 16]);
        let resumed = ResumeFromPrefix {
            model: &cached,
            blocks: prefix.blocks,
        };
        train(&resumed, &prefix.train, None, &cfg, &mut |_| {})?;

        let (a, b) = (trainable_values(&whole)?, trainable_values(&cached)?);
        let diff = max_abs_diff(&a, &b);
        assert!(diff < 1e-5, "weights differ by {diff}");
        // Training moved the adapters (B starts at zero).
        let fresh = trainable_values(&lora_top(&[2])?)?;
        assert!(a.iter().zip(&fresh).any(|(x, y)| x != y));

        let by_whole = evaluate(&whole, task.eval.as_ref(), 16)?;
        let eval_streams = prefix.eval.as_ref().expect("the evaluation split fits too");
        let by_prefix = evaluate(&resumed, eval_streams, 16)?;
        assert_eq!(by_whole.predictions, by_prefix.predictions);
        Ok(())
    }

    #[test]
    fn the_budget_is_read_in_mib_and_a_malformed_one_is_named() {
        assert_eq!(budget_from(None).unwrap(), 4096 << 20);
        assert_eq!(budget_from(Some(" 16 ")).unwrap(), 16 << 20);
        assert_eq!(budget_from(Some("0")).unwrap(), 0);
        for bad in ["2GB", "-1", "", "99999999999999999"] {
            let err = budget_from(Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains("PEFTBENCH_PREFIX_CACHE_MIB") && err.contains("whole number of MiB"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn prefixes_are_shared_by_depth_and_kept_within_the_budget() -> anyhow::Result<()> {
        let task = task(10)?;
        let model = lora_top(&[2])?;
        // Each split: 10 examples x 5 tokens x 16 floats = 3,200 bytes.
        let split = 10 * 5 * 16 * 4;
        let get = |untouched, budget| {
            task.prefixes
                .get_or_compute(&task, &model, untouched, 4, budget)
                .map(|found| found.map(|f| (f.prefix.blocks, f.computed, f.prefix.eval.is_some())))
        };
        // Nothing fits: no cache, the run takes the whole forward pass.
        assert_eq!(get(2, split - 1)?, None);
        // The training split fits, the evaluation split does not.
        assert_eq!(get(2, split + 100)?, Some((2, true, false)));
        // Another run at the same depth reuses it.
        assert_eq!(get(2, split + 100)?, Some((2, false, false)));
        // A method starting lower computes its own, which replaces the first.
        assert_eq!(get(1, 2 * split)?, Some((1, true, true)));
        assert_eq!(task.prefixes.held.load(Ordering::Relaxed), 2 * split);
        // One starting higher resumes from the deepest prefix below its first block.
        assert_eq!(get(2, 2 * split)?, Some((1, false, true)));
        // The bytes are counted against the budget of every cache of the process until dropped.
        let held = task.prefixes.held;
        drop(task);
        assert_eq!(held.load(Ordering::Relaxed), 0);
        Ok(())
    }
}
