//! One reranking task end to end: read and cross-check its files, take the first stage (the given
//! run, or BM25 over the corpus, optionally with document-language queries), rerank the top
//! candidates with a [`RelevanceScorer`], write the reranked run and evaluate both stages with
//! the `trec_eval` measures.
//!
//! The two halves are separate because a sweep reranks one task's first stage with many models:
//! [`TaskCollection::load`] reads the files and runs the first stage once per task,
//! [`TaskCollection::rerank_and_evaluate`] runs once per model.

use std::path::Path;

use anyhow::Context;
use peftbench_metrics::trec::{evaluate, Qrels, Run, TrecEvaluation, TrecOptions};

use crate::bm25::Bm25Index;
use crate::corpus::{read_corpus_with_ids, Corpus};
use crate::queries::{read_queries, Queries};
use crate::rerank::{rerank, RelevanceScorer};
use crate::spec::{RerankTaskSpec, RetrievalSpec};
use crate::trec_files::{read_qrels, read_run, write_run};

/// What one task produced.
#[derive(Debug, Clone)]
pub struct RerankOutcome {
    /// The first-stage run (given or BM25).
    pub first_stage: Run,
    /// The reranked top candidates.
    pub reranked: Run,
    /// Measures of the first stage.
    pub first_stage_eval: TrecEvaluation,
    /// Measures after reranking.
    pub reranked_eval: TrecEvaluation,
}

/// A task's files, read and cross-checked, and its first-stage run.
#[derive(Debug, Clone)]
pub struct TaskCollection {
    pub name: String,
    pub corpus: Corpus,
    /// The queries the reranker reads.
    pub queries: Queries,
    pub qrels: Qrels,
    pub first_stage: Run,
}

impl TaskCollection {
    /// Reads `task`'s files under `data_root` and takes its first stage: the task's run file, or
    /// the top `first_stage_depth` BM25 documents (indexes cached under `index_cache` when given).
    pub fn load(
        task: &RerankTaskSpec,
        data_root: &Path,
        first_stage_depth: usize,
        index_cache: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let corpus = read_corpus_with_ids(&data_root.join(&task.corpus), &task.corpus_id_fields())?;
        let queries = read_queries(&data_root.join(&task.queries))?;
        let qrels = read_qrels(&data_root.join(&task.qrels), Some(&corpus))?;
        let first_stage = match &task.run {
            Some(run) => read_run(&data_root.join(run), Some(&corpus))?,
            None => {
                let index = match index_cache {
                    Some(cache) => Bm25Index::open_or_build(&corpus, task.analyzer(), cache),
                    None => Bm25Index::build_in_ram(&corpus, task.analyzer()),
                }
                .with_context(|| format!("task {}: building the BM25 index", task.name))?;
                let bm25_queries = match &task.first_stage_queries {
                    Some(path) => read_queries(&data_root.join(path))?,
                    None => queries.clone(),
                };
                index
                    .retrieve(&bm25_queries, first_stage_depth)
                    .with_context(|| format!("task {}: BM25 retrieval", task.name))?
            }
        };
        Ok(Self {
            name: task.name.clone(),
            corpus,
            queries,
            qrels,
            first_stage,
        })
    }

    /// Reranks the top `depth` candidates with `scorer`, writes the reranked run to `run_out`
    /// (tagged `tag`) and evaluates both stages with `options`.
    pub fn rerank_and_evaluate(
        &self,
        depth: usize,
        options: &TrecOptions,
        scorer: &mut dyn RelevanceScorer,
        run_out: &Path,
        tag: &str,
    ) -> anyhow::Result<RerankOutcome> {
        let task = &self.name;
        let reranked = rerank(
            &self.first_stage,
            &self.queries,
            &self.corpus,
            depth,
            scorer,
        )
        .with_context(|| format!("task {task}: reranking"))?;
        write_run(run_out, &reranked, tag)?;
        Ok(RerankOutcome {
            first_stage_eval: evaluate(&self.qrels, &self.first_stage, options)
                .with_context(|| format!("task {task}: evaluating the first stage"))?,
            reranked_eval: evaluate(&self.qrels, &reranked, options)
                .with_context(|| format!("task {task}: evaluating the reranked run"))?,
            first_stage: self.first_stage.clone(),
            reranked,
        })
    }
}

/// Runs `task` of `spec` with files under `data_root`, writing the reranked run to `run_out`
/// (tagged `tag`).
pub fn run_rerank_task(
    spec: &RetrievalSpec,
    task: &RerankTaskSpec,
    data_root: &Path,
    scorer: &mut dyn RelevanceScorer,
    run_out: &Path,
    tag: &str,
) -> anyhow::Result<RerankOutcome> {
    TaskCollection::load(
        task,
        data_root,
        spec.first_stage_depth,
        spec.index_cache.as_deref(),
    )?
    .rerank_and_evaluate(spec.rerank_depth, &spec.measures, scorer, run_out, tag)
}
