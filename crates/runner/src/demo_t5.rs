//! The vision-language demo's language model: a tiny T5 encoder-decoder that this project
//! pretrains itself, so `harness suite demo-vl` needs nothing downloaded. VL-Adapter starts from a
//! text-only T5 (`t5-base`) and teaches it to read images during adaptation; the demo does the
//! same, so this model never sees an image: it learns the demo's language from generated
//! sentences (a corpus function the caller passes, the scenes' descriptions) and nothing else.
//!
//! It is shaped like `t5-base` in miniature (ReLU feed-forward, head tied to the embeddings, T5's
//! relative position buckets) with a word-level `tokenizer.json` over the corpus's words at T5's
//! special ids (`<pad>` 0, `</s>` 1, `<unk>` 2) and sentinels `<extra_id_N>` at the top of the
//! vocabulary as in T5's. It is trained on all weights with T5's span corruption (random word
//! spans replaced by sentinels in the input; the target lists each sentinel followed by the words
//! it replaced, then `</s>`) and, for a share of the examples, prefix language modelling (the
//! target continues the input's opening words to `</s>`), so the decoder also learns to write
//! whole phrases. Each epoch draws new spans. Dropout is off in pretraining and on (0.1) in the
//! saved configuration, as for T5 v1.1.
//!
//! The snapshot is stored like the other demo backbones in the Hugging Face hub-cache layout under
//! `$PEFTBENCH_CACHE/hub/models--peftbench--demo-t5/` (`config.json`, `model.safetensors` under
//! `T5ForConditionalGeneration` names, `tokenizer.json`) and loaded back through the same
//! checkpoint code as a real download. Its name hashes the recipe and a fingerprint of the
//! generated corpus, so a changed recipe or a changed sentence generator retrains.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use peftbench_backbones::t5::FeedForwardProj;
use peftbench_backbones::{Backbone, NoHooks, ResolvedCheckpoint, T5Config, T5};
use peftbench_core::shuffle::permutation;
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_train::{derive_seed, evaluate, Batch, BatchSource, TrainModel, IGNORE_LABEL};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use tokenizers::tokenizer::{
    Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
};
use tokenizers::Tokenizer;

use crate::pretraining::{
    cached_or_pretrained, recipe_commit, run_pretraining, DemoSnapshot, PretrainSettings,
    Pretrained,
};
use crate::Paths;

/// The `backbone.checkpoint` value that selects this model in a suite.
pub const DEMO_T5_CHECKPOINT: &str = "demo-t5";
/// Its hub id in the project cache.
pub const DEMO_T5_REPO_ID: &str = "peftbench/demo-t5";

/// T5's special tokens, at T5's ids: `<pad>` (also the decoder's start token), `</s>`, `<unk>`.
const SPECIAL_TOKENS: [&str; 3] = ["<pad>", "</s>", "<unk>"];
const PAD_ID: u32 = 0;
const EOS_ID: u32 = 1;

/// Purposes mixed into the recipe's seed so the corpora and corruptions never share a stream.
const TRAIN_CORPUS: u64 = 0x7472_6169_6e00; // "train"
const EVAL_CORPUS: u64 = 0x6576_616c_0000; // "eval"
const EVAL_CORRUPTION: u64 = 0x6e6f_6973_6500; // "noise"
const BATCH_ORDER: u64 = 0x6f72_6465_7200; // "order"

/// Batches per pool that a shuffled pass sorts by length: wide enough to find sentences of
/// similar length, narrow enough that a pool is still a random draw from the epoch.
const LENGTH_POOL_BATCHES: usize = 16;

