//! Hugging Face parquet copies of the vision-language datasets, read into the same records as the
//! JSON readers, each image with its encoded bytes (the copies store images inline):
//!
//! | copy | files under the task folder | columns read |
//! |---|---|---|
//! | `lmms-lab/VQAv2` | `data/<split>-*.parquet` (`validation` = val2014) | `question_id`, `image_id`, `question`, `question_type`, `answer_type`, `multiple_choice_answer`, `answers` (list of `{answer, ..}`), `image` |
//! | `lmms-lab/GQA` | `<s>_balanced_instructions/<s>-*.parquet` and `<s>_balanced_images/<s>-*.parquet` | instructions: `id`, `imageId`, `question`, `answer`, `types.structural` when present; images: `id`, `image` |
//! | `lmms-lab/flickr30k` | `data/test-*.parquet` (all 31,783 images) | `filename`, `img_id`, `caption` (list of 5), `image` |
//!
//! [`shards`] finds a split's files. `image` is the Hugging Face `Image` feature (a struct
//! `{bytes, path}`) or plain binary. Other columns are ignored; a missing one is an error that
//! lists the file's columns, and a null value one that names the file and row (rows counted from 0
//! within each file). An image stored on many rows (VQAv2 repeats it on each of its questions) is
//! kept once, from its first row ([`EncodedImage::origin`]). Answers keep the order the file gives.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, LargeBinaryArray, RecordBatch, StringArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::captions::CaptionImage;
use super::gqa::{id_order, GqaQuestion};
use super::vqa::{VqaQuestion, VQA_ANSWERS};
use super::{Result, VlDataError};

/// One image's encoded file (PNG, JPEG, ...) as a parquet row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedImage {
    /// The dataset's image id (VQAv2's COCO id, GQA's `imageId`, Flickr30k's file name).
    pub id: String,
    /// Where the bytes were read: `<file> row <n>`.
    pub origin: String,
    pub bytes: Arc<[u8]>,
}

/// The parquet files of split `split` in folder `dir`, sorted: the first of
/// `<dir>/<split>-*.parquet` (the hub's shards), `<dir>/<split>.parquet` and
/// `<dir>/<split>/*.parquet` (the hub's converted copies) that has any; empty when none does.
pub fn shards(dir: &Path, split: &str) -> Vec<PathBuf> {
    let listed = |folder: &Path, keep: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".parquet") && keep(n))
            })
            .collect();
        files.sort();
        files
    };
    let dash = format!("{split}-");
    let single = format!("{split}.parquet");
    [
        listed(dir, &|name| name.starts_with(&dash)),
        listed(dir, &|name| name == single),
        listed(&dir.join(split), &|_| true),
    ]
    .into_iter()
    .find(|files| !files.is_empty())
    .unwrap_or_default()
}

/// The patterns [`shards`] tries, for messages about missing data.
pub fn shard_patterns(dir: &Path, split: &str) -> String {
    format!(
        "{0}/{split}-*.parquet, {0}/{split}.parquet or {0}/{split}/*.parquet",
        dir.display()
    )
}

fn parquet_error(path: &Path, row: Option<usize>, reason: impl Into<String>) -> VlDataError {
    VlDataError::Parquet {
        path: path.to_path_buf(),
        row,
        reason: reason.into(),
    }
}

/// Calls `each` with every record batch of `path` holding columns `required` (an error when one
/// is missing) and those of `optional` the file has, and the file row of the batch's first row.
fn for_each_batch(
    path: &Path,
    required: &[&str],
    optional: &[&str],
    mut each: impl FnMut(&Batch<'_>) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => VlDataError::Missing {
            path: path.to_path_buf(),
        },
        _ => VlDataError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| parquet_error(path, None, format!("not a parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let mut roots = Vec::new();
    for name in required {
        let index = schema.index_of(name).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            parquet_error(
                path,
                None,
                format!("no column `{name}` (the file has: {})", names.join(", ")),
            )
        })?;
        roots.push(index);
    }
    roots.extend(
        optional
            .iter()
            .filter_map(|name| schema.index_of(name).ok()),
    );
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(256)
        .build()
        .map_err(|e| parquet_error(path, None, e.to_string()))?;
    let mut first_row = 0;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_error(path, Some(first_row), e.to_string()))?;
        let rows = batch.num_rows();
        each(&Batch {
            path,
            batch,
            first_row,
        })?;
        first_row += rows;
    }
    Ok(())
}

