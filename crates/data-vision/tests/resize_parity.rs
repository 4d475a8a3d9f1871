//! Image resizing against Pillow and torchvision, on typical and odd source sizes.
//!
//! Fixtures: `tests/fixtures/resize/<case>.<variant>.png`, written by `ci/fixtures/resize_pil.py`
//! (regenerate every fixture with `ci/fixtures/regenerate.sh`). The source images are not stored:
//! [`pattern`] here and `pattern` in that script compute the same image with integer arithmetic.
//!
//! * [`resize_rgb`] (what [`Preprocess`] uses) equals Pillow's `Image.resize` with `BICUBIC` and
//!   `BILINEAR` bit for bit, and so torchvision's `Resize` on PIL images (NOAH, FacT, V-PETL).
//! * torchvision's `Resize` on uint8 tensors with `antialias=True` is Pillow's filter computed in
//!   floating point without rounding or clipping between the two passes (within 1 level of that):
//!   bilinear is within 1 level of Pillow; bicubic differs by more where the first pass overshoots
//!   past 0 or 255, which Pillow clips and PyTorch keeps (the pattern's sharp edges provoke it).
//! * [`resize_rgb_no_antialias`] is within 1 level of torchvision's `Resize(antialias=False)`.

use std::path::PathBuf;

use image::RgbImage;
use peftbench_data_vision::preprocess::{resize_rgb, resize_rgb_no_antialias};
use peftbench_data_vision::{Interpolation, Normalization, Preprocess};

/// (name, source width, source height, output width, output height), as in the script.
const CASES: [(&str, u32, u32, u32, u32); 5] = [
    ("photo", 500, 375, 224, 224),
    ("tiny", 32, 32, 224, 224),
    ("odd", 97, 61, 45, 83),
    ("narrow", 31, 47, 32, 32),
    ("small", 300, 200, 32, 32),
];

fn hash3(x: u32, y: u32, c: u32) -> u32 {
    let mut h =
        x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ c.wrapping_mul(83_492_791);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5BD1_E995);
    h ^ (h >> 15)
}

/// The test image of `ci/fixtures/resize_pil.py`: gradients, a checkerboard, a wrapped ramp and
/// hashed noise, from integer arithmetic only.
fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let px = |c: u32| {
            let mut v =
                (x * 255 / (w - 1).max(1) * (c + 1) + y * 255 / (h - 1).max(1) * (3 - c)) / 4;
            if ((x / 13) + (y / 9)) % 2 == 0 {
                v += 60;
            }
            if x < w / 3 && y < h / 3 {
                v += hash3(x, y, c) % 48;
            }
            if y > 2 * h / 3 {
                v += (x * 3 + y * 2 + c * 40) % 256;
            }
            (v % 256) as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

fn reference(case: &str, variant: &str) -> RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/resize")
        .join(format!("{case}.{variant}.png"));
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_rgb8()
}

/// (largest difference in levels, number of values differing by more than 1, values).
fn compare(ours: &RgbImage, theirs: &RgbImage) -> (u8, usize, usize) {
    assert_eq!(ours.dimensions(), theirs.dimensions());
    let (mut worst, mut beyond_one) = (0u8, 0usize);
    for (a, b) in ours.as_raw().iter().zip(theirs.as_raw()) {
        let d = a.abs_diff(*b);
        worst = worst.max(d);
        beyond_one += usize::from(d > 1);
    }
    (worst, beyond_one, ours.as_raw().len())
}

