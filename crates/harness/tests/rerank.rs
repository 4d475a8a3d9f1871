//! Reranking suites as a user runs them, on a tiny random BERT with a word-level tokenizer: a
//! generated collection written in the real formats, BM25 on tantivy, a cross-encoder trained once
//! per method and seed and reused for every task (LoRA, and LT-SFT, whose sparse difference is what
//! the later tasks load), the reranked TREC run on disk, resuming; and a TREC-format suite whose
//! files are missing or malformed, reported by path and line.

use std::path::{Path, PathBuf};
use std::process::Output;

use peftbench_data_text::synthetic::review_collection;
use peftbench_data_text::TextExample;

mod common;
use common::{harness, records, text};

/// A tiny random BERT whose word-level tokenizer covers the generated reviews and queries in
/// English and German.
fn tiny_bert(dir: &Path) -> PathBuf {
    let mut corpus = Vec::new();
    for lang in ["en", "de"] {
        let c = review_collection(lang, 200, 1).unwrap();
        for (_, t) in c.documents.iter().chain(&c.queries) {
            corpus.push(TextExample {
                text: t.clone(),
                label: String::new(),
            });
        }
    }
    common::tiny_bert(dir, &corpus)
}

fn suite(backbone: &Path, data: &str, tasks: &str) -> String {
    format!(
        "name: tiny-rerank
backbone: {{ checkpoint: {backbone} }}
data: {data}
text: {{ max_tokens: 24, pooling: mean }}
recipe: {{ epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0, drop_path: 0.0 }}
seeds: [0]
retrieval:
  first_stage_depth: 30
  rerank_depth: 10
  training: {{ triples: triples/en.tsv, format: text, objective: listwise }}
  tasks:
{tasks}
methods:
  - method: lora
    params: {{ r: 2, target_modules: [query, value] }}
  - method: lt-sft
    params: {{ density: 0.05, target_modules: [fc2] }}
",
        backbone = backbone.display()
    )
}

const GENERATED_TASKS: &str = "    - { name: en, query_language: en, document_language: en, queries: queries/en.tsv, corpus: corpus/en.jsonl, qrels: qrels/en.qrels }
    - { name: en-de, query_language: en, document_language: de, queries: queries/en.tsv, first_stage_queries: queries/de.tsv, corpus: corpus/de.jsonl, qrels: qrels/de.qrels }";

fn run_suite(dir: &Path, yaml: &str) -> Output {
    let path = dir.join("tiny-rerank.yaml");
    std::fs::write(&path, yaml).unwrap();
    harness(dir).arg("suite").arg(&path).output().unwrap()
}

#[test]
fn a_reranking_suite_trains_once_per_method_and_reranks_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let bert = tiny_bert(dir.path());
    let yaml = suite(
        &bert,
        "{ format: generated, train_examples: 48, eval_examples: 40 }",
        GENERATED_TASKS,
    );
    let out = run_suite(dir.path(), &yaml);
    assert!(out.status.success(), "{}", text(&out));
    // The table says what its averages are over.
    assert!(
        text(&out).contains("Queries judged / with first-stage candidates / averaged over: "),
        "{}",
        text(&out)
    );
    let all = records(dir.path());
    assert_eq!(all.len(), 4, "{}", text(&out));
    for r in &all {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["primary_metric"], "ndcg_cut_10");
        for metric in [
            "map",
            "ndcg_cut_10",
            "recip_rank_10",
            "recall_100",
            "first_stage_ndcg_cut_10",
        ] {
            let v = r["metrics"][metric].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{metric} = {v}");
        }
        // 16 queries, each with judged documents among the 40 reviews, all with BM25 candidates;
        // the averages are over every judged query.
        assert_eq!(r["metrics"]["queries_judged"], 16.0);
        assert_eq!(r["metrics"]["queries_retrieved"], 16.0);
        assert_eq!(r["metrics"]["queries_evaluated"], 16.0);
        // The reranked run is a TREC run of at most `rerank_depth` documents per query.
        let run_path = dir
            .path()
            .join("results/artifacts")
            .join(r["run_id"].as_str().unwrap())
            .join("reranked.run");
        let run = peftbench_retrieval::read_run(&run_path, None).unwrap();
        assert_eq!(run.num_queries(), 16);
        for q in run.queries() {
            assert!(run.ranking(q).len() <= 10);
        }
    }
    // One cross-encoder per method: both tasks' records point at it and report its training.
    for method in ["lora", "lt-sft"] {
        let mine: Vec<&serde_json::Value> = all.iter().filter(|r| r["method"] == method).collect();
        assert_eq!(mine.len(), 2);
        assert_eq!(mine[0]["adapter_dir"], mine[1]["adapter_dir"], "{method}");
        assert_eq!(
            mine[0]["train_seconds"], mine[1]["train_seconds"],
            "{method}"
        );
        assert!(mine[0]["adapter_dir"]
            .as_str()
            .unwrap()
            .starts_with("rerankers/tiny-rerank/"));
    }
    // Resuming redoes nothing.
    let again = run_suite(dir.path(), &yaml);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("4 reused"), "{}", text(&again));
}

#[test]
fn missing_and_malformed_trec_files_are_reported_by_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bert = tiny_bert(dir.path());
    let data = dir.path().join("data");
    let tasks = "    - { name: en, query_language: en, document_language: en, queries: queries/en.tsv, corpus: corpus/en.jsonl, qrels: qrels/en.qrels }";
    let yaml = suite(
        &bert,
        &format!("{{ format: trec, root: {} }}", data.display()),
        tasks,
    );
    // Nothing on disk: every missing file is listed with where it was looked for.
    let out = run_suite(dir.path(), &yaml);
    assert!(!out.status.success());
    let t = text(&out);
    for file in [
        "queries/en.tsv",
        "corpus/en.jsonl",
        "qrels/en.qrels",
        "triples/en.tsv",
    ] {
        assert!(t.contains(&data.join(file).display().to_string()), "{t}");
    }

    // The files, with a qrels line of three fields.
    let c = review_collection("en", 20, 3).unwrap();
    for sub in ["queries", "corpus", "qrels", "triples"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
    }
    let corpus: String = c
        .documents
        .iter()
        .map(|(id, t)| format!("{}\n", serde_json::json!({"_id": id, "text": t})))
        .collect();
    std::fs::write(data.join("corpus/en.jsonl"), corpus).unwrap();
    let queries: String = c
        .queries
        .iter()
        .map(|(id, q)| format!("{id}\t{q}\n"))
        .collect();
    std::fs::write(data.join("queries/en.tsv"), queries).unwrap();
    let (q, d, _) = &c.qrels[0];
    std::fs::write(
        data.join("qrels/en.qrels"),
        format!("{q} 0 {d} 1\n{q} 0 {d}\n"),
    )
    .unwrap();
    std::fs::write(
        data.join("triples/en.tsv"),
        format!(
            "{}\t{}\t{}\n",
            c.queries[0].1, c.documents[0].1, c.documents[1].1
        ),
    )
    .unwrap();
    let out = run_suite(dir.path(), &yaml);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains(&format!("{}:2", data.join("qrels/en.qrels").display())),
        "{t}"
    );
}
