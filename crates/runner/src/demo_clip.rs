//! The image-text retrieval demo's dual encoder: a tiny CLIP that this project pretrains itself,
//! so the retrieval demo needs nothing downloaded. Like the other demo backbones it is trained
//! from scratch here, on data of the demo's world but not the demo's own: generated scenes
//! ([`peftbench_data_vision::vl_scenes`]: 2 to 4 coloured shapes, one per quadrant) drawn from
//! the recipe's seed, never from the demo data's (seed 0), each rendered at 32x32 and paired with
//! captions of the demo language (every object with its size; every object with its place; the
//! count; one object and how many others; one object with its size and place). Every epoch pairs
//! each image with one of its captions, drawn from the epoch's seed, as the retrieval kind does.
//!
//! Objective: CLIP's symmetric contrastive (InfoNCE) loss over a batch's image-caption pairs
//! ([`peftbench_train::contrastive`]), every weight trained with AdamW, the temperature
//! (`logit_scale`) included. The budget is small on purpose: the result retrieves far better
//! than chance on held-out scenes but is far from solving the demo, so adaptation has work left.
//! The held-out Recall@1 both ways is recorded in the snapshot's `peftbench_pretraining.json`.
//! Every step is small (a batch of 64 pairs through two 64-wide towers), so more than one thread
//! gains little and candle's thread pool can spin: with `RAYON_NUM_THREADS=1` the default recipe
//! took about 30 s of CPU; with two threads on a busy two-core machine it was over 280 s.
//!
//! The model is CLIP in miniature: a ViT image tower (32x32 images, patch 8) and a causal text
//! tower, both 64 wide with 4 blocks of 4 heads, projected to 64; quick-GELU as OpenAI's. Images
//! are read with no normalisation (pixels in 0..1, a demo suite's `normalization: none`). The
//! text tower reads a word-level `tokenizer.json` ([`crate::demo_t5::word_level_tokenizer`]
//! over the demo language's [`vocabulary`] and the training captions: `<pad>` 0, `</s>` 1,
//! `<unk>` 2, the words), which appends `</s>`; the configuration's `eos_token_id` is `</s>` (1,
//! not the legacy value 2), so the text tower pools at the first `</s>`, and `pad_token_id` is
//! `<pad>` (0), so padding is masked.
//!
//! The snapshot is stored like the other demo backbones in the Hugging Face hub-cache layout under
//! `$PEFTBENCH_CACHE/hub/models--peftbench--demo-clip/` (`config.json` of a `CLIPModel` with
//! `text_config` and `vision_config`, `model.safetensors` under `CLIPModel` names,
//! `tokenizer.json`) and loaded back through the same checkpoint code as a real download. Its
//! name hashes the recipe and a fingerprint of the generated data (the vocabulary, every caption
//! and some rendered pixels), so a changed recipe or a changed scene generator retrains.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use peftbench_backbones::clip::{
    vision_info, ClipActivation, ClipConfig, ClipTextConfig, ClipVisionConfig,
};
use peftbench_backbones::{BackboneInfo, Clip, NoHooks, ResolvedCheckpoint};
use peftbench_core::shuffle::permutation;
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_vision::vl_scenes::{
    describe_scene, render_scene, scene_captions, vocabulary, VlScene,
};
use peftbench_data_vision::{Normalization, Preprocess};
use peftbench_metrics::retrieval::{retrieval_recalls, RetrievalRecalls};
use peftbench_train::contrastive::{
    clip_logits, l2_normalize, pair_labels, symmetric_contrastive_loss,
};
use peftbench_train::{derive_seed, Batch, BatchSource, TrainModel};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::demo_t5::word_level_tokenizer;
use crate::pretraining::{
    cached_or_pretrained, recipe_commit, run_pretraining, DemoSnapshot, PretrainSettings,
    Pretrained,
};
use crate::Paths;

/// The `backbone.checkpoint` value that selects this model in a suite.
pub const DEMO_CLIP_CHECKPOINT: &str = "demo-clip";
/// Its hub id in the project cache.
pub const DEMO_CLIP_REPO_ID: &str = "peftbench/demo-clip";

/// The tokenizer's padding and end tokens ([`word_level_tokenizer`]'s T5 ids).
const PAD_TOKEN: &str = "<pad>";
const EOS_TOKEN: &str = "</s>";