/// Everything that determines the demo T5's weights, besides the corpus (whose fingerprint joins
/// the snapshot name).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoT5Recipe {
    /// Architecture; the vocabulary size is the tokenizer's.
    pub d_model: usize,
    pub d_kv: usize,
    pub num_heads: usize,
    pub d_ff: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub feed_forward_proj: FeedForwardProj,
    pub tie_word_embeddings: bool,
    /// The dropout the saved configuration gives fine-tuning; pretraining runs without.
    pub fine_tuning_dropout: f64,
    /// Sentinel tokens `<extra_id_0>`..: at most this many spans per example.
    pub sentinels: usize,
    /// Words (tokens) kept of each sentence.
    pub max_words: usize,
    /// Sentences drawn from the corpus function for training and for the held-out check.
    pub train_sentences: usize,
    pub eval_sentences: usize,
    /// Span corruption: the share of a sentence's words dropped, and the mean span length.
    pub noise_density: f64,
    pub mean_noise_span_length: f64,
    /// The share of examples that are prefix language modelling instead of span corruption.
    pub prefix_lm_share: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for DemoT5Recipe {
    fn default() -> Self {
        Self {
            d_model: 64,
            d_kv: 16,
            num_heads: 4,
            d_ff: 128,
            encoder_layers: 2,
            decoder_layers: 2,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            // `t5-base`, VL-Adapter's starting point: ReLU and a tied head.
            feed_forward_proj: FeedForwardProj::Relu,
            tie_word_embeddings: true,
            fine_tuning_dropout: 0.1,
            sentinels: 8,
            max_words: 32,
            train_sentences: 4000,
            eval_sentences: 200,
            // Words, not T5's word pieces (its spans of 3 pieces are a word or two), and denser
            // than its 15%: the demo's sentences are a dozen words. On the demo's corpus these
            // settings had greedy decoding write back 35% of one-word gaps in held-out sentences,
            // against 22% with spans of 2 at 25% and 13% with T5's spans of 3 at 15%.
            noise_density: 0.2,
            mean_noise_span_length: 1.0,
            prefix_lm_share: 0.25,
            // About 16 s single-threaded in a release build; 6 epochs of batches of 32 came out
            // as good as 10 of 64 (held-out loss 0.56 against 0.50, target-token accuracy 79%
            // against 78%) in two thirds of the time.
            epochs: 6,
            batch_size: 32,
            lr: 2e-3,
            weight_decay: 0.01,
            seed: 0,
        }
    }
}

impl DemoT5Recipe {
    /// The snapshot name: a hash of the recipe, the corpus fingerprint and this file's format
    /// version.
    pub fn commit(&self, corpus_fingerprint: &str) -> String {
        recipe_commit(
            "demo-t5-v1",
            &serde_json::json!({ "recipe": self, "corpus": corpus_fingerprint }),
        )
    }

    /// The model's configuration for a tokenizer of `vocab_size` tokens, with `dropout_rate`.
    pub fn config(&self, vocab_size: usize, dropout_rate: f64) -> T5Config {
        T5Config {
            vocab_size,
            d_model: self.d_model,
            d_kv: self.d_kv,
            d_ff: self.d_ff,
            num_layers: self.encoder_layers,
            num_decoder_layers: Some(self.decoder_layers),
            num_heads: self.num_heads,
            relative_attention_num_buckets: self.relative_attention_num_buckets,
            relative_attention_max_distance: self.relative_attention_max_distance,
            dropout_rate,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: self.feed_forward_proj,
            tie_word_embeddings: self.tie_word_embeddings,
            scale_decoder_outputs: None,
            decoder_start_token_id: PAD_ID,
            pad_token_id: PAD_ID,
            eos_token_id: EOS_ID,
        }
    }
}

/// The demo T5's files: the checkpoint and its `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct DemoT5Files {
    pub checkpoint: ResolvedCheckpoint,
    pub tokenizer: PathBuf,
}

/// The demo T5 of the default recipe, pretrained on `corpus(seed, n)` (`n` generated sentences)
/// first if the cache has no snapshot for the recipe and corpus.
pub fn demo_t5(
    paths: &Paths,
    corpus: &dyn Fn(u64, usize) -> Vec<String>,
    quiet: bool,
) -> anyhow::Result<DemoT5Files> {
    ensure_demo_t5(paths, &DemoT5Recipe::default(), corpus, quiet)
}

/// [`demo_t5`] for any recipe.
pub fn ensure_demo_t5(
    paths: &Paths,
    recipe: &DemoT5Recipe,
    corpus: &dyn Fn(u64, usize) -> Vec<String>,
    quiet: bool,
) -> anyhow::Result<DemoT5Files> {
    let texts = CorpusSplits::draw(recipe, corpus);
    let checkpoint = cached_or_pretrained(paths, &texts.snapshot(recipe), quiet, || {
        pretrain(recipe, &texts, quiet).map(|(files, _)| files)
    })?;
    Ok(DemoT5Files {
        tokenizer: checkpoint.config.with_file_name("tokenizer.json"),
        checkpoint,
    })
}

/// The generated sentences of one recipe.
struct CorpusSplits {
    train: Vec<String>,
    eval: Vec<String>,
}

impl CorpusSplits {
    fn draw(recipe: &DemoT5Recipe, corpus: &dyn Fn(u64, usize) -> Vec<String>) -> Self {
        Self {
            train: corpus(recipe.seed ^ TRAIN_CORPUS, recipe.train_sentences),
            eval: corpus(recipe.seed ^ EVAL_CORPUS, recipe.eval_sentences),
        }
    }