/// One record batch of a file, with typed column accessors whose errors name the file and row.
struct Batch<'a> {
    path: &'a Path,
    batch: RecordBatch,
    first_row: usize,
}

impl Batch<'_> {
    fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn row(&self, i: usize) -> usize {
        self.first_row + i
    }

    /// `<file> row <n>` of batch row `i`, for messages about rows of other files.
    fn place(&self, i: usize) -> String {
        format!("{} row {}", self.path.display(), self.row(i))
    }

    fn error(&self, i: usize, reason: impl Into<String>) -> VlDataError {
        parquet_error(self.path, Some(self.row(i)), reason)
    }

    fn column(&self, name: &str) -> Option<&ArrayRef> {
        self.batch.column_by_name(name)
    }

    fn required(&self, name: &str) -> Result<&ArrayRef> {
        self.column(name)
            .ok_or_else(|| parquet_error(self.path, None, format!("no column `{name}`")))
    }

    /// Column `name`'s values as text: a string column, or an integer one (ids) when `ids`.
    fn texts(&self, name: &str, ids: bool) -> Result<Vec<String>> {
        let strings = self.as_strings(name, self.required(name)?, ids)?;
        (0..self.rows())
            .map(|i| {
                if strings.is_null(i) {
                    Err(self.error(i, format!("`{name}` is null")))
                } else {
                    Ok(strings.value(i).to_string())
                }
            })
            .collect()
    }

    fn as_strings(&self, name: &str, array: &ArrayRef, ids: bool) -> Result<StringArray> {
        let accepted = match array.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
            t => ids && t.is_integer(),
        };
        if !accepted {
            return Err(parquet_error(
                self.path,
                None,
                format!("`{name}` holds {}, not text", array.data_type()),
            ));
        }
        let cast = arrow::compute::cast(array, &DataType::Utf8)
            .map_err(|e| parquet_error(self.path, None, format!("`{name}`: {e}")))?;
        Ok(cast.as_string::<i32>().clone())
    }

    /// Each row's list of strings, from a list column (`field: None`) or from field `field` of a
    /// list-of-structs column.
    fn text_lists(&self, name: &str, field: Option<&str>) -> Result<Vec<Vec<String>>> {
        let column = self.required(name)?;
        let (offsets, values): (Vec<usize>, ArrayRef) = match column.data_type() {
            DataType::List(_) => {
                let list = column.as_list::<i32>();
                let offsets = list.value_offsets().iter().map(|&o| o as usize).collect();
                (offsets, list.values().clone())
            }
            DataType::LargeList(_) => {
                let list = column.as_list::<i64>();
                let offsets = list.value_offsets().iter().map(|&o| o as usize).collect();
                (offsets, list.values().clone())
            }
            other => {
                return Err(parquet_error(
                    self.path,
                    None,
                    format!("`{name}` holds {other}, not a list"),
                ))
            }
        };
        let (label, values) = match field {
            None => (name.to_string(), values),
            Some(field) => {
                let label = format!("{name}.{field}");
                let inner = values
                    .as_struct_opt()
                    .and_then(|s| s.column_by_name(field))
                    .ok_or_else(|| {
                        parquet_error(
                            self.path,
                            None,
                            format!("`{name}` is not a list of structs with a `{field}` field"),
                        )
                    })?;
                (label, inner.clone())
            }
        };
        let strings = self.as_strings(&label, &values, false)?;
        (0..self.rows())
            .map(|i| {
                if column.is_null(i) {
                    return Err(self.error(i, format!("`{name}` is null")));
                }
                (offsets[i]..offsets[i + 1])
                    .map(|j| {
                        if strings.is_null(j) {
                            Err(self.error(i, format!("a value of `{label}` is null")))
                        } else {
                            Ok(strings.value(j).to_string())
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Field `field` of struct column `name` as text, when the file has the column.
    fn struct_texts(&self, name: &str, field: &str) -> Result<Option<Vec<String>>> {
        let Some(column) = self.column(name) else {
            return Ok(None);
        };
        let inner = column
            .as_struct_opt()
            .and_then(|s| s.column_by_name(field))
            .ok_or_else(|| {
                parquet_error(
                    self.path,
                    None,
                    format!("`{name}` is not a struct with a `{field}` field"),
                )
            })?;
        let strings = self.as_strings(&format!("{name}.{field}"), inner, false)?;
        Ok(Some(
            (0..self.rows())
                .map(|i| {
                    if column.is_null(i) || strings.is_null(i) {
                        String::new()
                    } else {
                        strings.value(i).to_string()
                    }
                })
                .collect(),
        ))
    }

    /// Column `name`'s encoded images.
    fn images(&self, name: &str) -> Result<ImageColumn> {
        let column = self.required(name)?;
        let (bytes, nulls) = match column.data_type() {
            DataType::Struct(_) => {
                let s = column.as_struct();
                let bytes = s.column_by_name("bytes").ok_or_else(|| {
                    parquet_error(
                        self.path,
                        None,
                        format!("image column `{name}` is a struct without a `bytes` field"),
                    )
                })?;
                (bytes.clone(), s.nulls().cloned())
            }
            _ => (column.clone(), None),
        };
        let bytes = arrow::compute::cast(&bytes, &DataType::LargeBinary).map_err(|e| {
            parquet_error(
                self.path,
                None,
                format!("image column `{name}` does not hold encoded bytes: {e}"),
            )
        })?;
        Ok(ImageColumn {
            bytes: bytes.as_binary::<i64>().clone(),
            nulls,
        })
    }

    /// The encoded image of row `i`, kept as `id` (an error when the row has none).
    fn image(&self, column: &ImageColumn, i: usize, id: &str) -> Result<EncodedImage> {
        let absent = column.nulls.as_ref().is_some_and(|n| n.is_null(i)) || column.bytes.is_null(i);
        if absent {
            return Err(self.error(i, format!("image {id} has no bytes")));
        }
        Ok(EncodedImage {
            id: id.to_string(),
            origin: format!("{} row {}", self.path.display(), self.row(i)),
            bytes: Arc::from(column.bytes.value(i)),
        })
    }
}

struct ImageColumn {
    bytes: LargeBinaryArray,
    nulls: Option<NullBuffer>,
}

/// Images in the order first seen, one per id.
#[derive(Default)]
struct ImageSet {
    images: Vec<EncodedImage>,
    seen: HashSet<String>,
}

impl ImageSet {
    fn wants(&self, id: &str) -> bool {
        !self.seen.contains(id)
    }

    fn add(&mut self, image: EncodedImage) {
        if self.seen.insert(image.id.clone()) {
            self.images.push(image);
        }
    }
}

/// Reads `lmms-lab/VQAv2`-style shards: its questions (file order) and their images, once each.
pub fn read_vqa_parquet(files: &[PathBuf]) -> Result<(Vec<VqaQuestion>, Vec<EncodedImage>)> {
    let mut questions = Vec::new();
    let mut images = ImageSet::default();
    let mut seen_questions = HashMap::new();
    for path in files {
        let columns = [
            "question_id",
            "image_id",
            "question",
            "question_type",
            "answer_type",
            "multiple_choice_answer",
            "answers",
            "image",
        ];
        for_each_batch(path, &columns, &[], |batch| {
            let parse = |name: &str| -> Result<Vec<u64>> {
                batch
                    .texts(name, true)?
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.parse()
                            .map_err(|_| batch.error(i, format!("`{name}` {v:?} is not an id")))
                    })
                    .collect()
            };
            let question_ids = parse("question_id")?;
            let image_ids = parse("image_id")?;
            let question = batch.texts("question", false)?;
            let question_type = batch.texts("question_type", false)?;
            let answer_type = batch.texts("answer_type", false)?;
            let multiple_choice = batch.texts("multiple_choice_answer", false)?;
            let answers = batch.text_lists("answers", Some("answer"))?;
            let image_column = batch.images("image")?;
            for i in 0..batch.rows() {
                let id = question_ids[i];
                if let Some(first) = seen_questions.insert(id, batch.place(i)) {
                    return Err(batch.error(i, format!("question {id} again (first at {first})")));
                }
                if answers[i].len() != VQA_ANSWERS {
                    return Err(batch.error(
                        i,
                        format!(
                            "question {id} has {} answers, expected {VQA_ANSWERS}",
                            answers[i].len()
                        ),
                    ));
                }
                let image_id = image_ids[i].to_string();
                if images.wants(&image_id) {
                    images.add(batch.image(&image_column, i, &image_id)?);
                }
                questions.push(VqaQuestion {
                    question_id: id,
                    image_id: image_ids[i],
                    question: question[i].clone(),
                    question_type: question_type[i].clone(),
                    answer_type: answer_type[i].clone(),
                    multiple_choice_answer: multiple_choice[i].clone(),
                    answers: answers[i].clone(),
                });
            }
            Ok(())
        })?;
    }
    Ok((questions, images.images))
}

/// Reads `lmms-lab/GQA`-style instruction shards (questions sorted by id, as
/// [`super::read_gqa_balanced`]) and, from the image shards, the images they show. A question
/// whose image is in no image shard is an error.
pub fn read_gqa_parquet(
    instructions: &[PathBuf],
    image_files: &[PathBuf],
) -> Result<(Vec<GqaQuestion>, Vec<EncodedImage>)> {
    let mut questions = Vec::new();
    // Each shown image, with the instruction file that first shows it (for messages).
    let mut shown_in: HashMap<String, PathBuf> = HashMap::new();
    for path in instructions {
        for_each_batch(
            path,
            &["id", "imageId", "question", "answer"],
            &["types"],
            |batch| {
                let ids = batch.texts("id", true)?;
                let image_ids = batch.texts("imageId", true)?;
                let question = batch.texts("question", false)?;
                let answer = batch.texts("answer", false)?;
                let structural = batch.struct_texts("types", "structural")?;
                for i in 0..batch.rows() {
                    shown_in
                        .entry(image_ids[i].clone())
                        .or_insert_with(|| path.clone());
                    questions.push(GqaQuestion {
                        question_id: ids[i].clone(),
                        image_id: image_ids[i].clone(),
                        question: question[i].clone(),
                        answer: answer[i].clone(),
                        structural: structural
                            .as_ref()
                            .map(|s| s[i].clone())
                            .unwrap_or_default(),
                    });
                }
                Ok(())
            },
        )?;
    }
    questions.sort_by(|a, b| id_order(&a.question_id, &b.question_id));
    let mut images = ImageSet::default();
    for path in image_files {
        for_each_batch(path, &["id", "image"], &[], |batch| {
            let ids = batch.texts("id", true)?;
            let column = batch.images("image")?;
            for (i, id) in ids.iter().enumerate() {
                if shown_in.contains_key(id) && images.wants(id) {
                    images.add(batch.image(&column, i, id)?);
                }
            }
            Ok(())
        })?;
    }
    if let Some(question) = questions.iter().find(|q| images.wants(&q.image_id)) {
        let searched: Vec<String> = image_files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        return Err(VlDataError::bad(
            &shown_in[&question.image_id],
            format!(
                "question {} shows image {}, which is in none of the image files ({})",
                question.question_id,
                question.image_id,
                searched.join(", ")
            ),
        ));
    }
    // Images in the order the sorted questions first show them.
    let mut by_id: HashMap<String, EncodedImage> = images
        .images
        .into_iter()
        .map(|image| (image.id.clone(), image))
        .collect();
    let ordered = questions
        .iter()
        .filter_map(|q| by_id.remove(&q.image_id))
        .collect();
    Ok((questions, ordered))
}

/// Reads `lmms-lab/flickr30k`-style shards: each kept image (`keep(file name)`) with its captions,
/// as a [`CaptionImage`] of split `test` (the copy holds every image in one split) whose path is
/// the file name, and its bytes.
pub fn read_flickr30k_parquet(
    files: &[PathBuf],
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<(CaptionImage, EncodedImage)>> {
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for path in files {
        for_each_batch(
            path,
            &["filename", "img_id", "caption", "image"],
            &[],
            |batch| {
                let names = batch.texts("filename", false)?;
                let ids = batch.texts("img_id", true)?;
                let captions = batch.text_lists("caption", None)?;
                let column = batch.images("image")?;
                for i in 0..batch.rows() {
                    let name = &names[i];
                    if !keep(name) {
                        continue;
                    }
                    if let Some(first) = seen.insert(name.clone(), batch.place(i)) {
                        return Err(
                            batch.error(i, format!("image {name} again (first at {first})"))
                        );
                    }
                    let id = ids[i].parse().map_err(|_| {
                        batch.error(i, format!("`img_id` {:?} is not an id", ids[i]))
                    })?;
                    let texts: Vec<String> =
                        captions[i].iter().map(|c| c.trim().to_string()).collect();
                    if texts.is_empty() {
                        return Err(batch.error(i, format!("image {name} has no captions")));
                    }
                    out.push((
                        CaptionImage {
                            id,
                            path: name.clone(),
                            split: "test".into(),
                            captions: texts,
                        },
                        batch.image(&column, i, name)?,
                    ));
                }
                Ok(())
            },
        )?;
    }
    Ok(out)
}
