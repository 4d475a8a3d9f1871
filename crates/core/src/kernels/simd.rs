//! Runs a kernel's inner loops compiled for AVX-512 or AVX2 (with FMA) when the CPU has them.
//!
//! The workspace builds for baseline x86-64 (SSE2), so that one binary runs on any x86-64 CPU;
//! the compiler then vectorises the elementwise loops (exp, erf, softmax) four lanes wide. Compiled
//! for AVX2 they run eight wide, about twice as fast, and sixteen wide for AVX-512. Rust never
//! fuses a multiply and an add by itself and keeps the order of float sums, so the wider code
//! computes the same IEEE results bit for bit: which path ran never changes a number. (The matrix products have their own paths, in
//! the `gemm` crate, with the same guarantee.)

// `#[target_feature]` functions are unsafe to call; the calls are guarded by the CPU check.
#![allow(unsafe_code)]

/// `f()`, with `f` inlined into a function compiled for the widest instruction set the CPU has
/// (AVX-512 or AVX2, each with FMA), unless `PEFTBENCH_KERNELS` (see the `gemm` crate's `isa`)
/// asks for a narrower one.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match gemm::isa::selected() {
            // SAFETY (both): `selected` only returns a path whose features the CPU has.
            gemm::Isa::Avx512 => return unsafe { avx512_fma(f) },
            gemm::Isa::Avx2 => return unsafe { avx2_fma(f) },
            gemm::Isa::Portable => {}
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn avx512_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `dst.copy_from_slice(src)` with non-temporal stores: the copy goes to memory without first
/// reading `dst`'s lines into the cache, and without evicting what the caller works on. For large
/// buffers written now and read back much later (attention's probabilities, kept for the backward
/// pass); the bits are copied unchanged.
pub(crate) fn stream_copy<T: super::Real>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "stream_copy: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_sfence, _mm_stream_ps};
        let bytes = std::mem::size_of_val(dst);
        if bytes.is_multiple_of(4) && std::mem::align_of::<T>() >= 4 {
            let words = bytes / 4;
            let (d, s) = (dst.as_mut_ptr().cast::<f32>(), src.as_ptr().cast::<f32>());
            // Words before the first 16-byte boundary of `dst`, then whole 16-byte groups.
            let head = (d.align_offset(16)).min(words);
            let groups = (words - head) / 4;
            // SAFETY: `d` and `s` address `words` f32-sized words of two distinct slices of
            // plain values (`T` is f32 or f64, at least 4-aligned, so a word never straddles
            // elements wrongly: the bytes are copied as they are); `d + head` is 16-byte aligned
            // as `_mm_stream_ps` needs; SSE is part of x86-64.
            unsafe {
                std::ptr::copy_nonoverlapping(s, d, head);
                for g in 0..groups {
                    let at = head + 4 * g;
                    _mm_stream_ps(d.add(at), _mm_loadu_ps(s.add(at)));
                }
                let done = head + 4 * groups;
                std::ptr::copy_nonoverlapping(s.add(done), d.add(done), words - done);
                _mm_sfence();
            }
            return;
        }
    }
    dst.copy_from_slice(src);
}

/// Whether `PEFTBENCH_KERNELS`, when set, names a path this CPU can run (and
/// `PEFTBENCH_GEMM` and `PEFTBENCH_FUSED_SUBLAYERS` a value they take): an error says what is
/// wrong, so a forced run never silently falls back to another path.
pub fn check_kernels_env() -> Result<(), String> {
    gemm::isa::order_from_env()?;
    super::sublayer::fused_sublayers_from_env()?;
    gemm::isa::from_env().map(|_| ())
}

/// What decides the rounding of this process's products, for keys of anything cached from a
/// computation (a pretrained demo backbone): `fixed-order` names the same arithmetic on every
/// x86-64 CPU; `upstream` (`PEFTBENCH_GEMM=upstream`) an arithmetic that depends on the CPU, and
/// a cache made under it is kept apart.
pub fn summation_order() -> &'static str {
    gemm::isa::order().name()
}

/// The instruction sets the CPU kernels run with on this machine, and the wider ones the CPU has
/// that they do not use, in one line (`gemm fixed-order avx2+fma; elementwise avx2+fma; cpu has
/// avx512f+fma` when `PEFTBENCH_KERNELS=avx2` on an AVX-512 machine):
/// what a benchmark ratio or a run record needs beside it. Speed depends on it; since every
/// product is a fixed-order chain and the elementwise loops are the same scalar arithmetic on each
/// path, the numbers do not.
pub fn instruction_sets() -> String {
    let path = gemm::isa::selected();
    // The elementwise loops run on the GEMM's path (`vectorized` above); the upstream order's
    // products take their FMA kernels where the CPU has FMA (its AVX-512 ones are not built).
    let gemm = match gemm::isa::order() {
        gemm::Order::Fixed => format!("fixed-order {}", path.name()),
        gemm::Order::Upstream if gemm::Isa::Avx2.is_available() => "upstream avx2+fma".into(),
        gemm::Order::Upstream => "upstream portable".into(),
    };
    let mut line = format!("gemm {gemm}; elementwise {}", path.name());
    let best = gemm::isa::detected();
    if best != path {
        line.push_str(&format!("; cpu has {}", best.name()));
    }
    line
}

#[cfg(test)]
mod tests {
    /// The streamed copy equals `copy_from_slice` bit for bit at every alignment of the
    /// destination and every length around the 16-byte groups, for f32 and f64 (NaN payloads and
    /// negative zeros included).
    #[test]
    fn stream_copy_copies_every_bit() {
        let f32s: Vec<f32> = (0..67u32)
            .map(|i| match i % 5 {
                0 => f32::from_bits(0x7fc0_0000 | i),
                1 => -0.0,
                _ => i as f32 * -1.25,
            })
            .collect();
        let f64s: Vec<f64> = f32s.iter().map(|&x| f64::from(x)).collect();
        for start in 0..4 {
            for len in 0..f32s.len() - start {
                let mut dst = vec![1f32; f32s.len()];
                super::stream_copy(&mut dst[start..start + len], &f32s[..len]);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&dst[start..start + len]), bits(&f32s[..len]));
                assert!(dst[..start]
                    .iter()
                    .chain(&dst[start + len..])
                    .all(|&x| x == 1.0));
                let mut dst = vec![1f64; f64s.len()];
                super::stream_copy(&mut dst[start..start + len], &f64s[..len]);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&dst[start..start + len]), bits(&f64s[..len]));
            }
        }
    }

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
        assert!(line.ends_with(&format!("; elementwise {gemm}")), "{line}");
    }
}
