//! CLIP's two towers, each as its own [`Backbone`], so that a PEFT method attaches to one tower
//! (or, twice, to both: `peftbench_methods::DualEncoderModel`) exactly as it attaches to a ViT or
//! a BERT.
//!
//! Each tower numbers its own blocks from 0 (the text tower's hook indices are not offset by the
//! vision blocks as in [`Clip`]'s single index space), its projections carry their Hugging Face
//! `CLIPModel` paths (`vision_model.encoder.layers.3.self_attn.q_proj`,
//! `text_model.encoder.layers.3.mlp.fc1`), and [`Backbone::visit_params`] visits only the tower's
//! own tensors, in [`Clip::visit_params`]' order: the tower's embeddings, norms and blocks, then
//! its projection into the shared space (`visual_projection` / `text_projection`). `logit_scale`
//! belongs to neither tower.
//!
//! What [`Backbone::forward_features`] returns, by default, is the tower's **retrieval embedding**:
//! the pooled token after the tower's final norm (the class token after `post_layernorm`; the
//! end-token state after `final_layer_norm`) through the tower's projection, not L2-normalised:
//! transformers' `get_image_features` / `get_text_features`, `[batch, projection_dim]`. Note that
//! this is not `info().hidden_size` wide; a classifier head over the tower (as
//! `peftbench_methods::PeftModel` sizes it from `hidden_size`) needs the pooled features before the
//! projection: [`ClipVisionBackbone::without_projection`] / [`ClipTextBackbone::without_projection`]
//! (then the projection is not one of the tower's parameters either).
//!
//! [`Backbone::forward_sequence`] returns every token's state after the final norm, `[batch,
//! tokens, hidden]`: for the image tower the class token and the patches with `post_layernorm`
//! applied to each (transformers' `last_hidden_state` stops before that norm, which CLIP applies
//! to the pooled class token only); for the text tower transformers' `last_hidden_state`.
//!
//! Sites: the projections, branches and block norms of [`Clip`], plus the final norm
//! ([`NormSite::Final`], layer `None`, at [`Backbone::final_norm_path`]) on the states the tower
//! pools from. Not sites (as in [`Clip`]): the `tokens` and `prefix` hooks, so prompt- and
//! prefix-based methods attach but change nothing yet.
//!
//! The text tower's input is token ids `[batch, tokens]`, right-padded. As BERT's backbone does,
//! the padding mask of the [`Backbone`] methods comes from the ids: the tokens that are not
//! `pad_token_id`, unless the configuration pads with its end token (`pad_token_id ==
//! eos_token_id`), where no mask is used. The attention is causal, so right padding never changes
//! the pooled embedding, only the padded positions' states. [`ClipTextBackbone::encode`] takes an
//! explicit mask (a tokenizer's `attention_mask`).

use candle_core::{DType, IndexOp, Result, Tensor};
use peftbench_core::{ops, ForwardCtx};

use super::Clip;
use crate::sites::{Hooks, Linear, LinearSite, NormSite, Sublayer};
use crate::{Backbone, BackboneInfo};

/// Family of [`ClipVisionBackbone`] in [`BackboneInfo::family`].
pub const CLIP_VISION_FAMILY: &str = "clip-vision";
/// Family of [`ClipTextBackbone`] in [`BackboneInfo::family`].
pub const CLIP_TEXT_FAMILY: &str = "clip-text";

/// One tower's pass: its token states and its pooled features.
#[derive(Debug, Clone)]
pub struct ClipTowerOutput {
    /// `[batch, tokens, hidden]` after the tower's final norm and its [`NormSite::Final`] hook
    /// (what [`Backbone::forward_sequence`] returns).
    pub sequence: Tensor,
    /// `[batch, projection_dim]`, the unnormalised retrieval embedding (or `[batch, hidden]`
    /// without the projection): what [`Backbone::forward_features`] returns.
    pub features: Tensor,
}

/// The tower's hooks seen through [`Clip`]'s single index space: `Clip` numbers the text blocks
/// after the vision blocks, a tower backbone numbers its own from 0.
struct Shifted<'a> {
    inner: &'a dyn Hooks,
    first: usize,
}

