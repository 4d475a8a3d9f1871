use peftbench_backbones::{BackboneInfo, LinearSite};
use serde::{Deserialize, Serialize};

/// Hydra hyper-parameters. Defaults: rank 8 for both branches, scale 1, on the attention output
/// projection (two rank-8 branches on a 768-wide ViT-B/16 projection are ~0.29M parameters, the
/// size of the published VTAB-1k Hydra).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HydraConfig {
    /// Rank of the parallel branch `B_p A_p x`.
    pub parallel_r: usize,
    /// Rank of the sequential branch `B_s A_s (W x + b)`.
    pub sequential_r: usize,
    /// Factor applied to both branches.
    pub scale: f64,
    /// Dropout on the branches' inputs during training.
    pub dropout: f64,
    /// Projections to adapt.
    #[serde(deserialize_with = "crate::lora::config::target_modules_or_preset")]
    pub target_modules: Vec<LinearSite>,
}

impl Default for HydraConfig {
    fn default() -> Self {
        Self {
            parallel_r: 8,
            sequential_r: 8,
            scale: 1.0,
            dropout: 0.0,
            target_modules: vec![LinearSite::AttentionOutput],
        }
    }
}

impl HydraConfig {
    pub fn check(&self) -> Result<(), String> {
        for (field, r) in [
            ("parallel_r", self.parallel_r),
            ("sequential_r", self.sequential_r),
        ] {
            if r == 0 {
                return Err(format!("method `hydra`: field `{field}` is 0; allowed range: 1 to the adapted layer's width"));
            }
        }
        if self.target_modules.is_empty() {
            return Err("method `hydra`: field `target_modules` is empty; allowed: a non-empty subset of query, key, value, attention_output, fc1, fc2".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "method `hydra`: field `dropout` is {}; allowed range [0, 1)",
                self.dropout
            ));
        }
        Ok(())
    }

    /// Ranks above the widths they factor add parameters without adding rank.
    pub fn check_widths(&self, info: &BackboneInfo) -> Result<(), String> {
        crate::check_sites("hydra", &self.target_modules, info)?;
        for &site in &self.target_modules {
            let (inp, out) = info.linear_dims(site);
            for (field, r, limit) in [
                ("parallel_r", self.parallel_r, inp.min(out)),
                ("sequential_r", self.sequential_r, out),
            ] {
                if r > limit {
                    return Err(format!(
                        "method `hydra`: field `{field}` is {r} but `{}` is {inp} -> {out}; allowed range: 1 to {limit}",
                        site.name()
                    ));
                }
            }
        }
        Ok(())
    }
}
