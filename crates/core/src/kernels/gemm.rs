//! A bounds-checked front to the workspace's `gemm` crate (the product candle itself runs on the
//! CPU, with every sum in a fixed order), for strided matrix views into slices: attention reads one head's columns of a `[tokens, hidden]`
//! matrix in place, and transposes are stride swaps rather than copies.

// The only unsafe code in the workspace: `gemm::gemm` takes raw pointers and strides. Every view
// is checked against its slice before the call, so the kernel reads and writes in bounds only.
#![allow(unsafe_code)]

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

/// A mutable row-major matrix view (element `(i, j)` at `offset + i * row_stride + j`).
pub(crate) struct MatMut<'a, T> {
    pub data: &'a mut [T],
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
                dst.data[start..start + n].fill(T::ZERO);
            }
        }
        return;
    }
    let product = Product {
        m,
        n,
        k,
        dst: dst.data[dst.offset..].as_mut_ptr(),
        dst_row_stride: dst.row_stride,
        lhs: lhs.data[lhs.offset..].as_ptr(),
        lhs_strides: (lhs.row_stride, lhs.col_stride),
        rhs: rhs.data[rhs.offset..].as_ptr(),
        rhs_strides: (rhs.row_stride, rhs.col_stride),
        accumulate,
    };
    // The product splits its outputs over threads itself (never its sums, so the thread count
    // cannot change a result).
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the views were checked above to lie inside their slices for every (i, j) the
    // product touches, and `dst` is a unique borrow that aliases neither input.
    unsafe { product.run(parallelism) }
}

/// `dst = lhs @ rhs` (or `+=`) on raw pointers to the first elements of bounds-checked views.
#[derive(Clone, Copy)]
struct Product<T> {
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_row_stride: usize,
    lhs: *const T,
    lhs_strides: (usize, usize),
    rhs: *const T,
    rhs_strides: (usize, usize),
    accumulate: bool,
}

impl<T: Real> Product<T> {
    /// # Safety
    /// The views the product was made from must hold every element it touches, and `dst` must
    /// alias neither input nor be accessed by anyone else meanwhile.
    unsafe fn run(self, parallelism: gemm::Parallelism) {
        let stride = |s: usize| s as isize;
        // SAFETY: the caller's guarantee; T is f32 or f64, which `gemm` supports.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                self.dst,
                1,
                stride(self.dst_row_stride),
                self.accumulate,
                self.lhs,
                stride(self.lhs_strides.1),
                stride(self.lhs_strides.0),
                self.rhs,
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
}
