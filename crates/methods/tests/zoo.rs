//! The method zoo's promises on a tiny ViT: prefix tuning, IA3, SSF, Compacter(++), Hydra, the
//! convolutional adapter and DoRA. Trainable counts equal closed forms; the output at
//! initialisation equals the frozen model's where promised; merged weights reproduce the unmerged
//! output within 1e-5 in f32; gradients equal central finite differences in f64; saved adapters
//! load back to bit-identical logits; a short training run on a generated shape task lowers the
//! loss; impossible configurations are errors naming the method, field and allowed range.

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Backbone, LinearSite, NoHooks, Vit, VitConfig};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_methods::{find_method, PeftModel};
use peftbench_train::{cross_entropy, AdamW, AdamWConfig};
use serde_json::json;

const CLASSES: usize = 3;
// hidden 16, 2 blocks, 2 heads, MLP 32, 16x16 images in 8x8 patches: 5 tokens.
const D: usize = 16;
const F: usize = 32;
const L: usize = 2;

fn tiny_backbone(dtype: DType) -> Vit {
    let init = SeededInit::new(42, &Device::Cpu);
    let mut vit = Vit::random(VitConfig::new(D, L, 2, F, 16, 8), &init).unwrap();
    // Non-trivial norms and biases, so scale-shifts and merges are tested on generic weights.
    vit.visit_params(&mut |name, t| {
        let noise = init.fork(name).normal(t.shape(), 0.1)?.as_tensor().detach();
        *t = (t.clone() + noise)?;
        Ok(())
    })
    .unwrap();
    vit.cast(dtype).unwrap();
    vit
}

fn model(method: &str, params: &serde_json::Value, dtype: DType) -> PeftModel {
    let init = SeededInit::new(7, &Device::Cpu).with_dtype(dtype);
    PeftModel::new(
        method,
        params,
        Box::new(tiny_backbone(dtype)),
        CLASSES,
        &init,
    )
    .unwrap()
}

fn pixels(dtype: DType) -> Tensor {
    SeededInit::new(3, &Device::Cpu)
        .with_dtype(dtype)
        .normal((2, 3, 16, 16), 1.0)
        .unwrap()
        .as_tensor()
        .detach()
}

