//! AdamW with decoupled weight decay, computed as `torch.optim.AdamW` does (the single-tensor,
//! non-`amsgrad`, non-`maximize` path), per parameter:
//!
//! ```text
//! step += 1
//! p     = p * (1 - lr * weight_decay)               // decoupled decay, before the moment update
//! m     = beta1 * m + (1 - beta1) * g
//! v     = beta2 * v + (1 - beta2) * g^2
//! p     = p - lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
//! ```
//!
//! `eps` is added to the bias-corrected `sqrt(v_hat)`, not inside the square root. Each parameter
//! keeps its own step count, advanced only when it receives a gradient, as PyTorch's per-parameter
//! `state["step"]`: a parameter without a gradient in a step is left exactly as it is (no decay either).
//!
//! With [`AdamWConfig::decay_1d`] `false`, parameters of rank <= 1 and names ending in `.bias` get no
//! weight decay: timm's `param_groups_weight_decay` convention. NOAH and FacT pass every parameter
//! to `torch.optim.AdamW` with one weight decay, which is `decay_1d: true`.
//!
//! Moments are kept in f32 for f16/bf16 parameters and in the parameter's dtype otherwise.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use peftbench_core::NamedVars;

/// AdamW hyper-parameters other than the learning rate (which the schedule supplies per step).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// `false`: no weight decay on 1-D parameters and `.bias` tensors (biases, norm scales), as timm.
    pub decay_1d: bool,
}

impl Default for AdamWConfig {
    /// `torch.optim.AdamW`'s defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01, on every parameter.
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            decay_1d: true,
        }
    }
}

struct ParamState {
    name: String,
    var: Var,
    decay: bool,
    /// This parameter's learning rate relative to the step's (1 for most).
    lr_multiplier: f64,
    step: u64,
    /// First and second moments, created on the first gradient.
    moments: Option<(Tensor, Tensor)>,
}

/// The optimizer: one state per trainable parameter, in [`NamedVars`] order.
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<ParamState>,
}

fn state_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

impl AdamW {
    pub fn new(params: &NamedVars, cfg: AdamWConfig) -> Result<Self> {
        let (b1, b2) = cfg.betas;
        if !(0.0..1.0).contains(&b1) || !(0.0..1.0).contains(&b2) {
            candle_core::bail!("AdamW betas must lie in [0, 1), got ({b1}, {b2})");
        }
        if cfg.eps < 0.0 || cfg.weight_decay < 0.0 {
            candle_core::bail!(
                "AdamW eps and weight decay must be >= 0, got {} and {}",
                cfg.eps,
                cfg.weight_decay
            );
        }
        let mut seen = std::collections::HashSet::new();
        let mut states = Vec::with_capacity(params.len());
        for p in params.iter() {
            if !seen.insert(p.var.as_tensor().id()) {
                candle_core::bail!("parameter `{}` is listed twice", p.name);
            }
            if !p.var.dtype().is_float() {
                candle_core::bail!(
                    "parameter `{}` is not a float tensor ({:?})",
                    p.name,
                    p.var.dtype()
                );
            }
            let decay = cfg.decay_1d || (p.var.rank() > 1 && !p.name.ends_with(".bias"));
            states.push(ParamState {
                name: p.name.clone(),
                var: p.var.clone(),
                decay,
                lr_multiplier: 1.0,
                step: 0,
                moments: None,
            });
        }
        Ok(Self {
            cfg,
            params: states,
        })
    }

