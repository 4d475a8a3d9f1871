use peftbench_backbones::LinearSite;
use serde::{Deserialize, Serialize};

/// LT-SFT hyper-parameters. Ansell et al. fix the number `K` of kept entries; we express it as a
/// fraction of the adapted weights (`density`), kept globally across layers as in the paper. Both
/// phases default to the recipe's epochs and learning rate (the paper trains both phases with the
/// same budget); full fine-tuning usually wants a lower rate (`full_lr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LtSftConfig {
    /// Fraction of the adapted weights kept after the dense phase, in (0, 1).
    pub density: f64,
    /// Weights that are fine-tuned and sparsified.
    pub target_modules: Vec<LinearSite>,
    /// Epochs of the dense phase (`null` = the recipe's).
    pub full_epochs: Option<usize>,
    /// Learning rate of the dense phase (`null` = the recipe's).
    pub full_lr: Option<f64>,
    /// Epochs of the sparse phase (`null` = the recipe's).
    pub sparse_epochs: Option<usize>,
}

impl Default for LtSftConfig {
    fn default() -> Self {
        Self {
            density: 0.01,
            target_modules: LinearSite::ALL.to_vec(),
            full_epochs: None,
            full_lr: None,
            sparse_epochs: None,
        }
    }
}

impl LtSftConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(self.density > 0.0 && self.density < 1.0) {
            return Err(format!(
                "method `lt-sft`: density {} is outside the allowed range (0, 1)",
                self.density
            ));
        }
        if self.target_modules.is_empty() {
            return Err("method `lt-sft`: target_modules is empty; allowed: query, key, value, attention_output, fc1, fc2".into());
        }
        if self.full_epochs == Some(0) || self.sparse_epochs == Some(0) {
            return Err("method `lt-sft`: full_epochs and sparse_epochs must be at least 1".into());
        }
        if self.full_lr.is_some_and(|lr| lr <= 0.0 || !lr.is_finite()) {
            return Err("method `lt-sft`: full_lr must be a positive number".into());
        }
        Ok(())
    }
}
