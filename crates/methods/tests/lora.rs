//! LoRA specifics: merge equals the unmerged output, scaling conventions, the published ViT-B/16
//! parameter count, and the Hugging Face PEFT on-disk format.

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::{Backbone, LinearSite, NoHooks, Vit, VitConfig};
use peftbench_core::{ForwardCtx, SeededInit};
use peftbench_methods::lora::{LoraAdaptation, LoraConfig};
use peftbench_methods::{peft_format, Adaptation, ClassifierHead, PeftModel};
use serde_json::json;

fn tiny() -> Vit {
    let mut vit = Vit::random(
        VitConfig::new(16, 2, 2, 32, 16, 8),
        &SeededInit::new(1, &Device::Cpu),
    )
    .unwrap();
    vit.cast(DType::F64).unwrap();
    vit
}

#[test]
fn merged_weights_give_the_unmerged_output() {
    let mut vit = tiny();
    let config = LoraConfig {
        r: 3,
        alpha: 6.0,
        target_modules: LinearSite::ALL.to_vec(),
        ..LoraConfig::default()
    };
    let init = SeededInit::new(5, &Device::Cpu).with_dtype(DType::F64);
    let lora = LoraAdaptation::new(config, &vit, &init).unwrap();
    for p in lora.trainable().iter() {
        let noise = init.fork(&p.name).normal(p.var.shape(), 0.3).unwrap();
        p.var.set(noise.as_tensor()).unwrap();
    }
    let x = init
        .fork("x")
        .normal((2, 3, 16, 16), 1.0)
        .unwrap()
        .as_tensor()
        .detach();
    let ctx = ForwardCtx::eval();
    let unmerged = vit.forward_features(&x, &lora, &ctx).unwrap();
    let frozen = vit.forward_features(&x, &NoHooks, &ctx).unwrap();
    lora.merge_into(&mut vit).unwrap();
    let merged = vit.forward_features(&x, &NoHooks, &ctx).unwrap();
    let max = |t: Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    assert!(
        max((&unmerged - &frozen).unwrap()) > 1e-3,
        "the update is not trivial"
    );
    assert!(max((merged - unmerged).unwrap()) < 1e-12);
}

#[test]
fn scaling_is_alpha_over_r_or_over_sqrt_r() {
    let c = LoraConfig {
        r: 16,
        alpha: 32.0,
        ..LoraConfig::default()
    };
    assert_eq!(c.scaling(), 2.0);
    let c = LoraConfig {
        use_rslora: true,
        ..c
    };
    assert_eq!(c.scaling(), 8.0);
}

#[test]
fn vit_b16_lora_r16_query_value_matches_the_published_count() {
    // Hugging Face PEFT 0.21.2 on `ViTForImageClassification(ViTConfig(num_labels=101))` with
    // `LoraConfig(r=16, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])`:
    // `get_nb_trainable_parameters()` gives 667,493 trainable (589,824 LoRA + 77,669 head); the
    // backbone has 85,876,325, so 86,466,149 in all (PEFT's own total counts the classifier's
    // `modules_to_save` copy twice).
    let vit = Vit::random(
        VitConfig::vit_base_patch16_224(),
        &SeededInit::new(0, &Device::Cpu),
    )
    .unwrap();
    let m = PeftModel::new(
        "lora",
        &json!({"r": 16, "alpha": 16, "target_modules": ["query", "value"]}),
        Box::new(vit),
        101,
        &SeededInit::new(0, &Device::Cpu),
    )
    .unwrap();
    assert_eq!(m.adaptation().trainable().count(), 589_824);
    assert_eq!(m.trainable_count(), 667_493);
    assert_eq!(m.total_count(), 86_466_149);
}

#[test]
fn saves_in_hugging_face_peft_format_and_loads_back_bit_exact() {
    let vit = tiny();
    let init = SeededInit::new(2, &Device::Cpu);
    let config = LoraConfig {
        r: 2,
        alpha: 4.0,
        ..LoraConfig::default()
    };
    let lora = LoraAdaptation::new(config, &vit, &init).unwrap();
    for p in lora.trainable().iter() {
        p.var
            .set(
                init.fork(&p.name)
                    .normal(p.var.shape(), 0.3)
                    .unwrap()
                    .as_tensor(),
            )
            .unwrap();
    }
    let head = ClassifierHead::new(16, 3, &init).unwrap();
    let dir = tempfile::tempdir().unwrap();
    lora.save(dir.path(), &head, "google/vit-base-patch16-224-in21k")
        .unwrap();

    let text = std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 2);
    assert_eq!(config["lora_alpha"], 4.0);
    // transformers 5's ViT module names, which current Python PEFT matches and loads.
    assert_eq!(config["target_modules"], json!(["q_proj", "v_proj"]));
    assert_eq!(config["modules_to_save"], json!(["classifier"]));
    // Keys are sorted, as PEFT writes them.
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    let top: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| config.get(*k).is_some())
        .collect();
    let mut sorted = top.clone();
    sorted.sort_unstable();
    assert_eq!(top, sorted);

    let raw =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let a = &raw["base_model.model.vit.layers.0.attention.q_proj.lora_A.weight"];
    let b = &raw["base_model.model.vit.layers.1.attention.v_proj.lora_B.weight"];
    assert_eq!((a.dims(), b.dims()), (&[2, 16][..], &[16, 2][..]));
    assert!(raw.contains_key("base_model.model.classifier.weight"));
    assert_eq!(raw.len(), 2 * 2 * 2 + 2);

    // Read back under the checkpoint names the model uses.
    let tensors = peft_format::load_adapter(dir.path()).unwrap().tensors;
    for p in lora.trainable().iter() {
        let loaded = tensors[&p.name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(
            loaded,
            p.var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{}",
            p.name
        );
    }
}