impl Hooks for Shifted<'_> {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.inner.linear(layer - self.first, site, x, base, ctx)
    }

    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        input: &Tensor,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.inner
            .sublayer(layer - self.first, kind, input, output, ctx)
    }

    fn tokens(&self, layer: usize, tokens: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.inner.tokens(layer - self.first, tokens, ctx)
    }

    fn prefix(
        &self,
        layer: usize,
        batch: usize,
        ctx: &ForwardCtx,
    ) -> Result<Option<(Tensor, Tensor)>> {
        self.inner.prefix(layer - self.first, batch, ctx)
    }

    fn norm(
        &self,
        layer: Option<usize>,
        site: NormSite,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.inner
            .norm(layer.map(|l| l - self.first), site, output, ctx)
    }
}

/// Which tower a [`Tower`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Vision,
    Text,
}

impl Side {
    /// The HF module prefix of the tower's own tensors.
    fn model_prefix(self) -> &'static str {
        match self {
            Side::Vision => "vision_model.",
            Side::Text => "text_model.",
        }
    }

    fn projection_name(self) -> &'static str {
        match self {
            Side::Vision => "visual_projection.weight",
            Side::Text => "text_projection.weight",
        }
    }
}

/// What both tower backbones share: the model (tensors are reference-counted, so each tower's
/// copy of [`Clip`] costs no weight memory; a tower only ever reads and replaces its own tensors),
/// the tower's sizes and whether it projects.
#[derive(Debug, Clone)]
struct Tower {
    clip: Clip,
    side: Side,
    info: BackboneInfo,
    /// The tower's first block in [`Clip`]'s hook index space.
    first: usize,
    project: bool,
}

impl Tower {
    fn new(clip: Clip, side: Side) -> Self {
        let info = match side {
            Side::Vision => vision_info(clip.config()),
            Side::Text => text_info(clip.config()),
        };
        let first = match side {
            Side::Vision => 0,
            Side::Text => clip.num_vision_blocks(),
        };
        Self {
            clip,
            side,
            info,
            first,
            project: true,
        }
    }

    /// `layer` in [`Clip`]'s index space, after checking it is one of the tower's blocks.
    fn clip_layer(&self, layer: usize) -> usize {
        assert!(
            layer < self.info.num_layers,
            "block {layer} does not exist: the {} backbone has {}",
            self.info.family,
            self.info.num_layers
        );
        self.first + layer
    }

    fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
        self.clip.linear(self.clip_layer(layer), site)
    }

    fn block_path(&self, layer: usize) -> String {
        self.clip.block_path(self.clip_layer(layer))
    }

    fn module_path(&self, layer: usize, site: LinearSite) -> String {
        self.clip.module_path(self.clip_layer(layer), site)
    }

    fn final_norm_path(&self) -> String {
        match self.side {
            Side::Vision => "vision_model.post_layernorm".into(),
            Side::Text => "text_model.final_layer_norm".into(),
        }
    }

    /// The tower's own tensors, in [`Clip::visit_params`]' order, its projection last (when the
    /// tower projects).
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>) -> Result<()> {
        let (prefix, projection) = (self.side.model_prefix(), self.side.projection_name());
        let project = self.project;
        self.clip.visit_params(&mut |name, t| {
            if name.starts_with(prefix) || (project && name == projection) {
                f(name, t)
            } else {
                Ok(())
            }
        })
    }

    fn projection(&self) -> &Tensor {
        match self.side {
            Side::Vision => self.clip.visual_projection(),
            Side::Text => self.clip.text_projection(),
        }
    }

    /// `pooled` `[batch, hidden]` through the tower's projection, when it projects.
    fn project(&self, pooled: Tensor) -> Result<Tensor> {
        if self.project {
            ops::linear(&pooled, self.projection(), None)
        } else {
            Ok(pooled)
        }
    }

    fn shifted<'a>(&self, hooks: &'a dyn Hooks) -> Shifted<'a> {
        Shifted {
            inner: hooks,
            first: self.first,
        }
    }
}

