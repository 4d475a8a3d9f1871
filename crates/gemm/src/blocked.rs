//! The blocked product `C = A B` (Goto and van de Geijn's layout, as in BLIS): B is packed in
//! panels of `KC` rows and `NC` columns, A in blocks of `MC` rows, and a register tile of
//! `MR x NR` outputs runs through a packed depth slice.
//!
//! What makes it reproducible: a tile does not start its sums from zero at each depth slice, as
//! BLAS kernels do before adding the slice's partial sum to C; it loads the running sums from C
//! and continues them. Every output element is therefore one chain
//! `c = fma(a[i][p], b[p][j], c)` for `p = 0, 1, ..., k - 1`, starting from `+0.0`, whatever the
//! blocking, the tile, the vector width or the split over threads (threads only ever divide the
//! outputs). Tile sizes and blocking are tuned per instruction set for speed, and cannot change a
//! bit of the result.

use std::cell::RefCell;
use std::thread::LocalKey;

use rayon::prelude::*;

use crate::isa::Isa;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// A float the kernels multiply: `f32` or `f64`.
pub(crate) trait Element: Copy + Send + Sync + 'static {
    const ZERO: Self;
    /// `self * b + c`, rounded once.
    fn fma(self, b: Self, c: Self) -> Self;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
}

/// Depth of a packed slice: a `KC x NR` strip of B stays in L1 while a tile runs.
const KC: usize = 256;
/// Columns of a packed B panel (L2/L3).
const NC: usize = 2048;
/// Below this many multiply-adds a product runs on the calling thread (the upstream crate's
/// threshold). Waking rayon's threads for less costs more than it saves, and on a small machine
/// their spinning steals the cores that candle's own elementwise pool spins on.
const PARALLEL_WORK: usize = 48 * 48 * 256;

