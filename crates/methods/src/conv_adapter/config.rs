use serde::{Deserialize, Serialize};

/// Convolutional-adapter hyper-parameters. Defaults: an 8-wide bottleneck (the VTAB adapters'
/// size), a 3-tap depthwise kernel, scale 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConvAdapterConfig {
    /// Channels of the bottleneck the convolution runs over.
    pub bottleneck: usize,
    /// Taps of the depthwise convolution along the token sequence (odd, zero-padded "same").
    pub kernel_size: usize,
    /// Factor on the branch output.
    pub scale: f64,
}

impl Default for ConvAdapterConfig {
    fn default() -> Self {
        Self {
            bottleneck: 8,
            kernel_size: 3,
            scale: 1.0,
        }
    }
}

impl ConvAdapterConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.bottleneck == 0 {
            return Err("method `conv-adapter`: field `bottleneck` is 0; allowed range: 1 to the hidden size".into());
        }
        if self.kernel_size == 0 || self.kernel_size.is_multiple_of(2) {
            return Err(format!("method `conv-adapter`: field `kernel_size` is {}; allowed: odd values >= 1 (same padding)", self.kernel_size));
        }
        Ok(())
    }
}
