//! Reranking: the top `depth` documents of a first-stage run (BM25, or a given run file) are
//! rescored by a relevance model and written as a new run.
//!
//! The model is anything implementing [`RelevanceScorer`] (a cross-encoder reading
//! `query [SEP] document`, or a closure in tests), so this crate does not depend on a backbone.
//! Only the reranked documents are kept: documents below `depth` are dropped rather than appended
//! with made-up scores, so Recall@k for `k > depth` is that of the first `depth` documents.

use anyhow::{bail, Context};
use peftbench_metrics::trec::Run;

use crate::corpus::Corpus;
use crate::queries::Queries;

/// Scores documents for a query; a higher score means more relevant.
pub trait RelevanceScorer {
    /// One score per document, in the order given. Called once per query with up to the rerank
    /// depth of documents, so an implementation can batch them.
    fn score(&mut self, query: &str, documents: &[&str]) -> anyhow::Result<Vec<f32>>;
}

impl<F> RelevanceScorer for F
where
    F: FnMut(&str, &[&str]) -> anyhow::Result<Vec<f32>>,
{
    fn score(&mut self, query: &str, documents: &[&str]) -> anyhow::Result<Vec<f32>> {
        self(query, documents)
    }
}

/// Reranks the first `depth` documents of every query of `first_stage` (in `trec_eval`'s order)
/// with `scorer`. Every query of the run must have a text in `queries` and every document one in
/// `corpus`; a scorer returning the wrong number of scores, or a NaN, is an error.
pub fn rerank(
    first_stage: &Run,
    queries: &Queries,
    corpus: &Corpus,
    depth: usize,
    scorer: &mut dyn RelevanceScorer,
) -> anyhow::Result<Run> {
    let mut reranked = Run::new();
    for query_id in first_stage.queries() {
        let query = queries
            .get(query_id)
            .with_context(|| format!("query `{query_id}` of the run has no text"))?;
        let candidates: Vec<&str> = first_stage
            .ranking(query_id)
            .into_iter()
            .take(depth)
            .map(|(doc, _)| doc)
            .collect();
        let texts = candidates
            .iter()
            .map(|doc| {
                corpus.get(*doc).map(|d| d.full_text()).with_context(|| {
                    format!("document `{doc}` of query `{query_id}` is not in the corpus")
                })
            })
            .collect::<anyhow::Result<Vec<String>>>()?;
        let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let scores = scorer
            .score(query, &text_refs)
            .with_context(|| format!("scoring query `{query_id}`"))?;
        if scores.len() != candidates.len() {
            bail!(
                "the scorer returned {} scores for {} documents of query `{query_id}`",
                scores.len(),
                candidates.len()
            );
        }
        for (doc, score) in candidates.into_iter().zip(scores) {
            reranked.insert(query_id, doc, f64::from(score))?;
        }
    }
    Ok(reranked)
}
