//! `harness predict --backbone DIR --adapter DIR FILES...`: classify files with a saved adapter
//! (ours or one trained with Python PEFT) and print the predicted class and logits as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::{DType, Tensor};
use peftbench_core::{DeviceSpec, ForwardCtx};
use peftbench_data_vision::{decode_rgb, Interpolation, Normalization, Preprocess};
use peftbench_methods::PeftModel;
use peftbench_runner::backbone::{load_backbone, BackboneModel};
use peftbench_suite::BackboneSpec;

use super::{emit, paths};
use crate::Locations;

const EXAMPLES: &str = "Examples:
  harness predict --backbone google/vit-base-patch16-224-in21k --adapter results/artifacts/RUN cat.jpg
  harness predict --backbone ./vit-tiny --adapter ./peft-lora --normalization none a.png b.png
  harness predict --backbone demo --adapter DIR batch.safetensors   # `pixel_values` [N,3,H,W]

Adapters in Hugging Face PEFT's format (LoRA, DoRA, IA3, prefix tuning; transformers 4 or 5
module names) or peftbench's own. Output: a JSON array with one object per image:
{\"file\", \"index\", \"class\", \"logits\"}.";

/// Classify images with a backbone and a saved adapter; print classes and logits as JSON.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Backbone: a folder with config.json + model.safetensors, a hub id, or `demo`.
    #[arg(long)]
    pub backbone: String,
    /// Adapter folder (adapter_config.json + adapter_model.safetensors, or peftbench's format).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Images (JPEG, PNG, WebP, ...) or `.safetensors` files holding preprocessed
    /// `pixel_values` `[N, 3, H, W]`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Input normalisation the adapter was trained with: imagenet, inception or none.
    #[arg(long, default_value = "imagenet")]
    pub normalization: String,
    /// Resizing filter: bicubic or bilinear.
    #[arg(long, default_value = "bicubic")]
    pub interpolation: String,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    #[command(flatten)]
    pub locations: Locations,
}

fn parse_choice<T: serde::de::DeserializeOwned>(flag: &str, value: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::from(value))
        .map_err(|e| anyhow::anyhow!("--{flag} {value}: {e}"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let device = args.device.open()?;
    let spec = BackboneSpec {
        checkpoint: args.backbone.clone(),
        revision: None,
    };
    let loaded = load_backbone(&spec, &paths(&args.locations), &device, true, None)?;
    let BackboneModel::Vit(vit) = loaded.model else {
        anyhow::bail!(
            "`predict` classifies images; `{}` is a {} backbone",
            args.backbone,
            loaded.model.family()
        );
    };
    let image_size = vit.config().image_size;
    let preprocess = Preprocess {
        image_size,
        interpolation: parse_choice::<Interpolation>("interpolation", &args.interpolation)?,
        normalization: parse_choice::<Normalization>("normalization", &args.normalization)?,
    };
    let model = PeftModel::from_adapter(&args.adapter, Box::new(vit))?;
    let ctx = ForwardCtx::eval();
    let mut out = Vec::new();
    for file in &args.files {
        let pixels = read_inputs(file, &preprocess)?.to_device(&device)?;
        let dtype = model
            .backbone()
            .linear(0, peftbench_backbones::LinearSite::Query)
            .weight
            .dtype();
        let logits = model
            .logits(&pixels.to_dtype(dtype)?, &ctx)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (index, row) in logits.into_iter().enumerate() {
            let class = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0);
            out.push(serde_json::json!({
                "file": file.display().to_string(),
                "index": index,
                "class": class,
                "logits": row,
            }));
        }
    }
    emit(&(serde_json::to_string_pretty(&out)? + "\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// `[N, 3, S, S]` inputs from an image (N = 1) or a safetensors file of `pixel_values`.
fn read_inputs(file: &PathBuf, preprocess: &Preprocess) -> anyhow::Result<Tensor> {
    let origin = file.display().to_string();
    if file.extension().is_some_and(|e| e == "safetensors") {
        let tensors = candle_core::safetensors::load(file, &candle_core::Device::Cpu)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let pixels = tensors
            .get("pixel_values")
            .ok_or_else(|| anyhow::anyhow!("{origin}: no `pixel_values` tensor"))?;
        return Ok(pixels.to_dtype(DType::F32)?);
    }
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let img = decode_rgb(&bytes, &origin)?;
    let s = preprocess.image_size;
    let mut values = vec![0f32; preprocess.values_per_image()];
    preprocess.write_chw(&img, &mut values);
    Ok(Tensor::from_vec(
        values,
        (1, 3, s, s),
        &candle_core::Device::Cpu,
    )?)
}
