//! The demo text backbone: a small multilingual BERT that this project pretrains itself, so text
//! demos need nothing downloaded. It is trained from scratch by masked language modelling, as BERT
//! was, on generated reviews in English, German and French (so every word, the sentiment words
//! included, gets a representation from its context), then stored like the vision demo backbone in
//! the Hugging Face hub-cache layout under `$PEFTBENCH_CACHE/hub/models--peftbench--demo-bert/`,
//! with a word-level `tokenizer.json` built from the generated vocabulary (a real `tokenizers`
//! file, which Python loads too). Upstream never sees a label, so the downstream demo (sentiment
//! under negation, which no linear probe of the frozen encoder solves) needs what adaptation adds.
//! The languages share no words and nothing aligns them, so zero-shot transfer between them stays
//! near chance: the gap language adapters are for. The snapshot name is a hash of the recipe, so
//! a changed recipe retrains.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use candle_core::Var;
use candle_core::{Device, Tensor};
use peftbench_backbones::{Bert, BertConfig, MlmHead, ResolvedCheckpoint, TextEncoder};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_text::alignment::NO_LABEL;
use peftbench_data_text::synthetic::{review_topics, NEGATION_LANGUAGES};
use peftbench_data_text::TextExample;
use peftbench_data_text::{mask_tokens, MaskingConfig};
use peftbench_methods::PeftModel;
use peftbench_train::{evaluate, InMemoryBatches, TrainModel, IGNORE_LABEL};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokenizers::tokenizer::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
use tokenizers::Tokenizer;

use crate::pretraining::{
    backbone_tensors, cached_or_pretrained, recipe_commit, run_pretraining, DemoSnapshot,
    PretrainSettings, Pretrained,
};
use crate::Paths;

/// The `backbone.checkpoint` value that selects this backbone in a suite.
pub const DEMO_TEXT_CHECKPOINT: &str = "demo-text";
/// Its hub id in the project cache.
pub const DEMO_TEXT_REPO_ID: &str = "peftbench/demo-bert";
/// Tokens per text, special tokens included (the generated reviews are at most 12 words).
pub const DEMO_TEXT_MAX_TOKENS: usize = 24;

/// The special tokens, at these ids (`[PAD]` = 0 = BERT's `pad_token_id`).
const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Everything that determines the demo text backbone's weights.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoTextRecipe {
    /// Sizes only: the vocabulary size is the tokenizer's.
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub languages: Vec<&'static str>,
    /// Upstream examples per language.
    pub train_examples: usize,
    pub eval_examples: usize,
    /// Differently masked copies of each text per epoch (BERT's 15% / 80-10-10 corruption).
    pub masked_copies: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for DemoTextRecipe {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            num_layers: 2,
            num_heads: 4,
            intermediate_size: 128,
            languages: NEGATION_LANGUAGES.to_vec(),
            train_examples: 600,
            eval_examples: 100,
            masked_copies: 3,
            epochs: 8,
            batch_size: 32,
            lr: 2e-3,
            weight_decay: 0.01,
            seed: 0,
        }
    }
}

impl DemoTextRecipe {
    /// The snapshot name: a hash of the recipe (and this file's format version: v3 keeps the
    /// MLM head).
    pub fn commit(&self) -> String {
        recipe_commit("demo-text-v3", self)
    }

    fn upstream(&self, split_seed: u64, per_language: usize) -> Vec<TextExample> {
        self.languages
            .iter()
            .enumerate()
            .flat_map(|(i, lang)| {
                review_topics(lang, per_language, self.seed ^ split_seed ^ i as u64)
                    .expect("generated language")
            })
            .collect()
    }

    /// The encoder's configuration for a tokenizer of `vocab_size` tokens.
    pub fn config(&self, vocab_size: usize) -> BertConfig {
        let mut cfg = BertConfig::new(
            vocab_size,
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.intermediate_size,
        );
        cfg.max_position_embeddings = 64;
        cfg.type_vocab_size = 2;
        cfg
    }
}