/// CLIP's image tower (`vision_model` and `visual_projection`) as a [`Backbone`] of family
/// `clip-vision`. Input: pixels `[batch, channels, image, image]`, normalised with CLIP's mean and
/// std. Blocks are numbered from 0 with HF paths (`vision_model.encoder.layers.N.self_attn.q_proj`);
/// the parameters are `vision_model.*` and `visual_projection.weight` (not `logit_scale`).
/// Features: the class token after `post_layernorm` through `visual_projection`, `[batch,
/// projection_dim]`, unnormalised (transformers' `get_image_features`); `[batch, hidden]` before
/// the projection [`ClipVisionBackbone::without_projection`], for classifier heads sized by
/// `info().hidden_size`. Sequence: every token after `post_layernorm`. The final-norm hook
/// ([`NormSite::Final`]) sees `post_layernorm`'s output; the `tokens` and `prefix` hooks are not
/// called (as in [`Clip`]).
#[derive(Debug, Clone)]
pub struct ClipVisionBackbone {
    tower: Tower,
}

impl ClipVisionBackbone {
    /// The image tower of `clip`, returning the projected image embedding as its features.
    pub fn new(clip: Clip) -> Self {
        Self {
            tower: Tower::new(clip, Side::Vision),
        }
    }

    /// The tower returning the pooled class token after `post_layernorm`, `[batch, hidden]`, as
    /// its features (for a classifier head); `visual_projection` is then not visited.
    pub fn without_projection(mut self) -> Self {
        self.tower.project = false;
        self
    }

    /// Whether [`Backbone::forward_features`] is the projected embedding.
    pub fn projects(&self) -> bool {
        self.tower.project
    }

    /// The model this tower reads (its other tower is unused here).
    pub fn clip(&self) -> &Clip {
        &self.tower.clip
    }

    /// Width of [`Backbone::forward_features`]: `projection_dim`, or the hidden size without the
    /// projection.
    pub fn features_dim(&self) -> usize {
        if self.tower.project {
            self.tower.clip.config().projection_dim
        } else {
            self.tower.info.hidden_size
        }
    }

    /// The last block's output `[batch, 1 + patches, hidden]` (before `post_layernorm`), with
    /// `hooks` at every site.
    fn states(&self, pixels: &Tensor, hooks: &dyn Hooks, ctx: &ForwardCtx) -> Result<Tensor> {
        Ok(self
            .tower
            .clip
            .vision(pixels, &self.tower.shifted(hooks), ctx)?
            .last_hidden_state)
    }

    /// The features alone: only the class token goes through `post_layernorm`.
    fn features(&self, pixels: &Tensor, hooks: &dyn Hooks, ctx: &ForwardCtx) -> Result<Tensor> {
        let class = self.states(pixels, hooks, ctx)?.i((.., 0, ..))?;
        let pooled = self.tower.clip.vision_post_layernorm().forward(&class)?;
        let pooled = hooks.norm(None, NormSite::Final, pooled, ctx)?;
        self.tower.project(pooled)
    }

    /// Both outputs of one pass over `pixels`: every token after `post_layernorm` (and the
    /// [`NormSite::Final`] hook) and the features, from the class token's row of those states.
    pub fn encode(
        &self,
        pixels: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<ClipTowerOutput> {
        let states = self.states(pixels, hooks, ctx)?;
        let normed = self.tower.clip.vision_post_layernorm().forward(&states)?;
        let sequence = hooks.norm(None, NormSite::Final, normed, ctx)?;
        Ok(ClipTowerOutput {
            features: self.tower.project(sequence.i((.., 0, ..))?)?,
            sequence,
        })
    }
}

/// CLIP's text tower (`text_model` and `text_projection`) as a [`Backbone`] of family
/// `clip-text`. Input: right-padded token ids `[batch, tokens]` (u32 or i64), at most
/// `max_position_embeddings` tokens; the [`Backbone`] methods derive the padding mask from the
/// ids as BERT's backbone does ([`ClipTextBackbone::padding_mask`]), [`ClipTextBackbone::encode`]
/// takes a tokenizer's mask. Blocks are numbered from 0 with HF paths
/// (`text_model.encoder.layers.N.self_attn.q_proj`); the parameters are `text_model.*` and
/// `text_projection.weight`. Features: the end-token state (pooled by [`Clip::text`]'s rule) after
/// `final_layer_norm` through `text_projection`, `[batch, projection_dim]`, unnormalised
/// (transformers' `get_text_features`), or `[batch, hidden]`
/// [`ClipTextBackbone::without_projection`]. Sequence: the token states after `final_layer_norm`.
/// The final-norm hook sees those states; the `tokens` and `prefix` hooks are not called.
#[derive(Debug, Clone)]
pub struct ClipTextBackbone {
    tower: Tower,
}

impl ClipTextBackbone {
    /// The text tower of `clip`, returning the projected text embedding as its features.
    pub fn new(clip: Clip) -> Self {
        Self {
            tower: Tower::new(clip, Side::Text),
        }
    }

