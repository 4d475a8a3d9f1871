//! `harness predict --backbone DIR --adapter DIR FILES...`: classify files with a saved adapter
//! (ours or one trained with Python PEFT) and print the predicted class and logits as JSON.
//!
//! Images are preprocessed as the adapter was trained: an adapter of ours with the `preprocess` of
//! its run record, one from elsewhere with the checkpoint's `preprocessor_config.json`; flags
//! override either. Each output row states what was applied and where it came from.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use candle_core::{DType, Tensor};
use peftbench_core::{DeviceSpec, ForwardCtx};
use peftbench_data_vision::{decode_rgb, Interpolation, Normalization, Preprocess};
use peftbench_methods::PeftModel;
use peftbench_runner::backbone::{load_backbone, BackboneModel};
use peftbench_suite::{BackboneSpec, PreprocessSpec};
use serde::Serialize;

use super::{backbone_paths, checkpoint_file, emit, run_record_of};

const EXAMPLES: &str = "Examples:
  harness predict --backbone google/vit-base-patch16-224-in21k --adapter results/artifacts/RUN cat.jpg
  harness predict --backbone ./vit-tiny --adapter ./peft-lora --normalization none a.png b.png
  harness predict --backbone demo --adapter DIR batch.safetensors   # `pixel_values` [N,3,H,W]

Preprocessing, each part from the first of: the flag; for an adapter under
<results>/artifacts/<run id>/, the `preprocess` of <results>/records/<run id>.json; the
checkpoint's preprocessor_config.json (image_mean, image_std, size, resample, do_rescale,
rescale_factor, do_normalize); else the model's image size, bicubic and ImageNet statistics,
with a warning.

Adapters in Hugging Face PEFT's format (LoRA, DoRA, IA3, prefix tuning; transformers 4 or 5
module names) or peftbench's own. Output: a JSON array with one object per image:
{\"file\", \"index\", \"class\", \"logits\", \"preprocessing\"}; `preprocessing` is null for
`.safetensors` inputs, whose pixel values are used as given.";

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
    #[command(flatten)]
    pub preprocessing: PreprocessFlags,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Flags that override how the adapter's training preprocessed images.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PreprocessFlags {
    /// Input normalisation, overriding the run record's or the checkpoint's: imagenet, inception
    /// (mean = std = 0.5) or none.
    #[arg(long)]
    pub normalization: Option<String>,
    /// Resizing filter, overriding the run record's or the checkpoint's: bicubic or bilinear.
    #[arg(long)]
    pub interpolation: Option<String>,
}

fn parse_choice<T: serde::de::DeserializeOwned>(flag: &str, value: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::from(value))
        .map_err(|e| anyhow::anyhow!("--{flag} {value}: {e}"))
}

/// How image files become pixel values, and where each part of that came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageInput {
    /// Images are resized to `image_size` x `image_size` (unless already that size).
    pub image_size: usize,
    pub interpolation: Interpolation,
    /// Multiplies the 8-bit values before normalising (1/255 maps them to [0, 1]).
    #[serde(serialize_with = "decimal")]
    pub rescale_factor: f32,
    #[serde(serialize_with = "decimals")]
    pub image_mean: [f32; 3],
    #[serde(serialize_with = "decimals")]
    pub image_std: [f32; 3],
    /// Where `image_size`, `interpolation` and the rescaling and normalisation came from.
    pub sources: InputSources,
}

/// An `f32` in JSON as its shortest decimal (0.485, not the 0.48500001430511475 of its f64).
fn decimal<S: serde::Serializer>(value: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(shortest(*value))
}

fn decimals<S: serde::Serializer>(values: &[f32; 3], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(|v| shortest(*v)))
}