    /// SHA-256 of every sentence, each split's sentences one per line, first 16 bytes in hex.
    fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for split in [&self.train, &self.eval] {
            for sentence in split {
                hash.update(sentence.as_bytes());
                hash.update(b"\n");
            }
            hash.update(b"\0");
        }
        hash.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn snapshot(&self, recipe: &DemoT5Recipe) -> DemoSnapshot<'static> {
        DemoSnapshot {
            repo_id: DEMO_T5_REPO_ID,
            commit: recipe.commit(&self.fingerprint()),
            extra_files: &["tokenizer.json"],
            name: "demo T5",
            upstream: format!(
                "{} generated sentences by span corruption",
                self.train.len()
            ),
        }
    }
}

/// A T5-style word-level tokenizer: lowercased, split at whitespace and around each punctuation
/// mark, `</s>` appended; its vocabulary is T5's special tokens, every word of `corpus` in sorted
/// order, then `sentinels` sentinel tokens with `<extra_id_0>` the last id (as in T5's
/// vocabulary). Decoding joins the words with spaces, special tokens and sentinels skipped.
pub fn word_level_tokenizer(corpus: &[String], sentinels: usize) -> anyhow::Result<Tokenizer> {
    // The same pipeline with only the special tokens splits the corpus into its words.
    let splitter = tokenizer_from_vocab(&[], 0)?;
    let normalizer = splitter.get_normalizer().expect("the tokenizer lowercases");
    let pre_tokenizer = splitter.get_pre_tokenizer().expect("the tokenizer splits");
    let mut words = BTreeSet::new();
    for sentence in corpus {
        let mut text = PreTokenizedString::from(sentence.as_str());
        text.normalize(|s| normalizer.normalize(s))
            .and_then(|()| pre_tokenizer.pre_tokenize(&mut text))
            .map_err(|e| anyhow::anyhow!("splitting `{sentence}`: {e}"))?;
        for (word, _, _) in text.get_splits(OffsetReferential::Normalized, OffsetType::Byte) {
            words.insert(word.to_string());
        }
    }
    tokenizer_from_vocab(&words.into_iter().collect::<Vec<_>>(), sentinels)
}

/// The sentinel token replacing the `index`-th dropped span.
fn sentinel(index: usize) -> String {
    format!("<extra_id_{index}>")
}

/// The tokenizer over `words`, written as a Hugging Face `tokenizer.json` so the file is the one
/// Python's `tokenizers` reads too.
fn tokenizer_from_vocab(words: &[String], sentinels: usize) -> anyhow::Result<Tokenizer> {
    let sentinel_tokens: Vec<String> = (0..sentinels).rev().map(sentinel).collect();
    let specials: Vec<&str> = SPECIAL_TOKENS
        .iter()
        .copied()
        .chain(sentinel_tokens.iter().map(String::as_str))
        .collect();
    let ordered: Vec<&str> = SPECIAL_TOKENS
        .iter()
        .copied()
        .chain(words.iter().map(String::as_str))
        .chain(sentinel_tokens.iter().map(String::as_str))
        .collect();
    let vocab: BTreeMap<&str, u32> = ordered
        .iter()
        .enumerate()
        .map(|(id, &w)| (w, id as u32))
        .collect();
    anyhow::ensure!(
        vocab.len() == ordered.len(),
        "the demo vocabulary repeats a token"
    );
    let added: Vec<serde_json::Value> = specials
        .iter()
        .map(|content| {
            serde_json::json!({
                "id": vocab[content], "content": content, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true
            })
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": { "type": "Lowercase" },
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                { "type": "WhitespaceSplit" },
                { "type": "Punctuation", "behavior": "Isolated" }
            ]
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                { "Sequence": { "id": "A", "type_id": 0 } },
                { "SpecialToken": { "id": "</s>", "type_id": 0 } }
            ],
            "pair": [
                { "Sequence": { "id": "A", "type_id": 0 } },
                { "SpecialToken": { "id": "</s>", "type_id": 0 } },
                { "Sequence": { "id": "B", "type_id": 0 } },
                { "SpecialToken": { "id": "</s>", "type_id": 0 } }
            ],
            "special_tokens": {
                "</s>": { "id": "</s>", "ids": [EOS_ID], "tokens": ["</s>"] }
            }
        },
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "<unk>" }
    });
    json.to_string()
        .parse::<Tokenizer>()
        .map_err(|e| anyhow::anyhow!("building the demo T5 tokenizer: {e}"))
}

/// The configuration as `config.json` of a Hugging Face `T5ForConditionalGeneration`.
fn hf_config(config: &T5Config) -> serde_json::Value {
    let mut json = serde_json::to_value(config).expect("a T5 configuration serialises");
    let fields = json.as_object_mut().expect("a configuration is an object");
    fields.insert("model_type".into(), "t5".into());
    fields.insert(
        "architectures".into(),
        serde_json::json!(["T5ForConditionalGeneration"]),
    );
    fields.insert("is_encoder_decoder".into(), true.into());
    json
}

