//! Generated VTAB-structured-like tasks, for demos and tests that must run in seconds on a laptop CPU.
//!
//! Every image is a small RGB picture (e.g. 32x32) of simple shapes rasterised without anti-aliasing
//! (a point-in-shape test per pixel centre) over a dark background with a mild colour gradient and noise.
//! Shapes are bright (every channel of a shape colour is at least 150; background channels stay below
//! 112), so their outlines are always visible. Generation is deterministic: the same `(task, n, seed,
//! image_size)` gives bit-identical images on every platform (ChaCha8; image `i` uses stream `i + 1` of
//! the seed, labels stream 0). Use different seeds for train and test splits.
//!
//! | task | classes | label | nuisance factors |
//! |---|---|---|---|
//! | `position` | 9 | 3x3 grid cell (row-major) holding the centre of the single shape | shape type, size, colour, rotation, position inside the cell |
//! | `orientation` | 8 | angle of a bar or elongated triangle modulo 180 degrees, in 22.5-degree bins | shape, length, colour, position, angle within the bin (central 80%) |
//! | `count` | 6 | number of non-overlapping shapes, 1..=6 (label = count - 1) | shape types (circle/square/triangle), sizes, colours, positions |
//! | `shapes` | 6 | shape type: circle, square, triangle, bar, ring, cross | size, colour, position, rotation |
//!
//! The first three play the role of VTAB's structured downstream tasks (dSprites location/orientation, CLEVR count). Labels are balanced: each consecutive
//! block of `num_classes` examples holds every class once, in a random order.

use std::f32::consts::PI;
use std::sync::Arc;

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{ImageDataset, ImageSource};

/// A generated task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeTask {
    Position,
    Orientation,
    Count,
    Shapes,
}

impl ShapeTask {
    pub const ALL: [ShapeTask; 4] = [
        ShapeTask::Position,
        ShapeTask::Orientation,
        ShapeTask::Count,
        ShapeTask::Shapes,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            ShapeTask::Position => "position",
            ShapeTask::Orientation => "orientation",
            ShapeTask::Count => "count",
            ShapeTask::Shapes => "shapes",
        }
    }

    /// Parses a task name as written by [`ShapeTask::name`] (also the serde name).
    pub fn from_name(name: &str) -> Option<ShapeTask> {
        ShapeTask::ALL
            .into_iter()
            .find(|t| t.name() == name.trim().to_ascii_lowercase())
    }

    pub fn description(&self) -> &'static str {
        match self {
            ShapeTask::Position => "which cell of a 3x3 grid holds the centre of the single shape (9 classes)",
            ShapeTask::Orientation => {
                "angle of a bar or elongated triangle modulo 180 degrees, in 8 bins of 22.5 degrees (8 classes)"
            }
            ShapeTask::Count => "number of non-overlapping shapes, 1 to 6 (6 classes)",
            ShapeTask::Shapes => {
                "shape type: circle, square, triangle, bar, ring, cross (6 classes; upstream pre-training task)"
            }
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            ShapeTask::Position => 9,
            ShapeTask::Orientation => 8,
            ShapeTask::Count => 6,
            ShapeTask::Shapes => Shape::ALL.len(),
        }
    }
}

impl std::fmt::Display for ShapeTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ShapeTask {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ShapeTask::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = ShapeTask::ALL.iter().map(|t| t.name()).collect();
            format!("unknown synthetic task {s:?}; expected one of {names:?}")
        })
    }
}

/// The shapes drawn; the index in [`Shape::ALL`] is the `shapes` task label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Bar,
    Ring,
    Cross,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Bar,
        Shape::Ring,
        Shape::Cross,
    ];

    /// Whether the point `(x, y)`, in the shape's own frame (centre at the origin, unrotated), lies in the
    /// shape of "radius" `r` (half its largest extent).
    fn contains(&self, x: f32, y: f32, r: f32) -> bool {
        match self {
            Shape::Circle => x * x + y * y <= r * r,
            Shape::Square => x.abs() <= 0.75 * r && y.abs() <= 0.75 * r,
            Shape::Triangle => {
                // Equilateral, circumradius r, one vertex on +x: the three edges lie at distance r/2 from
                // the centre, with outward normals at 60, 180 and 300 degrees.
                let h = 0.5 * r;
                let (s, c) = (3f32.sqrt() * 0.5, 0.5);
                -x <= h && c * x + s * y <= h && c * x - s * y <= h
            }
            Shape::Bar => x.abs() <= r && y.abs() <= (0.22 * r).max(0.7),
            Shape::Ring => {
                let d2 = x * x + y * y;
                d2 <= r * r && d2 >= (0.55 * r) * (0.55 * r)
            }
            Shape::Cross => {
                let w = (0.28 * r).max(0.7);
                (x.abs() <= r && y.abs() <= w) || (y.abs() <= r && x.abs() <= w)
            }
        }
    }
}

