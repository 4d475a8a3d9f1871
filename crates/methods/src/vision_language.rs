//! A vision-language model in VL-T5's layout (Cho et al., "Unifying Vision-and-Language Tasks via
//! Text Generation", ICML 2021), as VL-Adapter (Sung, Cho, Bansal, CVPR 2022) adapts it: frozen
//! visual features pass through a trained projection and T5 layer norm and are appended after the
//! prompt's token embeddings; the joint sequence enters a text-only pretrained T5 encoder, and the
//! decoder writes the answer or caption. A registry method attaches to the T5 like to any
//! backbone (its blocks are the encoder's, then the decoder's), so every method adapts the same
//! model.
//!
//! What VL-T5 adds besides the method, and what this model trains with every method:
//! - `encoder.visual_embedding.feat_embedding.0` (`Linear(feature dim, d_model)`) and
//!   `.feat_embedding.1` (a T5 layer norm): the visual projection. A text-only T5 has never seen
//!   visual features, so no method works without it; VL-Adapter trains it in every run;
//! - `encoder.visual_embedding.img_order_embedding` (`[2, d_model]`), added to the first image's
//!   features (order 0) and to the second's (order 1), so NLVR2's statement can tell the two
//!   images apart. VL-T5 also adds an embedding of each region's box; patch tokens of a ViT
//!   already carry their position, so there are no boxes here;
//! - optionally T5's layer norms, which VL-Adapter's code trains with every method.
//!
//! [`ParameterCounts`] keeps these apart, so a report can give the method's own count (strict)
//! beside the count VL-Adapter reports (method, visual projection and layer norms).

use std::path::{Path, PathBuf};

use candle_core::{DType, Result, Tensor, Var, D};
use peftbench_backbones::{Backbone, Hooks, T5};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_train::{Batch, TrainModel, IGNORE_LABEL};

use crate::registry::find_method;
use crate::{Adaptation, ClassifierHead};

/// Where the visual projection's tensors live, as VL-T5 names them.
const VISUAL_EMBEDDING: &str = "encoder.visual_embedding";

/// Trainable scalars of a [`VisionLanguageModel`], by what they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ParameterCounts {
    /// The method's own parameters (what a strict count reports).
    pub method: usize,
    /// The visual projection, its layer norm and the image-order embedding.
    pub visual_embedding: usize,
    /// T5's layer norms, when the run trains them (VL-Adapter's code does).
    pub layer_norms: usize,
}

impl ParameterCounts {
    /// Everything the optimizer updates: what VL-Adapter's tables count.
    pub fn trained(&self) -> usize {
        self.method + self.visual_embedding + self.layer_norms
    }
}

/// The joint input's visual side: projection, T5 layer norm and image-order embedding.
struct VisualEmbedding {
    weight: Var,
    bias: Var,
    norm: Var,
    image_order: Var,
    eps: f64,
    /// Visual tokens per image (the order embedding switches after this many).
    tokens_per_image: usize,
}

impl VisualEmbedding {
    /// `nn.Linear`'s default initialisation (uniform in ±1/sqrt(fan in)) for the projection, ones
    /// for the layer norm, N(0, 1) for the order embedding (`nn.Embedding`'s default).
    fn new(
        feature_dim: usize,
        tokens_per_image: usize,
        d_model: usize,
        eps: f64,
        init: &SeededInit,
    ) -> Result<Self> {
        let weight = init
            .fork("feat_embedding.0.weight")
            .kaiming_uniform((d_model, feature_dim), feature_dim)?;
        let bound = 1.0 / (feature_dim as f32).sqrt();
        let bias = init
            .fork("feat_embedding.0.bias")
            .uniform(d_model, -bound, bound)?;
        let norm = Var::from_tensor(&Tensor::ones(d_model, DType::F32, weight.device())?)?;
        let image_order = init
            .fork("img_order_embedding.weight")
            .normal((2, d_model), 1.0)?;
        Ok(Self {
            weight,
            bias,
            norm,
            image_order,
            eps,
            tokens_per_image,
        })
    }

