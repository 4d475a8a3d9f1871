//! GQA's balanced question files, `{train,val,testdev}_balanced_questions.json`: one JSON object
//! mapping each question id to `{imageId, question, answer, fullAnswer, isBalanced, groups,
//! entailed, equivalent, types: {structural, semantic, detailed}, annotations, semantic,
//! semanticStr}`. [`read_gqa_balanced`] keeps the id, image, question, short answer and structural
//! type (`verify`, `query`, `choose`, `logical`, `compare`); the rest is ignored.
//!
//! Questions come back sorted by id: numerically where ids are digit strings (GQA's are), any
//! other id after those, by its text. GQA's accuracy is exact match on `answer`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{read_json, Result};

/// One GQA question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GqaQuestion {
    /// The id as written (a digit string, sometimes with leading zeros).
    pub question_id: String,
    /// The Visual Genome image id (`images/<image_id>.jpg`), e.g. `n161313`, `2354786`.
    pub image_id: String,
    pub question: String,
    /// The short answer, compared by exact match.
    pub answer: String,
    /// `types.structural`: `verify`, `query`, `choose`, `logical` or `compare`.
    pub structural: String,
}

/// The balanced questions file of a split (`train`, `val`, `testdev`).
pub fn gqa_questions_file(split: &str) -> String {
    format!("{split}_balanced_questions.json")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawQuestion {
    image_id: String,
    question: String,
    answer: String,
    types: Types,
}

#[derive(Deserialize)]
struct Types {
    structural: String,
}

/// Reads a balanced questions file, sorted by question id.
pub fn read_gqa_balanced(path: &Path) -> Result<Vec<GqaQuestion>> {
    let raw: HashMap<String, RawQuestion> = read_json(path)?;
    let mut out: Vec<GqaQuestion> = raw
        .into_iter()
        .map(|(question_id, q)| GqaQuestion {
            question_id,
            image_id: q.image_id,
            question: q.question,
            answer: q.answer,
            structural: q.types.structural,
        })
        .collect();
    out.sort_by(|a, b| id_order(&a.question_id, &b.question_id));
    Ok(out)
}

/// Digit-string ids by value (then text, so `007` and `7` keep a fixed order), before any other.
pub(crate) fn id_order(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vl::{write, VlDataError};

    fn entry(qid: &str, image: &str, question: &str, answer: &str, structural: &str) -> String {
        format!(
            "\"{qid}\": {{\"semantic\": [{{\"operation\": \"select\", \"dependencies\": [], \"argument\": \"x\"}}], \
             \"entailed\": [\"1\"], \"equivalent\": [\"{qid}\"], \"question\": \"{question}\", \
             \"imageId\": \"{image}\", \"isBalanced\": true, \"groups\": {{\"global\": null, \"local\": \"10q\"}}, \
             \"answer\": \"{answer}\", \"semanticStr\": \"select: x\", \
             \"annotations\": {{\"answer\": {{}}, \"question\": {{}}, \"fullAnswer\": {{}}}}, \
             \"types\": {{\"detailed\": \"existC\", \"semantic\": \"obj\", \"structural\": \"{structural}\"}}, \
             \"fullAnswer\": \"Yes, there is.\"}}"
        )
    }

    #[test]
    fn balanced_questions_come_back_sorted_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{{{}, {}, {}}}",
            entry("201640614", "n161313", "Is there a fence?", "yes", "verify"),
            entry(
                "20968379",
                "2354786",
                "What is on the table?",
                "cup",
                "query"
            ),
            entry("02930152", "n15740", "Left or right?", "left", "choose"),
        );
        let path = write(dir.path(), &gqa_questions_file("testdev"), &text);
        assert!(path.ends_with("testdev_balanced_questions.json"));
        let rows = read_gqa_balanced(&path).unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.question_id.as_str()).collect();
        assert_eq!(ids, ["02930152", "20968379", "201640614"]);
        assert_eq!(
            rows[1],
            GqaQuestion {
                question_id: "20968379".into(),
                image_id: "2354786".into(),
                question: "What is on the table?".into(),
                answer: "cup".into(),
                structural: "query".into(),
            }
        );
        assert_eq!(rows[2].structural, "verify");
    }

    #[test]
    fn id_order_is_total() {
        let mut ids = vec!["b", "10", "a", "9", "09"];
        ids.sort_by(|a, b| id_order(a, b));
        assert_eq!(ids, ["09", "9", "10", "a", "b"]);
    }

    #[test]
    fn a_question_without_its_types_is_an_error_at_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "val_balanced_questions.json",
            "{\"1\": {\"imageId\": \"n1\", \"question\": \"q\", \"answer\": \"a\",\n \"types\": {\"semantic\": \"obj\"}}}",
        );
        let err = read_gqa_balanced(&path).unwrap_err();
        assert!(matches!(err, VlDataError::Json { line: 2, .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2:", path.display())),
            "{err}"
        );
        assert!(
            err.to_string().contains("missing field `structural`"),
            "{err}"
        );
    }
}