/// Purposes mixed into the recipe's seed so the scene sets and caption draws never share a stream
/// (and never equal the demo data's seed 0).
const TRAIN_SCENES: u64 = 0x636c_6970_7472; // "cliptr"
const EVAL_SCENES: u64 = 0x636c_6970_6576; // "clipev"
const CAPTIONS: u64 = 0x6361_7074; // "capt"
const CAPTION_CHOICE: u64 = 0x4341_5054; // "CAPT"

/// Training scenes whose pixels join the data fingerprint (rendering every scene at each cache
/// lookup would cost more than the lookup is worth; these catch a changed renderer).
const FINGERPRINT_IMAGES: usize = 16;

/// Everything that determines the demo CLIP's weights, besides the generated data (whose
/// fingerprint joins the snapshot name).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoClipRecipe {
    /// Image tower: width, MLP width, blocks, heads, image side and patch side.
    pub vision_hidden: usize,
    pub vision_intermediate: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    /// Text tower: width, MLP width, blocks, heads and positions (the vocabulary is the
    /// tokenizer's).
    pub text_hidden: usize,
    pub text_intermediate: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub max_positions: usize,
    /// Width of the shared embedding space.
    pub projection_dim: usize,
    /// The initial `logit_scale` (CLIP's `ln(1 / 0.07)`).
    pub logit_scale_init: f64,
    /// Generated scenes to train on (each with five captions) and to measure recall on.
    pub train_scenes: usize,
    pub eval_scenes: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for DemoClipRecipe {
    fn default() -> Self {
        Self {
            vision_hidden: 64,
            // Twice the width, as the demo ViT's (CLIP's 4x took half again as long here, for no
            // better recall).
            vision_intermediate: 128,
            vision_layers: 4,
            vision_heads: 4,
            image_size: 32,
            patch_size: 8,
            text_hidden: 64,
            text_intermediate: 128,
            text_layers: 4,
            text_heads: 4,
            // The longest caption (four objects with their places) is 31 words and `</s>`.
            max_positions: 40,
            projection_dim: 64,
            logit_scale_init: 2.6592,
            // 375 steps of 64 pairs: about 30 s of one core. Contrastive training from scratch
            // sits at chance for the first epochs and then takes off; this stops early in the
            // take-off (held-out R@1 a few times chance), leaving adaptation most of the way.
            train_scenes: 4000,
            eval_scenes: 200,
            epochs: 6,
            batch_size: 64,
            lr: 3e-3,
            weight_decay: 0.05,
            seed: 0,
        }
    }
}

impl DemoClipRecipe {
    /// The snapshot name: a hash of the recipe, the data fingerprint and this file's format
    /// version.
    pub fn commit(&self, data_fingerprint: &str) -> String {
        recipe_commit(
            "demo-clip-v1",
            &serde_json::json!({ "recipe": self, "data": data_fingerprint }),
        )
    }

    /// The model's configuration for a tokenizer of `vocab_size` tokens with `<pad>` at `pad`
    /// and `</s>` at `eos`.
    pub fn config(&self, vocab_size: usize, pad: u32, eos: u32) -> ClipConfig {
        ClipConfig {
            text_config: ClipTextConfig {
                vocab_size,
                hidden_size: self.text_hidden,
                intermediate_size: self.text_intermediate,
                num_hidden_layers: self.text_layers,
                num_attention_heads: self.text_heads,
                max_position_embeddings: self.max_positions,
                hidden_act: ClipActivation::QuickGelu,
                layer_norm_eps: 1e-5,
                attention_dropout: 0.0,
                pad_token_id: pad,
                // The tokenizer adds no start token; the field is informational in `CLIPModel`.
                bos_token_id: eos,
                eos_token_id: eos,
            },
            vision_config: ClipVisionConfig {
                hidden_size: self.vision_hidden,
                intermediate_size: self.vision_intermediate,
                num_hidden_layers: self.vision_layers,
                num_attention_heads: self.vision_heads,
                num_channels: 3,
                image_size: self.image_size,
                patch_size: self.patch_size,
                hidden_act: ClipActivation::QuickGelu,
                layer_norm_eps: 1e-5,
                attention_dropout: 0.0,
            },
            projection_dim: self.projection_dim,
            logit_scale_init_value: self.logit_scale_init,
        }
    }

