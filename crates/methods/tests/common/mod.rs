//! Shared fixtures of the method tests: a tiny ViT, inputs, a scalar loss, a learnable toy task,
//! a finite-difference check and a short training run through calibration and phases (what the
//! runner does).
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Backbone, Vit, VitConfig};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_methods::PeftModel;
use peftbench_train::{
    cross_entropy, train, AdamWConfig, BatchSource, InMemoryBatches, Selection, TrainConfig,
    TrainModel, TrainOutcome,
};

pub const CLASSES: usize = 3;
/// hidden 16, 2 blocks, MLP 32.
pub const D: usize = 16;
pub const F: usize = 32;
pub const L: usize = 2;

pub fn tiny_backbone(dtype: DType) -> Vit {
    let init = SeededInit::new(42, &Device::Cpu);
    let mut vit = Vit::random(VitConfig::new(D, L, 2, F, 16, 8), &init).unwrap();
    vit.visit_params(&mut |name, t| {
        let noise = init.fork(name).normal(t.shape(), 0.1)?.as_tensor().detach();
        *t = (t.clone() + noise)?;
        Ok(())
    })
    .unwrap();
    vit.cast(dtype).unwrap();
    vit
}

pub fn model_in(method: &str, params: serde_json::Value, dtype: DType) -> PeftModel {
    let init = SeededInit::new(7, &Device::Cpu).with_dtype(dtype);
    PeftModel::new(
        method,
        &params,
        Box::new(tiny_backbone(dtype)),
        CLASSES,
        &init,
    )
    .unwrap()
}

pub fn model(method: &str, params: serde_json::Value) -> PeftModel {
    model_in(method, params, DType::F64)
}

pub fn pixels(dtype: DType) -> Tensor {
    SeededInit::new(3, &Device::Cpu)
        .with_dtype(dtype)
        .normal((2, 3, 16, 16), 1.0)
        .unwrap()
        .as_tensor()
        .detach()
}

/// A scalar that depends on every logit differently.
pub fn loss_with(m: &PeftModel, x: &Tensor, ctx: &ForwardCtx) -> Tensor {
    let logits = m.logits(x, ctx).unwrap();
    let w: Vec<f64> = (0..logits.elem_count())
        .map(|i| ((i as f64) * 0.71).sin() + 0.3)
        .collect();
    let w = Tensor::from_vec(w, logits.shape(), &Device::Cpu)
        .unwrap()
        .to_dtype(logits.dtype())
        .unwrap();
    (logits * w).unwrap().sum_all().unwrap()
}

pub fn loss(m: &PeftModel, x: &Tensor) -> Tensor {
    loss_with(m, x, &ForwardCtx::eval())
}

pub fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Moves every trainable parameter away from its initial value.
pub fn perturb(m: &PeftModel, std: f32) {
    let init = SeededInit::new(99, &Device::Cpu).with_dtype(DType::F64);
    for p in m.trainable().iter().filter(|p| p.var.elem_count() > 0) {
        let noise = init.fork(&p.name).normal(p.var.shape(), std).unwrap();
        let noise = noise.as_tensor().to_dtype(p.var.dtype()).unwrap();
        p.var.set(&(p.var.as_tensor() + noise).unwrap()).unwrap();
    }
}

/// Checks the autograd gradient of the trainable parameter `name` against central differences
/// (f64) at its largest entry and two fixed ones, with the loss under `ctx_of()`.
pub fn check_gradient(m: &PeftModel, name: &str, x: &Tensor, ctx_of: &dyn Fn() -> ForwardCtx) {
    let p = m
        .trainable()
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no trainable `{name}`"))
        .clone();
    let grads = loss_with(m, x, &ctx_of()).backward().unwrap();
    let g: Vec<f64> = grads
        .get(&p.var)
        .unwrap_or_else(|| panic!("no gradient for {name}"))
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let max = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(max > 1e-8, "zero gradient for {name}");
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
            loss_with(m, x, &ctx_of()).to_scalar::<f64>().unwrap()
        };
        let numeric = (eval_at(h) - eval_at(-h)) / (2.0 * h);
        eval_at(0.0);
        assert!(
            (numeric - g[i]).abs() <= 1e-6 * (1.0 + numeric.abs()),
            "{name}[{i}]: autograd {} vs finite difference {numeric}",
            g[i]
        );
    }
}

/// 96 images whose class is the quadrant holding a bright square (learnable in a few epochs).
pub fn toy_task(dtype: DType) -> InMemoryBatches {
    let n = 96;
    let mut init = SeededInit::new(11, &Device::Cpu);
    let noise: Vec<f32> = init
        .normal((n, 3, 16, 16), 0.3)
        .unwrap()
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut pixels = noise;
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % CLASSES;
        labels.push(class as u32);
        let (y0, x0) = [(0, 0), (0, 8), (8, 0)][class];
        for c in 0..3 {
            for y in y0..y0 + 8 {
                for x in x0..x0 + 8 {
                    pixels[((i * 3 + c) * 16 + y) * 16 + x] += 1.5;
                }
            }
        }
    }
    let inputs = Tensor::from_vec(pixels, (n, 3, 16, 16), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let labels = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
    InMemoryBatches::new(inputs, labels).unwrap()
}

