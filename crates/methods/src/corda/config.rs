use peftbench_backbones::LinearSite;
use serde::{Deserialize, Serialize};

/// Which singular components of `W C` become the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CordaMode {
    /// Knowledge-preserved: the `r` smallest components are adapted, the principal ones (the
    /// knowledge the covariance data exercises) stay frozen in the residual weight.
    Kpm,
    /// Instruction-previewed: the `r` largest components (those the task data exercises most) are
    /// adapted.
    Ipm,
}

/// CorDA hyper-parameters. Defaults: PEFT's LoRA rank and scale (r 8, alpha 8), all linear
/// projections (the paper adapts every linear layer), the paper's 256 calibration samples
/// (4 batches of 64), instruction-previewed mode (our calibration data is the task's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CordaConfig {
    pub r: usize,
    pub alpha: f64,
    pub mode: CordaMode,
    pub target_modules: Vec<LinearSite>,
    /// Training batches whose inputs form the covariance `C`.
    pub calibration_batches: usize,
}

impl Default for CordaConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 8.0,
            mode: CordaMode::Ipm,
            target_modules: LinearSite::ALL.to_vec(),
            calibration_batches: 4,
        }
    }
}

impl CordaConfig {
    pub fn scaling(&self) -> f64 {
        self.alpha / self.r as f64
    }

    pub fn check(&self) -> Result<(), String> {
        if self.r == 0 {
            return Err(
                "method `corda`: r must be at least 1 (and at most the projection's smaller width)"
                    .into(),
            );
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err("method `corda`: alpha must be a positive number".into());
        }
        if self.target_modules.is_empty() {
            return Err("method `corda`: target_modules is empty; allowed: query, key, value, attention_output, fc1, fc2".into());
        }
        if self.calibration_batches == 0 {
            return Err("method `corda`: calibration_batches must be at least 1".into());
        }
        Ok(())
    }
}
