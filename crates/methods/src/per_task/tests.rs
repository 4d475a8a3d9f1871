//! Per-task routing on a tiny f64 ViT: equal to independent single-task models, order-free,
//! gradients only to present tasks, task ids carried from a shuffled batch source, round trips.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Backbone, Vit, VitConfig};
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_train::{Batch, BatchSource, TrainModel};
use serde_json::json;

use super::*;
use crate::PeftModel;

pub(crate) fn tiny_backbone() -> Vit {
    // hidden 16, 2 blocks, 2 heads, MLP 32, 16x16 images in 8x8 patches: 5 tokens.
    let init = SeededInit::new(42, &Device::Cpu);
    let mut vit = Vit::random(VitConfig::new(16, 2, 2, 32, 16, 8), &init).unwrap();
    vit.cast(DType::F64).unwrap();
    vit
}

pub(crate) fn pixels(n: usize, seed: u64) -> Tensor {
    SeededInit::new(seed, &Device::Cpu)
        .with_dtype(DType::F64)
        .normal((n, 3, 16, 16), 1.0)
        .unwrap()
        .as_tensor()
        .detach()
}

fn f64_init(seed: u64) -> SeededInit {
    SeededInit::new(seed, &Device::Cpu).with_dtype(DType::F64)
}

pub(crate) fn ids(tasks: &[u32]) -> Tensor {
    Tensor::new(tasks, &Device::Cpu).unwrap()
}

/// Moves a parameter away from its (often zero) initial value, by name, so that per-task copies
/// and single-task models given the same name get the same values.
fn perturb(name: &str, var: &candle_core::Var) {
    let noise = f64_init(99).fork(name).normal(var.shape(), 0.2).unwrap();
    var.set(&(var.as_tensor() + noise.as_tensor()).unwrap())
        .unwrap();
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Inner methods covering every hook: projections (LoRA), sublayers (adapter), tokens (VPT),
/// attention prefixes (prefix tuning) and norms (SSF).
fn inner_methods() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "lora",
            json!({"r": 2, "alpha": 4, "target_modules": ["query", "value", "fc2"]}),
        ),
        ("adapter", json!({"bottleneck": 3})),
        ("vpt-deep", json!({"prompts": 2, "dropout": 0.0})),
        ("prefix-tuning", json!({"num_virtual_tokens": 2})),
        ("ssf", json!({})),
    ]
}

fn attach_per_task(
    backbone: &mut Vit,
    method: &str,
    params: &serde_json::Value,
    n_tasks: usize,
    init: CopyInit,
) -> Box<dyn Adaptation> {
    let config = json!({"method": method, "params": params, "n_tasks": n_tasks, "init": init});
    let a = PerTask
        .attach(&config, backbone, &f64_init(7).fork("per-task"))
        .unwrap();
    for p in a.trainable().iter() {
        perturb(&p.name, &p.var);
    }
    a
}

/// Single-task model `task`: the copied method attached from the stream copy `task` used, its
/// parameters moved as the copy's were.
fn single_task(
    backbone: &mut Vit,
    method: &str,
    params: &serde_json::Value,
    task: usize,
    init: CopyInit,
) -> Box<dyn Adaptation> {
    let stream = copy_init(&f64_init(7).fork("per-task"), method, init, task);
    let a = find_method(method)
        .unwrap()
        .attach(params, backbone, &stream)
        .unwrap();
    for p in a.trainable().iter() {
        perturb(&task_param_name(task, &p.name), &p.var);
    }
    a
}