    fn params(&self) -> NamedVars {
        let mut params = NamedVars::default();
        for (name, var) in [
            ("feat_embedding.0.weight", &self.weight),
            ("feat_embedding.0.bias", &self.bias),
            ("feat_embedding.1.weight", &self.norm),
            ("img_order_embedding.weight", &self.image_order),
        ] {
            params.push(format!("{VISUAL_EMBEDDING}.{name}"), var.clone());
        }
        params
    }

    /// Features `[B, M, F]` (one or two images' tokens, `tokens_per_image` each) to `[B, M, d]`.
    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let m = features.dim(1)?;
        let x = peftbench_core::ops::linear(features, &self.weight, Some(&self.bias))?;
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x
            .broadcast_div(&(variance + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.norm)?;
        let order: Vec<u32> = (0..m)
            .map(|i| u32::from(i >= self.tokens_per_image))
            .collect();
        let order = Tensor::from_vec(order, m, x.device())?;
        x.broadcast_add(&self.image_order.as_tensor().index_select(&order, 0)?)
    }
}

/// A registry method attached to T5, with VL-T5's visual input (see the module docs).
pub struct VisionLanguageModel {
    t5: T5,
    adaptation: Box<dyn Adaptation>,
    visual: VisualEmbedding,
    trainable: NamedVars,
    counts: ParameterCounts,
    pretrained_params: usize,
}

impl VisionLanguageModel {
    /// Attaches registry method `method` with `params` to `t5` and adds a visual embedding for
    /// features of `feature_dim` (`tokens_per_image` per image); `train_layer_norms` also trains
    /// T5's layer norms. All initial values come from `init`.
    pub fn new(
        method: &str,
        params: &serde_json::Value,
        mut t5: T5,
        feature_dim: usize,
        tokens_per_image: usize,
        train_layer_norms: bool,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        let found = find_method(method).map_err(anyhow::Error::msg)?;
        let pretrained_params = t5.num_params();
        found
            .check_backbone(params, t5.info())
            .map_err(anyhow::Error::msg)?;
        let forked;
        let stream = if found.forks_own_init() {
            forked = init.fork(method);
            &forked
        } else {
            init
        };
        let adaptation = found.attach(params, &mut t5, stream)?;
        let cfg = t5.config().clone();
        let visual = VisualEmbedding::new(
            feature_dim,
            tokens_per_image,
            cfg.d_model,
            cfg.layer_norm_epsilon,
            &init.fork(VISUAL_EMBEDDING),
        )?;
        let mut trainable = adaptation.trainable().clone();
        let method_count = trainable.count();
        let visual_params = visual.params();
        let visual_count = visual_params.count();
        trainable.extend(visual_params);
        let mut layer_norms = NamedVars::default();
        if train_layer_norms {
            let already: std::collections::BTreeSet<String> =
                trainable.iter().map(|p| p.name.clone()).collect();
            t5.visit_params(&mut |name, tensor| {
                if name.ends_with("layer_norm.weight") && !already.contains(name) {
                    let var = Var::from_tensor(tensor)?;
                    *tensor = var.as_tensor().clone();
                    layer_norms.push(name.to_string(), var);
                }
                Ok(())
            })?;
        }
        let counts = ParameterCounts {
            method: method_count,
            visual_embedding: visual_count,
            layer_norms: layer_norms.count(),
        };
        trainable.extend(layer_norms);
        Ok(Self {
            t5,
            adaptation,
            visual,
            trainable,
            counts,
            pretrained_params,
        })
    }

    pub fn t5(&self) -> &T5 {
        &self.t5
    }

    pub fn adaptation(&self) -> &dyn Adaptation {
        self.adaptation.as_ref()
    }

    /// Trainable scalars by what they belong to.
    pub fn counts(&self) -> ParameterCounts {
        self.counts
    }

    /// Pretrained scalars + what the method adds + the visual embedding.
    pub fn total_count(&self) -> usize {
        self.pretrained_params + self.adaptation.added_params() + self.counts.visual_embedding
    }