/// A demo text checkpoint: the encoder's files and its `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct DemoTextFiles {
    pub checkpoint: ResolvedCheckpoint,
    pub tokenizer: PathBuf,
}

/// The demo text backbone's files, pretraining it first if the cache has no snapshot for the
/// recipe.
pub fn ensure_demo_text_backbone(paths: &Paths, quiet: bool) -> anyhow::Result<DemoTextFiles> {
    let recipe = DemoTextRecipe::default();
    let snapshot = DemoSnapshot {
        repo_id: DEMO_TEXT_REPO_ID,
        commit: recipe.commit(),
        extra_files: &["tokenizer.json"],
        name: "demo text backbone",
        upstream: format!(
            "generated reviews in {} by masked language modelling",
            recipe.languages.join(", ")
        ),
    };
    let checkpoint = cached_or_pretrained(paths, &snapshot, quiet, || {
        let tokenizer = word_level_tokenizer(&recipe.upstream(0x766f_6361, recipe.train_examples))?;
        let (tensors, config, accuracy) = pretrain(&recipe, &tokenizer, quiet)?;
        let tokenizer_json = tokenizer
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
        Ok(Pretrained {
            config: config.to_hf_json(),
            tensors,
            card: serde_json::json!({
                "recipe": recipe,
                "held_out_masked_token_accuracy": accuracy,
            }),
            extra: vec![("tokenizer.json", tokenizer_json)],
            summary: format!(
                "{:.1}% masked-token accuracy on held-out reviews",
                100.0 * accuracy
            ),
        })
    })?;
    Ok(DemoTextFiles {
        tokenizer: checkpoint.config.with_file_name("tokenizer.json"),
        checkpoint,
    })
}

/// A BERT-style word-level tokenizer (BERT normalisation and pre-tokenisation, `[CLS] text
/// [SEP]`) whose vocabulary is every word of `corpus`, after the special tokens.
pub fn word_level_tokenizer(corpus: &[TextExample]) -> anyhow::Result<Tokenizer> {
    let mut words = BTreeSet::new();
    let pre_tokenizer = tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    for example in corpus {
        let mut text = PreTokenizedString::from(example.text.to_lowercase().as_str());
        pre_tokenizer
            .pre_tokenize(&mut text)
            .map_err(|e| anyhow::anyhow!("pre-tokenising `{}`: {e}", example.text))?;
        for (word, _, _) in text.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            words.insert(word.to_string());
        }
    }
    let vocab: BTreeMap<String, u32> = SPECIAL_TOKENS
        .iter()
        .map(|t| t.to_string())
        .chain(words)
        .enumerate()
        .map(|(i, w)| (w, i as u32))
        .collect();
    let added: Vec<serde_json::Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, content)| {
            serde_json::json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            })
        })
        .collect();
    let special =
        |token: &str| serde_json::json!({ "id": token, "ids": [vocab[token]], "tokens": [token] });
    // The `tokenizer.json` layout of Hugging Face `tokenizers`, written out so the file is the
    // same one Python would read.
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {
            "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": false, "lowercase": true
        },
        "pre_tokenizer": { "type": "BertPreTokenizer" },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                { "SpecialToken": { "id": "[CLS]", "type_id": 0 } },
                { "Sequence": { "id": "A", "type_id": 0 } },
                { "SpecialToken": { "id": "[SEP]", "type_id": 0 } }
            ],
            "pair": [
                { "SpecialToken": { "id": "[CLS]", "type_id": 0 } },
                { "Sequence": { "id": "A", "type_id": 0 } },
                { "SpecialToken": { "id": "[SEP]", "type_id": 0 } },
                { "Sequence": { "id": "B", "type_id": 1 } },
                { "SpecialToken": { "id": "[SEP]", "type_id": 1 } }
            ],
            "special_tokens": { "[CLS]": special("[CLS]"), "[SEP]": special("[SEP]") }
        },
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]" }
    });
    json.to_string()
        .parse::<Tokenizer>()
        .map_err(|e| anyhow::anyhow!("building the demo tokenizer: {e}"))
}

