use candle_core::{Result, Tensor, Var};
use peftbench_core::{NamedVars, SeededInit};

/// One scale-and-shift: `γ ⊙ x + β` over the last (feature) dimension.
pub struct ScaleShift {
    /// `[features]`, around one.
    pub scale: Var,
    /// `[features]`, around zero.
    pub shift: Var,
}

impl ScaleShift {
    pub fn new(features: usize, std: f64, init: &SeededInit) -> Result<Self> {
        let (scale, shift) = if std > 0.0 {
            let scale = init.fork("scale").normal(features, std as f32)?;
            let ones = Tensor::ones(features, scale.dtype(), scale.device())?;
            scale.set(&(scale.as_tensor() + ones)?)?;
            (scale, init.fork("shift").normal(features, std as f32)?)
        } else {
            (init.constant(features, 1.0)?, init.zeros(features)?)
        };
        Ok(Self { scale, shift })
    }

    pub fn push_params(&self, prefix: &str, params: &mut NamedVars) {
        params.push(format!("{prefix}.ssf_scale"), self.scale.clone());
        params.push(format!("{prefix}.ssf_shift"), self.shift.clone());
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(self.scale.as_tensor())?
            .broadcast_add(self.shift.as_tensor())
    }

    /// `(diag(γ) W, γ ⊙ b + β)`: the affine map that, applied alone, equals map-then-scale-shift.
    /// `weight` is `[features, in]` for a linear layer or `[features]` for a norm's affine weight.
    pub fn fold(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let scale = self.scale.as_tensor();
        let w = if weight.rank() == 2 {
            weight.broadcast_mul(&scale.unsqueeze(1)?)?
        } else {
            weight.mul(scale)?
        };
        let b = match bias {
            Some(b) => (b.mul(scale)? + self.shift.as_tensor())?,
            None => self.shift.as_tensor().clone(),
        };
        Ok((w, b))
    }
}