fn modes() -> [(&'static str, Interpolation); 2] {
    [
        ("bicubic", Interpolation::Bicubic),
        ("bilinear", Interpolation::Bilinear),
    ]
}

#[test]
fn equals_pillow_bit_for_bit() {
    for (case, w, h, ow, oh) in CASES {
        let src = pattern(w, h);
        for (mode, interpolation) in modes() {
            let ours = resize_rgb(&src, ow, oh, interpolation);
            let (worst, beyond, n) = compare(&ours, &reference(case, &format!("pil_{mode}")));
            // For the record: the `image` crate's closest filters (floating point, no rounding
            // between the passes) are not Pillow's.
            let crate_filter = image::imageops::resize(&src, ow, oh, interpolation.filter());
            let (cw, cb, _) = compare(&crate_filter, &reference(case, &format!("pil_{mode}")));
            println!(
                "{case} {w}x{h} -> {ow}x{oh} {mode}: ours vs Pillow max {worst}; image crate \
                 vs Pillow max {cw}, {cb} of {n} values off by more than 1"
            );
            assert_eq!((worst, beyond), (0, 0), "{case} {mode}");
        }
    }
}

#[test]
fn torchvision_tensor_resize_with_antialias_is_pillows_filter_without_intermediate_rounding() {
    for (case, w, h, ow, oh) in CASES {
        let src = pattern(w, h);
        for (mode, interpolation) in modes() {
            let ours = resize_rgb(&src, ow, oh, interpolation);
            let tv = reference(case, &format!("tv_{mode}_aa"));
            let (worst, beyond, n) = compare(&ours, &tv);
            let float = unrounded(&src, ow, oh, interpolation);
            let (float_worst, _, _) = compare(&float, &tv);
            println!(
                "{case} {mode}: ours vs torchvision Resize(antialias=True) on a tensor: max \
                 {worst}, {beyond} of {n} values off by more than 1; Pillow's filter without \
                 intermediate rounding vs torchvision: max {float_worst}"
            );
            assert!(float_worst <= 1, "{case} {mode}: {float_worst}");
            if interpolation == Interpolation::Bilinear {
                // No negative lobes, so nothing to clip between the passes.
                assert!(worst <= 1, "{case} {mode}: {worst}");
            }
        }
    }
}

/// Pillow's filter, support and normalisation in `f64` with no rounding or clipping between the
/// passes (horizontal first), rounded and clipped once at the end.
fn unrounded(src: &RgbImage, ow: u32, oh: u32, interpolation: Interpolation) -> RgbImage {
    let (w, h) = src.dimensions();
    let (support, kernel): (f64, fn(f64) -> f64) = match interpolation {
        Interpolation::Bicubic => (2.0, |x: f64| {
            let x = x.abs();
            if x < 1.0 {
                (1.5 * x - 2.5) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5
            } else {
                0.0
            }
        }),
        Interpolation::Bilinear => (1.0, |x: f64| (1.0 - x.abs()).max(0.0)),
    };
    let taps = |n: u32, out: u32| -> Vec<Vec<(usize, f64)>> {
        let scale = f64::from(n) / f64::from(out);
        let fs = scale.max(1.0);
        (0..out)
            .map(|o| {
                let center = (f64::from(o) + 0.5) * scale;
                let lo = ((center - support * fs + 0.5) as i64).max(0) as usize;
                let hi = ((center + support * fs + 0.5) as i64).min(i64::from(n)) as usize;
                let k: Vec<(usize, f64)> = (lo..hi)
                    .map(|i| (i, kernel((i as f64 - center + 0.5) / fs)))
                    .collect();
                let total: f64 = k.iter().map(|(_, v)| v).sum();
                k.into_iter().map(|(i, v)| (i, v / total)).collect()
            })
            .collect()
    };
    let (xs, ys) = (taps(w, ow), taps(h, oh));
    RgbImage::from_fn(ow, oh, |x, y| {
        let px = |c: usize| {
            let v: f64 = ys[y as usize]
                .iter()
                .map(|&(sy, ky)| {
                    ky * xs[x as usize]
                        .iter()
                        .map(|&(sx, kx)| kx * f64::from(src.get_pixel(sx as u32, sy as u32)[c]))
                        .sum::<f64>()
                })
                .sum();
            v.round().clamp(0.0, 255.0) as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

#[test]
fn no_antialias_matches_torchvision_within_one_level() {
    for (case, w, h, ow, oh) in CASES {
        let src = pattern(w, h);
        for (mode, interpolation) in modes() {
            let ours = resize_rgb_no_antialias(&src, ow, oh, interpolation);
            let (worst, beyond, n) = compare(&ours, &reference(case, &format!("tv_{mode}_noaa")));
            println!(
                "{case} {mode}: ours vs torchvision Resize(antialias=False): max {worst}, {beyond} \
                 of {n} values off by more than 1"
            );
            assert!(worst <= 1, "{case} {mode}: {worst}");
        }
    }
}

/// The VTAB-1k path: `Preprocess` (224, bicubic, ImageNet normalisation) writes Pillow's resized
/// pixels, scaled and normalised, as NOAH's `Resize((224, 224), interpolation=3)`, `ToTensor`,
/// `Normalize` compute them from a PIL image.
#[test]
fn preprocess_writes_pillows_pixels() {
    let src = pattern(500, 375);
    let p = Preprocess {
        image_size: 224,
        interpolation: Interpolation::Bicubic,
        normalization: Normalization::ImageNet,
    };
    let mut out = vec![0f32; p.values_per_image()];
    p.write_chw(&src, &mut out);
    let pil = reference("photo", "pil_bicubic");
    let (mean, std) = Normalization::ImageNet.mean_std();
    let plane = 224 * 224;
    for (i, px) in pil.pixels().enumerate() {
        for c in 0..3 {
            let want = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
            assert_eq!(out[c * plane + i], want, "pixel {i} channel {c}");
        }
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// VTAB-1k end to end on a real-size JPEG (500x375, quality 90, 4:2:0, written by libjpeg through
/// Pillow) against NOAH's `Image.open(..).convert("RGB")` + `Resize((224, 224), interpolation=3)`.
///
/// The resize is exact (above), but the JPEG decoders differ: the `image` crate's (zune-jpeg) decoded
/// bytes are not libjpeg-turbo's (FNV-1a hash of the RGB bytes; they differ without chroma
/// subsampling too, so not only the chroma upsampling but the IDCT / colour conversion differ).
/// After the resize NOAH's input and ours differ by at most 5 levels, and by more than 1 level in
/// fewer than 1% of the values (measured: max 5, 1334 of 150528).
#[test]
fn a_jpeg_through_the_vtab_path_against_noahs_transform() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resize");
    let bytes = std::fs::read(dir.join("photo.jpg")).unwrap();
    let decoded = peftbench_data_vision::decode_rgb(&bytes, "photo.jpg").unwrap();
    assert_eq!(decoded.dimensions(), (500, 375));
    let pillow_hash = std::fs::read_to_string(dir.join("photo.decoded.fnv1a64")).unwrap();
    let same_decoding = format!("{:016x}", fnv1a64(decoded.as_raw())) == pillow_hash.trim();
    let ours = resize_rgb(&decoded, 224, 224, Interpolation::Bicubic);
    let (worst, beyond, n) = compare(&ours, &reference("photo", "noah"));
    println!(
        "photo.jpg: decoded bytes equal Pillow's: {same_decoding}; ours vs NOAH's transform: max \
         {worst}, {beyond} of {n} values off by more than 1"
    );
    assert!(
        worst <= 5 && beyond * 100 < n,
        "max {worst}, {beyond} of {n}"
    );
}
