//! A dual encoder for image-text retrieval: one registry method attached to each of CLIP's towers
//! (separately: two adaptations with their own parameters), trained with CLIP's symmetric
//! contrastive loss ([`peftbench_train::contrastive`]) on batches of matching image-text pairs.
//!
//! * **Attaching.** The method is found by name and attached to each tower as
//!   [`crate::PeftModel::new`] attaches it to one backbone (configuration checked against the
//!   tower's sizes, then `attach` with the run's stream forked by the method's name), the vision
//!   tower from the stream `init.fork("vision")`, the text tower from `init.fork("text")`. Methods
//!   that need calibration data or train in several phases are refused (the dual encoder has no
//!   calibration pass or phase switch yet).
//! * **Parameter names.** The optimizer sees each tower's parameters under `vision.` and `text.`
//!   ([`VISION_PREFIX`], [`TEXT_PREFIX`]) before the method's own names (which already carry the
//!   tower's Hugging Face module path for projection methods, but not for every method), so names
//!   stay unique; then [`LOGIT_SCALE`].
//! * **Logit scale.** Trainable by default ([`LogitScale::Trainable`]), starting at the
//!   checkpoint's `logit_scale`: CLIP learns its temperature, and fine-tuning recipes (OpenCLIP's,
//!   FLYP's) keep it trainable; it costs one scalar. Its factor `exp(logit_scale)` is capped at
//!   100 as in CLIP ([`peftbench_train::contrastive::logit_scale_factor`]). It is a rank-0 tensor,
//!   so AdamW decays it unless [`peftbench_train::AdamWConfig::decay_1d`] is `false` (OpenCLIP
//!   exempts it from weight decay). [`LogitScale::Frozen`] keeps the checkpoint's value.
//! * **Training.** [`peftbench_train::TrainModel::batch_logits`] reads the pixels of
//!   [`peftbench_train::Batch::images`] `[B, C, H, W]` and the paired token ids of `inputs` `[B,
//!   T]` with `mask` (or, without one, the mask the text tower derives from its padding id) and
//!   returns `logits_per_image` `[B, B]`; the loss is the symmetric contrastive loss with the pair
//!   of row `k` as the target of row and column `k` (the batch's labels are not read; give them as
//!   `arange(B)`, [`peftbench_train::contrastive::pair_labels`], so that
//!   [`peftbench_train::evaluate`]'s accuracy is the in-batch image-to-text recall@1). The
//!   trainer's label smoothing applies to both cross-entropies.
//! * **Evaluation.** [`DualEncoderModel::image_embeddings`] and
//!   [`DualEncoderModel::text_embeddings`] give L2-normalised embeddings (as clip-benchmark
//!   normalises them); [`retrieval_scores`] turns them into the caption-by-image score matrix that
//!   `peftbench_metrics::retrieval::retrieval_recalls` takes.
//! * **Saving.** [`DualEncoderModel::save`] writes each tower's adapter with the method's own
//!   [`Adaptation::save`] (Hugging Face PEFT's format where PEFT has the method) into `vision/` and
//!   `text/`, and the logit scale into [`DUAL_ENCODER_FILE`]. `Adaptation::save` always stores a
//!   classification head; the dual encoder has none and passes an empty one (0 classes), so each
//!   adapter holds `classifier.weight` `[0, hidden]` and `classifier.bias` `[0]`.

use std::path::Path;

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::clip::clip_towers;
use peftbench_backbones::{Backbone, Clip, ClipTextBackbone, ClipVisionBackbone};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_train::contrastive::{clip_logits, l2_normalize, symmetric_contrastive_loss};

use crate::{find_method, Adaptation, ClassifierHead};

