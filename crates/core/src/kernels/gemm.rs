//! A bounds-checked front to the `gemm` crate (the GEMM candle itself runs on the CPU), for
//! strided matrix views into slices: attention reads one head's columns of a `[tokens, hidden]`
//! matrix in place, and transposes are stride swaps rather than copies.

// The only unsafe code in the workspace: `gemm::gemm` takes raw pointers and strides. Every view
// is checked against its slice before the call, so the kernel reads and writes in bounds only.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use super::Real;

/// A read-only matrix view: element `(i, j)` is `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows x cols` matrix stored from `offset` with rows `row_stride` apart.
    pub fn rows(data: &'a [T], offset: usize, rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// A mutable row-major matrix view (element `(i, j)` at `offset + i * row_stride + j`), of
/// initialised elements ([`MatMut::rows`]) or of a fresh buffer ([`product`]): the product writes
/// only values of `T` through it.
pub(crate) struct MatMut<'a, T> {
    data: &'a mut [MaybeUninit<T>],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl<'a, T> MatMut<'a, T> {
    pub fn rows(
        data: &'a mut [T],
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        // SAFETY: `MaybeUninit<T>` has `T`'s layout, and only values of `T` are written through
        // the view, so `data` stays initialised.
        let data = unsafe { &mut *(data as *mut [T] as *mut [MaybeUninit<T>]) };
        Self {
            data,
            offset,
            rows,
            cols,
            row_stride,
        }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.cols <= self.row_stride || self.rows == 1)
                && self.offset + (self.rows - 1) * self.row_stride + self.cols <= self.data.len()
    }
}

/// `lhs @ rhs` in a new row-major buffer. The buffer is not zeroed first: a product that does not
/// accumulate writes every element of its destination (zeros when the depth is 0), which the
/// `gemm` crate's tests check by starting from NaN. Zeroing the outputs of a ViT step's
/// projections cost about 2% of its CPU time (the allocator zeroes reused memory too).
pub(crate) fn product<T: Real>(lhs: MatRef<'_, T>, rhs: MatRef<'_, T>, parallel: bool) -> Vec<T> {
    let (rows, cols) = (lhs.rows, rhs.cols);
    let mut out: Vec<MaybeUninit<T>> = Vec::with_capacity(rows * cols);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { out.set_len(rows * cols) };
    let dst = MatMut {
        data: &mut out,
        offset: 0,
        rows,
        cols,
        row_stride: cols,
    };
    matmul(dst, lhs, rhs, false, parallel);
    let mut out = std::mem::ManuallyDrop::new(out);
    // SAFETY: the product wrote every element (above), and `MaybeUninit<T>` has `T`'s layout;
    // the allocation is handed over whole.
    unsafe { Vec::from_raw_parts(out.as_mut_ptr().cast::<T>(), out.len(), out.capacity()) }
}

/// `dst = lhs @ rhs` (`accumulate`: `dst += lhs @ rhs`). `parallel` splits the work over rayon's
/// threads; callers that already run one GEMM per thread pass `false`.
pub(crate) fn matmul<T: Real>(
    dst: MatMut<'_, T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        dst.rows == lhs.rows && dst.cols == rhs.cols && lhs.cols == rhs.rows,
        "matmul shapes: dst {}x{}, lhs {}x{}, rhs {}x{}",
        dst.rows,
        dst.cols,
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    assert!(
        dst.in_bounds() && lhs.in_bounds() && rhs.in_bounds(),
        "matmul view out of bounds"
    );
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                let start = dst.offset + i * dst.row_stride;
                for v in &mut dst.data[start..start + n] {
                    v.write(T::ZERO);
                }
            }
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let product = Product {
        m,
        n,
        k,
        dst: SendPtr(dst.data[dst.offset..].as_mut_ptr().cast::<T>()),
        dst_row_stride: dst.row_stride,
        lhs: SendPtr(lhs.data[lhs.offset..].as_ptr().cast_mut()),
        lhs_strides: (lhs.row_stride, lhs.col_stride),
        rhs: SendPtr(rhs.data[rhs.offset..].as_ptr().cast_mut()),
        rhs_strides: (rhs.row_stride, rhs.col_stride),
        accumulate,
    };
    // SAFETY (all three calls): the views were checked above to lie inside their slices for
    // every (i, j) the product touches, `dst` is a unique borrow that aliases neither input,
    // and bands cover disjoint parts of the product.
    if parallel && m * n * k >= 1 << 15 {
        match split_bands(m, n, k, threads) {
            Some(split) => unsafe { product.run_in_bands(split) },
            None => unsafe { product.run(gemm::Parallelism::Rayon(threads)) },
        }
    } else {
        unsafe { product.run(gemm::Parallelism::None) }
    }
}

