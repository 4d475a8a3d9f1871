//! `harness bench train-step`: the time of one optimisation step (forward, backward, AdamW) of a
//! method on a randomly initialised ViT, measured the way the PyTorch reference script
//! (`ci/bench/train_step.py`) measures it, so the two can be printed side by side.
//!
//! Random weights change nothing about speed; they keep the bench free of downloads.

use serde::{Deserialize, Serialize};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

use peftbench_backbones::{Vit, VitConfig};
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_data_vision::synthetic::{encode_jpeg, generate, ShapeTask};
use peftbench_data_vision::{sequential_batches, Prefetcher, Preprocess};
use peftbench_methods::PeftModel;
use peftbench_train::{cross_entropy, AdamW, AdamWConfig, TrainModel};

use crate::frozen_prefix::ResumeFromPrefix;

/// The model sizes the bench knows by name (timm's names, so the reference script builds the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchBackbone {
    /// ViT-Tiny/16 (DeiT-Ti: 192 wide, 12 deep, 3 heads).
    VitTiny,
    /// ViT-Small/16 (384 wide, 12 deep, 6 heads).
    VitSmall,
    /// ViT-Base/16 (768 wide, 12 deep, 12 heads).
    VitBase,
}

impl BenchBackbone {
    pub const ALL: [Self; 3] = [Self::VitTiny, Self::VitSmall, Self::VitBase];

    pub fn name(self) -> &'static str {
        match self {
            Self::VitTiny => "vit-tiny",
            Self::VitSmall => "vit-small",
            Self::VitBase => "vit-base",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn config(self, image_size: usize) -> VitConfig {
        let (hidden, heads) = match self {
            Self::VitTiny => (192, 3),
            Self::VitSmall => (384, 6),
            Self::VitBase => (768, 12),
        };
        let mut cfg = VitConfig::new(hidden, 12, heads, 4 * hidden, image_size, 16);
        cfg.layer_norm_eps = 1e-6;
        cfg
    }
}

/// The methods the bench has settings for ([`bench_method_params`]), in the order `--help` lists them.
pub const BENCH_METHODS: [&str; 8] = [
    "full",
    "linear",
    "bitfit",
    "lora",
    "adapter",
    "adaptformer",
    "vpt-shallow",
    "vpt-deep",
];

/// The methods the bench compares, with the settings the reference script uses for them.
pub fn bench_method_params(method: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match method {
        "full" | "linear" | "bitfit" => json!({}),
        // LoRA r=8 on the three attention input projections (timm's fused `qkv` in the reference).
        "lora" => {
            json!({ "r": 8, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "key", "value"] })
        }
        "adapter" => json!({ "placement": "pfeiffer", "bottleneck": 8, "activation": "relu" }),
        "adaptformer" => json!({ "bottleneck": 8, "scale": 0.1, "dropout": 0.0 }),
        "vpt-deep" | "vpt-shallow" => json!({ "prompts": 10, "dropout": 0.0 }),
        _ => return None,
    })
}

/// Where the bench's batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BenchInput {
    /// One random batch reused every step: the model alone, as the PyTorch reference measures.
    #[default]
    Random,
    /// JPEG images decoded, resized (bicubic, from 8/7 of the side) and normalised by the
    /// prefetching loader on its background thread while the model trains, as in a sweep; the
    /// time the trainer waits for each batch is reported.
    Pipeline,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct TrainStepBench {
    pub backbone: BenchBackbone,
    pub method: String,
    pub batch: usize,
    pub image_size: usize,
    pub num_classes: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    pub input: BenchInput,
    /// LoRA or the adapter in the top blocks only (`layers_to_transform`, `layers`): the stream
    /// entering the first adapted block is computed once, as a sweep's frozen-prefix cache does,
    /// and every step resumes from it.
    pub top_blocks: Option<usize>,
}

/// Timings of one bench, in seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTimings {
    pub backbone: String,
    pub method: String,
    pub batch: usize,
    pub image_size: usize,
    pub trainable_params: usize,
    /// Median over the timed steps of forward + backward + optimizer step.
    pub median_step_s: f64,
    pub median_forward_s: f64,
    pub median_backward_s: f64,
    pub examples_per_s: f64,
    /// Peak resident memory of this process (bytes), when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// [`BenchInput::Pipeline`]: median seconds per step the trainer waited for its batch (not
    /// part of the step times above).
    pub median_data_wait_s: Option<f64>,
    /// [`TrainStepBench::top_blocks`]: the blocks adapted, and the seconds the frozen blocks below
    /// took once for the batch (a sweep pays this once per example, not once per step).
    pub top_blocks: Option<usize>,
    pub frozen_prefix_s: Option<f64>,
}

