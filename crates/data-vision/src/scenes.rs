//! Generated multi-attribute scenes: a pretraining corpus whose every image carries several labels,
//! and a family of compositional two-skill tasks for multi-task demos.
//!
//! A scene is one *primary* shape, drawn with chosen attributes, plus `count - 1` tiny distractor
//! shapes (circle, square or triangle, random colour) that never touch it or each other. Rendering
//! uses the primitives of [`synthetic`](crate::synthetic): the same background (dark gradient),
//! rasterisation and noise, so shapes stay bright (every channel of every hue is at least 150) over a
//! background below 112. Generation is deterministic: the same arguments give bit-identical images on
//! every platform (ChaCha8; image `i` uses stream `i + 1` of the seed, as `synthetic` does).
//!
//! Attributes of a scene ([`SceneLabels`]; the pretraining heads are [`Attribute::ALL`]):
//!
//! | attribute | classes | values |
//! |---|---|---|
//! | `shape` | 6 | the primary's type, as [`Shape::ALL`] (circle, square, triangle, bar, ring, cross) |
//! | `colour` | 4 | the primary's hue: red, green, blue, yellow ([`Hue`]) |
//! | `size` | 2 | the primary's radius: small (13-16% of the side) or large (22-28%) |
//! | `quadrant` | 4 | the image quadrant holding the primary's centre: `2 * bottom + right` |
//! | `count` | [`MAX_COUNT`] | shapes in the image, primary included (label = count - 1) |
//!
//! Distractors (radius 6-8% of the side, at least 1.5 px) are always much smaller than a small
//! primary, so "the primary" is "the largest shape". The primary's centre keeps 6% of the side away
//! from the midlines, so its quadrant is never ambiguous. Each attribute is balanced on its own (every
//! block of `classes` consecutive examples holds each value once) and drawn independently of the
//! others.
//!
//! # Compositional tasks
//!
//! [`Skill::ALL`] are five binary latent skills, each a two-valued reading of one attribute:
//!
//! | skill | value 0 | value 1 |
//! |---|---|---|
//! | `shape` | round (circle, ring) | angular (square, triangle, cross) |
//! | `colour` | warm (red, yellow) | cool (green, blue) |
//! | `size` | small | large |
//! | `horizontal` | left half | right half |
//! | `vertical` | top half | bottom half |
//!
//! Task `a+b` (`a != b`, e.g. `colour+size`; [`generate_composition`]) labels an image
//! `2 * value_a + value_b`: four balanced classes. Every other skill, the exact shape and hue within
//! the drawn group, and the count (1 to [`MAX_COUNT`]) are random nuisance. The bar is in no group,
//! so composition scenes never show a bar primary.

use std::sync::Arc;

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::synthetic::{add_noise, background, balanced_labels, draw, Placed, Shape};
use crate::{ImageDataset, ImageSource};

/// The most shapes in a scene (so the `count` attribute has this many classes).
pub const MAX_COUNT: usize = 4;

/// The smallest image side scenes are drawn at (smaller requests are rounded up): below it a small
/// primary no longer fits inside its quadrant with the midline margin.
const MIN_SIZE: usize = 16;

/// A named hue; its index in [`Hue::ALL`] is the `colour` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hue {
    Red,
    Green,
    Blue,
    Yellow,
}

impl Hue {
    pub const ALL: [Hue; 4] = [Hue::Red, Hue::Green, Hue::Blue, Hue::Yellow];

    pub fn name(&self) -> &'static str {
        match self {
            Hue::Red => "red",
            Hue::Green => "green",
            Hue::Blue => "blue",
            Hue::Yellow => "yellow",
        }
    }

    /// A jittered RGB value: the hue's strong channels in 220..=255, the others in 150..=175, so the
    /// hue is plain at a glance while every channel stays as bright as `synthetic` requires.
    pub(crate) fn rgb(&self, rng: &mut ChaCha8Rng) -> [u8; 3] {
        let strong = match self {
            Hue::Red => [true, false, false],
            Hue::Green => [false, true, false],
            Hue::Blue => [false, false, true],
            Hue::Yellow => [true, true, false],
        };
        strong.map(|s| {
            if s {
                rng.random_range(220..=255u8)
            } else {
                rng.random_range(150..=175u8)
            }
        })
    }
}

