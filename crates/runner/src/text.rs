//! Text tasks: their splits read (SIB-200, a suite's own tables, CoNLL / WikiANN NER files) or
//! generated, in the training language and, for zero-shot cross-lingual transfer, the evaluation
//! language; then tokenised with the backbone's [`TextEncoder`] into one padded `[N, T]` id matrix
//! (padding = the tokenizer's pad id, which the encoder masks) with class ids from a [`LabelSet`]:
//! one per text, or, for NER, one per word on its first subword ([`IGNORE_LABEL`] elsewhere).
//! Sentence pairs (a `table` task whose columns name a `text_pair`) are tokenised as one sequence
//! with the tokenizer's pair template and stacked with their segment ids as `[N, 2, T]`.
//! Batches are cut to their own longest text, so a step never computes at the split's longest.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftbench_backbones::{TextEncoder, TokenizedBatch};
use peftbench_data_text::alignment::{first_subword_labels, NO_LABEL};
use peftbench_data_text::synthetic::{negation_sentiment, topic_labels, SENTIMENT_LABELS};
use peftbench_data_text::{
    read_classification, read_conll, read_pair_classification, read_sib200, Columns, LabelSet,
    PairColumns, PairExample, TaggedSentence, TextExample, SIB200_LABELS,
};
use peftbench_metrics::seqeval::{span_f1, SpanScores};
use peftbench_suite::{DataFormat, Generator, RunSpec, Suite, TextColumns};
use peftbench_train::{InMemoryBatches, IGNORE_LABEL};

use crate::backbone::{BackboneModel, LoadedBackbone};
use crate::data::{generated_seed, root_on_disk};
use crate::run::PreparedTask;
use crate::Paths;

/// One split of a text task: labelled texts, labelled text pairs, or tagged sentences (NER).
#[derive(Debug, Clone)]
pub enum TextSplit {
    Texts(Vec<TextExample>),
    Pairs(Vec<PairExample>),
    Sentences(Vec<TaggedSentence>),
}

impl TextSplit {
    fn is_empty(&self) -> bool {
        match self {
            TextSplit::Texts(v) => v.is_empty(),
            TextSplit::Pairs(v) => v.is_empty(),
            TextSplit::Sentences(v) => v.is_empty(),
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            TextSplit::Texts(v) => v.truncate(n),
            TextSplit::Pairs(v) => v.truncate(n),
            TextSplit::Sentences(v) => v.truncate(n),
        }
    }

    /// Every label of the split (class names, or tags), in order.
    fn labels(&self) -> Vec<&str> {
        match self {
            TextSplit::Texts(v) => v.iter().map(|e| e.label.as_str()).collect(),
            TextSplit::Pairs(v) => v.iter().map(|e| e.label.as_str()).collect(),
            TextSplit::Sentences(v) => v
                .iter()
                .flat_map(|s| s.tags.iter().map(String::as_str))
                .collect(),
        }
    }
}

/// A text task's splits and class names (or tags), read before the first run.
#[derive(Debug, Clone)]
pub struct TextTaskData {
    pub labels: LabelSet,
    pub train: TextSplit,
    pub eval: TextSplit,
    pub val: Option<TextSplit>,
}

/// What scoring NER predictions needs besides the model's per-token argmax: the gold tags of each
/// eval sentence and how many of its words kept a token after truncation.
#[derive(Debug, Clone)]
pub struct TaggingEval {
    pub tags: LabelSet,
    pub gold: Vec<Vec<String>>,
    pub labelled_words: Vec<usize>,
}

impl TaggingEval {
    /// seqeval's entity-level scores of `predictions` (one per labelled token, sentence by
    /// sentence, as [`peftbench_train::evaluate`] returns them). Words cut off by truncation are
    /// predicted `O`, so every gold entity counts.
    pub fn score(&self, predictions: &[u32]) -> anyhow::Result<SpanScores> {
        let expected: usize = self.labelled_words.iter().sum();
        anyhow::ensure!(
            predictions.len() == expected,
            "{} token predictions for {expected} labelled words",
            predictions.len()
        );
        let mut rest = predictions;
        let mut predicted = Vec::with_capacity(self.gold.len());
        for (gold, &k) in self.gold.iter().zip(&self.labelled_words) {
            let (mine, tail) = rest.split_at(k);
            rest = tail;
            let mut tags: Vec<String> = mine
                .iter()
                .map(|&p| self.tags.name(p).unwrap_or("O").to_string())
                .collect();
            tags.resize(gold.len(), "O".to_string());
            predicted.push(tags);
        }
        Ok(span_f1(&predicted, &self.gold))
    }
}