/// T5's `random_spans_noise_mask`: which of `length` words (at least 2) are dropped. About
/// `density` of them, at least one and never all, in spans of mean length `mean_span` (at most
/// `max_spans` spans), kept and dropped runs alternating, starting with kept words.
fn noise_mask(
    length: usize,
    density: f64,
    mean_span: f64,
    max_spans: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<bool> {
    let noise = ((length as f64 * density).round() as usize).clamp(1, length - 1);
    let spans = ((noise as f64 / mean_span).round() as usize)
        .clamp(1, noise.min(length - noise).min(max_spans));
    let dropped = random_segmentation(noise, spans, rng);
    let kept = random_segmentation(length - noise, spans, rng);
    let mut mask = Vec::with_capacity(length);
    for (&k, &d) in kept.iter().zip(&dropped) {
        mask.extend(std::iter::repeat_n(false, k));
        mask.extend(std::iter::repeat_n(true, d));
    }
    mask
}

/// The lengths of `items` split into `segments` non-empty runs at uniformly drawn cut points.
fn random_segmentation(items: usize, segments: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut ends: Vec<usize> = sample(rng, items - 1, segments - 1)
        .into_iter()
        .map(|cut| cut + 1)
        .collect();
    ends.sort_unstable();
    ends.push(items);
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let run = end - start;
            start = end;
            run
        })
        .collect()
}

/// Span corruption of `words` by `mask`: the input keeps the words with each dropped span
/// replaced by the next sentinel; the target is each sentinel followed by the words it replaced.
/// Both end with `</s>`.
fn span_corruption(words: &[u32], mask: &[bool], sentinels: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let (mut input, mut target) = (Vec::new(), Vec::new());
    let mut spans = sentinels.iter();
    for (i, (&word, &dropped)) in words.iter().zip(mask).enumerate() {
        if !dropped {
            input.push(word);
            continue;
        }
        if i == 0 || !mask[i - 1] {
            let sentinel = *spans.next().expect("no more spans than sentinels");
            input.push(sentinel);
            target.push(sentinel);
        }
        target.push(word);
    }
    input.push(EOS_ID);
    target.push(EOS_ID);
    (input, target)
}

/// Sentences as pretraining examples (encoder input, target), drawn anew for every epoch: each
/// shuffled pass corrupts with its shuffle seed, the unshuffled (held-out) pass with a fixed one.
struct Denoising<'a> {
    /// Each sentence's token ids, without `</s>`.
    sentences: Vec<Vec<u32>>,
    recipe: &'a DemoT5Recipe,
    /// `<extra_id_0>`, `<extra_id_1>`, ...
    sentinels: Vec<u32>,
    device: Device,
}

