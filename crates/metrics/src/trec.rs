//! Ranking metrics with the semantics of NIST's `trec_eval` 9.0.8 (github.com/usnistgov/trec_eval,
//! the version `pytrec_eval` and `ir_measures` wrap): MAP (`map`), nDCG at a cutoff (`ndcg_cut.k`),
//! reciprocal rank at a cutoff (`recip_rank` on a ranking cut at `k`, i.e. `trec_eval -M k`; MRR@10
//! in MS MARCO's sense) and recall at a cutoff (`recall.k`), per query and averaged.
//!
//! What `trec_eval` does, and so what this module does:
//! * **Ranking.** The rank column of a run is ignored: documents are sorted by score descending,
//!   ties broken by document id *descending* in byte order (`strcmp(p2->docno, p1->docno)` in
//!   `form_res_rels.c`). A document listed twice for one query is an error, as is a qrels pair
//!   judged twice.
//! * **Relevance.** A document is relevant when its judgement is at least the relevance level
//!   (default 1). Documents absent from the qrels are non-relevant. Negative judgements mean "in
//!   the pool but unjudged": never relevant and not counted among the judged documents.
//! * **Gains.** nDCG uses the judgement itself as the gain (graded), discount `log2(rank + 1)`
//!   with ranks from 1, and the ideal ranking built from *all* the query's qrels (retrieved or
//!   not), highest grade first. The relevance level does not change nDCG gains.
//! * **Which queries.** A query is evaluated when it is in both the run and the qrels; run queries
//!   without qrels are ignored. A qrels query with judgements but no relevant document scores 0 on
//!   every measure and counts in the mean. With `average_complete` (`trec_eval -c`) the mean is
//!   taken over every qrels query, those missing from the run scoring 0.
//!
//! One default differs from `trec_eval`'s: `average_complete` is on, as ir_measures and HC4's own
//! evaluation average. Off, a query for which a first stage found nothing drops out of every
//! average, and a first stage that fails on hard queries makes every reranker look better. Turn it
//! off for `trec_eval`'s numbers; [`TrecEvaluation`] counts the judged, retrieved and averaged
//! queries either way.
//!
//! `trec_eval` 10.0-rc3 (the repository head) instead exits with "result qid not found in qrels"
//! when a qrels query has no results and `-c` is off; 9.0.8 skips such a query, as here.

use std::collections::BTreeMap;
use std::fmt;

/// Relevance judgements: query id → document id → grade (`qid 0 docid rel` lines).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Qrels {
    by_query: BTreeMap<String, BTreeMap<String, i64>>,
}

/// Scored documents per query (`qid Q0 docid rank score tag` lines; the rank is not kept, as
/// `trec_eval` recomputes it from the scores).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    by_query: BTreeMap<String, BTreeMap<String, f64>>,
}

/// A qrels or run entry that `trec_eval` would reject.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrecError {
    /// The same (query, document) pair was judged twice.
    #[error("query {query}: document {doc} is judged twice")]
    DuplicateJudgement { query: String, doc: String },
    /// The same document was retrieved twice for one query.
    #[error("query {query}: document {doc} is retrieved twice")]
    DuplicateDocument { query: String, doc: String },
    /// A score that cannot be ranked.
    #[error("query {query}: document {doc} has a non-finite score {score}")]
    NonFiniteScore {
        query: String,
        doc: String,
        score: f64,
    },
    /// No query is in both the run and the qrels (`trec_eval` exits with status 7).
    #[error("no queries with both results and relevance judgements")]
    NoCommonQueries,
}

impl Qrels {
    /// Empty judgements.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one judgement; judging a pair twice is an error, even with the same grade.
    pub fn insert(
        &mut self,
        query: impl Into<String>,
        doc: impl Into<String>,
        grade: i64,
    ) -> Result<(), TrecError> {
        let (query, doc) = (query.into(), doc.into());
        let docs = self.by_query.entry(query.clone()).or_default();
        if docs.contains_key(&doc) {
            return Err(TrecError::DuplicateJudgement { query, doc });
        }
        docs.insert(doc, grade);
        Ok(())
    }

    /// The judgements of one query.
    pub fn query(&self, query: &str) -> Option<&BTreeMap<String, i64>> {
        self.by_query.get(query)
    }

    /// Queries in id order with their judgements.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BTreeMap<String, i64>)> {
        self.by_query.iter().map(|(q, d)| (q.as_str(), d))
    }

    /// Number of judged queries.
    pub fn num_queries(&self) -> usize {
        self.by_query.len()
    }
}

