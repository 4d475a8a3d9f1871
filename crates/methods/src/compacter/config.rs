use serde::{Deserialize, Serialize};

use crate::adapter::AdapterActivation;

/// Compacter hyper-parameters. Defaults: adapter-hub's Compacter (reduction factor 32, PHM
/// dimension 4, GELU) with the paper's rank-1 factors and rules shared by every layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompacterConfig {
    /// Bottleneck width = hidden size / reduction_factor.
    pub reduction_factor: usize,
    /// `n`: each weight is a sum of `n` Kronecker products of an `n x n` rule and a block of size
    /// `(out/n) x (in/n)`. Must divide the hidden size and the bottleneck width.
    pub phm_dim: usize,
    /// Rank of each block `B_i = s_i t_i` (1 in the paper).
    pub phm_rank: usize,
    pub activation: AdapterActivation,
}

impl Default for CompacterConfig {
    fn default() -> Self {
        Self {
            reduction_factor: 32,
            phm_dim: 4,
            phm_rank: 1,
            activation: AdapterActivation::Gelu,
        }
    }
}

impl CompacterConfig {
    pub fn check(&self, method: &str) -> Result<(), String> {
        for (field, v) in [
            ("reduction_factor", self.reduction_factor),
            ("phm_dim", self.phm_dim),
            ("phm_rank", self.phm_rank),
        ] {
            if v == 0 {
                return Err(format!(
                    "method `{method}`: field `{field}` is 0; allowed range: at least 1"
                ));
            }
        }
        Ok(())
    }

    /// The bottleneck width on a backbone of width `hidden`, once divisibility holds.
    pub fn bottleneck(&self, method: &str, hidden: usize) -> Result<usize, String> {
        let k = hidden / self.reduction_factor;
        if k == 0 || !hidden.is_multiple_of(self.reduction_factor) {
            return Err(format!("method `{method}`: field `reduction_factor` is {} but the hidden size {hidden} is not a multiple of it; allowed: divisors of {hidden} below it", self.reduction_factor));
        }
        if !hidden.is_multiple_of(self.phm_dim) || !k.is_multiple_of(self.phm_dim) {
            return Err(format!("method `{method}`: field `phm_dim` is {} but must divide the hidden size {hidden} and the bottleneck {k}; allowed: common divisors of {hidden} and {k}", self.phm_dim));
        }
        let limit = (hidden / self.phm_dim).min(k / self.phm_dim);
        if self.phm_rank > limit {
            return Err(format!(
                "method `{method}`: field `phm_rank` is {}; allowed range: 1 to {limit}",
                self.phm_rank
            ));
        }
        Ok(k)
    }
}