    /// The sizes methods are checked against, as the loaded model reports them (its image tower,
    /// as `BackboneModel::info` gives for CLIP), without pretraining: they do not depend on the
    /// vocabulary.
    pub fn info(&self) -> BackboneInfo {
        vision_info(&self.config(1, 0, 0))
    }

    /// How images are prepared: the side, no normalisation.
    fn preprocess(&self) -> Preprocess {
        Preprocess {
            normalization: Normalization::None,
            ..Preprocess::new(self.image_size)
        }
    }
}

/// The demo CLIP of the default recipe, pretrained first if the cache has no snapshot for the
/// recipe and data; its `tokenizer.json` is beside `config.json`.
pub fn ensure_demo_clip(paths: &Paths, quiet: bool) -> anyhow::Result<ResolvedCheckpoint> {
    ensure_demo_clip_with(paths, &DemoClipRecipe::default(), quiet)
}

/// [`ensure_demo_clip`] for any recipe.
pub fn ensure_demo_clip_with(
    paths: &Paths,
    recipe: &DemoClipRecipe,
    quiet: bool,
) -> anyhow::Result<ResolvedCheckpoint> {
    let data = SceneCaptions::draw(recipe);
    cached_or_pretrained(paths, &data.snapshot(recipe), quiet, || {
        pretrain(recipe, &data, quiet).map(|(files, _)| files)
    })
}

// ---------------------------------------------------------------------------------------------
// Data

/// One split's generated scenes and their captions.
struct Split {
    /// The seed of [`describe_scene`] and [`render_scene`].
    seed: u64,
    scenes: Vec<VlScene>,
    captions: Vec<Vec<String>>,
}

impl Split {
    fn draw(seed: u64, n: usize) -> Self {
        let scenes: Vec<VlScene> = (0..n).map(|i| describe_scene(seed, i)).collect();
        let captions = scenes
            .iter()
            .map(|s| scene_captions(s, derive_seed(&[seed, CAPTIONS])).to_vec())
            .collect();
        Self {
            seed,
            scenes,
            captions,
        }
    }

    /// The scenes rendered and preprocessed, `[n, 3, S, S]`.
    fn pixels(&self, pre: &Preprocess, device: &Device) -> anyhow::Result<Tensor> {
        let per = pre.values_per_image();
        let mut values = vec![0f32; self.scenes.len() * per];
        for (scene, out) in self.scenes.iter().zip(values.chunks_mut(per)) {
            pre.write_chw(&render_scene(scene, self.seed, pre.image_size), out);
        }
        let s = pre.image_size;
        Ok(Tensor::from_vec(
            values,
            (self.scenes.len(), 3, s, s),
            device,
        )?)
    }
}

/// The generated data of one recipe: training and held-out scenes with their captions.
struct SceneCaptions {
    train: Split,
    eval: Split,
}

impl SceneCaptions {
    fn draw(recipe: &DemoClipRecipe) -> Self {
        Self {
            train: Split::draw(recipe.seed ^ TRAIN_SCENES, recipe.train_scenes),
            eval: Split::draw(recipe.seed ^ EVAL_SCENES, recipe.eval_scenes),
        }
    }

    /// The words the tokenizer knows: the demo language's vocabulary and the training captions'.
    fn tokenizer_corpus(&self) -> Vec<String> {
        vocabulary()
            .into_iter()
            .chain(self.train.captions.iter().flatten().cloned())
            .collect()
    }

    /// SHA-256 of the vocabulary, every caption of both splits and the pixels of the first
    /// [`FINGERPRINT_IMAGES`] training scenes at `image_size`; first 16 bytes in hex.
    fn fingerprint(&self, image_size: usize) -> String {
        let mut hash = Sha256::new();
        for word in vocabulary() {
            hash.update(word.as_bytes());
            hash.update(b"\n");
        }
        for split in [&self.train, &self.eval] {
            hash.update(b"\0");
            for captions in &split.captions {
                for caption in captions {
                    hash.update(caption.as_bytes());
                    hash.update(b"\n");
                }
            }
        }
        for scene in self.train.scenes.iter().take(FINGERPRINT_IMAGES) {
            hash.update(render_scene(scene, self.train.seed, image_size).as_raw());
        }
        hash.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn snapshot(&self, recipe: &DemoClipRecipe) -> DemoSnapshot<'static> {
        DemoSnapshot {
            repo_id: DEMO_CLIP_REPO_ID,
            commit: recipe.commit(&self.fingerprint(recipe.image_size)),
            extra_files: &["tokenizer.json"],
            name: "demo CLIP",
            upstream: format!(
                "{} generated captioned scenes by contrastive learning",
                self.train.scenes.len()
            ),
        }
    }
}