impl<'a> Denoising<'a> {
    /// `texts` tokenised, cut to the recipe's words; sentences of one word (nothing to corrupt
    /// and keep) are left out.
    fn new(
        tokenizer: &Tokenizer,
        texts: &[String],
        recipe: &'a DemoT5Recipe,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let encodings = tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect(), false)
            .map_err(|e| anyhow::anyhow!("tokenising the demo T5 corpus: {e}"))?;
        let sentences = encodings
            .iter()
            .map(|e| e.get_ids()[..e.len().min(recipe.max_words)].to_vec())
            .filter(|ids| ids.len() >= 2)
            .collect();
        let sentinels = (0..recipe.sentinels)
            .map(|i| {
                tokenizer
                    .token_to_id(&sentinel(i))
                    .ok_or_else(|| anyhow::anyhow!("the tokenizer lacks {}", sentinel(i)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            sentences,
            recipe,
            sentinels,
            device: device.clone(),
        })
    }

    /// Sentence `index` as an example of the pass with `seed`: prefix language modelling for a
    /// `prefix_lm_share` of the draws (the input is the opening words, the target the rest),
    /// span corruption otherwise.
    fn example(&self, index: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
        let words = &self.sentences[index];
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(&[seed, index as u64]));
        if rng.random_bool(self.recipe.prefix_lm_share) {
            let split = rng.random_range(1..words.len());
            let close = |part: &[u32]| [part, &[EOS_ID]].concat();
            return (close(&words[..split]), close(&words[split..]));
        }
        let mask = noise_mask(
            words.len(),
            self.recipe.noise_density,
            self.recipe.mean_noise_span_length,
            self.sentinels.len(),
            &mut rng,
        );
        span_corruption(words, &mask, &self.sentinels)
    }
}

/// Examples as one batch: encoder ids `[B, S]` padded with `<pad>` and their mask, targets
/// `[B, T]` padded with [`IGNORE_LABEL`].
fn padded_batch(examples: &[(Vec<u32>, Vec<u32>)], device: &Device) -> anyhow::Result<Batch> {
    let b = examples.len();
    let source = examples.iter().map(|(i, _)| i.len()).max().unwrap_or(0);
    let target = examples.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
    let (mut ids, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (input, output) in examples {
        ids.extend(
            input
                .iter()
                .copied()
                .chain(std::iter::repeat(PAD_ID))
                .take(source),
        );
        mask.extend((0..source).map(|i| u32::from(i < input.len())));
        labels.extend(
            output
                .iter()
                .copied()
                .chain(std::iter::repeat(IGNORE_LABEL))
                .take(target),
        );
    }
    let mut batch = Batch::new(
        Tensor::from_vec(ids, (b, source), device)?,
        Tensor::from_vec(labels, (b, target), device)?,
    );
    batch.mask = Some(Tensor::from_vec(mask, (b, source), device)?);
    Ok(batch)
}

impl BatchSource for Denoising<'_> {
    fn num_examples(&self) -> usize {
        self.sentences.len()
    }

    /// Shuffled passes batch sentences of similar length (the batch is padded to its longest):
    /// the epoch's order is cut into pools of [`LENGTH_POOL_BATCHES`] batches, each pool sorted
    /// by length and cut into batches, and the batches put in a seeded order.
    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let (n, batch_size) = (self.sentences.len(), batch_size.max(1));
        let (chunks, seed): (Vec<Vec<usize>>, u64) = match shuffle_seed {
            Some(seed) => {
                let mut batches = Vec::new();
                for pool in permutation(n, seed).chunks(batch_size * LENGTH_POOL_BATCHES) {
                    let mut pool = pool.to_vec();
                    pool.sort_by_key(|&i| self.sentences[i].len());
                    batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
                }
                let order = permutation(batches.len(), derive_seed(&[seed, BATCH_ORDER]));
                let chunks = order
                    .into_iter()
                    .map(|b| std::mem::take(&mut batches[b]))
                    .collect();
                (chunks, seed)
            }
            None => {
                let order: Vec<usize> = (0..n).collect();
                let chunks = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
                (chunks, self.recipe.seed ^ EVAL_CORRUPTION)
            }
        };
        Box::new(chunks.into_iter().map(move |chunk| {
            let examples: Vec<_> = chunk.iter().map(|&i| self.example(i, seed)).collect();
            padded_batch(&examples, &self.device)
        }))
    }
}

/// The decoder's input for targets `[B, T]`: the start token (`<pad>`), then the targets but
/// the last, padding ([`IGNORE_LABEL`]) as `<pad>` (T5's `_shift_right`).
fn decoder_inputs(labels: &Tensor) -> candle_core::Result<Tensor> {
    let rows = labels.to_vec2::<u32>()?;
    let shifted: Vec<u32> = rows
        .iter()
        .flat_map(|row| {
            std::iter::once(PAD_ID).chain(row[..row.len() - 1].iter().map(|&l| {
                if l == IGNORE_LABEL {
                    PAD_ID
                } else {
                    l
                }
            }))
        })
        .collect();
    Tensor::from_vec(shifted, labels.dims2()?, labels.device())
}

/// T5 with every weight a variable, read teacher-forced: a batch's logits are `[B, T, V]`, one
/// row per target position.
struct TeacherForced {
    model: T5,
    trainable: NamedVars,
}

impl TeacherForced {
    fn new(mut model: T5) -> candle_core::Result<Self> {
        let mut trainable = NamedVars::default();
        model.visit_params(&mut |name, t| {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            trainable.push(name, var);
            Ok(())
        })?;
        Ok(Self { model, trainable })
    }
}

impl TrainModel for TeacherForced {
    fn trainable(&self) -> &NamedVars {
        &self.trainable
    }

    fn logits(&self, _input: &Tensor, _ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        candle_core::bail!("the demo T5 reads its decoder input from the batch's targets")
    }

    fn batch_logits(&self, batch: &Batch, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let decoder_ids = decoder_inputs(&batch.labels)?;
        self.model.forward(
            &batch.inputs,
            batch.mask.as_ref(),
            &decoder_ids,
            None,
            &NoHooks,
            ctx,
        )
    }
}