fn shortest(value: f32) -> f64 {
    value
        .to_string()
        .parse()
        .expect("a float's display parses as a float")
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputSources {
    pub image_size: String,
    pub interpolation: String,
    pub normalization: String,
}

impl ImageInput {
    /// The `3 x S x S` model input (channels first) of one encoded image.
    pub fn pixels(&self, bytes: &[u8], origin: &str) -> anyhow::Result<Vec<f32>> {
        let img = decode_rgb(bytes, origin)?;
        let resize = Preprocess {
            image_size: self.image_size,
            interpolation: self.interpolation,
            normalization: Normalization::None,
        };
        let mut values = vec![0f32; resize.values_per_image()];
        // Resized in 8 bits as PIL does, then scaled to [0, 1]; `* 255` recovers the 8-bit value.
        resize.write_chw(&img, &mut values);
        let plane = self.image_size * self.image_size;
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = (v as f32 * self.rescale_factor - self.image_mean[c]) / self.image_std[c];
            }
        }
        for (c, channel) in values.chunks_exact_mut(plane).enumerate() {
            for v in channel {
                *v = lut[c][(*v * 255.0).round() as usize];
            }
        }
        Ok(values)
    }
}

/// The image preprocessing of the run that trained an adapter of ours, from its run record.
fn run_record_preprocess(adapter: &Path) -> anyhow::Result<Option<(PathBuf, PreprocessSpec)>> {
    let Some((path, record)) = run_record_of(adapter)? else {
        return Ok(None);
    };
    let preprocess = record.config.get("preprocess").cloned().unwrap_or_default();
    anyhow::ensure!(
        !preprocess.is_null(),
        "{}: field `config.preprocess` is missing: run `{}` did not train on images",
        path.display(),
        record.run_id
    );
    let spec: PreprocessSpec = serde_json::from_value(preprocess)
        .with_context(|| format!("{}: field `config.preprocess`", path.display()))?;
    Ok(Some((path, spec)))
}

/// The fields of a Hugging Face image processor's `preprocessor_config.json` that change pixel
/// values; absent ones take the defaults of `ViTImageProcessor`, the processor of ViT checkpoints.
#[derive(serde::Deserialize)]
struct HfImageProcessor {
    image_processor_type: Option<String>,
    /// What older checkpoints (google/vit-base-patch16-224-in21k) name the processor.
    feature_extractor_type: Option<String>,
    #[serde(default = "yes")]
    do_resize: bool,
    size: Option<serde_json::Value>,
    resample: Option<u8>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "hf_rescale_factor")]
    rescale_factor: f32,
    #[serde(default = "yes")]
    do_normalize: bool,
    image_mean: Option<serde_json::Value>,
    image_std: Option<serde_json::Value>,
    #[serde(default)]
    do_center_crop: bool,
}

fn yes() -> bool {
    true
}

fn hf_rescale_factor() -> f32 {
    1.0 / 255.0
}

/// transformers' `IMAGENET_STANDARD_MEAN` / `_STD`, `ViTImageProcessor`'s defaults.
const VIT_PROCESSOR_MEAN_STD: f32 = 0.5;
/// `ViTImageProcessor`'s default `resample`: PIL's BILINEAR.
const PIL_BILINEAR: u8 = 2;
const PIL_BICUBIC: u8 = 3;

