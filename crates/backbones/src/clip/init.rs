//! A randomly initialised CLIP, for models the project pretrains itself (the image-text retrieval
//! demo's `demo-clip`).

use std::collections::HashMap;

use candle_core::Result;
use peftbench_core::SeededInit;

use super::{Clip, ClipConfig};

/// transformers' `initializer_range` (CLIP's default), the std of the embeddings and patches.
const INITIALIZER_RANGE: f32 = 0.02;

/// How a tensor of the layout starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Draw {
    /// Normal with this std.
    Normal(f32),
    /// Every value this constant (norm weights 1, biases 0, `logit_scale`).
    Constant(f32),
}

impl Clip {
    /// A model drawn as transformers' `CLIPPreTrainedModel._init_weights` draws it (with
    /// `initializer_factor` 1 and `initializer_range` 0.02): token, position and patch
    /// embeddings normal with std 0.02, the class embedding `hidden^-0.5`; in each tower of `L`
    /// blocks and width `d`, attention `q`/`k`/`v` `d^-0.5 (2L)^-0.5` and `out_proj` `d^-0.5`,
    /// `fc1` `(2d)^-0.5` and `fc2` `d^-0.5 (2L)^-0.5`; every bias 0, every norm weight 1; the
    /// projections `hidden^-0.5` of their tower; `logit_scale` the configuration's
    /// `logit_scale_init_value`. Every tensor has its own stream forked from `init` by its
    /// checkpoint name, so the draw does not depend on the order of the names.
    pub fn random(cfg: ClipConfig, init: &SeededInit) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (name, shape, draw) in param_layout(&cfg) {
            let tensor = match draw {
                Draw::Normal(std) => init.fork(&name).normal(shape, std)?.as_tensor().detach(),
                Draw::Constant(value) => init.constant(shape, value)?.as_tensor().detach(),
            };
            tensors.insert(name, tensor);
        }
        Self::from_tensors(cfg, &tensors, "random initialisation")
    }
}