/// The mean cross-entropy per target token of `data` (its held-out pass).
fn held_out_loss(model: &TeacherForced, data: &Denoising<'_>) -> anyhow::Result<f64> {
    let (mut total, mut tokens) = (0.0, 0usize);
    for batch in data.batches(256, None) {
        let batch = batch?;
        let logits = model.batch_logits(&batch, &ForwardCtx::eval())?.detach();
        let loss = model
            .loss(&logits, &batch.labels, 0.0)?
            .to_scalar::<f32>()?;
        let labelled = batch
            .labels
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .filter(|&l| l != IGNORE_LABEL)
            .count();
        total += f64::from(loss) * labelled as f64;
        tokens += labelled;
    }
    Ok(total / tokens as f64)
}

/// Builds the tokenizer over the training sentences and trains the T5 from scratch on them;
/// returns the snapshot's files and the trained model (its weights variables).
fn pretrain(
    recipe: &DemoT5Recipe,
    texts: &CorpusSplits,
    quiet: bool,
) -> anyhow::Result<(Pretrained, T5)> {
    anyhow::ensure!(
        recipe.sentinels > 0,
        "span corruption needs sentinel tokens"
    );
    let device = Device::Cpu;
    let tokenizer = word_level_tokenizer(&texts.train, recipe.sentinels)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let train_set = Denoising::new(&tokenizer, &texts.train, recipe, &device)?;
    let eval_set = Denoising::new(&tokenizer, &texts.eval, recipe, &device)?;
    let init = SeededInit::new(recipe.seed, &device);
    // Dropout off in pretraining (T5 v1.1's choice); the saved configuration has it for
    // fine-tuning.
    let model = TeacherForced::new(T5::random(
        recipe.config(vocab_size, 0.0),
        &init.fork("t5"),
    )?)?;
    let cfg = PretrainSettings {
        epochs: recipe.epochs,
        batch_size: recipe.batch_size,
        lr: recipe.lr,
        weight_decay: recipe.weight_decay,
        label_smoothing: 0.0,
        seed: recipe.seed,
    }
    .train_config();
    run_pretraining("demo T5", &model, &train_set, &cfg, quiet)?;
    let accuracy = evaluate(&model, &eval_set, 256)?.accuracy;
    let loss = held_out_loss(&model, &eval_set)?;

    let TeacherForced { mut model, .. } = model;
    let mut tensors = HashMap::new();
    model.visit_params(&mut |name, t| {
        tensors.insert(name.to_string(), t.detach().copy()?);
        Ok(())
    })?;
    let tokenizer_json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
    let files = Pretrained {
        config: hf_config(&recipe.config(vocab_size, recipe.fine_tuning_dropout)),
        tensors,
        card: serde_json::json!({
            "recipe": recipe,
            "corpus_fingerprint": texts.fingerprint(),
            "vocab_size": vocab_size,
            "held_out_loss": loss,
            "held_out_target_token_accuracy": accuracy,
        }),
        extra: vec![("tokenizer.json", tokenizer_json)],
        summary: format!(
            "held-out loss {loss:.3}, {:.1}% of held-out target tokens right",
            100.0 * accuracy
        ),
    };
    Ok((files, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sentences from a small scene grammar: `the red cube is left of the blue ball .` and
    /// `there are 3 green cones .`, from `colours` colours.
    fn scene_sentences(colours: usize, seed: u64, n: usize) -> Vec<String> {
        let colour = &["red", "blue", "green", "yellow", "purple", "orange"][..colours];
        let shape = ["cube", "ball", "cone", "ring"];
        let relation = ["left of", "right of", "above", "below"];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pick = |words: &[&'static str]| words[rng.random_range(0..words.len())];
        (0..n)
            .map(|i| {
                if i % 3 == 2 {
                    let count = ["2", "3", "4"];
                    format!(
                        "there are {} {} {}s .",
                        pick(&count),
                        pick(colour),
                        pick(&shape)
                    )
                } else {
                    format!(
                        "the {} {} is {} the {} {} .",
                        pick(colour),
                        pick(&shape),
                        pick(&relation),
                        pick(colour),
                        pick(&shape)
                    )
                }
            })
            .collect()
    }

    /// A recipe small enough to pretrain in a second or two in a debug build.
    fn tiny_recipe() -> DemoT5Recipe {
        DemoT5Recipe {
            d_model: 32,
            d_kv: 8,
            d_ff: 64,
            train_sentences: 600,
            eval_sentences: 60,
            epochs: 6,
            batch_size: 32,
            lr: 3e-3,
            ..DemoT5Recipe::default()
        }
    }

    #[test]
    fn the_tokenizer_has_t5_ids_and_round_trips_sentences() -> anyhow::Result<()> {
        let corpus = scene_sentences(4, 0, 100);
        let tokenizer = word_level_tokenizer(&corpus, 8)?;
        let vocab = tokenizer.get_vocab_size(true) as u32;
        let ids = |t: &str| tokenizer.token_to_id(t);
        assert_eq!(
            (ids("<pad>"), ids("</s>"), ids("<unk>")),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(ids("<extra_id_0>"), Some(vocab - 1));
        assert_eq!(ids("<extra_id_7>"), Some(vocab - 8));
        let encoder = peftbench_backbones::TextEncoder::new(tokenizer.clone(), 16)?;
        assert_eq!(encoder.pad_id(), PAD_ID);

        // Lowercased, punctuation split off, `</s>` appended; an unseen word is `<unk>`.
        let enc = tokenizer
            .encode("The RED cube is left of the ball, purple.", true)
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            enc.get_tokens(),
            ["the", "red", "cube", "is", "left", "of", "the", "ball", ",", "purple", ".", "</s>"]
                .map(|t| match t {
                    "," | "purple" => "<unk>",
                    t => t,
                })
        );
        // Decoding gives the words back, space-joined, special tokens and sentinels skipped.
        let sentence = "the red cube is left of the blue ball .";
        let mut ids = tokenizer
            .encode(sentence, true)
            .map_err(anyhow::Error::msg)?
            .get_ids()
            .to_vec();
        ids.insert(2, vocab - 1);
        ids.insert(0, PAD_ID);
        assert_eq!(
            tokenizer.decode(&ids, true).map_err(anyhow::Error::msg)?,
            sentence
        );
        Ok(())
    }

    #[test]
    fn span_corruption_replaces_spans_by_sentinels_and_targets_them() {
        let words = [10, 11, 12, 13, 14, 15];
        let mask = [false, true, true, false, true, false];
        let (input, target) = span_corruption(&words, &mask, &[99, 98]);
        assert_eq!(input, [10, 99, 13, 98, 15, EOS_ID]);
        assert_eq!(target, [99, 11, 12, 98, 14, EOS_ID]);

        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for length in 2..30 {
            let mask = noise_mask(length, 0.25, 2.0, 8, &mut rng);
            let dropped = mask.iter().filter(|&&d| d).count();
            let expected = ((length as f64 * 0.25).round() as usize).clamp(1, length - 1);
            assert_eq!((mask.len(), dropped), (length, expected), "{mask:?}");
            assert!(!mask[0], "T5's masks start with kept words");
            let spans = (0..length)
                .filter(|&i| mask[i] && (i == 0 || !mask[i - 1]))
                .count();
            assert!((1..=8).contains(&spans));
        }
    }

    /// The snapshot written to the cache loads back through `T5::load` with the logits of the
    /// model that was trained, and a second call takes it from the cache.
    #[test]
    fn the_cached_snapshot_loads_back_as_the_trained_model() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let paths = Paths::under(dir.path());
        let recipe = DemoT5Recipe {
            epochs: 1,
            ..tiny_recipe()
        };
        let corpus = |seed, n| scene_sentences(4, seed, n);
        let texts = CorpusSplits::draw(&recipe, &corpus);
        let mut trained = None;
        let checkpoint = cached_or_pretrained(&paths, &texts.snapshot(&recipe), true, || {
            let (files, model) = pretrain(&recipe, &texts, true)?;
            trained = Some(model);
            Ok(files)
        })?;
        let trained = trained.expect("the first call pretrains");
        let loaded = T5::load(&checkpoint.config, &checkpoint.weights, &Device::Cpu)?;
        assert_eq!(loaded.config().dropout_rate, recipe.fine_tuning_dropout);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&checkpoint.config)?)?;
        assert_eq!(config["model_type"], "t5");
        assert_eq!(config["decoder_start_token_id"], 0);

        let tokenizer = Tokenizer::from_file(checkpoint.config.with_file_name("tokenizer.json"))
            .map_err(anyhow::Error::msg)?;
        let data = Denoising::new(&tokenizer, &texts.eval, &recipe, &Device::Cpu)?;
        let batch = data.batches(8, None).next().expect("a batch")?;
        let decoder_ids = decoder_inputs(&batch.labels)?;
        let logits = |model: &T5| {
            model.forward(
                &batch.inputs,
                batch.mask.as_ref(),
                &decoder_ids,
                None,
                &NoHooks,
                &ForwardCtx::eval(),
            )
        };
        let (a, b) = (logits(&trained)?, logits(&loaded)?);
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?
        );

        let again = ensure_demo_t5(&paths, &recipe, &corpus, true)?;
        assert_eq!(again.checkpoint, checkpoint);
        assert!(again.tokenizer.is_file());
        // Another corpus is another snapshot.
        let other = CorpusSplits::draw(&recipe, &|seed, n| scene_sentences(3, seed, n));
        assert_ne!(
            other.snapshot(&recipe).commit,
            texts.snapshot(&recipe).commit
        );
        Ok(())
    }

    #[test]
    fn pretraining_is_deterministic() -> anyhow::Result<()> {
        let recipe = DemoT5Recipe {
            epochs: 1,
            ..tiny_recipe()
        };
        let texts = CorpusSplits::draw(&recipe, &|seed, n| scene_sentences(4, seed, n));
        let (first, _) = pretrain(&recipe, &texts, true)?;
        let (second, _) = pretrain(&recipe, &texts, true)?;
        let mut names: Vec<&String> = first.tensors.keys().collect();
        names.sort();
        assert_eq!(names.len(), second.tensors.len());
        for name in names {
            let values = |t: &HashMap<String, Tensor>| t[name].flatten_all()?.to_vec1::<f32>();
            assert_eq!(values(&first.tensors)?, values(&second.tensors)?, "{name}");
        }
        Ok(())
    }

    /// On a small repetitive corpus a short pretraining predicts the held-out targets far better
    /// than a uniform guess over the vocabulary (about what the random model does).
    #[test]
    fn pretraining_lowers_the_held_out_loss() -> anyhow::Result<()> {
        let recipe = tiny_recipe();
        let texts = CorpusSplits::draw(&recipe, &|seed, n| scene_sentences(4, seed, n));
        let (files, _) = pretrain(&recipe, &texts, true)?;
        let loss = files.card["held_out_loss"].as_f64().expect("a loss");
        let uniform = (files.card["vocab_size"].as_f64().expect("a size")).ln();
        assert!(
            loss < 0.5 * uniform,
            "held-out loss {loss} vs uniform {uniform}"
        );
        Ok(())
    }

    /// The share of dropped words that greedy decoding writes back, at their place in the
    /// target, when `sentences` are span-corrupted as in pretraining.
    fn span_reconstruction_accuracy(
        model: &T5,
        tokenizer: &Tokenizer,
        recipe: &DemoT5Recipe,
        sentences: &[String],
    ) -> anyhow::Result<f64> {
        let data = Denoising::new(tokenizer, sentences, recipe, &Device::Cpu)?;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let examples: Vec<(Vec<u32>, Vec<u32>)> = data
            .sentences
            .iter()
            .map(|words| {
                let mask = noise_mask(
                    words.len(),
                    recipe.noise_density,
                    recipe.mean_noise_span_length,
                    recipe.sentinels,
                    &mut rng,
                );
                span_corruption(words, &mask, &data.sentinels)
            })
            .collect();
        let batch = padded_batch(&examples, &Device::Cpu)?;
        let longest = examples.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
        let decoded = model.greedy(&batch.inputs, batch.mask.as_ref(), longest + 1, &NoHooks)?;
        let (mut right, mut dropped) = (0, 0);
        for ((_, target), output) in examples.iter().zip(&decoded) {
            for (i, &word) in target.iter().enumerate() {
                if word != EOS_ID && !data.sentinels.contains(&word) {
                    dropped += 1;
                    right += usize::from(output[i + 1] == word);
                }
            }
        }
        Ok(right as f64 / dropped as f64)
    }

    /// The default recipe on a larger scene grammar: greedy decoding writes back the words that
    /// span corruption dropped from held-out sentences far more often than a draw from the
    /// vocabulary would.
    #[test]
    #[ignore = "pretrains the default recipe: about 20 s in a release build"]
    fn greedy_decoding_reconstructs_spans_far_above_chance() -> anyhow::Result<()> {
        let recipe = DemoT5Recipe::default();
        let texts = CorpusSplits::draw(&recipe, &|seed, n| scene_sentences(6, seed, n));
        let started = std::time::Instant::now();
        let (files, model) = pretrain(&recipe, &texts, false)?;
        let tokenizer = word_level_tokenizer(&texts.train, recipe.sentinels)?;
        let accuracy = span_reconstruction_accuracy(&model, &tokenizer, &recipe, &texts.eval)?;
        let words = tokenizer.get_vocab_size(true) - SPECIAL_TOKENS.len() - recipe.sentinels;
        let chance = 1.0 / words as f64;
        eprintln!(
            "pretrained in {:.1} s: {}; dropped words written back {:.1}% (chance {:.1}%)",
            started.elapsed().as_secs_f64(),
            files.summary,
            100.0 * accuracy,
            100.0 * chance
        );
        assert!(accuracy > 0.3 && accuracy > 5.0 * chance, "{accuracy}");
        Ok(())
    }
}