/// A shape to draw: `Some(shape)` or the elongated triangle used by the orientation task (`None`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placed {
    pub(crate) shape: Option<Shape>,
    pub(crate) cx: f32,
    pub(crate) cy: f32,
    pub(crate) r: f32,
    pub(crate) angle: f32,
    pub(crate) colour: [u8; 3],
}

fn thin_triangle(x: f32, y: f32, r: f32) -> bool {
    // Isosceles triangle from (-r, +-0.4r) to the apex (r, 0).
    x >= -r && x <= r && y.abs() <= 0.4 * r * (r - x) / (2.0 * r)
}

pub(crate) fn draw(img: &mut RgbImage, p: &Placed) {
    let s = img.width() as i64;
    let (sin, cos) = p.angle.sin_cos();
    let reach = p.r + 1.0;
    let x0 = ((p.cx - reach).floor() as i64).max(0);
    let x1 = ((p.cx + reach).ceil() as i64).min(s - 1);
    let y0 = ((p.cy - reach).floor() as i64).max(0);
    let y1 = ((p.cy + reach).ceil() as i64).min(img.height() as i64 - 1);
    for py in y0..=y1 {
        for px in x0..=x1 {
            let dx = px as f32 + 0.5 - p.cx;
            let dy = py as f32 + 0.5 - p.cy;
            // Rotate the offset by -angle into the shape's frame.
            let lx = cos * dx + sin * dy;
            let ly = -sin * dx + cos * dy;
            let inside = match p.shape {
                Some(shape) => shape.contains(lx, ly, p.r),
                None => thin_triangle(lx, ly, p.r),
            };
            if inside {
                img.put_pixel(px as u32, py as u32, Rgb(p.colour));
            }
        }
    }
}

fn shape_colour(rng: &mut ChaCha8Rng) -> [u8; 3] {
    [
        rng.random_range(150..=255u8),
        rng.random_range(150..=255u8),
        rng.random_range(150..=255u8),
    ]
}