/// A `preprocessor_config.json` read into model input settings, or an error naming the file and
/// the field predict cannot reproduce.
fn checkpoint_preprocess(path: &Path, model_image_size: usize) -> anyhow::Result<ImageInput> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {origin}"))?;
    let hf: HfImageProcessor =
        serde_json::from_str(&text).with_context(|| format!("parsing {origin}"))?;
    // Other processors differ in their defaults: take nothing for granted from them.
    let processor = hf
        .image_processor_type
        .as_deref()
        .or(hf.feature_extractor_type.as_deref());
    let required = |field: &str| -> anyhow::Result<()> {
        anyhow::ensure!(
            processor.is_none_or(|t| t.starts_with("ViT")),
            "{origin}: field `{field}` is missing and `{}` has other defaults than \
             ViTImageProcessor; pass --normalization and --interpolation",
            processor.unwrap_or_default()
        );
        Ok(())
    };
    anyhow::ensure!(
        !hf.do_center_crop,
        "{origin}: field `do_center_crop` is true: predict resizes to the model's size and does \
         not crop; preprocess the images yourself and pass `pixel_values` in a .safetensors file"
    );
    // Without a size, a processor makes the model's.
    let image_size = match &hf.size {
        None => model_image_size,
        Some(size) => square_size(size).ok_or_else(|| {
            anyhow::anyhow!(
                "{origin}: field `size` is {size}: predict resizes to a square \
                 ({{\"height\": S, \"width\": S}} or a number)"
            )
        })?,
    };
    anyhow::ensure!(
        image_size == model_image_size || !hf.do_resize,
        "{origin}: field `size` is {image_size} but the model's config.json has image_size \
         {model_image_size}"
    );
    let interpolation = match hf.resample {
        None => {
            required("resample")?;
            Interpolation::Bilinear
        }
        Some(PIL_BILINEAR) => Interpolation::Bilinear,
        Some(PIL_BICUBIC) => Interpolation::Bicubic,
        Some(other) => anyhow::bail!(
            "{origin}: field `resample` is {other}; predict resizes with PIL's bilinear (2) or \
             bicubic (3) filter: pass --interpolation"
        ),
    };
    let channels = |field: &str, value: &Option<serde_json::Value>| -> anyhow::Result<[f32; 3]> {
        match value {
            None => {
                required(field)?;
                Ok([VIT_PROCESSOR_MEAN_STD; 3])
            }
            Some(v) => per_channel(v).ok_or_else(|| {
                anyhow::anyhow!("{origin}: field `{field}` is {v}, not 1 or 3 numbers")
            }),
        }
    };
    let (image_mean, image_std) = if hf.do_normalize {
        (
            channels("image_mean", &hf.image_mean)?,
            channels("image_std", &hf.image_std)?,
        )
    } else {
        ([0.0; 3], [1.0; 3])
    };
    Ok(ImageInput {
        image_size: model_image_size,
        interpolation,
        rescale_factor: if hf.do_rescale {
            hf.rescale_factor
        } else {
            1.0
        },
        image_mean,
        image_std,
        sources: InputSources {
            image_size: origin.clone(),
            interpolation: origin.clone(),
            normalization: origin,
        },
    })
}

/// `S` from `{"height": S, "width": S}` or a plain number.
fn square_size(size: &serde_json::Value) -> Option<usize> {
    if let Some(s) = size.as_u64() {
        return Some(s as usize);
    }
    let (h, w) = (size.get("height")?.as_u64()?, size.get("width")?.as_u64()?);
    (h == w && size.as_object()?.len() == 2).then_some(h as usize)
}

/// Three channel values from a list of 3, or one number for all.
fn per_channel(value: &serde_json::Value) -> Option<[f32; 3]> {
    let number = |v: &serde_json::Value| v.as_f64().map(|x| x as f32);
    if let Some(x) = number(value) {
        return Some([x; 3]);
    }
    match value.as_array()?.as_slice() {
        [r, g, b] => Some([number(r)?, number(g)?, number(b)?]),
        _ => None,
    }
}

