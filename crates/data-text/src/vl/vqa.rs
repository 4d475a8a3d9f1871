//! VQAv2's official files: `v2_OpenEnded_mscoco_<split>_questions.json` (`questions: [{image_id,
//! question, question_id}]`) and `v2_mscoco_<split>_annotations.json` (`annotations:
//! [{question_id, image_id, question_type, answer_type, multiple_choice_answer, answers: [{answer,
//! answer_confidence, answer_id}] x 10}]`), `<split>` being `train2014` or `val2014` (`test2015`
//! has no annotations). Other top-level keys (`info`, `license`, ...) are ignored.
//!
//! [`read_vqa`] joins the two on `question_id`, in the questions file's order. A question without
//! an annotation, two annotations of one question, an annotation whose image differs from its
//! question's, or one without exactly 10 answers is an error naming the files and the question.
//!
//! VL-T5's Karpathy split of VQAv2 (what VL-T5 and VL-Adapter train and test on; train2014 and
//! most of val2014 for training, 5,000-image halves of the rest for validation and test):
//! `karpathy_{train,val,test}.json`, a list of `{img_id: "COCO_<train2014|val2014>_<12 digits>",
//! question_id, sent, question_type, answer_type, label: {answer: score}}`. [`read_vqa_karpathy`]
//! keeps the file's order and takes each question's ten answers from the official annotation
//! files (as VL-T5's evaluator does), so it scores like the official split.

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

/// The question list of a Karpathy split (`train`, `val`, `test`).
pub fn vqa_karpathy_file(split: &str) -> String {
    format!("karpathy_{split}.json")
}

/// A question of VL-T5's Karpathy split, with the COCO folder of its image (`train2014` or
/// `val2014`, from its `img_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KarpathyVqaQuestion {
    pub question: VqaQuestion,
    pub image_folder: String,
}

#[derive(Deserialize)]
struct RawKarpathyQuestion {
    img_id: String,
    question_id: u64,
    sent: String,
}

/// Reads a Karpathy split file and joins each question with its annotation in `annotations`
/// (the official train2014 and val2014 annotation files). A question without an annotation, an
/// `img_id` not of the form `COCO_<folder>_<digits>`, or one naming another image than the
/// annotation's is an error naming the files and the question.
pub fn read_vqa_karpathy(
    split_file: &Path,
    annotations: &[&Path],
) -> Result<Vec<KarpathyVqaQuestion>> {
    let raw: Vec<RawKarpathyQuestion> = read_json(split_file)?;
    let mut by_id: HashMap<u64, RawAnnotation> = HashMap::new();
    for file in annotations {
        let AnnotationsFile { annotations } = read_json(file)?;
        for a in annotations {
            if a.answers.len() != VQA_ANSWERS {
                return Err(VlDataError::bad(
                    file,
                    format!(
                        "question {} has {} answers, expected {VQA_ANSWERS}",
                        a.question_id,
                        a.answers.len()
                    ),
                ));
            }
            by_id.insert(a.question_id, a);
        }
    }
    let searched = || {
        annotations
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    raw.into_iter()
        .map(|q| {
            let parsed = q
                .img_id
                .strip_prefix("COCO_")
                .and_then(|rest| rest.rsplit_once('_'))
                .and_then(|(folder, digits)| Some((folder, digits.parse::<u64>().ok()?)));
            let Some((folder, image_id)) = parsed else {
                return Err(VlDataError::bad(
                    split_file,
                    format!(
                        "question {}: img_id {:?} is not COCO_<folder>_<image id>",
                        q.question_id, q.img_id
                    ),
                ));
            };
            let Some(mut a) = by_id.remove(&q.question_id) else {
                return Err(VlDataError::bad(
                    split_file,
                    format!(
                        "question {} has no annotation in {}",
                        q.question_id,
                        searched()
                    ),
                ));
            };
            if a.image_id != image_id {
                return Err(VlDataError::bad(
                    split_file,
                    format!(
                        "question {} is on image {image_id} here but on image {} in the annotations",
                        q.question_id, a.image_id
                    ),
                ));
            }
            a.answers.sort_by_key(|x| x.answer_id);
            Ok(KarpathyVqaQuestion {
                question: VqaQuestion {
                    question_id: q.question_id,
                    image_id,
                    question: q.sent,
                    question_type: a.question_type,
                    answer_type: a.answer_type,
                    multiple_choice_answer: a.multiple_choice_answer,
                    answers: a.answers.into_iter().map(|x| x.answer).collect(),
                },
                image_folder: folder.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vl::write;

    /// A Karpathy split takes its questions from its own file and their answers from the
    /// official annotations, whichever file holds them; bad ids are named.
    #[test]
    fn karpathy_split_joins_the_official_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let val = write(
            dir.path(),
            "v2_mscoco_val2014_annotations.json",
            &annotations(&annotation(73001, 73, &["no"; 10])),
        );
        let train = write(
            dir.path(),
            "v2_mscoco_train2014_annotations.json",
            &format!(
                "{{\"annotations\": [{}]}}",
                annotation(9000, 9, &["two"; 10])
            ),
        );
        let split = write(
            dir.path(),
            &vqa_karpathy_file("test"),
            r#"[{"answer_type": "other", "img_id": "COCO_val2014_000000000073", "label": {"no": 1},
                 "question_id": 73001, "question_type": "is it", "sent": "Is it raining?"},
                {"answer_type": "number", "img_id": "COCO_train2014_000000000009", "label": {"2": 1},
                 "question_id": 9000, "question_type": "how many", "sent": "How many dogs?"}]"#,
        );
        let read = read_vqa_karpathy(&split, &[&train, &val]).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].image_folder, "val2014");
        assert_eq!(read[0].question.image_id, 73);
        assert_eq!(read[0].question.question, "Is it raining?");
        assert_eq!(read[0].question.answers, vec!["no"; 10]);
        assert_eq!(read[1].image_folder, "train2014");
        assert_eq!(read[1].question.multiple_choice_answer, "two");

        let bad = write(
            dir.path(),
            "karpathy_val.json",
            r#"[{"img_id": "val2014_73", "question_id": 73001, "sent": "Is it raining?"}]"#,
        );
        let err = read_vqa_karpathy(&bad, &[&train, &val])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("img_id \"val2014_73\" is not COCO_<folder>_<image id>"),
            "{err}"
        );
        let missing = write(
            dir.path(),
            "karpathy_train.json",
            r#"[{"img_id": "COCO_val2014_000000000073", "question_id": 5, "sent": "?"}]"#,
        );
        let err = read_vqa_karpathy(&missing, &[&train, &val])
            .unwrap_err()
            .to_string();
        assert!(err.contains("question 5 has no annotation in"), "{err}");
    }

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
