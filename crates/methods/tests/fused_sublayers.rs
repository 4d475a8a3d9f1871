//! A method that says it adapts nothing inside a block's residual branches
//! (`Hooks::adapts_inside`) gets those branches as fused nodes, which call none of the method's
//! hooks, and where it also leaves a branch's output alone (`Hooks::adapts_output`) the node adds
//! the branch to the stream itself. This holds every registered method that attaches to a ViT to
//! the composed path bit for bit (logits, loss and every trainable gradient of a training step),
//! so a wrong promise fails here instead of changing results; and shows that a false promise is
//! caught.
//!
//! One test binary of its own: it switches the fused branches off for the whole process.

use candle_core::{DType, Device, Result, Tensor};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite, Sublayer, Vit, VitConfig};
use peftbench_core::{kernels, ForwardCtx, SeededInit};
use peftbench_methods::{registry, PeftModel};
use peftbench_train::cross_entropy;
use serde_json::json;

const CLASSES: usize = 4;

/// Hidden 24, 3 heads, MLP 48, 16x16 images in 4x4 patches: 17 tokens.
fn backbone() -> Vit {
    Vit::random(
        VitConfig::new(24, 2, 3, 48, 16, 4),
        &SeededInit::new(21, &Device::Cpu),
    )
    .unwrap()
}

fn pixels() -> Tensor {
    SeededInit::new(3, &Device::Cpu)
        .normal((3, 3, 16, 16), 1.0)
        .unwrap()
        .as_tensor()
        .detach()
}

fn bits(t: &Tensor) -> Vec<u32> {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.into_iter().map(f32::to_bits).collect()
}

/// Logits, then each trainable parameter's gradient (`None` where it gets none, as CorDA's before
/// calibration), as bits, after moving every trainable parameter off its initial value (LoRA's B
/// and adapters' up projections start at zero).
fn step(model: &PeftModel) -> Vec<(String, Option<Vec<u32>>)> {
    let init = SeededInit::new(99, &Device::Cpu);
    for p in model.trainable().iter() {
        let noise = init.fork(&p.name).normal(p.var.shape(), 0.2).unwrap();
        p.var
            .set(&(p.var.as_tensor() + noise.as_tensor()).unwrap())
            .unwrap();
    }
    let logits = model.logits(&pixels(), &ForwardCtx::train(1, 0.0)).unwrap();
    let y = Tensor::new(&[0u32, 1, 3], &Device::Cpu).unwrap();
    let loss = cross_entropy(&logits, &y, 0.1).unwrap();
    let grads = loss.backward().unwrap();
    let mut out = vec![("logits".to_string(), Some(bits(&logits)))];
    for p in model.trainable().iter() {
        out.push((p.name.clone(), grads.get(&p.var).map(bits)));
    }
    out
}

type Bits = Vec<(String, Option<Vec<u32>>)>;

fn run(method: &str, params: &serde_json::Value, fused: bool) -> Option<Bits> {
    kernels::set_fused_sublayers(fused);
    let init = SeededInit::new(5, &Device::Cpu).with_dtype(DType::F32);
    let model = match PeftModel::new(method, params, Box::new(backbone()), CLASSES, &init) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{method} {params}: {e}");
            return None;
        }
    };
    Some(step(&model))
}

/// The query projection's output doubled (a change inside the attention branch), or the attention
/// branch's output doubled (a change to its output), with what the hooks claim of each.
struct Doubling {
    query: bool,
    output: bool,
    claims_inside: bool,
    claims_output: bool,
}

impl Hooks for Doubling {
    fn linear(
        &self,
        _layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let y = base.forward(x)?;
        if self.query && site == LinearSite::Query {
            y * 2.0
        } else {
            Ok(y)
        }
    }

    fn sublayer(
        &self,
        _layer: usize,
        kind: Sublayer,
        _input: &Tensor,
        output: Tensor,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        if self.output && kind == Sublayer::Attention {
            output * 2.0
        } else {
            Ok(output)
        }
    }

    fn adapts_inside(&self, _layer: usize, _kind: Sublayer) -> bool {
        self.claims_inside
    }

    fn adapts_output(&self, _layer: usize, _kind: Sublayer) -> bool {
        self.claims_output
    }
}

/// One test, since the switch is process-wide: the two checks must not interleave.
#[test]
fn fused_branches_keep_every_methods_numbers_and_a_false_promise_is_caught() {
    every_method_gives_the_composed_path_bits_with_fused_branches();
    a_false_promise_changes_the_output();
}

fn every_method_gives_the_composed_path_bits_with_fused_branches() {
    // Defaults sized for ViT-Base where this tiny ViT needs smaller ones.
    let settings = |method: &str| match method {
        "bi-lora" => json!({"r": 4}),
        "compacter" | "compacter++" => json!({"reduction_factor": 6}),
        _ => json!({}),
    };
    let mut configs: Vec<(String, serde_json::Value)> = registry()
        .iter()
        .map(|m| (m.info().name.to_string(), settings(m.info().name)))
        .collect();
    configs.extend([
        (
            "lora".to_string(),
            json!({"r": 2, "target_modules": ["query", "fc2"], "layers_to_transform": [1]}),
        ),
        (
            "adapter".to_string(),
            json!({"placement": "pfeiffer", "bottleneck": 3}),
        ),
    ]);
    let (mut checked, mut not_on_vit) = (Vec::new(), Vec::new());
    for (method, params) in &configs {
        let Some(fused) = run(method, params, true) else {
            not_on_vit.push(method.as_str());
            continue;
        };
        let composed = run(method, params, false).expect("built once already");
        assert_eq!(fused.len(), composed.len(), "{method} {params}");
        for ((name, f), (_, c)) in fused.iter().zip(&composed) {
            assert!(
                f == c,
                "{method} {params}: {name} differs with fused branches"
            );
        }
        checked.push(method.as_str());
    }
    kernels::set_fused_sublayers(true);
    eprintln!("checked: {checked:?}; not built on a ViT: {not_on_vit:?}");
    // Only methods for other kinds of backbone are left out.
    for method in not_on_vit {
        assert!(
            method.starts_with("music-") || method == "zero-shot",
            "{method} did not build on the ViT: give it settings that fit"
        );
    }
}

fn a_false_promise_changes_the_output() {
    let vit = backbone();
    let x = pixels();
    let ctx = ForwardCtx::eval();
    kernels::set_fused_sublayers(true);
    let plain = bits(
        &vit.forward_features(&x, &peftbench_backbones::NoHooks, &ctx)
            .unwrap(),
    );
    for (query, output) in [(true, false), (false, true)] {
        let forward = |claims_inside, claims_output| {
            let hooks = Doubling {
                query,
                output,
                claims_inside,
                claims_output,
            };
            bits(&vit.forward_features(&x, &hooks, &ctx).unwrap())
        };
        let honest = forward(true, true);
        assert_ne!(honest, plain, "the hook changes the model");
        // Claiming nothing inside and nothing at the output skips either hook.
        assert_eq!(
            forward(false, false),
            plain,
            "a false promise skips the hook"
        );
        // Claiming only what the hook does keeps it.
        assert_eq!(
            forward(query, output),
            honest,
            "a true promise keeps the hook"
        );
    }
}
