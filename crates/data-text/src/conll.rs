//! CoNLL-style token classification files (NER): one `token<whitespace>tag` per line, a blank
//! line between sentences, IOB2 tags. Covers MasakhaNER (`token tag`, space-separated) and WikiANN
//! as XTREME ships it (`lang:token<TAB>tag`; the `lang:` prefix is removed when `strip_language`
//! is set). `-DOCSTART-` lines are skipped. A line with a token but no tag is an error naming the
//! file and line; tags are not guessed.

use std::path::Path;

use crate::error::{read_bytes, utf8_lines, Result, TextDataError};

/// One sentence: words and their tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedSentence {
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
}

/// Reads a CoNLL file. The token is the first field and the tag the last, so extra middle
/// columns (POS, chunk tags in CoNLL-2003) are ignored.
pub fn read_conll(path: &Path, strip_language: bool) -> Result<Vec<TaggedSentence>> {
    let bytes = read_bytes(path, "")?;
    let mut sentences = Vec::new();
    let mut current = TaggedSentence {
        tokens: Vec::new(),
        tags: Vec::new(),
    };
    for line in utf8_lines(path, &bytes) {
        let (n, line) = line?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            if !current.tokens.is_empty() {
                sentences.push(std::mem::replace(
                    &mut current,
                    TaggedSentence {
                        tokens: Vec::new(),
                        tags: Vec::new(),
                    },
                ));
            }
            continue;
        }
        if trimmed.starts_with("-DOCSTART-") {
            continue;
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.len() < 2 {
            return Err(TextDataError::bad(
                path,
                n,
                format!("token `{trimmed}` has no tag (expected `token tag`)"),
            ));
        }
        let tag = *fields.last().expect("two fields");
        check_tag(path, n, tag)?;
        let mut token = fields[0];
        if strip_language {
            if let Some((lang, rest)) = token.split_once(':') {
                if !rest.is_empty()
                    && lang.len() <= 3
                    && lang.chars().all(|c| c.is_ascii_lowercase())
                {
                    token = rest;
                }
            }
        }
        current.tokens.push(token.to_string());
        current.tags.push(tag.to_string());
    }
    if !current.tokens.is_empty() {
        sentences.push(current);
    }
    Ok(sentences)
}

/// An IOB2 tag: `O`, or `B-TYPE` / `I-TYPE`.
fn check_tag(path: &Path, line: usize, tag: &str) -> Result<()> {
    let ok = tag == "O"
        || tag
            .split_once('-')
            .is_some_and(|(bio, ty)| (bio == "B" || bio == "I") && !ty.is_empty());
    if ok {
        Ok(())
    } else {
        Err(TextDataError::bad(
            path,
            line,
            format!("`{tag}` is not an IOB2 tag (O, B-TYPE or I-TYPE)"),
        ))
    }
}
