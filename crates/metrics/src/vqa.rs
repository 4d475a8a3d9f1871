//! VQA accuracy with the semantics of the official evaluation (github GT-Vision-Lab/VQA,
//! `PythonEvaluationTools/vqaEvaluation/vqaEval.py`).
//!
//! **Normalisation** (both variants use the same three steps, they differ in *when*):
//! 1. `\n` and `\t` become spaces, then surrounding whitespace is stripped.
//! 2. [`process_punctuation`]: each of ``; / [ ] " { } ( ) = + \ _ - > < @ ` , ? !`` is deleted when
//!    it stands next to a space anywhere in the answer, or when the answer contains a digit-comma-digit;
//!    otherwise every occurrence becomes a space. Then periods not followed by a digit are deleted
//!    (only the first 32 of them: the official code passes `re.UNICODE` as the count by accident).
//! 3. [`process_digit_article`]: lower-case, split on whitespace, number words `none`, `zero`..`ten`
//!    become digits, articles `a`/`an`/`the` are dropped, and apostrophe-less contractions
//!    (`dont` → `don't`, 120 of them) get their apostrophe back.
//!
//! **Accuracy of one question**: for each of its ground-truth answers, `min(1, m / 3)` where `m`
//! counts the *other* ground-truth answers equal to the (normalised) prediction; the question's
//! accuracy is the mean over its ground-truth answers (so 3 of 10 annotators agreeing gives
//! `(3·2/3 + 7·1)/10 = 0.9`, not 1). The overall accuracy is the mean over questions, and so are the
//! per-answer-type (`yes/no`, `number`, `other`) and per-question-type accuracies.
//!
//! **Variants** ([`VqaVariant`]):
//! * [`VqaVariant::Pre2021`] (the default): the prediction is always normalised (steps 1–3); the
//!   ground-truth answers only get step 2, and only when they are not all identical. This is the
//!   official code before commit a013f00 (2021-03-11), and the code VL-T5 / VL-Adapter
//!   (`VQAEvaluator.evaluate_raw`) and LAVIS (`vqa_eval.py`) copy, so published PEFT numbers on VQAv2
//!   use it.
//! * [`VqaVariant::Official2021`]: the ground-truth answers are stripped (step 1); when they are not
//!   all identical both they and the prediction get steps 2–3, otherwise nothing more happens to
//!   either (the prediction is only stripped).
//!
//! The two disagree: prediction `two` against ten `2` scores 1 (pre-2021) and 0 (2021), as does
//! `Dog.` against ten `dog`.

use std::collections::BTreeMap;

/// Which version of the official evaluation's normalisation to follow (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VqaVariant {
    /// Before the official fix of 2021 (VL-T5, VL-Adapter, LAVIS): the prediction is always fully
    /// normalised, the ground truth only punctuation-processed when the annotators disagree.
    #[default]
    Pre2021,
    /// The official code since commit a013f00 (2021): both sides fully normalised, but only when the
    /// annotators disagree.
    Official2021,
}

/// One question to score: its ground-truth answers (ten in VQAv2), its types, and the prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaQuestion {
    /// The annotators' answers, raw.
    pub answers: Vec<String>,
    /// `yes/no`, `number` or `other` in VQAv2.
    pub answer_type: String,
    /// One of the 65 question-type prefixes (`what color is the`, ...).
    pub question_type: String,
    /// The model's answer, raw.
    pub prediction: String,
}

/// Accuracies in `[0, 1]` (the official code prints them ×100, rounded to two decimals).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VqaAccuracy {
    /// Mean accuracy over all questions (`NaN` for none).
    pub overall: f64,
    /// Mean accuracy per answer type.
    pub per_answer_type: BTreeMap<String, f64>,
    /// Mean accuracy per question type.
    pub per_question_type: BTreeMap<String, f64>,
    /// Number of questions scored.
    pub questions: usize,
}

/// The punctuation the official code processes, in its order.
const PUNCTUATION: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// Number words and their digits.
const NUMBER_WORDS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// The official contraction map (apostrophe-less form → with apostrophes). Entries with capitals
/// (`Im`, `Ive`, `Id've`, `I'dve`) can never match, since words are lower-cased first; they are kept
/// so the table is the reference's.
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// Step 1: newlines and tabs to spaces, surrounding whitespace stripped.
fn clean(text: &str) -> String {
    text.replace(['\n', '\t'], " ").trim().to_string()
}