/// Every attribute of one scene.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SceneLabels {
    /// The primary shape's type.
    pub shape: Shape,
    /// The primary shape's hue.
    pub colour: Hue,
    /// Whether the primary shape is large (else small).
    pub large: bool,
    /// The quadrant of the primary's centre: `2 * bottom + right` (0 top-left, 3 bottom-right).
    pub quadrant: u8,
    /// Shapes in the image, primary included: `1..=MAX_COUNT`.
    pub count: u8,
}

/// One classification target of a scene; [`Attribute::ALL`] are the pretraining heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    Shape,
    Colour,
    Size,
    Quadrant,
    Count,
}

impl Attribute {
    pub const ALL: [Attribute; 5] = [
        Attribute::Shape,
        Attribute::Colour,
        Attribute::Size,
        Attribute::Quadrant,
        Attribute::Count,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Attribute::Shape => "shape",
            Attribute::Colour => "colour",
            Attribute::Size => "size",
            Attribute::Quadrant => "quadrant",
            Attribute::Count => "count",
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Attribute::Shape => Shape::ALL.len(),
            Attribute::Colour => Hue::ALL.len(),
            Attribute::Size => 2,
            Attribute::Quadrant => 4,
            Attribute::Count => MAX_COUNT,
        }
    }

    /// This attribute's label of `scene` (`< num_classes()`).
    pub fn label(&self, scene: &SceneLabels) -> u32 {
        match self {
            Attribute::Shape => index_of(&Shape::ALL, scene.shape),
            Attribute::Colour => index_of(&Hue::ALL, scene.colour),
            Attribute::Size => u32::from(scene.large),
            Attribute::Quadrant => u32::from(scene.quadrant),
            Attribute::Count => u32::from(scene.count) - 1,
        }
    }

    /// A distinct seed for this attribute's balanced label draw, so attributes are independent
    /// (each draw reads stream 0 of its own seed; images read streams 1.. of the base seed).
    fn label_seed(&self, seed: u64) -> u64 {
        seed ^ (0x5343_454e_4500_0000 | (*self as u64 + 1))
    }
}

fn index_of<T: PartialEq>(all: &[T], value: T) -> u32 {
    all.iter()
        .position(|v| *v == value)
        .expect("value is listed") as u32
}

/// A generated multi-attribute corpus: images and every attribute of each.
#[derive(Clone, Debug)]
pub struct SceneCorpus {
    pub items: Vec<ImageSource>,
    pub labels: Vec<SceneLabels>,
}

impl SceneCorpus {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The images labelled by one attribute (images shared, not copied).
    pub fn dataset(&self, attribute: Attribute) -> ImageDataset {
        ImageDataset {
            name: format!("scenes/{}", attribute.name()),
            items: self.items.clone(),
            labels: self.labels.iter().map(|l| attribute.label(l)).collect(),
            num_classes: attribute.num_classes(),
        }
    }

    /// The labels of `attributes` for every image, row-major `[len, attributes.len()]`.
    pub fn label_matrix(&self, attributes: &[Attribute]) -> Vec<u32> {
        self.labels
            .iter()
            .flat_map(|l| attributes.iter().map(move |a| a.label(l)))
            .collect()
    }
}

/// Generates `n` scenes at `image_size x image_size` (at least 16) deterministically from `seed`,
/// every attribute balanced and independent of the others.
pub fn generate_scenes(n: usize, seed: u64, image_size: usize) -> SceneCorpus {
    let draws: Vec<Vec<u32>> = Attribute::ALL
        .iter()
        .map(|a| balanced_labels(n, a.num_classes(), a.label_seed(seed)))
        .collect();
    let labels: Vec<SceneLabels> = (0..n)
        .map(|i| SceneLabels {
            shape: Shape::ALL[draws[0][i] as usize],
            colour: Hue::ALL[draws[1][i] as usize],
            large: draws[2][i] == 1,
            quadrant: draws[3][i] as u8,
            count: draws[4][i] as u8 + 1,
        })
        .collect();
    let items = render_all(&labels, seed, image_size);
    SceneCorpus { items, labels }
}

