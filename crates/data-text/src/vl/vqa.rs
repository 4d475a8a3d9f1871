//! VQAv2's official files: `v2_OpenEnded_mscoco_<split>_questions.json` (`questions: [{image_id,
//! question, question_id}]`) and `v2_mscoco_<split>_annotations.json` (`annotations:
//! [{question_id, image_id, question_type, answer_type, multiple_choice_answer, answers: [{answer,
//! answer_confidence, answer_id}] x 10}]`), `<split>` being `train2014` or `val2014` (`test2015`
//! has no annotations). Other top-level keys (`info`, `license`, ...) are ignored.
//!
//! [`read_vqa`] joins the two on `question_id`, in the questions file's order. A question without
//! an annotation, two annotations of one question, an annotation whose image differs from its
//! question's, or one without exactly 10 answers is an error naming the files and the question.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{read_json, Result, VlDataError};

/// Answers per question in VQAv2's annotations (ten annotators).
pub const VQA_ANSWERS: usize = 10;

/// One question with its ten human answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VqaQuestion {
    pub question_id: u64,
    /// The COCO image id (`COCO_<split>_<image_id as 12 digits>.jpg`).
    pub image_id: u64,
    pub question: String,
    /// The question's first words (`what color is the`, `is this`, ...).
    pub question_type: String,
    /// `yes/no`, `number` or `other`.
    pub answer_type: String,
    /// The most frequent answer, as the annotation file gives it.
    pub multiple_choice_answer: String,
    /// The ten answers as written (unnormalised), ordered by `answer_id`.
    pub answers: Vec<String>,
}

/// The questions file of a split (`train2014`, `val2014`, `test2015`).
pub fn vqa_questions_file(split: &str) -> String {
    format!("v2_OpenEnded_mscoco_{split}_questions.json")
}

/// The annotations file of a split (`train2014`, `val2014`).
pub fn vqa_annotations_file(split: &str) -> String {
    format!("v2_mscoco_{split}_annotations.json")
}

#[derive(Deserialize)]
struct QuestionsFile {
    questions: Vec<RawQuestion>,
}

#[derive(Deserialize)]
struct RawQuestion {
    image_id: u64,
    question: String,
    question_id: u64,
}

#[derive(Deserialize)]
struct AnnotationsFile {
    annotations: Vec<RawAnnotation>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    question_id: u64,
    image_id: u64,
    question_type: String,
    answer_type: String,
    multiple_choice_answer: String,
    answers: Vec<RawAnswer>,
}

#[derive(Deserialize)]
struct RawAnswer {
    answer: String,
    answer_id: u32,
}

