//! The music demo's base model: a miniature in MusicGen's layout (`facebook/musicgen-small`'s
//! shape, 4 codebooks, sinusoidal positions, pre-norm decoder layers with cross-attention) that
//! this project pretrains itself on a suite's source style, so a music suite needs nothing
//! downloaded. As MusicGen is fine-tuned, its text encoder is frozen: here a one-layer T5
//! encoder left at its random initialisation over a word-level vocabulary of the suite's prompts
//! (its states still tell prompts apart; `enc_to_dec_proj` and the decoder learn to read them).
//! Pretraining trains the decoder and the projection on the source style's training clips with
//! MusicGen's loss and 10% prompt dropout, so classifier-free guidance has an unconditional
//! model to subtract.
//!
//! Its snapshot is stored like the other demo backbones, in the Hugging Face hub-cache layout
//! under `$PEFTBENCH_CACHE/hub/models--peftbench--demo-musicgen/` (`config.json` with
//! `model_type: musicgen`, `model.safetensors` under `MusicgenForConditionalGeneration`'s names,
//! `tokenizer.json`), named by a hash of the recipe, the codec and the source clips.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use peftbench_backbones::musicgen::{MusicgenConfig, MusicgenDecoderConfig};
use peftbench_backbones::t5::FeedForwardProj;
use peftbench_backbones::{Backbone, Musicgen, T5Config};
use peftbench_core::SeededInit;
use peftbench_methods::MusicModel;
use peftbench_train::BatchSource;
use serde::Serialize;

use crate::music::{MusicBatches, TokenClip};
use crate::pretraining::{
    cached_or_pretrained, recipe_commit, run_pretraining, DemoSnapshot, PretrainSettings,
    Pretrained,
};
use crate::Paths;

/// The `backbone.checkpoint` value that selects this model in a suite.
pub const DEMO_MUSICGEN_CHECKPOINT: &str = "demo-musicgen";
/// Its hub id in the project cache.
pub const DEMO_MUSICGEN_REPO_ID: &str = "peftbench/demo-musicgen";

/// The text pad token of the word-level tokenizer (T5's `<pad>`).
pub const TEXT_PAD: u32 = 0;

/// Everything that determines the demo model's weights besides its data.
#[derive(Debug, Clone, Serialize)]
pub struct DemoMusicRecipe {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub ffn_dim: usize,
    pub num_codebooks: usize,
    /// Codes per codebook (the codec's).
    pub codes: usize,
    pub text_d_model: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub text_d_kv: usize,
    pub text_d_ff: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for DemoMusicRecipe {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            ffn_dim: 256,
            num_codebooks: crate::music::CODEC_LEVELS,
            codes: crate::music::CODEC_CODES,
            text_d_model: 32,
            text_layers: 1,
            text_heads: 2,
            text_d_kv: 16,
            text_d_ff: 64,
            epochs: 12,
            batch_size: 16,
            lr: 2e-3,
            weight_decay: 0.01,
            seed: 0,
        }
    }
}

impl DemoMusicRecipe {
    /// The model's configuration for a prompt vocabulary of `text_vocab` tokens.
    pub fn config(&self, text_vocab: usize) -> MusicgenConfig {
        let pad = self.codes as u32;
        MusicgenConfig {
            text_encoder: T5Config {
                vocab_size: text_vocab,
                d_model: self.text_d_model,
                d_kv: self.text_d_kv,
                d_ff: self.text_d_ff,
                num_layers: self.text_layers,
                // The decoder is never built (the text encoder is T5's encoder alone).
                num_decoder_layers: None,
                num_heads: self.text_heads,
                relative_attention_num_buckets: 32,
                relative_attention_max_distance: 128,
                dropout_rate: 0.0,
                layer_norm_epsilon: 1e-6,
                feed_forward_proj: FeedForwardProj::Relu,
                tie_word_embeddings: true,
                scale_decoder_outputs: None,
                decoder_start_token_id: TEXT_PAD,
                pad_token_id: TEXT_PAD,
                eos_token_id: 1,
            },
            decoder: MusicgenDecoderConfig {
                vocab_size: self.codes,
                max_position_embeddings: 2048,
                num_hidden_layers: self.num_hidden_layers,
                ffn_dim: self.ffn_dim,
                num_attention_heads: self.num_attention_heads,
                hidden_size: self.hidden_size,
                num_codebooks: self.num_codebooks,
                audio_channels: 1,
                pad_token_id: pad,
                bos_token_id: pad,
                decoder_start_token_id: Some(pad),
                activation_function: "gelu".into(),
                dropout: 0.0,
                attention_dropout: 0.0,
                activation_dropout: 0.0,
                initializer_factor: 0.02,
                cross_attention_hidden_size: None,
            },
            audio_encoder: serde_json::Value::Null,
        }
    }
}

/// Vocabulary size of the placeholder model (before the suite's prompts are known).
const PLACEHOLDER_TEXT_VOCAB: usize = 8;

/// A random miniature of the demo's shape: what `load_backbone` gives until the music kind
/// pretrains it on the suite's source style (methods are checked against its sizes).
pub fn unpretrained(device: &Device) -> anyhow::Result<Musicgen> {
    let recipe = DemoMusicRecipe::default();
    Ok(Musicgen::random(
        recipe.config(PLACEHOLDER_TEXT_VOCAB),
        &SeededInit::new(recipe.seed, device),
    )?)
}