#[test]
fn equals_independent_single_task_models_on_their_own_examples() {
    let x = pixels(6, 3);
    let tasks = [2u32, 0, 1, 0, 2, 1];
    for (method, params) in inner_methods() {
        for how in [CopyInit::Same, CopyInit::Independent] {
            let mut backbone = tiny_backbone();
            let per_task = attach_per_task(&mut backbone, method, &params, 3, how);
            let ctx = ForwardCtx::eval().with_task_ids(Some(ids(&tasks)));
            let mixed = backbone
                .forward_features(&x, per_task.as_ref(), &ctx)
                .unwrap();
            for task in 0..3u32 {
                let single = single_task(&mut backbone, method, &params, task as usize, how);
                let rows: Vec<u32> = (0..6).filter(|&i| tasks[i as usize] == task).collect();
                let rows = ids(&rows);
                let alone = backbone
                    .forward_features(
                        &x.index_select(&rows, 0).unwrap(),
                        single.as_ref(),
                        &ForwardCtx::eval(),
                    )
                    .unwrap();
                let diff = max_abs_diff(
                    &mixed.contiguous().unwrap().index_select(&rows, 0).unwrap(),
                    &alone,
                );
                assert!(
                    diff < 1e-12,
                    "{method} {how:?} task {task}: differs by {diff}"
                );
            }
            // The copies start from the single-task stream: alike with `same`, apart otherwise.
            let fresh = PerTask
                .attach(
                    &json!({"method": method, "params": params, "n_tasks": 2, "init": how}),
                    &mut backbone,
                    &f64_init(7).fork("per-task"),
                )
                .unwrap();
            let solo = find_method(method)
                .unwrap()
                .attach(
                    &params,
                    &mut backbone,
                    &f64_init(7).fork("per-task").fork(method),
                )
                .unwrap();
            let values = |task: usize| -> Vec<f64> {
                let p = fresh
                    .trainable()
                    .iter()
                    .find(|p| p.name.starts_with(&format!("task_{task}.")))
                    .unwrap();
                p.var.flatten_all().unwrap().to_vec1().unwrap()
            };
            let first = solo.trainable().iter().next().unwrap();
            let solo_values: Vec<f64> = first.var.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(
                values(0) == solo_values,
                how == CopyInit::Same,
                "{method} {how:?}"
            );
            assert_eq!(
                values(0) == values(1),
                how == CopyInit::Same,
                "{method} {how:?}"
            );
            // Parameter count: the copies' sum, under task-prefixed names.
            assert_eq!(fresh.trainable().count(), 2 * solo.trainable().count());
            assert_eq!(fresh.added_params(), 2 * solo.added_params());
            assert!(fresh
                .trainable()
                .iter()
                .all(|p| p.name.starts_with("task_")));
        }
    }
}

#[test]
fn a_batch_in_any_order_gives_each_example_its_tasks_output() {
    let x = pixels(5, 4);
    let tasks = [1u32, 0, 1, 1, 0];
    let order = [3u32, 0, 4, 2, 1];
    for (method, params) in inner_methods() {
        let mut backbone = tiny_backbone();
        let a = attach_per_task(&mut backbone, method, &params, 2, CopyInit::Independent);
        let run = |x: &Tensor, t: &[u32]| {
            backbone
                .forward_features(
                    x,
                    a.as_ref(),
                    &ForwardCtx::eval().with_task_ids(Some(ids(t))),
                )
                .unwrap()
        };
        let base = run(&x, &tasks);
        let permuted_tasks: Vec<u32> = order.iter().map(|&i| tasks[i as usize]).collect();
        let permuted = run(&x.index_select(&ids(&order), 0).unwrap(), &permuted_tasks);
        let diff = max_abs_diff(
            &permuted,
            &base
                .contiguous()
                .unwrap()
                .index_select(&ids(&order), 0)
                .unwrap(),
        );
        assert!(
            diff < 1e-12,
            "{method}: permuting the batch changes outputs by {diff}"
        );
        // A one-task batch takes the undivided path: the same rows as in the mixed batch.
        let task1 = ids(&[0, 2, 3]);
        let alone = run(&x.index_select(&task1, 0).unwrap(), &[1, 1, 1]);
        let diff = max_abs_diff(
            &alone,
            &base.contiguous().unwrap().index_select(&task1, 0).unwrap(),
        );
        assert!(diff < 1e-12, "{method}: one-task batch differs by {diff}");
        // Without task ids every example is task 0.
        let task0 = ids(&[1, 4]);
        let plain = backbone
            .forward_features(
                &x.index_select(&task0, 0).unwrap(),
                a.as_ref(),
                &ForwardCtx::eval(),
            )
            .unwrap();
        assert!(
            max_abs_diff(
                &plain,
                &base.contiguous().unwrap().index_select(&task0, 0).unwrap()
            ) < 1e-12
        );
        // Copies differ, so the routing matters.
        let swapped = run(&x, &[0, 1, 0, 0, 1]);
        assert!(
            max_abs_diff(&swapped, &base) > 1e-6,
            "{method}: copies do not differ"
        );
    }
}

#[test]
fn gradients_reach_only_the_copies_of_tasks_in_the_batch() {
    let x = pixels(4, 5);
    for (method, params) in inner_methods() {
        let mut backbone = tiny_backbone();
        let a = attach_per_task(&mut backbone, method, &params, 3, CopyInit::Same);
        let ctx = ForwardCtx::eval().with_task_ids(Some(ids(&[2, 0, 0, 2])));
        let loss = backbone
            .forward_features(&x, a.as_ref(), &ctx)
            .unwrap()
            .sin()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        // Every parameter of a present task's copy is in the graph (a single entry may still be
        // exactly zero, e.g. behind a ReLU that is off for these few tokens); an absent task's
        // copy is not in it at all.
        let mut largest = [0.0f64; 3];
        for p in a.trainable().iter() {
            let g = grads.get(&p.var);
            if p.name.starts_with("task_1.") {
                assert!(
                    g.is_none(),
                    "{method}: absent task's {} has a gradient",
                    p.name
                );
            } else {
                let g = g.unwrap_or_else(|| panic!("{method}: no gradient for {}", p.name));
                let max: f64 = g
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                let task = usize::from(p.name.starts_with("task_2.")) * 2;
                largest[task] = largest[task].max(max);
            }
        }
        assert!(
            largest[0] > 0.0 && largest[2] > 0.0,
            "{method}: {largest:?}"
        );
    }
}