impl Run {
    /// An empty run.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one scored document; a document twice for a query, or a NaN/infinite score, is an
    /// error.
    pub fn insert(
        &mut self,
        query: impl Into<String>,
        doc: impl Into<String>,
        score: f64,
    ) -> Result<(), TrecError> {
        let (query, doc) = (query.into(), doc.into());
        if !score.is_finite() {
            return Err(TrecError::NonFiniteScore { query, doc, score });
        }
        let docs = self.by_query.entry(query.clone()).or_default();
        if docs.contains_key(&doc) {
            return Err(TrecError::DuplicateDocument { query, doc });
        }
        docs.insert(doc, score);
        Ok(())
    }

    /// Queries in id order.
    pub fn queries(&self) -> impl Iterator<Item = &str> {
        self.by_query.keys().map(String::as_str)
    }

    /// Number of queries with at least one document.
    pub fn num_queries(&self) -> usize {
        self.by_query.len()
    }

    /// The documents of `query` in `trec_eval`'s order: score descending, then document id
    /// descending. Empty when the query is not in the run.
    pub fn ranking(&self, query: &str) -> Vec<(&str, f64)> {
        let mut ranked: Vec<(&str, f64)> = self
            .by_query
            .get(query)
            .map(|docs| docs.iter().map(|(d, &s)| (d.as_str(), s)).collect())
            .unwrap_or_default();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(a.0)));
        ranked
    }

    /// Keeps the first `depth` documents of every query in [`Run::ranking`] order (`trec_eval -M`).
    pub fn truncated(&self, depth: usize) -> Run {
        let by_query = self
            .by_query
            .keys()
            .map(|q| {
                let kept = self
                    .ranking(q)
                    .into_iter()
                    .take(depth)
                    .map(|(d, s)| (d.to_string(), s))
                    .collect();
                (q.clone(), kept)
            })
            .collect();
        Run { by_query }
    }
}

/// Which cutoffs and conventions to evaluate with; the defaults are MAP, nDCG@10, MRR@10 and
/// Recall@100 as `trec_eval -c` computes them (every judged query counts).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrecOptions {
    /// Lowest grade counted as relevant (`trec_eval -l`, default 1).
    pub relevance_level: i64,
    /// Average over every qrels query, those absent from the run scoring 0 (`trec_eval -c`;
    /// default on). Off: over the queries the run has (`trec_eval`'s default).
    pub average_complete: bool,
    /// Cutoff of nDCG (`ndcg_cut.10`).
    pub ndcg_cutoff: usize,
    /// Cutoff of the reciprocal rank (MRR@10).
    pub recip_rank_cutoff: usize,
    /// Cutoff of recall (`recall.100`).
    pub recall_cutoff: usize,
}

impl Default for TrecOptions {
    fn default() -> Self {
        Self {
            relevance_level: 1,
            average_complete: true,
            ndcg_cutoff: 10,
            recip_rank_cutoff: 10,
            recall_cutoff: 100,
        }
    }
}

/// The measures of one query (or their means).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrecMeasures {
    /// Average precision (`map`).
    pub map: f64,
    /// nDCG at [`TrecOptions::ndcg_cutoff`] (`ndcg_cut.k`).
    pub ndcg_cut: f64,
    /// Reciprocal rank of the first relevant document within [`TrecOptions::recip_rank_cutoff`].
    pub recip_rank: f64,
    /// Recall at [`TrecOptions::recall_cutoff`] (`recall.k`).
    pub recall: f64,
}

impl TrecMeasures {
    fn add(&mut self, other: &TrecMeasures) {
        self.map += other.map;
        self.ndcg_cut += other.ndcg_cut;
        self.recip_rank += other.recip_rank;
        self.recall += other.recall;
    }

    fn divided_by(self, n: f64) -> TrecMeasures {
        TrecMeasures {
            map: self.map / n,
            ndcg_cut: self.ndcg_cut / n,
            recip_rank: self.recip_rank / n,
            recall: self.recall / n,
        }
    }
}

/// Per-query measures and their mean.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrecEvaluation {
    /// The options evaluated with (for the measure names and cutoffs).
    pub options: TrecOptions,
    /// Every query in both the run and the qrels.
    pub per_query: BTreeMap<String, TrecMeasures>,
    /// Mean over [`TrecEvaluation::num_averaged`] queries.
    pub mean: TrecMeasures,
    /// Queries the mean divides by: `per_query.len()`, or the number of qrels queries with
    /// [`TrecOptions::average_complete`].
    pub num_averaged: usize,
    /// Queries with judgements (in the qrels).
    pub num_judged: usize,
}

impl TrecEvaluation {
    /// Judged queries the run has at least one document for (`per_query.len()`).
    pub fn num_retrieved(&self) -> usize {
        self.per_query.len()
    }
}