/// Prefix of the vision tower's parameters in [`DualEncoderModel::trainable`].
pub const VISION_PREFIX: &str = "vision.";
/// Prefix of the text tower's parameters in [`DualEncoderModel::trainable`].
pub const TEXT_PREFIX: &str = "text.";
/// Name of the trainable logit scale in [`DualEncoderModel::trainable`].
pub const LOGIT_SCALE: &str = "logit_scale";
/// What [`DualEncoderModel::save`] writes besides the two adapters: the method, its parameters,
/// and the logit scale.
pub const DUAL_ENCODER_FILE: &str = "dual_encoder.json";

/// Whether the logit scale trains (see the [module documentation](crate::dual_encoder)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogitScale {
    /// A trainable scalar starting at the checkpoint's value (CLIP's choice).
    #[default]
    Trainable,
    /// The checkpoint's value, frozen.
    Frozen,
}

/// CLIP's two towers, each with its own attachment of one registry method, and the logit scale.
pub struct DualEncoderModel {
    vision: ClipVisionBackbone,
    text: ClipTextBackbone,
    vision_adaptation: Box<dyn Adaptation>,
    text_adaptation: Box<dyn Adaptation>,
    /// A scalar (rank 0): a variable when it trains.
    logit_scale: Tensor,
    /// The vision tower's parameters, the text tower's (both prefixed), then the logit scale when
    /// it trains: the optimizer's parameter order.
    trainable: NamedVars,
    method: String,
    params: serde_json::Value,
    pretrained_params: usize,
}

/// Attaches registry method `method` with `params` to `backbone` as [`crate::PeftModel::new`]
/// does: the configuration checked against the backbone's sizes, then `attach` with `init` forked
/// by the method's name (unless the method forks it itself).
fn attach(
    method: &str,
    params: &serde_json::Value,
    backbone: &mut dyn Backbone,
    init: &SeededInit,
) -> anyhow::Result<Box<dyn Adaptation>> {
    let found = find_method(method).map_err(anyhow::Error::msg)?;
    found
        .check_backbone(params, backbone.info())
        .map_err(anyhow::Error::msg)?;
    let forked;
    let stream = if found.forks_own_init() {
        forked = init.fork(method);
        &forked
    } else {
        init
    };
    let adaptation = found.attach(params, backbone, stream)?;
    if adaptation.calibration().is_some() {
        anyhow::bail!(
            "method `{method}` needs calibration data before training, which the dual encoder does not run"
        );
    }
    if !adaptation.phases().is_empty() {
        anyhow::bail!(
            "method `{method}` trains in several phases, which the dual encoder does not switch between"
        );
    }
    Ok(adaptation)
}

/// `tensors` under `prefix` + their names.
fn prefixed(prefix: &str, vars: &NamedVars) -> NamedVars {
    let mut out = NamedVars::default();
    for p in vars.iter() {
        out.push(format!("{prefix}{}", p.name), p.var.clone());
    }
    out
}

impl DualEncoderModel {
    /// Attaches registry method `method` with `params` to both towers of `clip` (each returning
    /// its projected embedding); the logit scale starts at the checkpoint's and trains per
    /// `logit_scale`. Initial values come from `init` (derive it from the run seed).
    pub fn new(
        method: &str,
        params: &serde_json::Value,
        clip: Clip,
        logit_scale: LogitScale,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        let scale = clip.logit_scale().clone();
        let (vision, text) = clip_towers(clip);
        Self::from_towers(method, params, vision, text, &scale, logit_scale, init)
    }