fn max_abs(t: Tensor) -> f64 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Moves every trainable parameter away from its initial value (zero-initialised factors would
/// zero their partners' gradients and make merges trivial).
fn perturb(m: &PeftModel, std: f32) {
    let init = SeededInit::new(99, &Device::Cpu).with_dtype(m.trainable().0[0].var.dtype());
    for p in m.trainable().iter() {
        let noise = init.fork(&p.name).normal(p.var.shape(), std).unwrap();
        p.var
            .set(&(p.var.as_tensor() + noise.as_tensor()).unwrap())
            .unwrap();
    }
}

/// The zoo on the tiny backbone, with the trainable scalars each adds (closed forms).
fn zoo() -> Vec<(&'static str, serde_json::Value, usize)> {
    let (d, f, l) = (D, F, L);
    vec![
        (
            // embedding p*d, then d->h and h->2Ld linear layers with biases
            "prefix-tuning",
            json!({"num_virtual_tokens": 2, "prefix_projection": true, "encoder_hidden_size": 4}),
            2 * d + (4 * d + 4) + (4 * 2 * l * d + 2 * l * d),
        ),
        (
            "prefix-tuning",
            json!({"num_virtual_tokens": 2, "prefix_projection": false}),
            2 * 2 * l * d,
        ),
        // key and value outputs (d each), fc2's input (f)
        ("ia3", json!({}), l * (d + d + f)),
        // scale+shift per output channel of all six projections and of the three norms per block
        // (two in blocks, one final)
        (
            "ssf",
            json!({}),
            l * 2 * (4 * d + f + d) + l * 2 * 2 * d + 2 * d,
        ),
        // n=2, k=4: shared rules n^3; per adapter down s[n,k/n,1] t[n,1,d/n] b[k],
        // up s[n,d/n,1] t[n,1,k/n] b[d]
        (
            "compacter",
            json!({"reduction_factor": 4, "phm_dim": 2, "phm_rank": 1}),
            8 + 2 * l * ((4 + 16 + 4) + (16 + 4 + 16)),
        ),
        (
            "compacter++",
            json!({"reduction_factor": 4, "phm_dim": 2, "phm_rank": 1}),
            8 + l * ((4 + 16 + 4) + (16 + 4 + 16)),
        ),
        // parallel r_p (in + out), sequential r_s (out + out)
        (
            "hydra",
            json!({"parallel_r": 2, "sequential_r": 3, "target_modules": ["attention_output", "fc1"]}),
            l * ((2 * (d + d) + 3 * (d + d)) + (2 * (d + f) + 3 * (f + f))),
        ),
        // down k*d+k, depthwise conv k*K+k, up d*k+d
        (
            "conv-adapter",
            json!({"bottleneck": 4, "kernel_size": 3}),
            l * ((4 * d + 4) + (4 * 3 + 4) + (d * 4 + d)),
        ),
        // LoRA r(in + out) plus one magnitude per output row
        (
            "dora",
            json!({"r": 2, "alpha": 4, "target_modules": ["query", "value", "fc2"]}),
            l * (2 * (d + d) * 2 + 2 * (f + d)) + l * 3 * d,
        ),
        // The same in the last block only
        (
            "dora",
            json!({"r": 2, "alpha": 4, "target_modules": ["query", "value", "fc2"], "layers_to_transform": l - 1}),
            (2 * (d + d) * 2 + 2 * (f + d)) + 3 * d,
        ),
        // Houlsby: two bottlenecks (d*k + k down, k*d + d up) in the last block only
        (
            "adapter",
            json!({"bottleneck": 4, "layers": [l - 1]}),
            2 * ((d * 4 + 4) + (4 * d + d)),
        ),
    ]
}

#[test]
fn trainable_counts_equal_closed_forms() {
    let head = D * CLASSES + CLASSES;
    for (name, params, count) in zoo() {
        let m = model(name, &params, DType::F32);
        assert_eq!(m.trainable_count(), count + head, "{name} {params}");
        assert_eq!(m.adaptation().added_params(), count, "{name}");
    }
}

#[test]
fn published_sizes_on_vit_b16() {
    // ViT-B/16: d 768, f 3072, 12 blocks. IA3 on k, v, fc2-input: 12 * (768 + 768 + 3072).
    let vit = Vit::random(
        VitConfig::vit_base_patch16_224(),
        &SeededInit::new(0, &Device::Cpu),
    )
    .unwrap();
    let m = PeftModel::new(
        "ia3",
        &json!({}),
        Box::new(vit),
        101,
        &SeededInit::new(0, &Device::Cpu),
    )
    .unwrap();
    assert_eq!(m.adaptation().added_params(), 55_296);
}

#[test]
fn output_at_initialisation_equals_the_frozen_model_where_promised() {
    let x = pixels(DType::F64);
    let frozen = tiny_backbone(DType::F64)
        .forward_features(&x, &NoHooks, &ForwardCtx::eval())
        .unwrap();
    let mut cases = zoo();
    cases.push(("ssf", json!({"init_std": 0.0}), 0));
    for (name, params, _) in cases {
        let m = model(name, &params, DType::F64);
        let diff = max_abs((m.features(&x, &ForwardCtx::eval()).unwrap() - &frozen).unwrap());
        let default_ssf = name == "ssf" && params.get("init_std").is_none();
        if name == "prefix-tuning" || default_ssf {
            // Prefixes are attended to from the start; SSF's paper init draws γ ~ N(1, 0.02).
            assert!(diff > 1e-6, "{name} {params} should change the output");
        } else {
            assert_eq!(diff, 0.0, "{name} {params} changes the output at init");
        }
    }
}

#[test]
fn merged_weights_give_the_unmerged_output_in_f32() {
    let x = pixels(DType::F32);
    let ctx = ForwardCtx::eval();
    let merge_cases = [
        (
            "ia3",
            json!({"target_modules": ["key", "value", "fc2", "fc1"], "feedforward_modules": ["fc2"]}),
        ),
        ("ssf", json!({})),
        (
            "hydra",
            json!({"target_modules": ["query", "attention_output", "fc1", "fc2"]}),
        ),
        (
            "dora",
            json!({"r": 2, "alpha": 4, "target_modules": "all-linear"}),
        ),
        ("lora", json!({"r": 2, "alpha": 4, "target_modules": "qkv"})),
        (
            "bi-lora",
            json!({"bits": 2, "r": 4, "dropout": 0.0, "target_modules": "all-linear"}),
        ),
    ];
    for (name, params) in merge_cases {
        let m = model(name, &params, DType::F32);
        perturb(&m, 0.2);
        let frozen = m.backbone().forward_features(&x, &NoHooks, &ctx).unwrap();
        let unmerged = m.features(&x, &ctx).unwrap();
        assert!(
            max_abs((&unmerged - &frozen).unwrap()) > 1e-3,
            "{name}: the update is not trivial"
        );
        let mut backbone = tiny_backbone(DType::F32);
        m.adaptation().merge_into(&mut backbone).unwrap();
        let merged = backbone.forward_features(&x, &NoHooks, &ctx).unwrap();
        let err = max_abs((merged - &unmerged).unwrap());
        eprintln!("{name}: max |merged - unmerged| = {err:.2e}");
        assert!(err < 1e-5, "{name}: merged differs from unmerged by {err}");
    }
    for (name, params) in [
        ("prefix-tuning", json!({})),
        ("compacter", json!({"reduction_factor": 4, "phm_dim": 2})),
        ("conv-adapter", json!({})),
    ] {
        let m = model(name, &params, DType::F32);
        let err = m
            .adaptation()
            .merge_into(&mut tiny_backbone(DType::F32))
            .expect_err("cannot merge");
        assert!(
            err.to_string().contains("cannot be merged"),
            "{name}: {err}"
        );
    }
}

/// A scalar that depends on every logit differently.
fn weighted_logits(m: &PeftModel, x: &Tensor) -> Tensor {
    let logits = m.logits(x, &ForwardCtx::eval()).unwrap();
    let w: Vec<f64> = (0..logits.elem_count())
        .map(|i| ((i as f64) * 0.71).sin() + 0.3)
        .collect();
    let w = Tensor::from_vec(w, logits.shape(), &Device::Cpu).unwrap();
    (logits * w).unwrap().sum_all().unwrap()
}

/// DoRA treats the weight norm as a constant in backpropagation (paper §4.3, as HF PEFT), so its
/// LoRA factors' gradients are deliberately not the derivative of the forward pass (they are
/// checked with the norm held, in `dora_factor_gradients_equal_finite_differences_with_the_norm_held`);
/// its magnitude vector's gradient is exact (the norm does not depend on it).
fn gradient_is_exact(method: &str, name: &str) -> bool {
    method != "dora" || name.ends_with("lora_magnitude_vector") || name.starts_with("classifier")
}

#[test]
fn gradients_equal_finite_differences() {
    let x = pixels(DType::F64);
    for (name, params, _) in zoo() {
        let m = model(name, &params, DType::F64);
        perturb(&m, 0.2);
        let grads = weighted_logits(&m, &x).backward().unwrap();
        for p in m.trainable().iter() {
            if !gradient_is_exact(name, &p.name) {
                continue;
            }
            let g: Vec<f64> = grads
                .get(&p.var)
                .unwrap_or_else(|| panic!("{name}: no gradient for {}", p.name))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let max = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            // A shift of the keys adds `q·β` to every score of a query, which softmax cancels.
            if p.name.ends_with("attention.attention.key.ssf_shift") {
                assert!(
                    max < 1e-12,
                    "{name}: {} should have a zero gradient",
                    p.name
                );
            } else {
                assert!(max > 1e-8, "{name}: zero gradient for {}", p.name);
            }
            let argmax = g.iter().position(|v| v.abs() == max).unwrap();
            let values: Vec<f64> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for i in [argmax, 0, values.len() / 2] {
                let h = 1e-5;
                let eval_at = |delta: f64| {
                    let mut v = values.clone();
                    v[i] += delta;
                    p.var
                        .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    weighted_logits(&m, &x).to_scalar::<f64>().unwrap()
                };
                let numeric = (eval_at(h) - eval_at(-h)) / (2.0 * h);
                eval_at(0.0);
                assert!(
                    (numeric - g[i]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                    "{name}: {}[{i}] autograd {} vs finite difference {numeric}",
                    p.name,
                    g[i]
                );
            }
        }
    }
}

/// DoRA's LoRA factors: their gradients equal central finite differences of the forward pass with
/// each row's weight norm `||W + s·BA||` held at its current value, the function whose gradient
/// DoRA (and HF PEFT) backpropagate. Holding the norm is done from outside: when a factor entry
/// moves, the magnitude vector is rescaled by the new norm over the old one, which leaves
/// `m / ||W + s·BA||` unchanged. Every factor of every adapted projection is checked, at its
/// largest gradient and two fixed entries.
#[test]
fn dora_factor_gradients_equal_finite_differences_with_the_norm_held() {
    use std::collections::HashMap;
    let x = pixels(DType::F64);
    let mut base_weights: HashMap<String, Tensor> = HashMap::new();
    let mut vit = tiny_backbone(DType::F64);
    vit.visit_params(&mut |name, t| {
        base_weights.insert(name.to_string(), t.clone());
        Ok(())
    })
    .unwrap();
    let row_norms = |w: &Tensor| w.sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
    let (mut checked, mut worst, mut norm_effect) = (0, 0.0f64, 0.0f64);
    for (name, params, _) in zoo().into_iter().filter(|(n, ..)| *n == "dora") {
        let scaling = 4.0 / 2.0; // alpha / r
        let m = model(name, &params, DType::F64);
        perturb(&m, 0.2);
        let grads = weighted_logits(&m, &x).backward().unwrap();
        let trainable = m.trainable();
        let var = |n: &str| {
            trainable
                .iter()
                .find(|p| p.name == n)
                .unwrap_or_else(|| panic!("no trainable {n}"))
                .var
                .clone()
        };
        for p in trainable.iter() {
            let Some(module) = p
                .name
                .strip_suffix(".lora_A.weight")
                .or_else(|| p.name.strip_suffix(".lora_B.weight"))
            else {
                continue;
            };
            let (a, b) = (
                var(&format!("{module}.lora_A.weight")),
                var(&format!("{module}.lora_B.weight")),
            );
            let magnitude = var(&format!("{module}.lora_magnitude_vector"));
            let w = &base_weights[&format!("{module}.weight")];
            let norm = || {
                let delta = b.as_tensor().matmul(a.as_tensor()).unwrap();
                row_norms(&(w + delta.affine(scaling, 0.0).unwrap()).unwrap())
            };
            let (n0, m0) = (norm(), magnitude.as_tensor().copy().unwrap());
            let g: Vec<f64> = grads
                .get(&p.var)
                .unwrap_or_else(|| panic!("no gradient for {}", p.name))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let max = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(max > 1e-8, "zero gradient for {}", p.name);
            let argmax = g.iter().position(|v| v.abs() == max).unwrap();
            let values: Vec<f64> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for i in [argmax, 0, values.len() / 2] {
                let h = 1e-5;
                let eval_at = |delta: f64, hold: bool| {
                    let mut v = values.clone();
                    v[i] += delta;
                    p.var
                        .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    // Keep m / ||W + s·BA|| where it was (or let the norm move, for comparison).
                    let held = if hold {
                        (&m0 * (norm() / &n0).unwrap()).unwrap()
                    } else {
                        m0.clone()
                    };
                    magnitude.set(&held.copy().unwrap()).unwrap();
                    weighted_logits(&m, &x).to_scalar::<f64>().unwrap()
                };
                let numeric = (eval_at(h, true) - eval_at(-h, true)) / (2.0 * h);
                let free = (eval_at(h, false) - eval_at(-h, false)) / (2.0 * h);
                eval_at(0.0, false);
                let err = (numeric - g[i]).abs() / (1.0 + numeric.abs());
                worst = worst.max(err);
                norm_effect = norm_effect.max((free - g[i]).abs() / (1.0 + free.abs()));
                assert!(
                    err <= 1e-6,
                    "{}[{i}] autograd {} vs finite difference with the norm held {numeric}",
                    p.name,
                    g[i]
                );
                checked += 1;
            }
        }
    }
    // Two DoRA configurations: 3 projections in 2 blocks, and in the last block only.
    assert_eq!(checked, (2 * 3 + 3) * 2 * 3, "factor entries checked");
    println!(
        "DoRA factors: max relative |autograd - finite difference, norm held| = {worst:e}; \
         with the norm free to move it would be {norm_effect:e}"
    );
    // The check can tell: letting the norm move changes the derivative well beyond the tolerance.
    assert!(norm_effect > 1e-4, "{norm_effect}");
}

#[test]
fn saved_adapters_load_back_to_identical_logits() {
    let x = pixels(DType::F32);
    let ctx = ForwardCtx::eval();
    let mut cases = zoo();
    cases.push(("lora", json!({"r": 2, "target_modules": ["fc2"]}), 0));
    for (name, params, _) in cases {
        let m = model(name, &params, DType::F32);
        perturb(&m, 0.2);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), "tiny").unwrap();
        let loaded =
            PeftModel::from_adapter(dir.path(), Box::new(tiny_backbone(DType::F32))).unwrap();
        let expected = m
            .logits(&x, &ctx)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = loaded
            .logits(&x, &ctx)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, expected, "{name} {params}: logits after save/load");
        let peft = dir.path().join("adapter_config.json").exists();
        let expect_peft = matches!(name, "lora" | "dora" | "ia3" | "prefix-tuning");
        assert_eq!(peft, expect_peft, "{name}: saved in HF PEFT format");
        if !params.get("prefix_projection").is_some_and(|v| v == true) {
            // Every saved tensor comes back bit for bit.
            let original = m.trainable().tensors();
            for (k, t) in loaded.trainable().tensors() {
                let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = original[&k]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert_eq!(a, b, "{name}: {k}");
            }
        }
    }
}

