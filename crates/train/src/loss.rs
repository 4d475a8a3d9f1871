//! Cross-entropy with label smoothing, equal to PyTorch's
//! `F.cross_entropy(logits, labels, label_smoothing=eps)` with the default mean reduction:
//!
//! ```text
//! loss = mean_b [ (1 - eps) * (-log p[b, y_b]) + eps * mean_c (-log p[b, c]) ]
//! ```
//!
//! i.e. the cross-entropy against the target distribution `(1 - eps) * onehot(y) + eps / C`.
//! Built from [`peftbench_core::ops::log_softmax_last_dim`] and primitive ops, so the gradient flows
//! to the logits (candle-nn's fused softmax kernels have no backward).

use candle_core::{DType, Result, Tensor, D};
use peftbench_core::ops::log_softmax_last_dim;

/// Mean cross-entropy of `logits` `[B, C]` (any float dtype) against `labels` `[B]` (u32 class
/// indices), with label smoothing `label_smoothing` in `[0, 1]`. Returns a scalar of the logits' dtype.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    let (batch, classes) = logits.dims2()?;
    if labels.dims() != [batch] {
        candle_core::bail!(
            "cross_entropy: labels of shape {:?} for logits {:?}",
            labels.dims(),
            logits.dims()
        );
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        candle_core::bail!("cross_entropy: label smoothing {label_smoothing} outside [0, 1]");
    }
    if batch == 0 {
        candle_core::bail!("cross_entropy: empty batch");
    }
    let labels = labels.to_dtype(DType::U32)?;
    let max_label = labels.max(0)?.to_scalar::<u32>()?;
    if max_label as usize >= classes {
        candle_core::bail!("cross_entropy: label {max_label} out of range for {classes} classes");
    }
    let log_p = log_softmax_last_dim(logits)?;
    // Target distribution: (1 - eps) on the label, plus eps / C everywhere.
    let class_ids = Tensor::arange(0u32, classes as u32, logits.device())?;
    let onehot = class_ids
        .unsqueeze(0)?
        .broadcast_eq(&labels.unsqueeze(1)?)?
        .to_dtype(logits.dtype())?;
    let target = onehot.affine(1.0 - label_smoothing, label_smoothing / classes as f64)?;
    let per_example = (target * log_p)?.sum(D::Minus1)?.neg()?;
    per_example.mean(0)
}

/// The label of positions that carry none (padding, later subwords of a word, tokens the MLM
/// objective does not predict); PyTorch's `ignore_index` with u32 labels.
pub const IGNORE_LABEL: u32 = u32::MAX;

/// Rows `[N, C]` of `logits` `[.., C]` and their labels `[N]` where `labels` `[..]` (the logits'
/// leading shape) is not [`IGNORE_LABEL`]. Per-example logits `[B, C]` with labels `[B]` pass
/// unchanged; per-token logits `[B, T, C]` with labels `[B, T]` are flattened and filtered.
pub fn labelled_rows(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let classes = logits.dim(D::Minus1)?;
    if logits.rank() < 2 || labels.dims() != &logits.dims()[..logits.rank() - 1] {
        candle_core::bail!(
            "labels of shape {:?} for logits {:?}",
            labels.dims(),
            logits.dims()
        );
    }
    let labels = labels.to_dtype(DType::U32)?.flatten_all()?;
    let logits = logits.reshape(((), classes))?;
    let values = labels.to_vec1::<u32>()?;
    if !values.contains(&IGNORE_LABEL) {
        return Ok((logits, labels));
    }
    let keep: Vec<u32> = (0..values.len() as u32)
        .filter(|&i| values[i as usize] != IGNORE_LABEL)
        .collect();
    let keep = Tensor::from_vec(keep.clone(), keep.len(), logits.device())?;
    Ok((
        logits.index_select(&keep, 0)?,
        labels.index_select(&keep, 0)?,
    ))
}

