//! Image preprocessing: decode, convert to RGB, resize to a square, scale to `[0, 1]`, normalise, and lay
//! out channel-major (CHW).
//!
//! The per-pixel value written for channel `c` is `(v / 255 - mean[c]) / std[c]` where `v` is the 8-bit
//! value after resizing. Resizing uses the `image` crate: [`Interpolation::Bicubic`] is Catmull-Rom and
//! [`Interpolation::Bilinear`] is the triangle filter; both widen their support when downscaling (like PIL,
//! i.e. torchvision with antialiasing). An image already of the target size is not resampled.
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
}

impl Normalization {
    /// `(mean, std)` per RGB channel, applied to values already scaled to `[0, 1]`.
    pub fn mean_std(&self) -> ([f32; 3], [f32; 3]) {
        match self {
            Normalization::ImageNet => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Normalization::Inception => ([0.5; 3], [0.5; 3]),
            Normalization::None => ([0.0; 3], [1.0; 3]),
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
    /// The `image` crate filter implementing this interpolation.
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
            resized = image::imageops::resize(img, s as u32, s as u32, self.interpolation.filter());
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