/// Reads a questions file and its annotations file and joins them per question.
pub fn read_vqa(questions: &Path, annotations: &Path) -> Result<Vec<VqaQuestion>> {
    let QuestionsFile {
        questions: raw_questions,
    } = read_json(questions)?;
    let AnnotationsFile {
        annotations: raw_annotations,
    } = read_json(annotations)?;

    let mut by_id: HashMap<u64, RawAnnotation> = HashMap::with_capacity(raw_annotations.len());
    for a in raw_annotations {
        if a.answers.len() != VQA_ANSWERS {
            return Err(VlDataError::bad(
                annotations,
                format!(
                    "question {} has {} answers, expected {VQA_ANSWERS}",
                    a.question_id,
                    a.answers.len()
                ),
            ));
        }
        let id = a.question_id;
        if by_id.insert(id, a).is_some() {
            return Err(VlDataError::bad(
                annotations,
                format!("two annotations of question {id}"),
            ));
        }
    }

    raw_questions
        .into_iter()
        .map(|q| {
            let Some(mut a) = by_id.remove(&q.question_id) else {
                return Err(VlDataError::bad(
                    annotations,
                    format!(
                        "no annotation of question {} (from {})",
                        q.question_id,
                        questions.display()
                    ),
                ));
            };
            if a.image_id != q.image_id {
                return Err(VlDataError::bad(
                    annotations,
                    format!(
                        "question {} is on image {} here but on image {} in {}",
                        q.question_id,
                        a.image_id,
                        q.image_id,
                        questions.display()
                    ),
                ));
            }
            a.answers.sort_by_key(|x| x.answer_id);
            Ok(VqaQuestion {
                question_id: q.question_id,
                image_id: q.image_id,
                question: q.question,
                question_type: a.question_type,
                answer_type: a.answer_type,
                multiple_choice_answer: a.multiple_choice_answer,
                answers: a.answers.into_iter().map(|x| x.answer).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vl::write;

    fn answers_json(answers: &[&str]) -> String {
        let items: Vec<String> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "{{\"answer\": \"{a}\", \"answer_confidence\": \"yes\", \"answer_id\": {}}}",
                    i + 1
                )
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    fn annotation(qid: u64, image: u64, answers: &[&str]) -> String {
        format!(
            "{{\"question_type\": \"what color is the\", \"multiple_choice_answer\": \"{}\", \
             \"answers\": {}, \"image_id\": {image}, \"answer_type\": \"other\", \"question_id\": {qid}}}",
            answers[0],
            answers_json(answers)
        )
    }

    const QUESTIONS: &str = r#"{"info": {"description": "VQA v2"}, "task_type": "Open-Ended",
        "data_type": "mscoco", "license": {"name": "x"}, "data_subtype": "val2014",
        "questions": [
          {"image_id": 42, "question": "What color is the bus?", "question_id": 42000},
          {"image_id": 73, "question": "Is it raining?", "question_id": 73001}
        ]}"#;

    fn annotations(second: &str) -> String {
        format!(
            "{{\"info\": {{}}, \"license\": {{}}, \"data_subtype\": \"val2014\", \"annotations\": [{}, {second}]}}",
            annotation(42000, 42, &["red"; 10]),
        )
    }

    #[test]
    fn questions_join_their_ten_answers() {
        let dir = tempfile::tempdir().unwrap();
        let q = write(dir.path(), &vqa_questions_file("val2014"), QUESTIONS);
        // The second annotation lists its answers out of answer_id order.
        let mut second = annotation(
            73001,
            73,
            &[
                "no", "no", "yes", "no", "no", "no", "no", "no", "no", "nope",
            ],
        );
        second = second.replace("\"answer_id\": 10}", "\"answer_id\": 0}");
        let a = write(
            dir.path(),
            &vqa_annotations_file("val2014"),
            &annotations(&second),
        );
        assert!(q.ends_with("v2_OpenEnded_mscoco_val2014_questions.json"));
        assert!(a.ends_with("v2_mscoco_val2014_annotations.json"));
        let rows = read_vqa(&q, &a).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            VqaQuestion {
                question_id: 42000,
                image_id: 42,
                question: "What color is the bus?".into(),
                question_type: "what color is the".into(),
                answer_type: "other".into(),
                multiple_choice_answer: "red".into(),
                answers: vec!["red".to_string(); 10],
            }
        );
        assert_eq!(rows[1].question_id, 73001);
        assert_eq!(rows[1].answers[0], "nope");
        assert_eq!(rows[1].answers[3], "yes");
        assert_eq!(rows[1].answers.len(), 10);
    }

    #[test]
    fn missing_annotation_and_short_answers_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let q = write(dir.path(), "q.json", QUESTIONS);

        let other = annotation(99, 73, &["no"; 10]);
        let a = write(dir.path(), "a.json", &annotations(&other));
        let err = read_vqa(&q, &a).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: no annotation of question 73001 (from {})",
                a.display(),
                q.display()
            )
        );

        let short = annotation(73001, 73, &["no"; 9]);
        let a = write(dir.path(), "a.json", &annotations(&short));
        let err = read_vqa(&q, &a).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: question 73001 has 9 answers, expected 10", a.display())
        );

        let moved = annotation(73001, 74, &["no"; 10]);
        let a = write(dir.path(), "a.json", &annotations(&moved));
        let err = read_vqa(&q, &a).unwrap_err().to_string();
        assert!(
            err.contains("question 73001 is on image 74 here but on image 73"),
            "{err}"
        );

        // A question without its text is serde's error, at its position.
        let bad = write(
            dir.path(),
            "bad.json",
            "{\"questions\": [\n{\"image_id\": 1, \"question_id\": 2}\n]}",
        );
        let err = read_vqa(&bad, &a).unwrap_err();
        assert!(matches!(err, VlDataError::Json { line: 2, .. }), "{err}");
        assert!(
            err.to_string().contains("missing field `question`"),
            "{err}"
        );
    }
}
