//! The reranking section of a suite file (`retrieval:` in `suites/xling-rerank.yaml`): the data
//! of each evaluation task (queries, corpus, qrels, an optional first-stage run), the first stage,
//! the rerank depth and the training data. Paths are relative to the data root. Every struct
//! rejects unknown fields.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::bm25::Analyzer;
use crate::corpus::DEFAULT_ID_FIELDS;
use peftbench_metrics::trec::TrecOptions;

/// Reranking settings shared by the tasks, and the tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalSpec {
    /// Candidates per query taken from BM25 when a task has no run file.
    #[serde(default = "default_first_stage_depth")]
    pub first_stage_depth: usize,
    /// How many of the first-stage candidates the cross-encoder rescores.
    #[serde(default = "default_rerank_depth")]
    pub rerank_depth: usize,
    /// Measures and their cutoffs (default MAP, nDCG@10, MRR@10, Recall@100 averaged over every
    /// judged query, `trec_eval -c`).
    #[serde(default)]
    pub measures: TrecOptions,
    /// Where BM25 indexes are cached; `None`: in memory, rebuilt each time.
    #[serde(default)]
    pub index_cache: Option<PathBuf>,
    /// The cross-encoder's training data.
    pub training: TrainingSpec,
    /// Evaluation tasks, one per language pair.
    pub tasks: Vec<RerankTaskSpec>,
}

fn default_first_stage_depth() -> usize {
    1000
}

fn default_rerank_depth() -> usize {
    100
}

impl RetrievalSpec {
    /// What the runs of `task` read: the shared settings and that task alone (so adding a task to
    /// a suite leaves the other tasks' runs, and their configuration hashes, as they were). The
    /// index cache is left out: where indexes are kept does not change a number.
    pub fn run_of(&self, task: &RerankTaskSpec) -> RerankRun {
        RerankRun {
            first_stage_depth: self.first_stage_depth,
            rerank_depth: self.rerank_depth,
            measures: self.measures,
            training: self.training.clone(),
            task: task.clone(),
        }
    }
}

/// The reranking settings of one run (one task of a [`RetrievalSpec`]), part of its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankRun {
    pub first_stage_depth: usize,
    pub rerank_depth: usize,
    pub measures: TrecOptions,
    pub training: TrainingSpec,
    pub task: RerankTaskSpec,
}

/// One evaluation task: queries in one language against documents in another (or the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankTaskSpec {
    /// Task name (`en-de`): letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// ISO 639-1 code of the queries (selects the query-side language adapter).
    pub query_language: String,
    /// ISO 639-1 code of the documents (selects the document-side language adapter and the BM25
    /// analyzer).
    pub document_language: String,
    /// Queries, TSV (`qid<TAB>text`) or BEIR JSONL.
    pub queries: PathBuf,
    /// Queries BM25 searches with, when they differ from those the cross-encoder reads (the topics
    /// translated into the document language); `None`: `queries`. Ignored when `run` is given.
    #[serde(default)]
    pub first_stage_queries: Option<PathBuf>,
    /// BEIR JSONL corpus.
    pub corpus: PathBuf,
    /// The field of `corpus` holding a document's id, for collections that name it otherwise (the
    /// Hugging Face HC4 corpus: `id`). `None`: the first of `_id` (BEIR), `docid`, `doc_id`
    /// (ir_datasets) present; a configured name is the only one read. Left out of the serialised
    /// task when absent, so the configuration hashes of tasks that do not set it are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus_id_field: Option<String>,
    /// TREC qrels.
    pub qrels: PathBuf,
    /// A first-stage TREC run to rerank; `None`: BM25 over the corpus.
    #[serde(default)]
    pub run: Option<PathBuf>,
}

impl RerankTaskSpec {
    /// The id fields of the task's corpus, in the order they are looked for.
    pub fn corpus_id_fields(&self) -> Vec<&str> {
        match &self.corpus_id_field {
            Some(field) => vec![field.as_str()],
            None => DEFAULT_ID_FIELDS.to_vec(),
        }
    }

    /// The BM25 analyzer of the document language.
    pub fn analyzer(&self) -> Analyzer {
        Analyzer::for_language(&self.document_language)
    }
}

/// Layout of the training triples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriplesFormat {
    /// `query<TAB>positive<TAB>negative` texts (`triples.train.small.tsv`).
    Text,
    /// `qid<TAB>pid<TAB>nid` (`qidpidtriples.train.full.tsv`), resolved with `queries` and `corpus`.
    Ids,
}

/// The ranking objective (see `peftbench_train::ranking_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankingObjective {
    /// Binary cross-entropy on (query, positive) = 1 and (query, negative) = 0.
    Pointwise,
    /// Hinge on the positive-minus-negative score difference.
    PairwiseMargin,
    /// RankNet's logistic loss on the score difference.
    Ranknet,
    /// Softmax cross-entropy over the positive and its negatives.
    Listwise,
}

/// MS MARCO-style training triples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// The triples file.
    pub triples: PathBuf,
    /// Its layout.
    pub format: TriplesFormat,
    /// Query texts, for the `ids` format.
    #[serde(default)]
    pub queries: Option<PathBuf>,
    /// Passage collection (BEIR JSONL), for the `ids` format.
    #[serde(default)]
    pub corpus: Option<PathBuf>,
    /// At most this many triples are used (MS MARCO has 40M); `None`: all.
    #[serde(default)]
    pub max_triples: Option<usize>,
    /// The language of the training data (MS MARCO: `en`): the language adapter a composed
    /// method trains its task module over.
    #[serde(default = "default_training_language")]
    pub language: String,
    /// Non-relevant passages per training group (1: pairs). The distinct negatives of triples
    /// sharing a query and a positive are cut into groups of this many (see
    /// `groups_from_triples`); a pair's leftover negatives are not used.
    #[serde(default = "default_negatives")]
    pub negatives: usize,
    /// The objective.
    pub objective: RankingObjective,
    /// Hinge margin of `pairwise_margin`.
    #[serde(default = "default_margin")]
    pub margin: f64,
}

fn default_training_language() -> String {
    "en".into()
}

fn default_negatives() -> usize {
    1
}

fn default_margin() -> f64 {
    1.0
}
