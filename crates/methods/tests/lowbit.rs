//! Bi-AdaptFormer and Bi-LoRA: bit width, the straight-through estimator, packed bytes on disk
//! equal to the closed form, identity at init, training and bad configurations. (Bi-LoRA's merge
//! is checked with the other mergeable methods in `zoo.rs`.)

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::lowbit::quant;
use peftbench_methods::peft_format::NATIVE_WEIGHTS_FILE;
use peftbench_methods::shira::to_f64_vec;
use serde_json::json;

fn latent(rows: usize, cols: usize) -> Var {
    let mut init = SeededInit::new(8, &Device::Cpu).with_dtype(DType::F64);
    init.normal((rows, cols), 0.7).unwrap()
}

#[test]
fn weights_take_at_most_two_to_the_bits_values_per_row() {
    let w = latent(5, 13);
    for bits in quant::SUPPORTED_BITS {
        let q = quant::quantize_ste(w.as_tensor(), bits).unwrap();
        let (codes, step) = quant::quantize_codes(w.as_tensor(), bits).unwrap();
        assert!(to_f64_vec(&codes)
            .unwrap()
            .iter()
            .all(|&c| c >= 0.0 && c < f64::from(1u32 << bits) && c.fract() == 0.0));
        for (row, s) in q
            .to_vec2::<f64>()
            .unwrap()
            .iter()
            .zip(to_f64_vec(&step).unwrap())
        {
            let mut levels: Vec<f64> = row.iter().map(|v| (v / s * 2.0).round()).collect();
            levels.sort_by(f64::total_cmp);
            levels.dedup();
            assert!(
                levels.len() <= 1 << bits,
                "{bits} bits: {} distinct values",
                levels.len()
            );
            assert!(
                levels.iter().all(|l| l.abs() < f64::from(1u32 << bits)),
                "{bits} bits: level out of range"
            );
        }
        // Pack/unpack round trip.
        let bytes = quant::codes_to_bytes(&codes).unwrap();
        let packed = quant::pack(&bytes, bits);
        assert_eq!(packed.len(), quant::packed_len(bytes.len(), bits));
        assert_eq!(quant::unpack(&packed, bits, bytes.len()), bytes);
    }
}

/// `f(W) = Σ sin(x Wᵀ)`, a generic scalar of the weight.
fn f(x: &Tensor, w: &Tensor) -> Tensor {
    x.matmul(&w.t().unwrap())
        .unwrap()
        .sin()
        .unwrap()
        .sum_all()
        .unwrap()
}

#[test]
fn ste_gradient_equals_the_gradient_wrt_the_dequantised_weight() {
    let w = latent(4, 6);
    let x = latent(3, 6).as_tensor().detach();
    for bits in quant::SUPPORTED_BITS {
        let through = f(&x, &quant::quantize_ste(w.as_tensor(), bits).unwrap())
            .backward()
            .unwrap();
        let g_latent = to_f64_vec(through.get(&w).unwrap()).unwrap();
        let (codes, step) = quant::quantize_codes(w.as_tensor(), bits).unwrap();
        let q = Var::from_tensor(&quant::dequantize(&codes, &step, bits).unwrap()).unwrap();
        let g_q = to_f64_vec(f(&x, q.as_tensor()).backward().unwrap().get(&q).unwrap()).unwrap();
        for (a, b) in g_latent.iter().zip(&g_q) {
            assert!(
                (a - b).abs() < 1e-12,
                "{bits} bits: STE {a} vs dequantised {b}"
            );
        }
        // And that gradient is the finite difference of f at the dequantised weight.
        let qv = to_f64_vec(q.as_tensor()).unwrap();
        for i in [0, 7, 23] {
            let at = |d: f64| {
                let mut v = qv.clone();
                v[i] += d;
                f(&x, &Tensor::from_vec(v, (4, 6), &Device::Cpu).unwrap())
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (numeric - g_q[i]).abs() < 1e-7,
                "{bits} bits: {numeric} vs {}",
                g_q[i]
            );
        }
    }
}

