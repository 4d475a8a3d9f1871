//! Vision-language tasks as examples a text generator trains on and is scored by: each task's
//! published files read into (images, prompt, target) triples, and the decoded answers scored by
//! the task's official metric.
//!
//! Layout of data on disk (`data.format: vision-language`), one folder per task under the data
//! root, `<root>/<task>/`, read by the task's `vl_task`; the protocol's split names (`train`,
//! `val`, `test`) map to each dataset's own:
//!
//! | `vl_task` | annotation files | images | `train` / `val` / `test` |
//! |---|---|---|---|
//! | `vqa` | `v2_OpenEnded_mscoco_<s>_questions.json`, `v2_mscoco_<s>_annotations.json` | `images/<s>/COCO_<s>_<image id, 12 digits>.jpg` | `train2014` / `val2014` / `val2014` |
//! | `gqa` | `<s>_balanced_questions.json` | `images/<imageId>.jpg` | `train` / `val` / `testdev` |
//! | `nlvr2` | `<s>.json` (JSON lines) | `images/<s>/<identifier's pair>-img0.png`, `-img1.png` | `train` / `dev` / `test1` |
//! | `captions` | `dataset_coco.json` (Karpathy; `dataset_flickr30k.json` also read) | `images/<filepath>/<filename>` | `train` (with `restval`) / `val` / `test` |
//!
//! Images may also be `.png` where the table says `.jpg` (the generated demo writes PNG).
//!
//! Prompts follow VL-T5: `vqa: <question>`, `gqa: <question>`, `nlvr: <statement>`, `caption:`.
//! Targets: VQA's most common answer (`multiple_choice_answer`), GQA's answer, `true`/`false`,
//! and for captioning every reference caption of a training image (one example each); an
//! evaluation image is one example scored against all its references.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peftbench_data_text::vl::{
    captions::in_split, gqa_questions_file, read_gqa_balanced, read_karpathy_captions, read_nlvr2,
    read_vqa, vqa_annotations_file, vqa_questions_file,
};
use peftbench_metrics::captions::{caption_scores, tokenize_caption, CaptionExample};
use peftbench_metrics::nlvr2::{nlvr2_scores, Nlvr2Example};
use peftbench_metrics::vqa::{vqa_accuracy, VqaQuestion, VqaVariant};
use peftbench_suite::VlTask;

/// What scoring an example needs besides the prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    Vqa {
        answers: Vec<String>,
        answer_type: String,
        question_type: String,
    },
    Gqa {
        answer: String,
    },
    Nlvr2 {
        identifier: String,
        label: bool,
    },
    Captions {
        captions: Vec<String>,
    },
}

/// One example: the images it shows (one, or NLVR2's two, as indices into its split's
/// [`VlSplit::images`]), the prompt, and the text to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct VlExample {
    pub images: Vec<usize>,
    pub prompt: String,
    pub target: String,
    pub reference: Reference,
}

/// One split of one task: its distinct image files and its examples.
#[derive(Debug, Clone, PartialEq)]
pub struct VlSplit {
    pub images: Vec<PathBuf>,
    pub examples: Vec<VlExample>,
}

/// `text` tokenised with the tokenizer's special tokens, cut to `limit` tokens with its last one
/// (the end token) kept last.
pub fn tokenise(
    tokenizer: &tokenizers::Tokenizer,
    text: &str,
    limit: usize,
) -> anyhow::Result<Vec<u32>> {
    let encoding = tokenizer
        .encode(text, true)
        .map_err(|e| anyhow::anyhow!("tokenising {text:?}: {e}"))?;
    let mut ids = encoding.get_ids().to_vec();
    if ids.len() > limit {
        let end = *ids.last().expect("longer than the limit");
        ids.truncate(limit - 1);
        ids.push(end);
    }
    Ok(ids)
}