/// The demo model pretrained on `source` (the source style's training clips, tokenised with
/// `tokenizer`), from the project cache or pretrained now; `identity` names the data and codec
/// in the snapshot's hash. Returns the model and the tokenizer saved with it.
pub(crate) fn pretrained(
    paths: &Paths,
    tokenizer: &tokenizers::Tokenizer,
    source_train: &[TokenClip],
    source_test: &[TokenClip],
    identity: &serde_json::Value,
    upstream: &str,
    device: &Device,
    quiet: bool,
) -> anyhow::Result<Musicgen> {
    let recipe = DemoMusicRecipe::default();
    let tokenizer_json = tokenizer
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
    let commit = recipe_commit(
        "demo-musicgen-v1",
        &serde_json::json!({
            "recipe": recipe,
            "data": identity,
            "tokenizer": tokenizer_json,
            "prompt_dropout": crate::music::PROMPT_DROPOUT,
        }),
    );
    let snapshot = DemoSnapshot {
        repo_id: DEMO_MUSICGEN_REPO_ID,
        commit,
        extra_files: &["tokenizer.json"],
        name: "demo MusicGen",
        upstream: upstream.to_string(),
    };
    let files = cached_or_pretrained(paths, &snapshot, quiet, || {
        pretrain(
            &recipe,
            tokenizer,
            tokenizer_json,
            source_train,
            source_test,
            quiet,
        )
    })?;
    Ok(Musicgen::load(&files.config, &files.weights, device)?)
}

/// Trains the miniature's decoder and projection on the source clips.
fn pretrain(
    recipe: &DemoMusicRecipe,
    tokenizer: &tokenizers::Tokenizer,
    tokenizer_json: String,
    train: &[TokenClip],
    test: &[TokenClip],
    quiet: bool,
) -> anyhow::Result<Pretrained> {
    let device = Device::Cpu;
    let config = recipe.config(tokenizer.get_vocab_size(true));
    let init = SeededInit::new(recipe.seed, &device);
    let model = MusicModel::new(
        "full",
        &serde_json::json!({}),
        Musicgen::random(config.clone(), &init.fork("musicgen"))?,
        &init,
    )?;
    let pad = config.decoder.pad_token_id;
    let data = MusicBatches {
        clips: train,
        text_pad: TEXT_PAD,
        code_pad: pad,
        device: &device,
    };
    let cfg = PretrainSettings {
        epochs: recipe.epochs,
        batch_size: recipe.batch_size,
        lr: recipe.lr,
        weight_decay: recipe.weight_decay,
        label_smoothing: 0.0,
        seed: recipe.seed,
    }
    .train_config();
    run_pretraining("demo MusicGen", &model, &data, &cfg, quiet)?;
    let held_out = MusicBatches {
        clips: test,
        text_pad: TEXT_PAD,
        code_pad: pad,
        device: &device,
    };
    let loss = mean_cross_entropy(&model, &held_out)?;

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut decoder = model.model().clone();
    Backbone::visit_params(&mut decoder, &mut |name, t| {
        tensors.insert(name.to_string(), t.detach().copy()?);
        Ok(())
    })?;
    let mut text = decoder.text_encoder().clone();
    text.visit_params(&mut |name, t| {
        tensors.insert(format!("text_encoder.{name}"), t.detach().copy()?);
        Ok(())
    })?;
    let mut json = serde_json::to_value(&config)?;
    let fields = json.as_object_mut().expect("a configuration is an object");
    fields.insert("model_type".into(), "musicgen".into());
    fields.insert(
        "architectures".into(),
        serde_json::json!(["MusicgenForConditionalGeneration"]),
    );
    Ok(Pretrained {
        config: json,
        tensors,
        card: serde_json::json!({
            "recipe": recipe,
            "held_out_cross_entropy": loss,
            "train_clips": train.len(),
            "held_out_clips": test.len(),
        }),
        extra: vec![("tokenizer.json", tokenizer_json)],
        summary: format!(
            "held-out cross-entropy {loss:.3} nats per token (mean over codebooks) on {} clips",
            test.len()
        ),
    })
}

/// The mean over codebooks of the per-codebook cross-entropy, weighted by the real tokens of
/// each batch (every clip has as many).
pub(crate) fn mean_cross_entropy(
    model: &MusicModel,
    data: &dyn BatchSource,
) -> anyhow::Result<f64> {
    Ok(per_codebook_cross_entropy(model, data)?.iter().sum::<f64>()
        / model.model().config().decoder.num_codebooks as f64)
}

/// Each codebook's cross-entropy over `data`, the batches weighted by their clips.
pub(crate) fn per_codebook_cross_entropy(
    model: &MusicModel,
    data: &dyn BatchSource,
) -> anyhow::Result<Vec<f64>> {
    let k = model.model().config().decoder.num_codebooks;
    let mut sums = vec![0f64; k];
    let mut clips = 0usize;
    for batch in data.batches(32, None) {
        let batch = batch?;
        let n = batch.len();
        let losses = model.per_codebook_loss(&batch)?.to_vec1::<f32>()?;
        for (s, l) in sums.iter_mut().zip(losses) {
            *s += f64::from(l) * n as f64;
        }
        clips += n;
    }
    anyhow::ensure!(clips > 0, "no clips to score");
    Ok(sums.into_iter().map(|s| s / clips as f64).collect())
}