#[test]
fn counts_identity_at_init_and_packed_bytes_equal_the_closed_form() {
    let head = D * CLASSES + CLASSES;
    for bits in [1u8, 2] {
        let h = 5;
        let m = model_in(
            "bi-adaptformer",
            json!({"bits": bits, "bottleneck": h, "dropout": 0.0}),
            DType::F32,
        );
        assert_eq!(m.trainable_count(), L * (2 * D * h + h + D) + head);
        let x = pixels(DType::F32);
        let got = m.features(&x, &ForwardCtx::eval()).unwrap();
        assert_eq!(
            max_abs(&(got - frozen_features(&x, DType::F32)).unwrap()),
            0.0,
            "{bits} bits"
        );
        perturb(&m, 0.3);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), "tiny").unwrap();
        let file = std::fs::read(dir.path().join(NATIVE_WEIGHTS_FILE)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let payload: usize = st.tensors().iter().map(|(_, t)| t.data().len()).sum();
        // Per block: two packed weights, one f32 step per output row (h + D), two f32 biases.
        let per_block = 2 * quant::packed_len(D * h, bits) + 4 * (h + D) + 4 * (h + D);
        assert_eq!(payload, L * per_block + 4 * head, "{bits} bits");
        let header = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        assert_eq!(file.len(), 8 + header + payload);
        // The file decodes to the weights the forward pass uses.
        let packed = st
            .tensor("vit.encoder.layer.0.adaptmlp.down.weight.packed")
            .unwrap();
        let step: Vec<f32> = st
            .tensor("vit.encoder.layer.0.adaptmlp.down.weight.step")
            .unwrap()
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let codes = quant::unpack(packed.data(), bits, h * D);
        let levels = f32::from(1u8 << bits);
        let decoded: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| (f32::from(c) - (levels - 1.0) / 2.0) * step[i / D])
            .collect();
        let latent = m
            .trainable()
            .iter()
            .find(|p| p.name == "vit.encoder.layer.0.adaptmlp.down.weight")
            .unwrap()
            .var
            .clone();
        let used: Vec<f32> = quant::quantize_ste(latent.as_tensor(), bits)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(decoded, used, "{bits} bits");
    }
}

#[test]
fn bias_gradient_equals_finite_differences() {
    let m = model(
        "bi-adaptformer",
        json!({"bits": 2, "bottleneck": 4, "dropout": 0.0}),
    );
    perturb(&m, 0.3);
    check_gradient(
        &m,
        "vit.encoder.layer.0.adaptmlp.down.bias",
        &pixels(DType::F64),
        &ForwardCtx::eval,
    );
}

#[test]
fn training_lowers_the_loss() {
    for bits in [1, 2] {
        let params = json!({"bits": bits, "bottleneck": 8, "scale": 1.0, "dropout": 0.0});
        let (before, after, _) = train_briefly("bi-adaptformer", params);
        assert!(
            after < 0.97 * before,
            "{bits} bits: loss {before} -> {after}"
        );
    }
}

#[test]
fn bad_configurations_name_method_field_and_range() {
    rejects(
        "bi-adaptformer",
        json!({"bits": 3}),
        &["bi-adaptformer", "bits 3", "allowed: 1, 2"],
    );
    rejects(
        "bi-adaptformer",
        json!({"bits": 0}),
        &["bi-adaptformer", "bits", "allowed: 1, 2"],
    );
    rejects(
        "bi-adaptformer",
        json!({"bottleneck": 0}),
        &["bi-adaptformer", "bottleneck"],
    );
}

#[test]
fn bi_lora_counts_identity_at_init_and_packed_bytes_equal_the_closed_form() {
    let head = D * CLASSES + CLASSES;
    for bits in [1u8, 2] {
        let r = 4;
        let m = model_in(
            "bi-lora",
            json!({"bits": bits, "r": r, "dropout": 0.0, "target_modules": ["query", "fc1"]}),
            DType::F32,
        );
        // Per block: query (D -> D) and fc1 (D -> F), each r (in + out).
        assert_eq!(m.trainable_count(), L * (r * (D + D) + r * (D + F)) + head);
        let x = pixels(DType::F32);
        let got = m.features(&x, &ForwardCtx::eval()).unwrap();
        assert_eq!(
            max_abs(&(got - frozen_features(&x, DType::F32)).unwrap()),
            0.0,
            "{bits} bits: not the frozen model at init"
        );
        perturb(&m, 0.3);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), "tiny").unwrap();
        let file = std::fs::read(dir.path().join(NATIVE_WEIGHTS_FILE)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let payload: usize = st.tensors().iter().map(|(_, t)| t.data().len()).sum();
        // Each factor: packed codes plus one f32 step per row (A: r rows, B: out rows).
        let factor = |rows: usize, cols: usize| quant::packed_len(rows * cols, bits) + 4 * rows;
        let per_block = factor(r, D) + factor(D, r) + factor(r, D) + factor(F, r);
        assert_eq!(payload, L * per_block + 4 * head, "{bits} bits");
        assert!(st
            .tensor("vit.encoder.layer.1.intermediate.dense.lora_B.weight.packed")
            .is_ok());
    }
}

#[test]
fn bi_lora_training_lowers_the_loss() {
    for bits in [1, 2] {
        let params = json!({"bits": bits, "r": 4, "dropout": 0.0});
        let (before, after, _) = train_briefly("bi-lora", params);
        assert!(
            after < 0.97 * before,
            "{bits} bits: loss {before} -> {after}"
        );
    }
}

#[test]
fn bi_lora_bad_configurations_name_method_field_and_range() {
    rejects(
        "bi-lora",
        json!({"bits": 4}),
        &["bi-lora", "bits 4", "allowed: 1, 2"],
    );
    rejects("bi-lora", json!({"r": 0}), &["bi-lora", "field `r` is 0"]);
    rejects(
        "bi-lora",
        json!({"dropout": 1.5}),
        &["bi-lora", "field `dropout`", "[0, 1)"],
    );
    rejects(
        "bi-lora",
        json!({"target_modules": ["proj"]}),
        &["field `target_modules`: unknown module `proj`"],
    );
}