    /// The encoder's input embeddings and mask: the text's token embeddings (`ids` `[B, T]`),
    /// then the projected visual features `[B, M, F]`; `mask` `[B, T + M]` (0/1) covers both.
    fn joint_input(&self, ids: &Tensor, features: &Tensor) -> Result<Tensor> {
        let text = self.t5.embed(ids)?;
        let visual = self.visual.forward(features)?;
        Tensor::cat(&[&text, &visual], 1)
    }

    /// The encoder output `[B, T + M, d]` for a batch (`inputs` the prompt's ids, `images` the
    /// visual features, `mask` over both).
    fn encode(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<(Tensor, Tensor)> {
        let features = batch.images.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("a vision-language batch carries visual features".into())
        })?;
        let mask = match &batch.mask {
            Some(mask) => mask.clone(),
            None => {
                let (b, m) = (features.dim(0)?, features.dim(1)?);
                let visual = Tensor::ones((b, m), DType::U32, features.device())?;
                Tensor::cat(&[&self.t5.padding_mask(&batch.inputs)?, &visual], 1)?
            }
        };
        let (embeddings, mask) = packed(&self.joint_input(&batch.inputs, features)?, &mask)?;
        let hooks: &dyn Hooks = self.adaptation.as_ref();
        let states = self
            .t5
            .encode_embeddings(&embeddings, Some(&mask), hooks, ctx)?;
        Ok((states, mask))
    }

    /// The generated token ids of every example (start token first), by beam search with
    /// `num_beams` beams (greedy for 1), at most `max_length` tokens long.
    pub fn generate(
        &self,
        batch: &Batch,
        num_beams: usize,
        max_length: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let ctx = ForwardCtx::eval().with_task_ids(batch.task_ids.clone());
        let (states, mask) = self.encode(batch, &ctx)?;
        let hooks: &dyn Hooks = self.adaptation.as_ref();
        // Per-task methods read the task ids while decoding too.
        let hooks = TaskHooks {
            inner: hooks,
            task_ids: batch.task_ids.as_ref(),
        };
        if num_beams <= 1 {
            self.t5
                .greedy_from(&states, Some(&mask), max_length, &hooks)
        } else {
            self.t5
                .beam_search_from(&states, Some(&mask), num_beams, max_length, 1.0, &hooks)
        }
    }

    /// Saves the method's adapter (HF PEFT's format where PEFT has the method) with the visual
    /// embedding (and trained layer norms) under `modules_to_save`; returns the bytes written.
    pub fn save(&self, dir: &Path, base_model: &str) -> anyhow::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let mut modules = self.visual.params();
        let method_names: std::collections::BTreeSet<&str> = self
            .adaptation
            .trainable()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        for p in self.trainable.iter() {
            if p.name.ends_with("layer_norm.weight") && !method_names.contains(p.name.as_str()) {
                modules.push(p.name.clone(), p.var.clone());
            }
        }
        let files: Vec<PathBuf> =
            self.adaptation
                .save(dir, &ClassifierHead::modules_to_save(modules), base_model)?;
        let mut bytes = 0;
        for f in files {
            bytes += std::fs::metadata(&f)?.len();
        }
        Ok(bytes)
    }
}

/// Each row's attended positions moved to its front, in order, padding after them: `embeddings`
/// `[B, L, d]` and `mask` `[B, L]` (0/1) reordered alike. T5's attention bias depends on relative
/// positions, so text padding (or a missing second image) between an example's text and its
/// visual tokens would change its output with the rest of the batch; packed, an example encodes
/// the same whatever it is batched with.
fn packed(embeddings: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, l, d) = embeddings.dims3()?;
    let rows = mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let order: Vec<u32> = rows
        .iter()
        .flat_map(|row| {
            let kept = (0..l as u32).filter(|&i| row[i as usize] != 0);
            let padding = (0..l as u32).filter(|&i| row[i as usize] == 0);
            kept.chain(padding).collect::<Vec<_>>()
        })
        .collect();
    let order = Tensor::from_vec(order, (b, l), embeddings.device())?;
    let mask = mask.to_dtype(DType::U32)?.gather(&order, 1)?;
    let index = order.unsqueeze(2)?.broadcast_as((b, l, d))?.contiguous()?;
    Ok((embeddings.contiguous()?.gather(&index, 1)?, mask))
}

