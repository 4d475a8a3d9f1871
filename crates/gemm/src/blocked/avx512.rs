//! The AVX-512 register tile for f32, written with intrinsics.
//!
//! The portable tile compiled for AVX-512 kept its running sums (an `8 x 32` array of 1 KiB) on
//! the stack: a profile of a ViT training step showed a store of an accumulator beside every
//! fused multiply-add of the depth loop, 76% of the step in this loop, and 36-46 GFLOP/s a core.
//! Here the sums are `MR x NR / 16` zmm registers (24 of the 32 for the `12 x 32` tile), with one
//! or two vectors of B and one broadcast of A beside them, as in BLIS' 512-bit kernels.
//!
//! Each lane is still `c = fma(a[i][p], b[p][j], c)` for `p` in order from the running sum, so
//! the result is the portable tile's to the bit (`tests.rs` checks it on every path).

use std::any::TypeId;
use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::{tile_generic, Element, Operand};

/// [`super::Tile`] on the AVX-512 path: the intrinsic tile for f32 tiles one or two vectors wide,
/// the portable tile (compiled for AVX-512) for anything else.
///
/// The seven arguments are spelled out here and in [`tile_f32`] on purpose: bundled into one
/// struct, LLVM recomputed the row pointers of A serially at every depth step and spilled an
/// accumulator, and the tile ran at half its speed (`ci/bench/gemm`, measured). Check that bench
/// after any change to these two functions.
///
/// # Safety
/// As [`tile_generic`]; the CPU must have AVX-512 F.
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn tile<E: Element, const MR: usize, const NR: usize>(
    kc: usize,
    a: Operand<E>,
    b: Operand<E>,
    c: *mut E,
    rs: isize,
    cs: isize,
    continues: bool,
) {
    if TypeId::of::<E>() == TypeId::of::<f32>() && (NR == 16 || NR == 32) && b.cs == 1 {
        let cast = |x: Operand<E>| Operand {
            ptr: x.ptr.cast::<f32>(),
            rs: x.rs,
            cs: x.cs,
        };
        // SAFETY: `E` is f32; the caller's guarantee.
        unsafe { tile_f32::<MR, NR>(kc, cast(a), cast(b), c.cast(), rs, cs, continues) }
    } else {
        // SAFETY: the caller's guarantee.
        unsafe { tile_generic::<E, MR, NR>(kc, a, b, c, rs, cs, continues) }
    }
}

/// `MR x NR` f32 sums (`NR` 16 or 32) in registers; `b` addresses `kc` rows of `NR` contiguous
/// values.
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile_f32<const MR: usize, const NR: usize>(
    kc: usize,
    a: Operand<f32>,
    b: Operand<f32>,
    c: *mut f32,
    rs: isize,
    cs: isize,
    continues: bool,
) {
    const LANES: usize = 16;
    let vectors = NR / LANES;
    // Only the first `vectors` of each row are used; the second is optimised away when NR is 16.
    let mut acc: [[__m512; 2]; MR] = [[_mm512_setzero_ps(); 2]; MR];
    if continues {
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, sums) in row.iter_mut().enumerate().take(vectors) {
                let first = (v * LANES) as isize;
                // SAFETY: the caller's tile lies inside C.
                *sums = unsafe {
                    if cs == 1 {
                        _mm512_loadu_ps(c.offset(i as isize * rs + first))
                    } else {
                        let lanes: [f32; LANES] = std::array::from_fn(|j| {
                            *c.offset(i as isize * rs + (first + j as isize) * cs)
                        });
                        _mm512_loadu_ps(lanes.as_ptr())
                    }
                };
            }
        }
    }
    if a.rs == 1 {
        // Packed A (or A read transposed): the tile's `MR` values of a depth are contiguous.
        for d in 0..kc as isize {
            // SAFETY: `kc` columns of `MR` rows lie in A and `kc` rows of `NR` values in B.
            unsafe {
                step::<MR>(
                    &mut acc,
                    vectors,
                    |i| *a.ptr.offset(d * a.cs + i as isize),
                    b.ptr.offset(d * b.rs),
                )
            };
        }
    } else {
        let rows: [*const f32; MR] =
            std::array::from_fn(|i| unsafe { a.ptr.offset(i as isize * a.rs) });
        for d in 0..kc as isize {
            // SAFETY: as above.
            unsafe {
                step::<MR>(
                    &mut acc,
                    vectors,
                    |i| *rows[i].offset(d * a.cs),
                    b.ptr.offset(d * b.rs),
                )
            };
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &sums) in row.iter().enumerate().take(vectors) {
            let first = (v * LANES) as isize;
            // SAFETY: the caller's tile lies inside C.
            unsafe {
                if cs == 1 {
                    _mm512_storeu_ps(c.offset(i as isize * rs + first), sums);
                } else {
                    let mut lanes = [0f32; LANES];
                    _mm512_storeu_ps(lanes.as_mut_ptr(), sums);
                    for (j, &value) in lanes.iter().enumerate() {
                        *c.offset(i as isize * rs + (first + j as isize) * cs) = value;
                    }
                }
            }
        }
    }
}

/// One depth step: every row's sums `+= a(i) * b`, `b` one or two vectors of B's row.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn step<const MR: usize>(
    acc: &mut [[__m512; 2]; MR],
    vectors: usize,
    a: impl Fn(usize) -> f32,
    b: *const f32,
) {
    // SAFETY: the caller's row of B holds `vectors` vectors.
    let b0 = unsafe { _mm512_loadu_ps(b) };
    let b1 = if vectors == 2 {
        unsafe { _mm512_loadu_ps(b.add(16)) }
    } else {
        b0
    };
    for (i, row) in acc.iter_mut().enumerate() {
        let ai = _mm512_set1_ps(a(i));
        row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
        if vectors == 2 {
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
    }
}