/// Whether `text` holds a digit, a comma and a digit in a row (the official `(\d)(\,)(\d)`).
fn has_digit_comma_digit(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars
        .windows(3)
        .any(|w| is_digit(w[0]) && w[1] == ',' && is_digit(w[2]))
}

/// Python's `\d` on a `str` pattern: any Unicode decimal digit. ASCII digits cover VQA's answers;
/// other scripts' digits are treated as non-digits.
fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

/// The official `processPunctuation`: see the module docs, step 2.
pub fn process_punctuation(text: &str) -> String {
    let comma_number = has_digit_comma_digit(text);
    let mut out = text.to_string();
    for p in PUNCTUATION {
        let touches_space = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        let replacement = if touches_space || comma_number {
            ""
        } else {
            " "
        };
        out = out.replace(p, replacement);
    }
    strip_periods(&out)
}

/// `re.sub(r"(?!<=\d)(\.)(?!\d)", "", text, count=32)`: the lookbehind is misspelt as a lookahead
/// (which a period never matches), so this deletes the first 32 periods not followed by a digit.
fn strip_periods(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut removed = 0;
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_digit = chars.get(i + 1).is_some_and(|&n| is_digit(n));
        if c == '.' && !followed_by_digit && removed < 32 {
            removed += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// The official `processDigitArticle`: see the module docs, step 3.
pub fn process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split_whitespace()
        .map(|w| {
            NUMBER_WORDS
                .iter()
                .find(|(word, _)| *word == w)
                .map_or(w, |(_, digit)| digit)
        })
        .filter(|w| !["a", "an", "the"].contains(w))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(short, _)| *short == w)
                .map_or(w, |(_, long)| long)
        })
        .collect();
    words.join(" ")
}

/// Accuracy of one question in `[0, 1]` (the mean over ground-truth answers of
/// `min(1, matches among the others / 3)`). `NaN` when there is no ground-truth answer.
pub fn question_accuracy(answers: &[String], prediction: &str, variant: VqaVariant) -> f64 {
    if answers.is_empty() {
        return f64::NAN;
    }
    let disagree = answers.iter().any(|a| *a != answers[0]);
    let (gts, pred): (Vec<String>, String) = match variant {
        VqaVariant::Pre2021 => {
            let pred = process_digit_article(&process_punctuation(&clean(prediction)));
            let gts = if disagree {
                answers.iter().map(|a| process_punctuation(a)).collect()
            } else {
                answers.to_vec()
            };
            (gts, pred)
        }
        VqaVariant::Official2021 => {
            let stripped: Vec<String> = answers.iter().map(|a| clean(a)).collect();
            // The official code tests agreement on the stripped answers.
            let disagree = stripped.iter().any(|a| *a != stripped[0]);
            if disagree {
                let full = |t: &str| process_digit_article(&process_punctuation(t));
                (
                    stripped.iter().map(|a| full(a)).collect(),
                    full(&clean(prediction)),
                )
            } else {
                (stripped, clean(prediction))
            }
        }
    };
    let matches = gts.iter().filter(|g| **g == pred).count();
    let total: f64 = gts
        .iter()
        .map(|g| {
            let others = matches - usize::from(*g == pred);
            (others as f64 / 3.0).min(1.0)
        })
        .sum();
    total / gts.len() as f64
}

/// Scores every question; means overall, per answer type and per question type.
pub fn vqa_accuracy(questions: &[VqaQuestion], variant: VqaVariant) -> VqaAccuracy {
    let mut all = Vec::with_capacity(questions.len());
    let mut by_answer: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_question: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for q in questions {
        let acc = question_accuracy(&q.answers, &q.prediction, variant);
        all.push(acc);
        by_answer
            .entry(q.answer_type.clone())
            .or_default()
            .push(acc);
        by_question
            .entry(q.question_type.clone())
            .or_default()
            .push(acc);
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    VqaAccuracy {
        overall: mean(&all),
        per_answer_type: by_answer
            .iter()
            .map(|(k, v)| (k.clone(), mean(v)))
            .collect(),
        per_question_type: by_question
            .iter()
            .map(|(k, v)| (k.clone(), mean(v)))
            .collect(),
        questions: questions.len(),
    }
}