/// Hooks that see the batch's task ids in every call: beam search and greedy decoding build
/// their own evaluation contexts, without the batch's tasks.
struct TaskHooks<'a> {
    inner: &'a dyn Hooks,
    task_ids: Option<&'a Tensor>,
}

impl TaskHooks<'_> {
    /// An evaluation context (decoding never trains) with the batch's task ids, repeated for the
    /// beams when decoding runs several rows per example.
    fn with_tasks(&self, rows: usize) -> Result<ForwardCtx> {
        let Some(ids) = self.task_ids else {
            return Ok(ForwardCtx::eval());
        };
        let b = ids.dim(0)?;
        let ids = if rows == b {
            ids.clone()
        } else {
            let beams = rows / b;
            let index: Vec<u32> = (0..b as u32)
                .flat_map(|r| std::iter::repeat_n(r, beams))
                .collect();
            ids.index_select(&Tensor::from_vec(index, rows, ids.device())?, 0)?
        };
        Ok(ForwardCtx::eval().with_task_ids(Some(ids)))
    }
}

impl Hooks for TaskHooks<'_> {
    fn linear(
        &self,
        layer: usize,
        site: peftbench_backbones::LinearSite,
        x: &Tensor,
        base: &peftbench_backbones::Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let ctx = self.with_tasks(x.dim(0)?)?;
        self.inner.linear(layer, site, x, base, &ctx)
    }

    fn sublayer(
        &self,
        layer: usize,
        kind: peftbench_backbones::Sublayer,
        input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let ctx = self.with_tasks(input.dim(0)?)?;
        self.inner.sublayer(layer, kind, input, output, &ctx)
    }

    fn norm(
        &self,
        layer: Option<usize>,
        site: peftbench_backbones::NormSite,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let ctx = self.with_tasks(output.dim(0)?)?;
        self.inner.norm(layer, site, output, &ctx)
    }
}

/// Teacher forcing: `labels` `[B, T]` are the target ids (`IGNORE_LABEL` after the end), the
/// decoder reads them shifted right, and the logits `[B, T, vocab]` train under the trainer's
/// per-token cross-entropy.
impl TrainModel for VisionLanguageModel {
    fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    fn logits(&self, _input: &Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        candle_core::bail!("a vision-language model reads whole batches (text, images and targets)")
    }

    fn lr_multiplier(&self, name: &str) -> f64 {
        self.adaptation.lr_multiplier(name)
    }

