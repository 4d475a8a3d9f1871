//! One reranking task end to end: read and cross-check its files, take the first stage (the given
//! run, or BM25 over the corpus, optionally with document-language queries), rerank the top candidates with a [`RelevanceScorer`], write the
//! reranked run and evaluate both stages with the `trec_eval` measures.

use std::path::Path;

use anyhow::Context;
use peftbench_metrics::trec::{evaluate, Run, TrecEvaluation, TrecOptions};

use crate::bm25::Bm25Index;
use crate::corpus::read_corpus;
use crate::queries::read_queries;
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
    let corpus = read_corpus(&data_root.join(&task.corpus))?;
    let queries = read_queries(&data_root.join(&task.queries))?;
    let qrels = read_qrels(&data_root.join(&task.qrels), Some(&corpus))?;
    let first_stage = match &task.run {
        Some(run) => read_run(&data_root.join(run), Some(&corpus))?,
        None => {
            let index = match &spec.index_cache {
                Some(cache) => Bm25Index::open_or_build(&corpus, task.analyzer(), cache),
                None => Bm25Index::build_in_ram(&corpus, task.analyzer()),
            }
            .with_context(|| format!("task {}: building the BM25 index", task.name))?;
            let bm25_queries = match &task.first_stage_queries {
                Some(path) => read_queries(&data_root.join(path))?,
                None => queries.clone(),
            };
            index
                .retrieve(&bm25_queries, spec.first_stage_depth)
                .with_context(|| format!("task {}: BM25 retrieval", task.name))?
        }
    };
    let reranked = rerank(&first_stage, &queries, &corpus, spec.rerank_depth, scorer)
        .with_context(|| format!("task {}: reranking", task.name))?;
    write_run(run_out, &reranked, tag)?;
    let options: &TrecOptions = &spec.measures;
    Ok(RerankOutcome {
        first_stage_eval: evaluate(&qrels, &first_stage, options)
            .with_context(|| format!("task {}: evaluating the first stage", task.name))?,
        reranked_eval: evaluate(&qrels, &reranked, options)
            .with_context(|| format!("task {}: evaluating the reranked run", task.name))?,
        first_stage,
        reranked,
    })
}
