//! Caption metrics with the semantics of pycocoevalcap 1.2 (the COCO caption evaluation that
//! lmms-eval, VL-T5 and VL-Adapter report): its PTB tokenisation, BLEU-1..4, ROUGE-L and CIDEr-D.
//!
//! **Tokenisation** ([`tokenize_caption`]). pycocoevalcap runs Stanford CoreNLP 3.4.1's
//! `PTBTokenizer -preserveLines -lowerCase` (Java) on every caption, then drops the tokens
//! ``'' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;`` and joins the rest with single
//! spaces. Because the tokens are lower-cased first, `-lrb-`, `-rrb-`, `-lsb-`, `-rsb-`, `-lcb-`,
//! `-rcb-` survive (the drop list is upper-case). This module reimplements the tokeniser's behaviour
//! on ordinary English captions, without Java:
//! * Whitespace separates tokens; within a whitespace-free chunk a *word* is a run of letters,
//!   digits, `_`, `@` and `#` (a `#` before a digit is split off: `#1` → `# 1`), joined by `-`, `.`
//!   and `/` when a letter or digit follows them (`t-shirt`, `1.5-inch`, `and/or`, `x.com`), by `,`
//!   and `:` between digits (`3,000`, `10:30`; letters after a time start a new word: `7:45pm` →
//!   `7:45 pm`), by `&` between capitals (`AT&T`), and by `'` when a letter follows (`o'clock`).
//! * A word's final `.` stays on it when the word is an abbreviation: one letter (`a.`), an acronym
//!   of single letters and periods (`u.s.`, `e.g.`, `p.m.`), or a title, company, month, weekday or
//!   US-state abbreviation (`mr.`, `st.`, `inc.`, `jan.`, `calif.`, `etc.`, `vs.`, ...; any case),
//!   even before more periods (`etc..` → `etc. .`); `no. nos. art. pp. fig. ph.` keep it only before
//!   a number (`No. 5`); any word keeps it before `,` `;` `:` (`ok.,` → `ok. ,`). Otherwise the
//!   period is a token of its own (`3.` → `3 .`). The extra `.` the tokeniser adds after a
//!   sentence-final abbreviation is dropped by the punctuation list, so it is not produced.
//! * Clitics are split off the end of a word: `n't` (`can't` → `ca n't`, `won't` → `wo n't`),
//!   `'s 're 've 'll 'd 'm` (`i'd've` → `i 'd 've`), a final `'` (`triangles'` → `triangles '`);
//!   `cannot gonna gotta wanna gimme lemme` split in two (`can not`, `gon na`, ...). A leading `'`
//!   followed by a clitic (`'s`) is that clitic; it stays on `'em`, `'cause`, decades (`'50s`,
//!   `'90s`, not `'10s`) and two digits ending the chunk (`'05`); `'tis` → `'t is`; `''` is one
//!   quote token; otherwise `'` is an opening quote.
//! * Brackets become `-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`; `"` and curly quotes are quote tokens;
//!   runs of `?`/`!` are one token (`!!!`, `?!`), as are runs of `*`; `...` (and `…`) is one token,
//!   `..` two `.`; a lone `-` is a token and runs of `-` (and `–`, `—`) are `--`; emoticons
//!   (`: ; =`, an optional `-`, then `) ( ] [ D P`, e.g. `:)` → `:-rrb-`, `;]`) are one token;
//!   `$ % & + = \ < > ~ ^ | ; : , °` and other symbols are tokens of their own; `½ ¼ ¾` become the
//!   tokens `1/2 1/4 3/4`; a whole number followed by a fraction in the next chunk is one token
//!   joined by a no-break space (`2 1/2`).
//!
//! Checked against the Java tokeniser on 805 captions: the fixture's captions, edge cases for every
//! rule above, and 600 seeded sentences of words and punctuation glued at random. Not reproduced
//! (rare in captions; then the tokens may differ from Java's): the lexer's sentence-boundary
//! heuristics after an abbreviation (`x. The` → `x .`, a line-final `No.`), URLs and e-mail
//! addresses with punctuation the word rule splits, SGML/HTML tags, `'n'`-style internal clitics
//! (`rock'n'roll`, `y'all`), `?`/`!` inside a word (`a?b`), `no.5`, and abbreviations beyond the
//! lists here. Americanisation (`colour` → `color`) is off in 3.4.1's command line, as here.
//!
//! **Scores**, on tokenized captions (one hypothesis and at least one reference per image):
//! * [`bleu`]: corpus BLEU-1..4 as pycocoevalcap's `Bleu(4)`: clipped n-gram counts summed over
//!   images, the reference length of each image the one closest to its hypothesis' length (the
//!   shorter on a tie), brevity penalty `exp(1 - r/c)` when `c < r`, with pycocoevalcap's smoothing
//!   constants (`1e-15` added to matches and lengths, `1e-9` to guesses and reference length).
//! * [`rouge_l`]: per image, the longest common subsequence with each reference (tokens split on
//!   single spaces, so an empty hypothesis is one empty token), the best precision and the best
//!   recall over references taken separately, `F = (1+β²)PR / (R+β²P)` with `β = 1.2`; the mean
//!   over images.
//! * [`cider_d`]: pycocoevalcap's `Cider()` (CIDEr-D): n-grams 1..4 as tf-idf vectors, document
//!   frequencies counted over the images' reference sets *of the evaluated set* (so the score of an
//!   image depends on the whole set), `idf = ln(#images) - ln(max(1, df))`; per n, the clipped dot
//!   product `Σ min(h, r)·r` over the two norms, times the Gaussian length penalty
//!   `exp(-(Δ²)/(2σ²))`, `σ = 6`, where the lengths count bigrams; the mean over n, averaged over
//!   references, ×10; the corpus score is the mean over images.

