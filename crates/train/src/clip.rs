//! Gradient clipping by the global L2 norm, as `torch.nn.utils.clip_grad_norm_` (norm type 2):
//! the norm is taken over the gradients of the given parameters only, and when
//! `max_norm / (norm + 1e-6) < 1` every one of those gradients is multiplied by that factor.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};
use peftbench_core::NamedVars;

/// Clips the gradients of `params` in `grads` in place; returns the total norm before clipping.
/// Parameters without a gradient are ignored. A non-finite norm is returned unchanged and the
/// gradients are then scaled by a NaN/zero factor exactly as PyTorch would (the caller should stop).
pub fn clip_grad_norm(grads: &mut GradStore, params: &NamedVars, max_norm: f64) -> Result<f64> {
    // Per-tensor squared norms in f32 on the device, then one transfer (PyTorch takes the norm of
    // the per-tensor norms, also in the gradients' dtype).
    let mut squares = Vec::new();
    for p in params.iter() {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            squares.push(g.to_dtype(DType::F32)?.sqr()?.sum_all()?);
        }
    }
    if squares.is_empty() {
        return Ok(0.0);
    }
    let norm = f64::from(
        Tensor::stack(&squares, 0)?
            .sum_all()?
            .sqrt()?
            .to_scalar::<f32>()?,
    );
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 || !coef.is_finite() {
        for p in params.iter() {
            let t = p.var.as_tensor();
            if let Some(g) = grads.remove(t) {
                let scaled = g.affine(coef, 0.0)?;
                grads.insert(t, scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn setup() -> Result<(NamedVars, Var, Var, GradStore)> {
        let dev = Device::Cpu;
        let a = Var::new(&[1.0f32, 2.0], &dev)?;
        let b = Var::new(&[[0.5f32]], &dev)?;
        let mut params = NamedVars::default();
        params.push("a", a.clone());
        params.push("b", b.clone());
        let mut grads = GradStore::default();
        grads.insert(a.as_tensor(), Tensor::new(&[3.0f32, 0.0], &dev)?);
        grads.insert(b.as_tensor(), Tensor::new(&[[4.0f32]], &dev)?);
        Ok((params, a, b, grads))
    }

    #[test]
    fn scales_when_above_max_norm() -> Result<()> {
        let (params, a, b, mut grads) = setup()?;
        let norm = clip_grad_norm(&mut grads, &params, 1.0)?;
        assert!((norm - 5.0).abs() < 1e-6);
        let coef = 1.0 / (5.0 + 1e-6);
        let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f32>()?;
        let gb = grads
            .get(b.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!((f64::from(ga[0]) - 3.0 * coef).abs() < 1e-7);
        assert!((f64::from(gb[0]) - 4.0 * coef).abs() < 1e-7);
        Ok(())
    }

    #[test]
    fn leaves_small_gradients_and_other_params_alone() -> Result<()> {
        let (params, a, b, mut grads) = setup()?;
        let norm = clip_grad_norm(&mut grads, &params, 10.0)?;
        assert!((norm - 5.0).abs() < 1e-6);
        assert_eq!(
            grads.get(a.as_tensor()).unwrap().to_vec1::<f32>()?,
            vec![3.0, 0.0]
        );
        // Only the listed parameters count: without `b` the norm is 3 and `b`'s gradient is kept.
        let only_a = NamedVars(params.0[..1].to_vec());
        let norm = clip_grad_norm(&mut grads, &only_a, 1.0)?;
        assert!((norm - 3.0).abs() < 1e-6);
        assert_eq!(
            grads
                .get(b.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?,
            vec![4.0]
        );
        Ok(())
    }
}
