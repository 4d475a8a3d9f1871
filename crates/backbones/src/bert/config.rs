use peftbench_core::ops::Activation;
use serde::{Deserialize, Serialize};

/// `config.json` of a Hugging Face BERT-family checkpoint (field names as in
/// `transformers.BertConfig` / `XLMRobertaConfig`). Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// `"bert"` (BERT, mBERT, MiniLM) or `"xlm-roberta"` / `"roberta"` (positions offset by
    /// `pad_token_id + 1`, see [`BertConfig::roberta_positions`]).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    /// Only `"absolute"` is supported (the value of every BERT / XLM-R checkpoint we target).
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_act() -> Activation {
    Activation::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_init() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// A BERT config with HF's defaults for everything but the sizes.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
    ) -> Self {
        Self {
            model_type: default_model_type(),
            vocab_size,
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act: default_act(),
            hidden_dropout_prob: default_dropout(),
            attention_probs_dropout_prob: default_dropout(),
            max_position_embeddings: default_max_positions(),
            type_vocab_size: default_type_vocab(),
            initializer_range: default_init(),
            layer_norm_eps: default_eps(),
            pad_token_id: 0,
            position_embedding_type: default_position_type(),
        }
    }

    /// `sentence-transformers/all-MiniLM-L6-v2` (a 6-layer, 384-wide BERT).
    pub fn all_minilm_l6_v2() -> Self {
        Self::new(30522, 384, 6, 12, 1536)
    }

    /// `xlm-roberta-base`: BERT-base sizes, a 250k vocabulary, RoBERTa positions.
    pub fn xlm_roberta_base() -> Self {
        Self {
            model_type: "xlm-roberta".into(),
            max_position_embeddings: 514,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            ..Self::new(250_002, 768, 12, 12, 3072)
        }
    }

    /// RoBERTa-style models number positions from `pad_token_id + 1` and give padding the position
    /// `pad_token_id` (HF's `create_position_ids_from_input_ids`); BERT numbers them from 0.
    pub fn roberta_positions(&self) -> bool {
        matches!(
            self.model_type.as_str(),
            "xlm-roberta" | "roberta" | "camembert"
        )
    }

    /// The checkpoint prefix of the encoder (`bert.` / `roberta.`), as in HF's task models.
    pub fn base_model_prefix(&self) -> &'static str {
        if self.roberta_positions() {
            "roberta"
        } else {
            "bert"
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the sizes are consistent, with a message naming the offending fields.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(format!(
                "pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        Ok(())
    }

    /// The longest input in tokens (RoBERTa positions reserve `pad_token_id + 1` slots).
    pub fn max_tokens(&self) -> usize {
        if self.roberta_positions() {
            self.max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1)
        } else {
            self.max_position_embeddings
        }
    }

    /// The JSON written next to a checkpoint the project creates, in HF's format so that
    /// `transformers.AutoModel.from_pretrained` reads it too.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let arch = if self.roberta_positions() {
            "XLMRobertaForMaskedLM"
        } else {
            "BertForMaskedLM"
        };
        v["architectures"] = serde_json::json!([arch]);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hf_config_fields() {
        // The head of sentence-transformers/all-MiniLM-L6-v2's config.json.
        let json = r#"{"_name_or_path": "nreimers/MiniLM-L6-H384-uncased",
            "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
            "gradient_checkpointing": false, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "hidden_size": 384, "initializer_range": 0.02, "intermediate_size": 1536,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
            "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
            "position_embedding_type": "absolute", "transformers_version": "4.8.2",
            "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522}"#;
        let cfg: BertConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg, BertConfig::all_minilm_l6_v2());
        assert!(!cfg.roberta_positions());
        assert_eq!(cfg.head_dim(), 32);
    }

    #[test]
    fn xlmr_reserves_padding_positions() {
        let cfg = BertConfig::xlm_roberta_base();
        assert!(cfg.roberta_positions());
        assert_eq!(cfg.max_tokens(), 512);
        assert_eq!(cfg.base_model_prefix(), "roberta");
    }
}