    fn batch_logits(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        let (states, mask) = self.encode(batch, ctx)?;
        let labels = batch.labels.to_dtype(DType::U32)?;
        let ignored = labels.eq(IGNORE_LABEL)?;
        let pad = labels
            .ones_like()?
            .affine(0.0, f64::from(self.t5.config().pad_token_id))?;
        // T5's `_shift_right`: the start token, then the targets but the last, padding for ignored.
        let targets = ignored.where_cond(&pad, &labels)?;
        let decoder_input = self.t5.shift_right(&targets)?;
        let hooks: &dyn Hooks = self.adaptation.as_ref();
        let mut cache = self.t5.start_decoding(&states, Some(&mask), hooks, ctx)?;
        self.t5.decode(&decoder_input, None, &mut cache, hooks, ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use candle_core::{DType, Device, Tensor};
    use peftbench_core::{ForwardCtx, SeededInit};
    use peftbench_train::{masked_cross_entropy, Batch, TrainModel, IGNORE_LABEL};

    use super::*;

    fn t5() -> T5 {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../backbones/tests/fixtures/t5_tiny/relu");
        T5::load(
            &dir.join("config.json"),
            &dir.join("model.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
    }

    /// The counts are the closed forms: LoRA r on q and v of every block (encoder and decoder),
    /// and a visual embedding of `F x d + d` (linear) `+ d` (norm) `+ 2 d` (image order); the
    /// teacher-forced loss equals T5's own loss (transformers' `CrossEntropyLoss(ignore_index=-100)`,
    /// checked against transformers in the backbones' tests) on the same logits.
    #[test]
    fn counts_are_closed_forms_and_the_loss_is_t5s() {
        let model = t5();
        let (d, blocks) = (model.config().d_model, model.info().num_layers);
        let (features, tokens) = (12, 3);
        let vl = VisionLanguageModel::new(
            "lora",
            &serde_json::json!({"r": 2, "target_modules": ["query", "value"]}),
            model,
            features,
            tokens,
            false,
            &SeededInit::new(0, &Device::Cpu),
        )
        .unwrap();
        let counts = vl.counts();
        assert_eq!(counts.method, blocks * 2 * 2 * (d + d));
        assert_eq!(counts.visual_embedding, features * d + d + d + 2 * d);
        assert_eq!(counts.layer_norms, 0);
        assert_eq!(vl.trainable().count(), counts.trained());

        let ids = Tensor::new(&[[5u32, 9, 3, 1], [7, 1, 0, 0]], &Device::Cpu).unwrap();
        let images = Tensor::randn(0f32, 1.0, (2, 2 * tokens, features), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[[4u32, 8, 1], [6, 1, IGNORE_LABEL]], &Device::Cpu).unwrap();
        let mut batch = Batch::new(ids, labels.clone());
        batch.images = Some(images);
        let logits = vl.batch_logits(&batch, &ForwardCtx::eval()).unwrap();
        assert_eq!(logits.dims(), &[2, 3, vl.t5().config().vocab_size]);
        let ours = masked_cross_entropy(&logits, &labels, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let ignored = labels.eq(IGNORE_LABEL).unwrap();
        let minus_100 = Tensor::full(-100i64, (2, 3), &Device::Cpu).unwrap();
        let hf_labels = ignored
            .where_cond(&minus_100, &labels.to_dtype(DType::I64).unwrap())
            .unwrap();
        let reference = T5::loss(&logits, &hf_labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((ours - reference).abs() < 1e-6, "{ours} vs {reference}");
    }

    /// Text padding and the masked visual tokens of a single image beside a pair leave an
    /// example's logits as they are alone.
    #[test]
    fn padding_does_not_change_an_example() {
        let vl = VisionLanguageModel::new(
            "lora",
            &serde_json::json!({"r": 2}),
            t5(),
            4,
            2,
            false,
            &SeededInit::new(1, &Device::Cpu),
        )
        .unwrap();
        let features = Tensor::randn(0f32, 1.0, (1, 2, 4), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[[4u32, 1]], &Device::Cpu).unwrap();
        let mut alone = Batch::new(
            Tensor::new(&[[5u32, 1]], &Device::Cpu).unwrap(),
            labels.clone(),
        );
        alone.images = Some(features.clone());
        let single = vl.batch_logits(&alone, &ForwardCtx::eval()).unwrap();

        // Beside a two-image example with a longer prompt: padded text, zero-filled masked images.
        let other = Tensor::randn(0f32, 1.0, (1, 4, 4), &Device::Cpu).unwrap();
        let padded_features = Tensor::cat(
            &[
                &features,
                &Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu).unwrap(),
            ],
            1,
        )
        .unwrap();
        let mut mixed = Batch::new(
            Tensor::new(&[[5u32, 1, 0], [7, 8, 1]], &Device::Cpu).unwrap(),
            Tensor::new(&[[4u32, 1], [6, 1]], &Device::Cpu).unwrap(),
        );
        mixed.images = Some(Tensor::cat(&[&padded_features, &other], 0).unwrap());
        mixed.mask = Some(
            Tensor::new(
                &[[1u32, 1, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]],
                &Device::Cpu,
            )
            .unwrap(),
        );
        let both = vl.batch_logits(&mixed, &ForwardCtx::eval()).unwrap();
        let diff = (both.narrow(0, 0, 1).unwrap() - single)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
