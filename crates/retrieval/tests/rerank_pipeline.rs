//! End to end on a generated multilingual collection: BM25 (tantivy) first stage, reranking with a
//! scorer, the reranked run written as a TREC file and evaluated with the trec_eval measures.
//!
//! The collection has topics with their own vocabulary in German, French, Finnish and Russian.
//! A document about a topic uses some of the topic's words among common filler words (grade 2 when
//! it uses at least three, 1 otherwise); a query names two of the topic's words, so BM25 misses or
//! under-ranks documents that use the topic's other words. The test scorer stands in for a
//! cross-encoder that understands the topic: it counts every topic word of the query's topic, so
//! reranking with it must beat BM25. That checks the plumbing, not a model.

use std::collections::BTreeMap;

use peftbench_metrics::trec::{evaluate, Qrels, TrecEvaluation, TrecOptions};
use peftbench_retrieval::{
    read_run, rerank, run_rerank_task, write_run, Analyzer, Bm25Index, Corpus, Document, Queries,
    RetrievalSpec, TaskCollection,
};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOPICS: usize = 12;
const DOCS_PER_TOPIC: usize = 8;
const TOPIC_WORDS: usize = 6;

/// Word stems per language; topic `t` uses words `t * TOPIC_WORDS ..`, filler words are shared.
fn vocabulary(language: &str) -> (Vec<String>, Vec<String>) {
    let (stems, filler): (&[&str], &[&str]) = match language {
        "de" => (
            &[
                "wald", "fluss", "stadt", "brücke", "schule", "zug", "bäcker", "straße", "kirche",
                "hafen", "markt", "garten",
            ],
            &[
                "und", "der", "die", "das", "mit", "ist", "nicht", "auch", "heute", "sehr",
                "viele", "immer",
            ],
        ),
        "fr" => (
            &[
                "forêt",
                "rivière",
                "ville",
                "pont",
                "école",
                "train",
                "boulanger",
                "rue",
                "église",
                "port",
                "marché",
                "jardin",
            ],
            &[
                "et", "le", "la", "les", "avec", "est", "pas", "aussi", "aujourd", "très",
                "beaucoup", "toujours",
            ],
        ),
        "fi" => (
            &[
                "metsä", "joki", "kaupunki", "silta", "koulu", "juna", "leipuri", "katu", "kirkko",
                "satama", "tori", "puutarha",
            ],
            &[
                "ja",
                "on",
                "ei",
                "myös",
                "tänään",
                "hyvin",
                "paljon",
                "aina",
                "se",
                "kun",
                "kuin",
                "nyt",
            ],
        ),
        "en" => (
            &[
                "forest", "river", "town", "bridge", "school", "train", "baker", "street",
                "church", "harbour", "market", "garden",
            ],
            &[
                "and", "the", "a", "of", "with", "is", "not", "also", "today", "very", "many",
                "always",
            ],
        ),
        _ => (
            &[
                "лес",
                "река",
                "город",
                "мост",
                "школа",
                "поезд",
                "пекарь",
                "улица",
                "церковь",
                "порт",
                "рынок",
                "сад",
            ],
            &[
                "и",
                "в",
                "не",
                "на",
                "с",
                "что",
                "также",
                "сегодня",
                "очень",
                "много",
                "всегда",
                "это",
            ],
        ),
    };
    // Six distinct words per topic: the topic's stem with numbered suffixes (its own vocabulary).
    let topic_words = stems
        .iter()
        .flat_map(|stem| {
            (0..TOPIC_WORDS).map(move |i| format!("{stem}{}", ["", "a", "e", "o", "i", "u"][i]))
        })
        .collect();
    (topic_words, filler.iter().map(|w| w.to_string()).collect())
}

struct Collection {
    corpus: Corpus,
    queries: Queries,
    qrels: Qrels,
    /// Query id → its topic's words.
    topic_of_query: BTreeMap<String, Vec<String>>,
}