#[test]
fn fc2_alone_is_saved_unambiguously() {
    // Under transformers 5's ViT names `fc2` and `o_proj` differ.
    let vit = tiny();
    let config = LoraConfig {
        target_modules: vec![LinearSite::Fc2],
        ..LoraConfig::default()
    };
    let lora = LoraAdaptation::new(config, &vit, &SeededInit::new(0, &Device::Cpu)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let head = ClassifierHead::new(16, 2, &SeededInit::new(0, &Device::Cpu)).unwrap();
    lora.save(dir.path(), &head, "x").unwrap();
    let (config, _) = peft_format::read_adapter(dir.path()).unwrap();
    assert_eq!(config["target_modules"], json!(["fc2"]));
    // Under checkpoint names (BERT) fc2's `output.dense` would also match
    // `attention.output.dense`: a regex excludes it.
    let value = peft_format::target_modules_value(
        &[LinearSite::Fc2],
        peft_format::ModuleNaming::Checkpoint,
    );
    let pattern = value.as_str().unwrap();
    assert!(
        pattern.contains(r"(?<!attention\.)output\.dense"),
        "{pattern}"
    );
}

#[test]
fn layers_to_transform_adapts_only_the_named_blocks() {
    let vit = tiny();
    let config: LoraConfig = serde_json::from_value(json!({"layers_to_transform": 1})).unwrap();
    assert_eq!(config.layers_to_transform, Some(vec![1]));
    let lora = LoraAdaptation::new(config, &vit, &SeededInit::new(0, &Device::Cpu)).unwrap();
    let names: Vec<&str> = lora.trainable().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().all(|n| n.contains(".layer.1.")), "{names:?}");
    // Block 0 stays exactly pretrained: the runner may cache the stream entering block 1.
    assert_eq!(lora.untouched_blocks(), 1);
    let every = LoraAdaptation::new(
        LoraConfig::default(),
        &vit,
        &SeededInit::new(0, &Device::Cpu),
    )
    .unwrap();
    assert_eq!(every.untouched_blocks(), 0);
    // Each adapter starts as the same adapter of a LoRA on every block.
    for p in lora.trainable().iter() {
        let twin = every.trainable().iter().find(|q| q.name == p.name).unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            p.var.flatten_all().unwrap().to_vec1().unwrap(),
            twin.var.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b, "{}", p.name);
    }
}

#[test]
fn layers_to_transform_is_checked_against_the_backbone() {
    let info = tiny().info().clone();
    let method = peftbench_methods::find_method("lora").unwrap();
    let err = method
        .check_backbone(&json!({"layers_to_transform": [1, 2]}), &info)
        .unwrap_err();
    assert!(err.contains("`layers_to_transform` names block 2"), "{err}");
    assert!(err.contains("0 to 1"), "{err}");
    let err = method
        .validate(&json!({"layers_to_transform": []}))
        .unwrap_err();
    assert!(err.contains("`layers_to_transform` is empty"), "{err}");
}

#[test]
fn chosen_blocks_are_saved_so_that_peft_adapts_the_same_ones() {
    // A target list: PEFT's `layers_to_transform`.
    let config = LoraConfig {
        layers_to_transform: Some(vec![1]),
        ..LoraConfig::default()
    };
    let value = peft_format::lora_config(
        &config,
        false,
        "x",
        peft_format::ModuleNaming::Transformers5,
    );
    assert_eq!(value["layers_to_transform"], json!([1]));
    // A regex target (fc2 under checkpoint names): PEFT ignores `layers_to_transform` beside a
    // regex, so the blocks are in the regex.
    let config = LoraConfig {
        target_modules: vec![LinearSite::Fc2],
        layers_to_transform: Some(vec![2, 5]),
        ..LoraConfig::default()
    };
    let value =
        peft_format::lora_config(&config, false, "x", peft_format::ModuleNaming::Checkpoint);
    assert_eq!(value["layers_to_transform"], json!(null));
    let pattern = value["target_modules"].as_str().unwrap();
    assert!(pattern.starts_with(r".*\.layer\.(2|5)\."), "{pattern}");
}

