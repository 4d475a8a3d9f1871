use peftbench_backbones::LinearSite;
use serde::{Deserialize, Serialize};

/// How SHiRA chooses the fixed set of trained weight entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiraMask {
    /// Uniformly random entries (HF PEFT's `mask_type: random`).
    Random,
    /// The entries of largest |W| in each projection.
    WeightMagnitude,
    /// The entries of largest accumulated |dL/dW| over a few training batches (calibration).
    GradientMagnitude,
}

/// SHiRA hyper-parameters. Defaults follow the paper's budget of 1-2% of each adapted weight
/// (`sparsity: 0.01`), a random mask, all linear projections of the blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShiraConfig {
    /// Fraction of each adapted weight matrix that is trained, in (0, 1).
    pub sparsity: f64,
    /// HF PEFT's budget instead of `sparsity`: `r * (in + out)` entries per projection, the count
    /// of a rank-`r` LoRA. Needed for adapters that Python PEFT reloads (`ShiraConfig.r`).
    pub r: Option<usize>,
    pub mask: ShiraMask,
    /// Projections to adapt, by site name.
    pub target_modules: Vec<LinearSite>,
    /// Seed of the random mask (PEFT's `random_seed`).
    pub random_seed: u64,
    /// Training batches whose gradients rank the entries (`mask: gradient_magnitude` only).
    pub calibration_batches: usize,
}

impl Default for ShiraConfig {
    fn default() -> Self {
        Self {
            sparsity: 0.01,
            r: None,
            mask: ShiraMask::Random,
            target_modules: LinearSite::ALL.to_vec(),
            random_seed: 0,
            calibration_batches: 4,
        }
    }
}

impl ShiraConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(self.sparsity > 0.0 && self.sparsity < 1.0) {
            return Err(format!(
                "method `shira`: sparsity {} is outside the allowed range (0, 1)",
                self.sparsity
            ));
        }
        if self.r == Some(0) {
            return Err("method `shira`: r must be at least 1 (or null to use sparsity)".into());
        }
        if self.target_modules.is_empty() {
            return Err("method `shira`: target_modules is empty; allowed: query, key, value, attention_output, fc1, fc2".into());
        }
        if self.calibration_batches == 0 {
            return Err("method `shira`: calibration_batches must be at least 1".into());
        }
        Ok(())
    }

    /// Trained entries of an `out x in` projection.
    pub fn entries(&self, inp: usize, out: usize) -> Result<usize, String> {
        let k = match self.r {
            Some(r) => r * (inp + out),
            None => ((self.sparsity * (inp * out) as f64).round() as usize).max(1),
        };
        if k > inp * out {
            return Err(format!(
                "method `shira`: r {} gives {k} entries, more than the {out}x{inp} weight has; allowed r: 1..={}",
                self.r.unwrap_or(0),
                inp * out / (inp + out)
            ));
        }
        Ok(k)
    }
}