fn generate(language: &str, seed: u64) -> Collection {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (topic_words, filler) = vocabulary(language);
    let mut corpus = Corpus::new();
    let mut queries = Queries::new();
    let mut qrels = Qrels::new();
    let mut topic_of_query = BTreeMap::new();
    for topic in 0..TOPICS {
        let words = &topic_words[topic * TOPIC_WORDS..(topic + 1) * TOPIC_WORDS];
        let query_id = format!("{language}-q{topic}");
        queries.insert(
            query_id.clone(),
            format!("{} {}", words[0], words[1].to_uppercase()),
        );
        topic_of_query.insert(query_id.clone(), words.to_vec());
        for d in 0..DOCS_PER_TOPIC {
            let how_many = rng.random_range(1..=4);
            let used: Vec<&String> = words.choose_multiple(&mut rng, how_many).collect();
            let mut text: Vec<String> = (0..20)
                .map(|_| filler.choose(&mut rng).unwrap().clone())
                .collect();
            for word in &used {
                let at = rng.random_range(0..=text.len());
                text.insert(at, (*word).clone());
            }
            let doc_id = format!("{language}-t{topic}-d{d}");
            let grade = if used.len() >= 3 { 2 } else { 1 };
            qrels
                .insert(query_id.as_str(), doc_id.as_str(), grade)
                .unwrap();
            corpus.insert(
                doc_id,
                Document {
                    title: String::new(),
                    text: text.join(" ") + ".",
                },
            );
        }
    }
    Collection {
        corpus,
        queries,
        qrels,
        topic_of_query,
    }
}

fn evaluation(qrels: &Qrels, run: &peftbench_metrics::trec::Run) -> TrecEvaluation {
    evaluate(qrels, run, &TrecOptions::default()).unwrap()
}

#[test]
fn bm25_then_rerank_improves_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let depth = 30;
    for (language, seed) in [("de", 1), ("fr", 2), ("fi", 3), ("ru", 4)] {
        let collection = generate(language, seed);
        let analyzer = Analyzer::for_language(language);
        let index = Bm25Index::build_in_ram(&collection.corpus, analyzer).unwrap();
        assert_eq!(index.num_documents(), (TOPICS * DOCS_PER_TOPIC) as u64);
        let first_stage = index.retrieve(&collection.queries, 100).unwrap();
        let bm25 = evaluation(&collection.qrels, &first_stage);

        let topic_of_query = &collection.topic_of_query;
        let queries = &collection.queries;
        let mut topic_scorer = |query: &str, documents: &[&str]| -> anyhow::Result<Vec<f32>> {
            let (query_id, _) = queries
                .iter()
                .find(|(_, text)| text.as_str() == query)
                .unwrap();
            let words = &topic_of_query[query_id];
            Ok(documents
                .iter()
                .map(|doc| {
                    doc.split(|c: char| !c.is_alphanumeric())
                        .filter(|token| words.iter().any(|w| w == token))
                        .count() as f32
                })
                .collect())
        };
        let reranked = rerank(
            &first_stage,
            queries,
            &collection.corpus,
            depth,
            &mut topic_scorer,
        )
        .unwrap();
        let after = evaluation(&collection.qrels, &reranked);
        println!(
            "{language}: BM25 MAP {:.4} nDCG@10 {:.4} MRR@10 {:.4} R@100 {:.4} | reranked top-{depth}: MAP {:.4} nDCG@10 {:.4} MRR@10 {:.4}",
            bm25.mean.map, bm25.mean.ndcg_cut, bm25.mean.recip_rank, bm25.mean.recall,
            after.mean.map, after.mean.ndcg_cut, after.mean.recip_rank
        );
        // BM25 finds the documents using the query's words and nothing else of the topic.
        assert!(
            bm25.mean.recip_rank > 0.9,
            "{language}: {}",
            bm25.mean.recip_rank
        );
        assert!(bm25.mean.recall < 0.9, "{language}: {}", bm25.mean.recall);
        assert!(after.mean.ndcg_cut > bm25.mean.ndcg_cut, "{language}");

        // Rescoring with BM25's own scores changes nothing within the depth.
        let mut same = |query: &str, documents: &[&str]| -> anyhow::Result<Vec<f32>> {
            let hits = index.search(query, 100)?;
            Ok(documents
                .iter()
                .map(|doc| {
                    let id = collection
                        .corpus
                        .iter()
                        .find(|(_, d)| d.full_text() == *doc)
                        .unwrap()
                        .0;
                    hits.iter().find(|(hit, _)| hit == id).unwrap().1
                })
                .collect())
        };
        let rescored = rerank(&first_stage, queries, &collection.corpus, depth, &mut same).unwrap();
        assert_eq!(rescored, first_stage.truncated(depth));

        let path = dir.path().join(format!("{language}.run"));
        write_run(&path, &reranked, "rerank").unwrap();
        assert_eq!(read_run(&path, Some(&collection.corpus)).unwrap(), reranked);
    }
}