/// Every tensor of a `CLIPModel` under its HF name, with its shape and how it starts.
fn param_layout(cfg: &ClipConfig) -> Vec<(String, Vec<usize>, Draw)> {
    let (vc, tc) = (&cfg.vision_config, &cfg.text_config);
    let mut layout = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, draw: Draw| layout.push((name, shape, draw));
    let (dv, dt, p) = (vc.hidden_size, tc.hidden_size, vc.patch_size);
    let std = |width: usize| (width as f32).powf(-0.5);

    push(
        "vision_model.embeddings.class_embedding".into(),
        vec![dv],
        Draw::Normal(std(dv)),
    );
    push(
        "vision_model.embeddings.patch_embedding.weight".into(),
        vec![dv, vc.num_channels, p, p],
        Draw::Normal(INITIALIZER_RANGE),
    );
    push(
        "vision_model.embeddings.position_embedding.weight".into(),
        vec![vc.num_patches() + 1, dv],
        Draw::Normal(INITIALIZER_RANGE),
    );
    push(
        "text_model.embeddings.token_embedding.weight".into(),
        vec![tc.vocab_size, dt],
        Draw::Normal(INITIALIZER_RANGE),
    );
    push(
        "text_model.embeddings.position_embedding.weight".into(),
        vec![tc.max_position_embeddings, dt],
        Draw::Normal(INITIALIZER_RANGE),
    );
    let mut norm = |name: String, width: usize| {
        push(format!("{name}.weight"), vec![width], Draw::Constant(1.0));
        push(format!("{name}.bias"), vec![width], Draw::Constant(0.0));
    };
    norm("vision_model.pre_layrnorm".into(), dv);
    norm("vision_model.post_layernorm".into(), dv);
    norm("text_model.final_layer_norm".into(), dt);
    for (tower, layers, d, f) in [
        (
            "vision_model",
            vc.num_hidden_layers,
            dv,
            vc.intermediate_size,
        ),
        ("text_model", tc.num_hidden_layers, dt, tc.intermediate_size),
    ] {
        let in_proj = std(d) * ((2 * layers) as f32).powf(-0.5);
        for l in 0..layers {
            let base = format!("{tower}.encoder.layers.{l}");
            for (module, out, inp, weight_std) in [
                ("self_attn.q_proj", d, d, in_proj),
                ("self_attn.k_proj", d, d, in_proj),
                ("self_attn.v_proj", d, d, in_proj),
                ("self_attn.out_proj", d, d, std(d)),
                ("mlp.fc1", f, d, std(2 * d)),
                ("mlp.fc2", d, f, in_proj),
            ] {
                layout.push((
                    format!("{base}.{module}.weight"),
                    vec![out, inp],
                    Draw::Normal(weight_std),
                ));
                layout.push((
                    format!("{base}.{module}.bias"),
                    vec![out],
                    Draw::Constant(0.0),
                ));
            }
            for n in ["layer_norm1", "layer_norm2"] {
                layout.push((format!("{base}.{n}.weight"), vec![d], Draw::Constant(1.0)));
                layout.push((format!("{base}.{n}.bias"), vec![d], Draw::Constant(0.0)));
            }
        }
    }
    layout.push((
        "visual_projection.weight".into(),
        vec![cfg.projection_dim, dv],
        Draw::Normal(std(dv)),
    ));
    layout.push((
        "text_projection.weight".into(),
        vec![cfg.projection_dim, dt],
        Draw::Normal(std(dt)),
    ));
    layout.push((
        "logit_scale".into(),
        vec![],
        Draw::Constant(cfg.logit_scale_init_value as f32),
    ));
    layout
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn tiny() -> ClipConfig {
        let mut cfg = ClipConfig::default();
        let (vc, tc) = (&mut cfg.vision_config, &mut cfg.text_config);
        (vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers) = (16, 32, 2);
        (vc.num_attention_heads, vc.image_size, vc.patch_size) = (2, 16, 8);
        (tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers) = (12, 24, 3);
        (
            tc.num_attention_heads,
            tc.vocab_size,
            tc.max_position_embeddings,
        ) = (3, 20, 8);
        (tc.pad_token_id, tc.bos_token_id, tc.eos_token_id) = (0, 1, 1);
        cfg.projection_dim = 10;
        cfg
    }

    /// The layout names exactly the tensors the model holds, the same seed draws the same values,
    /// and the constants are CLIP's.
    #[test]
    fn random_models_hold_exactly_the_layout_and_repeat_per_seed() -> Result<()> {
        let cfg = tiny();
        let init = SeededInit::new(3, &Device::Cpu);
        let mut model = Clip::random(cfg.clone(), &init)?;
        let mut visited = Vec::new();
        let mut values = Vec::new();
        model.visit_params(&mut |name, t| {
            visited.push((name.to_string(), t.dims().to_vec()));
            values.extend(t.flatten_all()?.to_vec1::<f32>()?);
            Ok(())
        })?;
        let mut expected: Vec<(String, Vec<usize>)> = param_layout(&cfg)
            .into_iter()
            .map(|(name, shape, _)| (name, shape))
            .collect();
        visited.sort();
        expected.sort();
        assert_eq!(visited, expected);

        let mut again = Clip::random(cfg.clone(), &init)?;
        let mut repeated = Vec::new();
        again.visit_params(&mut |_, t| {
            repeated.extend(t.flatten_all()?.to_vec1::<f32>()?);
            Ok(())
        })?;
        assert_eq!(values, repeated);

        let scale = model.logit_scale().to_scalar::<f32>()?;
        assert_eq!(scale, cfg.logit_scale_init_value as f32);
        let embeds = model.vision(
            &Tensor::zeros((2, 3, 16, 16), candle_core::DType::F32, &Device::Cpu)?,
            &crate::NoHooks,
            &peftbench_core::ForwardCtx::eval(),
        )?;
        assert_eq!(embeds.image_embeds.dims(), [2, 10]);
        Ok(())
    }
}