fn render_all(labels: &[SceneLabels], seed: u64, image_size: usize) -> Vec<ImageSource> {
    labels
        .par_iter()
        .enumerate()
        .map(|(i, l)| ImageSource::Rgb(Arc::new(render_scene(l, seed, i, image_size))))
        .collect()
}

/// Renders scene `index` of `seed` with the attributes `labels`.
pub fn render_scene(labels: &SceneLabels, seed: u64, index: usize, image_size: usize) -> RgbImage {
    let s = image_size.max(MIN_SIZE) as f32;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64 + 1);
    let (mut img, ..) = background(&mut rng, s as u32);
    let r = if labels.large {
        rng.random_range(0.22 * s..=0.28 * s)
    } else {
        rng.random_range(0.13 * s..=0.16 * s)
    };
    // The centre's range along one axis on the near side of the midline: inside the image by a
    // pixel, and 6% of the side clear of the midline.
    let (near, far) = (r + 1.0, (0.5 - 0.06) * s);
    let along = |rng: &mut ChaCha8Rng, second_half: bool| {
        let v = rng.random_range(near..=far.max(near));
        if second_half {
            s - v
        } else {
            v
        }
    };
    let cx = along(&mut rng, labels.quadrant % 2 == 1);
    let cy = along(&mut rng, labels.quadrant / 2 == 1);
    let primary = Placed {
        shape: Some(labels.shape),
        cx,
        cy,
        r,
        angle: rng.random_range(0.0..2.0 * std::f32::consts::PI),
        colour: labels.colour.rgb(&mut rng),
    };
    let distractors = place_distractors(&mut rng, &primary, labels.count as usize - 1, s);
    for p in std::iter::once(&primary).chain(&distractors) {
        draw(&mut img, p);
    }
    add_noise(&mut img, &mut rng);
    img
}

/// `k` tiny shapes placed by rejection so that no two shapes (the primary included) come within
/// 2 px of each other's bounding circles, which keeps every shape a separate blob. Each failed
/// attempt restarts all `k` slightly smaller, as the `count` task does; with at most three tiny
/// shapes beside one primary the first attempt practically always succeeds.
fn place_distractors(rng: &mut ChaCha8Rng, primary: &Placed, k: usize, s: f32) -> Vec<Placed> {
    let mut placed: Vec<Placed> = Vec::with_capacity(k);
    'attempt: for attempt in 0..50 {
        placed.clear();
        let shrink = 1.0 - 0.01 * attempt as f32;
        for _ in 0..k {
            let r = rng.random_range((0.06 * s).max(1.5)..=(0.08 * s).max(2.0)) * shrink;
            let spot = (0..200).find_map(|_| {
                let cx = rng.random_range(r + 1.0..=s - r - 1.0);
                let cy = rng.random_range(r + 1.0..=s - r - 1.0);
                let clear = std::iter::once(primary)
                    .chain(&placed)
                    .all(|q| ((q.cx - cx).powi(2) + (q.cy - cy).powi(2)).sqrt() >= q.r + r + 2.0);
                clear.then_some((cx, cy))
            });
            let Some((cx, cy)) = spot else {
                continue 'attempt;
            };
            placed.push(Placed {
                shape: Some(
                    [Shape::Circle, Shape::Square, Shape::Triangle][rng.random_range(0..3)],
                ),
                cx,
                cy,
                r,
                angle: rng.random_range(0.0..2.0 * std::f32::consts::PI),
                colour: Hue::ALL[rng.random_range(0..Hue::ALL.len())].rgb(rng),
            });
        }
        break;
    }
    placed
}

/// A binary latent skill of the compositional tasks (see the module docs for its two values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skill {
    Shape,
    Colour,
    Size,
    Horizontal,
    Vertical,
}

impl Skill {
    pub const ALL: [Skill; 5] = [
        Skill::Shape,
        Skill::Colour,
        Skill::Size,
        Skill::Horizontal,
        Skill::Vertical,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Skill::Shape => "shape",
            Skill::Colour => "colour",
            Skill::Size => "size",
            Skill::Horizontal => "horizontal",
            Skill::Vertical => "vertical",
        }
    }

    /// Parses a name as written by [`Skill::name`] (case and surrounding space ignored).
    pub fn from_name(name: &str) -> Option<Skill> {
        let name = name.trim().to_ascii_lowercase();
        Skill::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The names of its values 0 and 1.
    pub fn values(&self) -> [&'static str; 2] {
        match self {
            Skill::Shape => ["round", "angular"],
            Skill::Colour => ["warm", "cool"],
            Skill::Size => ["small", "large"],
            Skill::Horizontal => ["left", "right"],
            Skill::Vertical => ["top", "bottom"],
        }
    }

    /// A distinct seed for this skill's balanced value draw (when it is nuisance).
    fn value_seed(&self, seed: u64) -> u64 {
        seed ^ (0x534b_494c_4c00_0000 | (*self as u64 + 1))
    }
}