    /// The tower returning the pooled end-token state after `final_layer_norm`, `[batch,
    /// hidden]`, as its features; `text_projection` is then not visited.
    pub fn without_projection(mut self) -> Self {
        self.tower.project = false;
        self
    }

    /// Whether [`Backbone::forward_features`] is the projected embedding.
    pub fn projects(&self) -> bool {
        self.tower.project
    }

    /// The model this tower reads (its other tower is unused here).
    pub fn clip(&self) -> &Clip {
        &self.tower.clip
    }

    /// Width of [`Backbone::forward_features`]: `projection_dim`, or the hidden size without the
    /// projection.
    pub fn features_dim(&self) -> usize {
        if self.tower.project {
            self.tower.clip.config().projection_dim
        } else {
            self.tower.info.hidden_size
        }
    }

    /// The padding mask the [`Backbone`] methods use for `ids`: 1 where the id is not
    /// `pad_token_id`, u32 `[batch, tokens]`; `None` when the configuration pads with its end
    /// token (the mask would hide the end token itself).
    pub fn padding_mask(&self, ids: &Tensor) -> Result<Option<Tensor>> {
        let tc = &self.tower.clip.config().text_config;
        if tc.pad_token_id == tc.eos_token_id {
            return Ok(None);
        }
        Ok(Some(
            ids.to_dtype(DType::U32)?
                .ne(tc.pad_token_id)?
                .to_dtype(DType::U32)?,
        ))
    }

    /// Both outputs of one pass over `ids` `[batch, tokens]` with the 0/1 padding mask
    /// `attention_mask` `[batch, tokens]` (`None`: every token attended): the token states after
    /// `final_layer_norm` and the features, pooled at the end token ([`Clip::text`]'s rule).
    pub fn encode(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<ClipTowerOutput> {
        let clip = &self.tower.clip;
        if let Some(mask) = attention_mask {
            if mask.dims() != ids.dims() {
                candle_core::bail!(
                    "attention mask {:?} does not match token ids {:?}",
                    mask.dims(),
                    ids.dims()
                );
            }
        }
        let states = clip
            .text(ids, attention_mask, &self.tower.shifted(hooks), ctx)?
            .last_hidden_state;
        let states = hooks.norm(None, NormSite::Final, states, ctx)?;
        let (b, t, d) = states.dims3()?;
        let rows: Vec<u32> = ids
            .to_dtype(DType::U32)?
            .to_vec2::<u32>()?
            .iter()
            .enumerate()
            .map(|(r, row)| (r * t + clip.pooled_position(row)) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, states.device())?;
        let pooled = states.reshape((b * t, d))?.index_select(&rows, 0)?;
        Ok(ClipTowerOutput {
            features: self.tower.project(pooled)?,
            sequence: states,
        })
    }
}

/// The image tower's sizes, from the configuration alone.
pub fn vision_info(cfg: &crate::ClipConfig) -> BackboneInfo {
    let vc = &cfg.vision_config;
    BackboneInfo {
        family: CLIP_VISION_FAMILY.into(),
        hidden_size: vc.hidden_size,
        num_layers: vc.num_hidden_layers,
        num_heads: vc.num_attention_heads,
        intermediate_size: vc.intermediate_size,
        num_tokens: vc.num_patches() + 1,
    }
}

/// The text tower's sizes, from the configuration alone.
pub fn text_info(cfg: &crate::ClipConfig) -> BackboneInfo {
    let tc = &cfg.text_config;
    BackboneInfo {
        family: CLIP_TEXT_FAMILY.into(),
        hidden_size: tc.hidden_size,
        num_layers: tc.num_hidden_layers,
        num_heads: tc.num_attention_heads,
        intermediate_size: tc.intermediate_size,
        num_tokens: tc.max_position_embeddings,
    }
}

/// Both towers of `clip` as backbones, each returning its projected embedding.
pub fn clip_towers(clip: Clip) -> (ClipVisionBackbone, ClipTextBackbone) {
    (
        ClipVisionBackbone::new(clip.clone()),
        ClipTextBackbone::new(clip),
    )
}

/// The [`Backbone`] methods both towers implement the same way, through their [`Tower`].
macro_rules! tower_backbone_common {
    () => {
        fn info(&self) -> &BackboneInfo {
            &self.tower.info
        }

        fn linear_dims(&self, site: LinearSite) -> (usize, usize) {
            self.tower.info.linear_dims(site)
        }

        fn linear(&self, layer: usize, site: LinearSite) -> &Linear {
            self.tower.linear(layer, site)
        }

        fn block_path(&self, layer: usize) -> String {
            self.tower.block_path(layer)
        }

        fn final_norm_path(&self) -> Option<String> {
            Some(self.tower.final_norm_path())
        }

        fn module_path(&self, layer: usize, site: LinearSite) -> String {
            self.tower.module_path(layer, site)
        }

        fn visit_params(
            &mut self,
            f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
        ) -> Result<()> {
            self.tower.visit_params(f)
        }
    };
}

impl Backbone for ClipVisionBackbone {
    tower_backbone_common!();

