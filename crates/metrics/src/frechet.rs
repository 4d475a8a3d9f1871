//! Distances between two sets of embeddings (generated audio against a reference set, one
//! embedding per frame or clip), as music-generation papers report them:
//!
//! * [`frechet_distance`]: the Fréchet distance between the Gaussians fitted to the two sets,
//!   `|μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½` (FAD when the embedding is VGGish's; FD with
//!   PANNs; pytorch-fid's formula, covariances with `n − 1`). The trace of the square root is
//!   taken from the eigenvalues of the symmetric `Σ₁^½ Σ₂ Σ₁^½` (the same eigenvalues as `Σ₁Σ₂`),
//!   negative round-off clamped to 0, so it is real where `scipy.linalg.sqrtm` can return a
//!   complex result;
//! * [`frechet_distance_infinity`]: FAD∞ (Gui et al., ICASSP 2024, fadtk's `score_inf`): the
//!   Fréchet distance of resamples of `n` generated embeddings (with replacement) at evenly
//!   spaced `n`, fitted linearly against `1/n`; the intercept is the distance an infinite sample
//!   would give, free of the small-sample bias;
//! * [`kernel_distance`]: the unbiased squared MMD with the cubic polynomial kernel
//!   `k(x, y) = (xᵀy / d + 1)³` (KID; KAD's idea for audio), which has no such bias.
//!
//! Every table that prints one should print the embedding, the number of embeddings in each set
//! and the clip length with it: the values are not comparable otherwise.

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{Rng, SeedableRng};

/// A set of `rows` embeddings of `dim` values each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub rows: usize,
    pub dim: usize,
    pub values: Vec<f64>,
}

impl Embeddings {
    /// `values` row-major as `rows x dim`; an error when the lengths disagree or a value is not
    /// finite.
    pub fn new(rows: usize, dim: usize, values: Vec<f64>) -> Result<Self, String> {
        if values.len() != rows * dim {
            return Err(format!(
                "{} values do not make {rows} embeddings of {dim}",
                values.len()
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "embedding {} holds a value that is not finite ({})",
                i / dim.max(1),
                values[i]
            ));
        }
        Ok(Self { rows, dim, values })
    }

    /// A 2-D `.npy` file of `float64` or `float32` values (`numpy.save` of an `[embeddings, dim]`
    /// array, C order); errors name the file.
    pub fn read_npy(path: &std::path::Path) -> Result<Self, String> {
        let named = |e: String| format!("{}: {e}", path.display());
        let bytes = std::fs::read(path).map_err(|e| named(e.to_string()))?;
        let npy =
            npyz::NpyFile::new(&bytes[..]).map_err(|e| named(format!("not a .npy file: {e}")))?;
        let shape = npy.shape().to_vec();
        let [rows, dim] = shape[..] else {
            return Err(named(format!(
                "holds an array of shape {shape:?}; expected [embeddings, dim]"
            )));
        };
        if npy.order() != npyz::Order::C {
            return Err(named("is in Fortran order; save it in C order".into()));
        }
        let type_str = match npy.dtype() {
            npyz::DType::Plain(t) => t.to_string(),
            other => return Err(named(format!("holds {}, not floats", other.descr()))),
        };
        let values: Vec<f64> = match type_str.as_str() {
            "<f8" => npy.into_vec::<f64>().map_err(|e| named(e.to_string()))?,
            "<f4" => npy
                .into_vec::<f32>()
                .map_err(|e| named(e.to_string()))?
                .into_iter()
                .map(f64::from)
                .collect(),
            other => return Err(named(format!("holds {other}, not float64 or float32"))),
        };
        Self::new(rows as usize, dim as usize, values).map_err(named)
    }

    fn matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.rows, self.dim, &self.values)
    }
}

/// The Gaussian fitted to a set: mean and covariance (divided by `n − 1`, as `numpy.cov`).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    pub mean: DVector<f64>,
    pub covariance: DMatrix<f64>,
}

