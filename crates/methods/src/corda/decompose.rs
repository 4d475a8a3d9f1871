//! The covariance-oriented decomposition: `W C = U Σ Vᵀ`, so `W = U Σ (Vᵀ C⁻¹)`; `r` chosen
//! components become a LoRA pair and the rest stays as the frozen residual.

use nalgebra::DMatrix;

use super::CordaMode;

/// A LoRA pair and the residual weight, all row-major.
pub struct CordaInit {
    /// `[r, in]`.
    pub a: Vec<f64>,
    /// `[out, r]`.
    pub b: Vec<f64>,
    /// `[out, in]`: `W - scaling * B A`.
    pub residual: Vec<f64>,
}

/// `C` made invertible: the smallest multiple `10^k · 1e-6 · mean(diag C)` of the identity added
/// that lets Cholesky succeed (few calibration tokens or dead features make `C` singular).
fn damped_inverse(mut c: DMatrix<f64>) -> DMatrix<f64> {
    let n = c.nrows();
    let mean_diag = (c.trace() / n as f64).max(f64::MIN_POSITIVE);
    let mut damping = 0.0;
    loop {
        if let Some(chol) = c.clone().cholesky() {
            return chol.inverse();
        }
        let next = if damping == 0.0 {
            1e-6 * mean_diag
        } else {
            damping * 10.0
        };
        for i in 0..n {
            c[(i, i)] += next - damping;
        }
        damping = next;
    }
}

/// Decomposes `weight` (`[out, in]`, row-major) with input covariance `covariance` (`[in, in]`).
pub fn decompose(
    weight: &[f64],
    (out, inp): (usize, usize),
    covariance: &[f64],
    r: usize,
    scaling: f64,
    mode: CordaMode,
) -> CordaInit {
    let w = DMatrix::from_row_slice(out, inp, weight);
    let c = DMatrix::from_row_slice(inp, inp, covariance);
    let c_inv = damped_inverse(c.clone());
    let svd = (&w * &c).svd(true, true);
    let (u, vt) = (svd.u.expect("u requested"), svd.v_t.expect("v_t requested"));
    // Components by decreasing singular value.
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&i, &j| svd.singular_values[j].total_cmp(&svd.singular_values[i]));
    let chosen: Vec<usize> = match mode {
        CordaMode::Ipm => order[..r].to_vec(),
        CordaMode::Kpm => order[order.len() - r..].to_vec(),
    };
    let mut a = DMatrix::zeros(r, inp);
    let mut b = DMatrix::zeros(out, r);
    for (slot, &k) in chosen.iter().enumerate() {
        let root = svd.singular_values[k].sqrt();
        // A = sqrt(σ) vᵀ C⁻¹ / scaling, B = u sqrt(σ): scaling · B A is the component exactly.
        let row = vt.row(k) * &c_inv * (root / scaling);
        a.set_row(slot, &row);
        b.set_column(slot, &(u.column(k) * root));
    }
    let residual = &w - (&b * &a) * scaling;
    let row_major = |m: &DMatrix<f64>| m.transpose().as_slice().to_vec();
    CordaInit {
        a: row_major(&a),
        b: row_major(&b),
        residual: row_major(&residual),
    }
}
