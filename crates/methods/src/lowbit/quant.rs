//! `b`-bit symmetric uniform quantisation of a weight matrix, one step per output row, with the
//! straight-through estimator, and the bit-packing used on disk.
//!
//! With `L = 2^b` levels and `α` the row's mean |w| (the L1-optimal scale of binary weights), the
//! step is `Δ = 4α / L` (1 bit: `±α`; 2 bits: `{±0.5α, ±1.5α}`). A weight's code is
//! `c = clamp(floor(w / Δ) + L/2, 0, L − 1)` and its value `(c − (L − 1)/2) · Δ`. A zero row has
//! `Δ = 0` and quantises to exactly zero.

use candle_core::{DType, Result, Tensor, D};

/// Bit widths the quantiser supports.
pub const SUPPORTED_BITS: [u8; 2] = [1, 2];

/// Codes `[rows, cols]` (as the weight's dtype, values `0..L`) and steps `Δ` `[rows, 1]`.
pub fn quantize_codes(w: &Tensor, bits: u8) -> Result<(Tensor, Tensor)> {
    let levels = (1u32 << bits) as f64;
    let step = (w.abs()?.mean_keepdim(D::Minus1)? * (4.0 / levels))?;
    // A zero step divides by one instead, which puts every weight of the row on code L/2.
    let safe = (&step + step.eq(0.0)?.to_dtype(w.dtype())?)?;
    let codes = ((w.broadcast_div(&safe)?.floor()? + levels / 2.0)?).clamp(0.0, levels - 1.0)?;
    Ok((codes, step))
}

/// The weight's values from codes and steps.
pub fn dequantize(codes: &Tensor, step: &Tensor, bits: u8) -> Result<Tensor> {
    let levels = (1u32 << bits) as f64;
    (codes - (levels - 1.0) / 2.0)?.broadcast_mul(step)
}

/// The quantised weight in the forward pass, differentiable by the straight-through estimator:
/// `Q(w) + (w − w.detach())` has exactly the value `Q(w)` (the bracket is exactly zero) and
/// passes gradients to `w` unchanged.
pub fn quantize_ste(w: &Tensor, bits: u8) -> Result<Tensor> {
    let (codes, step) = quantize_codes(&w.detach(), bits)?;
    let q = dequantize(&codes, &step, bits)?;
    q + (w - w.detach())?
}

/// Packs codes (`< 2^bits`) into bytes, least significant bits first.
pub fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
    let per_byte = 8 / bits as usize;
    codes
        .chunks(per_byte)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |byte, (i, &c)| byte | (c << (i * bits as usize)))
        })
        .collect()
}

/// The first `n` codes from packed bytes.
pub fn unpack(bytes: &[u8], bits: u8, n: usize) -> Vec<u8> {
    let per_byte = 8 / bits as usize;
    let mask = ((1u16 << bits) - 1) as u8;
    (0..n)
        .map(|i| (bytes[i / per_byte] >> ((i % per_byte) * bits as usize)) & mask)
        .collect()
}

/// Packed bytes of an `n`-weight matrix at `bits` per weight.
pub fn packed_len(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Codes as bytes, row-major.
pub fn codes_to_bytes(codes: &Tensor) -> Result<Vec<u8>> {
    codes.flatten_all()?.to_dtype(DType::U8)?.to_vec1()
}
