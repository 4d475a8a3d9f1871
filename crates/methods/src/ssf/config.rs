use peftbench_backbones::LinearSite;
use serde::{Deserialize, Serialize};

/// SSF hyper-parameters. Defaults follow the paper: every linear projection and every layer norm
/// gets a scale and a shift, initialised `γ ~ N(1, 0.02)`, `β ~ N(0, 0.02)` as in the authors' code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsfConfig {
    /// Projections whose output is scaled and shifted.
    #[serde(deserialize_with = "crate::lora::config::target_modules_or_preset")]
    pub target_modules: Vec<LinearSite>,
    /// Also scale and shift after every layer norm (both per block and the final one).
    pub norms: bool,
    /// Standard deviation of the initial scales around 1 and shifts around 0 (0: exact identity).
    pub init_std: f64,
}

impl Default for SsfConfig {
    fn default() -> Self {
        Self {
            target_modules: LinearSite::ALL.to_vec(),
            norms: true,
            init_std: 0.02,
        }
    }
}

impl SsfConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.target_modules.is_empty() && !self.norms {
            return Err("method `ssf`: field `target_modules` is empty and `norms` is false: nothing to adapt; allowed: a non-empty subset of query, key, value, attention_output, fc1, fc2, or norms: true".into());
        }
        if !(0.0..=1.0).contains(&self.init_std) {
            return Err(format!(
                "method `ssf`: field `init_std` is {}; allowed range [0, 1]",
                self.init_std
            ));
        }
        Ok(())
    }
}