use std::collections::HashMap;

/// The tokens pycocoevalcap drops after tokenising (upper-case brackets never occur once
/// lower-cased).
const DROPPED: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Abbreviations whose final period stays on the word (compared lower-cased, without the period).
const ABBREVIATIONS: &[&str] = &[
    // Titles.
    "mr", "mrs", "ms", "dr", "prof", "jr", "sr", "st", "mt", "ft", "gen", "gov", "sen", "rep", "lt",
    "col", "capt", "sgt", "rev", "hon", "messrs", // Companies and addresses.
    "inc", "co", "corp", "ltd", "bros", "ave", "blvd", "dept", "est",
    // Months and weekdays.
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon",
    "tue", "tues", "wed", "thu", "thurs", "fri", // US states.
    "ala", "ariz", "ark", "calif", "colo", "conn", "dak", "fla", "kan", "kans", "ky", "mich",
    "minn", "mont", "neb", "nev", "okla", "penn", "tenn", "tex", "vt", "wyo",
    // Latin and comparison.
    "etc", "vs",
];

/// Abbreviations that keep their period only before a number (`No. 5`, but `no .` otherwise).
const NUMBER_ABBREVIATIONS: [&str; 6] = ["no", "nos", "art", "pp", "fig", "ph"];

/// Words the tokeniser splits in two, and where.
const SPLIT_WORDS: [(&str, usize); 6] = [
    ("cannot", 3),
    ("gonna", 3),
    ("gotta", 3),
    ("wanna", 3),
    ("gimme", 3),
    ("lemme", 3),
];

/// Clitics split off the end of a word (after `n't`).
const CLITICS: [&str; 6] = ["'s", "'re", "'ve", "'ll", "'d", "'m"];

