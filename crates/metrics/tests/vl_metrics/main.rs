//! The vision-language metrics: VQA, GQA and NLVR2 on cases worked out from the official evaluation
//! code (`vqaEval.py` before and after its 2021 fix, as LAVIS / VL-T5 and GT-Vision-Lab/VQA run it;
//! lil-lab/nlvr `metrics.py`); the modules compare with reference fixtures: VQA with the reference
//! code itself ([`vqa_eval`]), captions with pycocoevalcap ([`captions`]), retrieval with
//! clip-benchmark ([`retrieval`]).

mod captions;
mod retrieval;
mod vqa_eval;

use peftbench_metrics::gqa::gqa_accuracy;
use peftbench_metrics::nlvr2::{nlvr2_scores, sentence_key, Nlvr2Example};
use peftbench_metrics::vqa::{
    process_digit_article, process_punctuation, question_accuracy, vqa_accuracy, VqaQuestion,
    VqaVariant,
};

fn answers(spec: &[(&str, usize)]) -> Vec<String> {
    spec.iter()
        .flat_map(|&(a, n)| std::iter::repeat_n(a.to_string(), n))
        .collect()
}

fn both(gt: &[(&str, usize)], pred: &str) -> (f64, f64) {
    let gt = answers(gt);
    (
        question_accuracy(&gt, pred, VqaVariant::Pre2021),
        question_accuracy(&gt, pred, VqaVariant::Official2021),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn vqa_variants_disagree_where_the_2021_fix_changed_the_code() {
    // Unanimous ground truth: 2021 compares raw (stripped) strings, pre-2021 normalises the prediction.
    assert_eq!(both(&[("2", 10)], "two"), (1.0, 0.0));
    assert_eq!(both(&[("dog", 10)], "Dog."), (1.0, 0.0));
    assert_eq!(both(&[("dog", 10)], " dog\n"), (1.0, 1.0));
    // Disagreeing ground truth: 2021 also turns the annotators' number words into digits.
    assert_eq!(both(&[("two", 5), ("2", 5)], "2"), (1.0, 1.0));
    // Pre-2021: only the one "2" matches; 9 of the 10 leave-one-out sets contain it (1/3 each).
    let (old, new) = both(&[("two", 9), ("2", 1)], "2");
    assert!(close(old, 0.3) && close(new, 1.0), "{old} {new}");
    // Capitals in the ground truth: pre-2021 only punctuation-processes it, so "Red" never matches
    // the lower-cased prediction; 2021 lower-cases both.
    let (old, new) = both(&[("Red", 9), ("blue", 1)], "red");
    assert!(close(old, 0.0) && close(new, 1.0), "{old} {new}");
}

#[test]
fn vqa_leave_one_out_accuracy() {
    let (old, new) = both(&[("yes", 2), ("no", 8)], "yes");
    assert!(close(old, 0.6) && close(new, 0.6), "{old} {new}");
    let (old, new) = both(&[("yes", 3), ("no", 7)], "yes");
    assert!(close(old, 0.9) && close(new, 0.9), "{old} {new}");
    assert_eq!(both(&[("yes", 4), ("no", 6)], "yes"), (1.0, 1.0));
    let (old, _) = both(&[("yes", 1), ("no", 9)], "yes");
    assert!(close(old, 0.9 * (1.0 / 3.0)), "{old}");
    assert_eq!(both(&[("the dog", 6), ("dog", 4)], "a dog"), (1.0, 1.0));
    assert_eq!(both(&[("cat", 10)], "dog"), (0.0, 0.0));
    assert!(question_accuracy(&[], "x", VqaVariant::Pre2021).is_nan());
}

#[test]
fn vqa_normalisation_matches_the_official_functions() {
    assert_eq!(process_punctuation("1,000 dogs-cats"), "1000 dogscats");
    assert_eq!(process_punctuation("hi-fi"), "hi fi");
    assert_eq!(process_punctuation("hi - fi"), "hi  fi");
    assert_eq!(process_punctuation("3.5"), "3.5");
    assert_eq!(process_punctuation("dog."), "dog");
    assert_eq!(process_punctuation("yes!"), "yes ");
    // Only the first 32 periods not followed by a digit go (`count=re.UNICODE`).
    assert_eq!(process_punctuation(&".".repeat(36)), "....");
    assert_eq!(process_digit_article("The Two  dogs"), "2 dogs");
    assert_eq!(process_digit_article("dont know, none"), "don't know, 0");
    assert_eq!(process_digit_article("an Im"), "im");
}

#[test]
fn vqa_means_per_answer_and_question_type() {
    let q = |gt: &[(&str, usize)], pred: &str, at: &str, qt: &str| VqaQuestion {
        answers: answers(gt),
        answer_type: at.into(),
        question_type: qt.into(),
        prediction: pred.into(),
    };
    let qs = [
        q(&[("yes", 10)], "yes", "yes/no", "is the"),
        q(&[("yes", 2), ("no", 8)], "yes", "yes/no", "is the"),
        q(&[("2", 10)], "two", "number", "how many"),
        q(&[("red", 10)], "blue", "other", "what color is the"),
    ];
    let acc = vqa_accuracy(&qs, VqaVariant::Pre2021);
    assert!(close(acc.overall, (1.0 + 0.6 + 1.0 + 0.0) / 4.0));
    assert!(close(acc.per_answer_type["yes/no"], 0.8));
    assert_eq!(acc.per_answer_type["number"], 1.0);
    assert_eq!(acc.per_question_type["what color is the"], 0.0);
    assert_eq!(acc.questions, 4);
    let acc = vqa_accuracy(&qs, VqaVariant::Official2021);
    assert_eq!(acc.per_answer_type["number"], 0.0);
}

#[test]
fn gqa_is_exact_match() {
    assert_eq!(
        gqa_accuracy(&["yes", "Yes", "red "], &["yes", "yes", "red"]),
        1.0 / 3.0
    );
    assert!(gqa_accuracy(&[], &[]).is_nan());
}

#[test]
fn nlvr2_accuracy_and_consistency() {
    assert_eq!(sentence_key("dev-850-0-0").unwrap(), "dev-850--0");
    assert!(sentence_key("dev-850-0").is_err());
    let ex = |id: &str, label: bool, prediction: bool| Nlvr2Example {
        identifier: id.into(),
        label,
        prediction,
    };
    let scores = nlvr2_scores(&[
        ex("dev-1-0-0", true, true),
        ex("dev-1-1-0", false, false),
        ex("dev-1-2-0", true, false), // sentence dev-1--0 inconsistent
        ex("dev-1-0-1", true, true),
        ex("dev-1-1-1", false, false), // sentence dev-1--1 consistent
        ex("dev-2-0-0", false, true),  // sentence dev-2--0 inconsistent
    ])
    .unwrap();
    assert!(close(scores.accuracy, 4.0 / 6.0));
    assert!(close(scores.consistency, 1.0 / 3.0));
    assert_eq!((scores.examples, scores.sentences), (6, 3));
}
