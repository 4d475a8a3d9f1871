use peftbench_backbones::LinearSite;
use serde::{Deserialize, Serialize};

/// IA3 hyper-parameters. Defaults follow the paper: rescale keys, values and the FFN's
/// intermediate activations. As in HF PEFT's `IA3Config`, a projection listed in
/// `feedforward_modules` has its *input* rescaled (for `fc2` that input is the activation after the
/// non-linearity), the others their output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ia3Config {
    /// Projections that get a learned rescaling vector.
    #[serde(deserialize_with = "crate::lora::config::target_modules_or_preset")]
    pub target_modules: Vec<LinearSite>,
    /// The subset of `target_modules` whose input (not output) is rescaled.
    #[serde(deserialize_with = "crate::lora::config::feedforward_modules_or_preset")]
    pub feedforward_modules: Vec<LinearSite>,
}

impl Default for Ia3Config {
    fn default() -> Self {
        Self {
            target_modules: vec![LinearSite::Key, LinearSite::Value, LinearSite::Fc2],
            feedforward_modules: vec![LinearSite::Fc2],
        }
    }
}

impl Ia3Config {
    pub fn check(&self) -> Result<(), String> {
        if self.target_modules.is_empty() {
            return Err(
                "method `ia3`: field `target_modules` is empty; allowed: a non-empty subset of query, key, value, attention_output, fc1, fc2"
                    .into(),
            );
        }
        if let Some(site) = self
            .feedforward_modules
            .iter()
            .find(|s| !self.target_modules.contains(s))
        {
            return Err(format!(
                "method `ia3`: field `feedforward_modules` lists `{}`, which is not in target_modules; allowed: a subset of target_modules",
                site.name()
            ));
        }
        Ok(())
    }

    pub fn is_feedforward(&self, site: LinearSite) -> bool {
        self.feedforward_modules.contains(&site)
    }
}
