//! Retrieval data and the rerank pipeline for peftbench's cross-lingual reranking studies
//! (CLEF-2003, HC4; training on MS MARCO).
//!
//! * Readers, each reporting a malformed line with its file and line number and guessing nothing:
//!   queries ([`read_queries`]: TSV or BEIR JSONL), corpora ([`read_corpus`]: BEIR JSONL), TREC
//!   qrels and runs ([`read_qrels`], [`read_run`], checked against the corpus when given), MS MARCO
//!   triples ([`read_text_triples`], [`read_id_triples`]); a TREC run writer ([`write_run`]).
//! * [`Bm25Index`]: the first stage, BM25 on tantivy, in memory or cached on disk.
//! * [`rerank`]: rescoring the top-k with any [`RelevanceScorer`] (the cross-encoder);
//!   [`run_rerank_task`] runs one task of a suite's [`RetrievalSpec`] end to end.
//! * Training groups for the listwise objective from triples or from a run's hard negatives
//!   ([`groups_from_triples`], [`hard_negative_groups`]).
//! * Evaluation is [`peftbench_metrics::trec`] (MAP, nDCG@10, MRR@10, Recall@100 as `trec_eval`).

pub mod bm25;
pub mod corpus;
pub mod error;
mod json_fields;
pub mod pipeline;
pub mod queries;
pub mod rerank;
pub mod spec;
pub mod training;
pub mod trec_files;
pub mod triples;

pub use bm25::{Analyzer, Bm25Index};
pub use corpus::{read_corpus, Corpus, Document};
pub use error::ReadError;
pub use pipeline::{run_rerank_task, RerankOutcome, TaskCollection};
pub use queries::{read_queries, Queries};
pub use rerank::{rerank, RelevanceScorer};
pub use spec::{
    RankingObjective, RerankRun, RerankTaskSpec, RetrievalSpec, TrainingSpec, TriplesFormat,
};
pub use training::{groups_from_triples, hard_negative_groups, GroupIndex, Groups, RankingGroup};
pub use trec_files::{read_qrels, read_run, write_run};
pub use triples::{read_id_triples, read_text_triples, Triple, TriplesFile};
