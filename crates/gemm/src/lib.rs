//! peftbench's CPU matrix product, with the `gemm` crate's entry point (`gemm::gemm`,
//! `gemm::Parallelism`) so that the workspace's `[patch.crates-io]` runs candle's products here too.
//!
//! Why not the `gemm` crate itself: it sizes its depth blocks from the cache sizes it reads off the
//! machine, and a BLAS-style kernel adds each depth block's partial sum to the output, so the
//! order of every sum, and with it the rounding, followed the CPU. The same seed gave visibly
//! different training curves on an AMD and an Intel machine. Here every output element is one
//! fused multiply-add chain over the depth in order (see [`blocked`]), so a product is
//! bit-identical on any x86-64 CPU, on the portable, AVX2 and AVX-512 paths, and for any number of
//! threads. Half-precision inputs are widened to f32 and the result rounded back.
//!
//! [`isa`] picks the path: the widest the CPU has, or the one `PEFTBENCH_KERNELS` names.
//! `PEFTBENCH_GEMM=upstream` runs the upstream crate's kernels instead (`gemm-f16`/`-f32`/`-f64`,
//! which `gemm` 0.19 itself dispatches to), for comparison: their numbers depend on the CPU.

// Raw pointers and strides are this crate's interface (as the upstream crate's), and the kernels
// are compiled per instruction set with `#[target_feature]`, which makes them unsafe to call.
#![allow(unsafe_code)]

mod blocked;
pub mod isa;

use std::any::TypeId;

pub use half::{bf16, f16};
pub use isa::{Isa, Order};

use blocked::{multiply, Element, Product};

/// How many threads a product may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// The calling thread only.
    None,
    /// Up to this many of rayon's threads (0: all of them).
    Rayon(usize),
}

impl Parallelism {
    fn threads(self) -> usize {
        match self {
            Parallelism::None => 1,
            Parallelism::Rayon(0) => rayon::current_num_threads(),
            Parallelism::Rayon(n) => n,
        }
    }
}

/// `dst = alpha * dst + beta * lhs @ rhs` (`read_dst`), or `dst = beta * lhs @ rhs`, for
/// `T` = f32, f64, f16 or bf16, with the upstream crate's argument order: each matrix by a pointer
/// to its element `(0, 0)`, a column stride (`_cs`) and a row stride (`_rs`), in elements.
/// The product's element `(i, j)` is `fma(lhs[i][k-1], rhs[k-1][j], ... fma(lhs[i][0],
/// rhs[0][j], +0.0))`; scaling and the read destination are applied after it, in that order.
/// The `conj_*` flags are for complex types and are ignored.
///
/// # Safety
/// The pointers must address every element of an `m x k`, `k x n` and `m x n` matrix under their
/// strides; `dst` must be writable and overlap neither input.
///
/// # Panics
/// For any other `T`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm<T: 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const T,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const T,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: T,
    beta: T,
    _conj_dst: bool,
    _conj_lhs: bool,
    _conj_rhs: bool,
    parallelism: Parallelism,
) {
    if isa::order() == Order::Upstream {
        // SAFETY: the caller's guarantee, which is the upstream crate's.
        unsafe {
            upstream(
                m,
                n,
                k,
                dst,
                dst_cs,
                dst_rs,
                read_dst,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                alpha,
                beta,
                parallelism,
            )
        };
        return;
    }
    let isa = isa::selected();
    let threads = parallelism.threads();
    let id = TypeId::of::<T>();
    // SAFETY (each arm): `T` is the type the arm casts to, and the caller's guarantee.
    unsafe {
        // The same product of `T` read as `$ty` (f32 or f64).
        macro_rules! fixed_order {
            ($ty:ty) => {{
                let cast = |x: T| *(&x as *const T).cast::<$ty>();
                let product = Product::<$ty> {
                    m,
                    n,
                    k,
                    dst: dst.cast(),
                    dst_rs,
                    dst_cs,
                    lhs: lhs.cast(),
                    lhs_rs,
                    lhs_cs,
                    rhs: rhs.cast(),
                    rhs_rs,
                    rhs_cs,
                };
                scaled(product, read_dst, cast(alpha), cast(beta), isa, threads);
            }};
        }
        if id == TypeId::of::<f32>() {
            fixed_order!(f32);
        } else if id == TypeId::of::<f64>() {
            fixed_order!(f64);
        } else if id == TypeId::of::<f16>() {
            let cast = |x: T| *(&x as *const T).cast::<f16>();
            widened(
                (m, n, k),
                (dst.cast::<f16>(), dst_rs, dst_cs, read_dst),
                (lhs.cast::<f16>(), lhs_rs, lhs_cs),
                (rhs.cast::<f16>(), rhs_rs, rhs_cs),
                (cast(alpha).to_f32(), cast(beta).to_f32()),
                |x: f16| x.to_f32(),
                f16::from_f32,
                isa,
                threads,
            );
        } else if id == TypeId::of::<bf16>() {
            let cast = |x: T| *(&x as *const T).cast::<bf16>();
            widened(
                (m, n, k),
                (dst.cast::<bf16>(), dst_rs, dst_cs, read_dst),
                (lhs.cast::<bf16>(), lhs_rs, lhs_cs),
                (rhs.cast::<bf16>(), rhs_rs, rhs_cs),
                (cast(alpha).to_f32(), cast(beta).to_f32()),
                |x: bf16| x.to_f32(),
                bf16::from_f32,
                isa,
                threads,
            );
        } else {
            panic!(
                "gemm: unsupported element type {}",
                std::any::type_name::<T>()
            );
        }
    }
}

