//! Image preprocessing: decode, convert to RGB, resize to a square, scale to `[0, 1]`, normalise, and lay
//! out channel-major (CHW).
//!
//! The per-pixel value written for channel `c` is `(v / 255 - mean[c]) / std[c]` where `v` is the 8-bit
//! value after resizing. Resizing ([`resize_rgb`]) computes exactly what Pillow's `Image.resize` does (and so
//! torchvision's `Resize` on PIL images, as NOAH, FacT and V-PETL use it): a separable convolution,
//! one pass per axis, each in 22-bit fixed point and rounded to 8 bits, with the filter's support
//! widened by the scale when downscaling (antialiasing). [`Interpolation::Bicubic`] is the cubic
//! convolution kernel with `a = -0.5` (PIL's `BICUBIC`), [`Interpolation::Bilinear`] the triangle filter
//! (PIL's `BILINEAR`). [`resize_rgb_no_antialias`] is torchvision's tensor `Resize(antialias=False)`
//! (PyTorch's `interpolate`, `align_corners=False`). `crates/data-vision/tests/resize_parity.rs` checks
//! both against Pillow and torchvision (fixtures written by `ci/fixtures/resize_pil.py`). An image already
//! of the target size is not resampled.
//!
//! Suite files choose the settings, e.g. in YAML:
//! ```yaml
//! preprocess: { image_size: 224, interpolation: bicubic, normalization: imagenet }
//! ```

use image::imageops::FilterType;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// Per-channel input normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// ImageNet mean `[0.485, 0.456, 0.406]`, std `[0.229, 0.224, 0.225]` (NOAH LoRA/Adapter, FacT, V-PETL).
    ImageNet,
    /// Mean = std = 0.5, i.e. inputs in `[-1, 1]` (Inception / Google ViT checkpoints, NOAH's VPT script).
    Inception,
    /// No normalisation: inputs in `[0, 1]` (VPT, SSF, binary adapters).
    None,
    /// CLIP's and SigLIP's image processors' OpenAI mean `[0.48145466, 0.4578275, 0.40821073]`,
    /// std `[0.26862954, 0.26130258, 0.27577711]`.
    Clip,
}

impl Normalization {
    /// `(mean, std)` per RGB channel, applied to values already scaled to `[0, 1]`.
    pub fn mean_std(&self) -> ([f32; 3], [f32; 3]) {
        match self {
            Normalization::ImageNet => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Normalization::Inception => ([0.5; 3], [0.5; 3]),
            Normalization::None => ([0.0; 3], [1.0; 3]),
            Normalization::Clip => (
                [0.481_454_66, 0.457_827_5, 0.408_210_73],
                [0.268_629_5, 0.261_302_6, 0.275_777_1],
            ),
        }
    }
}

/// Resampling filter used to resize to `image_size x image_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Catmull-Rom cubic (NOAH / FacT).
    Bicubic,
    /// Triangle (linear) filter (V-PETL evaluation).
    Bilinear,
}

impl Interpolation {
    /// The closest `image` crate filter. Not what [`Preprocess`] uses: the `image` crate computes in
    /// floating point without rounding or clipping between the passes, so it differs from Pillow by
    /// up to 1 level (bilinear) and, where a bicubic first pass overshoots [0, 255] near sharp edges,
    /// by more (up to 25 levels on `tests/resize_parity.rs`'s pattern).
    pub fn filter(&self) -> FilterType {
        match self {
            Interpolation::Bicubic => FilterType::CatmullRom,
            Interpolation::Bilinear => FilterType::Triangle,
        }
    }
}

/// How images become model inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Output side length in pixels (images are resized to a square, aspect ratio not kept, no crop).
    pub image_size: usize,
    pub interpolation: Interpolation,
    pub normalization: Normalization,
}

impl Preprocess {
    /// `image_size` pixels, bicubic, ImageNet normalisation: the NOAH/FacT VTAB-1k protocol at 224.
    pub fn new(image_size: usize) -> Self {
        Preprocess {
            image_size,
            interpolation: Interpolation::Bicubic,
            normalization: Normalization::ImageNet,
        }
    }

    /// Number of `f32` values for one image: `3 * image_size * image_size`.
    pub fn values_per_image(&self) -> usize {
        3 * self.image_size * self.image_size
    }

    pub(crate) fn validate(&self) -> Result<(), DataError> {
        if self.image_size == 0 || self.image_size > 65_535 {
            return Err(DataError::InvalidPreprocess(format!(
                "image_size must be in 1..=65535, got {}",
                self.image_size
            )));
        }
        Ok(())
    }