/// `copies` corruptions of every text (BERT's masking, a different draw per copy): token ids and
/// per-token labels (the original id at corrupted positions, [`IGNORE_LABEL`] elsewhere).
pub(crate) fn masked_copies(
    encoder: &TextEncoder,
    texts: &[TextExample],
    copies: usize,
    seed: u64,
    device: &Device,
) -> anyhow::Result<InMemoryBatches> {
    let strs: Vec<&str> = texts.iter().map(|e| e.text.as_str()).collect();
    let batch = encoder.encode(&strs)?;
    let width = batch.width();
    // BERT's and RoBERTa's special tokens, those the vocabulary has: never masked, never drawn.
    let special: Vec<u32> = SPECIAL_TOKENS
        .iter()
        .chain(&["<s>", "</s>", "<pad>", "<unk>", "<mask>"])
        .filter_map(|t| encoder.token_to_id(t))
        .collect();
    let mask_id = ["[MASK]", "<mask>"]
        .iter()
        .find_map(|t| encoder.token_to_id(t))
        .ok_or_else(|| anyhow::anyhow!("the tokenizer has no mask token ([MASK] or <mask>)"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..copies {
        for row in &batch.ids {
            let mut row = row.clone();
            row.resize(width, encoder.pad_id());
            let maskable: Vec<bool> = row.iter().map(|id| !special.contains(id)).collect();
            let row_labels = mask_tokens(
                &mut row,
                &maskable,
                mask_id,
                encoder.vocab_size() as u32,
                &special,
                &MaskingConfig::default(),
                &mut rng,
            );
            ids.extend(row);
            // The corruption's "no label" is the loss's ignore value.
            labels.extend(row_labels.into_iter().map(
                |l| {
                    if l == NO_LABEL {
                        IGNORE_LABEL
                    } else {
                        l
                    }
                },
            ));
        }
    }
    let n = ids.len() / width;
    InMemoryBatches::new(
        Tensor::from_vec(ids, (n, width), device)?,
        Tensor::from_vec(labels, (n, width), device)?,
    )
}

/// The encoder with BERT's masked-language-model head, whose decoder is tied to the word
/// embeddings: per-token vocabulary logits `[B, T, V]`.
struct MaskedLm<'a> {
    model: &'a PeftModel,
    head: MlmHead,
    word_embeddings: Tensor,
    trainable: NamedVars,
}

impl<'a> MaskedLm<'a> {
    fn new(model: &'a PeftModel, config: &BertConfig, init: &SeededInit) -> anyhow::Result<Self> {
        let mut head = MlmHead::random(config, &init.fork("mlm"))?;
        let mut trainable = model.trainable().clone();
        head.visit_params(&mut |name, t| {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            trainable.push(name, var);
            Ok(())
        })?;
        let word_embeddings = model
            .trainable()
            .iter()
            .find(|v| v.name.ends_with("embeddings.word_embeddings.weight"))
            .map(|v| v.var.as_tensor().clone())
            .ok_or_else(|| {
                anyhow::anyhow!("full fine-tuning does not train the word embeddings")
            })?;
        Ok(Self {
            model,
            head,
            word_embeddings,
            trainable,
        })
    }
}

impl TrainModel for MaskedLm<'_> {
    fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let states = self.model.sequence_features(input, ctx)?;
        self.head.forward(&states, &self.word_embeddings)
    }
}