/// The token id of `token`, which the tokenizer must have.
fn token_id(tokenizer: &Tokenizer, token: &str) -> anyhow::Result<u32> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| anyhow::anyhow!("the demo CLIP tokenizer has no `{token}`"))
}

/// A split as tensors: rendered images and each image's captions, tokenised (`</s>` last).
struct Pairs {
    pixels: Tensor,
    captions: Vec<Vec<Vec<u32>>>,
    pad: u32,
}

impl Pairs {
    fn new(
        split: &Split,
        tokenizer: &Tokenizer,
        recipe: &DemoClipRecipe,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut captions = Vec::with_capacity(split.captions.len());
        for texts in &split.captions {
            let mut ids = Vec::with_capacity(texts.len());
            for text in texts {
                let encoding = tokenizer
                    .encode(text.as_str(), true)
                    .map_err(|e| anyhow::anyhow!("tokenising {text:?}: {e}"))?;
                anyhow::ensure!(
                    encoding.len() <= recipe.max_positions,
                    "caption {text:?} has {} tokens, more than the text tower's {} positions",
                    encoding.len(),
                    recipe.max_positions
                );
                ids.push(encoding.get_ids().to_vec());
            }
            captions.push(ids);
        }
        Ok(Self {
            pixels: split.pixels(&recipe.preprocess(), device)?,
            captions,
            pad: token_id(tokenizer, PAD_TOKEN)?,
        })
    }