/// [`cross_entropy`] over the labelled rows of per-example or per-token logits (see
/// [`labelled_rows`]): the mean over labelled tokens, as PyTorch's `ignore_index` computes it.
pub fn masked_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    label_smoothing: f64,
) -> Result<Tensor> {
    let (logits, labels) = labelled_rows(logits, labels)?;
    cross_entropy(&logits, &labels, label_smoothing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    const LOGITS: [[f64; 4]; 3] = [
        [2.0, -1.0, 0.5, 0.0],
        [0.1, 0.2, 0.3, -3.0],
        [10.0, -10.0, 1.0, 2.0],
    ];
    const LABELS: [u32; 3] = [0, 3, 1];

    /// Reference values from `F.cross_entropy(logits, labels, label_smoothing=eps)` (float64) and its
    /// gradient w.r.t. the logits: `tests/fixtures/cross_entropy_torch.json`, written by
    /// `ci/fixtures/train_torch.py` (regenerate all fixtures with `ci/fixtures/regenerate.sh`).
    const FIXTURE: &str = include_str!("../tests/fixtures/cross_entropy_torch.json");

    /// `(label_smoothing, loss, gradient)` per case of the fixture, whose inputs must be ours.
    fn torch_cases() -> Vec<(f64, f64, Vec<f64>)> {
        let all: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let logits: Vec<Vec<f64>> = serde_json::from_value(all["logits"].clone()).unwrap();
        let labels: Vec<u32> = serde_json::from_value(all["labels"].clone()).unwrap();
        assert_eq!(
            logits,
            LOGITS.map(|r| r.to_vec()).to_vec(),
            "fixture inputs"
        );
        assert_eq!(labels, LABELS.to_vec(), "fixture inputs");
        all["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["label_smoothing"].as_f64().unwrap(),
                    c["loss"].as_f64().unwrap(),
                    serde_json::from_value(c["grad"].clone()).unwrap(),
                )
            })
            .collect()
    }

    fn labels() -> Result<Tensor> {
        Tensor::new(&LABELS, &Device::Cpu)
    }

    #[test]
    fn matches_torch_value_and_gradient() -> Result<()> {
        let logits = Var::new(&LOGITS, &Device::Cpu)?;
        for (eps, loss, grad) in torch_cases() {
            let l = cross_entropy(logits.as_tensor(), &labels()?, eps)?;
            let got = l.to_scalar::<f64>()?;
            assert!(
                (got - loss).abs() < 1e-12,
                "eps {eps}: {got} vs torch {loss}"
            );
            let g = l.backward()?;
            let g = g
                .get(logits.as_tensor())
                .expect("gradient")
                .flatten_all()?
                .to_vec1::<f64>()?;
            for (i, (a, b)) in g.iter().zip(grad).enumerate() {
                assert!(
                    (a - b).abs() < 1e-12,
                    "eps {eps} grad {i}: {a} vs torch {b}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let base: Vec<f64> = LOGITS.iter().flatten().copied().collect();
        let f = |v: &[f64]| -> Result<f64> {
            let t = Tensor::from_vec(v.to_vec(), (3, 4), &Device::Cpu)?;
            cross_entropy(&t, &labels()?, 0.2)?.to_scalar::<f64>()
        };
        let var = Var::from_vec(base.clone(), (3, 4), &Device::Cpu)?;
        let grads = cross_entropy(var.as_tensor(), &labels()?, 0.2)?.backward()?;
        let analytic = grads
            .get(var.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let h = 1e-6;
        for i in 0..base.len() {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += h;
            minus[i] -= h;
            let numeric = (f(&plus)? - f(&minus)?) / (2.0 * h);
            assert!(
                (numeric - analytic[i]).abs() < 1e-7,
                "{i}: {numeric} vs {}",
                analytic[i]
            );
        }
        Ok(())
    }

    #[test]
    fn token_labels_ignore_unlabelled_positions() -> Result<()> {
        let dev = Device::Cpu;
        // [B=1, T=3, C=4]: the middle token is unlabelled.
        let logits = Tensor::new(&[LOGITS], &dev)?;
        let labels = Tensor::new(&[[0u32, IGNORE_LABEL, 1]], &dev)?;
        let got = masked_cross_entropy(&logits, &labels, 0.0)?.to_scalar::<f64>()?;
        let rows = Tensor::new(&[LOGITS[0], LOGITS[2]], &dev)?;
        let expected = cross_entropy(&rows, &Tensor::new(&[0u32, 1], &dev)?, 0.0)?;
        assert!((got - expected.to_scalar::<f64>()?).abs() < 1e-12);
        assert!(masked_cross_entropy(&logits, &Tensor::new(&[0u32, 1, 2], &dev)?, 0.0).is_err());
        Ok(())
    }

    #[test]
    fn works_in_f32_and_rejects_bad_labels() -> Result<()> {
        let logits = Tensor::new(&LOGITS, &Device::Cpu)?.to_dtype(DType::F32)?;
        let l = cross_entropy(&logits, &labels()?, 0.1)?.to_scalar::<f32>()?;
        assert!((f64::from(l) - torch_cases()[1].1).abs() < 1e-5);
        let bad = Tensor::new(&[0u32, 4, 1], &Device::Cpu)?;
        assert!(cross_entropy(&logits, &bad, 0.0).is_err());
        assert!(cross_entropy(&logits, &Tensor::new(&[0u32, 1], &Device::Cpu)?, 0.0).is_err());
        Ok(())
    }
}
