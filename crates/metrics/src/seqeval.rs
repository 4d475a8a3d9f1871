//! Entity-level precision, recall and F1 with seqeval's default semantics
//! (`seqeval.metrics.f1_score(y_true, y_pred)`, conlleval-compatible, micro-averaged): entities
//! are extracted from IOB2 (or IOBES) tags, a prediction counts only if its type, start and end
//! all equal a true entity's. As in seqeval's default (non-strict) mode, an `I-X` that does not
//! continue an `X` entity starts a new one, and sentences are joined with an `O` between them.

use std::collections::BTreeSet;

/// An entity: type and inclusive token span in the joined sequence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entity {
    pub kind: String,
    pub start: usize,
    pub end: usize,
}

/// Splits a tag into its position letter and its type (`"O"` has type `"_"`, as in seqeval).
fn split_tag(tag: &str) -> (char, &str) {
    let letter = tag.chars().next().unwrap_or('O');
    let rest = &tag[letter.len_utf8().min(tag.len())..];
    let kind = rest.strip_prefix('-').unwrap_or(rest);
    (letter, if kind.is_empty() { "_" } else { kind })
}

fn ends_chunk(prev: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_type != kind)
}

fn starts_chunk(prev: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != kind)
}

/// The entities of tagged sentences, joined with an `O` between sentences (seqeval's offsets).
pub fn entities(sentences: &[Vec<String>]) -> Vec<Entity> {
    let mut joined: Vec<&str> = Vec::new();
    for s in sentences {
        joined.extend(s.iter().map(String::as_str));
        joined.push("O");
    }
    joined.push("O");
    let (mut prev, mut prev_type) = ('O', "_".to_string());
    let mut begin = 0;
    let mut out = Vec::new();
    for (i, tag) in joined.iter().enumerate() {
        let (letter, kind) = split_tag(tag);
        if ends_chunk(prev, letter, &prev_type, kind) {
            out.push(Entity {
                kind: prev_type.clone(),
                start: begin,
                end: i - 1,
            });
        }
        if starts_chunk(prev, letter, &prev_type, kind) {
            begin = i;
        }
        prev = letter;
        prev_type = kind.to_string();
    }
    out
}

/// Micro-averaged entity precision, recall and F1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpanScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub true_entities: usize,
    pub predicted_entities: usize,
}

/// seqeval's `precision_score`, `recall_score` and `f1_score` (0 where a denominator is 0, as
/// seqeval's default `zero_division="warn"` returns). Panics if sentence lengths differ.
pub fn span_f1(predicted: &[Vec<String>], gold: &[Vec<String>]) -> SpanScores {
    assert_eq!(
        predicted.len(),
        gold.len(),
        "span_f1: sentence counts differ"
    );
    for (i, (p, g)) in predicted.iter().zip(gold).enumerate() {
        assert_eq!(p.len(), g.len(), "span_f1: sentence {i} lengths differ");
    }
    let truth: BTreeSet<Entity> = entities(gold).into_iter().collect();
    let pred: BTreeSet<Entity> = entities(predicted).into_iter().collect();
    let correct = truth.intersection(&pred).count() as f64;
    let ratio = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
    let precision = ratio(correct, pred.len());
    let recall = ratio(correct, truth.len());
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    SpanScores {
        precision,
        recall,
        f1,
        true_entities: truth.len(),
        predicted_entities: pred.len(),
    }
}
