use peftbench_backbones::LinearSite;
use serde::{Deserialize, Serialize};

/// LoRA hyper-parameters. Defaults follow HF PEFT's `LoraConfig` (r 8, alpha 8, no dropout) with
/// query and value targeted, as in the LoRA paper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// Scale numerator: the delta is multiplied by `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
    pub alpha: f64,
    /// Dropout applied to the input of the LoRA branch only.
    pub dropout: f64,
    /// Projections to adapt, by site name.
    pub target_modules: Vec<LinearSite>,
    /// Rank-stabilised scaling `alpha / sqrt(r)`.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: vec![LinearSite::Query, LinearSite::Value],
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor applied to `B A x`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.r == 0 {
            return Err("method `lora`: r must be at least 1".into());
        }
        if self.target_modules.is_empty() {
            return Err("method `lora`: target_modules is empty".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "method `lora`: dropout {} is not in [0, 1)",
                self.dropout
            ));
        }
        Ok(())
    }
}