#[test]
fn peft_configs_name_the_method_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let m = model("dora", &json!({"r": 2}), DType::F32);
    m.save(dir.path(), "base").unwrap();
    let text = std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["use_dora"], true);
    let raw =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(
        raw["base_model.model.vit.layers.1.attention.v_proj.lora_magnitude_vector"].dims(),
        &[D]
    );

    let m = model("ia3", &json!({}), DType::F32);
    m.save(dir.path(), "base").unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["peft_type"], "IA3");
    // transformers 5's ViT names, where fc2 cannot be confused with the attention output.
    assert_eq!(config["target_modules"], json!(["fc2", "k_proj", "v_proj"]));
    assert_eq!(config["feedforward_modules"], json!(["fc2"]));

    let m = model(
        "prefix-tuning",
        &json!({"num_virtual_tokens": 3, "encoder_hidden_size": 5}),
        DType::F32,
    );
    m.save(dir.path(), "base").unwrap();
    let raw =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(
        raw["base_model.model.prompt_embeddings"].dims(),
        &[3, 2 * L * D]
    );
}

/// `n` examples of a small structured task in the spirit of the demo's `position` task: a bright
/// 4x4 square on a noisy background, labelled by the column third it sits in.
fn position_task(n: usize) -> (Tensor, Tensor) {
    let init = SeededInit::new(11, &Device::Cpu);
    let noise: Vec<f32> = init
        .fork("noise")
        .uniform(n * 3 * 16 * 16, 0.0, 0.3)
        .unwrap()
        .as_tensor()
        .to_vec1()
        .unwrap();
    let mut values = noise;
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % CLASSES;
        let (x0, y0) = (1 + label * 5, (i * 7) % 12);
        for c in 0..3 {
            for y in y0..y0 + 4 {
                for x in x0..x0 + 4 {
                    values[((i * 3 + c) * 16 + y) * 16 + x] = 1.0;
                }
            }
        }
        labels.push(label as u32);
    }
    (
        Tensor::from_vec(values, (n, 3, 16, 16), &Device::Cpu).unwrap(),
        Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
    )
}