    /// [`DualEncoderModel::new`] on towers built separately (both must project into the same
    /// space), with the initial logit scale `initial_scale` (a scalar).
    pub fn from_towers(
        method: &str,
        params: &serde_json::Value,
        mut vision: ClipVisionBackbone,
        mut text: ClipTextBackbone,
        initial_scale: &Tensor,
        logit_scale: LogitScale,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            vision.projects() && text.projects(),
            "a dual encoder needs both towers' projected embeddings (towers built without_projection)"
        );
        anyhow::ensure!(
            vision.features_dim() == text.features_dim(),
            "the towers project to {} and {} dimensions",
            vision.features_dim(),
            text.features_dim()
        );
        anyhow::ensure!(
            initial_scale.elem_count() == 1,
            "the logit scale must be a scalar, got shape {:?}",
            initial_scale.dims()
        );
        let pretrained_params = vision.num_params() + text.num_params() + 1;
        let vision_adaptation = attach(method, params, &mut vision, &init.fork("vision"))?;
        let text_adaptation = attach(method, params, &mut text, &init.fork("text"))?;
        let mut trainable = prefixed(VISION_PREFIX, vision_adaptation.trainable());
        trainable.extend(prefixed(TEXT_PREFIX, text_adaptation.trainable()));
        let initial = initial_scale.reshape(())?.detach().copy()?;
        let logit_scale = match logit_scale {
            LogitScale::Trainable => {
                let var = Var::from_tensor(&initial)?;
                trainable.push(LOGIT_SCALE, var.clone());
                var.as_tensor().clone()
            }
            LogitScale::Frozen => initial,
        };
        Ok(Self {
            vision,
            text,
            vision_adaptation,
            text_adaptation,
            logit_scale,
            trainable,
            method: method.into(),
            params: params.clone(),
            pretrained_params,
        })
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn vision(&self) -> &ClipVisionBackbone {
        &self.vision
    }

    pub fn text(&self) -> &ClipTextBackbone {
        &self.text
    }

    pub fn vision_adaptation(&self) -> &dyn Adaptation {
        self.vision_adaptation.as_ref()
    }

    pub fn text_adaptation(&self) -> &dyn Adaptation {
        self.text_adaptation.as_ref()
    }

    /// The current logit scale (a scalar; the similarities are multiplied by its `exp`, at most
    /// 100).
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// Everything the optimizer updates (see the [module documentation](crate::dual_encoder) for the names).
    pub fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    pub fn trainable_count(&self) -> usize {
        self.trainable.count()
    }

    /// Pretrained scalars of both towers and the logit scale, plus what the method adds to each
    /// tower.
    pub fn total_count(&self) -> usize {
        self.pretrained_params
            + self.vision_adaptation.added_params()
            + self.text_adaptation.added_params()
    }

    /// Unnormalised image embeddings `[B, projection_dim]` of `pixels` `[B, C, H, W]` with the
    /// vision adaptation, in training or evaluation mode per `ctx`.
    pub fn image_features(&self, pixels: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.vision
            .forward_features(pixels, self.vision_adaptation.as_ref(), ctx)
    }

    /// Unnormalised text embeddings `[B, projection_dim]` of token ids `[B, T]` with the 0/1
    /// padding mask `mask` `[B, T]` (`None`: the mask the text tower derives from its padding
    /// id), with the text adaptation.
    pub fn text_features(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let derived;
        let mask = match mask {
            Some(m) => Some(m),
            None => {
                derived = self.text.padding_mask(ids)?;
                derived.as_ref()
            }
        };
        Ok(self
            .text
            .encode(ids, mask, self.text_adaptation.as_ref(), ctx)?
            .features)
    }

