//! Low-bit adapters (Jie, Wang, Tang & Deng, 2023, "Revisiting the Parameter Efficiency of
//! Adapters from the Perspective of Precision Redundancy", ICCV, arXiv:2307.16867).
//!
//! Adapters are redundant in precision: their weights can be quantised to 1 or 2 bits with little
//! loss. Both methods here quantise every adapter weight matrix in each forward pass ([`quant`]:
//! `b`-bit symmetric uniform codes with one step per output row) and train full-precision latent
//! weights through the straight-through estimator:
//!
//! * [`BiAdaptFormer`] (`bi-adaptformer`): AdaptFormer's parallel MLP branch;
//! * [`BiLora`] (`bi-lora`): LoRA's low-rank update of the query and value projections.
//!
//! Both save their weights bit-packed (`<name>.packed` u8 codes + `<name>.step` per row, peftbench's
//! native format since HF PEFT has no low-bit adapters), so the recorded adapter bytes are the real
//! low-bit size. A loaded adapter is for inference: its weights hold the decoded low-bit values and
//! are used as they are, and saving it again writes the codes it was read from.

mod adaptformer;
mod lora;
pub mod quant;

pub use adaptformer::{BiAdaptFormer, LowBitAdaptation, LowBitBranch, LowBitConfig};
pub use lora::{BiLora, BiLoraAdaptation, BiLoraConfig};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use peftbench_core::NamedVars;

use crate::{peft_format, ClassifierHead};

/// `bits` must be one the quantiser supports.
fn check_bits(method: &str, bits: u8) -> std::result::Result<(), String> {
    if quant::SUPPORTED_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "method `{method}`: bits {bits} is not supported; allowed: 1, 2"
        ))
    }
}

/// The tensors written to disk: every matrix as packed `bits`-bit codes and per-row steps, vectors
/// (biases) as they are.
pub fn packed_tensors(params: &NamedVars, bits: u8) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for p in params.iter() {
        let t = p.var.as_tensor();
        if t.rank() == 2 {
            let (codes, step) = quant::quantize_codes(t, bits)?;
            let packed = quant::pack(&quant::codes_to_bytes(&codes)?, bits);
            let n = packed.len();
            out.insert(
                format!("{}.packed", p.name),
                Tensor::from_vec(packed, n, t.device())?,
            );
            out.insert(format!("{}.step", p.name), step.flatten_all()?);
        } else {
            out.insert(p.name.clone(), t.copy()?);
        }
    }
    Ok(out)
}

/// A weight as the forward pass uses it: quantised to `bits` with the straight-through estimator
/// while training, or as it is when it already holds low-bit values read from a saved adapter
/// ([`restore_packed`]), which quantising again would not reproduce (a 2-bit row's step comes
/// from its latent values' mean, not its codes').
fn low_bit(w: &Tensor, bits: u8, restored: bool) -> Result<Tensor> {
    if restored {
        Ok(w.clone())
    } else {
        quant::quantize_ste(w, bits)
    }
}

/// Sets every matrix of `params` to the low-bit values a saved adapter stores as `<name>.packed`
/// codes and `<name>.step` per row (vectors are loaded by name as usual). Returns what
/// `Adaptation::restore` reports and the packed tensors, for saving the adapter again.
fn restore_packed(
    params: &NamedVars,
    bits: u8,
    tensors: &BTreeMap<String, Tensor>,
) -> anyhow::Result<(crate::Restored, BTreeMap<String, Tensor>)> {
    let mut restored = crate::Restored::default();
    let mut packed_tensors = BTreeMap::new();
    for p in params.iter().filter(|p| p.var.rank() == 2) {
        let (packed_name, step_name) = (format!("{}.packed", p.name), format!("{}.step", p.name));
        let (Some(packed), Some(step)) = (tensors.get(&packed_name), tensors.get(&step_name))
        else {
            anyhow::bail!("missing `{packed_name}` or `{step_name}`");
        };
        let (rows, cols) = p.var.dims2()?;
        let bytes: Vec<u8> = packed.to_dtype(candle_core::DType::U8)?.to_vec1()?;
        anyhow::ensure!(
            bytes.len() == quant::packed_len(rows * cols, bits) && step.elem_count() == rows,
            "`{packed_name}` / `{step_name}` do not fit a {rows}x{cols} matrix at {bits} bits"
        );
        let codes: Vec<f32> = quant::unpack(&bytes, bits, rows * cols)
            .into_iter()
            .map(f32::from)
            .collect();
        let like = p.var.as_tensor();
        let codes = Tensor::from_vec(codes, (rows, cols), like.device())?.to_dtype(like.dtype())?;
        let step = step
            .to_device(like.device())?
            .to_dtype(like.dtype())?
            .reshape((rows, 1))?;
        p.var.set(&quant::dequantize(&codes, &step, bits)?)?;
        packed_tensors.insert(packed_name.clone(), packed.clone());
        packed_tensors.insert(step_name.clone(), tensors[&step_name].clone());
        restored.used.extend([packed_name, step_name]);
        restored.set.push(p.name.clone());
    }
    Ok((restored, packed_tensors))
}

/// Writes a low-bit adapter in peftbench's native layout, its weights packed. An adapter
/// `restored` from disk writes the codes and steps it was read from (its matrices already hold
/// their low-bit values, which quantising again would not give back).
#[allow(clippy::too_many_arguments)]
fn write_packed(
    dir: &Path,
    method: &str,
    config: &impl serde::Serialize,
    base_model: &str,
    params: &NamedVars,
    bits: u8,
    restored: Option<&BTreeMap<String, Tensor>>,
    head: &ClassifierHead,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut tensors = packed_tensors(params, bits)?;
    if let Some(saved) = restored {
        for (name, t) in tensors.iter_mut() {
            if let Some(original) = saved.get(name) {
                *t = original.clone();
            }
        }
    }
    peft_format::write_native_tensors(dir, method, config, base_model, tensors, head)
}