    /// Parameter `name` trains at `multiplier(name)` times each step's learning rate (its weight
    /// decay scales with it, as in a PyTorch parameter group with its own `lr`).
    pub fn with_lr_multipliers(mut self, multiplier: impl Fn(&str) -> f64) -> Self {
        for state in &mut self.params {
            state.lr_multiplier = multiplier(&state.name);
        }
        self
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// The step count of parameter `name` (number of updates it has received), if it is optimised.
    pub fn param_steps(&self, name: &str) -> Option<u64> {
        self.params.iter().find(|p| p.name == name).map(|p| p.step)
    }

    /// Whether parameter `name` receives weight decay.
    pub fn decays(&self, name: &str) -> Option<bool> {
        self.params.iter().find(|p| p.name == name).map(|p| p.decay)
    }

    /// One update with learning rate `lr`. Parameters without a gradient in `grads` are skipped.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let (b1, b2) = self.cfg.betas;
        for state in &mut self.params {
            let Some(grad) = grads.get(state.var.as_tensor()) else {
                continue;
            };
            let dtype = state_dtype(state.var.dtype());
            let g = grad.detach().to_dtype(dtype)?;
            let (m, v) = match state.moments.take() {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            state.step += 1;
            let step = state.step as i32;
            // Exact for the usual multiplier 1.
            let lr = lr * state.lr_multiplier;

            let mut p = state.var.as_tensor().detach().to_dtype(dtype)?;
            if state.decay && self.cfg.weight_decay != 0.0 {
                p = p.affine(1.0 - lr * self.cfg.weight_decay, 0.0)?;
            }
            let m = (m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
            let v = (v.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
            let bias_correction1 = 1.0 - b1.powi(step);
            let bias_correction2_sqrt = (1.0 - b2.powi(step)).sqrt();
            let step_size = lr / bias_correction1;
            let denom = v
                .sqrt()?
                .affine(1.0 / bias_correction2_sqrt, self.cfg.eps)?;
            let p = (p - (m.div(&denom)?.affine(step_size, 0.0))?)?;
            state.var.set(&p.to_dtype(state.var.dtype())?)?;
            state.moments = Some((m, v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const W0: [[f64; 3]; 2] = [[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]];
    const B0: [f64; 3] = [0.1, -0.2, 0.3];
    /// (weight gradient, bias gradient, learning rate) of three steps.
    const STEPS: [([[f64; 3]; 2], [f64; 3], f64); 3] = [
        (
            [[0.1, -0.2, 0.3], [0.4, -0.5, 0.6]],
            [0.05, -0.1, 0.2],
            1e-2,
        ),
        ([[-0.3, 0.1, 0.0], [0.2, 0.2, -0.4]], [0.3, 0.0, -0.1], 5e-3),
        (
            [[0.05, 0.5, -0.25], [-0.1, 0.0, 1.0]],
            [-0.2, 0.4, 0.1],
            2e-2,
        ),
    ];
    /// Reference values from `torch.optim.AdamW(lr=.., betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1,
    /// foreach=False)` (CPU, float64) over the three steps above, with the learning rate set per
    /// step; for `decay_1d: false` the bias is in a group with `weight_decay=0.0`:
    /// `tests/fixtures/adamw_torch.json`, written by `ci/fixtures/train_torch.py` (regenerate all
    /// fixtures with `ci/fixtures/regenerate.sh`).
    fn torch(key: &str) -> Vec<f64> {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/adamw_torch.json")).unwrap();
        let w0: Vec<Vec<f64>> = serde_json::from_value(all["w0"].clone()).unwrap();
        assert_eq!(w0, W0.map(|r| r.to_vec()).to_vec(), "fixture inputs");
        let steps = all["steps"].as_array().unwrap();
        assert_eq!(steps.len(), STEPS.len(), "fixture inputs");
        for (step, (gw, gb, lr)) in steps.iter().zip(STEPS) {
            let fixture_gw: Vec<Vec<f64>> = serde_json::from_value(step["grad_w"].clone()).unwrap();
            let fixture_gb: Vec<f64> = serde_json::from_value(step["grad_b"].clone()).unwrap();
            assert_eq!(
                fixture_gw,
                gw.map(|r| r.to_vec()).to_vec(),
                "fixture inputs"
            );
            assert_eq!(fixture_gb, gb.to_vec(), "fixture inputs");
            assert_eq!(step["lr"].as_f64(), Some(lr), "fixture inputs");
        }
        serde_json::from_value(all[key].clone()).unwrap()
    }

    fn run(decay_1d: bool) -> Result<(Vec<f64>, Vec<f64>, AdamW)> {
        let dev = Device::Cpu;
        let w = Var::new(&W0, &dev)?;
        let b = Var::new(&B0, &dev)?;
        let mut params = NamedVars::default();
        params.push("head.weight", w.clone());
        params.push("head.bias", b.clone());
        let cfg = AdamWConfig {
            betas: (0.9, 0.98),
            eps: 1e-6,
            weight_decay: 0.1,
            decay_1d,
        };
        let mut opt = AdamW::new(&params, cfg)?;
        for (gw, gb, lr) in STEPS {
            let mut grads = GradStore::default();
            grads.insert(w.as_tensor(), Tensor::new(&gw, &dev)?);
            grads.insert(b.as_tensor(), Tensor::new(&gb, &dev)?);
            opt.step(&grads, lr)?;
        }
        let w = w.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let b = b.as_tensor().to_vec1::<f64>()?;
        Ok((w, b, opt))
    }

    fn assert_close(got: &[f64], expected: &[f64], tol: f64) {
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (g - e).abs() <= tol * (1.0 + e.abs()),
                "element {i}: {g} vs torch {e}"
            );
        }
    }

    #[test]
    fn matches_torch_adamw() -> Result<()> {
        let (w, b, opt) = run(true)?;
        assert_close(&w, &torch("w"), 1e-14);
        assert_close(&b, &torch("b_decay"), 1e-14);
        assert_eq!(opt.param_steps("head.bias"), Some(3));
        Ok(())
    }

    #[test]
    fn no_decay_on_1d_params_when_asked() -> Result<()> {
        let (w, b, opt) = run(false)?;
        assert_close(&w, &torch("w"), 1e-14);
        assert_close(&b, &torch("b_no_decay"), 1e-14);
        assert_eq!(opt.decays("head.weight"), Some(true));
        assert_eq!(opt.decays("head.bias"), Some(false));
        Ok(())
    }

    #[test]
    fn f32_parameters_match_torch_closely() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&W0, &dev)?.to_dtype(DType::F32)?;
        let w = Var::from_tensor(&w)?;
        let mut params = NamedVars::default();
        params.push("w", w.clone());
        let cfg = AdamWConfig {
            betas: (0.9, 0.98),
            eps: 1e-6,
            weight_decay: 0.1,
            decay_1d: true,
        };
        let mut opt = AdamW::new(&params, cfg)?;
        for (gw, _, lr) in STEPS {
            let mut grads = GradStore::default();
            grads.insert(w.as_tensor(), Tensor::new(&gw, &dev)?.to_dtype(DType::F32)?);
            opt.step(&grads, lr)?;
        }
        let got: Vec<f64> = w
            .as_tensor()
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1()?;
        assert_close(&got, &torch("w"), 1e-6);
        Ok(())
    }

    #[test]
    fn params_without_gradient_are_untouched() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::new(&[1.0f32, 2.0], &dev)?;
        let frozen = Var::new(&[3.0f32, 4.0], &dev)?;
        let mut params = NamedVars::default();
        params.push("a", a.clone());
        params.push("b", frozen.clone());
        let mut opt = AdamW::new(&params, AdamWConfig::default())?;
        let loss = a.as_tensor().sqr()?.sum_all()?;
        opt.step(&loss.backward()?, 0.1)?;
        assert_eq!(frozen.as_tensor().to_vec1::<f32>()?, vec![3.0, 4.0]);
        assert_eq!(opt.param_steps("b"), Some(0));
        // First Adam step moves every coordinate by about lr against the gradient's sign.
        let moved = a.as_tensor().to_vec1::<f32>()?;
        assert!(
            (moved[0] - (1.0 * (1.0 - 0.1 * 0.01) - 0.1)).abs() < 1e-6,
            "{moved:?}"
        );
        Ok(())
    }

    #[test]
    fn rejects_duplicates_and_bad_betas() -> Result<()> {
        let a = Var::new(&[1.0f32], &Device::Cpu)?;
        let mut params = NamedVars::default();
        params.push("a", a.clone());
        params.push("a_again", a);
        assert!(AdamW::new(&params, AdamWConfig::default()).is_err());
        let one = NamedVars(params.0[..1].to_vec());
        let bad = AdamWConfig {
            betas: (1.0, 0.999),
            ..AdamWConfig::default()
        };
        assert!(AdamW::new(&one, bad).is_err());
        Ok(())
    }

    /// A parameter with multiplier m moves exactly as it would at m times the learning rate.
    #[test]
    fn lr_multiplier_scales_one_parameter_s_rate() -> Result<()> {
        let dev = Device::Cpu;
        let step = |multiplier: f64, lr: f64| -> Result<Vec<f32>> {
            let a = Var::new(&[1.0f32, -2.0], &dev)?;
            let mut params = NamedVars::default();
            params.push("router", a.clone());
            let mut opt = AdamW::new(&params, AdamWConfig::default())?
                .with_lr_multipliers(|name| if name == "router" { multiplier } else { 1.0 });
            for _ in 0..3 {
                let loss = a.as_tensor().sqr()?.sum_all()?;
                opt.step(&loss.backward()?, lr)?;
            }
            a.as_tensor().to_vec1::<f32>()
        };
        assert_eq!(step(4.0, 0.01)?, step(1.0, 0.04)?);
        assert_ne!(step(4.0, 0.01)?, step(1.0, 0.01)?);
        Ok(())
    }
}
