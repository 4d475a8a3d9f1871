//! A generated multilingual sentiment task with negation, for demos and smoke tests that need no
//! download. Each review names a thing and a positive or negative quality, optionally negated;
//! the label is the polarity after negation ("the soup was not bad" is positive). Lexical cues
//! alone (a bag of words) cannot solve it, so it separates a frozen encoder's linear probe from
//! adapted models. Languages share the structure with their own words, for zero-shot
//! cross-lingual transfer (train on one language, test on the others).

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::classification::TextExample;

/// Vocabulary of one language.
struct Lexicon {
    things: &'static [&'static str],
    good: &'static [&'static str],
    bad: &'static [&'static str],
    /// `{t}` thing, `{q}` quality.
    plain: &'static [&'static str],
    negated: &'static [&'static str],
}

const EN: Lexicon = Lexicon {
    things: &[
        "soup", "film", "hotel", "book", "phone", "concert", "service", "room",
    ],
    good: &[
        "good",
        "great",
        "wonderful",
        "excellent",
        "pleasant",
        "lovely",
    ],
    bad: &["bad", "terrible", "awful", "boring", "poor", "horrible"],
    plain: &[
        "the {t} was {q}.",
        "honestly, the {t} is {q}.",
        "i found the {t} {q}.",
    ],
    negated: &[
        "the {t} was not {q}.",
        "honestly, the {t} is not {q}.",
        "i did not find the {t} {q}.",
    ],
};

const DE: Lexicon = Lexicon {
    things: &[
        "suppe", "film", "hotel", "buch", "telefon", "konzert", "service", "zimmer",
    ],
    good: &[
        "gut",
        "toll",
        "wunderbar",
        "ausgezeichnet",
        "angenehm",
        "schön",
    ],
    bad: &[
        "schlecht",
        "furchtbar",
        "schrecklich",
        "langweilig",
        "mies",
        "grauenhaft",
    ],
    plain: &[
        "das {t} war {q}.",
        "ehrlich, das {t} ist {q}.",
        "ich fand das {t} {q}.",
    ],
    negated: &[
        "das {t} war nicht {q}.",
        "ehrlich, das {t} ist nicht {q}.",
        "ich fand das {t} nicht {q}.",
    ],
};

const FR: Lexicon = Lexicon {
    things: &[
        "soupe",
        "film",
        "hôtel",
        "livre",
        "téléphone",
        "concert",
        "service",
        "chambre",
    ],
    good: &[
        "bon",
        "génial",
        "merveilleux",
        "excellent",
        "agréable",
        "charmant",
    ],
    bad: &[
        "mauvais",
        "terrible",
        "affreux",
        "ennuyeux",
        "médiocre",
        "horrible",
    ],
    plain: &[
        "le {t} était {q}.",
        "franchement, le {t} est {q}.",
        "j'ai trouvé le {t} {q}.",
    ],
    negated: &[
        "le {t} n'était pas {q}.",
        "franchement, le {t} n'est pas {q}.",
        "je n'ai pas trouvé le {t} {q}.",
    ],
};

/// The languages the generator knows (ISO 639-1).
pub const NEGATION_LANGUAGES: [&str; 3] = ["en", "de", "fr"];

fn lexicon(lang: &str) -> Option<&'static Lexicon> {
    match lang {
        "en" => Some(&EN),
        "de" => Some(&DE),
        "fr" => Some(&FR),
        _ => None,
    }
}

/// Class names: label 0 negative, 1 positive.
pub const SENTIMENT_LABELS: [&str; 2] = ["negative", "positive"];

/// One generated review: its text, the index of the thing it is about (the same thing in every
/// language) and whether it is positive after negation.
struct Review {
    text: String,
    thing: usize,
    positive: bool,
}

fn review(lex: &Lexicon, negate: bool, rng: &mut ChaCha8Rng) -> Review {
    let positive_word = rng.random_bool(0.5);
    let quality = if positive_word { lex.good } else { lex.bad }
        .choose(rng)
        .expect("non-empty");
    let thing = rng.random_range(0..lex.things.len());
    let template = if negate { lex.negated } else { lex.plain }
        .choose(rng)
        .expect("non-empty");
    Review {
        text: template
            .replace("{t}", lex.things[thing])
            .replace("{q}", quality),
        thing,
        positive: positive_word != negate,
    }
}