#[test]
fn refuses_methods_that_do_more_than_add_hooks() {
    for method in [
        "full",
        "bitfit",
        "linear",
        "lt-sft",
        "madx",
        "corda",
        "per-task",
        "hyperformer",
    ] {
        let err = PerTask.validate(&json!({"method": method})).unwrap_err();
        assert!(err.contains(&format!("`{method}`")), "{err}");
    }
    assert!(PerTask
        .validate(&json!({"method": "lora2"}))
        .unwrap_err()
        .contains("unknown method"));
    assert!(PerTask
        .validate(&json!({"method": "lora", "params": {"r": 0}}))
        .is_err());
    assert!(PerTask.validate(&json!({"n_tasks": 0})).is_err());
    PerTask.validate(&json!({})).unwrap();
    // Caught when the first copy attaches: a mask that calibrates on gradients.
    let err = PeftModel::new(
        "per-task",
        &json!({"method": "shira", "params": {"mask": "gradient_magnitude"}}),
        Box::new(tiny_backbone()),
        3,
        &f64_init(1),
    )
    .err()
    .expect("calibrating methods are refused")
    .to_string();
    assert!(
        err.contains("`shira`") && err.contains("calibrates"),
        "{err}"
    );
    // A task id beyond n_tasks is an error, not a silent fallback.
    let mut backbone = tiny_backbone();
    let a = attach_per_task(&mut backbone, "lora", &json!({}), 2, CopyInit::Same);
    let ctx = ForwardCtx::eval().with_task_ids(Some(ids(&[0, 2])));
    let err = backbone
        .forward_features(&pixels(2, 1), a.as_ref(), &ctx)
        .unwrap_err();
    assert!(err.to_string().contains("task id 2"), "{err}");
}

/// A split with a task per example, batched and shuffled like a training set.
struct TaskSource {
    inputs: Tensor,
    labels: Tensor,
    tasks: Vec<u32>,
}

impl BatchSource for TaskSource {
    fn num_examples(&self) -> usize {
        self.tasks.len()
    }

    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let n = self.tasks.len();
        let order: Vec<u32> = match shuffle_seed {
            Some(seed) => peftbench_core::shuffle::permutation(n, seed)
                .into_iter()
                .map(|i| i as u32)
                .collect(),
            None => (0..n as u32).collect(),
        };
        let chunks: Vec<Vec<u32>> = order.chunks(batch_size).map(<[u32]>::to_vec).collect();
        Box::new(chunks.into_iter().map(move |idx| {
            let rows = Tensor::new(idx.as_slice(), &Device::Cpu)?;
            let tasks: Vec<u32> = idx.iter().map(|&i| self.tasks[i as usize]).collect();
            let mut batch = Batch::new(
                self.inputs.index_select(&rows, 0)?,
                self.labels.index_select(&rows, 0)?,
            );
            batch.task_ids = Some(Tensor::new(tasks.as_slice(), &Device::Cpu)?);
            Ok(batch)
        }))
    }
}

/// The model the trainer sees, noting each batch's task ids as the hooks receive them, with the
/// examples' identities (their first pixel) and logits.
struct Recording<'a> {
    model: &'a PeftModel,
    seen: RefCell<Vec<(f64, u32, Vec<f64>)>>,
}

impl TrainModel for Recording<'_> {
    fn trainable(&self) -> &NamedVars {
        self.model.trainable()
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let logits = self.model.logits(input, ctx)?;
        let keys: Vec<f64> = input
            .flatten(1, 3)?
            .narrow(1, 0, 1)?
            .flatten_all()?
            .to_vec1()?;
        let tasks: Vec<u32> = ctx
            .task_ids()
            .expect("task ids reach the hooks")
            .to_vec1()?;
        let rows: Vec<Vec<f64>> = logits.to_vec2()?;
        for ((k, t), r) in keys.into_iter().zip(tasks).zip(rows) {
            self.seen.borrow_mut().push((k, t, r));
        }
        Ok(logits)
    }
}