/// Computes a product as one single-threaded GEMM per thread, each on a band of output rows
/// (`Rows`) or columns (`Cols`), instead of the `gemm` crate's own threading, which leaves cores
/// idle on skinny products such as weight gradients (`[out, in]` summed over thousands of rows;
/// ViT-Tiny at batch 32, 2 cores: 192 x 192 from 6,304 rows at 64 GFLOP/s whole, 97 in bands;
/// a LoRA factor's 8 x 192 at 12 and 50). Only where each band takes the same
/// kernel path, with the same depth blocking, as the whole product: every output element is
/// then the same sum in the same order, so results are bit-identical either way. `gemm` blocks
/// the depth by `k` alone when either output dimension exceeds 64, but by `min(k, 512)` when
/// both are at most 64, and runs outputs of at most 16 x 16, vectors and depths of at most 2
/// through other kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bands {
    Rows(usize),
    Cols(usize),
}

fn split_bands(m: usize, n: usize, k: usize, threads: usize) -> Option<Bands> {
    // Only skinny products (depth at least the output's longer side) gain: on tall ones, such
    // as a forward pass's `[rows, in] x [in, out]`, `gemm`'s own threading is as fast or faster.
    if threads < 2 || k <= 2 || k < m.max(n) {
        return None;
    }
    let blocked_by_k_alone =
        |rows: usize, cols: usize| (rows > 64 || cols > 64) && rows * cols > 256;
    // Bands across the longer output dimension; the shorter one stays whole.
    let (long, short) = (m.max(n), m.min(n));
    let band = long.div_ceil(threads);
    if short < 2 || band < 2 || !blocked_by_k_alone(m, n) || !blocked_by_k_alone(band, short) {
        return None;
    }
    Some(if m >= n {
        Bands::Rows(threads)
    } else {
        Bands::Cols(threads)
    })
}

/// A raw pointer shared with rayon's threads; [`Product::run_in_bands`] keeps their writes apart.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);

// SAFETY: the pointers of a `Product` are only dereferenced by `gemm` on disjoint output bands.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// `dst = lhs @ rhs` (or `+=`) on raw pointers to the first elements of bounds-checked views.
#[derive(Clone, Copy)]
struct Product<T> {
    m: usize,
    n: usize,
    k: usize,
    dst: SendPtr<T>,
    dst_row_stride: usize,
    lhs: SendPtr<T>,
    lhs_strides: (usize, usize),
    rhs: SendPtr<T>,
    rhs_strides: (usize, usize),
    accumulate: bool,
}

impl<T: Real> Product<T> {
    /// Rows `start..start + rows` of the product (`lhs`'s rows and `dst`'s).
    fn rows(self, start: usize, rows: usize) -> Self {
        Self {
            m: rows,
            dst: SendPtr(self.dst.0.wrapping_add(start * self.dst_row_stride)),
            lhs: SendPtr(self.lhs.0.wrapping_add(start * self.lhs_strides.0)),
            ..self
        }
    }

    /// Columns `start..start + cols` of the product (`rhs`'s columns and `dst`'s).
    fn cols(self, start: usize, cols: usize) -> Self {
        Self {
            n: cols,
            dst: SendPtr(self.dst.0.wrapping_add(start)),
            rhs: SendPtr(self.rhs.0.wrapping_add(start * self.rhs_strides.1)),
            ..self
        }
    }

    /// # Safety
    /// The views the product was made from must hold every element it touches, and `dst` must
    /// alias neither input nor be accessed by anyone else meanwhile.
    unsafe fn run_in_bands(self, bands: Bands) {
        use rayon::prelude::*;
        let (parts, long) = match bands {
            Bands::Rows(parts) => (parts, self.m),
            Bands::Cols(parts) => (parts, self.n),
        };
        let band = long.div_ceil(parts);
        (0..long.div_ceil(band)).into_par_iter().for_each(|i| {
            let (start, len) = (i * band, band.min(long - i * band));
            let part = match bands {
                Bands::Rows(_) => self.rows(start, len),
                Bands::Cols(_) => self.cols(start, len),
            };
            // SAFETY: a band is inside the product, and bands write disjoint output elements.
            unsafe { part.run(gemm::Parallelism::None) }
        });
    }

