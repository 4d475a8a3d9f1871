//! In-memory dataset description ([`ImageDataset`]) and batch loading ([`ImageDataset::load_batch`]).
//!
//! A dataset is a list of image sources and integer labels; nothing is decoded until a batch is loaded, so
//! listing a 20k-image test split is instant and decode errors name the offending file when they happen.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use rayon::prelude::*;

use crate::preprocess::{decode_rgb, Preprocess};
use crate::DataError;

/// Where one image comes from.
#[derive(Clone, Debug)]
pub enum ImageSource {
    /// An image file on disk (any format the `image` crate decodes; format guessed from content).
    File(PathBuf),
    /// Encoded image bytes held in memory (e.g. from a parquet file); `origin` says where they came from,
    /// e.g. `"/data/cifar/data/test-00000-of-00001.parquet row 17"`.
    Encoded { origin: String, bytes: Arc<[u8]> },
    /// An already decoded RGB image (generated data).
    Rgb(Arc<RgbImage>),
}

impl ImageSource {
    /// Human-readable description used in error messages.
    pub fn origin(&self) -> String {
        match self {
            ImageSource::File(p) => p.display().to_string(),
            ImageSource::Encoded { origin, .. } => origin.clone(),
            ImageSource::Rgb(img) => format!("in-memory {}x{} image", img.width(), img.height()),
        }
    }

    /// Decodes the image to 8-bit RGB (cheap clone of the `Arc` contents for [`ImageSource::Rgb`]).
    pub fn decode(&self) -> Result<RgbImage, DataError> {
        match self {
            ImageSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| DataError::Io {
                    path: path.clone(),
                    source,
                })?;
                decode_rgb(&bytes, &path.display().to_string())
            }
            ImageSource::Encoded { origin, bytes } => decode_rgb(bytes, origin),
            ImageSource::Rgb(img) => Ok((**img).clone()),
        }
    }

    /// Decodes and writes the preprocessed CHW values into `out`.
    fn write_chw(&self, pre: &Preprocess, out: &mut [f32]) -> Result<(), DataError> {
        match self {
            // Avoid copying generated images.
            ImageSource::Rgb(img) => pre.write_chw(img, out),
            _ => pre.write_chw(&self.decode()?, out),
        }
        Ok(())
    }
}

/// A labelled list of images: one split of one dataset.
#[derive(Clone, Debug)]
pub struct ImageDataset {
    /// Display name, e.g. `"vtab/cifar/train800"`.
    pub name: String,
    pub items: Vec<ImageSource>,
    /// One label per item, each `< num_classes`.
    pub labels: Vec<u32>,
    pub num_classes: usize,
}

/// A preprocessed batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `N * 3 * S * S` values, NCHW, channel order RGB.
    pub pixels: Vec<f32>,
    pub labels: Vec<u32>,
    /// `S`.
    pub image_size: usize,
}

impl Batch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Tensor shape `[N, 3, S, S]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 3, self.image_size, self.image_size]
    }
}

impl ImageDataset {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keeps the first `n` examples (quick runs with `--limit`); `num_classes` is unchanged.
    pub fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
        self.labels.truncate(n);
    }

    /// Number of examples per class (length `num_classes`).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Decodes (in parallel with rayon), converts to RGB, resizes, scales and normalises the images at
    /// `indices`, in that order. Errors name the offending image.
    pub fn load_batch(&self, indices: &[usize], pre: &Preprocess) -> Result<Batch, DataError> {
        pre.validate()?;
        let per = pre.values_per_image();
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            match self.labels.get(i) {
                Some(&l) if i < self.items.len() => labels.push(l),
                _ => {
                    return Err(DataError::IndexOutOfRange {
                        dataset: self.name.clone(),
                        index: i,
                        len: self.items.len(),
                    })
                }
            }
        }
        let mut pixels = vec![0f32; per * indices.len()];
        pixels
            .par_chunks_mut(per)
            .zip(indices.par_iter())
            .try_for_each(|(out, &i)| self.items[i].write_chw(pre, out))?;
        Ok(Batch {
            pixels,
            labels,
            image_size: pre.image_size,
        })
    }

    /// Checks every label against `num_classes`, naming `origin` in the error.
    pub(crate) fn check_labels(&self) -> Result<(), DataError> {
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.num_classes)
        {
            return Err(DataError::BadLabel {
                origin: self
                    .items
                    .get(i)
                    .map(|s| s.origin())
                    .unwrap_or_else(|| self.name.clone()),
                reason: format!("label {l} is not below num_classes {}", self.num_classes),
            });
        }
        Ok(())
    }
}

/// Checks that every image of `ds` can be decoded (in parallel); returns one error per bad image, in
/// dataset order. Decodes fully, so it costs about as much as one pass over the data.
pub fn validate_images(ds: &ImageDataset) -> Vec<DataError> {
    let mut errors: Vec<(usize, DataError)> = ds
        .items
        .par_iter()
        .enumerate()
        .filter_map(|(i, src)| match src {
            ImageSource::Rgb(_) => None,
            _ => src.decode().err().map(|e| (i, e)),
        })
        .collect();
    errors.sort_by_key(|(i, _)| *i);
    errors.into_iter().map(|(_, e)| e).collect()
}
