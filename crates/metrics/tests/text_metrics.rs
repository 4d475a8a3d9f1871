//! Macro-F1 and entity-level span F1 against values computed with scikit-learn
//! (`f1_score(average="macro")`) and seqeval 1.2.2 (`precision_score`, `recall_score`,
//! `f1_score`, default mode) on random and hand-made cases (`fixtures/text_metrics.json`, written by
//! `ci/fixtures/text_metrics.py`; regenerate every fixture with `ci/fixtures/regenerate.sh`).

use peftbench_metrics::{macro_f1, span_f1};

#[derive(serde::Deserialize)]
struct Fixture {
    macro_f1: Vec<MacroCase>,
    span_f1: Vec<SpanCase>,
}

#[derive(serde::Deserialize)]
struct MacroCase {
    labels: Vec<u32>,
    predictions: Vec<u32>,
    macro_f1: f64,
}

#[derive(serde::Deserialize)]
struct SpanCase {
    gold: Vec<Vec<String>>,
    predicted: Vec<Vec<String>>,
    precision: f64,
    recall: f64,
    f1: f64,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("fixtures/text_metrics.json")).unwrap()
}

#[test]
fn macro_f1_equals_sklearn() {
    for (i, case) in fixture().macro_f1.iter().enumerate() {
        let got = macro_f1(&case.predictions, &case.labels);
        assert!(
            (got - case.macro_f1).abs() < 1e-12,
            "case {i}: {got} vs sklearn {}",
            case.macro_f1
        );
    }
}

#[test]
fn span_f1_equals_seqeval() {
    for (i, case) in fixture().span_f1.iter().enumerate() {
        let got = span_f1(&case.predicted, &case.gold);
        for (name, ours, theirs) in [
            ("precision", got.precision, case.precision),
            ("recall", got.recall, case.recall),
            ("f1", got.f1, case.f1),
        ] {
            assert!(
                (ours - theirs).abs() < 1e-12,
                "case {i} {name}: {ours} vs seqeval {theirs}"
            );
        }
    }
}
