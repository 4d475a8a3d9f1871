//! A randomly initialised T5, for models the project pretrains itself (the vision-language demo's
//! text-only T5).

use std::collections::HashMap;

use candle_core::Result;
use peftbench_core::SeededInit;

use super::{FeedForwardProj, T5Config, T5};

impl T5 {
    /// A model drawn as transformers' `T5PreTrainedModel._init_weights` draws it (with
    /// `initializer_factor` 1): unit norms; normal embeddings (and separate head) with std 1;
    /// attention `q` with std `(d_model * d_kv)^-0.5`, `k` and `v` `d_model^-0.5`, `o`
    /// `(num_heads * d_kv)^-0.5`, the relative position tables `d_model^-0.5`; feed-forward inputs
    /// `d_model^-0.5` and output `d_ff^-0.5`. Every tensor has its own stream forked from `init`
    /// by its checkpoint name, so the draw does not depend on the order of the names.
    pub fn random(cfg: T5Config, init: &SeededInit) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (name, shape, std) in param_layout(&cfg) {
            let var = match std {
                Some(std) => init.fork(&name).normal(shape, std)?,
                None => init.constant(shape, 1.0)?,
            };
            tensors.insert(name, var.as_tensor().detach());
        }
        Self::from_tensors(cfg, &tensors, "random initialisation")
    }

    /// T5's encoder alone ([`T5::encoder_from_tensors`]), drawn as [`T5::random`] draws it.
    pub fn random_encoder(cfg: T5Config, init: &SeededInit) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (name, shape, std) in param_layout(&cfg) {
            if !(name == "shared.weight" || name.starts_with("encoder.")) {
                continue;
            }
            let var = match std {
                Some(std) => init.fork(&name).normal(shape, std)?,
                None => init.constant(shape, 1.0)?,
            };
            tensors.insert(name, var.as_tensor().detach());
        }
        Self::encoder_from_tensors(cfg, &tensors, "random initialisation")
    }
}

/// Every tensor of a `T5ForConditionalGeneration` under its HF name, with its shape and the std of
/// its normal initialisation (`None`: a norm weight, initialised to 1).
fn param_layout(cfg: &T5Config) -> Vec<(String, Vec<usize>, Option<f32>)> {
    let (v, d, f, inner) = (cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.inner_dim());
    let std = |fan: usize| Some((fan as f32).powf(-0.5));
    let mut layout = vec![("shared.weight".to_string(), vec![v, d], Some(1.0))];
    let attention = |layout: &mut Vec<_>, name: String, with_bias: bool| {
        layout.push((
            format!("{name}.q.weight"),
            vec![inner, d],
            std(d * cfg.d_kv),
        ));
        layout.push((format!("{name}.k.weight"), vec![inner, d], std(d)));
        layout.push((format!("{name}.v.weight"), vec![inner, d], std(d)));
        layout.push((format!("{name}.o.weight"), vec![d, inner], std(inner)));
        if with_bias {
            layout.push((
                format!("{name}.relative_attention_bias.weight"),
                vec![cfg.relative_attention_num_buckets, cfg.num_heads],
                std(d),
            ));
        }
    };
    let feed_forward = |layout: &mut Vec<_>, name: String| {
        let inputs: &[&str] = match cfg.feed_forward_proj {
            FeedForwardProj::Relu => &["wi"],
            FeedForwardProj::GatedGelu => &["wi_0", "wi_1"],
        };
        for wi in inputs {
            layout.push((format!("{name}.{wi}.weight"), vec![f, d], std(d)));
        }
        layout.push((format!("{name}.wo.weight"), vec![d, f], std(f)));
    };
    let norm = |layout: &mut Vec<_>, name: String| layout.push((name, vec![d], None));
    for l in 0..cfg.num_layers {
        let base = format!("encoder.block.{l}.layer");
        norm(&mut layout, format!("{base}.0.layer_norm.weight"));
        attention(&mut layout, format!("{base}.0.SelfAttention"), l == 0);
        norm(&mut layout, format!("{base}.1.layer_norm.weight"));
        feed_forward(&mut layout, format!("{base}.1.DenseReluDense"));
    }
    norm(&mut layout, "encoder.final_layer_norm.weight".to_string());
    for l in 0..cfg.decoder_layers() {
        let base = format!("decoder.block.{l}.layer");
        norm(&mut layout, format!("{base}.0.layer_norm.weight"));
        attention(&mut layout, format!("{base}.0.SelfAttention"), l == 0);
        norm(&mut layout, format!("{base}.1.layer_norm.weight"));
        attention(&mut layout, format!("{base}.1.EncDecAttention"), false);
        norm(&mut layout, format!("{base}.2.layer_norm.weight"));
        feed_forward(&mut layout, format!("{base}.2.DenseReluDense"));
    }
    norm(&mut layout, "decoder.final_layer_norm.weight".to_string());
    if !cfg.tie_word_embeddings {
        layout.push(("lm_head.weight".to_string(), vec![v, d], Some(1.0)));
    }
    layout
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use crate::Backbone;

    use super::*;

    fn tiny(feed_forward_proj: FeedForwardProj, tie_word_embeddings: bool) -> T5Config {
        T5Config {
            vocab_size: 20,
            d_model: 16,
            d_kv: 4,
            d_ff: 24,
            num_layers: 2,
            num_decoder_layers: Some(1),
            num_heads: 2,
            relative_attention_num_buckets: 8,
            relative_attention_max_distance: 16,
            dropout_rate: 0.0,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj,
            tie_word_embeddings,
            scale_decoder_outputs: None,
            decoder_start_token_id: 0,
            pad_token_id: 0,
            eos_token_id: 1,
        }
    }

    /// The layout names exactly the tensors the model holds, for both feed-forward kinds and
    /// both heads, and the same seed draws the same values.
    #[test]
    fn random_models_hold_exactly_the_layout_and_repeat_per_seed() -> Result<()> {
        for (ff, tied) in [
            (FeedForwardProj::Relu, true),
            (FeedForwardProj::GatedGelu, false),
        ] {
            let cfg = tiny(ff, tied);
            let init = SeededInit::new(3, &Device::Cpu);
            let mut model = T5::random(cfg.clone(), &init)?;
            let mut visited = Vec::new();
            model.visit_params(&mut |name, t| {
                visited.push((name.to_string(), t.dims().to_vec()));
                Ok(())
            })?;
            let mut expected: Vec<(String, Vec<usize>)> = param_layout(&cfg)
                .into_iter()
                .map(|(name, shape, _)| (name, shape))
                .collect();
            visited.sort();
            expected.sort();
            assert_eq!(visited, expected, "{ff:?}");

            let mut again = T5::random(cfg, &init)?;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            model.visit_params(&mut |_, t| {
                a.extend(t.flatten_all()?.to_vec1::<f32>()?);
                Ok(())
            })?;
            again.visit_params(&mut |_, t| {
                b.extend(t.flatten_all()?.to_vec1::<f32>()?);
                Ok(())
            })?;
            assert_eq!(a, b);
        }
        Ok(())
    }
}
