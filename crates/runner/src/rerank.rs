//! Reranking runs (suites with a `retrieval` section): a cross-encoder, the backbone reading
//! `[CLS] query [SEP] document [SEP]` with a one-logit relevance head and the method attached, is
//! trained on MS MARCO-style triples with the suite's ranking objective, then rescores the top
//! candidates of each task's first stage (BM25 or a given run). Each run evaluates one task; the
//! trained model depends only on the method, recipe, seed and training data, so the first task's
//! run trains it and saves it under `<results>/rerankers/`, and the other tasks' runs load it.
//!
//! Generated suites (`data.format: generated`) write a review collection in the real file formats
//! first ([`generated_collection`]), so the readers, BM25 and the measures run as on real data.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::TextEncoder;
use peftbench_core::shuffle::permutation;
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};
use peftbench_data_text::synthetic::{review_collection, review_triples, NEGATION_LANGUAGES};
use peftbench_methods::PeftModel;
use peftbench_records::EpochLog;
use peftbench_retrieval::{
    read_corpus, read_queries, GroupIndex, RankingGroup, RankingObjective, RelevanceScorer,
    RerankRun, TaskCollection, TriplesFile, TriplesFormat,
};
use peftbench_suite::{canonical_json, DataFormat, RunSpec};
use peftbench_train::{
    derive_seed, listwise_softmax, pairwise_margin, pointwise_bce, ranknet, Batch, BatchSource,
    TrainModel, TrainOutcome,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::run::{logs, train_config, train_phases, Finished, Objective, RunContext};

/// A reranking task prepared for its runs: its collection with the first stage done, and the
/// training groups indexed.
pub struct RerankTask {
    pub collection: TaskCollection,
    /// The training groups, read from the triples file batch by batch.
    pub training: TrainingGroups,
    /// Leftover negatives of a (query, positive) too few to fill a group, left out.
    pub incomplete_groups: usize,
}

/// Every file a reranking run reads, relative to the data root, with what it is.
fn files_of(run: &RerankRun) -> Vec<(&'static str, &Path)> {
    let task = &run.task;
    let mut files = vec![
        ("queries", task.queries.as_path()),
        ("corpus", task.corpus.as_path()),
        ("qrels", task.qrels.as_path()),
        ("training triples", run.training.triples.as_path()),
    ];
    for (what, path) in [
        ("first-stage run", &task.run),
        ("first-stage queries", &task.first_stage_queries),
        ("training queries", &run.training.queries),
        ("training corpus", &run.training.corpus),
    ] {
        if let Some(p) = path {
            files.push((what, p.as_path()));
        }
    }
    files
}

/// Checks that every file of `spec`'s reranking task exists under `root` (before the first run
/// of a sweep), naming each missing one and where it was looked for.
pub fn check_files(spec: &RunSpec, root: &Path) -> anyhow::Result<()> {
    let run = spec.retrieval.as_ref().expect("a reranking run");
    let missing: Vec<String> = files_of(run)
        .into_iter()
        .filter(|(_, p)| !root.join(p).is_file())
        .map(|(what, p)| format!("  {what}: {}", root.join(p).display()))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "task `{}`: files not found under the data root {}:\n{}\n(the `retrieval` section of the \
         suite gives these paths; suites/xling-rerank.yaml documents the layouts of CLEF-2003, \
         HC4 and MS MARCO)",
        spec.task.name,
        root.display(),
        missing.join("\n")
    );
    if run.training.format == TriplesFormat::Ids {
        anyhow::ensure!(
            run.training.queries.is_some() && run.training.corpus.is_some(),
            "task `{}`: id triples (`format: ids`) need `training.queries` and `training.corpus` \
             to look the ids up in",
            spec.task.name
        );
    }
    Ok(())
}

/// Version of the generated collection's content: bump when the generator changes.
const GENERATED_VERSION: &str = "reviews-retrieval-v1";