impl TrecEvaluation {
    /// `trec_eval`-style names of the four measures, in [`TrecMeasures`] field order.
    pub fn measure_names(&self) -> [String; 4] {
        let o = &self.options;
        [
            "map".to_string(),
            format!("ndcg_cut_{}", o.ndcg_cutoff),
            format!("recip_rank_{}", o.recip_rank_cutoff),
            format!("recall_{}", o.recall_cutoff),
        ]
    }
}

impl fmt::Display for TrecEvaluation {
    /// `trec_eval -q` layout: `measure<TAB>qid<TAB>value`, per query then `all`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.measure_names();
        let rows = self
            .per_query
            .iter()
            .map(|(q, m)| (q.as_str(), m))
            .chain(std::iter::once(("all", &self.mean)));
        for (query, m) in rows {
            for (name, value) in names
                .iter()
                .zip([m.map, m.ndcg_cut, m.recip_rank, m.recall])
            {
                writeln!(f, "{name:<22}\t{query}\t{value:.4}")?;
            }
        }
        Ok(())
    }
}

/// Evaluates `run` against `qrels` with `trec_eval`'s semantics (see the module documentation).
pub fn evaluate(
    qrels: &Qrels,
    run: &Run,
    options: &TrecOptions,
) -> Result<TrecEvaluation, TrecError> {
    let mut per_query = BTreeMap::new();
    let mut sum = TrecMeasures::default();
    for (query, judgements) in qrels.iter() {
        if !run.by_query.contains_key(query) {
            continue;
        }
        let ranked_grades: Vec<Option<i64>> = run
            .ranking(query)
            .into_iter()
            .map(|(doc, _)| judgements.get(doc).copied())
            .collect();
        let measures = query_measures(&ranked_grades, judgements, options);
        sum.add(&measures);
        per_query.insert(query.to_string(), measures);
    }
    if per_query.is_empty() {
        return Err(TrecError::NoCommonQueries);
    }
    let num_averaged = if options.average_complete {
        qrels.num_queries()
    } else {
        per_query.len()
    };
    Ok(TrecEvaluation {
        options: *options,
        per_query,
        mean: sum.divided_by(num_averaged as f64),
        num_averaged,
        num_judged: qrels.num_queries(),
    })
}

/// The four measures of one query from the grades of its ranked documents (`None`: not in the
/// qrels) and all its judgements.
fn query_measures(
    ranked_grades: &[Option<i64>],
    judgements: &BTreeMap<String, i64>,
    options: &TrecOptions,
) -> TrecMeasures {
    let relevant = |g: &Option<i64>| g.is_some_and(|g| g >= options.relevance_level);
    let num_relevant = judgements
        .values()
        .filter(|&&g| g >= options.relevance_level)
        .count();

    let mut relevant_so_far = 0usize;
    let mut precision_sum = 0.0;
    for (i, grade) in ranked_grades.iter().enumerate() {
        if relevant(grade) {
            relevant_so_far += 1;
            precision_sum += relevant_so_far as f64 / (i + 1) as f64;
        }
    }
    // m_map.c: 0 unless a relevant document was retrieved.
    let map = if relevant_so_far > 0 {
        precision_sum / num_relevant as f64
    } else {
        0.0
    };

    let recip_rank = ranked_grades
        .iter()
        .take(options.recip_rank_cutoff)
        .position(relevant)
        .map_or(0.0, |i| 1.0 / (i + 1) as f64);

    let recall = if num_relevant == 0 {
        0.0
    } else {
        let found = ranked_grades
            .iter()
            .take(options.recall_cutoff)
            .filter(|g| relevant(g))
            .count();
        found as f64 / num_relevant as f64
    };

    let k = options.ndcg_cutoff;
    let dcg = discounted_gain(ranked_grades.iter().take(k).map(|g| g.unwrap_or(0)));
    let mut ideal_grades: Vec<i64> = judgements.values().copied().filter(|&g| g > 0).collect();
    ideal_grades.sort_unstable_by(|a, b| b.cmp(a));
    let ideal = discounted_gain(ideal_grades.into_iter().take(k));
    // m_ndcg_cut.c leaves the DCG (then 0) unnormalised when the ideal is 0.
    let ndcg_cut = if ideal > 0.0 { dcg / ideal } else { dcg };

    TrecMeasures {
        map,
        ndcg_cut,
        recip_rank,
        recall,
    }
}