#[test]
fn stemming_analyzers_and_on_disk_cache() {
    // Snowball German conflates inflections and case: one term for "Brücken" and "BRÜCKE".
    let terms = Analyzer::for_language("de").terms("Die Brücken, BRÜCKE!");
    assert_eq!(terms.len(), 3);
    assert_eq!(terms[1], terms[2]);
    assert_ne!(terms[1], "brücken");
    assert_eq!(
        Analyzer::Simple.terms("Ünïcode wörds, split-here 42"),
        ["ünïcode", "wörds", "split", "here", "42"]
    );
    assert_eq!(Analyzer::for_language("zh"), Analyzer::Simple);

    let collection = generate("fr", 9);
    let cache = tempfile::tempdir().unwrap();
    let analyzer = Analyzer::for_language("fr");
    let built = Bm25Index::open_or_build(&collection.corpus, analyzer, cache.path()).unwrap();
    let reopened = Bm25Index::open_or_build(&collection.corpus, analyzer, cache.path()).unwrap();
    let query = collection.queries.values().next().unwrap();
    assert_eq!(
        built.search(query, 10).unwrap(),
        reopened.search(query, 10).unwrap()
    );
    let in_ram = Bm25Index::build_in_ram(&collection.corpus, analyzer).unwrap();
    assert_eq!(
        built.search(query, 10).unwrap(),
        in_ram.search(query, 10).unwrap()
    );
    // A changed corpus gets its own index.
    let mut changed = collection.corpus.clone();
    changed.remove(&changed.keys().next().unwrap().clone());
    assert_ne!(
        Bm25Index::cache_path(&changed, analyzer, cache.path()),
        Bm25Index::cache_path(&collection.corpus, analyzer, cache.path())
    );
    assert!(Bm25Index::build_in_ram(&collection.corpus, analyzer)
        .unwrap()
        .search("", 10)
        .unwrap()
        .is_empty());
}

/// A cross-lingual task from files, as a suite declares it: English queries, German documents,
/// BM25 with the German topics, reranking by a scorer that translates the English query with the
/// generator's dictionary (a stand-in for a cross-lingual cross-encoder).
#[test]
fn suite_task_from_files_cross_lingual() {
    let dir = tempfile::tempdir().unwrap();
    let german = generate("de", 5);
    let (english_words, _) = vocabulary("en");
    let (german_words, _) = vocabulary("de");
    let mut corpus_jsonl = String::new();
    for (id, doc) in &german.corpus {
        corpus_jsonl +=
            &serde_json::json!({"_id": id, "title": doc.title, "text": doc.text}).to_string();
        corpus_jsonl.push('\n');
    }
    std::fs::write(dir.path().join("corpus.jsonl"), corpus_jsonl).unwrap();
    let mut en_queries = String::new();
    let mut de_queries = String::new();
    let mut qrels = String::new();
    for topic in 0..TOPICS {
        let id = format!("de-q{topic}");
        en_queries += &format!(
            "{id}\t{} {}\n",
            english_words[topic * TOPIC_WORDS],
            english_words[topic * TOPIC_WORDS + 1]
        );
        de_queries += &format!("{id}\t{}\n", german.queries[&id]);
        for (doc, grade) in german.qrels.query(&id).unwrap() {
            qrels += &format!("{id} 0 {doc} {grade}\n");
        }
    }
    std::fs::write(dir.path().join("en.tsv"), en_queries).unwrap();
    std::fs::write(dir.path().join("de.tsv"), de_queries).unwrap();
    std::fs::write(dir.path().join("de.qrels"), qrels).unwrap();

    let spec_yaml = r#"
first_stage_depth: 100
rerank_depth: 20
index_cache: CACHE
training: { triples: triples.tsv, format: text, objective: listwise }
tasks:
  - { name: en-de, query_language: en, document_language: de, queries: en.tsv, first_stage_queries: de.tsv, corpus: corpus.jsonl, qrels: de.qrels }
  - { name: en-de-no-translation, query_language: en, document_language: de, queries: en.tsv, corpus: corpus.jsonl, qrels: de.qrels }
"#
    .replace("CACHE", &dir.path().join("cache").display().to_string());
    let spec: RetrievalSpec = serde_saphyr::from_str(&spec_yaml).unwrap();

    // Translates each English topic word to the German word at the same position, then counts
    // German topic words of all the query's topics in the document.
    let mut translating_scorer = |query: &str, documents: &[&str]| -> anyhow::Result<Vec<f32>> {
        let topics: Vec<usize> = query
            .split_whitespace()
            .filter_map(|w| english_words.iter().position(|e| e == &w.to_lowercase()))
            .map(|i| i / TOPIC_WORDS)
            .collect();
        let words: Vec<&String> = topics
            .iter()
            .flat_map(|t| &german_words[t * TOPIC_WORDS..(t + 1) * TOPIC_WORDS])
            .collect();
        Ok(documents
            .iter()
            .map(|doc| {
                doc.split(|c: char| !c.is_alphanumeric())
                    .filter(|t| words.iter().any(|w| w == t))
                    .count() as f32
            })
            .collect())
    };
    let out = dir.path().join("runs/en-de.run");
    let outcome = run_rerank_task(
        &spec,
        &spec.tasks[0],
        dir.path(),
        &mut translating_scorer,
        &out,
        "xling",
    )
    .unwrap();
    let (bm25, after) = (&outcome.first_stage_eval.mean, &outcome.reranked_eval.mean);
    println!(
        "en-de via German topics: BM25 MAP {:.4} nDCG@10 {:.4} | reranked top-20 MAP {:.4} nDCG@10 {:.4}",
        bm25.map, bm25.ndcg_cut, after.map, after.ndcg_cut
    );
    assert!(after.ndcg_cut > bm25.ndcg_cut);
    assert_eq!(read_run(&out, None).unwrap(), outcome.reranked);
    assert!(
        dir.path().join("cache").read_dir().unwrap().count() == 1,
        "one cached index"
    );

    // English queries against German text: BM25 finds nothing, so there is nothing to evaluate.
    let error = run_rerank_task(
        &spec,
        &spec.tasks[1],
        dir.path(),
        &mut translating_scorer,
        &out,
        "xling",
    )
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("no queries with both results"),
        "{error:#}"
    );
}