thread_local! {
    /// Packing buffers, kept by each thread between products: small products are common (one
    /// per attention head and batch element) and would otherwise spend much of their time
    /// allocating and zeroing. Stored as f64 so that they are aligned for either element type.
    static RHS_BUFFER: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    static LHS_BUFFER: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` elements of the thread's `buffer` (any contents: the packing overwrites
/// what it reads), or on a fresh one when the thread is already using it (a rayon thread can
/// start another product while it waits inside one).
fn with_buffer<E: Element, R>(
    buffer: &'static LocalKey<RefCell<Vec<f64>>>,
    len: usize,
    f: impl FnOnce(&mut [E]) -> R,
) -> R {
    const { assert!(std::mem::size_of::<E>() <= 8 && std::mem::align_of::<E>() <= 8) };
    buffer.with(|cell| match cell.try_borrow_mut() {
        Ok(mut words) => {
            let needed = (len * std::mem::size_of::<E>()).div_ceil(8);
            if words.len() < needed {
                words.resize(needed, 0.0);
            }
            // SAFETY: the words hold at least `len` elements, suitably aligned, and every bit
            // pattern is a valid f32 or f64.
            f(unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<E>(), len) })
        }
        Err(_) => f(&mut vec![E::ZERO; len]),
    })
}

/// The operands of `C = A B`: element `(i, j)` of a matrix at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Product<E> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dst: *mut E,
    pub dst_rs: isize,
    pub dst_cs: isize,
    pub lhs: *const E,
    pub lhs_rs: isize,
    pub lhs_cs: isize,
    pub rhs: *const E,
    pub rhs_rs: isize,
    pub rhs_cs: isize,
}

// SAFETY: threads only ever write disjoint output tiles and read the inputs (the caller of
// `gemm` guarantees that the destination aliases neither input).
unsafe impl<E: Send> Send for Product<E> {}
unsafe impl<E: Sync> Sync for Product<E> {}

/// `C = A B` with the kernels of `isa` (which the CPU must support), split over up to `threads`
/// threads.
///
/// # Safety
/// Every element the operands address must be valid (read for A and B, written for C), and C
/// must not overlap A or B.
pub(crate) unsafe fn multiply<E: Element>(product: Product<E>, isa: Isa, threads: usize) {
    if product.m == 0 || product.n == 0 {
        return;
    }
    if product.k == 0 {
        for i in 0..product.m {
            for j in 0..product.n {
                // SAFETY: (i, j) is inside C.
                unsafe {
                    *product
                        .dst
                        .offset(offset(i, j, product.dst_rs, product.dst_cs)) = E::ZERO
                };
            }
        }
        return;
    }
    // Tile sizes: as many accumulators as the registers hold (AVX2: 12 of 16 ymm, AVX-512: 24
    // of 32 zmm, as BLIS' 512-bit kernels; two vectors of B and one broadcast of A beside them).
    // A product with at most one vector of columns (a classifier head, a LoRA down-projection's
    // gradient) runs on tiles one vector wide and twice as tall: a two-vector tile would spend
    // half its work on padding.
    let f32_lanes = std::mem::size_of::<E>() == 4;
    let narrow = |vector: usize| product.n <= vector;
    match (isa, f32_lanes) {
        (Isa::Portable, true) => unsafe { run::<E, 4, 8>(product, threads, Kernels::portable()) },
        (Isa::Portable, false) => unsafe { run::<E, 4, 4>(product, threads, Kernels::portable()) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, true) if narrow(8) => unsafe {
            run::<E, 12, 8>(product, threads, Kernels::avx2())
        },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, true) => unsafe { run::<E, 6, 16>(product, threads, Kernels::avx2()) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, false) if narrow(4) => unsafe {
            run::<E, 12, 4>(product, threads, Kernels::avx2())
        },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, false) => unsafe { run::<E, 6, 8>(product, threads, Kernels::avx2()) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, true) if narrow(16) => unsafe {
            run::<E, 16, 16>(product, threads, Kernels::avx512())
        },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, true) => unsafe { run::<E, 12, 32>(product, threads, Kernels::avx512()) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, false) if narrow(8) => unsafe {
            run::<E, 16, 8>(product, threads, Kernels::avx512())
        },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, false) => unsafe { run::<E, 8, 16>(product, threads, Kernels::avx512()) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unsafe { run::<E, 4, 8>(product, threads, Kernels::portable()) },
    }
}

#[inline(always)]
fn offset(i: usize, j: usize, rs: isize, cs: isize) -> isize {
    i as isize * rs + j as isize * cs
}

/// One panel of B (`KC x NC` at most) and where it sits in the product.
#[derive(Clone, Copy)]
struct Panel<E> {
    product: Product<E>,
    /// First column and depth of the panel, its width and depth.
    col: usize,
    depth: usize,
    width: usize,
    kc: usize,
    /// Whether C already holds the running sums of earlier depth slices.
    continues: bool,
    /// Whether tiles read full strips of B in place (row-major B with few rows of A, or with
    /// short rows: packing B would cost about as much as the product, or save nothing); only a
    /// last, partial strip is packed.
    direct_rhs: bool,
    /// Whether tiles read full row strips of A in place (A row- or column-major: a tile's rows
    /// are then a few contiguous runs, which the broadcasts read as well from cache as a packed
    /// copy, and the transposing copy cost more than it saved: 6304 x 192 x 768 ran 16-30%
    /// faster without it); only a last, partial row strip is packed.
    direct_lhs: bool,
}

/// The packing and tile loops of one instruction set.
struct Kernels<E, const MR: usize, const NR: usize> {
    pack_rhs: unsafe fn(&Panel<E>, &mut [E]),
    /// Rows `rows` of a panel, against the packed B strips `strips`.
    block: unsafe fn(&Panel<E>, &[E], std::ops::Range<usize>, std::ops::Range<usize>, &mut [E]),
}

impl<E: Element, const MR: usize, const NR: usize> Kernels<E, MR, NR> {
    fn portable() -> Self {
        Self {
            pack_rhs: pack_rhs::<E, NR>,
            block: block::<E, MR, NR>,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2() -> Self {
        Self {
            pack_rhs: pack_rhs_avx2::<E, NR>,
            block: block_avx2::<E, MR, NR>,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn avx512() -> Self {
        Self {
            pack_rhs: pack_rhs_avx512::<E, NR>,
            block: block_avx512::<E, MR, NR>,
        }
    }
}

/// The loop nest: column panels, then depth slices in order, then row blocks (and, when there are
/// fewer row blocks than threads, groups of column strips) in parallel.
unsafe fn run<E: Element, const MR: usize, const NR: usize>(
    product: Product<E>,
    threads: usize,
    kernels: Kernels<E, MR, NR>,
) {
    let Product { m, n, k, .. } = product;
    // Row blocks: about 64 rows (a multiple of MR); fewer, taller ones would leave threads idle.
    let mc = MR * 64usize.div_ceil(MR);
    let unit_stride = |rs: isize, cs: isize| rs == 1 || cs == 1;
    let row_bytes = product
        .rhs_rs
        .unsigned_abs()
        .saturating_mul(std::mem::size_of::<E>());
    let direct_rhs = product.rhs_cs == 1 && (m <= 2 * MR || row_bytes <= DIRECT_ROW_BYTES);
    let direct_lhs = unit_stride(product.lhs_rs, product.lhs_cs);
    // Products with many row blocks sweep as many depth blocks as fit in SWEEP_BYTES at once.
    let panel_width = NC.min(n.next_multiple_of(NR));
    let fitting = SWEEP_BYTES / (panel_width * std::mem::size_of::<E>()) / KC * KC;
    let sweep = if m >= SWEEP_ROW_BLOCKS * mc {
        fitting.max(KC)
    } else {
        KC
    };
    with_buffer(
        &RHS_BUFFER,
        sweep.min(k) * panel_width,
        |packed_rhs: &mut [E]| unsafe {
            panels::<E, MR, NR>(
                product,
                threads,
                &kernels,
                (mc, sweep),
                (direct_lhs, direct_rhs),
                packed_rhs,
            )
        },
    );
}

/// Packed B a sweep over several depth blocks may take (see [`panels`]).
const SWEEP_BYTES: usize = 1 << 20;
/// Row blocks from which a product sweeps several depth blocks at once.
const SWEEP_ROW_BLOCKS: usize = 4;

/// Row strides of B up to this many bytes are read in place: a `KC`-deep strip then spans few
/// pages, and packing it would only copy it.
const DIRECT_ROW_BYTES: usize = 256;

/// The panels of one product, B packed into `packed_rhs`, `sweep` depths of it at a time.
///
/// A sweep of one depth block is the BLIS order: each packed block of B is read by every row block
/// while it is in cache, and C is read back from memory at every depth block. A sweep of several
/// packs them all first, and each row block then runs through them in order while its part of C
/// stays in cache: better for products with many rows and a long depth (a ViT's MLP down-projection),
/// whose C is too large to stay in cache between depth blocks.
unsafe fn panels<E: Element, const MR: usize, const NR: usize>(
    product: Product<E>,
    threads: usize,
    kernels: &Kernels<E, MR, NR>,
    (mc, sweep): (usize, usize),
    (direct_lhs, direct_rhs): (bool, bool),
    packed_rhs: &mut [E],
) {
    let Product { m, n, k, .. } = product;
    let parallel = threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_WORK;
    let mut col = 0;
    while col < n {
        let width = NC.min(n - col);
        let strips = width.div_ceil(NR);
        let panel_at = |depth: usize| Panel {
            product,
            col,
            depth,
            width,
            kc: KC.min(k - depth),
            continues: depth > 0,
            direct_rhs,
            direct_lhs,
        };
        let mut start = 0;
        while start < k {
            let depths = (start..k.min(start + sweep)).step_by(KC);
            // Depth block `depth` of the sweep, packed at this offset.
            let at = |depth: usize| (depth - start) * strips * NR;
            for depth in depths.clone() {
                // SAFETY: the panel lies inside the product; the buffer holds the sweep.
                unsafe { (kernels.pack_rhs)(&panel_at(depth), &mut packed_rhs[at(depth)..]) };
            }
            let row_blocks = m.div_ceil(mc);
            let groups = if parallel && row_blocks < 2 * threads {
                (2 * threads).div_ceil(row_blocks).min(strips)
            } else {
                1
            };
            let per_group = strips.div_ceil(groups);
            let packed_rhs = &packed_rhs[..];
            let task = |t: usize| {
                let (block_index, group) = (t / groups, t % groups);
                let rows = block_index * mc..m.min((block_index + 1) * mc);
                let strip_range = group * per_group..strips.min((group + 1) * per_group);
                if strip_range.is_empty() {
                    return;
                }
                with_buffer(&LHS_BUFFER, mc * KC.min(k), |packed_lhs: &mut [E]| {
                    for depth in depths.clone() {
                        let (panel, rhs) = (panel_at(depth), &packed_rhs[at(depth)..]);
                        let (rows, strips) = (rows.clone(), strip_range.clone());
                        // SAFETY: rows and strips lie inside the panel; tasks write disjoint
                        // tiles.
                        unsafe { (kernels.block)(&panel, rhs, rows, strips, packed_lhs) }
                    }
                });
            };
            let tasks = row_blocks * groups;
            if parallel {
                (0..tasks).into_par_iter().for_each(task);
            } else {
                (0..tasks).for_each(task);
            }
            start += sweep;
        }
        col += NC;
    }
}

/// Packs the panel's B into strips of `NR` columns: strip `s` holds `kc` rows of `NR` values,
/// zero past the last column.
#[inline(always)]
unsafe fn pack_rhs_generic<E: Element, const NR: usize>(panel: &Panel<E>, out: &mut [E]) {
    let p = &panel.product;
    let kc = panel.kc;
    for s in 0..panel.width.div_ceil(NR) {
        let strip = &mut out[s * kc * NR..(s + 1) * kc * NR];
        let first = panel.col + s * NR;
        let cols = NR.min(panel.col + panel.width - first);
        if panel.direct_rhs && cols == NR {
            continue;
        }
        // SAFETY: rows `depth..depth + kc` and columns `first..first + cols` lie inside B.
        let src = unsafe { p.rhs.offset(offset(panel.depth, first, p.rhs_rs, p.rhs_cs)) };
        if p.rhs_cs == 1 && cols == NR {
            // Row-major B: each depth's columns are a run.
            for d in 0..kc {
                let run =
                    unsafe { std::slice::from_raw_parts(src.offset(d as isize * p.rhs_rs), NR) };
                strip[d * NR..(d + 1) * NR].copy_from_slice(run);
            }
        } else if p.rhs_cs == 1 || p.rhs_rs != 1 {
            for d in 0..kc {
                for j in 0..NR {
                    strip[d * NR + j] = if j < cols {
                        unsafe { *src.offset(d as isize * p.rhs_rs + j as isize * p.rhs_cs) }
                    } else {
                        E::ZERO
                    };
                }
            }
        } else {
            // B read transposed (`x W^T`): each column's depths are a run.
            for j in 0..NR {
                for d in 0..kc {
                    strip[d * NR + j] = if j < cols {
                        unsafe { *src.offset(d as isize + j as isize * p.rhs_cs) }
                    } else {
                        E::ZERO
                    };
                }
            }
        }
    }
}

/// Packs rows `rows` of the panel's depth slice of A into strips of `MR` rows: strip `s` holds
/// `kc` columns of `MR` values, zero past the last row.
#[inline(always)]
unsafe fn pack_lhs<E: Element, const MR: usize>(
    panel: &Panel<E>,
    rows: &std::ops::Range<usize>,
    out: &mut [E],
) {
    let p = &panel.product;
    let kc = panel.kc;
    for s in 0..rows.len().div_ceil(MR) {
        let strip = &mut out[s * kc * MR..(s + 1) * kc * MR];
        let first = rows.start + s * MR;
        let count = MR.min(rows.end - first);
        // SAFETY: rows `first..first + count` and depths `depth..depth + kc` lie inside A.
        let src = unsafe { p.lhs.offset(offset(first, panel.depth, p.lhs_rs, p.lhs_cs)) };
        if p.lhs_cs == 1 {
            // Row-major A: read each row's depth slice in a run.
            for i in 0..MR {
                for d in 0..kc {
                    strip[d * MR + i] = if i < count {
                        unsafe { *src.offset(i as isize * p.lhs_rs + d as isize) }
                    } else {
                        E::ZERO
                    };
                }
            }
        } else if p.lhs_rs == 1 && count == MR {
            // A read transposed (a weight gradient's `dy^T`): each depth's rows are a run.
            for d in 0..kc {
                let run =
                    unsafe { std::slice::from_raw_parts(src.offset(d as isize * p.lhs_cs), MR) };
                strip[d * MR..(d + 1) * MR].copy_from_slice(run);
            }
        } else {
            for d in 0..kc {
                for i in 0..MR {
                    strip[d * MR + i] = if i < count {
                        unsafe { *src.offset(i as isize * p.lhs_rs + d as isize * p.lhs_cs) }
                    } else {
                        E::ZERO
                    };
                }
            }
        }
    }
}

/// Packs rows `rows` of A (or, reading A in place, only a last partial row strip) and runs every
/// tile of those rows against the strips `strips` of B.
#[inline(always)]
unsafe fn block_generic<E: Element, const MR: usize, const NR: usize>(
    panel: &Panel<E>,
    packed_rhs: &[E],
    rows: std::ops::Range<usize>,
    strips: std::ops::Range<usize>,
    packed_lhs: &mut [E],
    tile: Tile<E>,
) {
    let p = &panel.product;
    let kc = panel.kc;
    let full_rows = rows.start + rows.len() / MR * MR;
    if !panel.direct_lhs {
        unsafe { pack_lhs::<E, MR>(panel, &rows, packed_lhs) };
    } else if full_rows < rows.end {
        unsafe { pack_lhs::<E, MR>(panel, &(full_rows..rows.end), packed_lhs) };
    }
    for s in strips {
        let col = panel.col + s * NR;
        let cols = NR.min(panel.col + panel.width - col);
        let rhs = if panel.direct_rhs && cols == NR {
            // SAFETY: the strip's rows and columns lie inside B.
            Operand {
                ptr: unsafe { p.rhs.offset(offset(panel.depth, col, p.rhs_rs, 1)) },
                rs: p.rhs_rs,
                cs: 1,
            }
        } else {
            Operand {
                ptr: packed_rhs[s * kc * NR..(s + 1) * kc * NR].as_ptr(),
                rs: NR as isize,
                cs: 1,
            }
        };
        for t in 0..rows.len().div_ceil(MR) {
            let row = rows.start + t * MR;
            let count = MR.min(rows.end - row);
            let lhs = if panel.direct_lhs && count == MR {
                // SAFETY: rows `row..row + MR` and the panel's depths lie inside A.
                Operand {
                    ptr: unsafe { p.lhs.offset(offset(row, panel.depth, p.lhs_rs, p.lhs_cs)) },
                    rs: p.lhs_rs,
                    cs: p.lhs_cs,
                }
            } else {
                let strip = if panel.direct_lhs { 0 } else { t };
                Operand {
                    ptr: packed_lhs[strip * kc * MR..(strip + 1) * kc * MR].as_ptr(),
                    rs: 1,
                    cs: MR as isize,
                }
            };
            // SAFETY: (row, col) is inside C, and so is the tile's valid part.
            let c = unsafe { p.dst.offset(offset(row, col, p.dst_rs, p.dst_cs)) };
            if count == MR && cols == NR {
                unsafe { tile(kc, lhs, rhs, c, p.dst_rs, p.dst_cs, panel.continues) };
            } else {
                // An edge tile runs on a full-size copy, of which only the valid part goes back.
                let mut scratch = [[E::ZERO; NR]; MR];
                if panel.continues {
                    for (i, line) in scratch.iter_mut().enumerate().take(count) {
                        for (j, value) in line.iter_mut().enumerate().take(cols) {
                            *value = unsafe { *c.offset(offset(i, j, p.dst_rs, p.dst_cs)) };
                        }
                    }
                }
                let tmp = scratch.as_mut_ptr().cast::<E>();
                unsafe { tile(kc, lhs, rhs, tmp, NR as isize, 1, true) };
                for (i, line) in scratch.iter().enumerate().take(count) {
                    for (j, &value) in line.iter().enumerate().take(cols) {
                        unsafe { *c.offset(offset(i, j, p.dst_rs, p.dst_cs)) = value };
                    }
                }
            }
        }
    }
}

/// A register tile: `tile(kc, a, b, c, rs, cs, continues)`, as [`tile_generic`].
type Tile<E> = unsafe fn(usize, Operand<E>, Operand<E>, *mut E, isize, isize, bool);

/// A tile's view of A or B: element `(i, j)` at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
struct Operand<E> {
    ptr: *const E,
    rs: isize,
    cs: isize,
}

/// The register tile, written once for every element type and compiled per instruction set:
/// `MR x NR` running sums, loaded from C when `continues` (else `+0.0`), one
/// fused multiply-add each per depth step, stored back to C. `a` addresses `MR x kc` values, `b`
/// `kc` rows of `NR` contiguous values.
#[inline(always)]
unsafe fn tile_generic<E: Element, const MR: usize, const NR: usize>(
    kc: usize,
    a: Operand<E>,
    b: Operand<E>,
    c: *mut E,
    rs: isize,
    cs: isize,
    continues: bool,
) {
    let mut acc = [[E::ZERO; NR]; MR];
    if continues && cs == 1 {
        for (i, line) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's tile lies inside C, its rows contiguous.
            *line = unsafe { c.offset(i as isize * rs).cast::<[E; NR]>().read_unaligned() };
        }
    } else if continues {
        for (i, line) in acc.iter_mut().enumerate() {
            for (j, value) in line.iter_mut().enumerate() {
                // SAFETY: the caller's tile lies inside C.
                *value = unsafe { *c.offset(offset(i, j, rs, cs)) };
            }
        }
    }
    let rows: [*const E; MR] = std::array::from_fn(|i| unsafe { a.ptr.offset(i as isize * a.rs) });
    for d in 0..kc as isize {
        // SAFETY: `kc` rows of `NR` values `b.rs` apart lie in the strip, and `kc` columns of
        // `MR` rows in A.
        let b = unsafe { b.ptr.offset(d * b.rs).cast::<[E; NR]>().read_unaligned() };
        for (line, row) in acc.iter_mut().zip(&rows) {
            let a = unsafe { *row.offset(d * a.cs) };
            for (value, &b) in line.iter_mut().zip(&b) {
                *value = a.fma(b, *value);
            }
        }
    }
    for (i, line) in acc.iter().enumerate() {
        if cs == 1 {
            unsafe {
                c.offset(i as isize * rs)
                    .cast::<[E; NR]>()
                    .write_unaligned(*line)
            };
        } else {
            for (j, &value) in line.iter().enumerate() {
                unsafe { *c.offset(offset(i, j, rs, cs)) = value };
            }
        }
    }
}

// The same loops, compiled once per instruction set. Only the code generation differs: Rust
// never contracts or reorders float arithmetic, and `mul_add` is one rounding on every path.

unsafe fn pack_rhs<E: Element, const NR: usize>(panel: &Panel<E>, out: &mut [E]) {
    unsafe { pack_rhs_generic::<E, NR>(panel, out) }
}

unsafe fn block<E: Element, const MR: usize, const NR: usize>(
    panel: &Panel<E>,
    packed_rhs: &[E],
    rows: std::ops::Range<usize>,
    strips: std::ops::Range<usize>,
    packed_lhs: &mut [E],
) {
    let tile = tile_generic::<E, MR, NR>;
    unsafe { block_generic::<E, MR, NR>(panel, packed_rhs, rows, strips, packed_lhs, tile) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_rhs_avx2<E: Element, const NR: usize>(panel: &Panel<E>, out: &mut [E]) {
    unsafe { pack_rhs_generic::<E, NR>(panel, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<E: Element, const MR: usize, const NR: usize>(
    panel: &Panel<E>,
    packed_rhs: &[E],
    rows: std::ops::Range<usize>,
    strips: std::ops::Range<usize>,
    packed_lhs: &mut [E],
) {
    let tile = tile_avx2::<E, MR, NR>;
    unsafe { block_generic::<E, MR, NR>(panel, packed_rhs, rows, strips, packed_lhs, tile) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<E: Element, const MR: usize, const NR: usize>(
    kc: usize,
    a: Operand<E>,
    b: Operand<E>,
    c: *mut E,
    rs: isize,
    cs: isize,
    continues: bool,
) {
    unsafe { tile_generic::<E, MR, NR>(kc, a, b, c, rs, cs, continues) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn pack_rhs_avx512<E: Element, const NR: usize>(panel: &Panel<E>, out: &mut [E]) {
    unsafe { pack_rhs_generic::<E, NR>(panel, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn block_avx512<E: Element, const MR: usize, const NR: usize>(
    panel: &Panel<E>,
    packed_rhs: &[E],
    rows: std::ops::Range<usize>,
    strips: std::ops::Range<usize>,
    packed_lhs: &mut [E],
) {
    let tile = avx512::tile::<E, MR, NR>;
    unsafe { block_generic::<E, MR, NR>(panel, packed_rhs, rows, strips, packed_lhs, tile) }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// `C = A B` through the portable kernels with tiles of `(mr, nr)`.
    pub(crate) unsafe fn run_with_tiles(
        product: Product<f32>,
        tiles: (usize, usize),
        threads: usize,
    ) {
        unsafe {
            match tiles {
                (4, 8) => run::<f32, 4, 8>(product, threads, Kernels::portable()),
                (6, 16) => run::<f32, 6, 16>(product, threads, Kernels::portable()),
                (12, 32) => run::<f32, 12, 32>(product, threads, Kernels::portable()),
                (12, 8) => run::<f32, 12, 8>(product, threads, Kernels::portable()),
                (16, 16) => run::<f32, 16, 16>(product, threads, Kernels::portable()),
                (1, 1) => run::<f32, 1, 1>(product, threads, Kernels::portable()),
                (3, 5) => run::<f32, 3, 5>(product, threads, Kernels::portable()),
                other => panic!("no instance for tiles {other:?}"),
            }
        }
    }
}
