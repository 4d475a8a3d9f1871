//! First-stage BM25 retrieval on tantivy (k1 = 1.2, b = 0.75, tantivy's fixed Okapi BM25 with
//! Lucene's idf), the candidate generator the cross-encoder reranks when no run file is given.
//!
//! Each document is indexed as one field, title and text joined ([`Document::full_text`]), like
//! BEIR's and Anserini's `contents`. Queries are analysed with the same analyzer and searched as a
//! disjunction of their terms (repeated terms count repeatedly), never through tantivy's query
//! parser, so a natural-language query containing `AND`, quotes or `+` means nothing special.
//! Indexing is single-threaded so that document order, and so tie order, is reproducible.

use std::path::{Path, PathBuf};

use peftbench_metrics::trec::Run;
use sha2::{Digest, Sha256};
use tantivy::collector::TopDocs;
use tantivy::query::BooleanQuery;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
};
use tantivy::{Index, IndexWriter, TantivyDocument, Term};

use crate::corpus::Corpus;
use crate::queries::Queries;

/// Tokens longer than this many bytes (base64 blobs, URLs) are dropped, as Lucene's standard
/// analyzer does with 255 characters; 40 bytes is tantivy's own default.
const MAX_TOKEN_BYTES: usize = 40;
/// Indexing memory budget (tantivy's minimum per thread is 15 MB).
const WRITER_MEMORY_BYTES: usize = 50_000_000;
const ID_FIELD: &str = "docid";
const CONTENTS_FIELD: &str = "contents";

/// How text is split into terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analyzer {
    /// Unicode word split (runs of alphanumeric characters) and lowercasing.
    Simple,
    /// [`Analyzer::Simple`] followed by the Snowball stemmer of a language.
    Stemmed(Language),
}

impl Analyzer {
    /// The analyzer for an ISO 639-1 language code: Snowball stemming for the languages it covers
    /// (the CLEF-2003 languages de, en, es, fi, fr, it, nl, ru, sv among them), the simple
    /// analyzer otherwise. Chinese, Japanese and Korean would need a word segmenter, which this
    /// crate does not have: their text is split only at non-alphanumeric characters.
    pub fn for_language(code: &str) -> Analyzer {
        let language = match code.to_ascii_lowercase().as_str() {
            "ar" => Language::Arabic,
            "da" => Language::Danish,
            "de" => Language::German,
            "el" => Language::Greek,
            "en" => Language::English,
            "es" => Language::Spanish,
            "fi" => Language::Finnish,
            "fr" => Language::French,
            "hu" => Language::Hungarian,
            "it" => Language::Italian,
            "nl" => Language::Dutch,
            "no" | "nb" => Language::Norwegian,
            "pt" => Language::Portuguese,
            "ro" => Language::Romanian,
            "ru" => Language::Russian,
            "sv" => Language::Swedish,
            "ta" => Language::Tamil,
            "tr" => Language::Turkish,
            _ => return Analyzer::Simple,
        };
        Analyzer::Stemmed(language)
    }

    /// A name unique per analyzer (the tokenizer's registered name and part of the cache key).
    pub fn name(&self) -> String {
        match self {
            Analyzer::Simple => "simple_lower".to_string(),
            Analyzer::Stemmed(language) => format!("snowball_{language:?}").to_lowercase(),
        }
    }

    fn text_analyzer(&self) -> TextAnalyzer {
        let base = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser);
        match self {
            Analyzer::Simple => base.build(),
            Analyzer::Stemmed(language) => base.filter(Stemmer::new(*language)).build(),
        }
    }

    /// The terms of `text`, in order (for inspection and tests).
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.text_analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        stream.process(&mut |token| terms.push(token.text.clone()));
        terms
    }
}

/// A BM25 index over a corpus.
pub struct Bm25Index {
    index: Index,
    reader: tantivy::IndexReader,
    id_field: Field,
    contents_field: Field,
    analyzer: Analyzer,
}

impl Bm25Index {
    /// Indexes `corpus` in memory.
    pub fn build_in_ram(corpus: &Corpus, analyzer: Analyzer) -> tantivy::Result<Bm25Index> {
        let index = Index::create_in_ram(schema(&analyzer));
        fill(&index, corpus, analyzer)?;
        Bm25Index::from_index(index, analyzer)
    }