/// `Σ gain / log2(rank + 1)` over positive grades, ranks from 1.
fn discounted_gain(grades: impl Iterator<Item = i64>) -> f64 {
    grades
        .enumerate()
        .filter(|(_, g)| *g > 0)
        .map(|(i, g)| g as f64 / ((i + 2) as f64).log2())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qrels(lines: &[(&str, &str, i64)]) -> Qrels {
        let mut q = Qrels::new();
        for &(query, doc, grade) in lines {
            q.insert(query, doc, grade).unwrap();
        }
        q
    }

    fn run(lines: &[(&str, &str, f64)]) -> Run {
        let mut r = Run::new();
        for &(query, doc, score) in lines {
            r.insert(query, doc, score).unwrap();
        }
        r
    }

    #[test]
    fn ties_break_by_document_id_descending() {
        let r = run(&[
            ("q", "a", 1.0),
            ("q", "c", 1.0),
            ("q", "b", 2.0),
            ("q", "B", 1.0),
        ]);
        let order: Vec<&str> = r.ranking("q").into_iter().map(|(d, _)| d).collect();
        // Byte order: "B" < "a" < "c", so among the ties c, a, B.
        assert_eq!(order, ["b", "c", "a", "B"]);
    }

    #[test]
    fn hand_computed_graded_query() {
        // Ranking d3 (grade 2), d1 (0), d2 (1), d9 (unjudged); d4 (grade 3) not retrieved.
        let q = qrels(&[
            ("q", "d1", 0),
            ("q", "d2", 1),
            ("q", "d3", 2),
            ("q", "d4", 3),
        ]);
        let r = run(&[
            ("q", "d3", 4.0),
            ("q", "d1", 3.0),
            ("q", "d2", 2.0),
            ("q", "d9", 1.0),
        ]);
        let e = evaluate(&q, &r, &TrecOptions::default()).unwrap();
        let m = e.per_query["q"];
        assert!((m.map - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(m.recip_rank, 1.0);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        let dcg = 2.0 + 1.0 / 4f64.log2();
        let ideal = 3.0 + 2.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!((m.ndcg_cut - dcg / ideal).abs() < 1e-12);
    }

    #[test]
    fn query_without_relevant_documents_scores_zero_and_counts() {
        let q = qrels(&[("a", "d1", 1), ("b", "d1", 0)]);
        let r = run(&[("a", "d1", 1.0), ("b", "d1", 1.0), ("unjudged", "d1", 1.0)]);
        let e = evaluate(&q, &r, &TrecOptions::default()).unwrap();
        assert_eq!(e.per_query.len(), 2);
        assert_eq!(e.per_query["b"], TrecMeasures::default());
        assert_eq!(e.mean.map, 0.5);
    }

    #[test]
    fn average_complete_divides_by_all_qrels_queries() {
        let q = qrels(&[("a", "d1", 1), ("b", "d1", 1)]);
        let r = run(&[("a", "d1", 1.0)]);
        let options = TrecOptions {
            average_complete: true,
            ..TrecOptions::default()
        };
        let e = evaluate(&q, &r, &options).unwrap();
        assert_eq!((e.per_query.len(), e.num_averaged), (1, 2));
        assert_eq!(e.mean.map, 0.5);
    }

    /// By default every judged query counts (a query the run lacks scores 0); `trec_eval`'s own
    /// default, over the retrieved queries only, is one option away. Both count their queries.
    #[test]
    fn every_judged_query_counts_by_default() {
        let q = qrels(&[("a", "d1", 1), ("b", "d1", 1), ("c", "d2", 1)]);
        let r = run(&[("a", "d1", 1.0), ("c", "d1", 1.0)]);
        let e = evaluate(&q, &r, &TrecOptions::default()).unwrap();
        assert_eq!((e.num_judged, e.num_retrieved(), e.num_averaged), (3, 2, 3));
        assert!((e.mean.map - 1.0 / 3.0).abs() < 1e-12);
        let retrieved_only = TrecOptions {
            average_complete: false,
            ..TrecOptions::default()
        };
        let e = evaluate(&q, &r, &retrieved_only).unwrap();
        assert_eq!((e.num_judged, e.num_retrieved(), e.num_averaged), (3, 2, 2));
        assert_eq!(e.mean.map, 0.5);
    }

    #[test]
    fn duplicates_and_disjoint_queries_are_errors() {
        let mut q = qrels(&[("a", "d1", 1)]);
        assert!(matches!(
            q.insert("a", "d1", 1),
            Err(TrecError::DuplicateJudgement { .. })
        ));
        let mut r = run(&[("b", "d1", 1.0)]);
        assert!(matches!(
            r.insert("b", "d1", 0.5),
            Err(TrecError::DuplicateDocument { .. })
        ));
        assert!(r.insert("b", "d2", f64::NAN).is_err());
        assert_eq!(
            evaluate(&q, &r, &TrecOptions::default()),
            Err(TrecError::NoCommonQueries)
        );
    }
}