    /// The image embedding `[batch, projection_dim]` (transformers' `get_image_features`), or the
    /// pooled class token `[batch, hidden]` [`ClipVisionBackbone::without_projection`].
    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.features(input, hooks, ctx)
    }

    /// The class token and the patches after `post_layernorm`, `[batch, 1 + patches, hidden]`.
    fn forward_sequence(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        Ok(self.encode(input, hooks, ctx)?.sequence)
    }
}

impl Backbone for ClipTextBackbone {
    tower_backbone_common!();

    /// The text embedding `[batch, projection_dim]` (transformers' `get_text_features`), or the
    /// pooled end-token state `[batch, hidden]` [`ClipTextBackbone::without_projection`].
    fn forward_features(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let mask = self.padding_mask(input)?;
        Ok(self.encode(input, mask.as_ref(), hooks, ctx)?.features)
    }

    /// The token states after `final_layer_norm`, `[batch, tokens, hidden]`.
    fn forward_sequence(
        &self,
        input: &Tensor,
        hooks: &dyn Hooks,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let mask = self.padding_mask(input)?;
        Ok(self.encode(input, mask.as_ref(), hooks, ctx)?.sequence)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};
    use std::path::PathBuf;

    use candle_core::{Device, Result, Tensor};
    use peftbench_core::ForwardCtx;

    use super::*;
    use crate::NoHooks;

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

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_tiny")
    }