    /// Opens the index of exactly this corpus and analyzer under `cache_dir`, building it there
    /// first when absent. The folder name is a SHA-256 of the analyzer and every document, so an
    /// edited corpus gets a new index; a build is written to a temporary folder and renamed, so
    /// an interrupted build is never mistaken for a finished one.
    pub fn open_or_build(
        corpus: &Corpus,
        analyzer: Analyzer,
        cache_dir: &Path,
    ) -> tantivy::Result<Bm25Index> {
        let target = Bm25Index::cache_path(corpus, analyzer, cache_dir);
        if target.join("meta.json").is_file() {
            let index = Index::open_in_dir(&target)?;
            return Bm25Index::from_index(index, analyzer);
        }
        std::fs::create_dir_all(cache_dir)?;
        let staging = tempfile::TempDir::new_in(cache_dir)?;
        let index = Index::create_in_dir(staging.path(), schema(&analyzer))?;
        fill(&index, corpus, analyzer)?;
        drop(index);
        let staging = staging.keep();
        if let Err(e) = std::fs::rename(&staging, &target) {
            // Another process finished the same index first: use theirs.
            std::fs::remove_dir_all(&staging)?;
            if !target.join("meta.json").is_file() {
                return Err(e.into());
            }
        }
        Bm25Index::from_index(Index::open_in_dir(&target)?, analyzer)
    }

    /// Where [`Bm25Index::open_or_build`] keeps the index of `corpus` under `cache_dir`.
    pub fn cache_path(corpus: &Corpus, analyzer: Analyzer, cache_dir: &Path) -> PathBuf {
        let mut hash = Sha256::new();
        hash.update(analyzer.name().as_bytes());
        for (id, document) in corpus {
            for part in [id.as_str(), &document.title, &document.text] {
                hash.update((part.len() as u64).to_le_bytes());
                hash.update(part.as_bytes());
            }
        }
        let digest = hash.finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        cache_dir.join(format!("bm25-{}-{hex}", analyzer.name()))
    }

    fn from_index(index: Index, analyzer: Analyzer) -> tantivy::Result<Bm25Index> {
        index
            .tokenizers()
            .register(&analyzer.name(), analyzer.text_analyzer());
        let schema = index.schema();
        let id_field = schema.get_field(ID_FIELD)?;
        let contents_field = schema.get_field(CONTENTS_FIELD)?;
        let reader = index.reader()?;
        Ok(Bm25Index {
            index,
            reader,
            id_field,
            contents_field,
            analyzer,
        })
    }

    /// Number of indexed documents.
    pub fn num_documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The `depth` best documents for `query` with their BM25 scores, best first. A query with no
    /// term (empty, or only punctuation) retrieves nothing.
    pub fn search(&self, query: &str, depth: usize) -> tantivy::Result<Vec<(String, f32)>> {
        let terms: Vec<Term> = self
            .analyzer
            .terms(query)
            .into_iter()
            .map(|t| Term::from_field_text(self.contents_field, &t))
            .collect();
        if terms.is_empty() || depth == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let hits = searcher.search(
            &BooleanQuery::new_multiterms_query(terms),
            &TopDocs::with_limit(depth),
        )?;
        hits.into_iter()
            .map(|(score, address)| {
                let document: TantivyDocument = searcher.doc(address)?;
                let id = document
                    .get_first(self.id_field)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        tantivy::TantivyError::InternalError("indexed document without id".into())
                    })?;
                Ok((id.to_string(), score))
            })
            .collect()
    }

    /// A run of the `depth` best documents for every query (queries retrieving nothing are absent,
    /// as in a run file).
    pub fn retrieve(&self, queries: &Queries, depth: usize) -> tantivy::Result<Run> {
        let mut run = Run::new();
        for (query_id, text) in queries {
            for (doc, score) in self.search(text, depth)? {
                run.insert(query_id.as_str(), doc, f64::from(score))
                    .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
            }
        }
        Ok(run)
    }

    /// The underlying tantivy index.
    pub fn index(&self) -> &Index {
        &self.index
    }
}

fn schema(analyzer: &Analyzer) -> Schema {
    let mut builder = Schema::builder();
    builder.add_text_field(ID_FIELD, STRING | STORED);
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(&analyzer.name())
        .set_index_option(IndexRecordOption::WithFreqs);
    builder.add_text_field(
        CONTENTS_FIELD,
        TextOptions::default().set_indexing_options(indexing),
    );
    builder.build()
}

fn fill(index: &Index, corpus: &Corpus, analyzer: Analyzer) -> tantivy::Result<()> {
    index
        .tokenizers()
        .register(&analyzer.name(), analyzer.text_analyzer());
    let schema = index.schema();
    let id_field = schema.get_field(ID_FIELD)?;
    let contents_field = schema.get_field(CONTENTS_FIELD)?;
    let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
    for (id, document) in corpus {
        let mut doc = TantivyDocument::new();
        doc.add_text(id_field, id);
        doc.add_text(contents_field, document.full_text());
        writer.add_document(doc)?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    Ok(())
}