/// Mean cross-entropy over the whole task in evaluation mode.
pub fn task_loss(m: &PeftModel, task: &InMemoryBatches) -> f64 {
    let logits = m.logits(task.inputs(), &ForwardCtx::eval()).unwrap();
    cross_entropy(&logits, task.labels(), 0.0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

pub fn calibrate(m: &mut PeftModel, task: &InMemoryBatches) {
    let mut batches = task
        .batches(16, Some(1))
        .map(|batch| batch.map(|b| (b.inputs, b.labels)));
    m.calibrate(&mut batches, &|logits, labels| {
        cross_entropy(logits, labels, 0.0)
    })
    .unwrap();
}

/// The model as the trainer sees it with its classification head frozen: only the method's own
/// parameters train, so a falling loss is the method's doing.
struct HeadFrozen<'a> {
    model: &'a PeftModel,
    method_params: NamedVars,
}

impl<'a> HeadFrozen<'a> {
    fn new(model: &'a PeftModel) -> Self {
        let head: Vec<&str> = model
            .head()
            .params()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let method_params = NamedVars(
            model
                .trainable()
                .iter()
                .filter(|p| !head.contains(&p.name.as_str()))
                .cloned()
                .collect(),
        );
        Self {
            model,
            method_params,
        }
    }
}

impl TrainModel for HeadFrozen<'_> {
    fn trainable(&self) -> &NamedVars {
        &self.method_params
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.model.logits(input, ctx)
    }
}

/// Every value of `vars`, in order.
fn values(vars: &NamedVars) -> Vec<f32> {
    vars.iter()
        .flat_map(|p| {
            p.var
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

/// Calibrates, trains every phase for a few epochs on the toy task (f32) and returns the task
/// loss before and after. Also checks what a falling loss alone would not show: the method's own
/// parameters moved (not only the head's), and with the head frozen the method alone lowers the
/// loss.
pub fn train_briefly(method: &str, params: serde_json::Value) -> (f64, f64, PeftModel) {
    let (before, after, m) = train_phases_briefly(method, params.clone(), false);
    let (frozen_before, frozen_after, _) = train_phases_briefly(method, params, true);
    assert!(
        frozen_after < frozen_before,
        "{method}: with the head frozen the loss went {frozen_before} -> {frozen_after}"
    );
    (before, after, m)
}

fn train_phases_briefly(
    method: &str,
    params: serde_json::Value,
    head_frozen: bool,
) -> (f64, f64, PeftModel) {
    let task = toy_task(DType::F32);
    let mut m = model_in(method, params, DType::F32);
    calibrate(&mut m, &task);
    let before = task_loss(&m, &task);
    let phases = m.phases().len().max(1);
    for phase in 0..phases {
        if !m.phases().is_empty() {
            m.enter_phase(phase).unwrap();
        }
        let own_before = values(&HeadFrozen::new(&m).method_params);
        let cfg = TrainConfig {
            epochs: 8,
            batch_size: 16,
            eval_batch_size: 96,
            lr: 1e-2,
            min_lr: 1e-4,
            warmup_epochs: 0,
            warmup_lr: 1e-2,
            adamw: AdamWConfig::default(),
            label_smoothing: 0.0,
            grad_clip: None,
            drop_path: 0.0,
            seed: phase as u64,
            selection: Selection::Final,
        };
        let outcome = if head_frozen {
            train(&HeadFrozen::new(&m), &task, None, &cfg, &mut |_| {})
        } else {
            train(&m, &task, None, &cfg, &mut |_| {})
        }
        .unwrap();
        assert!(
            matches!(outcome, TrainOutcome::Completed(_)),
            "{method} diverged"
        );
        let own_after = values(&HeadFrozen::new(&m).method_params);
        assert!(
            !own_before.is_empty() && own_before != own_after,
            "{method} phase {phase}: the method's own parameters did not change"
        );
    }
    let after = task_loss(&m, &task);
    (before, after, m)
}

/// The features of the frozen backbone.
pub fn frozen_features(x: &Tensor, dtype: DType) -> Tensor {
    tiny_backbone(dtype)
        .forward_features(x, &peftbench_backbones::NoHooks, &ForwardCtx::eval())
        .unwrap()
}

/// `method` rejects `params` with a message naming every `needle`.
pub fn rejects(method: &str, params: serde_json::Value, needles: &[&str]) {
    let m = peftbench_methods::find_method(method).unwrap();
    let err = m
        .validate(&params)
        .expect_err(&format!("{method} accepted {params}"));
    for needle in needles {
        assert!(
            err.contains(needle),
            "{method}: `{err}` does not mention `{needle}`"
        );
    }
}