/// The data root of a generated reranking suite: for every generated language, `corpus/<l>.jsonl`
/// (BEIR JSONL, `data.eval_examples` reviews), `queries/<l>.tsv`, `qrels/<l>.qrels` (graded, see
/// [`review_collection`]) and `triples/<l>.tsv` (`data.train_examples` MS MARCO-style text
/// triples), written once under `<cache>/generated/` and reused.
pub fn generated_collection(spec: &RunSpec, cache: &Path) -> anyhow::Result<PathBuf> {
    let documents = spec.data.eval_examples.unwrap_or(0);
    let triples = spec.data.train_examples.unwrap_or(0);
    let key = format!("{GENERATED_VERSION}-d{documents}-t{triples}");
    let root = cache.join("generated").join(key);
    // Published whole (files and the `complete` marker) or not at all.
    if root.join("complete").is_file() {
        return Ok(root);
    }
    crate::pretraining::publish_dir(&root, |staging| {
        for dir in ["corpus", "queries", "qrels", "triples"] {
            std::fs::create_dir_all(staging.join(dir))?;
        }
        for lang in NEGATION_LANGUAGES {
            let seed =
                |split| crate::data::generated_seed(&format!("reviews-retrieval/{lang}"), split);
            let c = review_collection(lang, documents, seed("test")).expect("generated language");
            let mut corpus = String::new();
            for (id, text) in &c.documents {
                corpus.push_str(
                    &serde_json::json!({"_id": id, "title": "", "text": text}).to_string(),
                );
                corpus.push('\n');
            }
            std::fs::write(staging.join(format!("corpus/{lang}.jsonl")), corpus)?;
            let queries: String = c
                .queries
                .iter()
                .map(|(id, q)| format!("{id}\t{q}\n"))
                .collect();
            std::fs::write(staging.join(format!("queries/{lang}.tsv")), queries)?;
            let qrels: String = c
                .qrels
                .iter()
                .map(|(q, d, g)| format!("{q} 0 {d} {g}\n"))
                .collect();
            std::fs::write(staging.join(format!("qrels/{lang}.qrels")), qrels)?;
            let triples: String = review_triples(lang, triples, seed("train"))
                .expect("generated language")
                .into_iter()
                .map(|(q, p, n)| format!("{q}\t{p}\t{n}\n"))
                .collect();
            std::fs::write(staging.join(format!("triples/{lang}.tsv")), triples)?;
        }
        std::fs::write(staging.join("complete"), "")?;
        Ok(())
    })?;
    Ok(root)
}

impl RerankTask {
    /// Reads the task's collection, runs its first stage and encodes the training groups.
    pub fn prepare(
        spec: &RunSpec,
        root: &Path,
        index_cache: Option<&Path>,
        encoder: &TextEncoder,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let run = spec.retrieval.as_ref().expect("a reranking run");
        let collection = TaskCollection::load(&run.task, root, run.first_stage_depth, index_cache)?;
        let training = &run.training;
        let path = root.join(&training.triples);
        let file = match training.format {
            TriplesFormat::Text => TriplesFile::text(&path),
            TriplesFormat::Ids => {
                let queries =
                    read_queries(&root.join(training.queries.as_ref().expect("checked")))?;
                let corpus = read_corpus(&root.join(training.corpus.as_ref().expect("checked")))?;
                TriplesFile::ids(&path, Arc::new((queries, corpus)))
            }
        };
        let cap = match (training.max_triples, spec.limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let index = GroupIndex::build(&file, training.negatives, cap)?;
        anyhow::ensure!(
            !index.is_empty(),
            "{}: no training group with {} distinct negative(s) among {} triples",
            path.display(),
            training.negatives,
            index.triples
        );
        let incomplete_groups = index.incomplete;
        Ok(Self {
            collection,
            training: TrainingGroups {
                file,
                index,
                encoder: encoder.clone(),
                per_group: 1 + training.negatives,
                device: device.clone(),
            },
            incomplete_groups,
        })
    }
}

/// A reranking task's training groups as batches `[B, 1 + negatives, 2, tokens]` (positive
/// first, labels all 0), read from the triples file and tokenised batch by batch, each padded to
/// its own longest pair: nothing but the groups' line offsets is held between batches.
pub struct TrainingGroups {
    file: TriplesFile,
    index: GroupIndex,
    encoder: TextEncoder,
    per_group: usize,
    device: Device,
}

impl TrainingGroups {
    fn batch(&self, reader: &mut BufReader<File>, groups: &[usize]) -> anyhow::Result<Batch> {
        let groups: Vec<RankingGroup> = groups
            .iter()
            .map(|&g| self.index.group(&self.file, reader, g))
            .collect::<Result<_, _>>()?;
        let pairs: Vec<(&str, &str)> = groups
            .iter()
            .flat_map(|g| {
                std::iter::once(g.positive.as_str())
                    .chain(g.negatives.iter().map(String::as_str))
                    .map(move |d| (g.query.as_str(), d))
            })
            .collect();
        let encoded = self.encoder.encode_pairs(&pairs)?;
        let inputs = encoded.pair_tensor(&self.device)?.reshape((
            groups.len(),
            self.per_group,
            2,
            encoded.width(),
        ))?;
        let labels = Tensor::zeros(groups.len(), DType::U32, &self.device)?;
        Ok(Batch::new(inputs, labels))
    }
}

impl BatchSource for TrainingGroups {
    fn num_examples(&self) -> usize {
        self.index.len()
    }

