//! Training objectives for cross-encoder relevance scoring, the three families of Nogueira & Cho
//! (2019, "Passage Re-ranking with BERT": pointwise), Burges et al. (2005, RankNet: pairwise) and
//! the listwise softmax cross-entropy over one positive and sampled negatives (Gao et al. 2021,
//! "Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline", the "localized
//! contrastive estimation" loss), each equal to its PyTorch formulation with the mean reduction:
//!
//! * [`pointwise_bce`]: `F.binary_cross_entropy_with_logits(scores, labels)`;
//! * [`pairwise_margin`]: `F.margin_ranking_loss(positive, negative, ones, margin)`;
//! * [`ranknet`]: `F.binary_cross_entropy_with_logits(positive - negative, ones)`, i.e.
//!   `mean log(1 + exp(-(s⁺ - s⁻)))`;
//! * [`listwise_softmax`]: `F.cross_entropy(scores, zeros)` on `[B, 1 + negatives]` scores whose
//!   column 0 is the positive.
//!
//! Scores are the cross-encoder's raw relevance logits. Everything is built from candle ops with a
//! backward pass, in a numerically stable form (no `exp` of a large positive number).

use candle_core::{Result, Tensor, D};
use peftbench_core::ops::log_softmax_last_dim;

/// `log(1 + exp(x))` elementwise, as `m + log(exp(-m) + exp(x - m))` with `m = max(x, 0)` held
/// constant: no overflow for large `x`, and the gradient is `sigmoid(x)` everywhere (a form with
/// `|x|` would get a zero subgradient at exactly `x = 0`).
fn softplus(x: &Tensor) -> Result<Tensor> {
    let m = x.relu()?.detach();
    let sum = (m.neg()?.exp()? + (x - &m)?.exp()?)?;
    m + sum.log()?
}

fn check_same_shape(name: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        candle_core::bail!("{name}: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    if a.elem_count() == 0 {
        candle_core::bail!("{name}: empty batch");
    }
    Ok(())
}

/// Pointwise binary cross-entropy of relevance logits `scores` against `labels` (same shape, 1 for
/// relevant and 0 for not; soft labels in `[0, 1]` are allowed), averaged over all elements.
pub fn pointwise_bce(scores: &Tensor, labels: &Tensor) -> Result<Tensor> {
    check_same_shape("pointwise_bce", scores, labels)?;
    let labels = labels.to_dtype(scores.dtype())?;
    // -[y log σ(x) + (1 - y) log(1 - σ(x))] = softplus(x) - y x
    (softplus(scores)? - (labels * scores)?)?.mean_all()
}

/// Pairwise hinge loss `mean max(0, margin - (positive - negative))` over paired scores of a
/// relevant and a non-relevant document for the same query.
pub fn pairwise_margin(positive: &Tensor, negative: &Tensor, margin: f64) -> Result<Tensor> {
    check_same_shape("pairwise_margin", positive, negative)?;
    (positive - negative)?
        .neg()?
        .affine(1.0, margin)?
        .relu()?
        .mean_all()
}

/// RankNet's pairwise logistic loss `mean log(1 + exp(-(positive - negative)))`: the
/// cross-entropy of "the positive ranks above the negative" under a logistic model of the score
/// difference.
pub fn ranknet(positive: &Tensor, negative: &Tensor) -> Result<Tensor> {
    check_same_shape("ranknet", positive, negative)?;
    softplus(&(negative - positive)?)?.mean_all()
}