impl GaussianStats {
    /// The mean and covariance of `set` (at least two embeddings).
    pub fn of(set: &Embeddings) -> Result<Self, String> {
        if set.rows < 2 {
            return Err(format!(
                "a covariance needs at least 2 embeddings, got {}",
                set.rows
            ));
        }
        let x = set.matrix();
        let mean = x.row_mean().transpose();
        let centred = DMatrix::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] - mean[j]);
        let covariance = centred.transpose() * &centred / (set.rows as f64 - 1.0);
        Ok(Self { mean, covariance })
    }
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative round-off
/// eigenvalues clamped to 0).
fn symmetric_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(m.clone());
    let roots = eigen.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// The Fréchet distance between two fitted Gaussians (module docs).
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<f64, String> {
    if a.mean.len() != b.mean.len() {
        return Err(format!(
            "embeddings of {} and {} values cannot be compared",
            a.mean.len(),
            b.mean.len()
        ));
    }
    let difference = (&a.mean - &b.mean).norm_squared();
    let root_a = symmetric_sqrt(&a.covariance);
    let middle = &root_a * &b.covariance * &root_a;
    // Symmetrised against round-off before the eigen-solver, which reads one triangle.
    let middle = (&middle + middle.transpose()) * 0.5;
    let trace_root: f64 = SymmetricEigen::new(middle)
        .eigenvalues
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    Ok(difference + a.covariance.trace() + b.covariance.trace() - 2.0 * trace_root)
}

/// FAD∞ and the fit it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct FrechetInfinity {
    /// The fit's value at `1/n = 0`.
    pub intercept: f64,
    pub slope: f64,
    /// The fit's coefficient of determination.
    pub r2: f64,
    /// The `(n, distance)` points fitted.
    pub points: Vec<(usize, f64)>,
}