#[test]
fn a_short_training_run_lowers_the_loss() {
    let (x, y) = position_task(48);
    for (name, params, _) in zoo() {
        let m = model(name, &params, DType::F32);
        let mut opt = AdamW::new(
            m.trainable(),
            AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        )
        .unwrap();
        let loss = |m: &PeftModel| {
            cross_entropy(&m.logits(&x, &ForwardCtx::eval()).unwrap(), &y, 0.0).unwrap()
        };
        let first = loss(&m).to_scalar::<f32>().unwrap();
        let own_before = values(&method_params(&m));
        for _ in 0..15 {
            let grads = loss(&m).backward().unwrap();
            opt.step(&grads, 1e-2).unwrap();
        }
        let last = loss(&m).to_scalar::<f32>().unwrap();
        assert!(
            last < 0.9 * first,
            "{name} {params}: loss {first} -> {last}"
        );
        // A falling loss alone could be the head's doing: the method's own parameters moved, and
        // with the head frozen the method alone lowers the loss (the linear probe has none).
        if own_before.is_empty() {
            continue;
        }
        assert_ne!(
            own_before,
            values(&method_params(&m)),
            "{name} {params}: the method's own parameters did not change"
        );
        let m = model(name, &params, DType::F32);
        let own = method_params(&m);
        let mut opt = AdamW::new(
            &own,
            AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        )
        .unwrap();
        let first = loss(&m).to_scalar::<f32>().unwrap();
        for _ in 0..15 {
            let grads = loss(&m).backward().unwrap();
            opt.step(&grads, 1e-2).unwrap();
        }
        let last = loss(&m).to_scalar::<f32>().unwrap();
        assert!(
            last < first,
            "{name} {params}: with the head frozen the loss went {first} -> {last}"
        );
    }
}