/// `n` reviews in `lang`, balanced between negated and plain, drawn from `seed`.
pub fn negation_sentiment(lang: &str, n: usize, seed: u64) -> Option<Vec<TextExample>> {
    let lex = lexicon(lang)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Some(
        (0..n)
            .map(|i| {
                let r = review(lex, i % 2 == 1, &mut rng);
                TextExample {
                    text: r.text,
                    label: SENTIMENT_LABELS[usize::from(r.positive)].to_string(),
                }
            })
            .collect(),
    )
}

/// Class names of [`review_topics`]: the English names of the things reviews talk about.
pub fn topic_labels() -> &'static [&'static str] {
    EN.things
}

/// `n` reviews in `lang` labelled by the thing they talk about (classes aligned across languages,
/// named by [`topic_labels`]), negated or not at random: a task lexical cues solve, used to
/// pretrain the demo text encoder without teaching it the sentiment tasks.
pub fn review_topics(lang: &str, n: usize, seed: u64) -> Option<Vec<TextExample>> {
    let lex = lexicon(lang)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Some(
        (0..n)
            .map(|_| {
                let negate = rng.random_bool(0.5);
                let r = review(lex, negate, &mut rng);
                TextExample {
                    text: r.text,
                    label: EN.things[r.thing].to_string(),
                }
            })
            .collect(),
    )
}

/// A generated retrieval collection in one language: reviews as documents and one query per
/// (thing, polarity), "soup good", with graded judgements. A review is relevant when it is about
/// the query's thing with the query's polarity after negation: grade 2 when it says so plainly
/// ("the soup was great."), 1 when through a negation ("the soup was not bad."); reviews of the
/// thing with the other polarity are judged 0. Lexical matching cannot tell "not good" from
/// "good", so BM25 leaves the ranking to a reranker. Query ids are the same in every language
/// (`soup-good` names the English words), as CLEF's topics are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewCollection {
    /// `(query id, text)`.
    pub queries: Vec<(String, String)>,
    /// `(document id, text)`.
    pub documents: Vec<(String, String)>,
    /// `(query id, document id, grade)` for every judged pair.
    pub qrels: Vec<(String, String, i64)>,
}

fn query_id(thing: usize, positive: bool) -> String {
    format!(
        "{}-{}",
        EN.things[thing],
        if positive { "good" } else { "bad" }
    )
}

fn query_text(lex: &Lexicon, thing: usize, positive: bool) -> String {
    let quality = if positive { lex.good[0] } else { lex.bad[0] };
    format!("{} {quality}", lex.things[thing])
}

/// A [`ReviewCollection`] of `documents` reviews in `lang` (half of them negated) drawn from
/// `seed`; document ids are `<lang>-<index>`.
pub fn review_collection(lang: &str, documents: usize, seed: u64) -> Option<ReviewCollection> {
    let lex = lexicon(lang)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let reviews: Vec<(Review, bool)> = (0..documents)
        .map(|i| {
            let negated = i % 2 == 1;
            (review(lex, negated, &mut rng), negated)
        })
        .collect();
    let mut queries = Vec::new();
    let mut qrels = Vec::new();
    for thing in 0..lex.things.len() {
        for positive in [true, false] {
            let id = query_id(thing, positive);
            queries.push((id.clone(), query_text(lex, thing, positive)));
            for (index, (r, negated)) in reviews.iter().enumerate() {
                if r.thing != thing {
                    continue;
                }
                let grade = match (r.positive == positive, negated) {
                    (false, _) => 0,
                    (true, false) => 2,
                    (true, true) => 1,
                };
                qrels.push((id.clone(), format!("{lang}-{index}"), grade));
            }
        }
    }
    Some(ReviewCollection {
        queries,
        documents: reviews
            .into_iter()
            .enumerate()
            .map(|(index, (r, _))| (format!("{lang}-{index}"), r.text))
            .collect(),
        qrels,
    })
}

