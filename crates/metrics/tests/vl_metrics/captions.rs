//! Caption tokenisation and scores against pycocoevalcap 1.2 (`fixtures/captions_pycocoevalcap.json`,
//! written by `ci/fixtures/captions_pycocoevalcap.py` with Java's PTBTokenizer and the Python
//! scorers; regenerate every fixture with `ci/fixtures/regenerate.sh`): the tokens of 805 captions,
//! and BLEU-1..4, ROUGE-L and CIDEr-D (corpus and per image) on four sets of 2 to 32 images. No
//! Java or Python at test time.

use peftbench_metrics::captions::{
    bleu, caption_scores, cider_d, rouge_l, tokenize_caption, CaptionExample,
};

#[derive(serde::Deserialize)]
struct Fixture {
    tokenizer: Vec<TokenCase>,
    sets: Vec<ScoreSet>,
}

#[derive(serde::Deserialize)]
struct TokenCase {
    raw: String,
    tokens: String,
}

#[derive(serde::Deserialize)]
struct ScoreSet {
    images: Vec<Image>,
    bleu: [f64; 4],
    rouge_l: f64,
    rouge_l_per_image: Vec<f64>,
    cider: f64,
    cider_per_image: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Image {
    hypothesis: String,
    references: Vec<String>,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("../fixtures/captions_pycocoevalcap.json")).unwrap()
}

fn examples(set: &ScoreSet) -> Vec<CaptionExample> {
    set.images
        .iter()
        .map(|i| CaptionExample {
            hypothesis: i.hypothesis.clone(),
            references: i.references.clone(),
        })
        .collect()
}

/// Largest absolute difference, asserted below `tol`.
fn assert_close(name: &str, ours: &[f64], theirs: &[f64], tol: f64) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "{name}: lengths");
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < tol,
        "{name}: max |diff| {worst:e}: ours {ours:?} vs pycocoevalcap {theirs:?}"
    );
    worst
}

#[test]
fn tokenizer_equals_java_ptb_tokenizer() {
    let cases = fixture().tokenizer;
    let wrong: Vec<String> = cases
        .iter()
        .filter(|c| tokenize_caption(&c.raw) != c.tokens)
        .map(|c| {
            format!(
                "{:?}: ours {:?}, Java {:?}",
                c.raw,
                tokenize_caption(&c.raw),
                c.tokens
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn tokenizer_handles_clitics_brackets_numbers_and_abbreviations() {
    for (raw, tokens) in [
        ("A man's T-shirt, isn't it?", "a man 's t-shirt is n't it"),
        (
            "He can't; we won't. I'd've gone",
            "he ca n't we wo n't i 'd 've gone",
        ),
        (
            "Dogs (brown) [big] {x}",
            "dogs -lrb- brown -rrb- -lsb- big -rsb- -lcb- x -rcb-",
        ),
        (
            "3,000 balls at 10:30 for $5 or 50%",
            "3,000 balls at 10:30 for $ 5 or 50 %",
        ),
        (
            "The U.S. flag, Mr. Smith, etc.",
            "the u.s. flag mr. smith etc.",
        ),
        ("It ends in 3.", "it ends in 3"),
        ("\"Quoted\" and 'single' -- wow...", "quoted and single wow"),
        ("the triangles' colours!!!", "the triangles colours !!!"),
        ("cannot gonna", "can not gon na"),
        ("", ""),
    ] {
        assert_eq!(tokenize_caption(raw), tokens, "{raw:?}");
    }
}

#[test]
fn scores_equal_pycocoevalcap() {
    let mut worst = [0.0f64; 3];
    for (i, set) in fixture().sets.iter().enumerate() {
        let ex = examples(set);
        worst[0] = worst[0].max(assert_close(
            &format!("set {i} BLEU"),
            &bleu(&ex),
            &set.bleu,
            1e-9,
        ));
        let rouge = rouge_l(&ex);
        worst[1] = worst[1].max(assert_close(
            &format!("set {i} ROUGE-L per image"),
            &rouge,
            &set.rouge_l_per_image,
            1e-9,
        ));
        let cider = cider_d(&ex);
        worst[2] = worst[2].max(assert_close(
            &format!("set {i} CIDEr-D per image"),
            &cider,
            &set.cider_per_image,
            1e-9,
        ));
        let all = caption_scores(&ex);
        assert_close(
            &format!("set {i} ROUGE-L"),
            &[all.rouge_l],
            &[set.rouge_l],
            1e-9,
        );
        assert_close(
            &format!("set {i} CIDEr-D"),
            &[all.cider_d],
            &[set.cider],
            1e-9,
        );
    }
    eprintln!(
        "max |ours - pycocoevalcap|: BLEU {:e}, ROUGE-L {:e}, CIDEr-D {:e}",
        worst[0], worst[1], worst[2]
    );
}

#[test]
fn empty_and_perfect_hypotheses() {
    let ex = vec![
        CaptionExample {
            hypothesis: "a dog runs".into(),
            references: vec!["a dog runs".into(), "a cat sits".into()],
        },
        CaptionExample {
            hypothesis: String::new(),
            references: vec!["two birds fly".into()],
        },
    ];
    assert_eq!(rouge_l(&ex)[1], 0.0);
    assert!((rouge_l(&ex)[0] - 1.0).abs() < 1e-12);
    assert_eq!(cider_d(&ex)[1], 0.0);
}