/// The median of `values` (the mean of the middle two for an even count), `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (n > 0).then(|| {
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    })
}

/// Runs the bench on `device` in f32: `warmup_steps` untimed steps, then `steps` timed ones.
pub fn run_train_step(bench: &TrainStepBench, device: &Device) -> anyhow::Result<StepTimings> {
    let mut params = bench_method_params(&bench.method).ok_or_else(|| {
        anyhow::anyhow!(
            "the bench has no settings for method `{}`; choose one of: {}",
            bench.method,
            BENCH_METHODS.join(", ")
        )
    })?;
    anyhow::ensure!(bench.steps > 0, "--steps must be at least 1");
    let cfg = bench.backbone.config(bench.image_size);
    cfg.validate().map_err(anyhow::Error::msg)?;
    let depth = cfg.num_hidden_layers;
    if let Some(top) = bench.top_blocks {
        // Each method's name for its blocks (PEFT's for LoRA).
        let field = match bench.method.as_str() {
            "lora" => "layers_to_transform",
            "adapter" => "layers",
            other => anyhow::bail!(
                "--top-blocks places LoRA or the adapter in the top blocks; method `{other}` adapts every block"
            ),
        };
        anyhow::ensure!(
            (1..=depth).contains(&top),
            "--top-blocks is {top}; allowed range: 1 to {depth}"
        );
        anyhow::ensure!(
            bench.input == BenchInput::Random,
            "--top-blocks resumes every step from one cached stream: use --input random"
        );
        params[field] = serde_json::json!((depth - top..depth).collect::<Vec<_>>());
    }
    let init = SeededInit::new(0, device);
    let vit = Vit::random(cfg, &init.fork("backbone"))?;
    let model = PeftModel::new(
        &bench.method,
        &params,
        Box::new(vit),
        bench.num_classes,
        &init,
    )?;
    let mut optimizer = AdamW::new(model.trainable(), AdamWConfig::default())?;

    let total_steps = bench.warmup_steps + bench.steps;
    let random_input = Tensor::randn(
        0f32,
        1.0,
        (bench.batch, 3, bench.image_size, bench.image_size),
        device,
    )?;
    let labels: Vec<u32> = (0..bench.batch as u32)
        .map(|i| i % bench.num_classes as u32)
        .collect();
    let random_labels = Tensor::from_vec(labels, bench.batch, device)?;
    let mut loader = match bench.input {
        BenchInput::Random => None,
        BenchInput::Pipeline => {
            let stored_side = bench.image_size * 8 / 7;
            let images = encode_jpeg(generate(
                ShapeTask::Shapes,
                bench.batch * total_steps,
                0,
                stored_side,
            ));
            let order = sequential_batches(images.len(), bench.batch);
            Some(Prefetcher::spawn(
                Arc::new(images),
                order,
                Preprocess::new(bench.image_size),
                3,
            ))
        }
    };

    // The frozen prefix: computed once, like the sweep's cache (which holds one per example).
    let untouched = model.adaptation().untouched_blocks();
    let (prefix, frozen_prefix_s) = if bench.top_blocks.is_some() {
        let start = Instant::now();
        let stream = model
            .backbone()
            .forward_frozen_prefix(&random_input, untouched, &ForwardCtx::eval())?
            .ok_or_else(|| anyhow::anyhow!("the ViT resumes from a stream"))?;
        device.synchronize()?;
        (Some(stream), Some(start.elapsed().as_secs_f64()))
    } else {
        (None, None)
    };
    let resumed = ResumeFromPrefix {
        model: &model,
        blocks: untouched,
    };

    let (mut step_s, mut forward_s, mut backward_s, mut wait_s) = (vec![], vec![], vec![], vec![]);
    for step in 0..total_steps {
        let ctx = ForwardCtx::train(step as u64, 0.0);
        let waiting = Instant::now();
        let (input, labels) = match loader.as_mut() {
            None => (random_input.clone(), random_labels.clone()),
            Some(loader) => {
                let batch = loader
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("the loader ended early"))??;
                let n = batch.labels.len();
                let s = batch.image_size;
                (
                    Tensor::from_vec(batch.pixels, (n, 3, s, s), device)?,
                    Tensor::from_vec(batch.labels, n, device)?,
                )
            }
        };
        let waited = waiting.elapsed().as_secs_f64();
        let start = Instant::now();
        let logits = match &prefix {
            Some(stream) => resumed.logits(stream, &ctx)?,
            None => model.logits(&input, &ctx)?,
        };
        let loss = cross_entropy(&logits, &labels, 0.0)?;
        // Reading the loss forces the forward pass to finish on asynchronous devices.
        let _ = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let forward_done = Instant::now();
        let grads = loss.backward()?;
        let backward_done = Instant::now();
        optimizer.step(&grads, 1e-4)?;
        device.synchronize()?;
        let end = Instant::now();
        if step >= bench.warmup_steps {
            wait_s.push(waited);
            forward_s.push((forward_done - start).as_secs_f64());
            backward_s.push((backward_done - forward_done).as_secs_f64());
            step_s.push((end - start).as_secs_f64());
        }
    }
    // `steps` is at least 1 (checked above), so every list below has a value.
    let median_step_s = median(step_s).unwrap_or(f64::NAN);
    Ok(StepTimings {
        backbone: bench.backbone.name().into(),
        method: bench.method.clone(),
        batch: bench.batch,
        image_size: bench.image_size,
        trainable_params: model.trainable_count(),
        median_step_s,
        median_forward_s: median(forward_s).unwrap_or(f64::NAN),
        median_backward_s: median(backward_s).unwrap_or(f64::NAN),
        examples_per_s: bench.batch as f64 / median_step_s,
        peak_rss_bytes: peftbench_records::peak_rss_bytes(),
        median_data_wait_s: loader.is_some().then(|| median(wait_s).unwrap_or(f64::NAN)),
        top_blocks: bench.top_blocks,
        frozen_prefix_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn every_listed_method_has_settings() {
        for method in BENCH_METHODS {
            assert!(bench_method_params(method).is_some(), "{method}");
        }
        assert!(bench_method_params("dora").is_none());
    }

    /// A two-image, one-step bench of `method` on ViT-Tiny at 32 px.
    fn tiny_bench(method: &str) -> TrainStepBench {
        TrainStepBench {
            backbone: BenchBackbone::VitTiny,
            method: method.into(),
            batch: 2,
            image_size: 32,
            num_classes: 10,
            warmup_steps: 0,
            steps: 1,
            input: BenchInput::Random,
            top_blocks: None,
        }
    }

    #[test]
    fn every_bench_method_takes_timed_steps() -> anyhow::Result<()> {
        for method in ["full", "linear", "lora", "adapter", "vpt-deep"] {
            let t = run_train_step(&tiny_bench(method), &Device::Cpu)?;
            assert!(t.median_step_s > 0.0 && t.median_step_s.is_finite());
            assert_eq!(t.median_data_wait_s, None);
            assert!(t.median_forward_s + t.median_backward_s <= t.median_step_s);
        }
        let err = run_train_step(&tiny_bench("nope"), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("choose one of"), "{err}");
        Ok(())
    }

    #[test]
    fn methods_in_the_top_blocks_step_from_their_frozen_prefix() -> anyhow::Result<()> {
        let bench = |top_blocks| TrainStepBench {
            top_blocks,
            ..tiny_bench("lora")
        };
        let every = run_train_step(&bench(None), &Device::Cpu)?;
        let top = run_train_step(&bench(Some(2)), &Device::Cpu)?;
        // r 8 on q, k, v: A and B of 8 x 192 each, three times per block.
        let per_block = 3 * 2 * 8 * 192;
        assert_eq!(
            every.trainable_params - top.trainable_params,
            10 * per_block
        );
        assert!(top.frozen_prefix_s.is_some_and(|s| s > 0.0));
        assert_eq!(every.frozen_prefix_s, None);
        let err = run_train_step(&bench(Some(13)), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("allowed range: 1 to 12"), "{err}");
        // The adapter too: Pfeiffer's one bottleneck (8 wide) per block, in the last block.
        let adapter = TrainStepBench {
            top_blocks: Some(1),
            ..tiny_bench("adapter")
        };
        let top = run_train_step(&adapter, &Device::Cpu)?;
        assert_eq!(
            top.trainable_params,
            (192 * 8 + 8) + (8 * 192 + 192) + 10 * 192 + 10
        );
        assert!(top.frozen_prefix_s.is_some());
        Ok(())
    }

    #[test]
    fn the_pipeline_input_decodes_real_batches_and_reports_the_wait() -> anyhow::Result<()> {
        let bench = TrainStepBench {
            warmup_steps: 1,
            steps: 2,
            input: BenchInput::Pipeline,
            ..tiny_bench("linear")
        };
        let t = run_train_step(&bench, &Device::Cpu)?;
        let wait = t
            .median_data_wait_s
            .expect("pipeline input reports its wait");
        assert!(wait >= 0.0 && wait.is_finite());
        Ok(())
    }
}
