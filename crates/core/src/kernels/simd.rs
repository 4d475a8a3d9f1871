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

/// The instruction sets the CPU kernels run with on this machine, and the wider ones the CPU has
/// that they do not use, in one line (`gemm avx2+fma; elementwise avx2+fma; unused: avx512f`):
/// what a benchmark ratio or a run record needs beside it, since speed and, through the GEMM's
/// blocking, rounding depend on the machine.
pub fn instruction_sets() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            _ => false,
        };
        // gemm 0.19 takes its FMA kernels when the CPU has FMA (its AVX-512 kernels need the
        // `x86-v4` feature, which is not built); the elementwise loops, AVX2 + FMA as above.
        let gemm = if has("fma") { "avx2+fma" } else { "sse2" };
        let elementwise = if has("avx2") && has("fma") {
            "avx2+fma"
        } else {
            "sse2"
        };
        let unused: Vec<&str> = ["avx512f"].into_iter().filter(|f| has(f)).collect();
        let mut line = format!("gemm {gemm}; elementwise {elementwise}");
        if !unused.is_empty() {
            line.push_str(&format!("; unused: {}", unused.join(", ")));
        }
        line
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        format!(
            "gemm and elementwise: portable code for {}",
            std::env::consts::ARCH
        )
    }
}

#[cfg(test)]
mod tests {
    /// The line agrees with the CPU flags the kernel reports in `/proc/cpuinfo` (Linux, x86-64):
    /// AVX2 + FMA kernels exactly when both flags are there, AVX-512 named unused when it is.
    #[test]
    fn instruction_sets_agree_with_the_cpu_flags() {
        let line = super::instruction_sets();
        assert!(
            line.starts_with("gemm ") && line.contains("; elementwise "),
            "{line}"
        );
        let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
            eprintln!("SKIPPED: no /proc/cpuinfo to compare with");
            return;
        };
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let has = |f: &str| flags.contains(&f);
        let simd = if has("avx2") && has("fma") {
            "avx2+fma"
        } else {
            "sse2"
        };
        assert!(line.contains(&format!("elementwise {simd}")), "{line}");
        assert_eq!(line.contains("unused: avx512f"), has("avx512f"), "{line}");
    }
}
