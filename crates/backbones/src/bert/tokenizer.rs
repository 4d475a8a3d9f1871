//! Tokenisation with Hugging Face `tokenizers` from a checkpoint's `tokenizer.json`, padded into
//! rectangular batches the encoder reads.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{EncodeInput, Encoding, Tokenizer, TruncationParams};

/// A tokenizer that truncates to `max_tokens` (special tokens included) and pads batches to their
/// longest member with the tokenizer's padding token.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pad_id: u32,
    max_tokens: usize,
}

/// Token ids, attention mask, segment ids and word alignment of a padded batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedBatch {
    /// `[batch][tokens]`, padded with the padding id.
    pub ids: Vec<Vec<u32>>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
    /// Segment of each token (0 for the first text, 1 for the second of a pair).
    pub type_ids: Vec<Vec<u32>>,
    /// For pre-split input: the index of the word each token comes from (`None` for special
    /// tokens and padding).
    pub word_ids: Vec<Vec<Option<u32>>>,
}

impl TokenizedBatch {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Tokens per row (after padding).
    pub fn width(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    fn tensor(rows: &[Vec<u32>], width: usize, device: &Device) -> candle_core::Result<Tensor> {
        let flat: Vec<u32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), width), device)
    }

    /// Ids and segment ids stacked as `[batch, 2, tokens]`: the input a text backbone reads for
    /// sentence pairs (see [`crate::bert::split_pair_input`]).
    pub fn pair_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        let w = self.width();
        Tensor::stack(
            &[
                Self::tensor(&self.ids, w, device)?,
                Self::tensor(&self.type_ids, w, device)?,
            ],
            1,
        )
    }

    /// `(ids, attention_mask, type_ids)` as u32 tensors `[batch, tokens]`.
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let w = self.width();
        Ok((
            Self::tensor(&self.ids, w, device)?,
            Self::tensor(&self.attention_mask, w, device)?,
            Self::tensor(&self.type_ids, w, device)?,
        ))
    }
}

impl TextEncoder {
    /// Loads `tokenizer.json`. The padding token is the one the file configures, else `[PAD]` or
    /// `<pad>`.
    pub fn from_file(path: &Path, max_tokens: usize) -> anyhow::Result<Self> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read tokenizer: {e}", path.display()))?;
        Self::new(tokenizer, max_tokens).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Wraps a tokenizer (e.g. one the project trained), truncating to `max_tokens`.
    pub fn new(mut tokenizer: Tokenizer, max_tokens: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            max_tokens >= 2,
            "max_tokens must leave room for special tokens"
        );
        let pad_id = match tokenizer.get_padding() {
            Some(p) => p.pad_id,
            None => ["[PAD]", "<pad>"]
                .iter()
                .find_map(|t| tokenizer.token_to_id(t))
                .ok_or_else(|| anyhow::anyhow!("the tokenizer has no padding token"))?,
        };
        // Padding is done here, to the batch's longest row; the tokenizer only truncates.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("cannot set truncation: {e}"))?;
        Ok(Self {
            tokenizer,
            pad_id,
            max_tokens,
        })
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn run<'s>(&self, inputs: Vec<EncodeInput<'s>>) -> anyhow::Result<TokenizedBatch> {
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| anyhow::anyhow!("tokenisation failed: {e}"))?;
        Ok(self.pad(&encodings))
    }

    fn pad(&self, encodings: &[Encoding]) -> TokenizedBatch {
        let width = encodings.iter().map(Encoding::len).max().unwrap_or(0);
        let mut batch = TokenizedBatch {
            ids: Vec::with_capacity(encodings.len()),
            attention_mask: Vec::with_capacity(encodings.len()),
            type_ids: Vec::with_capacity(encodings.len()),
            word_ids: Vec::with_capacity(encodings.len()),
        };
        for e in encodings {
            let pad = width - e.len();
            let fill = |v: &[u32], with: u32| {
                let mut row = v.to_vec();
                row.resize(width, with);
                row
            };
            batch.ids.push(fill(e.get_ids(), self.pad_id));
            batch.attention_mask.push(fill(e.get_attention_mask(), 0));
            batch.type_ids.push(fill(e.get_type_ids(), 0));
            let mut words = e.get_word_ids().to_vec();
            words.extend(std::iter::repeat_n(None, pad));
            batch.word_ids.push(words);
        }
        batch
    }

    /// Single texts, with special tokens.
    pub fn encode(&self, texts: &[&str]) -> anyhow::Result<TokenizedBatch> {
        self.run(texts.iter().map(|&t| EncodeInput::from(t)).collect())
    }

    /// Text pairs (query, passage) as one sequence with segment ids 0 and 1.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> anyhow::Result<TokenizedBatch> {
        self.run(
            pairs
                .iter()
                .map(|&(a, b)| EncodeInput::from((a, b)))
                .collect(),
        )
    }

    /// Texts already split into words (CoNLL tokens); `word_ids` maps tokens back to words.
    pub fn encode_words(&self, sentences: &[Vec<String>]) -> anyhow::Result<TokenizedBatch> {
        self.run(
            sentences
                .iter()
                .map(|words| EncodeInput::from(words.as_slice()))
                .collect(),
        )
    }
}