    /// L2-normalised image embeddings `[N, projection_dim]` in evaluation mode, detached: one
    /// column per image of [`retrieval_scores`].
    pub fn image_embeddings(&self, pixels: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.image_features(pixels, &ForwardCtx::eval())?)?
            .detach()
            .copy()
    }

    /// L2-normalised text embeddings `[N, projection_dim]` in evaluation mode, detached: one row
    /// per caption of [`retrieval_scores`]. `mask` as in [`DualEncoderModel::text_features`].
    pub fn text_embeddings(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        l2_normalize(&self.text_features(ids, mask, &ForwardCtx::eval())?)?
            .detach()
            .copy()
    }

    /// `logits_per_image` `[B images, B texts]`: the scaled cosine similarities.
    pub fn logits_per_image(
        &self,
        pixels: &Tensor,
        ids: &Tensor,
        mask: Option<&Tensor>,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let image = self.image_features(pixels, ctx)?;
        let text = self.text_features(ids, mask, ctx)?;
        clip_logits(&image, &text, &self.logit_scale)
    }

    /// Writes each tower's adapter with the method's [`Adaptation::save`] into `dir/vision` and
    /// `dir/text`, and [`DUAL_ENCODER_FILE`] (method, parameters, logit scale, base model) into
    /// `dir`; returns the bytes written.
    pub fn save(&self, dir: &Path, base_model: &str) -> anyhow::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        // No head: a dual encoder trains nothing beside its towers' adaptations but the scale,
        // which the JSON file below records.
        let head = ClassifierHead::modules_to_save(NamedVars::default());
        for (sub, adaptation) in [
            ("vision", &self.vision_adaptation),
            ("text", &self.text_adaptation),
        ] {
            files.extend(adaptation.save(&dir.join(sub), &head, base_model)?);
        }
        let doc = serde_json::json!({
            "method": self.method,
            "params": self.params,
            "base_model_name_or_path": base_model,
            "logit_scale": self.logit_scale.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
            "logit_scale_trains": self.trainable.iter().any(|p| p.name == LOGIT_SCALE),
        });
        let path = dir.join(DUAL_ENCODER_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
        files.push(path);
        let mut bytes = 0;
        for f in files {
            bytes += std::fs::metadata(&f)?.len();
        }
        Ok(bytes)
    }
}

/// The score matrix of `peftbench_metrics::retrieval::retrieval_recalls`: one row per caption of
/// `text_embeds` `[captions, D]`, one column per image of `image_embeds` `[images, D]`, each the
/// dot product (the cosine similarity, for [`DualEncoderModel`]'s normalised embeddings).
pub fn retrieval_scores(text_embeds: &Tensor, image_embeds: &Tensor) -> Result<Vec<Vec<f64>>> {
    text_embeds
        .matmul(&image_embeds.t()?)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec2::<f64>()
}

impl peftbench_train::TrainModel for DualEncoderModel {
    fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    /// A dual encoder scores pairs: its logits need both sides of a batch
    /// ([`peftbench_train::TrainModel::batch_logits`]).
    fn logits(&self, input: &Tensor, _ctx: &ForwardCtx) -> Result<Tensor> {
        candle_core::bail!(
            "a dual encoder needs the images paired with the texts {:?}: call batch_logits with Batch::images",
            input.dims()
        )
    }

    /// Each tower's parameters at their method's rate; the logit scale at the recipe's.
    fn lr_multiplier(&self, name: &str) -> f64 {
        if let Some(rest) = name.strip_prefix(VISION_PREFIX) {
            self.vision_adaptation.lr_multiplier(rest)
        } else if let Some(rest) = name.strip_prefix(TEXT_PREFIX) {
            self.text_adaptation.lr_multiplier(rest)
        } else {
            1.0
        }
    }

    /// `logits_per_image` `[B, B]` of the batch's images (pixels) and texts.
    fn batch_logits(&self, batch: &peftbench_train::Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        let Some(pixels) = batch.images.as_ref() else {
            candle_core::bail!(
                "a dual encoder's batch needs the images paired with its texts (Batch::images)"
            );
        };
        if pixels.dim(0)? != batch.inputs.dim(0)? {
            candle_core::bail!(
                "{} images for {} texts: a contrastive batch holds matching pairs",
                pixels.dim(0)?,
                batch.inputs.dim(0)?
            );
        }
        self.logits_per_image(pixels, &batch.inputs, batch.mask.as_ref(), ctx)
    }