/// The names of [`Skill::ALL`], in order (the columns of [`skill_matrix`]).
pub fn skill_names() -> Vec<&'static str> {
    Skill::ALL.iter().map(Skill::name).collect()
}

/// Parses a composition task name `a+b` (two different skill names, e.g. `colour+size`).
pub fn parse_composition(name: &str) -> Result<(Skill, Skill), String> {
    let expected = || {
        format!(
            "expected `a+b` with two different skills of {:?}",
            skill_names()
        )
    };
    let (a, b) = name
        .split_once('+')
        .ok_or_else(|| format!("composition task {name:?}: {}", expected()))?;
    let skill = |part: &str| {
        Skill::from_name(part).ok_or_else(|| {
            format!(
                "composition task {name:?}: unknown skill {part:?}; {}",
                expected()
            )
        })
    };
    let (a, b) = (skill(a)?, skill(b)?);
    if a == b {
        return Err(format!("composition task {name:?}: {}", expected()));
    }
    Ok((a, b))
}

/// The name of composition task `(a, b)`: `a+b`.
pub fn composition_name(a: Skill, b: Skill) -> String {
    format!("{}+{}", a.name(), b.name())
}

/// The ground-truth task-to-skill matrix: one row per task, one column per skill of
/// [`Skill::ALL`], 1.0 where the task reads the skill and 0.0 elsewhere.
pub fn skill_matrix(tasks: &[(Skill, Skill)]) -> Vec<Vec<f32>> {
    tasks
        .iter()
        .map(|&(a, b)| {
            Skill::ALL
                .iter()
                .map(|&s| if s == a || s == b { 1.0 } else { 0.0 })
                .collect()
        })
        .collect()
}

/// Generates `n` examples of composition task `a+b` at `image_size` (at least 16), deterministically
/// from `seed`: label `2 * value_a + value_b`, balanced over the four classes, every other attribute
/// random. Panics when `a == b` (such a task has two classes, not four).
pub fn generate_composition(
    a: Skill,
    b: Skill,
    n: usize,
    seed: u64,
    image_size: usize,
) -> ImageDataset {
    assert_ne!(a, b, "a composition task reads two different skills");
    let labels = balanced_labels(n, 4, seed);
    let mut values: Vec<Vec<u32>> = Skill::ALL
        .iter()
        .map(|s| balanced_labels(n, 2, s.value_seed(seed)))
        .collect();
    values[a as usize] = labels.iter().map(|l| l / 2).collect();
    values[b as usize] = labels.iter().map(|l| l % 2).collect();
    // Which shape and hue of the drawn group, and the count: drawn in order from their own stream,
    // before the images are rendered in parallel.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4e55_4953_414e_4345);
    let scenes: Vec<SceneLabels> = (0..n)
        .map(|i| {
            let value = |s: Skill| values[s as usize][i] == 1;
            let shapes: &[Shape] = if value(Skill::Shape) {
                &[Shape::Square, Shape::Triangle, Shape::Cross]
            } else {
                &[Shape::Circle, Shape::Ring]
            };
            let hues = if value(Skill::Colour) {
                [Hue::Green, Hue::Blue]
            } else {
                [Hue::Red, Hue::Yellow]
            };
            SceneLabels {
                shape: shapes[rng.random_range(0..shapes.len())],
                colour: hues[rng.random_range(0..hues.len())],
                large: value(Skill::Size),
                quadrant: 2 * u8::from(value(Skill::Vertical)) + u8::from(value(Skill::Horizontal)),
                count: rng.random_range(1..=MAX_COUNT as u8),
            }
        })
        .collect();
    ImageDataset {
        name: format!("scenes/{}", composition_name(a, b)),
        items: render_all(&scenes, seed, image_size),
        labels,
        num_classes: 4,
    }
}

