//! Text tasks: their splits read (SIB-200, a suite's own tables) or generated, in the training
//! language and, for zero-shot cross-lingual transfer, the evaluation language; then tokenised
//! with the backbone's [`TextEncoder`] into one padded `[N, T]` id matrix (padding = the
//! tokenizer's pad id, which the encoder masks) with class ids from a [`LabelSet`].

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use peftbench_backbones::TextEncoder;
use peftbench_data_text::synthetic::{negation_sentiment, topic_labels, SENTIMENT_LABELS};
use peftbench_data_text::{
    read_classification, read_sib200, Columns, LabelSet, TextExample, SIB200_CATEGORIES,
};
use peftbench_suite::{DataFormat, Generator, RunSpec, TextColumns};
use peftbench_train::InMemoryBatches;

use crate::data::generated_seed;

/// A text task's splits and class names, read before the first run.
#[derive(Debug, Clone)]
pub struct TextTaskData {
    pub labels: LabelSet,
    pub train: Vec<TextExample>,
    pub eval: Vec<TextExample>,
    pub val: Option<Vec<TextExample>>,
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
    let eval = read_split(spec, root, &protocol.eval_split, task.eval_language())?;
    let val = protocol
        .val_split
        .as_deref()
        .map(|split| read_split(spec, root, split, train_language))
        .transpose()?;
    let labels = task_labels(spec, &train)?;
    Ok(TextTaskData {
        labels,
        train,
        eval,
        val,
    })
}

/// The class names in id order: the suite's `labels`, the dataset's own list, else the training
/// split's labels sorted; their number must be the task's `num_classes`.
fn task_labels(spec: &RunSpec, train: &[TextExample]) -> anyhow::Result<LabelSet> {
    let task = &spec.task;
    let names: Vec<String> = match (&task.labels, spec.data.format, task.generator) {
        (Some(labels), _, _) => labels.clone(),
        (None, DataFormat::Sib200, _) => SIB200_CATEGORIES.iter().map(|s| s.to_string()).collect(),
        (None, _, Some(Generator::Sentiment)) => {
            SENTIMENT_LABELS.iter().map(|s| s.to_string()).collect()
        }
        (None, _, Some(Generator::Topics)) => {
            topic_labels().iter().map(|s| s.to_string()).collect()
        }
        (None, _, _) => LabelSet::from_labels(train.iter().map(|e| e.label.as_str()))
            .names()
            .to_vec(),
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
) -> anyhow::Result<Vec<TextExample>> {
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
            generated.ok_or_else(|| {
                anyhow::anyhow!(
                    "task `{}`: no generated texts in language `{language}` (generated languages: {})",
                    task.name,
                    peftbench_data_text::synthetic::NEGATION_LANGUAGES.join(", ")
                )
            })?
        }
        DataFormat::Sib200 => read_sib200(
            root.expect("on-disk formats have a root"),
            language.expect("suite validation requires a language"),
            split,
        )?,
        DataFormat::Table => {
            let path = table_path(
                root.expect("on-disk formats have a root"),
                spec,
                split,
                language,
            )?;
            let columns = task.columns.clone().unwrap_or_default();
            let TextColumns { text, label } = &columns;
            read_classification(&path, None, &Columns { text, label })?
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

/// `<root>/<task>/[<language>/]<split>.{tsv,csv,jsonl}`: the first that exists, else an error
/// listing every path looked at.
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
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "task `{}`: no file for split `{split}`. Looked for:\n{}\nA `table` task keeps one \
                 file per split (TSV or CSV with a header row, or JSONL) with the columns its \
                 `columns` names; see README, \"Custom text tasks\"",
                spec.task.name,
                candidates
                    .iter()
                    .map(|p| format!("  - {}", p.display()))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
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
    let ids_u32: Vec<u32> = examples
        .iter()
        .map(|e| {
            labels.id(&e.label).ok_or_else(|| {
                anyhow::anyhow!(
                    "label `{}` is not one of the task's classes {:?}",
                    e.label,
                    labels.names()
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let n = ids_u32.len();
    InMemoryBatches::new(ids, Tensor::from_vec(ids_u32, n, device)?)
}