    /// Resizes (if needed), scales and normalises `img`, writing CHW values into `out`
    /// (`out.len() == 3 * image_size^2`).
    pub fn write_chw(&self, img: &RgbImage, out: &mut [f32]) {
        let s = self.image_size;
        debug_assert_eq!(out.len(), 3 * s * s);
        let resized;
        let img = if img.width() as usize == s && img.height() as usize == s {
            img
        } else {
            resized = resize_rgb(img, s as u32, s as u32, self.interpolation);
            &resized
        };
        let (mean, std) = self.normalization.mean_std();
        // Lookup table per channel: 256 possible 8-bit values.
        let mut lut = [[0f32; 256]; 3];
        for c in 0..3 {
            for (v, slot) in lut[c].iter_mut().enumerate() {
                *slot = (v as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        let plane = s * s;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
            r[i] = lut[0][px[0] as usize];
            g[i] = lut[1][px[1] as usize];
            b[i] = lut[2][px[2] as usize];
        }
    }
}

/// Bits after the binary point of Pillow's fixed-point filter coefficients (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

impl Interpolation {
    /// The filter's support radius at scale 1.
    fn support(&self) -> f64 {
        match self {
            Interpolation::Bicubic => 2.0,
            Interpolation::Bilinear => 1.0,
        }
    }

    /// The filter kernel (PIL's `bicubic_filter` with `a = -0.5`, `bilinear_filter`).
    fn kernel(&self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Interpolation::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }
}

/// For each output pixel of one axis: the first input pixel and the fixed-point weights of the input
/// pixels from there on.
struct AxisWeights {
    taps: Vec<(usize, Vec<i32>)>,
}

impl AxisWeights {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` to `out_size`.
    fn new(in_size: usize, out_size: usize, interpolation: Interpolation) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = interpolation.support() * filterscale;
        let taps = (0..out_size)
            .map(|xx| {
                let center = (xx as f64 + 0.5) * scale;
                // C's `(int)` truncates towards zero; negative starts are clamped to 0 either way.
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
                let mut w: Vec<f64> = (xmin..xmax)
                    .map(|x| interpolation.kernel((x as f64 - center + 0.5) / filterscale))
                    .collect();
                let total: f64 = w.iter().sum();
                if total != 0.0 {
                    w.iter_mut().for_each(|v| *v /= total);
                }
                let one = f64::from(1u32 << PRECISION_BITS);
                let fixed = w
                    .iter()
                    .map(|&v| {
                        if v < 0.0 {
                            (-0.5 + v * one) as i32
                        } else {
                            (0.5 + v * one) as i32
                        }
                    })
                    .collect();
                (xmin, fixed)
            })
            .collect();
        AxisWeights { taps }
    }
}

/// Pillow's rounding of a fixed-point sum to 8 bits (the sum starts at half a unit).
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One horizontal pass of Pillow's resampling: `src` (`w x h` RGB) to width `out_w`.
fn horizontal_pass(src: &[u8], w: usize, h: usize, out_w: usize, f: Interpolation) -> Vec<u8> {
    let weights = AxisWeights::new(w, out_w, f);
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; out_w * h * 3];
    for y in 0..h {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        for (xx, (xmin, k)) in weights.taps.iter().enumerate() {
            for c in 0..3 {
                let mut sum = half;
                for (i, &kv) in k.iter().enumerate() {
                    sum += i64::from(row[(xmin + i) * 3 + c]) * i64::from(kv);
                }
                out[(y * out_w + xx) * 3 + c] = clip8(sum);
            }
        }
    }
    out
}

/// One vertical pass of Pillow's resampling: `src` (`w x h` RGB) to height `out_h`.
fn vertical_pass(src: &[u8], w: usize, h: usize, out_h: usize, f: Interpolation) -> Vec<u8> {
    let weights = AxisWeights::new(h, out_h, f);
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; w * out_h * 3];
    for (yy, (ymin, k)) in weights.taps.iter().enumerate() {
        for x in 0..w * 3 {
            let mut sum = half;
            for (i, &kv) in k.iter().enumerate() {
                sum += i64::from(src[(ymin + i) * w * 3 + x]) * i64::from(kv);
            }
            out[yy * w * 3 + x] = clip8(sum);
        }
    }
    out
}

/// `img` resized to `width x height` exactly as Pillow's `Image.resize(size, resample)` with
/// `BICUBIC` or `BILINEAR` (reducing_gap unset): one pass per axis whose size changes, each in
/// 22-bit fixed point and rounded and clipped to 8 bits, the support widened by the scale when
/// downscaling. The horizontal pass runs first, except when the height shrinks by more than twice
/// what the width shrinks (`h - height > 2 (w - width)`): then Pillow (13) runs the vertical pass
/// first, which changes the rounding of the intermediate image. (That rule was measured on Pillow
/// 13.0 over 700 random size pairs without an exception, and `tests/resize_parity.rs` checks both
/// orders against it.)
pub fn resize_rgb(
    img: &RgbImage,
    width: u32,
    height: u32,
    interpolation: Interpolation,
) -> RgbImage {
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let (w1, h1) = (width as usize, height as usize);
    if w0 == 0 || h0 == 0 || w1 == 0 || h1 == 0 {
        return RgbImage::new(width, height);
    }
    let src = img.as_raw();
    let vertical_first = h1 < h0 && (h0 as i64 - h1 as i64) > 2 * (w0 as i64 - w1 as i64);
    let out = match (w1 != w0, h1 != h0) {
        (false, false) => src.clone(),
        (true, false) => horizontal_pass(src, w0, h0, w1, interpolation),
        (false, true) => vertical_pass(src, w0, h0, h1, interpolation),
        (true, true) if vertical_first => {
            let tmp = vertical_pass(src, w0, h0, h1, interpolation);
            horizontal_pass(&tmp, w0, h1, w1, interpolation)
        }
        (true, true) => {
            let tmp = horizontal_pass(src, w0, h0, w1, interpolation);
            vertical_pass(&tmp, w1, h0, h1, interpolation)
        }
    };
    RgbImage::from_raw(width, height, out).expect("buffer of width * height * 3 bytes")
}

/// Sampling positions of one axis for PyTorch's `interpolate(align_corners=False)` without
/// antialiasing: per output pixel, input indices (clamped to the image) and their weights.
fn no_antialias_taps(
    in_size: usize,
    out_size: usize,
    interpolation: Interpolation,
) -> Vec<Vec<(usize, f32)>> {
    // PyTorch's scale for a given output size, in the float type of the computation.
    let scale = in_size as f32 / out_size as f32;
    let last = in_size as i64 - 1;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    (0..out_size)
        .map(|o| {
            let src = scale * (o as f32 + 0.5) - 0.5;
            match interpolation {
                Interpolation::Bilinear => {
                    let src = src.max(0.0);
                    let i0 = src.floor() as i64;
                    let l1 = src - i0 as f32;
                    vec![(clamp(i0), 1.0 - l1), (clamp(i0 + 1), l1)]
                }
                Interpolation::Bicubic => {
                    // PyTorch's cubic convolution with A = -0.75, border pixels repeated.
                    const A: f32 = -0.75;
                    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
                    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
                    let i = src.floor() as i64;
                    let t = src - i as f32;
                    let w = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
                    (0..4).map(|j| (clamp(i - 1 + j as i64), w[j])).collect()
                }
            }
        })
        .collect()
}

/// `img` resized to `width x height` as torchvision's `Resize(antialias=False)` on a uint8 tensor:
/// PyTorch's `interpolate(mode="bilinear" | "bicubic", align_corners=False)` (bicubic with `A =
/// -0.75`, no widening of the support when downscaling), computed in `f32`, rounded half to even
/// and clipped to 8 bits.
pub fn resize_rgb_no_antialias(
    img: &RgbImage,
    width: u32,
    height: u32,
    interpolation: Interpolation,
) -> RgbImage {
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let (w1, h1) = (width as usize, height as usize);
    if w0 == 0 || h0 == 0 || w1 == 0 || h1 == 0 {
        return RgbImage::new(width, height);
    }
    let src = img.as_raw();
    let xs = no_antialias_taps(w0, w1, interpolation);
    let ys = no_antialias_taps(h0, h1, interpolation);
    let mut out = vec![0u8; w1 * h1 * 3];
    for (yy, ytaps) in ys.iter().enumerate() {
        for (xx, xtaps) in xs.iter().enumerate() {
            for c in 0..3 {
                let mut acc = 0f32;
                for &(y, wy) in ytaps {
                    let mut row = 0f32;
                    for &(x, wx) in xtaps {
                        row += wx * f32::from(src[(y * w0 + x) * 3 + c]);
                    }
                    acc += wy * row;
                }
                out[(yy * w1 + xx) * 3 + c] = acc.clamp(0.0, 255.0).round_ties_even() as u8;
            }
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer of width * height * 3 bytes")
}

/// Decodes encoded image bytes (format guessed from the content) into 8-bit RGB.
pub fn decode_rgb(bytes: &[u8], origin: &str) -> Result<RgbImage, DataError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::CorruptImage {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
    if reader.format().is_none() {
        return Err(DataError::CorruptImage {
            origin: origin.to_string(),
            reason: format!("unrecognised image format ({} bytes)", bytes.len()),
        });
    }
    let img = reader.decode().map_err(|e| DataError::CorruptImage {
        origin: origin.to_string(),
        reason: e.to_string(),
    })?;
    Ok(img.into_rgb8())
}