    /// In the order every batch source uses (`permutation(n, seed)`), so a seed gives the
    /// batches of the in-memory groups this replaces.
    fn batches(
        &self,
        batch_size: usize,
        shuffle_seed: Option<u64>,
    ) -> Box<dyn Iterator<Item = anyhow::Result<Batch>> + '_> {
        let n = self.index.len();
        let order: Vec<usize> = match shuffle_seed {
            Some(seed) => permutation(n, seed),
            None => (0..n).collect(),
        };
        let chunks: Vec<Vec<usize>> = order
            .chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        let mut reader = self.file.reader();
        Box::new(chunks.into_iter().map(move |groups| {
            let reader = reader.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
            self.batch(reader, &groups)
        }))
    }
}

/// The cross-encoder as the trainer sees it: inputs are groups `[G, K, 2, tokens]` whose column 0
/// is the relevant document, logits their relevance scores `[G, K]`, the loss the suite's
/// objective. `evaluate`'s accuracy is then how often the relevant document scores highest.
struct CrossEncoder<'a> {
    model: &'a PeftModel,
    objective: RankingObjective,
    margin: f64,
}

impl CrossEncoder<'_> {
    fn scores(&self, groups: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        let (g, k) = (groups.dim(0)?, groups.dim(1)?);
        let pairs = groups.flatten(0, 1)?;
        self.model.logits(&pairs, ctx)?.reshape((g, k))
    }
}

impl TrainModel for CrossEncoder<'_> {
    fn trainable(&self) -> &NamedVars {
        self.model.trainable()
    }

    fn logits(&self, input: &Tensor, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.scores(input, ctx)
    }

    fn batch_logits(&self, batch: &Batch, ctx: &ForwardCtx) -> candle_core::Result<Tensor> {
        self.scores(&batch.inputs, ctx)
    }

    fn loss(
        &self,
        scores: &Tensor,
        _labels: &Tensor,
        _smoothing: f64,
    ) -> candle_core::Result<Tensor> {
        group_loss(scores, self.objective, self.margin)
    }
}

/// The ranking loss of group scores `[G, K]` whose column 0 is the relevant document: listwise
/// softmax cross-entropy over each group; RankNet and the hinge on every (relevant, non-relevant)
/// pair of a group; pointwise BCE with label 1 on column 0 and 0 elsewhere.
fn group_loss(
    scores: &Tensor,
    objective: RankingObjective,
    margin: f64,
) -> candle_core::Result<Tensor> {
    let k = scores.dim(1)?;
    // Every negative paired with its group's positive.
    let positive = || {
        scores
            .narrow(1, 0, 1)?
            .broadcast_as((scores.dim(0)?, k - 1))?
            .contiguous()
    };
    let negative = || scores.narrow(1, 1, k - 1);
    match objective {
        RankingObjective::Listwise => listwise_softmax(scores),
        RankingObjective::Ranknet => ranknet(&positive()?, &negative()?),
        RankingObjective::PairwiseMargin => pairwise_margin(&positive()?, &negative()?, margin),
        RankingObjective::Pointwise => pointwise_bce(scores, &relevance_labels(scores)?),
    }
}

