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

#[cfg(test)]
mod tests {
    use super::*;

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