/// The trainable parameters that are not the classification head's.
fn method_params(m: &PeftModel) -> NamedVars {
    let head: Vec<&str> = m.head().params().iter().map(|p| p.name.as_str()).collect();
    NamedVars(
        m.trainable()
            .iter()
            .filter(|p| !head.contains(&p.name.as_str()))
            .cloned()
            .collect(),
    )
}

/// Every value of `vars`, in order.
fn values(vars: &NamedVars) -> Vec<f32> {
    vars.iter()
        .flat_map(|p| {
            p.var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn impossible_configurations_name_method_field_and_range() {
    let cases = [
        ("dora", json!({"r": 0}), "field `r` is 0; allowed range"),
        (
            "lora",
            json!({"target_modules": ["q_proj"]}),
            "unknown module `q_proj`; allowed: query",
        ),
        (
            "lora",
            json!({"target_modules": "everything"}),
            "a preset (qv, qkv, all-linear)",
        ),
        (
            "hydra",
            json!({"sequential_r": 0}),
            "`hydra`: field `sequential_r` is 0",
        ),
        (
            "conv-adapter",
            json!({"kernel_size": 4}),
            "field `kernel_size` is 4; allowed: odd",
        ),
        (
            "compacter",
            json!({"phm_dim": 0}),
            "`compacter`: field `phm_dim` is 0",
        ),
        (
            "prefix-tuning",
            json!({"num_virtual_tokens": 0}),
            "field `num_virtual_tokens` is 0",
        ),
        (
            "ia3",
            json!({"feedforward_modules": ["fc1"]}),
            "field `feedforward_modules` lists `fc1`",
        ),
        (
            "ssf",
            json!({"init_std": -1.0}),
            "field `init_std` is -1; allowed range [0, 1]",
        ),
        ("ia3", json!({"rank": 2}), "unknown field `rank`"),
        ("adapter", json!({"layers": []}), "field `layers` is empty"),
        (
            "adapter",
            json!({"layers": -1}),
            "field `layers` is -1; allowed: a block index (0 = the first block) or a list of them",
        ),
        (
            "dora",
            json!({"layers_to_transform": ["two"]}),
            "field `layers_to_transform` is [\"two\"]; allowed: a block index",
        ),
        (
            "ia3",
            json!({"feedforward_modules": ["mlp"]}),
            "field `feedforward_modules`: unknown module `mlp`",
        ),
        (
            "hydra",
            json!({"target_modules": ["q"]}),
            "field `target_modules`: unknown module `q`",
        ),
    ];
    for (name, params, expected) in cases {
        let err = find_method(name).unwrap().validate(&params).unwrap_err();
        assert!(err.contains(expected), "{name} {params}: {err}");
        assert!(err.contains(&format!("method `{name}`")), "{err}");
    }
    // Widths come from the backbone's configuration: `check_backbone` rejects a rank above the
    // layer width from the sizes alone (what `--dry-run` and the sweep's preflight call), and
    // building the model applies the same check.
    let init = SeededInit::new(0, &Device::Cpu);
    let info = tiny_backbone(DType::F32).info().clone();
    for (name, params, expected) in [
        (
            "lora",
            json!({"r": 17}),
            "field `r` is 17 but `query` is 16 -> 16; allowed range: 1 to 16",
        ),
        (
            "hydra",
            json!({"parallel_r": 40, "target_modules": ["fc1"]}),
            "field `parallel_r` is 40",
        ),
        (
            "compacter",
            json!({"reduction_factor": 3}),
            "field `reduction_factor` is 3",
        ),
        (
            "compacter++",
            json!({"reduction_factor": 4, "phm_dim": 3}),
            "field `phm_dim` is 3",
        ),
        (
            "dora",
            json!({"r": 20, "target_modules": ["fc2"]}),
            "field `r` is 20 but `fc2` is 32 -> 16; allowed range: 1 to 16",
        ),
        (
            "corda",
            json!({"r": 17}),
            "field `r` is 17 but `query` is 16 -> 16",
        ),
        (
            "bi-lora",
            json!({"r": 17}),
            "field `r` is 17 but `query` is 16 -> 16",
        ),
        (
            "conv-adapter",
            json!({"bottleneck": 17}),
            "field `bottleneck` is 17; allowed range: 1 to the hidden size 16",
        ),
        (
            "lora",
            json!({"layers_to_transform": [0, 2]}),
            "field `layers_to_transform` names block 2, but the backbone has 2 blocks; allowed range: 0 to 1",
        ),
        (
            "adapter",
            json!({"layers": 5}),
            "field `layers` names block 5, but the backbone has 2 blocks; allowed range: 0 to 1",
        ),
    ] {
        let method = find_method(name).unwrap();
        method.validate(&params).unwrap();
        let err = method.check_backbone(&params, &info).unwrap_err();
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains(&format!("method `{name}`")), "{err}");
        let err = PeftModel::new(name, &params, Box::new(tiny_backbone(DType::F32)), 2, &init)
            .err()
            .unwrap_or_else(|| panic!("{name} {params} should fail"));
        assert!(err.to_string().contains(expected), "{name}: {err}");
    }
}

#[test]
fn lora_presets_select_the_projections_a_grid_sweeps() {
    for (preset, sites) in [
        ("qv", vec![LinearSite::Query, LinearSite::Value]),
        (
            "qkv",
            vec![LinearSite::Query, LinearSite::Key, LinearSite::Value],
        ),
        ("all-linear", LinearSite::ALL.to_vec()),
    ] {
        let c: peftbench_methods::lora::LoraConfig =
            serde_json::from_value(json!({"target_modules": preset})).unwrap();
        assert_eq!(c.target_modules, sites, "{preset}");
    }
}
