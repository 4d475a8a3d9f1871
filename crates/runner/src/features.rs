//! Frozen-feature caching: when a method leaves the backbone exactly as pretrained (the linear
//! probe), every epoch of every such run of a task would recompute the same features. They are
//! computed once per task, in evaluation mode, and the head trains on them in memory, so a 100-epoch
//! linear probe costs one frozen forward pass over the data plus head training.
//!
//! Only used when the backbone's training-mode forward is deterministic (no drop-path, no dropout):
//! otherwise training-mode features differ from evaluation-mode ones and nothing is cached.

use std::sync::OnceLock;
use std::time::Instant;

use candle_core::Tensor;
use peftbench_core::{ForwardCtx, NamedVars};
use peftbench_methods::PeftModel;
use peftbench_train::{BatchSource, InMemoryBatches, TrainModel};

use crate::run::PreparedTask;

/// A task's splits as backbone features `[N, hidden]` with their labels, in file order.
pub struct FrozenFeatures {
    pub train: InMemoryBatches,
    pub val: Option<InMemoryBatches>,
    pub eval: InMemoryBatches,
    /// Time spent computing them (charged to the first run that needed them).
    pub seconds: f64,
}

/// Features of one task, computed on first use and shared by all of its runs.
#[derive(Default)]
pub struct FeatureCache(OnceLock<FrozenFeatures>);

impl FeatureCache {
    /// The cached features, computing them with `model`'s (unchanged) backbone if needed.
    /// Returns them and whether this call computed them.
    pub fn get_or_compute(
        &self,
        task: &PreparedTask,
        model: &PeftModel,
        batch_size: usize,
    ) -> anyhow::Result<(&FrozenFeatures, bool)> {
        if let Some(f) = self.0.get() {
            return Ok((f, false));
        }
        let start = Instant::now();
        let train = features_of(task.train.as_ref(), model, batch_size)?;
        let val = task
            .val
            .as_deref()
            .map(|v| features_of(v, model, batch_size))
            .transpose()?;
        let eval = features_of(task.eval.as_ref(), model, batch_size)?;
        let computed = FrozenFeatures {
            train,
            val,
            eval,
            seconds: start.elapsed().as_secs_f64(),
        };
        // A sweep runs one run at a time, so nobody else filled the cell meanwhile.
        let _ = self.0.set(computed);
        Ok((self.0.get().expect("set above"), true))
    }
}

fn features_of(
    source: &dyn BatchSource,
    model: &PeftModel,
    batch_size: usize,
) -> anyhow::Result<InMemoryBatches> {
    let ctx = ForwardCtx::eval();
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for batch in source.batches(batch_size, None) {
        let batch = batch?;
        features.push(model.features(&batch.inputs, &ctx)?.detach());
        labels.push(batch.labels);
    }
    anyhow::ensure!(!features.is_empty(), "no examples to compute features for");
    // `cat` of a single batch returns it as is: the pooled CLS rows are a strided view, and
    // `InMemoryBatches` selects rows with `index_select`, which needs contiguous storage.
    InMemoryBatches::new(
        Tensor::cat(&features, 0)?.contiguous()?,
        Tensor::cat(&labels, 0)?.contiguous()?,
    )
}

/// Trains and evaluates a model's head on cached features (its inputs are features).
pub struct HeadOnFeatures<'a>(pub &'a PeftModel);

impl TrainModel for HeadOnFeatures<'_> {
    fn trainable(&self) -> &NamedVars {
        self.0.trainable()
    }

    fn logits(&self, features: &Tensor, _ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.0.head().forward(features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use peftbench_backbones::{Vit, VitConfig};
    use peftbench_core::SeededInit;
    use peftbench_train::{train, Selection, TrainConfig, TrainOutcome};

    use crate::test_support::{image_task, max_abs_diff, trainable_values};

    fn probe() -> anyhow::Result<PeftModel> {
        let init = SeededInit::new(3, &Device::Cpu);
        let vit = Vit::random(VitConfig::new(16, 2, 2, 32, 16, 8), &init.fork("vit"))?;
        PeftModel::new("linear", &serde_json::json!({}), Box::new(vit), 3, &init)
    }

    /// Training the head on cached features is training the linear probe: same batches, same
    /// updates, same head (up to float rounding of the batched forward pass).
    #[test]
    fn head_on_cached_features_trains_like_the_whole_probe() -> anyhow::Result<()> {
        let task = image_task(40)?;
        let mut cfg = TrainConfig::vtab_recipe(7);
        cfg.epochs = 3;
        cfg.batch_size = 8;
        cfg.drop_path = 0.0;
        cfg.selection = Selection::Final;

        let whole = probe()?;
        let outcome = train(&whole, task.train.as_ref(), None, &cfg, &mut |_| {})?;
        assert!(matches!(outcome, TrainOutcome::Completed(_)));

        let cached = probe()?;
        // One batch holds every example: the single-batch path (no real `cat`) must work too.
        let (features, computed) = task.features.get_or_compute(&task, &cached, 64)?;
        assert!(computed);
        assert_eq!(features.train.inputs().dims(), &[40, 16]);
        train(
            &HeadOnFeatures(&cached),
            &features.train,
            None,
            &cfg,
            &mut |_| {},
        )?;
        // The second run of the task reuses them.
        assert!(!task.features.get_or_compute(&task, &cached, 64)?.1);

        // The linear probe trains its head alone.
        let (a, b) = (trainable_values(&whole)?, trainable_values(&cached)?);
        let diff = max_abs_diff(&a, &b);
        assert!(diff < 1e-5, "heads differ by {diff}");
        assert!(a.iter().zip(&b).any(|(x, y)| x != &0.0 || y != &0.0));
        Ok(())
    }
}