/// The upstream `gemm` 0.19 entry point, as it dispatches: f16, f32 and f64 to their crates' kernels.
#[allow(clippy::too_many_arguments)]
unsafe fn upstream<T: 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const T,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const T,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: T,
    beta: T,
    parallelism: Parallelism,
) {
    let parallelism = match parallelism {
        Parallelism::None => gemm_common::Parallelism::None,
        Parallelism::Rayon(n) => gemm_common::Parallelism::Rayon(n),
    };
    let id = TypeId::of::<T>();
    macro_rules! call {
        ($ty:ty, $kernels:path) => {
            // SAFETY: `T` is `$ty`; the caller's guarantee.
            unsafe {
                $kernels()(
                    m,
                    n,
                    k,
                    dst.cast::<$ty>(),
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs.cast::<$ty>(),
                    lhs_cs,
                    lhs_rs,
                    rhs.cast::<$ty>(),
                    rhs_cs,
                    rhs_rs,
                    *(&alpha as *const T).cast::<$ty>(),
                    *(&beta as *const T).cast::<$ty>(),
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        };
    }
    if id == TypeId::of::<f32>() {
        call!(f32, gemm_f32::gemm::f32::get_gemm_fn);
    } else if id == TypeId::of::<f64>() {
        call!(f64, gemm_f64::gemm::f64::get_gemm_fn);
    } else if id == TypeId::of::<f16>() {
        call!(f16, gemm_f16::gemm::f16::get_gemm_fn);
    } else {
        panic!(
            "gemm: unsupported element type {}",
            std::any::type_name::<T>()
        );
    }
}

/// Scalars the epilogue multiplies and adds (plain IEEE operations, the same on every path).
trait Scalar:
    Element + std::ops::Mul<Output = Self> + std::ops::Add<Output = Self> + PartialEq
{
    const ONE: Self;
}
impl Scalar for f32 {
    const ONE: Self = 1.0;
}
impl Scalar for f64 {
    const ONE: Self = 1.0;
}

/// The product into `dst` directly when it is `dst = lhs @ rhs` (what candle and our kernels ask
/// for), else into a scratch matrix that is then scaled and added.
unsafe fn scaled<E: Scalar>(
    product: Product<E>,
    read_dst: bool,
    alpha: E,
    beta: E,
    isa: Isa,
    threads: usize,
) {
    if !read_dst && beta == E::ONE {
        unsafe { multiply(product, isa, threads) };
        return;
    }
    let (m, n) = (product.m, product.n);
    let mut scratch = vec![E::ZERO; m * n];
    let into_scratch = Product {
        dst: scratch.as_mut_ptr(),
        dst_rs: n as isize,
        dst_cs: 1,
        ..product
    };
    unsafe { multiply(into_scratch, isa, threads) };
    for i in 0..m {
        for j in 0..n {
            let out = unsafe {
                &mut *product
                    .dst
                    .offset(i as isize * product.dst_rs + j as isize * product.dst_cs)
            };
            let value = beta * scratch[i * n + j];
            *out = if read_dst {
                alpha * *out + value
            } else {
                value
            };
        }
    }
}

/// A half-precision product, computed in f32 on widened copies and rounded back once.
#[allow(clippy::too_many_arguments)]
unsafe fn widened<H: Copy>(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, dst_cs, read_dst): (*mut H, isize, isize, bool),
    (lhs, lhs_rs, lhs_cs): (*const H, isize, isize),
    (rhs, rhs_rs, rhs_cs): (*const H, isize, isize),
    (alpha, beta): (f32, f32),
    widen: impl Fn(H) -> f32,
    narrow: impl Fn(f32) -> H,
    isa: Isa,
    threads: usize,
) {
    let copy = |ptr: *const H, rows: usize, cols: usize, rs: isize, cs: isize| -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                out.push(widen(unsafe {
                    *ptr.offset(i as isize * rs + j as isize * cs)
                }));
            }
        }
        out
    };
    let a = copy(lhs, m, k, lhs_rs, lhs_cs);
    let b = copy(rhs, k, n, rhs_rs, rhs_cs);
    let mut c = if read_dst {
        copy(dst.cast_const(), m, n, dst_rs, dst_cs)
    } else {
        vec![0.0; m * n]
    };
    let product = Product {
        m,
        n,
        k,
        dst: c.as_mut_ptr(),
        dst_rs: n as isize,
        dst_cs: 1,
        lhs: a.as_ptr(),
        lhs_rs: k as isize,
        lhs_cs: 1,
        rhs: b.as_ptr(),
        rhs_rs: n as isize,
        rhs_cs: 1,
    };
    unsafe { scaled(product, read_dst, alpha, beta, isa, threads) };
    for i in 0..m {
        for j in 0..n {
            unsafe {
                *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = narrow(c[i * n + j])
            };
        }
    }
}

#[cfg(test)]
mod tests;
