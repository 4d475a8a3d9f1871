//! timm's `CosineLRScheduler` with the arguments NOAH and FacT use
//! (`CosineLRScheduler(opt, t_initial=epochs, warmup_t=warmup, lr_min=min_lr, warmup_lr_init=warmup_lr)`,
//! all other arguments at their defaults: `t_in_epochs=True`, `warmup_prefix=False`, one cycle,
//! no noise, no k-decay).
//!
//! With `t` the epoch (or, per step, the update count):
//!
//! ```text
//! t <  warmup_t:  lr = warmup_lr + t * (base_lr - warmup_lr) / warmup_t
//! t <  t_initial: lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + cos(pi * t / t_initial))
//! otherwise:      lr = min_lr
//! ```
//!
//! Note what timm does *not* do: with the default `warmup_prefix=False` the cosine is **not** shifted
//! by the warm-up. It is evaluated at `t / t_initial` over the whole run, so the warm-up overwrites its
//! first `warmup_t` epochs and the schedule jumps from `warmup_lr + (warmup_t-1)/warmup_t * (base_lr -
//! warmup_lr)` to `cos`-value at `warmup_t / t_initial` (slightly below `base_lr`); `base_lr` itself is
//! never used. (With `warmup_prefix=True` timm would use `t - warmup_t` over `t_initial`, not over
//! `t_initial - warmup_t`.) The unit tests pin values computed with timm itself.
//!
//! Calling convention: timm's own `train.py` sets `warmup_lr` before epoch 0 and calls
//! `scheduler.step(epoch + 1)` after each epoch, so epoch `e` trains at `lr_at_epoch(e)`, which is
//! what [`crate::train`] does. FacT's and NOAH's VTAB scripts instead call `scheduler.step(ep)` at the
//! end of epoch `ep`, so their epoch `e >= 1` trains at `lr_at_epoch(e - 1)` (epochs 0 and 1 both at
//! `warmup_lr`): a one-epoch lag we do not reproduce.

/// One cosine cycle with linear warm-up; see the module documentation for the exact formula.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: usize,
    pub warmup_lr: f64,
    pub epochs: usize,
}

impl CosineSchedule {
    /// The learning rate of epoch `epoch` (0-based) with per-epoch updates (`t_in_epochs=True`).
    pub fn lr_at_epoch(&self, epoch: usize) -> f64 {
        self.lr_at(epoch as f64, self.warmup_epochs as f64, self.epochs as f64)
    }

    /// The learning rate at optimizer update `step` (0-based, counted over the whole run) with
    /// per-step updates: timm with `t_in_epochs=False`, `t_initial = epochs * steps_per_epoch` and
    /// `warmup_t = warmup_epochs * steps_per_epoch`, driven by `step_update(num_updates)`.
    pub fn lr_at_step(&self, step: usize, steps_per_epoch: usize) -> f64 {
        let spe = steps_per_epoch as f64;
        self.lr_at(
            step as f64,
            self.warmup_epochs as f64 * spe,
            self.epochs as f64 * spe,
        )
    }

    fn lr_at(&self, t: f64, warmup_t: f64, t_initial: f64) -> f64 {
        if t < warmup_t {
            let slope = (self.base_lr - self.warmup_lr) / warmup_t;
            self.warmup_lr + t * slope
        } else if t < t_initial {
            self.min_lr
                + 0.5
                    * (self.base_lr - self.min_lr)
                    * (1.0 + (std::f64::consts::PI * t / t_initial).cos())
        } else {
            self.min_lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOAH: CosineSchedule = CosineSchedule {
        base_lr: 1e-3,
        min_lr: 1e-5,
        warmup_epochs: 10,
        warmup_lr: 1e-6,
        epochs: 100,
    };

    fn assert_close(got: f64, expected: f64) {
        assert!(
            (got - expected).abs() <= 1e-14 * expected.abs(),
            "{got} vs timm {expected}"
        );
    }

    /// Reference values from timm's `CosineLRScheduler(opt, t_initial=100, warmup_t=10, lr_min=1e-5,
    /// warmup_lr_init=1e-6)._get_lr(t)` per epoch, and with `t_initial=700, warmup_t=70,
    /// t_in_epochs=False` per step (7 steps per epoch): `tests/fixtures/cosine_timm.json`, written by
    /// `ci/fixtures/train_torch.py` (regenerate all fixtures with `ci/fixtures/regenerate.sh`).
    fn timm(key: &str) -> Vec<(usize, f64)> {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/cosine_timm.json")).unwrap();
        serde_json::from_value(all[key].clone()).unwrap()
    }

    #[test]
    fn per_epoch_matches_timm() {
        let timm = timm("per_epoch");
        assert!(timm.len() >= 10);
        for (epoch, expected) in timm {
            assert_close(NOAH.lr_at_epoch(epoch), expected);
        }
        // The cosine is not shifted by the warm-up: epoch 10 is already below the base rate.
        assert!(NOAH.lr_at_epoch(10) < NOAH.base_lr);
    }

    #[test]
    fn per_step_matches_timm() {
        let timm = timm("per_step");
        assert!(timm.len() >= 6);
        for (step, expected) in timm {
            assert_close(NOAH.lr_at_step(step, 7), expected);
        }
    }

    #[test]
    fn no_warmup_starts_at_base_lr() {
        let s = CosineSchedule {
            warmup_epochs: 0,
            ..NOAH
        };
        assert_eq!(s.lr_at_epoch(0), 1e-3);
        assert!(s.lr_at_epoch(1) < 1e-3);
    }
}
