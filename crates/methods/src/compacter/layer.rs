use candle_core::{Result, Tensor, Var};
use peftbench_core::{ops, NamedVars, SeededInit};

use crate::adapter::AdapterActivation;

/// A parameterised-hypercomplex-multiplication (PHM) linear layer: `W = Σ_i A_i ⊗ (s_i t_i)`, the
/// rules `A` (`[n, n, n]`) shared with other layers, the low-rank factors `s` (`[n, out/n, r]`)
/// and `t` (`[n, r, in/n]`) its own.
pub struct PhmLinear {
    pub s: Var,
    pub t: Var,
    pub bias: Var,
}

impl PhmLinear {
    /// `zero_left`: start `s` at zero, so the layer outputs its bias only (for up-projections).
    pub fn new(
        inp: usize,
        out: usize,
        n: usize,
        rank: usize,
        zero_left: bool,
        init: &SeededInit,
    ) -> Result<Self> {
        let (p, q) = (out / n, inp / n);
        // Glorot-uniform over each factor's own fan-in/fan-out, as the Compacter code does.
        let bound = |fan_in: usize, fan_out: usize| (6.0 / (fan_in + fan_out) as f32).sqrt();
        let s = if zero_left {
            init.zeros((n, p, rank))?
        } else {
            let b = bound(rank, p);
            init.fork("s").uniform((n, p, rank), -b, b)?
        };
        let b = bound(q, rank);
        let t = init.fork("t").uniform((n, rank, q), -b, b)?;
        Ok(Self {
            s,
            t,
            bias: init.zeros(out)?,
        })
    }

    pub fn push_params(&self, prefix: &str, params: &mut NamedVars) {
        params.push(format!("{prefix}.phm_s"), self.s.clone());
        params.push(format!("{prefix}.phm_t"), self.t.clone());
        params.push(format!("{prefix}.bias"), self.bias.clone());
    }

    /// `Σ_i A_i ⊗ B_i` as one `[out, in]` matrix.
    pub fn weight(&self, rules: &Tensor) -> Result<Tensor> {
        let blocks = self.s.as_tensor().matmul(self.t.as_tensor())?; // [n, p, q]
        let (n, p, q) = blocks.dims3()?;
        // kron(A_i, B_i)[a·p + c, b·q + d] = A_i[a, b] B_i[c, d]
        let a = rules.reshape((n, n, 1, n, 1))?;
        let b = blocks.reshape((n, 1, p, 1, q))?;
        a.broadcast_mul(&b)?.sum(0)?.reshape((n * p, n * q))
    }

    pub fn forward(&self, x: &Tensor, rules: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight(rules)?, Some(self.bias.as_tensor()))
    }
}

/// A bottleneck adapter whose projections are PHM layers: `x + up(act(down(x)))`.
pub struct CompacterAdapter {
    pub down: PhmLinear,
    pub up: PhmLinear,
    pub activation: AdapterActivation,
}

impl CompacterAdapter {
    pub fn forward(&self, x: &Tensor, rules: &Tensor) -> Result<Tensor> {
        let h = self.down.forward(x, rules)?;
        let h = match self.activation {
            AdapterActivation::Relu => h.relu()?,
            AdapterActivation::Gelu => h.gelu_erf()?,
            AdapterActivation::Silu => h.silu()?,
        };
        self.up.forward(&h, rules)
    }
}
