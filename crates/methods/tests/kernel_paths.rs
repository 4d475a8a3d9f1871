//! The same seed gives the same bits on every kernel path: a few training steps of full
//! fine-tuning, LoRA and adapters on a small ViT, once per instruction set this CPU runs (portable,
//! AVX2, AVX-512), leave identical losses and parameters. Products run through `gemm`'s
//! fixed-order chains and the elementwise kernels through the same scalar arithmetic on each path,
//! so this is what makes a committed report reproducible on another x86-64 machine.
//!
//! One test in its own binary: it switches the process-wide path, and holds the products to the
//! fixed order (the default, which `PEFTBENCH_GEMM=upstream` would replace by blocking that follows
//! the machine).

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Vit, VitConfig};
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::PeftModel;
use peftbench_train::{cross_entropy, AdamW, AdamWConfig};
use serde_json::json;

const CLASSES: usize = 5;

/// Hidden 48, 3 heads, 32x32 images in 4x4 patches (65 tokens): with a batch of 8 the weight
/// gradients sum over 520 rows, more than one depth block of the GEMM.
fn backbone() -> Vit {
    Vit::random(
        VitConfig::new(48, 2, 3, 96, 32, 4),
        &SeededInit::new(11, &Device::Cpu),
    )
    .unwrap()
}

/// Losses and every trainable parameter after four AdamW steps, as bits.
fn train(method: &str, params: serde_json::Value) -> (Vec<u32>, Vec<u32>) {
    let init = SeededInit::new(5, &Device::Cpu).with_dtype(DType::F32);
    let model = PeftModel::new(method, &params, Box::new(backbone()), CLASSES, &init).unwrap();
    let x = SeededInit::new(3, &Device::Cpu)
        .normal((8, 3, 32, 32), 1.0)
        .unwrap()
        .as_tensor()
        .detach();
    let y = Tensor::from_vec(
        (0..8u32).map(|i| i % CLASSES as u32).collect(),
        8,
        &Device::Cpu,
    )
    .unwrap();
    let mut opt = AdamW::new(model.trainable(), AdamWConfig::default()).unwrap();
    let mut losses = Vec::new();
    for step in 0..4 {
        let logits = model.logits(&x, &ForwardCtx::train(step, 0.1)).unwrap();
        let loss = cross_entropy(&logits, &y, 0.1).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap().to_bits());
        opt.step(&loss.backward().unwrap(), 1e-2).unwrap();
    }
    let mut params = Vec::new();
    for p in model.trainable().iter() {
        let values = p
            .var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        params.extend(values.into_iter().map(f32::to_bits));
    }
    (losses, params)
}

#[test]
fn every_kernel_path_trains_to_the_same_bits() {
    gemm::isa::force_order(Some(gemm::Order::Fixed));
    let paths = gemm::isa::available();
    for isa in gemm::Isa::ALL {
        if !isa.is_available() {
            eprintln!(
                "SKIPPED: this CPU cannot run the {} kernels; the paths it has are compared",
                isa.name()
            );
        }
    }
    if paths.len() < 2 {
        eprintln!("SKIPPED: this CPU runs only the portable kernels; there is nothing to compare");
        return;
    }
    let methods = [
        ("full", json!({})),
        ("lora", json!({"r": 4, "alpha": 8})),
        ("adapter", json!({"bottleneck": 8})),
    ];
    for (method, params) in methods {
        let mut reference: Option<(gemm::Isa, (Vec<u32>, Vec<u32>))> = None;
        for &isa in &paths {
            gemm::isa::force(Some(isa)).unwrap();
            assert_eq!(gemm::isa::selected(), isa);
            let result = train(method, params.clone());
            match &reference {
                None => reference = Some((isa, result)),
                Some((first, expected)) => {
                    assert_eq!(
                        result.0,
                        expected.0,
                        "{method}: losses on {} differ from {}",
                        isa.name(),
                        first.name()
                    );
                    assert!(
                        result.1 == expected.1,
                        "{method}: parameters on {} differ from {}",
                        isa.name(),
                        first.name()
                    );
                }
            }
        }
    }
    gemm::isa::force(None).unwrap();
}
