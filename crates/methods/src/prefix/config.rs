use serde::{Deserialize, Serialize};

/// Prefix-tuning hyper-parameters. Defaults: adapter-hub's prefix tuning (30 virtual tokens, MLP
/// re-parameterisation 512 wide), which follows Li & Liang's finding that optimising the prefix
/// directly is unstable while training it through an MLP is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixConfig {
    /// Number of learned key/value positions prepended in every attention (PEFT's
    /// `num_virtual_tokens`).
    pub num_virtual_tokens: usize,
    /// Train a small embedding through a two-layer tanh MLP instead of the prefixes themselves
    /// (PEFT's `prefix_projection`). Only the MLP's output is needed at inference, and only it is
    /// saved.
    pub prefix_projection: bool,
    /// Hidden width of that MLP (PEFT's `encoder_hidden_size`).
    pub encoder_hidden_size: usize,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        Self {
            num_virtual_tokens: 30,
            prefix_projection: true,
            encoder_hidden_size: 512,
        }
    }
}

impl PrefixConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.num_virtual_tokens == 0 {
            return Err(
                "method `prefix-tuning`: field `num_virtual_tokens` is 0; allowed range: at least 1"
                    .into(),
            );
        }
        if self.prefix_projection && self.encoder_hidden_size == 0 {
            return Err("method `prefix-tuning`: field `encoder_hidden_size` is 0 with prefix_projection; allowed range: at least 1".into());
        }
        Ok(())
    }
}