/// 1 in column 0 (the relevant document), 0 elsewhere, in `scores`' shape and dtype.
fn relevance_labels(scores: &Tensor) -> candle_core::Result<Tensor> {
    let (g, k) = scores.dims2()?;
    let mut labels = vec![0f32; g * k];
    for row in labels.chunks_mut(k) {
        row[0] = 1.0;
    }
    Tensor::from_vec(labels, (g, k), scores.device())?.to_dtype(scores.dtype())
}

/// Scores (query, document) pairs with a trained cross-encoder, `batch_size` pairs at a time.
struct ModelScorer<'a> {
    model: &'a PeftModel,
    encoder: &'a TextEncoder,
    batch_size: usize,
    device: &'a Device,
}

impl RelevanceScorer for ModelScorer<'_> {
    fn score(&mut self, query: &str, documents: &[&str]) -> anyhow::Result<Vec<f32>> {
        let ctx = ForwardCtx::eval();
        let mut scores = Vec::with_capacity(documents.len());
        for chunk in documents.chunks(self.batch_size.max(1)) {
            let pairs: Vec<(&str, &str)> = chunk.iter().map(|d| (query, *d)).collect();
            let input = self
                .encoder
                .encode_pairs(&pairs)?
                .pair_tensor(self.device)?;
            let logits = self.model.logits(&input, &ctx)?.detach();
            scores.extend(
                logits
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(scores)
    }
}

/// What training the cross-encoder reported, kept beside the saved model for the runs that load it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainingSummary {
    selected_epoch: usize,
    history: Vec<EpochLog>,
    train_seconds: f64,
    examples_per_second: f64,
    /// How often the relevant document scored highest on the training groups, after training.
    train_positive_first: f64,
    /// Bytes the adapter files take (what `PeftModel::save` wrote), as classification runs record.
    adapter_bytes: u64,
}

const SUMMARY_FILE: &str = "training.json";

/// SHA-256 of the run's configuration without its evaluation task: every task of a suite shares
/// the cross-encoder trained for this method, recipe, seed and training data.
fn training_hash(spec: &RunSpec) -> String {
    let mut v = serde_json::to_value(spec).expect("RunSpec serialises");
    let object = v.as_object_mut().expect("an object");
    object.remove("task");
    object.remove("group");
    if let Some(data) = object.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.remove("root");
    }
    if let Some(r) = object.get_mut("retrieval").and_then(|r| r.as_object_mut()) {
        r.remove("task");
        r.remove("first_stage_depth");
        r.remove("rerank_depth");
        r.remove("measures");
    }
    let mut s = String::new();
    canonical_json(&v, &mut s);
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the trained cross-encoder of `spec` is kept.
fn trained_dir(spec: &RunSpec, results: &Path) -> PathBuf {
    results
        .join("rerankers")
        .join(&spec.suite)
        .join(&spec.label)
        .join(format!("seed{}-{}", spec.seed, &training_hash(spec)[..10]))
}

