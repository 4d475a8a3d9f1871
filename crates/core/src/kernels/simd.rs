//! Runs a kernel's inner loops compiled for AVX2 and FMA when the CPU has them.
//!
//! The workspace builds for baseline x86-64 (SSE2), so that one binary runs on any x86-64 CPU;
//! the compiler then vectorises the elementwise loops (exp, erf, softmax) four lanes wide. Compiled
//! for AVX2 they run eight wide, about twice as fast. Rust never fuses a multiply and an add by
//! itself and keeps the order of float sums, so the AVX2 code computes the same IEEE results bit
//! for bit: which path ran never changes a number. (The matrix products have their own paths, in
//! the `gemm` crate, with the same guarantee.)

// `#[target_feature]` functions are unsafe to call; the one call is guarded by the CPU check.
#![allow(unsafe_code)]

/// `f()`, with `f` inlined into a function compiled for AVX2 + FMA when the CPU supports them and
/// `PEFTBENCH_KERNELS` (see the `gemm` crate's `isa`) does not ask for the portable path.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if gemm::isa::selected() != gemm::Isa::Portable && gemm::Isa::Avx2.is_available() {
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

/// Whether `PEFTBENCH_KERNELS`, when set, names a path this CPU can run: an error says what is
/// wrong, so a forced run never silently falls back to another path.
pub fn check_kernels_env() -> Result<(), String> {
    gemm::isa::from_env().map(|_| ())
}

/// The instruction sets the CPU kernels run with on this machine, and the wider ones the CPU has
/// that they do not use, in one line (`gemm avx512f+fma; elementwise avx2+fma; cpu has avx512f`):
/// what a benchmark ratio or a run record needs beside it. Speed depends on it; since every
/// product is a fixed-order chain and the elementwise loops are the same scalar arithmetic on each
/// path, the numbers do not.
pub fn instruction_sets() -> String {
    let gemm = gemm::isa::selected();
    let elementwise = if gemm != gemm::Isa::Portable && gemm::Isa::Avx2.is_available() {
        "avx2+fma"
    } else {
        "portable"
    };
    let mut line = format!("gemm {}; elementwise {elementwise}", gemm.name());
    let best = gemm::isa::detected();
    if best != gemm {
        line.push_str(&format!("; cpu has {}", best.name()));
    }
    line
}

#[cfg(test)]
mod tests {
    /// The line agrees with the CPU flags the kernel reports in `/proc/cpuinfo` (Linux, x86-64):
    /// the widest path the flags allow, unless `PEFTBENCH_KERNELS` forces another.
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
        if !cfg!(target_arch = "x86_64") || std::env::var_os(gemm::isa::KERNELS_ENV).is_some() {
            return;
        }
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let has = |f: &str| flags.contains(&f);
        let gemm = if has("avx512f") && has("fma") {
            "avx512f+fma"
        } else if has("avx2") && has("fma") {
            "avx2+fma"
        } else {
            "portable"
        };
        assert!(line.starts_with(&format!("gemm {gemm};")), "{line}");
        let simd = if has("avx2") && has("fma") {
            "avx2+fma"
        } else {
            "portable"
        };
        assert!(line.contains(&format!("elementwise {simd}")), "{line}");
    }
}