/// The dataset's own split name for a protocol split (see the module docs).
pub fn file_split(task: VlTask, split: &str) -> anyhow::Result<&'static str> {
    let names: [(&str, &'static str); 3] = match task {
        VlTask::Vqa => [
            ("train", "train2014"),
            ("val", "val2014"),
            ("test", "val2014"),
        ],
        VlTask::Gqa => [("train", "train"), ("val", "val"), ("test", "testdev")],
        VlTask::Nlvr2 => [("train", "train"), ("val", "dev"), ("test", "test1")],
        VlTask::Captions => [("train", "train"), ("val", "val"), ("test", "test")],
    };
    names
        .iter()
        .find(|(protocol, _)| *protocol == split)
        .map(|(_, own)| *own)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "split `{split}` is not a vision-language split; use train, val or test (a {} task reads them as {})",
                task.name(),
                names.iter().map(|(p, o)| format!("{p} = {o}")).collect::<Vec<_>>().join(", ")
            )
        })
}

/// `path`, or the same path ending `.png` when only that exists.
fn image_file(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        return Ok(path);
    }
    let png = path.with_extension("png");
    if png.is_file() {
        return Ok(png);
    }
    anyhow::bail!("image not found: looked for {} (and .png)", path.display())
}

/// Images by path, each listed once, in the order first seen.
#[derive(Default)]
struct ImageIndex {
    paths: Vec<PathBuf>,
    index: BTreeMap<PathBuf, usize>,
}

impl ImageIndex {
    fn add(&mut self, path: PathBuf) -> usize {
        let next = self.paths.len();
        *self.index.entry(path.clone()).or_insert_with(|| {
            self.paths.push(path);
            next
        })
    }
}

/// Reads split `split` (`train`, `val` or `test`) of task folder `dir` as a `task`; `training`
/// splits give captioning one example per reference.
pub fn read_split(
    task: VlTask,
    dir: &Path,
    split: &str,
    training: bool,
) -> anyhow::Result<VlSplit> {
    let own = file_split(task, split)?;
    let images_dir = dir.join("images");
    let mut images = ImageIndex::default();
    let mut examples = Vec::new();
    match task {
        VlTask::Vqa => {
            let questions = read_vqa(
                &dir.join(vqa_questions_file(own)),
                &dir.join(vqa_annotations_file(own)),
            )?;
            for q in questions {
                let path = image_file(
                    images_dir
                        .join(own)
                        .join(format!("COCO_{own}_{:012}.jpg", q.image_id)),
                )?;
                examples.push(VlExample {
                    images: vec![images.add(path)],
                    prompt: format!("vqa: {}", q.question),
                    target: q.multiple_choice_answer.clone(),
                    reference: Reference::Vqa {
                        answers: q.answers,
                        answer_type: q.answer_type,
                        question_type: q.question_type,
                    },
                });
            }
        }
        VlTask::Gqa => {
            for q in read_gqa_balanced(&dir.join(gqa_questions_file(own)))? {
                let path = image_file(images_dir.join(format!("{}.jpg", q.image_id)))?;
                examples.push(VlExample {
                    images: vec![images.add(path)],
                    prompt: format!("gqa: {}", q.question),
                    target: q.answer.clone(),
                    reference: Reference::Gqa { answer: q.answer },
                });
            }
        }
        VlTask::Nlvr2 => {
            for e in read_nlvr2(&dir.join(format!("{own}.json")))? {
                let left = image_file(images_dir.join(own).join(&e.left_image))?;
                let right = image_file(images_dir.join(own).join(&e.right_image))?;
                examples.push(VlExample {
                    images: vec![images.add(left), images.add(right)],
                    prompt: format!("nlvr: {}", e.sentence),
                    target: if e.label { "true" } else { "false" }.into(),
                    reference: Reference::Nlvr2 {
                        identifier: e.identifier,
                        label: e.label,
                    },
                });
            }
        }
        VlTask::Captions => {
            let file = ["dataset_coco.json", "dataset_flickr30k.json"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.is_file())
                .unwrap_or_else(|| dir.join("dataset_coco.json"));
            for image in read_karpathy_captions(&file, None)? {
                if !in_split(own, &image.split) {
                    continue;
                }
                let index = images.add(image_file(images_dir.join(&image.path))?);
                let reference = Reference::Captions {
                    captions: image.captions.clone(),
                };
                let targets = if training {
                    image.captions.clone()
                } else {
                    image.captions.iter().take(1).cloned().collect()
                };
                for target in targets {
                    examples.push(VlExample {
                        images: vec![index],
                        prompt: "caption:".into(),
                        target,
                        reference: reference.clone(),
                    });
                }
            }
        }
    }
    anyhow::ensure!(
        !examples.is_empty(),
        "{}: split `{split}` ({own}) of this {} task has no examples",
        dir.display(),
        task.name()
    );
    Ok(VlSplit {
        images: images.paths,
        examples,
    })
}