/// Classes of [`generate_objects`]: every shape in every colour.
pub const OBJECT_CLASSES: usize = Shape::ALL.len() * Hue::ALL.len();

/// Generates `n` images of the object task at `image_size` (at least 16), deterministically from
/// `seed`: label `4 * shape + colour` of the primary shape (indices into [`Shape::ALL`] and
/// [`Hue::ALL`]), balanced over the [`OBJECT_CLASSES`] classes; size, quadrant and count random.
/// The continual-learning demo streams these classes a few at a time.
pub fn generate_objects(n: usize, seed: u64, image_size: usize) -> ImageDataset {
    let labels = balanced_labels(n, OBJECT_CLASSES, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4f42_4a45_4354_5300);
    let scenes: Vec<SceneLabels> = labels
        .iter()
        .map(|&label| {
            let label = label as usize;
            SceneLabels {
                shape: Shape::ALL[label / Hue::ALL.len()],
                colour: Hue::ALL[label % Hue::ALL.len()],
                large: rng.random_bool(0.5),
                quadrant: rng.random_range(0..4),
                count: rng.random_range(1..=MAX_COUNT as u8),
            }
        })
        .collect();
    ImageDataset {
        name: "scenes/objects".into(),
        items: render_all(&scenes, seed, image_size),
        labels,
        num_classes: OBJECT_CLASSES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::tests::{blobs, rgb};

    /// Object labels name the primary's shape and colour, every class equally often.
    #[test]
    fn objects_are_labelled_by_shape_and_colour_and_balanced() {
        let ds = generate_objects(48, 5, 32);
        assert_eq!(ds.num_classes, 24);
        let mut counts = [0usize; OBJECT_CLASSES];
        for &l in &ds.labels {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == 2), "{counts:?}");
        let again = generate_objects(48, 5, 32);
        assert_eq!(again.labels, ds.labels);
        for (a, b) in ds.items.iter().zip(&again.items) {
            let (ImageSource::Rgb(a), ImageSource::Rgb(b)) = (a, b) else {
                panic!("generated images are decoded")
            };
            assert_eq!(a.as_raw(), b.as_raw());
        }
        // The primary's colour is its label's hue: its mean pixel's strongest channel.
        for (item, &label) in ds.items.iter().zip(&ds.labels).take(8) {
            let ImageSource::Rgb(img) = item else {
                unreachable!()
            };
            let (colour, _) = colour_and_centroid(img, &primary(img));
            let hue = Hue::ALL[label as usize % Hue::ALL.len()];
            let strongest = (0..3)
                .max_by(|&i, &j| colour[i].total_cmp(&colour[j]))
                .unwrap();
            match hue {
                Hue::Red => assert_eq!(strongest, 0, "{colour:?}"),
                Hue::Green => assert_eq!(strongest, 1, "{colour:?}"),
                Hue::Blue => assert_eq!(strongest, 2, "{colour:?}"),
                Hue::Yellow => assert!(colour[2] < colour[0].min(colour[1]), "{colour:?}"),
            }
        }
    }

    /// The largest blob's pixel indices: the primary shape.
    fn primary(img: &RgbImage) -> Vec<usize> {
        blobs(img)
            .into_iter()
            .max_by_key(Vec::len)
            .expect("every scene shows a shape")
    }

    /// Mean `[r, g, b]` and centroid `(x, y)` of the given pixels.
    fn colour_and_centroid(img: &RgbImage, pixels: &[usize]) -> ([f32; 3], (f32, f32)) {
        let w = img.width() as usize;
        let (mut c, mut x, mut y) = ([0f32; 3], 0f32, 0f32);
        for &i in pixels {
            let p = img.get_pixel((i % w) as u32, (i / w) as u32).0;
            for k in 0..3 {
                c[k] += p[k] as f32;
            }
            x += (i % w) as f32 + 0.5;
            y += (i / w) as f32 + 0.5;
        }
        let n = pixels.len() as f32;
        (c.map(|v| v / n), (x / n, y / n))
    }

    #[test]
    fn scenes_are_deterministic_balanced_and_counted_right() {
        let a = generate_scenes(120, 7, 32);
        let b = generate_scenes(120, 7, 32);
        assert_eq!(a.labels, b.labels);
        let c = generate_scenes(120, 8, 32);
        assert_ne!(a.labels, c.labels);
        for attribute in Attribute::ALL {
            let ds = a.dataset(attribute);
            let counts = ds.class_counts();
            assert_eq!(counts.len(), attribute.num_classes());
            let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
            assert!(max - min <= 1, "{}: {counts:?}", attribute.name());
        }
        // Attributes are drawn independently: no two share their label sequence's pattern.
        assert_ne!(
            a.dataset(Attribute::Size).labels,
            a.dataset(Attribute::Count)
                .labels
                .iter()
                .map(|l| l % 2)
                .collect::<Vec<_>>()
        );
        let (ds, again) = (a.dataset(Attribute::Count), b.dataset(Attribute::Count));
        for i in 0..a.len() {
            let img = rgb(&ds, i);
            assert_eq!(img.as_raw(), rgb(&again, i).as_raw(), "scene {i}");
            assert_eq!(blobs(img).len(), a.labels[i].count as usize, "scene {i}");
        }
        let matrix = a.label_matrix(&Attribute::ALL);
        assert_eq!(matrix.len(), a.len() * Attribute::ALL.len());
        assert_eq!(
            matrix[Attribute::ALL.len() + 4],
            u32::from(a.labels[1].count) - 1
        );
    }

    #[test]
    fn composition_labels_match_the_pixels() {
        let tasks = [
            (Skill::Colour, Skill::Horizontal),
            (Skill::Vertical, Skill::Colour),
            (Skill::Horizontal, Skill::Vertical),
        ];
        for (a, b) in tasks {
            let ds = generate_composition(a, b, 200, 3, 32);
            let again = generate_composition(a, b, 200, 3, 32);
            assert_eq!(ds.labels, again.labels);
            assert_eq!(ds.num_classes, 4);
            assert_eq!(ds.class_counts(), vec![50; 4], "{}", ds.name);
            for i in 0..ds.len() {
                assert_eq!(
                    rgb(&ds, i).as_raw(),
                    rgb(&again, i).as_raw(),
                    "{} image {i}",
                    ds.name
                );
                let img = rgb(&ds, i);
                let pixels = primary(img);
                let ([r, _, bl], (x, y)) = colour_and_centroid(img, &pixels);
                let s = img.width() as f32;
                let drawn = |skill: Skill| -> u32 {
                    match skill {
                        // Warm hues (red, yellow) have a strong red channel, cool ones a weak one.
                        Skill::Colour => u32::from(r < bl + 30.0),
                        Skill::Horizontal => u32::from(x > s / 2.0),
                        Skill::Vertical => u32::from(y > s / 2.0),
                        _ => unreachable!("only these skills are checked"),
                    }
                };
                let expect = |skill: Skill, value: u32| {
                    assert_eq!(
                        drawn(skill),
                        value,
                        "{} image {i}: {}",
                        ds.name,
                        skill.name()
                    );
                };
                expect(a, ds.labels[i] / 2);
                expect(b, ds.labels[i] % 2);
            }
        }
    }

    #[test]
    fn composition_names_and_matrix() {
        assert_eq!(
            skill_names(),
            ["shape", "colour", "size", "horizontal", "vertical"]
        );
        assert_eq!(
            parse_composition("colour+size"),
            Ok((Skill::Colour, Skill::Size))
        );
        assert_eq!(
            parse_composition(" Vertical + shape"),
            Ok((Skill::Vertical, Skill::Shape))
        );
        assert!(parse_composition("colour+colour").is_err());
        assert!(parse_composition("colour").is_err());
        assert!(parse_composition("colour+hue").is_err());
        assert_eq!(
            composition_name(Skill::Size, Skill::Horizontal),
            "size+horizontal"
        );
        let matrix = skill_matrix(&[
            (Skill::Colour, Skill::Size),
            (Skill::Vertical, Skill::Shape),
        ]);
        assert_eq!(
            matrix,
            [vec![0.0, 1.0, 1.0, 0.0, 0.0], vec![1.0, 0.0, 0.0, 0.0, 1.0]]
        );
        for skill in Skill::ALL {
            assert_eq!(Skill::from_name(skill.name()), Some(skill));
        }
    }
}
