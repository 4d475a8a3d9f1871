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
//! low-bit size.

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

/// Writes a low-bit adapter in peftbench's native layout, its weights packed.
fn write_packed(
    dir: &Path,
    method: &str,
    config: &impl serde::Serialize,
    base_model: &str,
    params: &NamedVars,
    bits: u8,
    head: &ClassifierHead,
) -> anyhow::Result<Vec<PathBuf>> {
    let tensors = packed_tensors(params, bits)?;
    peft_format::write_native_tensors(dir, method, config, base_model, tensors, head)
}
