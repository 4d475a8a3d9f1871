//! The mean and sample standard deviation of a method's runs (its seeds), as the kind-specific
//! tables (class-incremental, music) print them.

use serde::Serialize;

/// Mean and sample standard deviation over runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    /// `None` with one run.
    pub std: Option<f64>,
}

impl Spread {
    /// `None` without values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.len() > 1)
            .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
        Some(Spread { mean, std })
    }

    /// `mean ±std` (or the mean alone) with `decimals` decimals.
    pub fn text(&self, decimals: usize) -> String {
        match self.std {
            Some(s) => format!("{:.*} ±{s:.*}", decimals, self.mean, decimals),
            None => format!("{:.*}", decimals, self.mean),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation_and_text() {
        let s = Spread::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.mean, 2.0);
        assert_eq!(s.std, Some(1.0));
        assert_eq!(s.text(1), "2.0 ±1.0");
        assert_eq!(Spread::of(&[4.0]).unwrap().text(2), "4.00");
        assert_eq!(Spread::of(&[]), None);
    }
}