/// The `retrieval:` section of the shipped suite is valid.
#[test]
fn shipped_xling_rerank_suite_parses() {
    #[derive(serde::Deserialize)]
    struct SuiteFile {
        retrieval: RetrievalSpec,
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../suites/xling-rerank.yaml"
    );
    let suite: SuiteFile = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = suite.retrieval;
    assert_eq!((spec.first_stage_depth, spec.rerank_depth), (1000, 100));
    assert_eq!(spec.tasks.len(), 12);
    assert!(spec
        .tasks
        .iter()
        .filter(|t| t.name.starts_with("hc4"))
        .all(|t| t.run.is_some()));
    assert_eq!(spec.tasks[0].analyzer(), Analyzer::for_language("de"));
}

/// A task's `corpus_id_field` reaches the corpus reader: an HC4-style corpus with `id` loads with
/// its run and qrels checked against it, and the same task without the option is an error naming
/// the line. Tasks without it serialise without the key (their configuration hashes unchanged).
#[test]
fn task_corpus_id_field_reads_hc4_style_ids() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("corpus.jsonl"),
        "{\"id\": \"d1\", \"title\": \"Wald\", \"text\": \"der wald\", \"url\": \"u1\"}\n\
         {\"id\": \"d2\", \"title\": \"\", \"text\": \"die stadt\", \"url\": \"u2\"}\n",
    )
    .unwrap();
    std::fs::write(root.join("q.tsv"), "q1\twald\n").unwrap();
    std::fs::write(root.join("q.qrels"), "q1 0 d1 1\n").unwrap();
    std::fs::write(
        root.join("first.run"),
        "q1 Q0 d2 1 2.0 bm25\nq1 Q0 d1 2 1.0 bm25\n",
    )
    .unwrap();
    let yaml = "\
training: { triples: t.tsv, format: text, objective: listwise }
tasks:
  - { name: hc4-de, query_language: en, document_language: de, queries: q.tsv, corpus: corpus.jsonl, corpus_id_field: id, qrels: q.qrels, run: first.run }
";
    let spec: RetrievalSpec = serde_saphyr::from_str(yaml).unwrap();
    let task = &spec.tasks[0];
    assert_eq!(task.corpus_id_field.as_deref(), Some("id"));
    let loaded = TaskCollection::load(task, root, 10, None).unwrap();
    assert_eq!(loaded.corpus.keys().collect::<Vec<_>>(), ["d1", "d2"]);
    let mut scorer = |_: &str, docs: &[&str]| -> anyhow::Result<Vec<f32>> {
        Ok(docs
            .iter()
            .map(|d| d.matches("wald").count() as f32)
            .collect())
    };
    let outcome = loaded
        .rerank_and_evaluate(2, &spec.measures, &mut scorer, &root.join("out.run"), "rr")
        .unwrap();
    assert!(outcome.reranked_eval.mean.map > outcome.first_stage_eval.mean.map);
    let json = serde_json::to_value(task).unwrap();
    assert_eq!(json["corpus_id_field"], "id");

    let mut plain = task.clone();
    plain.corpus_id_field = None;
    let error = TaskCollection::load(&plain, root, 10, None).unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("corpus.jsonl:1:") && message.contains("one of _id, docid, doc_id"),
        "{message}"
    );
    assert!(serde_json::to_value(&plain)
        .unwrap()
        .get("corpus_id_field")
        .is_none());
}