    /// Token ids right-padded to the longest, and their 0/1 mask, `[n, T]` each.
    fn padded(&self, captions: &[&Vec<u32>]) -> anyhow::Result<(Tensor, Tensor)> {
        let width = captions.iter().map(|c| c.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(captions.len() * width);
        let mut mask = Vec::with_capacity(captions.len() * width);
        for c in captions {
            ids.extend(c.iter().copied());
            ids.extend(std::iter::repeat_n(self.pad, width - c.len()));
            mask.extend(std::iter::repeat_n(1u32, c.len()));
            mask.extend(std::iter::repeat_n(0u32, width - c.len()));
        }
        let device = self.pixels.device();
        let n = captions.len();
        Ok((
            Tensor::from_vec(ids, (n, width), device)?,
            Tensor::from_vec(mask, (n, width), device)?,
        ))
    }
}

/// Every image once per epoch in a seeded order, each with one of its captions drawn from the
/// epoch's seed (so a batch never holds two captions of one image as each other's negatives);
/// unshuffled passes pair each image with its first caption.
impl BatchSource for Pairs {
    fn num_examples(&self) -> usize {
        self.captions.len()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let n = self.captions.len();
        let order = match shuffle_seed {
            Some(seed) => permutation(n, seed),
            None => (0..n).collect(),
        };
        let chunks: Vec<Vec<usize>> = order
            .chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        Box::new(chunks.into_iter().map(move |rows| {
            let captions: Vec<&Vec<u32>> = rows
                .iter()
                .map(|&i| {
                    let k = match shuffle_seed {
                        Some(seed) => {
                            derive_seed(&[seed, CAPTION_CHOICE, i as u64])
                                % self.captions[i].len() as u64
                        }
                        None => 0,
                    };
                    &self.captions[i][k as usize]
                })
                .collect();
            let (ids, mask) = self.padded(&captions)?;
            let device = self.pixels.device();
            let index = Tensor::from_vec(
                rows.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                rows.len(),
                device,
            )?;
            let mut batch = Batch::new(ids, pair_labels(rows.len(), device)?);
            batch.mask = Some(mask);
            batch.images = Some(self.pixels.index_select(&index, 0)?);
            Ok(batch)
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Model

/// CLIP with every weight a variable (`logit_scale` included), scoring a batch's pairs:
/// `logits_per_image` `[B, B]`, trained with the symmetric contrastive loss.
struct Contrastive {
    clip: Clip,
    trainable: NamedVars,
}

impl Contrastive {
    fn new(mut clip: Clip) -> candle_core::Result<Self> {
        let mut trainable = NamedVars::default();
        clip.visit_params(&mut |name, t| {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            trainable.push(name, var);
            Ok(())
        })?;
        Ok(Self { clip, trainable })
    }

    fn image_embeds(&self, pixels: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        Ok(self.clip.vision(pixels, &NoHooks, ctx)?.image_embeds)
    }

    fn text_embeds(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        ctx: &ForwardCtx,
    ) -> candle_core::Result<Tensor> {
        Ok(self.clip.text(ids, mask, &NoHooks, ctx)?.text_embeds)
    }
}

impl TrainModel for Contrastive {
    fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    fn logits(&self, _input: &Tensor, _ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        candle_core::bail!("the demo CLIP scores a batch's images against its captions")
    }

    fn batch_logits(&self, batch: &Batch, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let Some(pixels) = batch.images.as_ref() else {
            candle_core::bail!("a contrastive batch needs its images");
        };
        let image = self.image_embeds(pixels, ctx)?;
        let text = self.text_embeds(&batch.inputs, batch.mask.as_ref(), ctx)?;
        clip_logits(&image, &text, self.clip.logit_scale())
    }

    fn loss(
        &self,
        logits: &Tensor,
        _labels: &Tensor,
        label_smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        symmetric_contrastive_loss(logits, label_smoothing)
    }
}

/// Recall of every held-out caption against every held-out image, both ways
/// ([`retrieval_recalls`]: ties broken by the lower index).
fn held_out_recalls(
    clip: &Clip,
    data: &Pairs,
    batch_size: usize,
) -> anyhow::Result<RetrievalRecalls> {
    let ctx = ForwardCtx::eval();
    let n = data.captions.len();
    let mut image_parts = Vec::new();
    for start in (0..n).step_by(batch_size) {
        let pixels = data.pixels.narrow(0, start, batch_size.min(n - start))?;
        let embeds = clip.vision(&pixels, &NoHooks, &ctx)?.image_embeds;
        image_parts.push(l2_normalize(&embeds)?.detach());
    }
    let images = Tensor::cat(&image_parts, 0)?;
    let captions: Vec<(usize, &Vec<u32>)> = data
        .captions
        .iter()
        .enumerate()
        .flat_map(|(image, caps)| caps.iter().map(move |c| (image, c)))
        .collect();
    let mut text_parts = Vec::new();
    for chunk in captions.chunks(batch_size) {
        let ids: Vec<&Vec<u32>> = chunk.iter().map(|(_, c)| *c).collect();
        let (ids, mask) = data.padded(&ids)?;
        let embeds = clip.text(&ids, Some(&mask), &NoHooks, &ctx)?.text_embeds;
        text_parts.push(l2_normalize(&embeds)?.detach());
    }
    let texts = Tensor::cat(&text_parts, 0)?;
    let scores = texts
        .matmul(&images.t()?)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec2::<f64>()?;
    let owners: Vec<usize> = captions.iter().map(|(image, _)| *image).collect();
    Ok(retrieval_recalls(&scores, &owners)?)
}

/// The configuration as `config.json` of a Hugging Face `CLIPModel`.
fn hf_config(config: &ClipConfig) -> serde_json::Value {
    let mut json = serde_json::to_value(config).expect("a CLIP configuration serialises");
    let fields = json.as_object_mut().expect("a configuration is an object");
    fields.insert("model_type".into(), "clip".into());
    fields.insert("architectures".into(), serde_json::json!(["CLIPModel"]));
    fields.insert("initializer_factor".into(), 1.0.into());
    for (tower, model_type) in [
        ("text_config", "clip_text_model"),
        ("vision_config", "clip_vision_model"),
    ] {
        if let Some(sub) = fields.get_mut(tower).and_then(|v| v.as_object_mut()) {
            sub.insert("model_type".into(), model_type.into());
        }
    }
    json
}

/// Builds the tokenizer, renders the scenes and trains the CLIP from scratch on them; returns the
/// snapshot's files and the trained model (its weights variables).
fn pretrain(
    recipe: &DemoClipRecipe,
    data: &SceneCaptions,
    quiet: bool,
) -> anyhow::Result<(Pretrained, Clip)> {
    let device = Device::Cpu;
    let tokenizer = word_level_tokenizer(&data.tokenizer_corpus(), 0)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let (pad, eos) = (
        token_id(&tokenizer, PAD_TOKEN)?,
        token_id(&tokenizer, EOS_TOKEN)?,
    );
    let config = recipe.config(vocab_size, pad, eos);
    let train_set = Pairs::new(&data.train, &tokenizer, recipe, &device)?;
    let eval_set = Pairs::new(&data.eval, &tokenizer, recipe, &device)?;

    let init = SeededInit::new(recipe.seed, &device);
    let model = Contrastive::new(Clip::random(config.clone(), &init.fork("clip"))?)?;
    let cfg = PretrainSettings {
        epochs: recipe.epochs,
        batch_size: recipe.batch_size,
        lr: recipe.lr,
        weight_decay: recipe.weight_decay,
        label_smoothing: 0.0,
        seed: recipe.seed,
    }
    .train_config();
    run_pretraining("demo CLIP", &model, &train_set, &cfg, quiet)?;
    let Contrastive { mut clip, .. } = model;
    let recalls = held_out_recalls(&clip, &eval_set, 256)?;

    let mut tensors = HashMap::new();
    clip.visit_params(&mut |name, t| {
        tensors.insert(name.to_string(), t.detach().copy()?);
        Ok(())
    })?;
    let logit_scale = f64::from(clip.logit_scale().to_scalar::<f32>()?);
    let tokenizer_json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
    let [t2i_1, t2i_5, _] = recalls.text_to_image;
    let [i2t_1, i2t_5, _] = recalls.image_to_text;
    let n = data.eval.scenes.len();
    let files = Pretrained {
        config: hf_config(&config),
        tensors,
        card: serde_json::json!({
            "recipe": recipe,
            "data_fingerprint": data.fingerprint(recipe.image_size),
            "vocab_size": vocab_size,
            "logit_scale": logit_scale,
            "held_out": {
                "images": n,
                "captions": n * 5,
                "text_to_image_r1": t2i_1,
                "text_to_image_r5": t2i_5,
                "image_to_text_r1": i2t_1,
                "image_to_text_r5": i2t_5,
                "chance_text_to_image_r1": 1.0 / n as f64,
            },
        }),
        extra: vec![("tokenizer.json", tokenizer_json)],
        summary: format!(
            "held-out R@1 text-to-image {:.1}%, image-to-text {:.1}% ({n} scenes; chance {:.1}%)",
            100.0 * t2i_1,
            100.0 * i2t_1,
            100.0 / n as f64
        ),
    };
    Ok((files, clip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recipe small enough to pretrain in about a second in a test build.
    fn tiny_recipe() -> DemoClipRecipe {
        DemoClipRecipe {
            vision_hidden: 32,
            vision_intermediate: 64,
            vision_layers: 2,
            vision_heads: 2,
            text_hidden: 32,
            text_intermediate: 64,
            text_layers: 2,
            text_heads: 2,
            projection_dim: 16,
            train_scenes: 96,
            eval_scenes: 32,
            epochs: 1,
            batch_size: 32,
            ..DemoClipRecipe::default()
        }
    }

    /// The snapshot written to the cache loads back through `Clip::load` with the embeddings of
    /// the model that was trained, its configuration pools at `</s>`, and a second call takes
    /// it from the cache.
    #[test]
    fn the_cached_snapshot_loads_back_as_the_trained_model() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let paths = Paths::under(dir.path());
        let recipe = tiny_recipe();
        let data = SceneCaptions::draw(&recipe);
        let mut trained = None;
        let checkpoint = cached_or_pretrained(&paths, &data.snapshot(&recipe), true, || {
            let (files, model) = pretrain(&recipe, &data, true)?;
            trained = Some(model);
            Ok(files)
        })?;
        let trained = trained.expect("the first call pretrains");
        let loaded = Clip::load(&checkpoint.config, &checkpoint.weights, &Device::Cpu)?;
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&checkpoint.config)?)?;
        assert_eq!(config["model_type"], "clip");
        assert_eq!(config["text_config"]["eos_token_id"], 1);
        assert_eq!(config["text_config"]["pad_token_id"], 0);
        assert_eq!(loaded.config(), trained.config());

        let tokenizer = Tokenizer::from_file(checkpoint.config.with_file_name("tokenizer.json"))
            .map_err(anyhow::Error::msg)?;
        let eval = Pairs::new(&data.eval, &tokenizer, &recipe, &Device::Cpu)?;
        let batch = eval.batches(8, None).next().expect("a batch")?;
        let embeds = |clip: &Clip| -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
            let ctx = ForwardCtx::eval();
            let pixels = batch.images.as_ref().expect("images");
            let image = clip.vision(pixels, &NoHooks, &ctx)?.image_embeds;
            let text = clip
                .text(&batch.inputs, batch.mask.as_ref(), &NoHooks, &ctx)?
                .text_embeds;
            Ok((
                image.flatten_all()?.to_vec1()?,
                text.flatten_all()?.to_vec1()?,
            ))
        };
        assert_eq!(embeds(&trained)?, embeds(&loaded)?);
        assert_eq!(
            trained.logit_scale().to_scalar::<f32>()?,
            loaded.logit_scale().to_scalar::<f32>()?
        );

        // The loaded model's image tower has the sizes preflight reports without pretraining.
        let model = crate::backbone::BackboneModel::from_config(
            &checkpoint.config,
            &checkpoint.weights,
            &Device::Cpu,
            None,
        )?;
        assert_eq!(model.info(), recipe.info());

        let again = ensure_demo_clip_with(&paths, &recipe, true)?;
        assert_eq!(again, checkpoint);
        assert!(checkpoint.config.with_file_name("tokenizer.json").is_file());
        let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            checkpoint
                .config
                .with_file_name("peftbench_pretraining.json"),
        )?)?;
        assert!(card["held_out"]["text_to_image_r1"].is_number());
        Ok(())
    }

    #[test]
    fn pretraining_is_deterministic() -> anyhow::Result<()> {
        let recipe = tiny_recipe();
        let data = SceneCaptions::draw(&recipe);
        let (first, _) = pretrain(&recipe, &data, true)?;
        let (second, _) = pretrain(&recipe, &data, true)?;
        let mut names: Vec<&String> = first.tensors.keys().collect();
        names.sort();
        assert_eq!(names.len(), second.tensors.len());
        for name in names {
            let values = |t: &HashMap<String, Tensor>| t[name].flatten_all()?.to_vec1::<f32>();
            assert_eq!(values(&first.tensors)?, values(&second.tensors)?, "{name}");
        }
        assert_eq!(first.card, second.card);
        Ok(())
    }

    /// Every caption is in the tokenizer's vocabulary, ends with `</s>` (where the text tower
    /// pools) and decodes back to itself; the pretraining scenes are not the demo data's.
    #[test]
    fn the_tokenizer_round_trips_captions() -> anyhow::Result<()> {
        let recipe = DemoClipRecipe {
            train_scenes: 200,
            eval_scenes: 20,
            ..DemoClipRecipe::default()
        };
        let data = SceneCaptions::draw(&recipe);
        let tokenizer = word_level_tokenizer(&data.tokenizer_corpus(), 0)?;
        let (pad, eos) = (
            token_id(&tokenizer, PAD_TOKEN)?,
            token_id(&tokenizer, EOS_TOKEN)?,
        );
        let unk = token_id(&tokenizer, "<unk>")?;
        let config = recipe.config(tokenizer.get_vocab_size(true), pad, eos);
        assert_ne!(
            config.text_config.eos_token_id, 2,
            "2 selects the legacy pooling"
        );
        assert_ne!(
            pad, eos,
            "padding is masked only when it is not the end token"
        );
        let mut longest = 0;
        for caption in data
            .train
            .captions
            .iter()
            .chain(&data.eval.captions)
            .flatten()
        {
            let enc = tokenizer
                .encode(caption.as_str(), true)
                .map_err(anyhow::Error::msg)?;
            let ids = enc.get_ids();
            assert_eq!(ids.last(), Some(&eos), "{caption}");
            assert_eq!(ids.iter().filter(|&&id| id == eos).count(), 1);
            assert!(!ids.contains(&unk), "{caption}: {:?}", enc.get_tokens());
            let decoded = tokenizer.decode(ids, true).map_err(anyhow::Error::msg)?;
            assert_eq!(&decoded, caption);
            longest = longest.max(ids.len());
        }
        assert!(longest <= recipe.max_positions, "{longest} tokens");
        // Every caption word is a word of the demo language.
        let known = vocabulary();
        for caption in data.train.captions.iter().flatten() {
            for word in caption.split_whitespace() {
                assert!(known.iter().any(|k| k == word), "{word}");
            }
        }
        let demo_scenes: Vec<VlScene> = (0..50).map(|i| describe_scene(0, i)).collect();
        assert_ne!(data.train.seed, 0);
        assert_ne!(data.train.scenes[..50], demo_scenes[..]);
        Ok(())
    }
}
