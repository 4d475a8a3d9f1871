//! The measures agree with `trec_eval` on qrels/run fixtures with graded labels, ties, unjudged
//! and negatively judged documents, queries without relevant documents, queries on one side only,
//! and relevant documents around the cutoffs.
//!
//! `fixtures/trec_eval/expected.json` holds `pytrec_eval` 0.5 (trec_eval 9.0.8 compiled in)
//! values: `map`, `ndcg_cut.10` and `recall.100` on the files as they are, and `recip_rank` on each
//! run cut to its first 10 documents in `trec_eval`'s order (MRR@10). Every value was also checked,
//! to the 4 printed decimals, against the `trec_eval` 9.0.8 binary (`-q`, with and without `-c`,
//! `-M 10` for the reciprocal rank, `-l 2` for the `random_level2` case). `expected.json` is written
//! by `ci/fixtures/trec_eval.py` from the committed qrels and runs (regenerate every fixture with
//! `ci/fixtures/regenerate.sh`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use peftbench_metrics::trec::{evaluate, TrecMeasures, TrecOptions};
use peftbench_retrieval::{read_qrels, read_run};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    relevance_level: i64,
    per_query: BTreeMap<String, TrecMeasures>,
    mean: TrecMeasures,
    mean_complete: TrecMeasures,
    num_qrels_queries: usize,
    /// Fixture files of another case, when this case evaluates them with other options.
    files: Option<String>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/trec_eval")
        .join(name)
}

fn diff(a: &TrecMeasures, b: &TrecMeasures) -> f64 {
    [
        a.map - b.map,
        a.ndcg_cut - b.ndcg_cut,
        a.recip_rank - b.recip_rank,
        a.recall - b.recall,
    ]
    .into_iter()
    .map(f64::abs)
    .fold(0.0, f64::max)
}

#[test]
fn measures_equal_trec_eval_on_fixtures() {
    let expected: BTreeMap<String, Case> =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let mut worst = 0.0f64;
    for (name, case) in &expected {
        let files = case.files.as_deref().unwrap_or(name);
        let qrels = read_qrels(&fixture(&format!("{files}.qrels")), None).unwrap();
        let run = read_run(&fixture(&format!("{files}.run")), None).unwrap();
        for average_complete in [false, true] {
            let options = TrecOptions {
                relevance_level: case.relevance_level,
                average_complete,
                ..TrecOptions::default()
            };
            let got = evaluate(&qrels, &run, &options).unwrap();
            assert_eq!(
                got.per_query.keys().collect::<Vec<_>>(),
                case.per_query.keys().collect::<Vec<_>>(),
                "{name}: evaluated queries"
            );
            for (query, want) in &case.per_query {
                worst = worst.max(diff(&got.per_query[query], want));
            }
            let want_mean = if average_complete {
                assert_eq!(got.num_averaged, case.num_qrels_queries);
                &case.mean_complete
            } else {
                &case.mean
            };
            worst = worst.max(diff(&got.mean, want_mean));
        }
    }
    println!("largest difference from pytrec_eval over all fixtures: {worst:e}");
    assert!(worst < 1e-12, "largest difference {worst}");
}