/// A caption tokenized as pycocoevalcap's `PTBTokenizer` does: lower-cased PTB tokens with its
/// punctuation list removed, joined by single spaces (see the module docs for the rules).
pub fn tokenize_caption(caption: &str) -> String {
    let text = normalise(caption);
    let mut tokens = Vec::new();
    let chunks: Vec<Vec<char>> = text
        .split_whitespace()
        .map(|c| c.chars().collect())
        .collect();
    for (k, chunk) in chunks.iter().enumerate() {
        let number_follows = chunks
            .get(k + 1)
            .is_some_and(|next| next[0].is_ascii_digit());
        let first = tokens.len();
        tokenize_chunk(chunk, number_follows, &mut tokens);
        // A whole number and a fraction in the next chunk are one token (`2 1/2`), joined by a
        // no-break space as the tokeniser does.
        if first > 0
            && chunk[0].is_ascii_digit()
            && first < tokens.len()
            && is_fraction(&tokens[first])
        {
            // The previous token is the last of the previous chunk.
            if tokens[first - 1].chars().all(|c| c.is_ascii_digit()) {
                let fraction = tokens.remove(first);
                tokens[first - 1].push('\u{A0}');
                tokens[first - 1].push_str(&fraction);
            }
        }
    }
    tokens
        .into_iter()
        .map(|t| t.to_lowercase())
        .filter(|t| !DROPPED.contains(&t.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `digits/digits`.
fn is_fraction(token: &str) -> bool {
    token.split_once('/').is_some_and(|(a, b)| {
        [a, b]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    })
}

/// Unicode punctuation the lexer maps to ASCII forms.
fn normalise(caption: &str) -> String {
    let mut out = String::with_capacity(caption.len());
    for c in caption.chars() {
        match c {
            '\u{2019}' | '\u{2032}' => out.push('\''),
            '\u{2018}' => out.push('`'),
            '\u{201C}' | '\u{201D}' | '\u{201E}' => out.push('"'),
            '\u{2026}' => out.push_str("..."),
            '\u{2013}' | '\u{2014}' => out.push_str("--"),
            '\u{A0}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '@'
}

/// Splits one whitespace-free chunk into PTB tokens (before lower-casing and dropping);
/// `number_follows` says whether the next chunk starts with a digit.
fn tokenize_chunk(chars: &[char], number_follows: bool, out: &mut Vec<String>) {
    let at = |i: usize| chars.get(i).copied();
    let run_of = |i: usize, c: char| chars[i..].iter().take_while(|&&x| x == c).count();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                out.push("''".into());
                i += 1;
            }
            '(' | ')' | '[' | ']' | '{' | '}' => {
                out.push(
                    match c {
                        '(' => "-LRB-",
                        ')' => "-RRB-",
                        '[' => "-LSB-",
                        ']' => "-RSB-",
                        '{' => "-LCB-",
                        _ => "-RCB-",
                    }
                    .into(),
                );
                i += 1;
            }
            '.' => {
                let n = run_of(i, '.');
                if n >= 3 {
                    out.push("...".into());
                } else {
                    out.extend(std::iter::repeat_n(".".to_string(), n));
                }
                i += n;
            }
            '-' => {
                let n = run_of(i, '-');
                out.push(if n == 1 { "-" } else { "--" }.into());
                i += n;
            }
            '?' | '!' => {
                let n = chars[i..]
                    .iter()
                    .take_while(|&&x| x == '?' || x == '!')
                    .count();
                out.push(chars[i..i + n].iter().collect());
                i += n;
            }
            '*' => {
                let n = run_of(i, '*');
                out.push(chars[i..i + n].iter().collect());
                i += n;
            }
            '`' => {
                out.push("`".into());
                i += 1;
            }
            '\'' if at(i + 1) == Some('\'') => {
                out.push("''".into());
                i += 2;
            }
            '\'' => {
                // A clitic written apart ("'s"), a word that keeps its apostrophe ('em, '90s),
                // `'tis`, or an opening quote.
                let rest: String = chars[i..].iter().collect::<String>().to_lowercase();
                let word_len = 1 + chars[i + 1..]
                    .iter()
                    .take_while(|&&x| is_word_char(x))
                    .count();
                let word: String = rest.chars().take(word_len).collect();
                if CLITICS.contains(&word.as_str()) || word == "'" {
                    if word == "'" {
                        out.push("'".into());
                    } else {
                        out.push(chars[i..i + word_len].iter().collect());
                    }
                    i += word_len;
                } else if word == "'tis" {
                    out.push(chars[i..i + 2].iter().collect());
                    out.push(chars[i + 2..i + 4].iter().collect());
                    i += 4;
                } else if word == "'em" || word == "'cause" || is_decade(&chars[i..]) {
                    let end = word_end(chars, i + 1, number_follows);
                    push_word(&chars[i..end], out);
                    i = end;
                } else {
                    out.push("`".into());
                    i += 1;
                }
            }
            ':' | ';' | '=' if emoticon_len(&chars[i..]) > 0 => {
                let n = emoticon_len(&chars[i..]);
                let text: String = chars[i..i + n]
                    .iter()
                    .map(|&c| match c {
                        '(' => "-LRB-".to_string(),
                        ')' => "-RRB-".to_string(),
                        c => c.to_string(),
                    })
                    .collect();
                out.push(text);
                i += n;
            }
            '\u{BD}' | '\u{BC}' | '\u{BE}' => {
                out.push(
                    match c {
                        '\u{BD}' => "1/2",
                        '\u{BC}' => "1/4",
                        _ => "3/4",
                    }
                    .into(),
                );
                i += 1;
            }
            '#' if at(i + 1).is_some_and(|n| n.is_alphabetic()) => {
                let end = word_end(chars, i + 1, number_follows);
                push_word(&chars[i..end], out);
                i = end;
            }
            c if is_word_char(c) => {
                let end = word_end(chars, i, number_follows);
                push_word(&chars[i..end], out);
                i = end;
            }
            c => {
                out.push(c.to_string());
                i += 1;
            }
        }
    }
}

/// Whether `chars` (starting at an apostrophe) is a year the apostrophe stays on: a decade
/// (`'50s`, `'90s`; not `'10s`) before anything, or two digits ending the chunk (`'05`).
fn is_decade(chars: &[char]) -> bool {
    let digit = |k: usize| chars.get(k).is_some_and(char::is_ascii_digit);
    if !(digit(1) && digit(2)) {
        return false;
    }
    match chars.get(3) {
        None => true,
        Some('s') => {
            chars[1] != '1' && chars[2] == '0' && !chars.get(4).is_some_and(|c| c.is_alphanumeric())
        }
        Some(_) => false,
    }
}

/// The length of an emoticon at the start of `chars` (`:)`, `;-)`, `:]`, `:D`; 0 for none): eyes
/// `: ; =`, an optional `-` nose, a mouth `) ( ] [ D P d p`, and no letter or digit after it.
fn emoticon_len(chars: &[char]) -> usize {
    let nose = usize::from(chars.get(1) == Some(&'-'));
    let mouth = 1 + nose;
    let is_mouth = chars.get(mouth).is_some_and(|c| ")(][DPdp".contains(*c));
    let ends = !chars.get(mouth + 1).is_some_and(|c| c.is_alphanumeric());
    if is_mouth && ends {
        mouth + 1
    } else {
        0
    }
}

/// The end of the word starting at `start` (see the module docs for what joins a word), including
/// a final abbreviation period.
fn word_end(chars: &[char], start: usize, number_follows: bool) -> usize {
    let alnum = |i: usize| chars.get(i).is_some_and(|c| c.is_alphanumeric());
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let upper = |i: usize| chars.get(i).is_some_and(|c| c.is_uppercase());
    let mut i = start;
    let mut time = false;
    while i < chars.len() {
        let c = chars[i];
        // After a clock time, letters start a new word (`7:45pm` → `7:45 pm`).
        if time && c.is_alphabetic() && digit(i - 1) {
            break;
        }
        time |= c == ':' && digit(i - 1) && digit(i + 1);
        let joins = match c {
            c if is_word_char(c) || c == '#' => true,
            '-' | '.' | '/' => alnum(i + 1) && i > start,
            ',' | ':' => digit(i - 1) && digit(i + 1),
            '&' => upper(i - 1) && upper(i + 1),
            '\'' => chars.get(i + 1).is_some_and(|c| c.is_alphabetic()) && i > start,
            _ => false,
        };
        if !joins {
            break;
        }
        i += 1;
    }
    // A final period stays on an abbreviation (even before more periods: `etc..` → `etc. .`), and
    // on any word when in-sentence punctuation follows (`ok.,` → `ok. ,`).
    if chars.get(i) == Some(&'.') {
        let word: String = chars[start..i].iter().collect();
        let before_number = i + 1 == chars.len()
            && number_follows
            && NUMBER_ABBREVIATIONS.contains(&word.to_lowercase().as_str());
        if is_abbreviation(&word)
            || before_number
            || matches!(chars.get(i + 1), Some(',' | ';' | ':'))
        {
            i += 1;
        }
    }
    i
}

/// Whether `word` (without its final period) is an abbreviation that keeps the period.
fn is_abbreviation(word: &str) -> bool {
    let lower = word.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let single_letters = chars.iter().enumerate().all(|(k, c)| {
        if k % 2 == 0 {
            c.is_alphabetic()
        } else {
            *c == '.'
        }
    }) && chars.len() % 2 == 1;
    single_letters || ABBREVIATIONS.contains(&lower.as_str())
}

/// Pushes a word, its clitics split off (`can't` → `ca n't`, `dogs'` → `dogs '`).
fn push_word(word: &[char], out: &mut Vec<String>) {
    let text: String = word.iter().collect();
    let lower = text.to_lowercase();
    if let Some((_, at)) = SPLIT_WORDS.iter().find(|(w, _)| *w == lower) {
        let (head, tail) = text.split_at(*at);
        out.push(head.into());
        out.push(tail.into());
        return;
    }
    let mut suffixes = Vec::new();
    let mut end = text.len();
    loop {
        let lower_head = &lower[..end];
        let clitic = if lower_head.ends_with("n't") && end > 3 {
            Some(3)
        } else {
            CLITICS
                .iter()
                .find(|c| lower_head.ends_with(*c) && end > c.len())
                .map(|c| c.len())
        };
        match clitic {
            Some(len) => {
                suffixes.push(text[end - len..end].to_string());
                end -= len;
            }
            None => break,
        }
    }
    if suffixes.is_empty() && text.len() > 1 && text.ends_with('\'') {
        suffixes.push("'".into());
        end -= 1;
    }
    out.push(text[..end].to_string());
    out.extend(suffixes.into_iter().rev());
}

/// One image to score: its tokenized hypothesis and references ([`tokenize_caption`] output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionExample {
    /// The generated caption, tokenized.
    pub hypothesis: String,
    /// The reference captions, tokenized (at least one).
    pub references: Vec<String>,
}

/// The corpus scores of [`caption_scores`].
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionScores {
    /// BLEU-1..4.
    pub bleu: [f64; 4],
    /// Mean ROUGE-L.
    pub rouge_l: f64,
    /// Mean CIDEr-D (×10 scale, as pycocoevalcap: 1.0 is a "CIDEr 100" in papers' percent).
    pub cider_d: f64,
    /// Number of images.
    pub images: usize,
}

/// BLEU-1..4, ROUGE-L and CIDEr-D of `examples` (pycocoevalcap's corpus values).
///
/// # Panics
/// When `examples` is empty or an image has no reference (pycocoevalcap asserts).
pub fn caption_scores(examples: &[CaptionExample]) -> CaptionScores {
    CaptionScores {
        bleu: bleu(examples),
        rouge_l: mean(&rouge_l(examples)),
        cider_d: mean(&cider_d(examples)),
        images: examples.len(),
    }
}

/// The arithmetic mean (`NaN` when empty).
fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn check(examples: &[CaptionExample]) {
    assert!(!examples.is_empty(), "no captions to score");
    if let Some(i) = examples.iter().position(|e| e.references.is_empty()) {
        panic!("image {i} has no reference caption");
    }
}

/// n-gram counts (n = 1..=4) of a whitespace-split sentence, and its word count.
fn ngram_counts(sentence: &str) -> (usize, HashMap<Vec<&str>, usize>) {
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let mut counts = HashMap::new();
    for n in 1..=4 {
        for gram in words.windows(n) {
            *counts.entry(gram.to_vec()).or_insert(0) += 1;
        }
    }
    (words.len(), counts)
}

/// Corpus BLEU-1..4 of pycocoevalcap's `Bleu(4)` (see the module docs).
///
/// # Panics
/// When `examples` is empty or an image has no reference.
pub fn bleu(examples: &[CaptionExample]) -> [f64; 4] {
    const TINY: f64 = 1e-15;
    const SMALL: f64 = 1e-9;
    check(examples);
    let (mut test_len, mut ref_len) = (0usize, 0usize);
    let mut guess = [0usize; 4];
    let mut correct = [0usize; 4];
    for ex in examples {
        let mut max_ref: HashMap<Vec<&str>, usize> = HashMap::new();
        let mut lengths = Vec::new();
        for r in &ex.references {
            let (len, counts) = ngram_counts(r);
            lengths.push(len);
            for (gram, count) in counts {
                let m = max_ref.entry(gram).or_insert(0);
                *m = (*m).max(count);
            }
        }
        let (len, counts) = ngram_counts(&ex.hypothesis);
        test_len += len;
        ref_len += lengths
            .iter()
            .map(|&l| (l.abs_diff(len), l))
            .min()
            .expect("at least one reference")
            .1;
        for (k, g) in guess.iter_mut().enumerate() {
            *g += (len + 1).saturating_sub(k + 1);
        }
        for (gram, count) in &counts {
            correct[gram.len() - 1] += (*count).min(max_ref.get(gram).copied().unwrap_or(0));
        }
    }
    let mut scores = [0.0; 4];
    let mut product = 1.0;
    for k in 0..4 {
        product *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        scores[k] = product.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (test_len as f64 + TINY) / (ref_len as f64 + SMALL);
    if ratio < 1.0 {
        for s in &mut scores {
            *s *= (1.0 - 1.0 / ratio).exp();
        }
    }
    scores
}

/// Length of the longest common subsequence of two token lists.
fn lcs(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Per-image ROUGE-L of pycocoevalcap's `Rouge()` (see the module docs); the corpus value is their
/// mean.
///
/// # Panics
/// When `examples` is empty or an image has no reference.
pub fn rouge_l(examples: &[CaptionExample]) -> Vec<f64> {
    const BETA: f64 = 1.2;
    check(examples);
    examples
        .iter()
        .map(|ex| {
            let hyp: Vec<&str> = ex.hypothesis.split(' ').collect();
            let (mut prec, mut rec) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            for r in &ex.references {
                let reference: Vec<&str> = r.split(' ').collect();
                let common = lcs(&reference, &hyp) as f64;
                prec = prec.max(common / hyp.len() as f64);
                rec = rec.max(common / reference.len() as f64);
            }
            if prec != 0.0 && rec != 0.0 {
                let b2 = BETA.powi(2);
                ((1.0 + b2) * prec * rec) / (rec + b2 * prec)
            } else {
                0.0
            }
        })
        .collect()
}

/// A sentence's tf-idf vectors per n-gram order, their norms, and its bigram count.
struct TfIdf<'a> {
    vectors: [HashMap<Vec<&'a str>, f64>; 4],
    norms: [f64; 4],
    length: f64,
}

fn tf_idf<'a>(sentence: &'a str, df: &HashMap<Vec<&'a str>, f64>, log_images: f64) -> TfIdf<'a> {
    let (_, counts) = ngram_counts(sentence);
    let mut vectors: [HashMap<Vec<&str>, f64>; 4] = Default::default();
    let mut squares = [0.0; 4];
    let mut length = 0.0;
    for (gram, tf) in counts {
        let n = gram.len() - 1;
        let idf = log_images - df.get(&gram).copied().unwrap_or(0.0).max(1.0).ln();
        let weight = tf as f64 * idf;
        squares[n] += weight * weight;
        if n == 1 {
            length += tf as f64;
        }
        vectors[n].insert(gram, weight);
    }
    TfIdf {
        vectors,
        norms: squares.map(f64::sqrt),
        length,
    }
}

/// Per-image CIDEr-D of pycocoevalcap's `Cider()` (see the module docs); the corpus value is their
/// mean. Every image's score depends on the whole set (document frequencies).
///
/// # Panics
/// When `examples` is empty or an image has no reference.
pub fn cider_d(examples: &[CaptionExample]) -> Vec<f64> {
    const SIGMA: f64 = 6.0;
    check(examples);
    let mut df: HashMap<Vec<&str>, f64> = HashMap::new();
    for ex in examples {
        let mut grams: Vec<Vec<&str>> = ex
            .references
            .iter()
            .flat_map(|r| ngram_counts(r).1.into_keys())
            .collect();
        grams.sort_unstable();
        grams.dedup();
        for g in grams {
            *df.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let log_images = (examples.len() as f64).ln();
    examples
        .iter()
        .map(|ex| {
            let hyp = tf_idf(&ex.hypothesis, &df, log_images);
            let mut total = [0.0; 4];
            for r in &ex.references {
                let reference = tf_idf(r, &df, log_images);
                let delta = hyp.length - reference.length;
                let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
                for (n, sum) in total.iter_mut().enumerate() {
                    let mut value: f64 = hyp.vectors[n]
                        .iter()
                        .map(|(gram, &h)| {
                            let r = reference.vectors[n].get(gram).copied().unwrap_or(0.0);
                            h.min(r) * r
                        })
                        .sum();
                    if hyp.norms[n] != 0.0 && reference.norms[n] != 0.0 {
                        value /= hyp.norms[n] * reference.norms[n];
                    }
                    *sum += value * penalty;
                }
            }
            total.iter().sum::<f64>() / 4.0 / ex.references.len() as f64 * 10.0
        })
        .collect()
}