pub(crate) fn background(rng: &mut ChaCha8Rng, s: u32) -> (RgbImage, [i16; 3], [f32; 3], [f32; 3]) {
    let base = [
        rng.random_range(10..=80i16),
        rng.random_range(10..=80i16),
        rng.random_range(10..=80i16),
    ];
    let gx = [
        rng.random_range(-12.0..12.0f32),
        rng.random_range(-12.0..12.0),
        rng.random_range(-12.0..12.0),
    ];
    let gy = [
        rng.random_range(-12.0..12.0f32),
        rng.random_range(-12.0..12.0),
        rng.random_range(-12.0..12.0),
    ];
    let mut img = RgbImage::new(s, s);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let u = (x as f32 + 0.5) / s as f32 - 0.5;
        let v = (y as f32 + 0.5) / s as f32 - 0.5;
        for c in 0..3 {
            px.0[c] = (base[c] as f32 + 2.0 * (gx[c] * u + gy[c] * v))
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    (img, base, gx, gy)
}

pub(crate) fn add_noise(img: &mut RgbImage, rng: &mut ChaCha8Rng) {
    for v in img.iter_mut() {
        let n: i16 = rng.random_range(-6..=6);
        *v = (*v as i16 + n).clamp(0, 255) as u8;
    }
}

/// Renders example `index` of `task` with label `label` (`< task.num_classes()`).
pub fn render(task: ShapeTask, label: u32, seed: u64, index: usize, image_size: usize) -> RgbImage {
    let s = image_size.max(8) as f32;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64 + 1);
    let (mut img, ..) = background(&mut rng, s as u32);
    let mut placed = Vec::new();
    match task {
        ShapeTask::Shapes => {
            let r = rng.random_range(0.16 * s..=0.32 * s);
            let m = 0.7 * r;
            placed.push(Placed {
                shape: Some(Shape::ALL[label as usize % Shape::ALL.len()]),
                cx: rng.random_range(m..=s - m),
                cy: rng.random_range(m..=s - m),
                r,
                angle: rng.random_range(0.0..2.0 * PI),
                colour: shape_colour(&mut rng),
            });
        }
        ShapeTask::Position => {
            let cell = s / 3.0;
            let (row, col) = ((label / 3) as f32, (label % 3) as f32);
            let m = 0.1 * cell;
            placed.push(Placed {
                shape: Some(Shape::ALL[rng.random_range(0..Shape::ALL.len())]),
                cx: rng.random_range(col * cell + m..=(col + 1.0) * cell - m),
                cy: rng.random_range(row * cell + m..=(row + 1.0) * cell - m),
                r: rng.random_range((0.08 * s).max(2.0)..=(0.14 * s).max(2.5)),
                angle: rng.random_range(0.0..2.0 * PI),
                colour: shape_colour(&mut rng),
            });
        }
        ShapeTask::Orientation => {
            let bin = PI / 8.0;
            let mut angle = (label as f32 + 0.1 + 0.8 * rng.random::<f32>()) * bin;
            let triangle = rng.random_bool(0.5);
            if rng.random_bool(0.5) {
                angle += PI; // same label: orientation is modulo 180 degrees
            }
            placed.push(Placed {
                shape: if triangle { None } else { Some(Shape::Bar) },
                cx: rng.random_range(0.35 * s..=0.65 * s),
                cy: rng.random_range(0.35 * s..=0.65 * s),
                r: rng.random_range(0.25 * s..=0.4 * s),
                angle,
                colour: shape_colour(&mut rng),
            });
        }
        ShapeTask::Count => {
            let count = label as usize + 1;
            'attempt: for attempt in 0..50 {
                placed.clear();
                let shrink = 1.0 - 0.01 * attempt as f32;
                for _ in 0..count {
                    let r = rng.random_range((0.07 * s).max(2.0)..=(0.11 * s).max(2.5)) * shrink;
                    let mut ok = None;
                    for _ in 0..200 {
                        let cx = rng.random_range(r + 1.0..=s - r - 1.0);
                        let cy = rng.random_range(r + 1.0..=s - r - 1.0);
                        let clear = placed.iter().all(|q: &Placed| {
                            let d = ((q.cx - cx).powi(2) + (q.cy - cy).powi(2)).sqrt();
                            d >= q.r + r + 2.0
                        });
                        if clear {
                            ok = Some((cx, cy));
                            break;
                        }
                    }
                    let Some((cx, cy)) = ok else {
                        continue 'attempt;
                    };
                    placed.push(Placed {
                        shape: Some(
                            [Shape::Circle, Shape::Square, Shape::Triangle][rng.random_range(0..3)],
                        ),
                        cx,
                        cy,
                        r,
                        angle: rng.random_range(0.0..2.0 * PI),
                        colour: shape_colour(&mut rng),
                    });
                }
                break;
            }
        }
    }
    for p in &placed {
        draw(&mut img, p);
    }
    add_noise(&mut img, &mut rng);
    img
}

/// Balanced labels: each block of `k` consecutive examples is a random permutation of `0..k`.
pub(crate) fn balanced_labels(n: usize, k: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(0);
    let mut labels = Vec::with_capacity(n);
    while labels.len() < n {
        let mut block: Vec<u32> = (0..k as u32).collect();
        for i in (1..k).rev() {
            block.swap(i, rng.random_range(0..=i));
        }
        let take = (n - labels.len()).min(k);
        labels.extend_from_slice(&block[..take]);
    }
    labels
}

/// Generates `n` examples of `task` at `image_size x image_size` (at least 8), deterministically from
/// `seed`. Images are held decoded ([`ImageSource::Rgb`]); rendering runs in parallel.
pub fn generate(task: ShapeTask, n: usize, seed: u64, image_size: usize) -> ImageDataset {
    let image_size = image_size.max(8);
    let labels = balanced_labels(n, task.num_classes(), seed);
    let items = labels
        .par_iter()
        .enumerate()
        .map(|(i, &l)| ImageSource::Rgb(Arc::new(render(task, l, seed, i, image_size))))
        .collect();
    ImageDataset {
        name: format!("synthetic/{}", task.name()),
        items,
        labels,
        num_classes: task.num_classes(),
    }
}