/// Extensions a `table` task's split files may have, in the order they are looked for.
const TABLE_EXTENSIONS: [&str; 3] = ["tsv", "csv", "jsonl"];

/// Reads (or generates) the splits of `spec`'s task. The train and validation splits are in the
/// task's `language`, the eval split in its `eval_language` when it has one (zero-shot transfer).
pub fn load_text_task(spec: &RunSpec, root: Option<&Path>) -> anyhow::Result<TextTaskData> {
    let task = &spec.task;
    let protocol = &spec.protocol;
    let train_language = task.language.as_deref();
    let train = read_split(spec, root, &protocol.train_split, train_language)?;
    let labels = task_labels(spec, &train)?;
    let eval = read_split(spec, root, &protocol.eval_split, task.eval_language())?;
    let val = protocol
        .val_split
        .as_deref()
        .map(|split| read_split(spec, root, split, train_language))
        .transpose()?;
    Ok(TextTaskData {
        labels,
        train,
        eval,
        val,
    })
}

/// The class names in id order: the suite's `labels`, a generator's own, else the labels of the
/// training split ([`LabelSet::for_task`]: in SIB-200's order when they are SIB-200's categories).
fn task_labels(spec: &RunSpec, train: &TextSplit) -> anyhow::Result<LabelSet> {
    let task = &spec.task;
    let names: Vec<String> = match (&task.labels, spec.data.format, task.generator) {
        (Some(labels), _, _) => labels.clone(),
        (None, _, Some(Generator::Sentiment)) => {
            SENTIMENT_LABELS.iter().map(|s| s.to_string()).collect()
        }
        (None, _, Some(Generator::Topics)) => {
            topic_labels().iter().map(|s| s.to_string()).collect()
        }
        (None, format, _) => {
            let own = (format == DataFormat::Sib200).then_some(SIB200_LABELS);
            return LabelSet::for_task(task.num_classes, own, train.labels())
                .map_err(|e| anyhow::anyhow!("task `{}`: {e}", task.name));
        }
    };
    anyhow::ensure!(
        names.len() == task.num_classes,
        "task `{}` has {} classes ({}) but the suite declares num_classes {}{}",
        task.name,
        names.len(),
        names.join(", "),
        task.num_classes,
        if task.labels.is_none() {
            "; list them in the task's `labels` to fix their order and number"
        } else {
            ""
        }
    );
    Ok(LabelSet::new(names))
}

fn read_split(
    spec: &RunSpec,
    root: Option<&Path>,
    split: &str,
    language: Option<&str>,
) -> anyhow::Result<TextSplit> {
    let task = &spec.task;
    let mut examples = match spec.data.format {
        DataFormat::Generated => {
            let language = language.expect("suite validation requires a language");
            let n = if split == spec.protocol.train_split {
                spec.data.train_examples
            } else {
                spec.data.eval_examples
            }
            .unwrap_or(0);
            let n = spec.limit.map_or(n, |l| n.min(l));
            // Languages differ in their split seeds too: transfer is evaluated on fresh reviews.
            let seed = generated_seed(&format!("{}/{language}", task.name), split);
            let generated = match task.generator {
                Some(Generator::Sentiment) => negation_sentiment(language, n, seed),
                Some(Generator::Topics) => {
                    peftbench_data_text::synthetic::review_topics(language, n, seed)
                }
                other => anyhow::bail!(
                    "task `{}`: generator {other:?} does not make texts",
                    task.name
                ),
            };
            TextSplit::Texts(generated.ok_or_else(|| {
                anyhow::anyhow!(
                    "task `{}`: no generated texts in language `{language}` (generated languages: {})",
                    task.name,
                    peftbench_data_text::synthetic::NEGATION_LANGUAGES.join(", ")
                )
            })?)
        }
        DataFormat::Sib200 => TextSplit::Texts(read_sib200(
            root.expect("on-disk formats have a root"),
            language.expect("suite validation requires a language"),
            split,
        )?),
        format @ (DataFormat::Conll | DataFormat::Wikiann) => {
            let path = conll_path(
                root.expect("on-disk formats have a root"),
                spec,
                split,
                language.expect("suite validation requires a language"),
            )?;
            TextSplit::Sentences(read_conll(&path, format == DataFormat::Wikiann)?)
        }
        DataFormat::Table => {
            let path = table_path(
                root.expect("on-disk formats have a root"),
                spec,
                split,
                language,
            )?;
            let columns = task.columns.clone().unwrap_or_default();
            let TextColumns {
                text,
                text_pair,
                prefix,
                label,
            } = &columns;
            match text_pair {
                Some(text_pair) => TextSplit::Pairs(read_pair_classification(
                    &path,
                    None,
                    &PairColumns {
                        text,
                        text_pair,
                        prefix: prefix.as_deref(),
                        label,
                    },
                )?),
                None => {
                    TextSplit::Texts(read_classification(&path, None, &Columns { text, label })?)
                }
            }
        }
        other => anyhow::bail!(
            "task `{}`: data format {other:?} does not hold texts",
            task.name
        ),
    };
    if let Some(limit) = spec.limit {
        examples.truncate(limit);
    }
    anyhow::ensure!(
        !examples.is_empty(),
        "task `{}` split `{split}`{} has no examples",
        task.name,
        language.map(|l| format!(" ({l})")).unwrap_or_default()
    );
    Ok(examples)
}