/// Listwise softmax cross-entropy over groups `[B, 1 + n]` whose column 0 is the positive and the
/// rest its negatives: `mean_b -log softmax(scores[b])[0]`.
pub fn listwise_softmax(scores: &Tensor) -> Result<Tensor> {
    let (batch, group) = scores.dims2()?;
    if batch == 0 || group < 2 {
        candle_core::bail!(
            "listwise_softmax: need [batch, 1 + negatives] scores with at least one negative, got {:?}",
            scores.dims()
        );
    }
    log_softmax_last_dim(scores)?
        .narrow(D::Minus1, 0, 1)?
        .neg()?
        .mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use serde_json::Value;

    /// Values and gradients from torch in float64 (the formulations in the module documentation, on
    /// the inputs below), written by `ci/fixtures/ranking_loss_torch.py` (regenerate all fixtures
    /// with `ci/fixtures/regenerate.sh`).
    const TORCH: &str = include_str!("../tests/fixtures/ranking_loss_torch.json");

    const BCE_SCORES: [f64; 6] = [2.0, -1.0, 0.5, 0.0, -30.0, 25.0];
    const BCE_LABELS: [f64; 6] = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
    const POSITIVE: [f64; 4] = [1.6, -0.2, 0.3, 4.0];
    const NEGATIVE: [f64; 4] = [0.5, 0.1, 0.3, -2.0];
    const GROUPS: [[f64; 4]; 3] = [
        [3.0, 1.0, -1.0, 0.5],
        [0.0, 2.0, 2.0, -5.0],
        [-1.0, -1.0, -1.0, -1.0],
    ];

    fn reference(case: &str, key: &str) -> Vec<f64> {
        let all: Value = serde_json::from_str(TORCH).unwrap();
        match &all[case][key] {
            Value::Number(n) => vec![n.as_f64().unwrap()],
            Value::Array(items) => items
                .iter()
                .flat_map(|v| match v {
                    Value::Array(row) => row.iter().map(|x| x.as_f64().unwrap()).collect(),
                    x => vec![x.as_f64().unwrap()],
                })
                .collect(),
            other => panic!("{case}.{key}: {other}"),
        }
    }

    fn var(values: &[f64], shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::from_slice(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn assert_close(name: &str, got: &[f64], want: &[f64], tolerance: f64) {
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tolerance, "{name}[{i}]: {g} vs {w}");
        }
    }

    /// The loss and the gradient w.r.t. each input, for a loss of several inputs.
    fn loss_and_grads(
        inputs: &[Var],
        loss: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> (f64, Vec<Vec<f64>>) {
        let tensors: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let value = loss(&tensors).unwrap();
        let grads = value.backward().unwrap();
        let grads = inputs
            .iter()
            .map(|v| {
                grads
                    .get(v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
            .collect();
        (value.to_scalar::<f64>().unwrap(), grads)
    }

    /// Central finite differences of `loss` w.r.t. every element of every input.
    fn finite_difference(
        inputs: &[(Vec<f64>, Vec<usize>)],
        loss: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> Vec<Vec<f64>> {
        let h = 1e-6;
        let evaluate = |values: &[(Vec<f64>, Vec<usize>)]| {
            let tensors: Vec<Tensor> = values
                .iter()
                .map(|(v, s)| Tensor::from_slice(v, s.as_slice(), &Device::Cpu).unwrap())
                .collect();
            loss(&tensors).unwrap().to_scalar::<f64>().unwrap()
        };
        (0..inputs.len())
            .map(|which| {
                (0..inputs[which].0.len())
                    .map(|i| {
                        let mut plus = inputs.to_vec();
                        plus[which].0[i] += h;
                        let mut minus = inputs.to_vec();
                        minus[which].0[i] -= h;
                        (evaluate(&plus) - evaluate(&minus)) / (2.0 * h)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn pointwise_bce_matches_torch_and_finite_differences() {
        let labels = Tensor::new(&BCE_LABELS, &Device::Cpu).unwrap();
        let loss = |t: &[Tensor]| pointwise_bce(&t[0], &labels);
        let (value, grads) = loss_and_grads(&[var(&BCE_SCORES, &[6])], loss);
        assert_close("loss", &[value], &reference("pointwise_bce", "loss"), 1e-12);
        assert_close(
            "grad",
            &grads[0],
            &reference("pointwise_bce", "grad_scores"),
            1e-12,
        );
        let numeric = finite_difference(&[(BCE_SCORES.to_vec(), vec![6])], loss);
        assert_close("finite difference", &grads[0], &numeric[0], 1e-7);
    }

    #[test]
    fn pairwise_losses_match_torch_and_finite_differences() {
        let inputs = [var(&POSITIVE, &[4]), var(&NEGATIVE, &[4])];
        let plain = [(POSITIVE.to_vec(), vec![4]), (NEGATIVE.to_vec(), vec![4])];
        let margin = |t: &[Tensor]| pairwise_margin(&t[0], &t[1], 1.0);
        let logistic = |t: &[Tensor]| ranknet(&t[0], &t[1]);
        for (case, loss) in [
            (
                "pairwise_margin",
                &margin as &dyn Fn(&[Tensor]) -> Result<Tensor>,
            ),
            ("ranknet", &logistic),
        ] {
            let (value, grads) = loss_and_grads(&inputs, loss);
            assert_close(case, &[value], &reference(case, "loss"), 1e-12);
            assert_close(case, &grads[0], &reference(case, "grad_pos"), 1e-12);
            assert_close(case, &grads[1], &reference(case, "grad_neg"), 1e-12);
            // No input sits on the hinge's kink, so the hinge is differentiable there.
            let numeric = finite_difference(&plain, loss);
            assert_close(case, &grads[0], &numeric[0], 1e-7);
            assert_close(case, &grads[1], &numeric[1], 1e-7);
        }
    }

    #[test]
    fn listwise_softmax_matches_torch_and_finite_differences() {
        let flat: Vec<f64> = GROUPS.iter().flatten().copied().collect();
        let loss = |t: &[Tensor]| listwise_softmax(&t[0]);
        let (value, grads) = loss_and_grads(&[var(&flat, &[3, 4])], loss);
        assert_close(
            "loss",
            &[value],
            &reference("listwise_softmax", "loss"),
            1e-12,
        );
        assert_close(
            "grad",
            &grads[0],
            &reference("listwise_softmax", "grad_scores"),
            1e-12,
        );
        let numeric = finite_difference(&[(flat, vec![3, 4])], loss);
        assert_close("finite difference", &grads[0], &numeric[0], 1e-7);
    }

    #[test]
    fn stable_for_extreme_logits_in_f32() {
        let scores = Tensor::new(&[200f32, -200.0], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0f32, 1.0], &Device::Cpu).unwrap();
        let loss = pointwise_bce(&scores, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((loss - 200.0).abs() < 1e-3, "{loss}");
        let groups = Tensor::new(&[[500f32, -500.0]], &Device::Cpu).unwrap();
        let loss = listwise_softmax(&groups)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(loss.to_scalar::<f64>().unwrap().abs() < 1e-6);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let a = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(ranknet(&a, &b).is_err());
        assert!(pointwise_bce(&a, &b).is_err());
        let single = Tensor::zeros((2, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(listwise_softmax(&single).is_err());
    }
}
