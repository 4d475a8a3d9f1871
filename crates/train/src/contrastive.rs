//! CLIP's symmetric contrastive (InfoNCE) objective (Radford et al., 2021, "Learning Transferable
//! Visual Models From Natural Language Supervision", arXiv:2103.00020, figure 3), as transformers'
//! `CLIPModel(..., return_loss=True)` computes it for a batch of `B` matching image-text pairs:
//!
//! ```text
//! i = image_embeds / ‖image_embeds‖,  t = text_embeds / ‖text_embeds‖        (rows, L2)
//! logits_per_text  = min(exp(logit_scale), 100) · t iᵀ      [B texts, B images]
//! logits_per_image = logits_per_textᵀ
//! loss = (CE(logits_per_text, arange(B)) + CE(logits_per_image, arange(B))) / 2
//! ```
//!
//! The cap of the scale at 100 is CLIP's (the paper clips the learned temperature "to prevent
//! scaling the logits by more than 100"; its training code clamps `logit_scale` to `ln 100` after
//! every step). Here it is part of the forward pass, so a scale above the cap gives the capped
//! logits and no gradient to the scale. transformers' forward has no cap; below it the two agree.
//!
//! Built from candle primitives with a backward pass (the cross-entropy is [`cross_entropy`]'s).

use candle_core::{Result, Tensor, D};

use crate::loss::cross_entropy;

/// The largest factor the similarities are multiplied by: CLIP's cap on `exp(logit_scale)`.
pub const MAX_LOGIT_SCALE: f64 = 100.0;

/// Rows of `x` `[N, D]` divided by their L2 norms, as transformers' CLIP
/// (`x / x.pow(2).sum(-1, keepdim=True).pow(0.5)`; no epsilon, so a zero row gives NaN as there).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

/// The factor multiplying the cosine similarities, `min(exp(logit_scale), 100)`, for a scalar
/// (rank 0 or one element) `logit_scale`: returned as a scalar tensor in its dtype.
pub fn logit_scale_factor(logit_scale: &Tensor) -> Result<Tensor> {
    if logit_scale.elem_count() != 1 {
        candle_core::bail!(
            "logit_scale must be a scalar, got shape {:?}",
            logit_scale.dims()
        );
    }
    logit_scale.reshape(())?.exp()?.minimum(MAX_LOGIT_SCALE)
}

/// `logits_per_image` `[images, texts]`: the cosine similarities of the L2-normalised
/// `image_embeds` `[images, D]` and `text_embeds` `[texts, D]` times
/// [`logit_scale_factor`]`(logit_scale)` (transformers' `CLIPOutput.logits_per_image`; its
/// transpose is `logits_per_text`). Computed in the embeddings' dtype.
pub fn clip_logits(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    logit_scale: &Tensor,
) -> Result<Tensor> {
    let (_, di) = image_embeds.dims2()?;
    let (_, dt) = text_embeds.dims2()?;
    if di != dt {
        candle_core::bail!(
            "clip_logits: image embeddings of width {di} and text embeddings of width {dt}"
        );
    }
    let scale = logit_scale_factor(&logit_scale.to_dtype(image_embeds.dtype())?)?;
    l2_normalize(image_embeds)?
        .matmul(&l2_normalize(&text_embeds.to_dtype(image_embeds.dtype())?)?.t()?)?
        .broadcast_mul(&scale)
}

/// The symmetric contrastive loss of square logits `[B, B]` whose diagonal holds the matching
/// pairs (`logits_per_image` or `logits_per_text`: the loss is the same for either):
/// `(CE(logits, arange) + CE(logitsᵀ, arange)) / 2` with label smoothing `label_smoothing` (0 for
/// CLIP's loss) in each cross-entropy. A scalar of the logits' dtype.
pub fn symmetric_contrastive_loss(logits: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    let (rows, cols) = logits.dims2()?;
    if rows != cols || rows == 0 {
        candle_core::bail!(
            "symmetric_contrastive_loss: need square [B, B] logits of B matching pairs, got {:?}",
            logits.dims()
        );
    }
    let targets = Tensor::arange(0u32, rows as u32, logits.device())?;
    let per_image = cross_entropy(logits, &targets, label_smoothing)?;
    let per_text = cross_entropy(&logits.t()?.contiguous()?, &targets, label_smoothing)?;
    ((per_image + per_text)? * 0.5)?.to_dtype(logits.dtype())
}