/// The trained cross-encoder of `spec`: loaded when an earlier run saved it, else trained and
/// saved. `Err(finished)` when training diverged.
fn trained_model(
    spec: &RunSpec,
    task: &RerankTask,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<Result<(PeftModel, TrainingSummary, PathBuf), Box<Finished>>> {
    let dir = trained_dir(spec, ctx.store.root());
    let training = &spec.retrieval.as_ref().expect("a reranking run").training;
    if dir.join(SUMMARY_FILE).is_file() {
        let model = crate::language_adapters::composed_from_adapter(
            spec,
            Some(&training.language),
            &dir,
            ctx,
            progress,
        )?;
        let summary: TrainingSummary =
            serde_json::from_str(&std::fs::read_to_string(dir.join(SUMMARY_FILE))?)?;
        return Ok(Ok((model, summary, dir)));
    }
    let init = SeededInit::new(
        derive_seed(&[spec.seed, crate::run::MODEL_INIT]),
        ctx.device,
    );
    // Composing methods train over the adapter of the training data's language.
    let mut model = crate::language_adapters::composed_model(
        spec,
        Some(&training.language),
        1,
        &init,
        ctx,
        progress,
    )?;
    let cfg = train_config(spec);
    // Data-dependent methods (CorDA, SHiRA's gradient mask) look at a few training batches first,
    // here as (query, document) pairs under the pointwise relevance loss.
    let mut calibration = task
        .training
        .batches(
            cfg.batch_size,
            Some(derive_seed(&[spec.seed, crate::run::CALIBRATION])),
        )
        .map(|batch| {
            let groups = batch?.inputs;
            let (g, k) = (groups.dim(0)?, groups.dim(1)?);
            let labels = Tensor::from_vec(
                (0..g * k)
                    .map(|i| u32::from(i % k == 0))
                    .collect::<Vec<_>>(),
                g * k,
                groups.device(),
            )?;
            Ok((groups.flatten(0, 1)?, labels))
        });
    model.calibrate(&mut calibration, &|logits, labels| {
        pointwise_bce(&logits.flatten_all()?, &labels.to_dtype(logits.dtype())?)
    })?;
    let ranking = Ranking {
        objective: training.objective,
        margin: training.margin,
    };
    let outcome = train_phases(&mut model, &ranking, &task.training, None, &cfg, progress)?;
    let report = match outcome {
        TrainOutcome::Completed(report) => report,
        TrainOutcome::Diverged {
            epoch,
            step,
            loss,
            history,
        } => {
            return Ok(Err(Box::new(Finished::diverged(
                &history,
                model.trainable_count() as u64,
                model.total_count() as u64,
                epoch,
                step,
                loss,
            ))))
        }
    };
    let train_positive_first = peftbench_train::evaluate(
        &*ranking.trainee(&model),
        &task.training,
        cfg.eval_batch_size,
    )?
    .accuracy;
    let mut summary = TrainingSummary {
        selected_epoch: report.selected_epoch,
        history: logs(&report.history),
        train_seconds: report.train_seconds,
        examples_per_second: report.examples_per_second,
        train_positive_first,
        adapter_bytes: 0,
    };
    // Published atomically: a killed run leaves no half-written model that a later run would load.
    crate::pretraining::publish_dir(&dir, |staging| {
        summary.adapter_bytes = model.save(staging, &ctx.backbone.name)?;
        std::fs::write(
            staging.join(SUMMARY_FILE),
            serde_json::to_string_pretty(&summary)?,
        )?;
        Ok(())
    })?;
    Ok(Ok((model, summary, dir)))
}

/// Training a relevance model: the run's model read as a [`CrossEncoder`] under a ranking loss.
struct Ranking {
    objective: RankingObjective,
    margin: f64,
}

impl Objective for Ranking {
    fn trainee<'m>(&self, model: &'m PeftModel) -> Box<dyn TrainModel + 'm> {
        Box::new(CrossEncoder {
            model,
            objective: self.objective,
            margin: self.margin,
        })
    }
}

