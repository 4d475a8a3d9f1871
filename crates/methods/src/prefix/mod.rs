//! Prefix tuning (Li & Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for
//! Generation", ACL, arXiv:2101.00190).
//!
//! Every attention layer gets `num_virtual_tokens` extra key and value vectors that all tokens
//! attend to, through the backbone's `prefix` site (keys and values after their projections, as
//! `past_key_values` in Hugging Face models). The prefixes of all layers are rows of one
//! `[num_virtual_tokens, num_layers * 2 * hidden]` matrix `P` (layer `l`'s keys are columns
//! `2l·d..(2l+1)·d`, its values the next `d`), either trained directly or, with
//! `prefix_projection`, produced by `P = W2 tanh(W1 E + b1) + b2` from a smaller embedding `E`
//! (the paper's re-parameterisation; PEFT's `PrefixEncoder`). Initialisation follows PEFT:
//! `E ~ N(0, 1)` (an `nn.Embedding`) and PyTorch's default `nn.Linear` init. Prefixes are attended
//! to from the start, so the output at initialisation differs from the frozen model's, by design.
//! Saved in Hugging Face PEFT's format: one `prompt_embeddings` tensor holding `P`.

mod config;

pub use config::PrefixConfig;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, Hooks};
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};

use crate::{parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo, ParamDoc};

pub struct PrefixTuning;

/// The MLP re-parameterisation `P = W2 tanh(W1 E + b1) + b2`.
struct PrefixMlp {
    embedding: Var,
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
}

pub struct PrefixAdaptation {
    config: PrefixConfig,
    hidden: usize,
    num_layers: usize,
    num_heads: usize,
    /// `P` itself (no projection) or the embedding `E` (projection).
    embedding: Var,
    mlp: Option<PrefixMlp>,
    params: NamedVars,
}

/// `nn.Linear`'s default init: weight and bias uniform in `±1/sqrt(fan_in)`.
fn torch_linear(init: &SeededInit, out: usize, inp: usize) -> Result<(Var, Var)> {
    let bound = 1.0 / (inp as f32).sqrt();
    Ok((
        init.fork("weight").uniform((out, inp), -bound, bound)?,
        init.fork("bias").uniform(out, -bound, bound)?,
    ))
}

impl PrefixAdaptation {
    pub fn new(config: PrefixConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let info = backbone.info();
        let (d, l, p) = (info.hidden_size, info.num_layers, config.num_virtual_tokens);
        let mut params = NamedVars::default();
        let width = if config.prefix_projection {
            d
        } else {
            2 * l * d
        };
        let embedding = init.fork("embedding").normal((p, width), 1.0)?;
        params.push("prefix_encoder.embedding.weight", embedding.clone());
        let mlp = if config.prefix_projection {
            let h = config.encoder_hidden_size;
            let (w1, b1) = torch_linear(&init.fork("transform.0"), h, d)?;
            let (w2, b2) = torch_linear(&init.fork("transform.2"), 2 * l * d, h)?;
            params.push("prefix_encoder.transform.0.weight", w1.clone());
            params.push("prefix_encoder.transform.0.bias", b1.clone());
            params.push("prefix_encoder.transform.2.weight", w2.clone());
            params.push("prefix_encoder.transform.2.bias", b2.clone());
            Some(PrefixMlp {
                embedding: embedding.clone(),
                w1,
                b1,
                w2,
                b2,
            })
        } else {
            None
        };
        Ok(Self {
            config,
            hidden: d,
            num_layers: l,
            num_heads: info.num_heads,
            embedding,
            mlp,
            params,
        })
    }

    /// Columns `start..start + d` of `P`: only the rows of `W2` that produce them are multiplied.
    fn columns(&self, start: usize) -> Result<Tensor> {
        let d = self.hidden;
        match &self.mlp {
            None => self.embedding.as_tensor().narrow(1, start, d),
            Some(mlp) => {
                let h = ops::linear(
                    mlp.embedding.as_tensor(),
                    mlp.w1.as_tensor(),
                    Some(mlp.b1.as_tensor()),
                )?
                .tanh()?;
                ops::linear(
                    &h,
                    &mlp.w2.as_tensor().narrow(0, start, d)?,
                    Some(&mlp.b2.as_tensor().narrow(0, start, d)?),
                )
            }
        }
    }

    /// The whole `[num_virtual_tokens, num_layers * 2 * hidden]` matrix `P` (what PEFT saves).
    pub fn prompt_embeddings(&self) -> Result<Tensor> {
        let cols: Vec<Tensor> = (0..2 * self.num_layers)
            .map(|i| self.columns(i * self.hidden))
            .collect::<Result<_>>()?;
        Tensor::cat(&cols, 1)
    }
}

impl Hooks for PrefixAdaptation {
    fn prefix(
        &self,
        layer: usize,
        batch: usize,
        _ctx: &ForwardCtx,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let d = self.hidden;
        let p = self.config.num_virtual_tokens;
        let expand = |t: Tensor| t.unsqueeze(0)?.broadcast_as((batch, p, d));
        let keys = expand(self.columns(2 * layer * d)?)?;
        let values = expand(self.columns((2 * layer + 1) * d)?)?;
        Ok(Some((keys, values)))
    }
}

impl Adaptation for PrefixAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let mut config = peft_format::base_config("PREFIX_TUNING", base_model);
        let c = &self.config;
        for (k, v) in [
            (
                "num_virtual_tokens",
                serde_json::json!(c.num_virtual_tokens),
            ),
            ("token_dim", serde_json::json!(self.hidden)),
            ("num_transformer_submodules", serde_json::json!(1)),
            ("num_attention_heads", serde_json::json!(self.num_heads)),
            ("num_layers", serde_json::json!(self.num_layers)),
            (
                "encoder_hidden_size",
                serde_json::json!(c.encoder_hidden_size),
            ),
            ("prefix_projection", serde_json::json!(c.prefix_projection)),
        ] {
            config.insert(k.into(), v);
        }
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "prompt_embeddings".to_string(),
            self.prompt_embeddings()?.detach().copy()?,
        );
        peft_format::write_adapter(dir, &serde_json::Value::Object(config), tensors, head)
    }
}

impl Method for PrefixTuning {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "prefix-tuning",
            summary: "Prefix tuning: learned keys/values prepended in every attention, optionally through an MLP",
            paper: "Li & Liang, Prefix-Tuning, ACL 2021 (arXiv:2101.00190)",
            params: &[
                ParamDoc {
                    name: "num_virtual_tokens",
                    default: "30",
                    doc: "prefix length: extra key/value positions per attention",
                },
                ParamDoc {
                    name: "prefix_projection",
                    default: "true",
                    doc: "train through a two-layer tanh MLP (the paper's re-parameterisation)",
                },
                ParamDoc {
                    name: "encoder_hidden_size",
                    default: "512",
                    doc: "hidden width of that MLP",
                },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<PrefixConfig>("prefix-tuning", params)?.check()
    }

    fn check_backbone(
        &self,
        _params: &serde_json::Value,
        info: &peftbench_backbones::BackboneInfo,
    ) -> std::result::Result<(), String> {
        info.check_prompt_sites("prefix-tuning")
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: PrefixConfig =
            parse_config("prefix-tuning", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(PrefixAdaptation::new(config, backbone, init)?))
    }
}
