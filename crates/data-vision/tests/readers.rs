//! Reader and preprocessing tests on small generated fixtures.

use std::path::Path;
use std::sync::Arc;

use image::{Rgb, RgbImage};
use peftbench_data_vision::{
    fgvc, noah, parquet as pq, sequential_batches, shuffled_batches, synthetic, DataError,
    ImageDataset, ImageSource, Interpolation, Normalization, ParquetColumns, Prefetcher,
    Preprocess, ShapeTask,
};

/// A deterministic `w x h` test image whose pixel values encode position and a seed.
fn pattern(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 37 + y * 11) as u8 ^ seed,
            (y * 53 + seed as u32) as u8,
            (x * 7 + y * 29 + 3) as u8,
        ])
    })
}

fn raw(pre: Normalization) -> Preprocess {
    Preprocess {
        image_size: 4,
        interpolation: Interpolation::Bilinear,
        normalization: pre,
    }
}

/// Expected CHW values of an image already of the target size.
fn expected_chw(img: &RgbImage, norm: Normalization) -> Vec<f32> {
    let (mean, std) = norm.mean_std();
    let mut out = Vec::new();
    for c in 0..3 {
        for p in img.pixels() {
            out.push((p.0[c] as f32 / 255.0 - mean[c]) / std[c]);
        }
    }
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn save(path: &Path, img: &RgbImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// A NOAH-layout task folder `<root>/<folder>` with 4 train images (3 PNG, 1 JPEG) and a test list
/// that also names a corrupt image.
fn noah_fixture(root: &Path, folder: &str) -> Vec<RgbImage> {
    let dir = root.join(folder);
    let imgs: Vec<RgbImage> = (0..4).map(|i| pattern(4, 4, i as u8 * 40)).collect();
    let mut list = String::new();
    for (i, img) in imgs.iter().enumerate() {
        let ext = if i == 3 { "jpg" } else { "png" };
        let rel = format!("images/train800/{i:06}.{ext}");
        save(&dir.join(&rel), img);
        list.push_str(&format!("{rel} {}\n", [3, 0, 2, 1][i]));
    }
    write(&dir.join("train800.txt"), list.as_bytes());
    write(&dir.join("images/test/000000.jpg"), b"this is not a jpeg");
    write(
        &dir.join("test.txt"),
        b"images/train800/000000.png 1\n\nimages/test/000000.jpg   2\n",
    );
    imgs
}

#[test]
fn noah_layout_loads_and_decodes() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = noah_fixture(tmp.path(), "cifar");
    let ds = noah::load_split(tmp.path(), "cifar", "train800", Some(5)).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.labels, vec![3, 0, 2, 1]);
    assert_eq!(ds.num_classes, 5);
    assert_eq!(ds.name, "vtab/cifar/train800");
    // Known VTAB task without num_classes: the VTAB count, not max + 1.
    assert_eq!(
        noah::load_split(tmp.path(), "cifar", "train800.txt", None)
            .unwrap()
            .num_classes,
        100
    );

    let pre = raw(Normalization::ImageNet);
    let batch = ds.load_batch(&[2, 0], &pre).unwrap();
    assert_eq!(batch.shape(), [2, 3, 4, 4]);
    assert_eq!(batch.labels, vec![2, 3]);
    let mut want = expected_chw(&imgs[2], Normalization::ImageNet);
    want.extend(expected_chw(&imgs[0], Normalization::ImageNet));
    assert_eq!(batch.pixels, want, "PNG is lossless: exact values");
    // The JPEG decodes (lossy: just check the shape and rough range).
    let b = ds.load_batch(&[3], &raw(Normalization::None)).unwrap();
    assert!(b.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(noah::validate_images(&ds).is_empty());

    assert!(matches!(
        ds.load_batch(&[4], &pre),
        Err(DataError::IndexOutOfRange {
            index: 4,
            len: 4,
            ..
        })
    ));
}

#[test]
fn noah_corrupt_image_names_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    noah_fixture(tmp.path(), "cifar");
    let ds = noah::load_split(tmp.path(), "cifar100", "test", None).unwrap();
    assert_eq!(ds.labels, vec![1, 2]);
    let bad = tmp.path().join("cifar/images/test/000000.jpg");
    assert!(ds.load_batch(&[0], &raw(Normalization::None)).is_ok());
    let err = ds
        .load_batch(&[0, 1], &raw(Normalization::None))
        .unwrap_err();
    assert!(matches!(err, DataError::CorruptImage { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
    let errs = noah::validate_images(&ds);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].to_string().contains("000000.jpg"));

    // A listed file that does not exist: an I/O error naming it.
    std::fs::remove_file(&bad).unwrap();
    let err = ds.load_batch(&[1], &raw(Normalization::None)).unwrap_err();
    assert!(
        matches!(&err, DataError::Io { path, .. } if *path == bad),
        "{err:?}"
    );
}

#[test]
fn noah_malformed_lines_report_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dtd");
    write(
        &dir.join("val200.txt"),
        b"images/val200/000000.jpg 1\n# comment\nimages/val200/000001.jpg x7\n",
    );
    let err = noah::load_split(tmp.path(), "dtd", "val200", None).unwrap_err();
    match &err {
        DataError::BadListLine {
            path, line, text, ..
        } => {
            assert_eq!(path, &dir.join("val200.txt"));
            assert_eq!(*line, 3);
            assert!(text.contains("x7"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("val200.txt:3"), "{err}");

    write(&dir.join("test.txt"), b"images/a.jpg 0\nimages/b.jpg\n");
    let err = noah::load_split(tmp.path(), "dtd", "test", None).unwrap_err();
    assert!(
        matches!(err, DataError::BadListLine { line: 2, .. }),
        "{err:?}"
    );

    // A label beyond the declared number of classes names its line.
    write(
        &dir.join("train800.txt"),
        b"images/a.jpg 0\nimages/b.jpg 9\n",
    );
    let err = noah::load_split(tmp.path(), "dtd", "train800", Some(5)).unwrap_err();
    assert!(
        matches!(err, DataError::BadListLine { line: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn noah_aliases_and_missing_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    noah_fixture(tmp.path(), "oxford_pet");
    let ds = noah::load_split(tmp.path(), "oxford_iiit_pet", "train800", None).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.num_classes, 37);
    assert!(
        matches!(&ds.items[0], ImageSource::File(p) if p.starts_with(tmp.path().join("oxford_pet")))
    );
    noah_fixture(tmp.path(), "dsprites_location");
    assert_eq!(
        noah::load_split(tmp.path(), "dsprites_loc", "train800", None)
            .unwrap()
            .num_classes,
        16
    );
    assert_eq!(
        noah::task_aliases("cifar100")[..2],
        ["cifar100".to_string(), "cifar".to_string()]
    );

    // Nothing there: every folder looked at is listed, with a hint.
    let err = noah::load_split(tmp.path(), "cifar", "test", None).unwrap_err();
    let DataError::MissingDataset { looked_in, hint } = &err else {
        panic!("{err:?}")
    };
    assert!(looked_in.contains(&tmp.path().join("cifar")));
    assert!(looked_in.contains(&tmp.path().join("cifar100")));
    assert!(
        hint.contains("PEFTBENCH_DATA") && hint.contains("--data-dir") && hint.contains("NOAH")
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&tmp.path().join("cifar100").display().to_string()),
        "{msg}"
    );

    // A folder without the list file: the list file paths are named.
    let err = noah::load_split(tmp.path(), "oxford_pet", "val200", None).unwrap_err();
    let DataError::MissingDataset { looked_in, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        looked_in.contains(&tmp.path().join("oxford_pet/val200.txt")),
        "{looked_in:?}"
    );
}

fn write_parquet_struct(path: &Path, images: &[Vec<u8>], labels: &[i64]) {
    use arrow::array::{ArrayRef, BinaryArray, Int64Array, StringArray, StructArray};
    use arrow::datatypes::{DataType, Field, Fields};
    use arrow::record_batch::RecordBatch;
    let bytes: ArrayRef = Arc::new(BinaryArray::from_iter_values(images.iter()));
    let paths: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..images.len()).map(|i| format!("img{i}.png")),
    ));
    let fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let image: ArrayRef = Arc::new(StructArray::new(fields, vec![bytes, paths], None));
    let label: ArrayRef = Arc::new(Int64Array::from(labels.to_vec()));
    let batch = RecordBatch::try_from_iter([("image", image), ("label", label)]).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn parquet_hf_image_struct_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs: Vec<RgbImage> = (0..5).map(|i| pattern(4, 4, i * 17)).collect();
    let enc: Vec<Vec<u8>> = imgs.iter().map(png_bytes).collect();
    // Two shards, read in sorted order; plus an unrelated split that must not be picked up.
    let data = tmp.path().join("svhn/data");
    write_parquet_struct(
        &data.join("test-00001-of-00002.parquet"),
        &enc[3..],
        &[7, 0],
    );
    write_parquet_struct(
        &data.join("test-00000-of-00002.parquet"),
        &enc[..3],
        &[4, 9, 1],
    );
    write_parquet_struct(
        &data.join("train800-00000-of-00001.parquet"),
        &enc[..1],
        &[2],
    );

    let files = pq::find_split_files(tmp.path(), "svhn", "test").unwrap();
    assert_eq!(files.len(), 2);
    let ds = pq::load_split(
        tmp.path(),
        "svhn_cropped",
        "test",
        &ParquetColumns::default(),
        None,
    )
    .unwrap();
    assert_eq!(ds.labels, vec![4, 9, 1, 7, 0]);
    assert_eq!(ds.num_classes, 10);
    match &ds.items[4] {
        ImageSource::Encoded { origin, .. } => {
            assert!(
                origin.ends_with("test-00001-of-00002.parquet row 1"),
                "{origin}"
            )
        }
        other => panic!("{other:?}"),
    }
    let batch = ds
        .load_batch(&[0, 1, 2, 3, 4], &raw(Normalization::Inception))
        .unwrap();
    let want: Vec<f32> = imgs
        .iter()
        .flat_map(|im| expected_chw(im, Normalization::Inception))
        .collect();
    assert_eq!(batch.pixels, want);

    // Split in its own folder, plain binary column, custom names, int32 labels.
    {
        use arrow::array::{ArrayRef, BinaryArray, Int32Array};
        use arrow::record_batch::RecordBatch;
        let img: ArrayRef = Arc::new(BinaryArray::from_iter_values(enc.iter()));
        let lab: ArrayRef = Arc::new(Int32Array::from(vec![0, 1, 2, 3, 4]));
        let batch = RecordBatch::try_from_iter([("img", img), ("fine_label", lab)]).unwrap();
        let p = tmp.path().join("mytask/val/part.parquet");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&p).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let cols = ParquetColumns {
            image_column: "img".into(),
            label_column: "fine_label".into(),
        };
        let ds = pq::load_split(tmp.path(), "mytask", "val", &cols, None).unwrap();
        assert_eq!(ds.num_classes, 5);
        assert_eq!(
            ds.load_batch(&[2], &raw(Normalization::None))
                .unwrap()
                .pixels,
            expected_chw(&imgs[2], Normalization::None)
        );

        // Default column names are absent: the error lists what is there.
        let err = pq::load_split(
            tmp.path(),
            "mytask",
            "val",
            &ParquetColumns::default(),
            None,
        )
        .unwrap_err();
        let DataError::MissingColumn {
            column,
            available,
            path,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(column, "image");
        assert_eq!(
            available,
            &vec!["img".to_string(), "fine_label".to_string()]
        );
        assert_eq!(path, &p);
    }

    // Corrupt bytes name file and row.
    let bad = tmp.path().join("broken/test.parquet");
    write_parquet_struct(&bad, &[enc[0].clone(), b"garbage".to_vec()], &[0, 1]);
    let ds = pq::load_split(
        tmp.path(),
        "broken",
        "test",
        &ParquetColumns::default(),
        None,
    )
    .unwrap();
    let err = ds
        .load_batch(&[0, 1], &raw(Normalization::None))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{} row 1", bad.display())),
        "{err}"
    );

    let err = pq::load_split(
        tmp.path(),
        "svhn",
        "val200",
        &ParquetColumns::default(),
        None,
    )
    .unwrap_err();
    let DataError::MissingDataset { looked_in, .. } = err else {
        panic!()
    };
    assert!(
        looked_in.contains(&tmp.path().join("svhn/data/val200-*.parquet")),
        "{looked_in:?}"
    );
}