/// Trains (or loads) the run's cross-encoder, reranks its task and evaluates both stages.
pub(crate) fn execute_rerank(
    spec: &RunSpec,
    task: &RerankTask,
    ctx: &RunContext<'_>,
    progress: &mut dyn FnMut(peftbench_train::Progress),
) -> anyhow::Result<Finished> {
    let run = spec.retrieval.as_ref().expect("a reranking run");
    let (mut model, summary, model_dir) = match trained_model(spec, task, ctx, progress)? {
        Ok(trained) => trained,
        Err(diverged) => return Ok(*diverged),
    };
    // Composing methods score with the adapter of the documents' language.
    crate::language_adapters::swap_for_evaluation(
        spec,
        &mut model,
        Some(&run.training.language),
        Some(&run.task.document_language),
        ctx,
        progress,
    )?;
    let eval_started = std::time::Instant::now();
    let out = ctx.store.artifact_dir(&spec.run_id());
    std::fs::create_dir_all(&out)?;
    let encoder = ctx
        .text_encoder
        .expect("reranking suites load their backbone's tokenizer");
    let mut scorer = ModelScorer {
        model: &model,
        encoder,
        batch_size: spec.recipe.eval_batch_size,
        device: ctx.device,
    };
    let outcome = task.collection.rerank_and_evaluate(
        run.rerank_depth,
        &run.measures,
        &mut scorer,
        &out.join("reranked.run"),
        &format!("peftbench-{}", spec.label),
    )?;
    // Per-query measures of the reranked run, as `trec_eval -q` prints them.
    std::fs::write(out.join("per_query.txt"), outcome.reranked_eval.to_string())?;
    let mut metrics = BTreeMap::new();
    let names = outcome.reranked_eval.measure_names();
    let values = |e: &peftbench_metrics::trec::TrecEvaluation| {
        let m = &e.mean;
        [m.map, m.ndcg_cut, m.recip_rank, m.recall]
    };
    for (name, (reranked, first)) in names.iter().zip(
        values(&outcome.reranked_eval)
            .into_iter()
            .zip(values(&outcome.first_stage_eval)),
    ) {
        metrics.insert(name.clone(), reranked);
        metrics.insert(format!("first_stage_{name}"), first);
    }
    // How many queries the averages are over: judged ones, those the first stage found candidates
    // for, and those averaged (every judged query unless `average_complete: false`).
    let first_stage = &outcome.first_stage_eval;
    metrics.insert("queries_judged".into(), first_stage.num_judged as f64);
    metrics.insert(
        "queries_retrieved".into(),
        first_stage.num_retrieved() as f64,
    );
    metrics.insert(
        "queries_evaluated".into(),
        outcome.reranked_eval.num_averaged as f64,
    );
    metrics.insert("train_positive_first".into(), summary.train_positive_first);
    if task.incomplete_groups > 0 {
        metrics.insert("incomplete_groups".into(), task.incomplete_groups as f64);
    }
    Ok(Finished {
        status: peftbench_records::RunStatus::Completed,
        metrics,
        selected_epoch: Some(summary.selected_epoch),
        history: summary.history,
        trainable: model.trainable_count() as u64,
        total: model.total_count() as u64,
        adapter_bytes: Some(summary.adapter_bytes),
        adapter_dir: Some(
            model_dir
                .strip_prefix(ctx.store.root())
                .unwrap_or(&model_dir)
                .display()
                .to_string(),
        ),
        train_seconds: summary.train_seconds,
        eval_seconds: eval_started.elapsed().as_secs_f64(),
        examples_per_second: summary.examples_per_second,
        error: None,
        eval_correct: None,
    })
}

/// The data root of a reranking run: the generated collection, or the suite's data on disk.
pub fn data_root(spec: &RunSpec, paths: &crate::Paths) -> anyhow::Result<PathBuf> {
    match spec.data.format {
        DataFormat::Generated => generated_collection(spec, &paths.cache),
        _ => crate::data::data_root(spec, paths),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups of one relevant and two non-relevant documents: each objective equals its formula
    /// written out over the (relevant, non-relevant) pairs or the group.
    #[test]
    fn group_losses_pair_the_relevant_document_with_each_other() {
        let rows = [[2.0f64, 1.0, -0.5], [0.0, 3.0, 0.5]];
        let scores = Tensor::new(&rows, &Device::Cpu).unwrap();
        let loss = |objective| {
            group_loss(&scores, objective, 1.0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let softplus = |x: f64| (1.0 + x.exp()).ln();
        let pairs: Vec<(f64, f64)> = rows
            .iter()
            .flat_map(|r| [(r[0], r[1]), (r[0], r[2])])
            .collect();
        let mean = |f: &dyn Fn(f64, f64) -> f64| {
            pairs.iter().map(|&(p, n)| f(p, n)).sum::<f64>() / pairs.len() as f64
        };
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(
            loss(RankingObjective::Ranknet),
            mean(&|p, n| softplus(n - p)),
        );
        close(
            loss(RankingObjective::PairwiseMargin),
            mean(&|p, n| (1.0 - (p - n)).max(0.0)),
        );
        let listwise = rows
            .iter()
            .map(|r| -(r[0] - r.iter().map(|x| x.exp()).sum::<f64>().ln()))
            .sum::<f64>()
            / 2.0;
        close(loss(RankingObjective::Listwise), listwise);
        let pointwise = rows
            .iter()
            .flat_map(|r| [softplus(-r[0]), softplus(r[1]), softplus(r[2])])
            .sum::<f64>()
            / 6.0;
        close(loss(RankingObjective::Pointwise), pointwise);
    }
}
