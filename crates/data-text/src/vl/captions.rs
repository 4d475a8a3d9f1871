//! Karpathy's caption splits of COCO and Flickr30k, `dataset_coco.json` / `dataset_flickr30k.json`:
//! `{images: [{filepath?, filename, imgid, cocoid?, split, sentids, sentences: [{raw, tokens,
//! imgid, sentid}]}], dataset}`. COCO's images carry `filepath` (`train2014` / `val2014`) and
//! `cocoid`; Flickr30k's have neither.
//!
//! [`read_karpathy_captions`] keeps, per image, its id (`cocoid`, else `imgid`), its path
//! (`filepath/filename`, else `filename`), its split as written, and its captions' `raw` text with
//! surrounding whitespace removed (VL-T5 takes `raw.strip()`; `tokens` are ignored), in file order.
//!
//! Split filter: `train` also selects `restval` (COCO's 30,504 validation images that are in
//! neither `val` nor `test`, 5,000 each), as VL-T5 maps `restval` to `train`, giving the usual
//! 113,287 training images; any other name selects exactly that split. An image without captions
//! is an error.

use std::path::Path;

use serde::Deserialize;

use super::{read_json, Result, VlDataError};

/// One image with its reference captions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionImage {
    /// `cocoid` for COCO, `imgid` otherwise.
    pub id: u64,
    /// The image's path under the image root: `filepath/filename`, or `filename` alone.
    pub path: String,
    /// The split as written: `train`, `restval`, `val` or `test`.
    pub split: String,
    /// The captions' `raw` text, trimmed (5 per image; a few COCO images have more).
    pub captions: Vec<String>,
}

#[derive(Deserialize)]
struct Dataset {
    images: Vec<RawImage>,
}

#[derive(Deserialize)]
struct RawImage {
    #[serde(default)]
    filepath: Option<String>,
    filename: String,
    imgid: u64,
    #[serde(default)]
    cocoid: Option<u64>,
    split: String,
    sentences: Vec<RawSentence>,
}

#[derive(Deserialize)]
struct RawSentence {
    raw: String,
}

/// Whether an image of split `image_split` belongs to the asked split (`train` takes `restval`).
pub fn in_split(asked: &str, image_split: &str) -> bool {
    image_split == asked || (asked == "train" && image_split == "restval")
}

/// Reads a Karpathy dataset file; `split` keeps only that split's images (see the module doc).
pub fn read_karpathy_captions(path: &Path, split: Option<&str>) -> Result<Vec<CaptionImage>> {
    let Dataset { images } = read_json(path)?;
    let mut out = Vec::new();
    for image in images {
        if split.is_some_and(|s| !in_split(s, &image.split)) {
            continue;
        }
        let id = image.cocoid.unwrap_or(image.imgid);
        if image.sentences.is_empty() {
            return Err(VlDataError::bad(
                path,
                format!("image {id} ({}) has no captions", image.filename),
            ));
        }
        out.push(CaptionImage {
            id,
            path: match image.filepath {
                Some(dir) if !dir.is_empty() => format!("{dir}/{}", image.filename),
                _ => image.filename,
            },
            split: image.split,
            captions: image
                .sentences
                .into_iter()
                .map(|s| s.raw.trim().to_string())
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vl::write;

    fn coco_image(imgid: u64, cocoid: u64, dir: &str, split: &str, raws: &[&str]) -> String {
        let sentences: Vec<String> = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                format!(
                    "{{\"tokens\": [\"a\"], \"raw\": \"{raw}\", \"imgid\": {imgid}, \"sentid\": {}}}",
                    imgid * 10 + i as u64
                )
            })
            .collect();
        format!(
            "{{\"filepath\": \"{dir}\", \"sentids\": [], \"filename\": \"COCO_{dir}_{cocoid:012}.jpg\", \
             \"imgid\": {imgid}, \"split\": \"{split}\", \"sentences\": [{}], \"cocoid\": {cocoid}}}",
            sentences.join(", ")
        )
    }

    #[test]
    fn coco_train_includes_restval() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{{\"images\": [{}, {}, {}, {}], \"dataset\": \"coco\"}}",
            coco_image(0, 391895, "val2014", "test", &["A man rides a bike. "]),
            coco_image(
                1,
                522418,
                "val2014",
                "restval",
                &["A woman cuts cake.", " A cake. "]
            ),
            coco_image(
                2,
                184613,
                "train2014",
                "train",
                &["A boy holds an umbrella."]
            ),
            coco_image(3, 318219, "val2014", "val", &["A keyboard."]),
        );
        let path = write(dir.path(), "dataset_coco.json", &text);

        let train = read_karpathy_captions(&path, Some("train")).unwrap();
        assert_eq!(
            train,
            vec![
                CaptionImage {
                    id: 522418,
                    path: "val2014/COCO_val2014_000000522418.jpg".into(),
                    split: "restval".into(),
                    captions: vec!["A woman cuts cake.".into(), "A cake.".into()],
                },
                CaptionImage {
                    id: 184613,
                    path: "train2014/COCO_train2014_000000184613.jpg".into(),
                    split: "train".into(),
                    captions: vec!["A boy holds an umbrella.".into()],
                },
            ]
        );
        let test = read_karpathy_captions(&path, Some("test")).unwrap();
        assert_eq!(test.len(), 1);
        assert_eq!(test[0].captions, ["A man rides a bike."]);
        assert!(read_karpathy_captions(&path, Some("restval"))
            .unwrap()
            .iter()
            .all(|i| i.split == "restval"));
        assert_eq!(read_karpathy_captions(&path, None).unwrap().len(), 4);
    }

    #[test]
    fn flickr_uses_imgid_and_bare_filename() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"images\": [{\"sentids\": [0, 1], \"imgid\": 0, \"sentences\": [\
            {\"tokens\": [\"two\"], \"raw\": \"Two young guys outside.\", \"imgid\": 0, \"sentid\": 0},\
            {\"tokens\": [\"men\"], \"raw\": \"Men in a yard.\", \"imgid\": 0, \"sentid\": 1}],\
            \"split\": \"train\", \"filename\": \"1000092795.jpg\"}], \"dataset\": \"flickr30k\"}";
        let path = write(dir.path(), "dataset_flickr30k.json", text);
        let rows = read_karpathy_captions(&path, Some("train")).unwrap();
        assert_eq!(
            rows,
            vec![CaptionImage {
                id: 0,
                path: "1000092795.jpg".into(),
                split: "train".into(),
                captions: vec!["Two young guys outside.".into(), "Men in a yard.".into()],
            }]
        );
        assert!(read_karpathy_captions(&path, Some("val"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_image_without_captions_or_filename_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "dataset_flickr30k.json",
            "{\"images\": [{\"imgid\": 7, \"split\": \"test\", \"filename\": \"7.jpg\", \"sentences\": []}]}",
        );
        let err = read_karpathy_captions(&path, None).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: image 7 (7.jpg) has no captions", path.display())
        );

        let path = write(
            dir.path(),
            "dataset_coco.json",
            "{\"images\": [\n{\"imgid\": 7, \"split\": \"test\", \"sentences\": []}]}",
        );
        let err = read_karpathy_captions(&path, None).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:2:", path.display()))
                && err.contains("missing field `filename`"),
            "{err}"
        );
    }
}