    /// The tiny transformers checkpoint of ci/fixtures/clip_tiny.py (vision: 24 wide, 2 blocks;
    /// text: 16 wide, 2 blocks, pad 1, end token 40; projections to 12) and its expected outputs.
    fn fixture() -> (Clip, HashMap<String, Tensor>) {
        let dir = fixture_dir();
        let clip = Clip::load(
            &dir.join("model/config.json"),
            &dir.join("model/model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let expected =
            candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
        (clip, expected)
    }

    /// Through [`Backbone`], each tower computes what [`Clip`]'s own forward and transformers
    /// compute: the projected embeddings, the text states; the image states are the post-normed
    /// ones.
    #[test]
    fn clip_towers_match_the_clip_forward() -> Result<()> {
        let (clip, exp) = fixture();
        let (vision, text) = clip_towers(clip.clone());
        let ctx = ForwardCtx::eval();
        let (pixels, ids, mask) = (
            &exp["pixel_values"],
            &exp["input_ids"],
            &exp["attention_mask"],
        );
        let image = clip.vision(pixels, &NoHooks, &ctx)?;
        let txt = clip.text(ids, Some(mask), &NoHooks, &ctx)?;

        let features = vision.forward_features(pixels, &NoHooks, &ctx)?;
        let sequence = vision.forward_sequence(pixels, &NoHooks, &ctx)?;
        let normed = clip
            .vision_post_layernorm()
            .forward(&image.last_hidden_state)?;
        let text_features = text.forward_features(ids, &NoHooks, &ctx)?;
        let text_sequence = text.forward_sequence(ids, &NoHooks, &ctx)?;
        let encoded = text.encode(ids, Some(mask), &NoHooks, &ctx)?;
        let errors = [
            (
                "image features vs Clip",
                max_abs_diff(&features, &image.image_embeds),
                0.0,
            ),
            (
                "image features vs transformers",
                max_abs_diff(&features, &exp["image_embeds"]),
                1e-5,
            ),
            (
                "image sequence vs post-normed Clip states",
                max_abs_diff(&sequence, &normed),
                0.0,
            ),
            (
                "text features vs Clip",
                max_abs_diff(&text_features, &txt.text_embeds),
                0.0,
            ),
            (
                "text features vs transformers",
                max_abs_diff(&text_features, &exp["text_embeds"]),
                1e-5,
            ),
            (
                "text sequence vs Clip",
                max_abs_diff(&text_sequence, &txt.last_hidden_state),
                0.0,
            ),
            (
                "text sequence vs transformers",
                max_abs_diff(&text_sequence, &exp["text_last_hidden_state"]),
                1e-5,
            ),
            (
                "text encode with the tokenizer's mask",
                max_abs_diff(&encoded.features, &text_features),
                0.0,
            ),
        ];
        for (what, err, tol) in errors {
            println!("{what}: max |err| {err:.2e}");
            assert!(err <= tol, "{what} differ by {err}");
        }
        assert_eq!(sequence.dims(), &[2, 17, 24]);
        assert_eq!(features.dims(), &[2, 12]);
        assert_eq!((vision.features_dim(), text.features_dim()), (12, 12));
        // encode's features are those of forward_features (one pass for both).
        let both = vision.encode(pixels, &NoHooks, &ctx)?;
        assert!(max_abs_diff(&both.features, &features) < 1e-6);
        Ok(())
    }

    /// Without the projection the features are the post-normed pooled token, `hidden` wide, and
    /// the projection is no longer a parameter of the tower.
    #[test]
    fn clip_towers_without_projection_pool_before_it() -> Result<()> {
        let (clip, exp) = fixture();
        let ctx = ForwardCtx::eval();
        let mut vision = ClipVisionBackbone::new(clip.clone()).without_projection();
        let mut text = ClipTextBackbone::new(clip.clone()).without_projection();
        assert!(!vision.projects() && !text.projects());
        let pooled = vision.forward_features(&exp["pixel_values"], &NoHooks, &ctx)?;
        assert_eq!(pooled.dims(), &[2, vision.features_dim()]);
        let projected = ops::linear(&pooled, clip.visual_projection(), None)?;
        assert!(max_abs_diff(&projected, &exp["image_embeds"]) < 1e-5);
        let pooled = text.forward_features(&exp["input_ids"], &NoHooks, &ctx)?;
        assert_eq!(pooled.dims(), &[3, 16]);
        let projected = ops::linear(&pooled, clip.text_projection(), None)?;
        assert!(max_abs_diff(&projected, &exp["text_embeds"]) < 1e-5);
        for backbone in [&mut vision as &mut dyn Backbone, &mut text] {
            backbone.visit_params(&mut |name, _| {
                assert!(!name.ends_with("projection.weight"), "{name}");
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Records the `(block, site)` of every projection hook, the blocks of the branch hooks and
    /// the final-norm calls, and doubles one site's output.
    struct Recorder {
        linear: RefCell<BTreeSet<(usize, LinearSite)>>,
        sublayer: RefCell<BTreeSet<usize>>,
        norms: RefCell<Vec<(Option<usize>, NormSite)>>,
        scale: Option<(usize, LinearSite)>,
    }

    impl Recorder {
        fn new(scale: Option<(usize, LinearSite)>) -> Self {
            Self {
                linear: RefCell::default(),
                sublayer: RefCell::default(),
                norms: RefCell::default(),
                scale,
            }
        }
    }

    impl Hooks for Recorder {
        fn linear(
            &self,
            layer: usize,
            site: LinearSite,
            x: &Tensor,
            base: &Linear,
            _ctx: &ForwardCtx,
        ) -> Result<Tensor> {
            self.linear.borrow_mut().insert((layer, site));
            let y = base.forward(x)?;
            if self.scale == Some((layer, site)) {
                y * 2.0
            } else {
                Ok(y)
            }
        }

        fn sublayer(
            &self,
            layer: usize,
            _kind: Sublayer,
            _input: &Tensor,
            output: Tensor,
            _ctx: &ForwardCtx,
        ) -> Result<Tensor> {
            self.sublayer.borrow_mut().insert(layer);
            Ok(output)
        }

        fn norm(
            &self,
            layer: Option<usize>,
            site: NormSite,
            output: Tensor,
            _ctx: &ForwardCtx,
        ) -> Result<Tensor> {
            self.norms.borrow_mut().push((layer, site));
            Ok(output)
        }
    }

    /// Each tower calls its hooks with its own block numbers, 0 to its depth, and the final norm
    /// once; a hook on a text block changes the text embedding.
    #[test]
    fn clip_tower_hooks_number_their_own_blocks() -> Result<()> {
        let (clip, exp) = fixture();
        let (vision, text) = clip_towers(clip);
        let ctx = ForwardCtx::eval();
        let all: BTreeSet<_> = (0..2)
            .flat_map(|l| LinearSite::ALL.map(|s| (l, s)))
            .collect();
        let run_vision = |h: &dyn Hooks| vision.forward_features(&exp["pixel_values"], h, &ctx);
        let run_text = |h: &dyn Hooks| text.forward_features(&exp["input_ids"], h, &ctx);
        let runs: [(&str, &dyn Fn(&dyn Hooks) -> Result<Tensor>); 2] =
            [("vision", &run_vision), ("text", &run_text)];
        for (name, run) in runs {
            let recorder = Recorder::new(None);
            let plain = run(&recorder)?;
            assert_eq!(*recorder.linear.borrow(), all, "{name}");
            assert_eq!(
                *recorder.sublayer.borrow(),
                BTreeSet::from([0, 1]),
                "{name}"
            );
            let finals: Vec<_> = recorder
                .norms
                .borrow()
                .iter()
                .filter(|(l, _)| l.is_none())
                .copied()
                .collect();
            assert_eq!(finals, vec![(None, NormSite::Final)], "{name}");
            let scaled = run(&Recorder::new(Some((1, LinearSite::Value))))?;
            let changed = max_abs_diff(&scaled, &plain);
            assert!(
                changed > 1e-3,
                "{name}: the block-1 hook had no effect ({changed})"
            );
        }
        Ok(())
    }

    /// Sizes, Hugging Face module paths, and the parameters: each tower visits its own tensors
    /// under their checkpoint names, in a fixed order, and together with `logit_scale` they are
    /// the checkpoint.
    #[test]
    fn clip_tower_paths_and_parameters() -> Result<()> {
        let (clip, _) = fixture();
        let (mut vision, mut text) = clip_towers(clip);
        assert_eq!(vision.info().family, "clip-vision");
        assert_eq!(text.info().family, "clip-text");
        assert_eq!(
            (
                vision.info().hidden_size,
                vision.info().num_layers,
                vision.info().num_tokens
            ),
            (24, 2, 17)
        );
        assert_eq!(
            (
                text.info().hidden_size,
                text.info().num_heads,
                text.info().num_tokens
            ),
            (16, 2, 10)
        );
        assert_eq!(
            vision.module_path(1, LinearSite::Query),
            "vision_model.encoder.layers.1.self_attn.q_proj"
        );
        assert_eq!(
            text.module_path(1, LinearSite::AttentionOutput),
            "text_model.encoder.layers.1.self_attn.out_proj"
        );
        assert_eq!(text.block_path(0), "text_model.encoder.layers.0");
        assert_eq!(
            vision.final_norm_path().as_deref(),
            Some("vision_model.post_layernorm")
        );
        assert_eq!(
            text.final_norm_path().as_deref(),
            Some("text_model.final_layer_norm")
        );
        assert_eq!(vision.linear_dims(LinearSite::Fc1), (24, 40));
        assert_eq!(text.linear_dims(LinearSite::Fc2), (32, 16));
        assert_eq!(text.linear(1, LinearSite::Fc2).weight.dims(), &[16, 32]);
        assert_eq!(vision.linear(1, LinearSite::Fc2).weight.dims(), &[24, 40]);

        let file = candle_core::safetensors::load(
            fixture_dir().join("model/model.safetensors"),
            &Device::Cpu,
        )?;
        let names = |b: &mut dyn Backbone| -> Vec<String> {
            let mut v = Vec::new();
            b.visit_params(&mut |name, t| {
                assert_eq!(t.dims(), file[name].dims(), "{name}");
                v.push(name.to_string());
                Ok(())
            })
            .unwrap();
            v
        };
        let (v1, t1) = (names(&mut vision), names(&mut text));
        assert_eq!(v1, names(&mut vision), "the order is fixed");
        assert!(v1
            .iter()
            .all(|n| n.starts_with("vision_model.") || n == "visual_projection.weight"));
        assert!(t1
            .iter()
            .all(|n| n.starts_with("text_model.") || n == "text_projection.weight"));
        assert_eq!(
            v1.last().map(String::as_str),
            Some("visual_projection.weight")
        );
        assert_eq!(v1[0], "vision_model.embeddings.class_embedding");
        let mut union: BTreeSet<String> = v1.iter().chain(&t1).cloned().collect();
        assert_eq!(union.len(), v1.len() + t1.len());
        union.insert("logit_scale".into());
        assert_eq!(union, file.keys().cloned().collect::<BTreeSet<_>>());
        let counted: usize = v1.iter().map(|n| file[n].elem_count()).sum();
        assert_eq!(vision.num_params(), counted);
        Ok(())
    }

    /// Neither tower has cross-attention: the sites are refused before a method attaches.
    #[test]
    fn clip_towers_refuse_cross_attention_sites() {
        let (clip, _) = fixture();
        let (vision, text) = clip_towers(clip);
        for b in [&vision as &dyn Backbone, &text] {
            assert!(!b.info().has_cross_attention());
            assert!(!b.has_linear(0, LinearSite::CrossQuery));
            assert!(b.has_linear(1, LinearSite::Query) && !b.has_linear(2, LinearSite::Query));
            let err = b
                .info()
                .check_sites(&[LinearSite::Query, LinearSite::CrossValue])
                .unwrap_err();
            assert!(
                err.contains(&format!("the {} backbone is encoder-only", b.info().family)),
                "{err}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "block 2 does not exist: the clip-text backbone has 2")]
    fn clip_text_tower_has_no_block_past_its_depth() {
        let (clip, _) = fixture();
        let (_, text) = clip_towers(clip);
        let _ = text.linear(2, LinearSite::Query);
    }

    /// Replacing a tensor through one tower's `visit_params` (full fine-tuning) changes that
    /// tower's output and leaves the other tower's, built from the same model, alone.
    #[test]
    fn clip_tower_parameters_are_the_towers_own() -> Result<()> {
        let (clip, exp) = fixture();
        let (mut vision, text) = clip_towers(clip);
        let ctx = ForwardCtx::eval();
        let before = vision.forward_features(&exp["pixel_values"], &NoHooks, &ctx)?;
        let text_before = text.forward_features(&exp["input_ids"], &NoHooks, &ctx)?;
        vision.visit_params(&mut |name, t| {
            if name == "vision_model.encoder.layers.0.self_attn.v_proj.weight" {
                *t = t.zeros_like()?;
            }
            Ok(())
        })?;
        let after = vision.forward_features(&exp["pixel_values"], &NoHooks, &ctx)?;
        assert!(max_abs_diff(&before, &after) > 1e-3);
        let text_after = text.forward_features(&exp["input_ids"], &NoHooks, &ctx)?;
        assert_eq!(max_abs_diff(&text_before, &text_after), 0.0);
        Ok(())
    }

    /// The mask the text tower derives from its ids: the non-pad tokens, none when the
    /// configuration pads with its end token.
    #[test]
    fn clip_text_padding_mask_follows_pad_token() -> Result<()> {
        let (clip, exp) = fixture();
        let text = ClipTextBackbone::new(clip.clone());
        let mask = text.padding_mask(&exp["input_ids"])?.unwrap();
        let expected = exp["attention_mask"].to_dtype(DType::U32)?;
        assert_eq!(mask.to_vec2::<u32>()?, expected.to_vec2::<u32>()?);
        let mut cfg = clip.config().clone();
        cfg.text_config.pad_token_id = cfg.text_config.eos_token_id;
        let tensors = candle_core::safetensors::load(
            fixture_dir().join("model/model.safetensors"),
            &Device::Cpu,
        )?;
        let padded_with_eos =
            ClipTextBackbone::new(Clip::from_tensors(cfg, &tensors, "clip_tiny")?);
        assert!(padded_with_eos.padding_mask(&exp["input_ids"])?.is_none());
        Ok(())
    }
}
