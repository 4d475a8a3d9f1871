//! VGGish (Hershey et al., "CNN Architectures for Large-Scale Audio Classification", ICASSP
//! 2017), the embedding of the original Fréchet Audio Distance (Kilgour et al., 2019), in the
//! layout of PyPI `torchvggish`'s port: its release weights `vggish-10086976.pth` (72M
//! parameters; a user supplies them, nothing here downloads them) load as they are.
//!
//! - input: examples of 96 log-mel frames × 64 bands (`peftbench_data_audio::vggish_input`);
//! - `features`: 3×3 convolutions (padding 1) with ReLU, 64 → max-pool 2 → 128 → pool → 256, 256
//!   → pool → 512, 512 → pool, leaving 512 × 6 × 4 (module indices 0, 3, 6, 8, 11, 13);
//! - flattened height, width, channel (torchvggish transposes to stay compatible with the
//!   TensorFlow weights), then `embeddings`: 12288 → 4096 → ReLU → 4096 → ReLU → 128.
//!
//! The embedding is the last layer's output **before** torchvggish's final ReLU and without the
//! PCA and 8-bit quantisation of AudioSet's released features: what `frechet_audio_distance`
//! computes by default (`use_activation=False, use_pca=False`). The widths are read from the
//! weights, so a narrower model of the same layout loads too: the check against torchvggish runs
//! on such a miniature (`ci/fixtures/vggish_torchvggish.py`, `tests/vggish.rs`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};

/// `features`' convolution module indices, and whether a max-pool follows each.
const CONVS: [(usize, bool); 6] = [
    (0, true),
    (3, true),
    (6, false),
    (8, true),
    (11, false),
    (13, true),
];
/// `embeddings`' linear module indices.
const LINEARS: [usize; 3] = [0, 2, 4];

fn get(tensors: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    tensors
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("VGGish weights: no tensor `{name}`")))?
        .to_dtype(DType::F32)
}

/// The pretrained network (inference only).
pub struct Vggish {
    convs: Vec<(Tensor, Tensor, bool)>,
    linears: Vec<(Tensor, Tensor)>,
    device: Device,
}

impl Vggish {
    /// From torchvggish's state dict (`vggish-10086976.pth`) in PyTorch's zip format.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = candle_core::pickle::read_all(path)
            .map_err(|e| {
                candle_core::Error::Msg(format!(
                    "{}: {e} (read as PyTorch's zip format: re-save a file from before torch 1.6 \
                     with `torch.save(torch.load(old), new)`)",
                    path.display()
                ))
            })?
            .into_iter()
            .collect();
        Self::from_tensors(&tensors, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))
    }

    /// From tensors named as torchvggish's `VGG` module names them (`features.<i>.weight`,
    /// `embeddings.<i>.weight`, ...).
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let mut convs = Vec::with_capacity(CONVS.len());
        let mut channels = 1;
        for (index, pool) in CONVS {
            let weight = get(tensors, &format!("features.{index}.weight"))?;
            let (out, inputs, kh, kw) = weight.dims4()?;
            if inputs != channels || (kh, kw) != (3, 3) {
                candle_core::bail!(
                    "VGGish weights: `features.{index}.weight` is {:?}, expected [_, {channels}, 3, 3]",
                    weight.dims()
                );
            }
            let bias = get(tensors, &format!("features.{index}.bias"))?.reshape((1, out, 1, 1))?;
            convs.push((weight.to_device(device)?, bias.to_device(device)?, pool));
            channels = out;
        }
        let mut linears = Vec::with_capacity(LINEARS.len());
        // 96 × 64 halved four times: 6 × 4 positions of the last convolution's channels.
        let mut features = channels * 6 * 4;
        for index in LINEARS {
            let weight = get(tensors, &format!("embeddings.{index}.weight"))?;
            let (out, inputs) = weight.dims2()?;
            if inputs != features {
                candle_core::bail!(
                    "VGGish weights: `embeddings.{index}.weight` is {:?}, expected [_, {features}]",
                    weight.dims()
                );
            }
            let bias = get(tensors, &format!("embeddings.{index}.bias"))?;
            linears.push((weight.to_device(device)?, bias.to_device(device)?));
            features = out;
        }
        Ok(Self {
            convs,
            linears,
            device: device.clone(),
        })
    }

    /// Values of one embedding (128 for the released model).
    pub fn embedding_size(&self) -> usize {
        self.linears.last().map_or(0, |(w, _)| w.dims()[0])
    }

    /// Embeddings `[N, 128]` of examples given as `N` rows of 96 × 64 log-mel values
    /// (frame-major).
    pub fn embed(&self, examples: &[Vec<f32>]) -> Result<Tensor> {
        let n = examples.len();
        let flat: Vec<f32> = examples.iter().flatten().copied().collect();
        let mut x = Tensor::from_vec(flat, (n, 1, 96, 64), &self.device)?;
        for (weight, bias, pool) in &self.convs {
            x = x.conv2d(weight, 1, 1, 1, 1)?.broadcast_add(bias)?.relu()?;
            if *pool {
                x = x.max_pool2d(2)?;
            }
        }
        // [N, C, H, W] → [N, H, W, C], flattened.
        let mut x = x.permute((0, 2, 3, 1))?.flatten_from(1)?;
        for (i, (weight, bias)) in self.linears.iter().enumerate() {
            x = x.matmul(&weight.t()?)?.broadcast_add(bias)?;
            // No ReLU after the last layer (see the module header).
            if i + 1 < self.linears.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// The variable naming the weight file explicitly.
pub const VGGISH_ENV: &str = "PEFTBENCH_VGGISH";
/// The release file's name (torchvggish's `VGGISH_WEIGHTS`).
pub const VGGISH_FILE: &str = "vggish-10086976.pth";

/// The weight file: `$PEFTBENCH_VGGISH`, else the release file where `torch.hub` caches it
/// (`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`). `Err` lists where
/// it looked.
pub fn find_vggish() -> std::result::Result<std::path::PathBuf, Vec<std::path::PathBuf>> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os(VGGISH_ENV) {
        candidates.push(std::path::PathBuf::from(path));
    }
    let torch_home = std::env::var_os("TORCH_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".cache/torch")));
    if let Some(home) = torch_home {
        candidates.push(home.join("hub/checkpoints").join(VGGISH_FILE));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(candidates),
    }
}