/// FAD∞ of `generated` against `reference`: resamples of `n` generated embeddings with
/// replacement for `steps` values of `n` evenly spaced from `min_n` to all of them (fadtk's
/// defaults: 500 and 25), each scored by [`frechet_distance`], fitted linearly against `1/n`.
/// The resampling is drawn from `seed` (ChaCha8), so a seed gives the same value everywhere.
pub fn frechet_distance_infinity(
    generated: &Embeddings,
    reference: &GaussianStats,
    min_n: usize,
    steps: usize,
    seed: u64,
) -> Result<FrechetInfinity, String> {
    if steps < 2 {
        return Err("FAD∞ needs at least 2 sample sizes to fit a line".into());
    }
    if min_n < 2 || min_n >= generated.rows {
        return Err(format!(
            "FAD∞ resamples from {min_n} embeddings up to all {}: it needs min_n >= 2 and more \
             embeddings than min_n",
            generated.rows
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut points = Vec::with_capacity(steps);
    for k in 0..steps {
        let n = min_n + ((generated.rows - min_n) as f64 * k as f64 / (steps - 1) as f64) as usize;
        let mut values = Vec::with_capacity(n * generated.dim);
        for _ in 0..n {
            let row = rng.random_range(0..generated.rows);
            values.extend_from_slice(&generated.values[row * generated.dim..][..generated.dim]);
        }
        let sample = Embeddings::new(n, generated.dim, values)?;
        points.push((
            n,
            frechet_distance(&GaussianStats::of(&sample)?, reference)?,
        ));
    }
    // Least squares of distance on 1/n.
    let xs: Vec<f64> = points.iter().map(|(n, _)| 1.0 / *n as f64).collect();
    let ys: Vec<f64> = points.iter().map(|(_, d)| *d).collect();
    let m = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / m, ys.iter().sum::<f64>() / m);
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let total: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    let residual: f64 = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (y - intercept - slope * x).powi(2))
        .sum();
    let r2 = if total > 0.0 {
        1.0 - residual / total
    } else {
        1.0
    };
    Ok(FrechetInfinity {
        intercept,
        slope,
        r2,
        points,
    })
}

/// The unbiased squared MMD between the two sets with the kernel `(xᵀy / d + 1)³` (module docs);
/// each set needs at least two embeddings.
pub fn kernel_distance(a: &Embeddings, b: &Embeddings) -> Result<f64, String> {
    if a.dim != b.dim {
        return Err(format!(
            "embeddings of {} and {} values cannot be compared",
            a.dim, b.dim
        ));
    }
    if a.rows < 2 || b.rows < 2 {
        return Err("the unbiased MMD needs at least 2 embeddings in each set".into());
    }
    let kernel = |x: &DMatrix<f64>, y: &DMatrix<f64>| {
        (x * y.transpose()).map(|v| (v / a.dim as f64 + 1.0).powi(3))
    };
    let (x, y) = (a.matrix(), b.matrix());
    let off_diagonal_mean = |k: DMatrix<f64>| {
        let n = k.nrows() as f64;
        (k.sum() - k.trace()) / (n * (n - 1.0))
    };
    let kxy = kernel(&x, &y);
    Ok(
        off_diagonal_mean(kernel(&x, &x)) + off_diagonal_mean(kernel(&y, &y))
            - 2.0 * kxy.sum() / (a.rows as f64 * b.rows as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(rows: usize, dim: usize, shift: f64, scale: f64, seed: u64) -> Embeddings {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let values = (0..rows * dim)
            .map(|_| {
                // Box-Muller from two uniforms.
                let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                shift + scale * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            })
            .collect();
        Embeddings::new(rows, dim, values).unwrap()
    }

    /// A set against itself is at distance 0; a shift of every coordinate by s adds d·s².
    #[test]
    fn distance_to_itself_is_zero_and_a_shift_adds_its_square() {
        let a = gaussian(400, 4, 0.0, 1.0, 1);
        let stats = GaussianStats::of(&a).unwrap();
        assert!(frechet_distance(&stats, &stats).unwrap().abs() < 1e-9);
        let shifted =
            Embeddings::new(a.rows, a.dim, a.values.iter().map(|v| v + 0.5).collect()).unwrap();
        let d = frechet_distance(&stats, &GaussianStats::of(&shifted).unwrap()).unwrap();
        assert!((d - 4.0 * 0.25).abs() < 1e-9, "{d}");
    }

    /// Samples of one distribution: the plain distance shrinks like 1/n, and FAD∞ removes that
    /// bias (the intercept is near 0, the slope positive).
    #[test]
    fn fad_infinity_removes_the_small_sample_bias() {
        let reference = GaussianStats::of(&gaussian(20_000, 3, 0.0, 1.0, 2)).unwrap();
        let generated = gaussian(2_000, 3, 0.0, 1.0, 3);
        let fit = frechet_distance_infinity(&generated, &reference, 100, 10, 7).unwrap();
        assert!(fit.slope > 0.0, "{fit:?}");
        assert!(fit.intercept.abs() < fit.points[0].1 / 3.0, "{fit:?}");
        assert_eq!(
            fit,
            frechet_distance_infinity(&generated, &reference, 100, 10, 7).unwrap()
        );
        assert!(frechet_distance_infinity(&generated, &reference, 2_000, 10, 7).is_err());
    }

    /// The unbiased MMD of two samples of one distribution is near 0 (and can be negative); a
    /// shifted distribution is far.
    #[test]
    fn kernel_distance_separates_distributions() {
        let a = gaussian(300, 4, 0.0, 1.0, 4);
        let b = gaussian(300, 4, 0.0, 1.0, 5);
        let c = gaussian(300, 4, 1.0, 1.0, 6);
        let same = kernel_distance(&a, &b).unwrap();
        let far = kernel_distance(&a, &c).unwrap();
        assert!(same.abs() < 0.05 && far > 10.0 * same.abs(), "{same} {far}");
        assert!(Embeddings::new(2, 3, vec![0.0; 5]).is_err());
        assert!(Embeddings::new(1, 2, vec![0.0, f64::NAN]).is_err());
    }
}