/// `n` MS MARCO-style training triples `(query, relevant review, non-relevant review)` in `lang`,
/// drawn from `seed`, for the queries of [`review_collection`]: the positive is about the query's
/// thing with its polarity (negated or not); the negative, half the time, is about the same thing
/// with the other polarity (a hard negative BM25 would rank high), else about another thing.
pub fn review_triples(lang: &str, n: usize, seed: u64) -> Option<Vec<(String, String, String)>> {
    let lex = lexicon(lang)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let draw = |thing: usize, positive: bool, rng: &mut ChaCha8Rng| loop {
        let r = review(lex, rng.random_bool(0.5), rng);
        if r.thing == thing && r.positive == positive {
            return r.text;
        }
    };
    Some(
        (0..n)
            .map(|_| {
                let thing = rng.random_range(0..lex.things.len());
                let positive = rng.random_bool(0.5);
                let relevant = draw(thing, positive, &mut rng);
                let non_relevant = if rng.random_bool(0.5) {
                    draw(thing, !positive, &mut rng)
                } else {
                    let other = (thing + rng.random_range(1..lex.things.len())) % lex.things.len();
                    draw(other, rng.random_bool(0.5), &mut rng)
                };
                (query_text(lex, thing, positive), relevant, non_relevant)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_collections_judge_by_polarity_after_negation() {
        let c = review_collection("de", 200, 5).unwrap();
        assert_eq!(c, review_collection("de", 200, 5).unwrap());
        assert_eq!((c.queries.len(), c.documents.len()), (16, 200));
        assert_eq!(
            c.queries[0],
            ("soup-good".to_string(), "suppe gut".to_string())
        );
        let text: std::collections::BTreeMap<&str, &str> = c
            .documents
            .iter()
            .map(|(id, t)| (id.as_str(), t.as_str()))
            .collect();
        // Every review is judged for exactly the two queries of its thing.
        assert_eq!(c.qrels.len(), 2 * 200);
        for (query, doc, grade) in &c.qrels {
            let review = text[doc.as_str()];
            let thing = query.split('-').next().unwrap();
            let index = EN.things.iter().position(|t| *t == thing).unwrap();
            assert!(review.contains(DE.things[index]), "{query} {review}");
            let negated = review.contains("nicht");
            let good = DE.good.iter().any(|g| review.contains(&format!(" {g}")));
            let relevant = (good != negated) == query.ends_with("good");
            let expected = match (relevant, negated) {
                (false, _) => 0,
                (true, false) => 2,
                (true, true) => 1,
            };
            assert_eq!(*grade, expected, "{query} {review}");
        }
        let triples = review_triples("en", 50, 1).unwrap();
        assert_eq!(triples, review_triples("en", 50, 1).unwrap());
        for (query, positive, negative) in &triples {
            let thing = query.split(' ').next().unwrap();
            assert!(positive.contains(thing), "{query}: {positive}");
            assert_ne!(positive, negative);
        }
    }

    #[test]
    fn negation_flips_the_label_and_is_deterministic() {
        let a = negation_sentiment("en", 40, 7).unwrap();
        assert_eq!(a, negation_sentiment("en", 40, 7).unwrap());
        for ex in &a {
            let negated = ex.text.contains(" not ");
            let good = EN.good.iter().any(|g| ex.text.contains(&format!(" {g}")));
            let positive = ex.label == "positive";
            assert_eq!(positive, good != negated, "{ex:?}");
        }
        assert_eq!(a.iter().filter(|e| e.text.contains(" not ")).count(), 20);
        assert!(negation_sentiment("xx", 1, 0).is_none());
    }

    #[test]
    fn topics_are_aligned_across_languages() {
        for (lang, lex) in [("en", &EN), ("de", &DE), ("fr", &FR)] {
            let topics = review_topics(lang, 60, 3).unwrap();
            assert_eq!(topics, review_topics(lang, 60, 3).unwrap());
            for ex in &topics {
                let class = topic_labels().iter().position(|t| *t == ex.label).unwrap();
                assert!(ex.text.contains(lex.things[class]), "{lang}: {ex:?}");
            }
        }
    }
}