    /// CLIP's symmetric contrastive loss over the batch's pairs (the labels are not read).
    fn loss(&self, logits: &Tensor, _labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
        symmetric_contrastive_loss(logits, label_smoothing)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::path::PathBuf;

    use candle_core::{DType, Device, Tensor};
    use peftbench_core::{ForwardCtx, SeededInit};
    use peftbench_train::{AdamW, AdamWConfig, Batch, TrainModel};

    use super::*;
    use peftbench_backbones::NoHooks;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn crates_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The tiny random CLIPModel of ci/fixtures/clip_tiny.py (vision: 24 wide, 2 blocks; text: 16
    /// wide, 2 blocks; projections to 12; logit scale 2).
    fn clip() -> Clip {
        let dir = crates_dir().join("backbones/tests/fixtures/clip_tiny/model");
        Clip::load(
            &dir.join("config.json"),
            &dir.join("model.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
    }

    /// Four matching pairs through transformers' `CLIPModel(..., return_loss=True)` on that model,
    /// written by ci/fixtures/clip_contrastive.py.
    fn pairs() -> HashMap<String, Tensor> {
        let path = crates_dir().join("train/tests/fixtures/clip_contrastive.safetensors");
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

    fn batch(fx: &HashMap<String, Tensor>) -> Batch {
        let ids = &fx["input_ids"];
        let mut batch = Batch::new(
            ids.clone(),
            peftbench_train::contrastive::pair_labels(ids.dim(0).unwrap(), &Device::Cpu).unwrap(),
        );
        batch.mask = Some(fx["attention_mask"].clone());
        batch.images = Some(fx["pixel_values"].clone());
        batch
    }

    fn lora(r: usize) -> serde_json::Value {
        serde_json::json!({"r": r, "alpha": 2 * r, "target_modules": ["query", "value"]})
    }

    fn model(logit_scale: LogitScale) -> DualEncoderModel {
        DualEncoderModel::new(
            "lora",
            &lora(4),
            clip(),
            logit_scale,
            &SeededInit::new(3, &Device::Cpu),
        )
        .unwrap()
    }

    /// With LoRA at initialisation (an identity), the model's logits and loss are transformers'.
    #[test]
    fn dual_encoder_loss_matches_transformers() -> anyhow::Result<()> {
        let fx = pairs();
        let model = model(LogitScale::Trainable);
        let batch = batch(&fx);
        let ctx = ForwardCtx::eval();
        let logits = model.batch_logits(&batch, &ctx)?;
        let loss = model.loss(&logits, &batch.labels, 0.0)?;
        let logits_err = max_abs_diff(&logits, &fx["s2_logits_per_image"]);
        let loss_err = max_abs_diff(&loss, &fx["s2_loss"]);
        println!("logits_per_image max |err| {logits_err:.2e}, loss |err| {loss_err:.2e}");
        assert!(logits_err < 1e-5, "logits differ by {logits_err}");
        assert!(loss_err < 1e-5, "loss differs by {loss_err}");
        // The embeddings before normalisation are transformers' too.
        let image = model.image_features(&fx["pixel_values"], &ctx)?;
        let text = model.text_features(&fx["input_ids"], Some(&fx["attention_mask"]), &ctx)?;
        assert!(max_abs_diff(&image, &fx["image_embeds"]) < 1e-5);
        assert!(max_abs_diff(&text, &fx["text_embeds"]) < 1e-5);
        Ok(())
    }

    /// LoRA starts as the identity on both towers; one AdamW step on the contrastive loss moves
    /// both towers' embeddings, the logit scale, and lowers the loss on the batch.
    #[test]
    fn dual_encoder_lora_is_identity_at_init_and_trains() -> anyhow::Result<()> {
        let fx = pairs();
        let clip = clip();
        let model = model(LogitScale::Trainable);
        let (pixels, ids, mask) = (&fx["pixel_values"], &fx["input_ids"], &fx["attention_mask"]);
        let ctx = ForwardCtx::eval();
        let frozen_image = l2_normalize(&clip.vision(pixels, &NoHooks, &ctx)?.image_embeds)?;
        let frozen_text = l2_normalize(&clip.text(ids, Some(mask), &NoHooks, &ctx)?.text_embeds)?;
        let image0 = model.image_embeddings(pixels)?;
        let text0 = model.text_embeddings(ids, Some(mask))?;
        assert_eq!(max_abs_diff(&image0, &frozen_image), 0.0);
        assert_eq!(max_abs_diff(&text0, &frozen_text), 0.0);

        let batch = batch(&fx);
        let loss0 = model.loss(&model.batch_logits(&batch, &ctx)?, &batch.labels, 0.0)?;
        let mut opt = AdamW::new(model.trainable(), AdamWConfig::default())?;
        let train_ctx = ForwardCtx::train(0, 0.0);
        let loss = model.loss(&model.batch_logits(&batch, &train_ctx)?, &batch.labels, 0.0)?;
        opt.step(&loss.backward()?, 1e-2)?;

        let image1 = model.image_embeddings(pixels)?;
        let text1 = model.text_embeddings(ids, Some(mask))?;
        let (moved_image, moved_text) =
            (max_abs_diff(&image1, &image0), max_abs_diff(&text1, &text0));
        let moved_scale = max_abs_diff(model.logit_scale(), clip.logit_scale());
        let loss1 = model.loss(&model.batch_logits(&batch, &ctx)?, &batch.labels, 0.0)?;
        let (l0, l1) = (loss0.to_scalar::<f32>()?, loss1.to_scalar::<f32>()?);
        println!(
            "after one step: image embeddings moved {moved_image:.2e}, text {moved_text:.2e}, \
             logit scale {moved_scale:.2e}; loss {l0:.5} -> {l1:.5}"
        );
        assert!(moved_image > 1e-4 && moved_text > 1e-4);
        assert!(moved_scale > 1e-4);
        assert!(l1 < l0, "loss went from {l0} to {l1}");
        Ok(())
    }

    /// LoRA of rank r on the query and value projections of every block of both towers trains
    /// r (d_in + d_out) per projection, plus the logit scale when it trains; names are unique and
    /// prefixed by tower.
    #[test]
    fn dual_encoder_trainable_count_is_the_closed_form() {
        let cfg = clip().config().clone();
        let (vc, tc) = (&cfg.vision_config, &cfg.text_config);
        for r in [1, 4] {
            for (scale, extra) in [(LogitScale::Trainable, 1), (LogitScale::Frozen, 0)] {
                let model = DualEncoderModel::new(
                    "lora",
                    &lora(r),
                    clip(),
                    scale,
                    &SeededInit::new(0, &Device::Cpu),
                )
                .unwrap();
                let expected = vc.num_hidden_layers * 2 * r * (2 * vc.hidden_size)
                    + tc.num_hidden_layers * 2 * r * (2 * tc.hidden_size)
                    + extra;
                assert_eq!(model.trainable_count(), expected, "r {r}, {scale:?}");
                let names: Vec<&str> = model.trainable().iter().map(|p| p.name.as_str()).collect();
                let unique: BTreeSet<&str> = names.iter().copied().collect();
                assert_eq!(unique.len(), names.len());
                assert_eq!(names.len(), 2 * 2 * 2 * 2 + extra);
                assert!(names.contains(
                    &"vision.vision_model.encoder.layers.1.self_attn.v_proj.lora_B.weight"
                ));
                assert!(names
                    .contains(&"text.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"));
                assert_eq!(names.contains(&LOGIT_SCALE), extra == 1);
            }
        }
        // r = 4: 2 * 2 * 4 * 48 (vision) + 2 * 2 * 4 * 32 (text) + 1.
        assert_eq!(model(LogitScale::Trainable).trainable_count(), 1281);
    }

    /// Each tower has its own adaptation, sized by its own widths; the parameter count adds both
    /// to the checkpoint's.
    #[test]
    fn dual_encoder_towers_are_adapted_separately() -> anyhow::Result<()> {
        let model = model(LogitScale::Frozen);
        assert_eq!(model.vision_adaptation().trainable().len(), 8);
        assert_eq!(model.text_adaptation().trainable().len(), 8);
        let a = |adaptation: &dyn Adaptation, name: &str| {
            adaptation
                .trainable()
                .iter()
                .find(|p| p.name == name)
                .unwrap()
                .var
                .as_tensor()
                .clone()
        };
        // Each tower's adapters are sized by that tower's width.
        let v = a(
            model.vision_adaptation(),
            "vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
        );
        let t = a(
            model.text_adaptation(),
            "text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
        );
        assert_eq!((v.dims(), t.dims()), (&[4usize, 24][..], &[4usize, 16][..]));
        assert_eq!(model.lr_multiplier("vision.anything"), 1.0);
        // PEFT's `all params`: the checkpoint (both towers, projections, logit scale) plus LoRA.
        let mut pretrained = 0;
        clip().visit_params(&mut |_, t| {
            pretrained += t.elem_count();
            Ok(())
        })?;
        assert_eq!(model.total_count(), pretrained + model.trainable_count());
        Ok(())
    }

    /// Unknown methods, methods that need calibration, and cross-attention sites are refused;
    /// a batch without images is an error.
    #[test]
    fn dual_encoder_refusals() {
        let init = SeededInit::new(0, &Device::Cpu);
        let err = DualEncoderModel::new(
            "nope",
            &serde_json::json!({}),
            clip(),
            LogitScale::Frozen,
            &init,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("unknown method `nope`"), "{err}");
        let err = DualEncoderModel::new(
            "lora",
            &serde_json::json!({"target_modules": ["cross_query"]}),
            clip(),
            LogitScale::Frozen,
            &init,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("encoder-only"), "{err}");
        let model = model(LogitScale::Frozen);
        let fx = pairs();
        let mut b = batch(&fx);
        b.images = None;
        let err = model.batch_logits(&b, &ForwardCtx::eval()).unwrap_err();
        assert!(err.to_string().contains("Batch::images"), "{err}");
        assert!(model.logits(&fx["input_ids"], &ForwardCtx::eval()).is_err());
    }

    /// Normalised embeddings give the caption-by-image cosine matrix the retrieval metrics take;
    /// without a mask the text tower's own padding mask gives the same embeddings.
    #[test]
    fn dual_encoder_embeddings_fit_retrieval_scores() -> anyhow::Result<()> {
        let fx = pairs();
        let model = model(LogitScale::Frozen);
        let image = model.image_embeddings(&fx["pixel_values"])?;
        let text = model.text_embeddings(&fx["input_ids"], Some(&fx["attention_mask"]))?;
        let derived = model.text_embeddings(&fx["input_ids"], None)?;
        assert!(max_abs_diff(&text, &derived) < 1e-6);
        let norms = image.sqr()?.sum(1)?.sqrt()?;
        assert!(max_abs_diff(&norms, &Tensor::ones(4, DType::F32, &Device::Cpu)?) < 1e-6);
        let scores = retrieval_scores(&text.narrow(0, 0, 3)?, &image)?;
        assert_eq!((scores.len(), scores[0].len()), (3, 4));
        // The scores are logits_per_text / exp(logit_scale).
        let logits = model.logits_per_image(
            &fx["pixel_values"],
            &fx["input_ids"],
            Some(&fx["attention_mask"]),
            &ForwardCtx::eval(),
        )?;
        let expected = (logits.t()? / 2f64.exp())?.to_vec2::<f32>()?;
        for (row, exp) in scores.iter().zip(&expected) {
            for (s, e) in row.iter().zip(exp) {
                assert!((s - f64::from(*e)).abs() < 1e-5, "{s} vs {e}");
            }
        }
        Ok(())
    }

    /// Each tower's adapter is written by the method's own save (LoRA: HF PEFT's files) under
    /// `vision/` and `text/`, with the trained values; the logit scale beside them.
    #[test]
    fn dual_encoder_saves_each_tower() -> anyhow::Result<()> {
        let model = model(LogitScale::Trainable);
        let dir = tempfile::tempdir()?;
        let bytes = model.save(dir.path(), "tiny-clip")?;
        assert!(bytes > 0);
        for (sub, adaptation) in [
            ("vision", model.vision_adaptation()),
            ("text", model.text_adaptation()),
        ] {
            let folder = dir.path().join(sub);
            let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
                folder.join(crate::peft_format::CONFIG_FILE),
            )?)?;
            assert_eq!(config["peft_type"], "LORA");
            assert_eq!(config["r"], 4);
            let saved = candle_core::safetensors::load(
                folder.join(crate::peft_format::WEIGHTS_FILE),
                &Device::Cpu,
            )?;
            for p in adaptation.trainable().iter() {
                let key = format!("{}{}", crate::peft_format::KEY_PREFIX, p.name);
                assert!(key.contains(&format!("base_model.model.{sub}_model.encoder.layers.")));
                assert_eq!(max_abs_diff(&saved[&key], p.var.as_tensor()), 0.0, "{key}");
            }
            // No classifier: a dual encoder has no head.
            assert!(
                !saved.keys().any(|k| k.contains("classifier")),
                "{:?}",
                saved.keys()
            );
        }
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            dir.path().join(DUAL_ENCODER_FILE),
        )?)?;
        assert_eq!(doc["method"], "lora");
        assert_eq!(doc["logit_scale"], 2.0);
        assert_eq!(doc["logit_scale_trains"], true);
        Ok(())
    }

    /// Eight pairs for [`peftbench_train::train`], in two batches of four.
    struct Pairs(Vec<Batch>);

    impl peftbench_train::BatchSource for Pairs {
        fn num_examples(&self) -> usize {
            self.0.iter().map(Batch::len).sum()
        }

        fn batches(
            &self,
            _batch_size: usize,
            _shuffle_seed: Option<u64>,
        ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
            Box::new(self.0.iter().cloned().map(Ok))
        }
    }

    /// The trainer trains it from batches with images: the loss falls over a few epochs.
    #[test]
    fn dual_encoder_trains_with_the_trainer() -> anyhow::Result<()> {
        let fx = pairs();
        let model = model(LogitScale::Trainable);
        let first = batch(&fx);
        // The same pairs with the images in reverse order and texts to match.
        let rev = Tensor::new(&[3u32, 2, 1, 0], &Device::Cpu)?;
        let mut second = first.clone();
        second.inputs = first.inputs.index_select(&rev, 0)?;
        second.mask = Some(first.mask.as_ref().unwrap().index_select(&rev, 0)?);
        second.images = Some(first.images.as_ref().unwrap().index_select(&rev, 0)?);
        let data = Pairs(vec![first, second]);
        let mut cfg = peftbench_train::TrainConfig::vtab_recipe(0);
        cfg.epochs = 6;
        cfg.warmup_epochs = 0;
        cfg.batch_size = 4;
        cfg.eval_batch_size = 4;
        cfg.drop_path = 0.0;
        cfg.lr = 1e-2;
        let outcome = peftbench_train::train(&model, &data, Some(&data), &cfg, &mut |_| {})?;
        let peftbench_train::TrainOutcome::Completed(report) = outcome else {
            panic!("training did not complete: {outcome:?}");
        };
        let losses: Vec<f64> = report.history.iter().map(|e| e.train_loss).collect();
        println!("train losses {losses:?}");
        assert!(losses.last().unwrap() < &(losses[0] * 0.8), "{losses:?}");
        let eval = peftbench_train::evaluate(&model, &data, 4)?;
        println!("in-batch image-to-text accuracy {}", eval.accuracy);
        Ok(())
    }
}
