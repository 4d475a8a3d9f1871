//! The float types the kernels run on, with the few transcendental functions they need.

use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

use candle_core::{CpuStorage, WithDType};

pub(crate) trait Real:
    WithDType
    + Copy
    + Send
    + Sync
    + 'static
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;

    fn of(v: f64) -> Self;
    fn maximum(self, other: Self) -> Self;
    /// `exp(x)`; for f32 a branch-free polynomial that the compiler vectorises (relative error
    /// below 2e-7), since softmax and GELU evaluate it millions of times per step.
    fn exp(self) -> Self;
    /// `erf(x)`; for f32 a branch-free approximation (absolute error below 4e-7).
    fn erf(self) -> Self;
    fn slice(storage: &CpuStorage) -> Option<&[Self]>;
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;

    fn of(v: f64) -> Self {
        v
    }
    fn maximum(self, other: Self) -> Self {
        f64::max(self, other)
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;

    fn of(v: f64) -> Self {
        v as f32
    }
    fn maximum(self, other: Self) -> Self {
        f32::max(self, other)
    }
    fn exp(self) -> Self {
        exp_f32(self)
    }
    fn erf(self) -> Self {
        erf_f32(self)
    }
    fn slice(storage: &CpuStorage) -> Option<&[Self]> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

/// `exp(x)` by range reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, and Cephes' minimax polynomial
/// for `exp(r)`; `2^n` is built from its exponent bits. Inputs below -87.3 give the smallest
/// normal float instead of a denormal or zero, which no caller can tell from zero.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer without a branch or call.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.33654, 88.72283);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    // `shifted` is 1.5 * 2^23 + n exactly, so n sits in its low mantissa bits: reading it from
    // there instead of by a float-to-int cast keeps the whole function in vector registers.
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    y * f32::from_bits(biased << 23)
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp_f32(-a * a);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_erf_match_libm() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -20000..=20000 {
            let x = i as f32 * 0.004;
            let e = (x as f64).exp();
            worst_exp = worst_exp.max(((exp_f32(x) as f64) - e).abs() / e);
            worst_erf = worst_erf.max((erf_f32(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(worst_exp < 2e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 4e-7, "erf absolute error {worst_erf}");
        assert!(exp_f32(-1e30) < 1e-37 && exp_f32(-1e30) >= 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
    }
}
