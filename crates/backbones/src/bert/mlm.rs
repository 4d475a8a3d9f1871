//! The masked-language-modelling head of BERT (`cls.predictions`) and XLM-R (`lm_head`):
//! `dense -> activation -> LayerNorm -> x @ word_embeddings^T + bias`, the decoder tied to the
//! encoder's token embeddings as in the pretrained models.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor};
use peftbench_core::ops::Activation;
use peftbench_core::SeededInit;

use super::model::{read_config, Norm};
use super::BertConfig;
use crate::checkpoint::get_tensor;
use crate::sites::Linear;

#[derive(Debug, Clone)]
pub struct MlmHead {
    dense: Linear,
    norm: Norm,
    /// `[vocab]`, the decoder's output bias.
    bias: Tensor,
    activation: Activation,
    roberta: bool,
}

impl MlmHead {
    /// Checkpoint names of (dense, norm, bias) for the model type.
    fn names(cfg: &BertConfig) -> (&'static str, &'static str, &'static str) {
        if cfg.roberta_positions() {
            ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
        } else {
            (
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.bias",
            )
        }
    }

    /// The pretrained head from a checkpoint's tensors, or `None` when the checkpoint has none
    /// (encoder-only exports such as sentence-transformers models).
    pub fn from_tensors(
        cfg: &BertConfig,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Option<Self>> {
        let (dense, norm, bias) = Self::names(cfg);
        if !tensors.contains_key(&format!("{dense}.weight")) {
            return Ok(None);
        }
        let d = cfg.hidden_size;
        let get = |name: String, shape: &[usize]| get_tensor(tensors, &name, shape, origin);
        Ok(Some(Self {
            dense: Linear {
                weight: get(format!("{dense}.weight"), &[d, d])?,
                bias: Some(get(format!("{dense}.bias"), &[d])?),
            },
            norm: Norm {
                weight: get(format!("{norm}.weight"), &[d])?,
                bias: get(format!("{norm}.bias"), &[d])?,
                eps: cfg.layer_norm_eps,
            },
            bias: get(bias.to_string(), &[cfg.vocab_size])?,
            activation: Self::activation(cfg),
            roberta: cfg.roberta_positions(),
        }))
    }

    /// Reads the head from a checkpoint's files, if it has one.
    pub fn load(config_path: &Path, weights_path: &Path, device: &Device) -> Result<Option<Self>> {
        let cfg = read_config(config_path)?;
        let tensors = candle_core::safetensors::load(weights_path, device)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", weights_path.display())))?;
        Self::from_tensors(&cfg, &tensors, &weights_path.display().to_string())
    }

    /// RoBERTa's head always uses exact GELU; BERT's uses the config's activation.
    fn activation(cfg: &BertConfig) -> Activation {
        if cfg.roberta_positions() {
            Activation::Gelu
        } else {
            cfg.hidden_act
        }
    }

    /// A fresh head as HF initialises it (normal 0.02, zero biases, unit norm).
    pub fn random(cfg: &BertConfig, init: &SeededInit) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            dense: Linear {
                weight: init
                    .fork("mlm.dense")
                    .normal((d, d), cfg.initializer_range as f32)?
                    .as_tensor()
                    .detach(),
                bias: Some(init.zeros(d)?.as_tensor().detach()),
            },
            norm: Norm {
                weight: init.constant(d, 1.0)?.as_tensor().detach(),
                bias: init.zeros(d)?.as_tensor().detach(),
                eps: cfg.layer_norm_eps,
            },
            bias: init.zeros(cfg.vocab_size)?.as_tensor().detach(),
            activation: Self::activation(cfg),
            roberta: cfg.roberta_positions(),
        })
    }

    /// Vocabulary logits `[.., vocab]` for token states `[.., hidden]`.
    pub fn forward(&self, states: &Tensor, word_embeddings: &Tensor) -> Result<Tensor> {
        let h = self.dense.forward(states)?;
        let h = self.activation.apply(&h)?;
        let h = self.norm.forward(&h)?;
        peftbench_core::ops::linear(&h, word_embeddings, Some(&self.bias))
    }

    /// Visits the head's tensors under their checkpoint names (the tied decoder is the
    /// encoder's word embeddings and is not repeated).
    pub fn visit_params(
        &mut self,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        let (dense, norm, bias) = if self.roberta {
            ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
        } else {
            (
                "cls.predictions.transform.dense",
                "cls.predictions.transform.LayerNorm",
                "cls.predictions.bias",
            )
        };
        f(&format!("{dense}.weight"), &mut self.dense.weight)?;
        if let Some(b) = self.dense.bias.as_mut() {
            f(&format!("{dense}.bias"), b)?;
        }
        f(&format!("{norm}.weight"), &mut self.norm.weight)?;
        f(&format!("{norm}.bias"), &mut self.norm.bias)?;
        f(bias, &mut self.bias)
    }
}
