//! Runs a kernel's inner loops compiled for AVX2 and FMA when the CPU has them.
//!
//! The workspace builds for baseline x86-64 (SSE2), so that one binary runs on any x86-64 CPU;
//! the compiler then vectorises the elementwise loops (exp, erf, softmax) four lanes wide. Compiled
//! for AVX2 they run eight wide, about twice as fast. Rust never fuses a multiply and an add by
//! itself and keeps the order of float sums, so the AVX2 code computes the same IEEE results bit
//! for bit: which path ran never changes a number.

// `#[target_feature]` functions are unsafe to call; the one call is guarded by the CPU check.
#![allow(unsafe_code)]

/// `f()`, with `f` inlined into a function compiled for AVX2 + FMA when the CPU supports them.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU was just checked to support both features.
            return unsafe { avx2_fma(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}
