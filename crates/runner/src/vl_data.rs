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
//! | `vqa-karpathy` | VL-T5's `karpathy_<s>.json`, answers from both `v2_mscoco_{train2014,val2014}_annotations.json` | `images/<train2014 or val2014>/<img_id>.jpg` | `train` / `val` / `test` |
//! | `gqa` | `<s>_balanced_questions.json` | `images/<imageId>.jpg` | `train` / `val` / `testdev` |
//! | `nlvr2` | `<s>.json` (JSON lines) | `images/<s>/<identifier's pair>-img0.png`, `-img1.png` | `train` / `dev` / `test1` |
//! | `captions` | `dataset_coco.json` (Karpathy; `dataset_flickr30k.json` also read) | `images/<filepath>/<filename>` | `train` (with `restval`) / `val` / `test` |
//!
//! Images may also be `.png` where the table says `.jpg` (the generated demo writes PNG).
//!
//! The Hugging Face parquet copies with images inline are read in their hub layouts
//! (`peftbench_data_text::vl::parquet`), split by split: a split whose official files are absent
//! is read from a copy in the task folder when one holds it, so a folder may take training data
//! from the official files and evaluation data from a copy.
//!
//! | `vl_task` | copy | files | splits it holds |
//! |---|---|---|---|
//! | `vqa` | `lmms-lab/VQAv2` | `data/validation-*.parquet` | val2014 (so `val` and `test`) |
//! | `gqa` | `lmms-lab/GQA` | `<s>_balanced_instructions/<s>-*.parquet` + `<s>_balanced_images/<s>-*.parquet` | `train`, `testdev` |
//! | `captions` | `lmms-lab/flickr30k` | `data/test-*.parquet` | every image: with `dataset_flickr30k.json` its pixels for Karpathy's splits (when there is no `images/` folder), alone one `test` split of all 31,783 images (lmms-eval's protocol) |
//!
//! NLVR2 is read from its JSON only: its parquet copies have no training split and their columns
//! are not documented here. COCO's Karpathy copy on the hub holds no image bytes.
//!
//! Prompts follow VL-T5: `vqa: <question>`, `gqa: <question>`, `nlvr: <statement>`, `caption:`.
//! Targets: VQA's most common answer (`multiple_choice_answer`), GQA's answer, `true`/`false`,
//! and for captioning every reference caption of a training image (one example each); an
//! evaluation image is one example scored against all its references.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peftbench_data_text::vl::parquet::{
    read_flickr30k_parquet, read_gqa_parquet, read_vqa_parquet, shard_patterns, shards,
    EncodedImage,
};
use peftbench_data_text::vl::{
    gqa_questions_file, read_gqa_balanced, read_karpathy_captions, read_nlvr2, read_vqa,
    read_vqa_karpathy, vqa_annotations_file, vqa_karpathy_file, vqa_questions_file, CaptionImage,
};
use peftbench_data_vision::ImageSource;
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

/// One distinct image: where its pixels are, and the key that names it across splits and tasks
/// (its file's path, or the parquet row its bytes were read from).
#[derive(Debug, Clone)]
pub struct VlImage {
    pub key: String,
    pub source: ImageSource,
}

/// One split of one task: its distinct images, its examples, and the files it was read from.
#[derive(Debug, Clone)]
pub struct VlSplit {
    pub images: Vec<VlImage>,
    pub examples: Vec<VlExample>,
    pub source: String,
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
        VlTask::VqaKarpathy => [("train", "train"), ("val", "val"), ("test", "test")],
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

/// Distinct images, each listed once, in the order first seen.
#[derive(Default)]
struct ImageIndex {
    images: Vec<VlImage>,
    index: BTreeMap<String, usize>,
}

impl ImageIndex {
    fn add(&mut self, image: VlImage) -> usize {
        let next = self.images.len();
        *self.index.entry(image.key.clone()).or_insert_with(|| {
            self.images.push(image);
            next
        })
    }

    fn add_file(&mut self, path: PathBuf) -> usize {
        self.add(VlImage {
            key: path.display().to_string(),
            source: ImageSource::File(path),
        })
    }

