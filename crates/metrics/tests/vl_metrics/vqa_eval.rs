//! VQA accuracy against the reference evaluation code run on 305 questions
//! (`fixtures/vqa_eval.json`, written by `ci/fixtures/vqa_eval.py`): LAVIS 1.0.2's `vqa_eval.py`
//! for the pre-2021 variant (the code VL-T5 / VL-Adapter copy) and GT-Vision-Lab/VQA's
//! `vqaEval.py` at a013f00 for the official 2021 one. Per question, overall, per answer type and
//! per question type.

use std::collections::BTreeMap;

use peftbench_metrics::vqa::{question_accuracy, vqa_accuracy, VqaQuestion, VqaVariant};

#[derive(serde::Deserialize)]
struct Fixture {
    questions: Vec<Question>,
    pre2021: Expected,
    official2021: Expected,
}

#[derive(serde::Deserialize)]
struct Question {
    answers: Vec<String>,
    answer_type: String,
    question_type: String,
    prediction: String,
}

#[derive(serde::Deserialize)]
struct Expected {
    per_question: Vec<f64>,
    overall: f64,
    per_answer_type: BTreeMap<String, f64>,
    per_question_type: BTreeMap<String, f64>,
}

fn check(variant: VqaVariant, expected: &Expected, questions: &[VqaQuestion]) {
    for (i, (q, want)) in questions.iter().zip(&expected.per_question).enumerate() {
        let got = question_accuracy(&q.answers, &q.prediction, variant);
        assert!(
            (got - want).abs() < 1e-12,
            "{variant:?} question {i} ({:?} vs {:?}): ours {got}, reference {want}",
            q.prediction,
            q.answers
        );
    }
    let acc = vqa_accuracy(questions, variant);
    assert!(
        (acc.overall - expected.overall).abs() < 1e-12,
        "{variant:?} overall"
    );
    for (ours, theirs) in [
        (&acc.per_answer_type, &expected.per_answer_type),
        (&acc.per_question_type, &expected.per_question_type),
    ] {
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        );
        for (k, v) in theirs {
            assert!(
                (ours[k] - v).abs() < 1e-12,
                "{variant:?} type {k}: {} vs {v}",
                ours[k]
            );
        }
    }
}

#[test]
fn vqa_accuracy_equals_the_reference_code_in_both_variants() {
    let f: Fixture = serde_json::from_str(include_str!("../fixtures/vqa_eval.json")).unwrap();
    let questions: Vec<VqaQuestion> = f
        .questions
        .into_iter()
        .map(|q| VqaQuestion {
            answers: q.answers,
            answer_type: q.answer_type,
            question_type: q.question_type,
            prediction: q.prediction,
        })
        .collect();
    check(VqaVariant::Pre2021, &f.pre2021, &questions);
    check(VqaVariant::Official2021, &f.official2021, &questions);
}