/// Trains the encoder from scratch by masked language modelling; returns its weights (HF
/// `BertModel` names), configuration and held-out masked-token accuracy.
fn pretrain(
    recipe: &DemoTextRecipe,
    tokenizer: &Tokenizer,
    quiet: bool,
) -> anyhow::Result<(std::collections::HashMap<String, Tensor>, BertConfig, f64)> {
    let device = Device::Cpu;
    let encoder = TextEncoder::new(tokenizer.clone(), DEMO_TEXT_MAX_TOKENS)?;
    let config = recipe.config(encoder.vocab_size());
    let train_set = masked_copies(
        &encoder,
        &recipe.upstream(0x7261_696e, recipe.train_examples),
        recipe.masked_copies,
        recipe.seed ^ 0x6d6c_6d00,
        &device,
    )?;
    let eval_set = masked_copies(
        &encoder,
        &recipe.upstream(0x6576_616c, recipe.eval_examples),
        1,
        recipe.seed ^ 0x6d6c_6d01,
        &device,
    )?;
    let init = SeededInit::new(recipe.seed, &device);
    let bert = Bert::random(config.clone(), &init.fork("backbone"))?;
    // Full fine-tuning's model makes every encoder weight trainable; its classification head is
    // not used (and, without a gradient, not updated).
    let mut model = PeftModel::new("full", &serde_json::json!({}), Box::new(bert), 2, &init)?;
    let masked_lm = MaskedLm::new(&model, &config, &init)?;
    let cfg = PretrainSettings {
        epochs: recipe.epochs,
        batch_size: recipe.batch_size,
        lr: recipe.lr,
        weight_decay: recipe.weight_decay,
        label_smoothing: 0.0,
        seed: recipe.seed,
    }
    .train_config();
    run_pretraining("demo text backbone", &masked_lm, &train_set, &cfg, quiet)?;
    let accuracy = evaluate(&masked_lm, &eval_set, 256)?.accuracy;
    // The MLM head is kept, as in BERT's checkpoints (`cls.predictions.*`): language adapters are
    // trained against it.
    let head: Vec<(String, Tensor)> = masked_lm
        .trainable
        .iter()
        .filter(|v| v.name.starts_with("cls."))
        .map(|v| Ok((v.name.clone(), v.var.as_tensor().detach().copy()?)))
        .collect::<candle_core::Result<_>>()?;
    drop(masked_lm);
    let mut tensors = backbone_tensors(&mut model, "")?;
    tensors.extend(head);
    Ok((tensors, config, accuracy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokenizer_knows_every_generated_word_in_every_language() {
        let recipe = DemoTextRecipe::default();
        let corpus = recipe.upstream(1, 200);
        let tokenizer = word_level_tokenizer(&corpus).unwrap();
        assert_eq!(tokenizer.token_to_id("[PAD]"), Some(0));
        let encoder = TextEncoder::new(tokenizer.clone(), DEMO_TEXT_MAX_TOKENS).unwrap();
        assert_eq!(encoder.pad_id(), 0);
        let unk = tokenizer.token_to_id("[UNK]").unwrap();
        let cls = tokenizer.token_to_id("[CLS]").unwrap();
        let sep = tokenizer.token_to_id("[SEP]").unwrap();
        // Other draws of the same generator use no word outside the vocabulary.
        for ex in recipe.upstream(2, 50) {
            let enc = tokenizer.encode(ex.text.as_str(), true).unwrap();
            let ids = enc.get_ids();
            assert_eq!((ids[0], *ids.last().unwrap()), (cls, sep), "{}", ex.text);
            assert!(!ids.contains(&unk), "unknown word in `{}`", ex.text);
            assert!(ids.len() <= DEMO_TEXT_MAX_TOKENS, "{}", ex.text);
        }
        // Punctuation and elision are split as BERT does: `n'était` -> n ' était.
        let enc = tokenizer.encode("le film n'était pas bon.", true).unwrap();
        assert_eq!(
            enc.get_tokens(),
            ["[CLS]", "le", "film", "n", "'", "était", "pas", "bon", ".", "[SEP]"]
        );
    }
}