/// Names a NER split file may have, in the order they are looked for.
const CONLL_SUFFIXES: [&str; 4] = ["", ".txt", ".conll", ".iob2"];

/// `<root>/<language>/<split>{,.txt,.conll,.iob2}`: the first that exists, else an error listing
/// every path looked at.
fn conll_path(root: &Path, spec: &RunSpec, split: &str, language: &str) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = CONLL_SUFFIXES
        .iter()
        .map(|suffix| root.join(language).join(format!("{split}{suffix}")))
        .collect();
    first_existing(&candidates).ok_or_else(|| {
        anyhow::anyhow!(
            "task `{}`: no CoNLL file for split `{split}` in language `{language}`. Looked for:\n{}\n\
             MasakhaNER: point the suite's root at the repository's `data/` folder; WikiANN: at \
             the folder of Rahimi et al.'s per-language splits",
            spec.task.name,
            bullet_list(&candidates)
        )
    })
}

fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned()
}

fn bullet_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("  - {}", p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `<root>/<task>/[<language>/]<split>.{tsv,csv,jsonl}` (SuperGLUE's copies:
/// `<root>/rte/{train,val,test}.jsonl`): the first that exists, else an error listing every path
/// looked at.
fn table_path(
    root: &Path,
    spec: &RunSpec,
    split: &str,
    language: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let mut dir = root.join(&spec.task.name);
    if let Some(language) = language {
        dir = dir.join(language);
    }
    let candidates: Vec<PathBuf> = TABLE_EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{split}.{ext}")))
        .collect();
    first_existing(&candidates).ok_or_else(|| {
        anyhow::anyhow!(
            "task `{}`: no file for split `{split}`. Looked for:\n{}\nA `table` task keeps one \
             file per split (TSV or CSV with a header row, or JSONL) with the columns its \
             `columns` names; see README, \"Custom text tasks\"",
            spec.task.name,
            bullet_list(&candidates)
        )
    })
}

/// Tokenises a split: [`encode_classification`] for texts, [`encode_pair_classification`] for
/// pairs, [`encode_tagging`] for sentences.
pub fn encode_split(
    encoder: &TextEncoder,
    split: &TextSplit,
    labels: &LabelSet,
    device: &Device,
) -> anyhow::Result<(InMemoryBatches, Option<TaggingEval>)> {
    match split {
        TextSplit::Texts(examples) => Ok((
            encode_classification(encoder, examples, labels, device)?,
            None,
        )),
        TextSplit::Pairs(examples) => Ok((
            encode_pair_classification(encoder, examples, labels, device)?,
            None,
        )),
        TextSplit::Sentences(sentences) => {
            let (batches, eval) = encode_tagging(encoder, sentences, labels, device)?;
            Ok((batches, Some(eval)))
        }
    }
}

/// Tokenises tagged sentences word by word: each word's tag id on its first subword,
/// [`IGNORE_LABEL`] on the other subwords, special tokens and padding. An unknown tag is an error
/// naming it and the known ones.
pub fn encode_tagging(
    encoder: &TextEncoder,
    sentences: &[TaggedSentence],
    tags: &LabelSet,
    device: &Device,
) -> anyhow::Result<(InMemoryBatches, TaggingEval)> {
    anyhow::ensure!(!sentences.is_empty(), "no sentences to encode");
    let words: Vec<Vec<String>> = sentences.iter().map(|s| s.tokens.clone()).collect();
    let batch = encoder.encode_words(&words)?;
    let width = batch.width();
    let (ids, _, _) = batch.to_tensors(device)?;
    let mut labels = Vec::with_capacity(sentences.len() * width);
    let mut labelled_words = Vec::with_capacity(sentences.len());
    for (sentence, word_ids) in sentences.iter().zip(&batch.word_ids) {
        let word_labels: Vec<u32> = sentence
            .tags
            .iter()
            .map(|t| {
                tags.id(t).ok_or_else(|| {
                    anyhow::anyhow!("tag `{t}` is not one of the task's tags {:?}", tags.names())
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let mut row = first_subword_labels(word_ids, &word_labels);
        row.resize(width, NO_LABEL);
        labelled_words.push(row.iter().filter(|&&l| l != NO_LABEL).count());
        labels.extend(
            row.into_iter()
                .map(|l| if l == NO_LABEL { IGNORE_LABEL } else { l }),
        );
    }
    let n = sentences.len();
    let batches = InMemoryBatches::new(ids, Tensor::from_vec(labels, (n, width), device)?)?
        .with_lengths(token_lengths(&batch))?;
    Ok((
        batches,
        TaggingEval {
            tags: tags.clone(),
            gold: sentences.iter().map(|s| s.tags.clone()).collect(),
            labelled_words,
        },
    ))
}

/// Tokenises `examples` and maps their labels through `labels`; an unknown label is an error
/// naming it and the known ones.
pub fn encode_classification(
    encoder: &TextEncoder,
    examples: &[TextExample],
    labels: &LabelSet,
    device: &Device,
) -> anyhow::Result<InMemoryBatches> {
    anyhow::ensure!(!examples.is_empty(), "no examples to encode");
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let batch = encoder.encode(&texts)?;
    let (ids, _, _) = batch.to_tensors(device)?;
    let classes = class_ids(examples.iter().map(|e| e.label.as_str()), labels, device)?;
    InMemoryBatches::new(ids, classes)?.with_lengths(token_lengths(&batch))
}

/// Tokenises sentence pairs as one sequence each (the tokenizer's pair template: `[CLS] text [SEP]
/// text_pair [SEP]` with segment ids 0 then 1 for BERT-family tokenizers; truncation shortens the
/// longer text first), stacked with their segment ids as `[N, 2, T]` (the text backbones' pair
/// input), and maps their labels through `labels`.
pub fn encode_pair_classification(
    encoder: &TextEncoder,
    examples: &[PairExample],
    labels: &LabelSet,
    device: &Device,
) -> anyhow::Result<InMemoryBatches> {
    anyhow::ensure!(!examples.is_empty(), "no examples to encode");
    let pairs: Vec<(&str, &str)> = examples
        .iter()
        .map(|e| (e.text.as_str(), e.text_pair.as_str()))
        .collect();
    let batch = encoder.encode_pairs(&pairs)?;
    let classes = class_ids(examples.iter().map(|e| e.label.as_str()), labels, device)?;
    InMemoryBatches::new(batch.pair_tensor(device)?, classes)?.with_lengths(token_lengths(&batch))
}

/// The class id of each label, as a `[N]` tensor; an unknown label is an error naming it and the
/// known ones.
fn class_ids<'a>(
    names: impl Iterator<Item = &'a str>,
    labels: &LabelSet,
    device: &Device,
) -> anyhow::Result<Tensor> {
    let ids: Vec<u32> = names
        .map(|name| {
            labels.id(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "label `{name}` is not one of the task's classes {:?}",
                    labels.names()
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let n = ids.len();
    Ok(Tensor::from_vec(ids, n, device)?)
}

/// Each row's own tokens (special tokens included): batches are padded only to their longest
/// member, not to the split's.
fn token_lengths(batch: &TokenizedBatch) -> Vec<usize> {
    batch
        .attention_mask
        .iter()
        .map(|row| row.iter().filter(|&&m| m == 1).count().max(1))
        .collect()
}

/// What every text kind shares for a suite: the backbone pools as the suite's `text` section
/// says, and its tokenizer truncates to `text.max_tokens`.
pub(crate) fn suite_text_encoder(
    suite: &Suite,
    backbone: &mut LoadedBackbone,
) -> anyhow::Result<TextEncoder> {
    let text = suite
        .text
        .as_ref()
        .expect("suite validation gives text suites a `text` section");
    backbone.model.set_text_pooling(text.pooling);
    let tokenizer = backbone
        .tokenizer
        .as_ref()
        .expect("text backbones load with their tokenizer");
    TextEncoder::from_file(tokenizer, text.max_tokens)
}

/// Checks that the backbone reads text, with positions for the suite's `max_tokens`.
pub(crate) fn check_text_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
    backbone.check_modality(spec)?;
    if let (BackboneModel::Bert(m), Some(text)) = (backbone, &spec.text) {
        anyhow::ensure!(
            text.max_tokens <= m.config().max_tokens(),
            "suite `{}` keeps {} tokens per text but the encoder has positions for {}",
            spec.suite,
            text.max_tokens,
            m.config().max_tokens()
        );
    }
    Ok(())
}

/// Reads (or generates) a text task's splits from the data root.
pub(crate) fn locate_text_task(spec: &RunSpec, paths: &Paths) -> anyhow::Result<TextTaskData> {
    load_text_task(spec, root_on_disk(spec, paths)?.as_deref())
}

/// Tokenises a text task's splits for all of its runs; tagged sentences also give the evaluation
/// split's [`TaggingEval`].
pub(crate) fn prepare_text_task(
    spec: &RunSpec,
    data: &TextTaskData,
    encoder: &TextEncoder,
    device: &Device,
) -> anyhow::Result<PreparedTask> {
    let encode = |examples: &TextSplit, split: &str| {
        encode_split(encoder, examples, &data.labels, device)
            .map_err(|e| anyhow::anyhow!("task `{}` split `{split}`: {e}", spec.task.name))
    };
    let protocol = &spec.protocol;
    let (eval, tagging) = encode(&data.eval, &protocol.eval_split)?;
    let mut train = encode(&data.train, &protocol.train_split)?.0;
    if spec.text.as_ref().is_some_and(|t| t.length_buckets) {
        train = train.with_length_buckets()?;
    }
    Ok(PreparedTask {
        train: Box::new(train),
        eval: Box::new(eval),
        val: match (&data.val, &protocol.val_split) {
            (Some(v), Some(split)) => Some(Box::new(encode(v, split)?.0)),
            _ => None,
        },
        skipped_examples: 0,
        augmented_training: false,
        features: Default::default(),
        prefixes: Default::default(),
        tagging,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts of mixed lengths batched to their own longest member give the encoder's features of
    /// the split-wide padding within float rounding, for CLS and mean pooling: the encoder masks
    /// its padding, so cutting it changes only the length of its reductions.
    #[test]
    fn batches_cut_to_their_longest_text_give_the_padded_features() {
        use candle_core::Device;
        use peftbench_backbones::{Backbone, Bert, BertConfig, NoHooks, Pooling};
        use peftbench_core::{ForwardCtx, SeededInit};
        use peftbench_train::BatchSource;

        let mut examples = peftbench_data_text::synthetic::review_topics("en", 24, 5).unwrap();
        for (i, e) in examples.iter_mut().enumerate() {
            // Lengths from one to four times a review.
            e.text = std::iter::repeat_n(e.text.clone(), 1 + i % 4)
                .collect::<Vec<_>>()
                .join(" ");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        crate::demo_text::word_level_tokenizer(&examples)
            .unwrap()
            .save(&path, false)
            .unwrap();
        let encoder = TextEncoder::from_file(&path, 64).unwrap();
        let labels = LabelSet::from_labels(examples.iter().map(|e| e.label.as_str()));
        let cut = encode_classification(&encoder, &examples, &labels, &Device::Cpu).unwrap();
        let padded = InMemoryBatches::new(cut.inputs().clone(), cut.labels().clone()).unwrap();
        let mut cfg = BertConfig::new(encoder.vocab_size(), 16, 2, 2, 32);
        cfg.max_position_embeddings = 64;
        let mut bert = Bert::random(cfg, &SeededInit::new(3, &Device::Cpu)).unwrap();
        let mut narrower = 0;
        for pooling in [Pooling::Cls, Pooling::Mean] {
            bert.set_pooling(pooling);
            let features = |b: &peftbench_train::Batch| {
                bert.forward_features(&b.inputs, &NoHooks, &ForwardCtx::eval())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            for (c, p) in cut.batches(5, Some(1)).zip(padded.batches(5, Some(1))) {
                let (c, p) = (c.unwrap(), p.unwrap());
                assert_eq!(
                    c.labels.to_vec1::<u32>().unwrap(),
                    p.labels.to_vec1::<u32>().unwrap()
                );
                narrower += usize::from(c.inputs.dim(1).unwrap() < p.inputs.dim(1).unwrap());
                let worst = features(&c)
                    .iter()
                    .zip(features(&p))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-5, "{pooling:?}: features differ by {worst}");
            }
        }
        assert!(
            narrower > 0,
            "some batch is shorter than the split's longest text"
        );
    }

    /// A known pair tokenises as `[CLS] a [SEP] b [SEP]` with segment ids 0 then 1, padded with
    /// the pad id and segment 0, stacked as `[N, 2, T]`; batches are cut to their longest pair.
    #[test]
    fn pairs_encode_as_one_sequence_with_segment_ids() {
        use peftbench_train::BatchSource;

        let pairs = vec![
            PairExample {
                text: "the cat sleeps".into(),
                text_pair: "an animal rests".into(),
                label: "entailment".into(),
            },
            PairExample {
                text: "bank: it rains".into(),
                text_pair: "dry".into(),
                label: "not_entailment".into(),
            },
        ];
        let corpus: Vec<TextExample> = pairs
            .iter()
            .flat_map(|p| [p.text.clone(), p.text_pair.clone()])
            .map(|text| TextExample {
                text,
                label: String::new(),
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        crate::demo_text::word_level_tokenizer(&corpus)
            .unwrap()
            .save(&path, false)
            .unwrap();
        let encoder = TextEncoder::from_file(&path, 16).unwrap();
        let id = |t: &str| encoder.token_to_id(t).unwrap();
        let labels = LabelSet::new(vec!["entailment".into(), "not_entailment".into()]);
        let data = encode_pair_classification(&encoder, &pairs, &labels, &Device::Cpu).unwrap();
        // `[CLS] the cat sleeps [SEP] an animal rests [SEP]` (9 tokens), then `[CLS] bank : it
        // rains [SEP] dry [SEP]` (8: the colon is its own token), padded with the pad id in
        // segment 0.
        assert_eq!(data.inputs().dims(), &[2, 2, 9]);
        let rows = data.inputs().to_vec3::<u32>().unwrap();
        let (cls, sep, pad) = (id("[CLS]"), id("[SEP]"), encoder.pad_id());
        let words = |text: &str| text.split(' ').map(id).collect::<Vec<u32>>();
        let first = [
            vec![cls],
            words("the cat sleeps"),
            vec![sep],
            words("an animal rests"),
            vec![sep],
        ]
        .concat();
        assert_eq!(rows[0][0], first);
        assert_eq!(rows[0][1], [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        let second = [
            vec![cls],
            words("bank : it rains"),
            vec![sep],
            words("dry"),
            vec![sep, pad],
        ]
        .concat();
        assert_eq!(rows[1][0], second);
        assert_eq!(rows[1][1], [0, 0, 0, 0, 0, 0, 1, 1, 0]);
        assert_eq!(data.labels().to_vec1::<u32>().unwrap(), [0, 1]);
        // A batch is cut to its own longest pair, segment ids with the ids.
        let batch = data.batches(1, None).nth(1).unwrap().unwrap().inputs;
        assert_eq!(batch.dims(), &[1, 2, 8]);
        assert_eq!(
            batch.to_vec3::<u32>().unwrap()[0][1],
            [0, 0, 0, 0, 0, 0, 1, 1]
        );
    }

    fn tags() -> LabelSet {
        LabelSet::new(
            ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }

    #[test]
    fn truncated_words_are_predicted_outside_any_entity() {
        let gold: Vec<Vec<String>> = vec![
            ["B-PER", "I-PER", "O", "B-LOC"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ["B-LOC", "O"].iter().map(|s| s.to_string()).collect(),
        ];
        // The first sentence kept 2 of its 4 words after truncation; the second both.
        let eval = TaggingEval {
            tags: tags(),
            gold,
            labelled_words: vec![2, 2],
        };
        let scores = eval.score(&[1, 2, 3, 0]).unwrap();
        // Gold: PER, LOC, LOC; predicted: PER and the second sentence's LOC, both right. The
        // truncated LOC counts as missed: precision 1, recall 2/3 (seqeval).
        assert_eq!(scores.true_entities, 3);
        assert_eq!(scores.predicted_entities, 2);
        assert!((scores.precision - 1.0).abs() < 1e-12);
        assert!((scores.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((scores.f1 - 0.8).abs() < 1e-12);
        assert!(eval.score(&[1, 2, 3]).is_err(), "a miscount is an error");
    }
}