#[test]
fn fgvc_json_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("CUB_200_2011");
    let a = pattern(4, 4, 1);
    let b = pattern(4, 4, 2);
    save(&dir.join("images/002.Bird_B/b1.png"), &b);
    save(&dir.join("images/001.Bird_A/a1.png"), &a);
    write(
        &dir.join("train.json"),
        br#"{"002.Bird_B/b1.png": 2, "001.Bird_A/a1.png": 1}"#,
    );
    write(&dir.join("val.json"), br#"{"001.Bird_A/a1.png": 1}"#);
    write(&dir.join("test.json"), br#"{"003.Bird_C/c1.png": 3}"#);

    let ds = fgvc::load_split(tmp.path(), "cub", "train").unwrap();
    assert_eq!(ds.name, "fgvc/CUB_200_2011/train");
    assert_eq!(ds.num_classes, 3, "ids 1, 2, 3 across all split files");
    assert_eq!(ds.labels, vec![0, 1], "sorted by path, ids mapped to 0..K");
    assert!(
        matches!(&ds.items[0], ImageSource::File(p) if *p == dir.join("images/001.Bird_A/a1.png"))
    );
    let batch = ds.load_batch(&[0, 1], &raw(Normalization::None)).unwrap();
    let mut want = expected_chw(&a, Normalization::None);
    want.extend(expected_chw(&b, Normalization::None));
    assert_eq!(batch.pixels, want);
    assert_eq!(
        fgvc::load_split(tmp.path(), "CUB_200_2011", "test")
            .unwrap()
            .labels,
        vec![2]
    );
    assert_eq!(
        fgvc::load_split(tmp.path(), "cub", "trainval")
            .unwrap()
            .len(),
        2
    );

    // Flowers: paths relative to the dataset folder.
    let fdir = tmp.path().join("OxfordFlower");
    save(&fdir.join("jpg/image_00001.png"), &a);
    write(&fdir.join("train.json"), br#"{"jpg/image_00001.png": 0}"#);
    let ds = fgvc::load_split(tmp.path(), "flowers", "train").unwrap();
    assert!(matches!(&ds.items[0], ImageSource::File(p) if *p == fdir.join("jpg/image_00001.png")));

    write(
        &fdir.join("val.json"),
        br#"{"jpg/image_00001.png": "zero"}"#,
    );
    let err = fgvc::load_split(tmp.path(), "flowers", "val").unwrap_err();
    assert!(
        matches!(&err, DataError::BadJson { path, .. } if *path == fdir.join("val.json")),
        "{err:?}"
    );
    let err = fgvc::load_split(tmp.path(), "nabirds", "train").unwrap_err();
    assert!(matches!(err, DataError::MissingDataset { .. }));
}

#[test]
fn preprocessing_reference_values() {
    // 2x2 image, 2x2 output: identity resize, exact normalisation, CHW layout.
    let img =
        RgbImage::from_vec(2, 2, vec![0, 128, 255, 10, 20, 30, 255, 255, 255, 1, 2, 3]).unwrap();
    let ds = ImageDataset {
        name: "tiny".into(),
        items: vec![ImageSource::Rgb(Arc::new(img.clone()))],
        labels: vec![0],
        num_classes: 1,
    };
    for interpolation in [Interpolation::Bicubic, Interpolation::Bilinear] {
        let pre = Preprocess {
            image_size: 2,
            interpolation,
            normalization: Normalization::ImageNet,
        };
        let b = ds.load_batch(&[0], &pre).unwrap();
        let m = [0.485f32, 0.456, 0.406];
        let s = [0.229f32, 0.224, 0.225];
        let f = |v: f32, c: usize| (v / 255.0 - m[c]) / s[c];
        #[rustfmt::skip]
        let want = vec![
            f(0., 0), f(10., 0), f(255., 0), f(1., 0),
            f(128., 1), f(20., 1), f(255., 1), f(2., 1),
            f(255., 2), f(30., 2), f(255., 2), f(3., 2),
        ];
        assert_eq!(b.pixels, want);
        assert!((b.pixels[0] - (-0.485 / 0.229)).abs() < 1e-6);
    }
    let b = ds
        .load_batch(
            &[0],
            &Preprocess {
                image_size: 2,
                interpolation: Interpolation::Bicubic,
                normalization: Normalization::Inception,
            },
        )
        .unwrap();
    assert_eq!(b.pixels[0], -1.0);
    assert_eq!(b.pixels[2], 1.0);

    // Resizing a uniform image keeps its colour, with either filter, up or down.
    let flat = RgbImage::from_pixel(6, 3, Rgb([51, 102, 204]));
    let ds = ImageDataset {
        name: "flat".into(),
        items: vec![ImageSource::Rgb(Arc::new(flat))],
        labels: vec![0],
        num_classes: 1,
    };
    for (size, interpolation) in [
        (2, Interpolation::Bicubic),
        (5, Interpolation::Bilinear),
        (9, Interpolation::Bicubic),
    ] {
        let b = ds
            .load_batch(
                &[0],
                &Preprocess {
                    image_size: size,
                    interpolation,
                    normalization: Normalization::None,
                },
            )
            .unwrap();
        assert_eq!(b.pixels.len(), 3 * size * size);
        for (c, v) in [0.2f32, 0.4, 0.8].into_iter().enumerate() {
            assert!(b.pixels[c * size * size..(c + 1) * size * size]
                .iter()
                .all(|p| (p - v).abs() < 1e-6));
        }
    }
    let bad = Preprocess {
        image_size: 0,
        interpolation: Interpolation::Bicubic,
        normalization: Normalization::None,
    };
    assert!(matches!(
        ds.load_batch(&[0], &bad),
        Err(DataError::InvalidPreprocess(_))
    ));
}

#[test]
fn preprocess_serde() {
    let p: Preprocess = serde_json::from_str(
        r#"{"image_size": 224, "interpolation": "bicubic", "normalization": "inception"}"#,
    )
    .unwrap();
    assert_eq!(
        p,
        Preprocess {
            image_size: 224,
            interpolation: Interpolation::Bicubic,
            normalization: Normalization::Inception
        }
    );
    let s = serde_json::to_string(&Preprocess {
        image_size: 32,
        interpolation: Interpolation::Bilinear,
        normalization: Normalization::None,
    })
    .unwrap();
    assert_eq!(
        s,
        r#"{"image_size":32,"interpolation":"bilinear","normalization":"none"}"#
    );
    assert_eq!(
        serde_json::to_string(&Normalization::ImageNet).unwrap(),
        r#""imagenet""#
    );
    assert!(serde_json::from_str::<Preprocess>(
        r#"{"image_size": 2, "interpolation": "bicubic", "normalization": "none", "crop": 1}"#
    )
    .is_err());
    assert!(serde_json::from_str::<Normalization>(r#""ImageNet""#).is_err());
    let c: ParquetColumns = serde_json::from_str(r#"{"label_column": "fine"}"#).unwrap();
    assert_eq!(c.image_column, "image");
    assert_eq!(
        serde_json::to_string(&ShapeTask::Orientation).unwrap(),
        r#""orientation""#
    );
}

#[test]
fn prefetcher_matches_direct_loading() {
    let ds = Arc::new(synthetic::generate(ShapeTask::Shapes, 37, 1, 16));
    let pre = Preprocess {
        image_size: 24,
        interpolation: Interpolation::Bicubic,
        normalization: Normalization::ImageNet,
    };
    let batches = shuffled_batches(ds.len(), 8, 9, false);
    let direct: Vec<_> = batches
        .iter()
        .map(|b| ds.load_batch(b, &pre).unwrap())
        .collect();
    let mut pf = Prefetcher::spawn(ds.clone(), batches.clone(), pre.clone(), 2);
    assert_eq!(pf.remaining(), 5);
    let got: Vec<_> = pf.by_ref().map(|b| b.unwrap()).collect();
    assert_eq!(got, direct);
    assert!(pf.wait_seconds() >= 0.0);
    assert!(pf.next().is_none());

    // Dropping early stops the worker without hanging.
    let mut pf = Prefetcher::spawn(ds.clone(), sequential_batches(ds.len(), 1), pre.clone(), 3);
    assert_eq!(pf.next().unwrap().unwrap().labels, vec![ds.labels[0]]);
    drop(pf);

    // An error is yielded in order, then the iterator ends.
    let pf = Prefetcher::spawn(ds.clone(), vec![vec![0], vec![999], vec![1]], pre, 2);
    let results: Vec<_> = pf.collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(DataError::IndexOutOfRange { index: 999, .. })
    ));
}

#[test]
fn truncate_keeps_first() {
    let mut ds = synthetic::generate(ShapeTask::Count, 20, 2, 16);
    let labels: Vec<u32> = ds.labels[..5].to_vec();
    ds.truncate(5);
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.labels, labels);
    assert_eq!(ds.num_classes, 6);
    ds.truncate(0);
    assert!(ds.is_empty());
}