    /// # Safety
    /// As for [`Product::run_in_bands`].
    unsafe fn run(self, parallelism: gemm::Parallelism) {
        let stride = |s: usize| s as isize;
        // SAFETY: the caller's guarantee; T is f32 or f64, which `gemm` supports.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                self.dst.0,
                1,
                stride(self.dst_row_stride),
                self.accumulate,
                self.lhs.0,
                stride(self.lhs_strides.1),
                stride(self.lhs_strides.0),
                self.rhs.0,
                stride(self.rhs_strides.1),
                stride(self.rhs_strides.0),
                T::ONE,
                T::ONE,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn strided_views_and_transposes_multiply_correctly() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.7).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 1.3).cos()).collect();
        let expected = naive(&a, &b, m, k, n);
        // Plain row-major.
        let mut c = vec![0.0; m * n];
        matmul(
            MatMut::rows(&mut c, 0, m, n, n),
            MatRef::rows(&a, 0, m, k, k),
            MatRef::rows(&b, 0, k, n, n),
            false,
            false,
        );
        for (x, y) in c.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-12);
        }
        // b stored transposed ([n, k]) and read through a transposed view; dst inside a wider
        // matrix at column offset 2, accumulated twice.
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut wide = vec![0.0; m * 8];
        for _ in 0..2 {
            matmul(
                MatMut::rows(&mut wide, 2, m, n, 8),
                MatRef::rows(&a, 0, m, k, k),
                MatRef::rows(&bt, 0, n, k, k).t(),
                true,
                true,
            );
        }
        for i in 0..m {
            for j in 0..n {
                assert!((wide[i * 8 + 2 + j] - 2.0 * expected[i * n + j]).abs() < 1e-12);
            }
            assert_eq!(wide[i * 8], 0.0);
        }
    }

    /// Bands are only used where they cannot change a result: over a grid of shapes around
    /// `gemm`'s path boundaries (64, 16 x 16, depth 512), with the inputs laid out as a weight
    /// gradient reads them (`dy^T x`, the left matrix transposed) and as a forward pass does,
    /// every banded product equals the whole product bit for bit.
    #[test]
    fn bands_are_bit_identical_to_the_whole_product() {
        let sizes = [2, 8, 16, 33, 64, 65, 96, 128, 130, 192, 576, 768];
        let depths = [3, 17, 64, 200, 511, 513, 1088, 2000];
        let mut banded = 0;
        for &m in &sizes {
            for &n in &sizes {
                for &k in &depths {
                    let Some(bands) = split_bands(m, n, k, 2) else {
                        continue;
                    };
                    if m * n * k > 40_000_000 {
                        continue;
                    }
                    banded += 1;
                    let a: Vec<f32> = (0..m * k)
                        .map(|i| ((i * 7919) % 1000) as f32 / 999.0 - 0.5)
                        .collect();
                    let b: Vec<f32> = (0..k * n)
                        .map(|i| ((i * 104729) % 997) as f32 / 996.0 - 0.5)
                        .collect();
                    for transposed_lhs in [false, true] {
                        // `a` as [m, k], or stored as [k, m] and read transposed.
                        let lhs = if transposed_lhs {
                            MatRef::rows(&a, 0, k, m, m).t()
                        } else {
                            MatRef::rows(&a, 0, m, k, k)
                        };
                        let rhs = MatRef::rows(&b, 0, k, n, n);
                        let product = |dst: &mut Vec<f32>| Product {
                            m,
                            n,
                            k,
                            dst: SendPtr(dst.as_mut_ptr()),
                            dst_row_stride: n,
                            lhs: SendPtr(lhs.data.as_ptr().cast_mut()),
                            lhs_strides: (lhs.row_stride, lhs.col_stride),
                            rhs: SendPtr(rhs.data.as_ptr().cast_mut()),
                            rhs_strides: (rhs.row_stride, rhs.col_stride),
                            accumulate: false,
                        };
                        let mut whole = vec![0f32; m * n];
                        let mut single = vec![0f32; m * n];
                        let mut in_bands = vec![0f32; m * n];
                        // SAFETY: the buffers hold the whole product.
                        unsafe {
                            product(&mut whole).run(gemm::Parallelism::Rayon(2));
                            product(&mut single).run(gemm::Parallelism::None);
                            product(&mut in_bands).run_in_bands(bands);
                        }
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&whole),
                            bits(&in_bands),
                            "{m}x{n}x{k} {bands:?} transposed {transposed_lhs}"
                        );
                        assert_eq!(
                            bits(&single),
                            bits(&in_bands),
                            "{m}x{n}x{k} single-threaded"
                        );
                    }
                }
            }
        }
        assert!(banded > 200, "{banded} shapes banded");
        // The paths bands would change are left whole.
        assert_eq!(split_bands(128, 64, 1088, 2), None);
        assert_eq!(split_bands(16, 16, 5000, 2), None);
        assert_eq!(split_bands(192, 192, 6304, 1), None);
        assert_eq!(split_bands(192, 768, 6304, 2), Some(Bands::Cols(2)));
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn views_past_the_end_are_refused() {
        let a = vec![0f32; 6];
        let mut c = vec![0f32; 4];
        matmul(
            MatMut::rows(&mut c, 0, 2, 2, 2),
            MatRef::rows(&a, 0, 2, 3, 3),
            MatRef::rows(&a, 1, 3, 2, 2),
            false,
            false,
        );
    }

    /// A product into a fresh buffer equals the product into a zeroed one bit for bit, on the
    /// whole, banded and small-product paths, and gives zeros for an empty depth.
    #[test]
    fn a_fresh_product_equals_one_into_zeros() {
        for (m, n, k) in [
            (3, 5, 0),
            (1, 1, 1),
            (7, 9, 4),
            (65, 16, 65),
            (197, 64, 197),
            (192, 40, 700),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
                .collect();
            for parallel in [false, true] {
                let lhs = MatRef::rows(&a, 0, m, k, k);
                let rhs = MatRef::rows(&b, 0, k, n, n);
                let mut zeroed = vec![0f32; m * n];
                matmul(
                    MatMut::rows(&mut zeroed, 0, m, n, n),
                    lhs,
                    rhs,
                    false,
                    parallel,
                );
                let fresh = product(lhs, rhs, parallel);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fresh), bits(&zeroed), "{m}x{n}x{k}");
            }
        }
    }
}