/// How `adapter` was trained to see images of a backbone with `model_image_size` inputs: flags
/// first, then its run record, then the checkpoint's `preprocessor_config.json`, then the
/// built-in default (with a warning when `warn_on_default`).
pub fn resolve_image_input(
    backbone: &str,
    adapter: Option<&Path>,
    model_image_size: usize,
    flags: &PreprocessFlags,
    warn_on_default: bool,
) -> anyhow::Result<ImageInput> {
    let record = match adapter {
        Some(dir) => run_record_preprocess(dir)?,
        None => None,
    };
    let mut input = if let Some((path, spec)) = record {
        anyhow::ensure!(
            spec.image_size == model_image_size,
            "{}: field `config.preprocess.image_size` is {} but the backbone `{backbone}` takes \
             {model_image_size}",
            path.display(),
            spec.image_size
        );
        let origin = format!("run record {}", path.display());
        let (image_mean, image_std) = Normalization::mean_std(&match spec.normalization {
            peftbench_suite::Normalization::Imagenet => Normalization::ImageNet,
            peftbench_suite::Normalization::Inception => Normalization::Inception,
            peftbench_suite::Normalization::None => Normalization::None,
            peftbench_suite::Normalization::Clip => Normalization::Clip,
        });
        ImageInput {
            image_size: spec.image_size,
            interpolation: match spec.interpolation {
                peftbench_suite::Interpolation::Bicubic => Interpolation::Bicubic,
                peftbench_suite::Interpolation::Bilinear => Interpolation::Bilinear,
            },
            rescale_factor: hf_rescale_factor(),
            image_mean,
            image_std,
            sources: InputSources {
                image_size: origin.clone(),
                interpolation: origin.clone(),
                normalization: origin,
            },
        }
    } else if let Some(path) = checkpoint_file(backbone, "preprocessor_config.json")? {
        checkpoint_preprocess(&path, model_image_size)?
    } else {
        // The NOAH/FacT VTAB-1k protocol, which this project's image suites default to.
        let origin = "built-in default (no run record beside the adapter, no \
                      preprocessor_config.json beside the checkpoint)"
            .to_string();
        let (image_mean, image_std) = Normalization::mean_std(&Normalization::ImageNet);
        ImageInput {
            image_size: model_image_size,
            interpolation: Interpolation::Bicubic,
            rescale_factor: hf_rescale_factor(),
            image_mean,
            image_std,
            sources: InputSources {
                image_size: "the model's config.json".into(),
                interpolation: origin.clone(),
                normalization: origin,
            },
        }
    };
    if let Some(value) = &flags.normalization {
        let (mean, std) = Normalization::mean_std(&parse_choice("normalization", value)?);
        input.image_mean = mean;
        input.image_std = std;
        input.rescale_factor = hf_rescale_factor();
        input.sources.normalization = format!("--normalization {value}");
    }
    if let Some(value) = &flags.interpolation {
        input.interpolation = parse_choice("interpolation", value)?;
        input.sources.interpolation = format!("--interpolation {value}");
    }
    if warn_on_default && input.sources.normalization.starts_with("built-in") {
        eprintln!(
            "warning: nothing says how this adapter's images were normalised (no run record \
             beside it, no preprocessor_config.json beside `{backbone}`): using ImageNet's \
             mean/std; pass --normalization if it was trained otherwise"
        );
    }
    Ok(input)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let device = args.device.open()?;
    let spec = BackboneSpec {
        checkpoint: args.backbone.clone(),
        revision: None,
    };
    let loaded = load_backbone(&spec, &backbone_paths(), &device, true, None)?;
    let BackboneModel::Vit(vit) = loaded.model else {
        anyhow::bail!(
            "`predict` classifies images; `{}` is a {} backbone",
            args.backbone,
            loaded.model.family()
        );
    };
    let reads_images = args.files.iter().any(|f| !holds_pixel_values(f));
    let input = resolve_image_input(
        &args.backbone,
        Some(&args.adapter),
        vit.config().image_size,
        &args.preprocessing,
        reads_images,
    )?;
    let model = PeftModel::from_adapter(&args.adapter, Box::new(vit))?;
    let ctx = ForwardCtx::eval();
    let mut out = Vec::new();
    for file in &args.files {
        let (pixels, applied) = read_inputs(file, &input)?;
        let dtype = model
            .backbone()
            .linear(0, peftbench_backbones::LinearSite::Query)
            .weight
            .dtype();
        let logits = model
            .logits(&pixels.to_device(&device)?.to_dtype(dtype)?, &ctx)?
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
                "preprocessing": applied,
            }));
        }
    }
    emit(&(serde_json::to_string_pretty(&out)? + "\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// A `.safetensors` file of preprocessed `pixel_values` rather than an image.
fn holds_pixel_values(file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "safetensors")
}

/// `[N, 3, S, S]` inputs from an image (N = 1, preprocessed by `input`) or a safetensors file of
/// `pixel_values` (used as given, so no preprocessing is reported for it).
fn read_inputs<'a>(
    file: &Path,
    input: &'a ImageInput,
) -> anyhow::Result<(Tensor, Option<&'a ImageInput>)> {
    let origin = file.display().to_string();
    if holds_pixel_values(file) {
        let tensors = candle_core::safetensors::load(file, &candle_core::Device::Cpu)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let pixels = tensors
            .get("pixel_values")
            .ok_or_else(|| anyhow::anyhow!("{origin}: no `pixel_values` tensor"))?;
        return Ok((pixels.to_dtype(DType::F32)?, None));
    }
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let s = input.image_size;
    let values = input.pixels(&bytes, &origin)?;
    let pixels = Tensor::from_vec(values, (1, 3, s, s), &candle_core::Device::Cpu)?;
    Ok((pixels, Some(input)))
}