/// A task's scores from its examples' decoded `predictions` (same order), as fractions like every
/// record's metrics (reports print them x100: CIDEr-D's pycocoevalcap value 1.0 is the "100"
/// papers print): the headline first (what [`VlTask::primary_metric`] names), then the others.
pub fn score(
    task: VlTask,
    examples: &[VlExample],
    predictions: &[String],
) -> anyhow::Result<Vec<(String, f64)>> {
    anyhow::ensure!(
        examples.len() == predictions.len(),
        "{} predictions for {} examples",
        predictions.len(),
        examples.len()
    );
    let pairs = examples.iter().zip(predictions);
    Ok(match task {
        VlTask::Vqa => {
            let questions: Vec<VqaQuestion> = pairs
                .filter_map(|(e, p)| match &e.reference {
                    Reference::Vqa {
                        answers,
                        answer_type,
                        question_type,
                    } => Some(VqaQuestion {
                        answers: answers.clone(),
                        answer_type: answer_type.clone(),
                        question_type: question_type.clone(),
                        prediction: p.clone(),
                    }),
                    _ => None,
                })
                .collect();
            let accuracy = vqa_accuracy(&questions, VqaVariant::Pre2021);
            let mut scores = vec![(task.primary_metric().to_string(), accuracy.overall)];
            for (answer_type, value) in &accuracy.per_answer_type {
                let name = answer_type.replace('/', "_");
                scores.push((format!("vqa_accuracy_{name}"), *value));
            }
            scores
        }
        VlTask::Gqa => {
            let answers: Vec<&str> = examples
                .iter()
                .map(|e| match &e.reference {
                    Reference::Gqa { answer } => answer.as_str(),
                    _ => "",
                })
                .collect();
            let predicted: Vec<&str> = predictions.iter().map(String::as_str).collect();
            vec![(
                task.primary_metric().into(),
                peftbench_metrics::gqa::gqa_accuracy(&predicted, &answers),
            )]
        }
        VlTask::Nlvr2 => {
            let scored: Vec<Nlvr2Example> = pairs
                .filter_map(|(e, p)| match &e.reference {
                    Reference::Nlvr2 { identifier, label } => Some(Nlvr2Example {
                        identifier: identifier.clone(),
                        label: *label,
                        prediction: p.trim() == "true",
                    }),
                    _ => None,
                })
                .collect();
            let scores = nlvr2_scores(&scored)?;
            vec![
                (task.primary_metric().into(), scores.accuracy),
                ("nlvr2_consistency".into(), scores.consistency),
            ]
        }
        VlTask::Captions => {
            let scored: Vec<CaptionExample> = pairs
                .filter_map(|(e, p)| match &e.reference {
                    Reference::Captions { captions } => Some(CaptionExample {
                        hypothesis: tokenize_caption(p),
                        references: captions.iter().map(|c| tokenize_caption(c)).collect(),
                    }),
                    _ => None,
                })
                .collect();
            let scores = caption_scores(&scored);
            vec![
                (task.primary_metric().into(), scores.cider_d),
                ("bleu4".into(), scores.bleu[3]),
                ("rouge_l".into(), scores.rouge_l),
            ]
        }
    })
}