/// CLIP's loss for `B` matching pairs of unnormalised embeddings `image_embeds` and `text_embeds`
/// `[B, D]`: [`symmetric_contrastive_loss`] of [`clip_logits`], transformers'
/// `CLIPModel(..., return_loss=True).loss` below the cap on the scale.
pub fn clip_contrastive_loss(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    logit_scale: &Tensor,
) -> Result<Tensor> {
    if image_embeds.dim(0)? != text_embeds.dim(0)? {
        candle_core::bail!(
            "clip_contrastive_loss: {} images and {} texts; the loss needs matching pairs",
            image_embeds.dim(0)?,
            text_embeds.dim(0)?
        );
    }
    symmetric_contrastive_loss(&clip_logits(image_embeds, text_embeds, logit_scale)?, 0.0)
}

/// The labels of a batch of `batch` matching pairs: `arange(batch)` as u32 (the class of image `k`
/// is text `k`), for [`crate::evaluate`]'s in-batch accuracy of `logits_per_image`.
pub fn pair_labels(batch: usize, device: &candle_core::Device) -> Result<Tensor> {
    Tensor::arange(0u32, batch as u32, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use std::collections::HashMap;

    /// transformers' `CLIPModel` on the tiny random checkpoint of ci/fixtures/clip_tiny.py: inputs,
    /// embeddings, and for the logit scales 2 (`s2_`) and 4 (`s4_`) the loss, logits and the
    /// loss's gradients; written by `ci/fixtures/clip_contrastive.py` (regenerate all fixtures
    /// with `ci/fixtures/regenerate.sh`).
    fn transformers_fixture() -> HashMap<String, Tensor> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/clip_contrastive.safetensors");
        candle_core::safetensors::load(path, &Device::Cpu).unwrap()
    }

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

    #[test]
    fn contrastive_loss_matches_transformers_clip_model() -> Result<()> {
        let fx = transformers_fixture();
        for prefix in ["s2_", "s4_"] {
            let image = Var::from_tensor(&fx["image_embeds"])?;
            let text = Var::from_tensor(&fx["text_embeds"])?;
            let scale = Var::from_tensor(&fx[&format!("{prefix}logit_scale")])?;
            let logits = clip_logits(&image, &text, &scale)?;
            let loss = symmetric_contrastive_loss(&logits, 0.0)?;
            let grads = loss.backward()?;
            let errors = [
                (
                    "loss",
                    max_abs_diff(&loss, &fx[&format!("{prefix}loss")]),
                    1e-5,
                ),
                (
                    "logits_per_image",
                    max_abs_diff(&logits, &fx[&format!("{prefix}logits_per_image")]),
                    1e-5,
                ),
                (
                    "grad_image_embeds",
                    max_abs_diff(
                        grads.get(&image).unwrap(),
                        &fx[&format!("{prefix}grad_image_embeds")],
                    ),
                    5e-6,
                ),
                (
                    "grad_text_embeds",
                    max_abs_diff(
                        grads.get(&text).unwrap(),
                        &fx[&format!("{prefix}grad_text_embeds")],
                    ),
                    5e-6,
                ),
                (
                    "grad_logit_scale",
                    max_abs_diff(
                        grads.get(&scale).unwrap(),
                        &fx[&format!("{prefix}grad_logit_scale")],
                    ),
                    1e-5,
                ),
            ];
            for (what, err, tol) in errors {
                println!("{prefix}{what}: max |err| {err:.2e}");
                assert!(
                    err < tol,
                    "{prefix}{what} differs from transformers by {err}"
                );
            }
            // The convenience form computes the same loss.
            let direct = clip_contrastive_loss(&image, &text, &scale)?;
            assert_eq!(max_abs_diff(&direct, &loss), 0.0);
        }
        Ok(())
    }

    /// A small float64 case: 3 pairs of 4-wide embeddings and a scale of exp(1.3).
    fn tiny_case() -> Result<(Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        let image = Tensor::from_vec(
            vec![
                0.3f64, -1.2, 0.8, 0.1, 1.5, 0.4, -0.3, 0.9, -0.7, 0.2, 1.1, -0.5,
            ],
            (3, 4),
            &dev,
        )?;
        let text = Tensor::from_vec(
            vec![
                0.9f64, -0.4, 0.6, -0.2, 0.1, 1.3, -0.8, 0.5, -1.0, 0.7, 0.3, 0.4,
            ],
            (3, 4),
            &dev,
        )?;
        Ok((image, text, Tensor::new(1.3f64, &dev)?))
    }

    fn loss_of(image: &Tensor, text: &Tensor, scale: &Tensor) -> f64 {
        clip_contrastive_loss(image, text, scale)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Central differences in float64 (step 1e-6) against the backward pass, for every entry of
    /// both embeddings and the logit scale.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let (image, text, scale) = tiny_case()?;
        let (vi, vt, vs) = (
            Var::from_tensor(&image)?,
            Var::from_tensor(&text)?,
            Var::from_tensor(&scale)?,
        );
        let grads = clip_contrastive_loss(&vi, &vt, &vs)?.backward()?;
        let h = 1e-6;
        let mut worst = 0f64;
        let inputs = [(&image, &vi), (&text, &vt), (&scale, &vs)];
        for (which, (value, var)) in inputs.iter().enumerate() {
            let analytic = grads.get(var).unwrap().flatten_all()?.to_vec1::<f64>()?;
            let flat = value.flatten_all()?.to_vec1::<f64>()?;
            for k in 0..flat.len() {
                let nudged = |delta: f64| -> Result<Tensor> {
                    let mut v = flat.clone();
                    v[k] += delta;
                    Tensor::from_vec(v, value.shape(), value.device())
                };
                let (plus, minus) = (nudged(h)?, nudged(-h)?);
                let at = |t: &Tensor| match which {
                    0 => loss_of(t, &text, &scale),
                    1 => loss_of(&image, t, &scale),
                    _ => loss_of(&image, &text, t),
                };
                let numeric = (at(&plus) - at(&minus)) / (2.0 * h);
                let err = (numeric - analytic[k]).abs();
                worst = worst.max(err);
                assert!(
                    err < 1e-7,
                    "input {which} entry {k}: numeric {numeric}, analytic {}",
                    analytic[k]
                );
            }
        }
        println!("max |analytic - numeric| {worst:.2e}");
        Ok(())
    }

    /// Above `ln 100` the scale is capped: the loss is that at `ln 100` and the scale gets no
    /// gradient.
    #[test]
    fn logit_scale_is_capped_at_100() -> Result<()> {
        let (image, text, _) = tiny_case()?;
        let dev = Device::Cpu;
        let capped = Tensor::new(100f64.ln(), &dev)?;
        let above = Var::new(5.0f64, &dev)?;
        let loss = clip_contrastive_loss(&image, &text, &above)?;
        assert!((loss.to_scalar::<f64>()? - loss_of(&image, &text, &capped)).abs() < 1e-12);
        let grads = loss.backward()?;
        assert_eq!(grads.get(&above).unwrap().to_scalar::<f64>()?, 0.0);
        let factor = logit_scale_factor(&Tensor::new(2.0f64, &dev)?)?.to_scalar::<f64>()?;
        assert!((factor - 2f64.exp()).abs() < 1e-12);
        Ok(())
    }

    /// Perfectly aligned pairs with orthogonal embeddings and a large scale: loss near 0; the
    /// loss is symmetric in images and texts; shapes are checked.
    #[test]
    fn aligned_pairs_and_shape_errors() -> Result<()> {
        let dev = Device::Cpu;
        let eye = Tensor::eye(3, DType::F64, &dev)?;
        let scale = Tensor::new(100f64.ln(), &dev)?;
        let aligned = loss_of(&(&eye * 2.0)?, &eye, &scale);
        // Each row: -log(e^100 / (e^100 + 2 e^0)).
        let expected = (1.0 + 2.0 * (-100f64).exp()).ln();
        assert!((aligned - expected).abs() < 1e-12, "{aligned}");
        let (image, text, s) = tiny_case()?;
        assert!((loss_of(&image, &text, &s) - loss_of(&text, &image, &s)).abs() < 1e-12);
        assert_eq!(pair_labels(3, &dev)?.to_vec1::<u32>()?, vec![0, 1, 2]);

        let err = clip_contrastive_loss(&image, &text.narrow(0, 0, 2)?, &s).unwrap_err();
        assert!(err.to_string().contains("matching pairs"), "{err}");
        let err = clip_logits(&image, &text.narrow(1, 0, 3)?, &s).unwrap_err();
        assert!(err.to_string().contains("width"), "{err}");
        let err =
            symmetric_contrastive_loss(&Tensor::zeros((2, 3), DType::F64, &dev)?, 0.0).unwrap_err();
        assert!(err.to_string().contains("square"), "{err}");
        Ok(())
    }
}