#[test]
fn task_ids_reach_the_method_unchanged_through_a_shuffled_batched_source() {
    let n = 10;
    let inputs = pixels(n, 8);
    let tasks: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % 3).collect();
    let source = TaskSource {
        inputs: inputs.clone(),
        labels: Tensor::new(vec![0u32; n], &Device::Cpu).unwrap(),
        tasks: tasks.clone(),
    };
    let model = PeftModel::new(
        "per-task",
        &json!({"method": "lora", "params": {"r": 2}, "n_tasks": 3, "init": "independent"}),
        Box::new(tiny_backbone()),
        3,
        &f64_init(5),
    )
    .unwrap();
    for p in model.trainable().iter() {
        perturb(&p.name, &p.var);
    }
    let recording = Recording {
        model: &model,
        seen: RefCell::new(Vec::new()),
    };
    // Learning rate 0: the parameters stay, so every logit can be checked afterwards.
    let cfg = peftbench_train::TrainConfig {
        epochs: 2,
        batch_size: 4,
        eval_batch_size: 3,
        lr: 0.0,
        min_lr: 0.0,
        warmup_epochs: 0,
        warmup_lr: 0.0,
        adamw: peftbench_train::AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        },
        label_smoothing: 0.0,
        grad_clip: None,
        drop_path: 0.0,
        seed: 11,
        selection: peftbench_train::Selection::Final,
    };
    peftbench_train::train(&recording, &source, Some(&source), &cfg, &mut |_| {}).unwrap();
    let seen = recording.seen.into_inner();
    // Two shuffled epochs of training plus two unshuffled validation passes.
    assert_eq!(seen.len(), 4 * n);
    let keys: Vec<f64> = inputs
        .flatten(1, 3)
        .unwrap()
        .narrow(1, 0, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let first_epoch: Vec<f64> = seen[..n].iter().map(|s| s.0).collect();
    assert_ne!(first_epoch, keys, "the training batches are shuffled");
    for (key, task, logits) in seen {
        let i = keys
            .iter()
            .position(|&k| k == key)
            .expect("a known example");
        assert_eq!(task, tasks[i], "example {i} arrived with task {task}");
        let alone = model
            .logits(
                &inputs.narrow(0, i, 1).unwrap(),
                &ForwardCtx::eval().with_task_ids(Some(ids(&[tasks[i]]))),
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for (a, b) in logits.iter().zip(&alone) {
            assert!((a - b).abs() < 1e-10, "example {i}: {a} vs {b}");
        }
    }
}

#[test]
fn save_and_from_adapter_round_trip() {
    let x = pixels(4, 6);
    let ctx = || ForwardCtx::eval().with_task_ids(Some(ids(&[1, 0, 1, 0])));
    for (method, params) in inner_methods() {
        let config =
            json!({"method": method, "params": params, "n_tasks": 2, "init": "independent"});
        let model = PeftModel::new(
            "per-task",
            &config,
            Box::new(tiny_backbone()),
            3,
            &f64_init(2),
        )
        .unwrap();
        for p in model.trainable().iter() {
            perturb(&p.name, &p.var);
        }
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path(), "tiny").unwrap();
        let loaded = PeftModel::from_adapter(dir.path(), Box::new(tiny_backbone())).unwrap();
        assert_eq!(loaded.method(), "per-task");
        let diff = max_abs_diff(
            &model.logits(&x, &ctx()).unwrap(),
            &loaded.logits(&x, &ctx()).unwrap(),
        );
        assert_eq!(diff, 0.0, "{method}: reloaded logits differ by {diff}");
    }
}

/// Through `PeftModel` (as a run builds it), every copy of `per-task` with `init: same` starts
/// from exactly the values a single-task run of the wrapped method draws from the same seed.
#[test]
fn copies_start_where_a_single_task_run_starts() {
    let params = json!({"r": 2, "target_modules": ["query", "value"]});
    let run = |method: &str, params: &serde_json::Value| {
        PeftModel::new(method, params, Box::new(tiny_backbone()), 3, &f64_init(11)).unwrap()
    };
    let single = run("lora", &params);
    let wrapped = run(
        "per-task",
        &json!({"method": "lora", "params": params, "n_tasks": 2}),
    );
    for p in single.adaptation().trainable().iter() {
        for task in 0..2 {
            let copy = wrapped
                .adaptation()
                .trainable()
                .iter()
                .find(|q| q.name == format!("task_{task}.{}", p.name))
                .unwrap_or_else(|| panic!("no copy of {} for task {task}", p.name));
            let a: Vec<f64> = p.var.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f64> = copy.var.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "{} of task {task}", p.name);
        }
    }
}