    fn add_encoded(&mut self, image: EncodedImage) -> usize {
        self.add(VlImage {
            key: image.origin.clone(),
            source: ImageSource::Encoded {
                origin: image.origin,
                bytes: image.bytes,
            },
        })
    }
}

/// The Hugging Face split name of a dataset split, in the parquet copies' file names.
fn hub_split(own: &str) -> &str {
    match own {
        "train2014" => "train",
        "val2014" => "validation",
        other => other,
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
    let source;
    match task {
        VlTask::Vqa => {
            let questions_file = dir.join(vqa_questions_file(own));
            let annotations_file = dir.join(vqa_annotations_file(own));
            let copy = shards(&dir.join("data"), hub_split(own));
            let questions = if questions_file.is_file() || copy.is_empty() {
                if !questions_file.is_file() && !annotations_file.is_file() {
                    anyhow::bail!(
                        "{}: split `{split}` ({own}) not found: looked for {} and {} (the \
                         official files) and {} (a Hugging Face parquet copy)",
                        dir.display(),
                        questions_file.display(),
                        annotations_file.display(),
                        shard_patterns(&dir.join("data"), hub_split(own))
                    );
                }
                source = format!(
                    "{}, {}",
                    questions_file.display(),
                    annotations_file.display()
                );
                let questions = read_vqa(&questions_file, &annotations_file)?;
                questions
                    .into_iter()
                    .map(|q| {
                        let path = image_file(
                            images_dir
                                .join(own)
                                .join(format!("COCO_{own}_{:012}.jpg", q.image_id)),
                        )?;
                        Ok((images.add_file(path), q))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            } else {
                source = describe_copy(&copy);
                let (questions, encoded) = read_vqa_parquet(&copy)?;
                let rows: BTreeMap<String, usize> = encoded
                    .into_iter()
                    .map(|image| (image.id.clone(), images.add_encoded(image)))
                    .collect();
                questions
                    .into_iter()
                    .map(|q| (rows[&q.image_id.to_string()], q))
                    .collect()
            };
            for (image, q) in questions {
                examples.push(VlExample {
                    images: vec![image],
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
        VlTask::VqaKarpathy => {
            let split_file = dir.join(vqa_karpathy_file(own));
            let annotations = ["train2014", "val2014"].map(|s| dir.join(vqa_annotations_file(s)));
            source = format!(
                "{}, {}, {}",
                split_file.display(),
                annotations[0].display(),
                annotations[1].display()
            );
            for q in read_vqa_karpathy(&split_file, &[&annotations[0], &annotations[1]])? {
                let folder = &q.image_folder;
                let path = image_file(
                    images_dir
                        .join(folder)
                        .join(format!("COCO_{folder}_{:012}.jpg", q.question.image_id)),
                )?;
                let q = q.question;
                examples.push(VlExample {
                    images: vec![images.add_file(path)],
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
            let questions_file = dir.join(gqa_questions_file(own));
            let instructions_dir = dir.join(format!("{own}_balanced_instructions"));
            let images_copy_dir = dir.join(format!("{own}_balanced_images"));
            let instructions = shards(&instructions_dir, own);
            let questions = if questions_file.is_file() || instructions.is_empty() {
                if !questions_file.is_file() {
                    anyhow::bail!(
                        "{}: split `{split}` ({own}) not found: looked for {} (the official \
                         file) and {} (a Hugging Face parquet copy, with its images in {})",
                        dir.display(),
                        questions_file.display(),
                        shard_patterns(&instructions_dir, own),
                        images_copy_dir.display()
                    );
                }
                source = questions_file.display().to_string();
                read_gqa_balanced(&questions_file)?
                    .into_iter()
                    .map(|q| {
                        let path = image_file(images_dir.join(format!("{}.jpg", q.image_id)))?;
                        Ok((images.add_file(path), q))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            } else {
                let image_files = shards(&images_copy_dir, own);
                anyhow::ensure!(
                    !image_files.is_empty(),
                    "{}: the parquet copy's questions have no images: looked for {}",
                    dir.display(),
                    shard_patterns(&images_copy_dir, own)
                );
                source = format!(
                    "{}; {}",
                    describe_copy(&instructions),
                    describe_copy(&image_files)
                );
                let (questions, encoded) = read_gqa_parquet(&instructions, &image_files)?;
                let rows: BTreeMap<String, usize> = encoded
                    .into_iter()
                    .map(|image| (image.id.clone(), images.add_encoded(image)))
                    .collect();
                questions
                    .into_iter()
                    .map(|q| (rows[&q.image_id], q))
                    .collect()
            };
            for (image, q) in questions {
                examples.push(VlExample {
                    images: vec![image],
                    prompt: format!("gqa: {}", q.question),
                    target: q.answer.clone(),
                    reference: Reference::Gqa { answer: q.answer },
                });
            }
        }
        VlTask::Nlvr2 => {
            let file = dir.join(format!("{own}.json"));
            source = file.display().to_string();
            for e in read_nlvr2(&file)? {
                let left = image_file(images_dir.join(own).join(&e.left_image))?;
                let right = image_file(images_dir.join(own).join(&e.right_image))?;
                examples.push(VlExample {
                    images: vec![images.add_file(left), images.add_file(right)],
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
            let (captioned, from) = captioned_images(dir, own, &mut images)?;
            source = from;
            for (index, image) in captioned {
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
        images: images.images,
        examples,
        source,
    })
}

/// `files` as a short description: the first, and how many more.
fn describe_copy(files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        [first, rest @ ..] => format!("{} and {} more shards", first.display(), rest.len()),
        [] => String::new(),
    }
}

/// The captioned images of Karpathy split `own` in captioning folder `dir`, each with its index
/// in `images`, and the files read. Captions and splits come from Karpathy's JSON; the pixels
/// from `images/` when the folder exists, else from a Flickr30k parquet copy (`data/test-*.parquet`,
/// every image). Without the JSON the copy alone gives split `test`: all its images, as
/// lmms-eval scores them.
fn captioned_images(
    dir: &Path,
    own: &str,
    images: &mut ImageIndex,
) -> anyhow::Result<(Vec<(usize, CaptionImage)>, String)> {
    let karpathy = ["dataset_coco.json", "dataset_flickr30k.json"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file());
    let images_dir = dir.join("images");
    let copy = shards(&dir.join("data"), "test");
    let Some(karpathy) = karpathy else {
        anyhow::ensure!(
            !copy.is_empty(),
            "{}: no caption file: looked for {} and {}, and for a Hugging Face parquet copy in {}",
            dir.display(),
            dir.join("dataset_coco.json").display(),
            dir.join("dataset_flickr30k.json").display(),
            shard_patterns(&dir.join("data"), "test")
        );
        anyhow::ensure!(
            own == "test",
            "{}: split `{own}` needs Karpathy's split file (dataset_flickr30k.json or \
             dataset_coco.json) in this folder: the parquet copy {} holds every image in one \
             `test` split",
            dir.display(),
            describe_copy(&copy)
        );
        let read = read_flickr30k_parquet(&copy, &|_| true)?;
        let captioned = read
            .into_iter()
            .map(|(image, bytes)| (images.add_encoded(bytes), image))
            .collect();
        return Ok((captioned, describe_copy(&copy)));
    };
    let wanted: Vec<CaptionImage> = read_karpathy_captions(&karpathy, Some(own))?;
    if images_dir.is_dir() || copy.is_empty() {
        let captioned = wanted
            .into_iter()
            .map(|image| {
                Ok((
                    images.add_file(image_file(images_dir.join(&image.path))?),
                    image,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok((captioned, karpathy.display().to_string()));
    }
    let names: std::collections::HashSet<&str> = wanted.iter().map(|i| i.path.as_str()).collect();
    let mut bytes: BTreeMap<String, EncodedImage> =
        read_flickr30k_parquet(&copy, &|name| names.contains(name))?
            .into_iter()
            .map(|(image, bytes)| (image.path, bytes))
            .collect();
    let captioned = wanted
        .into_iter()
        .map(|image| {
            let encoded = bytes.remove(&image.path).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: image {} of split `{own}` is in no file of the parquet copy {}",
                    karpathy.display(),
                    image.path,
                    describe_copy(&copy)
                )
            })?;
            Ok((images.add_encoded(encoded), image))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((
        captioned,
        format!("{}; {}", karpathy.display(), describe_copy(&copy)),
    ))
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
        VlTask::Vqa | VlTask::VqaKarpathy => {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The parquet copies `ci/fixtures/vl_parquet.py` wrote with the `datasets` library.
    fn copies() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data-text/tests/fixtures/vl_parquet")
    }

    fn encoded(split: &VlSplit) -> bool {
        split
            .images
            .iter()
            .all(|image| matches!(image.source, ImageSource::Encoded { .. }))
    }

    /// A VQA folder holding official training files and the validation copy reads each split
    /// from its own source; the copy's questions share their image's one entry.
    #[test]
    fn vqa_reads_training_from_the_official_files_and_evaluation_from_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("vqa");
        std::fs::create_dir_all(task.join("data")).unwrap();
        std::fs::copy(
            copies().join("vqa/data/validation-00000-of-00001.parquet"),
            task.join("data/validation-00000-of-00001.parquet"),
        )
        .unwrap();
        // Without training files the error names both places it looked.
        let err = read_split(VlTask::Vqa, &task, "train", true).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("v2_OpenEnded_mscoco_train2014_questions.json")
                && text.contains("data/train-*.parquet"),
            "{text}"
        );
        std::fs::write(
            task.join("v2_OpenEnded_mscoco_train2014_questions.json"),
            r#"{"questions": [{"image_id": 9, "question": "What is it?", "question_id": 90}]}"#,
        )
        .unwrap();
        let answers: Vec<String> = (1..=10)
            .map(|i| format!(r#"{{"answer": "cat", "answer_id": {i}}}"#))
            .collect();
        std::fs::write(
            task.join("v2_mscoco_train2014_annotations.json"),
            format!(
                r#"{{"annotations": [{{"question_id": 90, "image_id": 9, "question_type": "what is",
                "answer_type": "other", "multiple_choice_answer": "cat", "answers": [{}]}}]}}"#,
                answers.join(",")
            ),
        )
        .unwrap();
        std::fs::create_dir_all(task.join("images/train2014")).unwrap();
        std::fs::write(
            task.join("images/train2014/COCO_train2014_000000000009.png"),
            b"",
        )
        .unwrap();

        let train = read_split(VlTask::Vqa, &task, "train", true).unwrap();
        assert_eq!(train.examples.len(), 1);
        assert!(matches!(train.images[0].source, ImageSource::File(_)));
        assert!(train
            .source
            .ends_with("v2_mscoco_train2014_annotations.json"));

        let test = read_split(VlTask::Vqa, &task, "test", false).unwrap();
        assert!(encoded(&test));
        assert!(test.source.ends_with("validation-00000-of-00001.parquet"));
        let shown: Vec<Vec<usize>> = test.examples.iter().map(|e| e.images.clone()).collect();
        assert_eq!(shown, [[0], [0], [1], [2]]);
        assert_eq!(test.examples[2].prompt, "vqa: How many dogs?");
        assert_eq!(test.examples[2].target, "2");
        // Answering the most common answer scores as the VQA metric says: "2" against eight
        // "2" counts in full.
        let predictions: Vec<String> = test.examples.iter().map(|e| e.target.clone()).collect();
        let scores = score(VlTask::Vqa, &test.examples, &predictions).unwrap();
        assert_eq!(scores[0], ("vqa_accuracy".to_string(), 1.0));
    }

    /// GQA's copy: questions joined with the images config, in question-id order.
    #[test]
    fn gqa_reads_a_copy_with_its_images_config() {
        let test = read_split(VlTask::Gqa, &copies().join("gqa"), "test", false).unwrap();
        assert!(encoded(&test));
        assert_eq!(test.images.len(), 2);
        let prompts: Vec<&str> = test.examples.iter().map(|e| e.prompt.as_str()).collect();
        assert_eq!(
            prompts,
            [
                "gqa: What color is the cup?",
                "gqa: Is the cup on the left?",
                "gqa: Who is wearing the shirt?"
            ]
        );
        let shown: Vec<Vec<usize>> = test.examples.iter().map(|e| e.images.clone()).collect();
        assert_eq!(shown, [[0], [0], [1]]);
        let err = read_split(VlTask::Gqa, &copies().join("gqa"), "val", false).unwrap_err();
        assert!(
            format!("{err:#}").contains("val_balanced_questions.json"),
            "{err:#}"
        );
    }

    /// Flickr30k's copy: with Karpathy's file it gives the pixels of each split's images; alone it
    /// is one `test` split of every image, and the other splits ask for Karpathy's file.
    #[test]
    fn flickr30k_copy_serves_karpathys_splits_or_stands_alone_as_test() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("flickr30k");
        std::fs::create_dir_all(task.join("data")).unwrap();
        std::fs::copy(
            copies().join("flickr30k/data/test-00000-of-00001.parquet"),
            task.join("data/test-00000-of-00001.parquet"),
        )
        .unwrap();
        let alone = read_split(VlTask::Captions, &task, "test", false).unwrap();
        assert_eq!(alone.images.len(), 2);
        assert!(encoded(&alone));
        let err = read_split(VlTask::Captions, &task, "train", true).unwrap_err();
        assert!(
            format!("{err:#}").contains("needs Karpathy's split file"),
            "{err:#}"
        );

        let sentences = |n: usize| {
            (0..n)
                .map(|k| format!(r#"{{"raw": "caption {k} ."}}"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        std::fs::write(
            task.join("dataset_flickr30k.json"),
            format!(
                r#"{{"dataset": "flickr30k", "images": [
                {{"filename": "1000092795.jpg", "imgid": 0, "split": "train", "sentences": [{}]}},
                {{"filename": "10002456.jpg", "imgid": 1, "split": "test", "sentences": [{}]}}]}}"#,
                sentences(5),
                sentences(5)
            ),
        )
        .unwrap();
        let train = read_split(VlTask::Captions, &task, "train", true).unwrap();
        let test = read_split(VlTask::Captions, &task, "test", false).unwrap();
        assert_eq!((train.images.len(), train.examples.len()), (1, 5));
        assert_eq!((test.images.len(), test.examples.len()), (1, 1));
        assert!(encoded(&train) && encoded(&test));
        assert_ne!(train.images[0].key, test.images[0].key);
        assert!(test.source.contains("dataset_flickr30k.json"));
        let Reference::Captions { captions } = &test.examples[0].reference else {
            panic!("a caption reference")
        };
        assert_eq!(captions.len(), 5);
    }
}
