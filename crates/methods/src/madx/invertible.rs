use candle_core::{Result, Tensor, D};
use peftbench_core::{NamedVars, SeededInit};

use crate::adapter::{AdapterActivation, Bottleneck};

/// MAD-X's invertible adapter: a NICE additive coupling on the token embeddings (Dinh, Krueger &
/// Bengio, 2015, arXiv:1410.8516). With `x = [x₁, x₂]` split in halves:
/// `o₁ = x₁ + F(x₂)`, `o₂ = x₂ + G(o₁)`; inverse `x₂ = o₂ − G(o₁)`, `x₁ = o₁ − F(x₂)`.
/// `F` and `G` are ReLU bottlenecks with Kaiming-uniform weights (not zero: MAD-X does not
/// promise identity here; it promises invertibility).
pub struct InvertibleAdapter {
    pub f: Bottleneck,
    pub g: Bottleneck,
    half: usize,
}

impl InvertibleAdapter {
    pub fn new(hidden: usize, bottleneck: usize, init: &SeededInit) -> Result<Self> {
        let half = hidden / 2;
        let coupling = |name: &str| -> Result<Bottleneck> {
            let mut b =
                Bottleneck::new(half, bottleneck, AdapterActivation::Relu, &init.fork(name))?;
            b.up_weight = init
                .fork(&format!("{name}.up"))
                .kaiming_uniform((half, bottleneck), bottleneck)?;
            Ok(b)
        };
        Ok(Self {
            f: coupling("F")?,
            g: coupling("G")?,
            half,
        })
    }

    pub fn push_params(&self, prefix: &str, params: &mut NamedVars) {
        self.f.push_params(&format!("{prefix}.F"), params);
        self.g.push_params(&format!("{prefix}.G"), params);
    }

    fn halves(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            x.narrow(D::Minus1, 0, self.half)?,
            x.narrow(D::Minus1, self.half, self.half)?,
        ))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (x1, x2) = self.halves(x)?;
        let o1 = (&x1 + self.f.forward(&x2)?)?;
        let o2 = (&x2 + self.g.forward(&o1)?)?;
        Tensor::cat(&[o1, o2], D::Minus1)
    }

    pub fn inverse(&self, o: &Tensor) -> Result<Tensor> {
        let (o1, o2) = self.halves(o)?;
        let x2 = (&o2 - self.g.forward(&o1)?)?;
        let x1 = (&o1 - self.f.forward(&x2)?)?;
        Tensor::cat(&[x1, x2], D::Minus1)
    }
}