/// The dataset with every decoded image stored as JPEG bytes (quality 90), as photo datasets
/// hold them: loading it then decodes, resizes and normalises like real data (benchmarks of the
/// input pipeline).
pub fn encode_jpeg(ds: ImageDataset) -> ImageDataset {
    let name = ds.name.clone();
    let items = ds
        .items
        .into_par_iter()
        .enumerate()
        .map(|(i, item)| match item {
            ImageSource::Rgb(img) => {
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode_image(img.as_ref())
                    .expect("encoding an RGB image in memory cannot fail");
                ImageSource::Encoded {
                    origin: format!("{name} item {i} (JPEG)"),
                    bytes: bytes.into(),
                }
            }
            other => other,
        })
        .collect();
    ImageDataset { items, ..ds }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn jpeg_copies_decode_to_nearly_the_same_pixels() {
        let ds = generate(ShapeTask::Shapes, 4, 1, 32);
        let jpeg = encode_jpeg(ds.clone());
        assert_eq!(jpeg.labels, ds.labels);
        for (a, b) in ds.items.iter().zip(&jpeg.items) {
            assert!(matches!(b, ImageSource::Encoded { .. }));
            let (a, b) = (a.decode().unwrap(), b.decode().unwrap());
            let mean_error = a
                .as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(&x, &y)| (x as f64 - y as f64).abs())
                .sum::<f64>()
                / a.as_raw().len() as f64;
            assert!(mean_error < 8.0, "mean absolute error {mean_error}");
        }
    }

    pub(crate) fn rgb(ds: &ImageDataset, i: usize) -> &RgbImage {
        match &ds.items[i] {
            ImageSource::Rgb(img) => img,
            _ => unreachable!(),
        }
    }

    /// Foreground mask: shape colours have every channel >= 150 - 6, background < 112 + 6.
    fn mask(img: &RgbImage) -> Vec<bool> {
        img.pixels()
            .map(|p| p.0.iter().all(|&v| v >= 128))
            .collect()
    }

    fn components(img: &RgbImage) -> usize {
        blobs(img).len()
    }

    /// The 8-connected foreground blobs, each as its pixel indices (`y * width + x`).
    pub(crate) fn blobs(img: &RgbImage) -> Vec<Vec<usize>> {
        let s = img.width() as i64;
        let m = mask(img);
        let mut seen = vec![false; m.len()];
        let mut found = Vec::new();
        for start in 0..m.len() {
            if !m[start] || seen[start] {
                continue;
            }
            let mut blob = Vec::new();
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(i) = stack.pop() {
                blob.push(i);
                let (x, y) = (i as i64 % s, i as i64 / s);
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (nx, ny) = (x + dx, y + dy);
                        if nx >= 0 && ny >= 0 && nx < s && ny < s {
                            let j = (ny * s + nx) as usize;
                            if m[j] && !seen[j] {
                                seen[j] = true;
                                stack.push(j);
                            }
                        }
                    }
                }
            }
            found.push(blob);
        }
        found
    }

    #[test]
    fn deterministic_and_balanced() {
        for task in ShapeTask::ALL {
            let a = generate(task, 100, 3, 32);
            let b = generate(task, 100, 3, 32);
            assert_eq!(a.labels, b.labels);
            for i in 0..a.len() {
                assert_eq!(rgb(&a, i).as_raw(), rgb(&b, i).as_raw(), "{task} image {i}");
            }
            let c = generate(task, 100, 4, 32);
            assert_ne!(rgb(&a, 0).as_raw(), rgb(&c, 0).as_raw());
            let counts = a.class_counts();
            let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
            assert!(max - min <= 1, "{task}: {counts:?}");
            assert_eq!(a.num_classes, task.num_classes());
            assert!(a.labels.iter().all(|&l| (l as usize) < task.num_classes()));
            // Every image shows something.
            assert!(
                (0..a.len()).all(|i| mask(rgb(&a, i)).iter().any(|&m| m)),
                "{task}: empty image"
            );
        }
    }

    #[test]
    fn labels_are_recoverable() {
        // count: exactly label + 1 separate blobs.
        let ds = generate(ShapeTask::Count, 240, 11, 32);
        for i in 0..ds.len() {
            assert_eq!(
                components(rgb(&ds, i)),
                ds.labels[i] as usize + 1,
                "count image {i}"
            );
        }
        // position: the foreground centroid lies in the labelled cell (almost always).
        let ds = generate(ShapeTask::Position, 270, 5, 32);
        let mut right = 0;
        for i in 0..ds.len() {
            let m = mask(rgb(&ds, i));
            let (mut sx, mut sy, mut n) = (0f32, 0f32, 0f32);
            for (j, _) in m.iter().enumerate().filter(|(_, &v)| v) {
                sx += (j % 32) as f32 + 0.5;
                sy += (j / 32) as f32 + 0.5;
                n += 1.0;
            }
            let cell = 32.0 / 3.0;
            let (col, row) = ((sx / n / cell) as u32, (sy / n / cell) as u32);
            right += usize::from(row * 3 + col == ds.labels[i]);
        }
        assert!(right >= 260, "position centroid matched {right}/270");
    }

    #[test]
    fn task_names_round_trip() {
        for t in ShapeTask::ALL {
            assert_eq!(ShapeTask::from_name(t.name()), Some(t));
            assert_eq!(t.name().parse::<ShapeTask>().unwrap(), t);
            assert!(!t.description().is_empty());
        }
        assert!("nope".parse::<ShapeTask>().is_err());
    }
}
