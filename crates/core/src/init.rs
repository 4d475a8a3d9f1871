//! Seeded parameter initialisation. candle's `randn` draws from an unseedable thread RNG on CPU, so
//! every trainable tensor in peftbench is drawn here, from a ChaCha stream derived from the run seed.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// A seeded source of initial values. Derive sub-streams with [`SeededInit::fork`] so that adding a
/// parameter to one module does not shift every other module's values.
pub struct SeededInit {
    rng: ChaCha8Rng,
    device: Device,
    dtype: DType,
}

impl SeededInit {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device: device.clone(),
            dtype: DType::F32,
        }
    }

    /// Values in `dtype` (f32 by default; gradient checks use f64).
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An independent stream named by `label` (e.g. the parameter's module path).
    pub fn fork(&self, label: &str) -> Self {
        use rand::RngCore;
        let mut base = self.rng.clone();
        // FNV-1a of the label mixed with the parent stream: stable across platforms and runs.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            rng: ChaCha8Rng::seed_from_u64(base.next_u64() ^ h),
            device: self.device.clone(),
            dtype: self.dtype,
        }
    }

    fn var_from(&self, values: Vec<f32>, shape: Shape) -> Result<Var> {
        Var::from_tensor(&Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?)
    }

    pub fn zeros(&self, shape: impl Into<Shape>) -> Result<Var> {
        let shape = shape.into();
        self.var_from(vec![0.0; shape.elem_count()], shape)
    }

    pub fn constant(&self, shape: impl Into<Shape>, value: f32) -> Result<Var> {
        let shape = shape.into();
        self.var_from(vec![value; shape.elem_count()], shape)
    }

    pub fn uniform(&mut self, shape: impl Into<Shape>, low: f32, high: f32) -> Result<Var> {
        let shape = shape.into();
        let dist = Uniform::new(low, high).map_err(candle_core::Error::wrap)?;
        let values = (0..shape.elem_count())
            .map(|_| dist.sample(&mut self.rng))
            .collect();
        self.var_from(values, shape)
    }

    pub fn normal(&mut self, shape: impl Into<Shape>, std: f32) -> Result<Var> {
        let shape = shape.into();
        let dist = Normal::new(0.0, std).map_err(candle_core::Error::wrap)?;
        let values = (0..shape.elem_count())
            .map(|_| dist.sample(&mut self.rng))
            .collect();
        self.var_from(values, shape)
    }

    /// Normal truncated to +-2 std (timm's `trunc_normal_` with its default cut-off), by rejection.
    pub fn trunc_normal(&mut self, shape: impl Into<Shape>, std: f32) -> Result<Var> {
        let shape = shape.into();
        let dist = Normal::new(0.0f32, 1.0).map_err(candle_core::Error::wrap)?;
        let values = (0..shape.elem_count())
            .map(|_| loop {
                let v = dist.sample(&mut self.rng);
                if v.abs() <= 2.0 {
                    break v * std;
                }
            })
            .collect();
        self.var_from(values, shape)
    }

    /// PyTorch's default `nn.Linear` weight init, `kaiming_uniform_(a=sqrt(5))`: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    /// HF PEFT initialises LoRA's A the same way.
    pub fn kaiming_uniform(&mut self, shape: impl Into<Shape>, fan_in: usize) -> Result<Var> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        self.uniform(shape, -bound, bound)
    }

    /// Xavier/Glorot uniform for a `[fan_out, fan_in]` weight.
    pub fn xavier_uniform(&mut self, fan_out: usize, fan_in: usize) -> Result<Var> {
        let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
        self.uniform((fan_out, fan_in), -bound, bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_forks_are_independent() -> Result<()> {
        let a = SeededInit::new(3, &Device::Cpu).fork("x").normal(8, 1.0)?;
        let b = SeededInit::new(3, &Device::Cpu).fork("x").normal(8, 1.0)?;
        let c = SeededInit::new(3, &Device::Cpu).fork("y").normal(8, 1.0)?;
        let v = |t: &Var| t.as_tensor().to_vec1::<f32>();
        assert_eq!(v(&a)?, v(&b)?);
        assert_ne!(v(&a)?, v(&c)?);
        let t = SeededInit::new(1, &Device::Cpu).trunc_normal(1000, 0.02)?;
        assert!(t.as_tensor().abs()?.max(0)?.to_scalar::<f32>()? <= 0.04);
        Ok(())
    }
}