/// LoRA on T5's decoder cross-attention (`EncDecAttention`), as VL-Adapter / LoRA on T5 use it,
/// attached through the registry like any method on any backbone: T5 numbers its blocks encoder
/// first, and the cross-attention sites exist in its decoder blocks only.
mod cross_attention {
    use std::path::PathBuf;

    use candle_core::{Device, Tensor};
    use peftbench_backbones::{Backbone, Hooks, LinearSite, NoHooks, T5};
    use peftbench_core::{ForwardCtx, SeededInit};
    use peftbench_methods::lora::{LoraAdaptation, LoraConfig};
    use peftbench_methods::peft_format::{self, ModuleNaming};
    use serde_json::json;

    fn t5() -> T5 {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../backbones/tests/fixtures/t5_tiny/relu");
        T5::load(
            &dir.join("config.json"),
            &dir.join("model.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
    }

    fn config() -> LoraConfig {
        serde_json::from_value(
            json!({"r": 2, "alpha": 4, "target_modules": ["cross_query", "cross_value"]}),
        )
        .unwrap()
    }

    #[test]
    fn lora_attaches_to_t5_cross_attention() {
        let mut model = t5();
        let config = config();
        assert_eq!(
            config.target_modules,
            [LinearSite::CrossQuery, LinearSite::CrossValue]
        );
        let method = peftbench_methods::find_method("lora").unwrap();
        let params = json!({"r": 2, "alpha": 4, "target_modules": ["cross_query", "cross_value"]});
        method.validate(&params).unwrap();
        method.check_backbone(&params, model.info()).unwrap();

        let init = SeededInit::new(3, &Device::Cpu);
        let adaptation = method.attach(&params, &mut model, &init).unwrap();
        // One (A, B) pair per decoder block and targeted site, named by the module's HF path.
        let encoder_blocks = model.config().num_layers;
        let names: Vec<String> = adaptation
            .trainable()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let decoder_blocks = model.info().num_layers - encoder_blocks;
        assert_eq!(names.len(), decoder_blocks * 2 * 2, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("decoder.block.") && n.contains(".layer.1.EncDecAttention.")),
            "{names:?}"
        );

        let ctx = ForwardCtx::eval();
        let ids = Tensor::new(&[[5u32, 9, 3, 1]], &Device::Cpu).unwrap();
        let decoder_ids = Tensor::new(&[[0u32, 7, 2]], &Device::Cpu).unwrap();
        let run = |h: &dyn Hooks| {
            model
                .forward(&ids, None, &decoder_ids, None, h, &ctx)
                .unwrap()
        };
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let plain = run(&NoHooks);
        // `B` starts at zero: the adapted model is the pretrained one.
        let hooks: &dyn Hooks = adaptation.as_ref();
        assert!(diff(&run(hooks), &plain) < 1e-6);
        // Trained (non-zero) updates change the logits, and greedy decoding runs through them.
        for (i, p) in adaptation.trainable().iter().enumerate() {
            if p.name.ends_with("lora_B.weight") {
                let b = init
                    .fork(&format!("b{i}"))
                    .normal(p.var.shape(), 0.5)
                    .unwrap();
                p.var.set(b.as_tensor()).unwrap();
            }
        }
        assert!(diff(&run(hooks), &plain) > 1e-4);
        model.greedy(&ids, None, 4, hooks).unwrap();

        // PEFT's names for the targets.
        assert_eq!(
            peft_format::target_modules_value(&config.target_modules, ModuleNaming::Checkpoint),
            json!(["EncDecAttention.q", "EncDecAttention.v"])
        );
    }

    #[test]
    fn encoder_only_backbones_refuse_cross_attention_targets() {
        let vit = super::tiny();
        let method = peftbench_methods::find_method("lora").unwrap();
        let params = json!({"r": 2, "target_modules": ["cross_query", "cross_value"]});
        method.validate(&params).unwrap();
        let err = method.check_backbone(&params, vit.info()).unwrap_err();
        assert!(err.contains("no cross-attention"), "{err}");
        assert!(err.contains("`cross_query`"), "{err}");
        assert!(err.contains("vit"), "{err}");
        // Attaching anyway is an error, not a panic.
        let init = SeededInit::new(3, &Device::Cpu);
        let err = LoraAdaptation::new(config(), &vit, &init)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no cross-attention"), "{err}");
        // Presets stay what they were: no cross-attention in `all-linear`.
        let all: LoraConfig =
            serde_json::from_value(json!({"target_modules": "all-linear"})).unwrap();
        assert_eq!(all.target_modules, LinearSite::ALL);
        assert!(method
            .check_backbone(&json!({"target_modules": "all-linear"}), vit.info())
            .is_ok());
    }
}
