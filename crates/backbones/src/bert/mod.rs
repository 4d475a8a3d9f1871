//! BERT (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
//! Understanding", arXiv:1810.04805) and XLM-RoBERTa (Conneau et al., 2020, "Unsupervised
//! Cross-lingual Representation Learning at Scale", arXiv:1911.02116) with PEFT sites, loading
//! Hugging Face `BertModel` / `XLMRobertaModel` checkpoints (with or without their `bert.` /
//! `roberta.` prefix) such as `bert-base-multilingual-cased`, `xlm-roberta-base` and
//! `sentence-transformers/all-MiniLM-L6-v2`. The two share one implementation: XLM-R differs only
//! in numbering positions from `pad_token_id + 1` ([`BertConfig::roberta_positions`]).
//!
//! Inputs are token ids `[batch, tokens]` from [`TextEncoder`] (a `tokenizer.json` wrapper); through
//! the [`crate::Backbone`] trait the padding mask is derived from `pad_token_id`, as RoBERTa derives
//! its positions, while [`Bert::forward_tokens`] also takes an explicit mask and segment ids.

mod config;
mod mlm;
mod model;
mod packaged;
mod tokenizer;

pub use config::BertConfig;
pub use mlm::MlmHead;
pub use model::{split_pair_input, Bert, Pooling};
pub use packaged::{find_minilm, MINILM_ENV};
pub use tokenizer::{TextEncoder, TokenizedBatch};
