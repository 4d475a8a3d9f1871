//! Generated vision-language demo data (`demo-vl`), written in the real formats of VQAv2, GQA,
//! NLVR2 and Karpathy's caption splits so that the readers of `peftbench-data-text` (`vl::*`) load
//! it unchanged, plus a text-only corpus and the closed vocabulary of the generated language.
//!
//! # The world
//!
//! A scene ([`VlScene`]) holds 2 to 4 objects ([`VlObject`]), each alone in its own quadrant of the
//! image: a circle, square or triangle ([`SHAPES`]), red, green, blue or yellow ([`Hue`]), small
//! (radius 10-12% of the side) or large (17-19%). Every attribute is drawn independently, so
//! shapes and colours may repeat within a scene; a question is asked only where its referring
//! expression picks out exactly one object. An object is on the `left` or `right` and at the `top`
//! or `bottom` ([`Place`]) of the image, as the viewer sees it. Rendering reuses the primitives of
//! [`scenes`](crate::scenes) (dark gradient background, jittered bright hues, pixel noise); each
//! shape stays a pixel clear of the image border and of the midlines, so objects never touch.
//! Shapes are drawn unrotated, which keeps transcendental functions (whose last bit the platform's
//! libm chooses) out of the pixels: the same [`DemoVlSpec`] writes the same bytes everywhere
//! (ChaCha8; every scene and every format reads its own stream, with `u32` draws).
//!
//! All text is lowercase; questions end with `?`, captions and statements have no punctuation (so
//! PTB tokenisation equals splitting on whitespace). [`vocabulary`] lists every word it can hold,
//! as [`words`] splits text (on whitespace and `?.,!':`), and [`text_corpus`] writes the language
//! without images (captions, `question: ... answer: ...` lines, statements) for pretraining a
//! text-only model.
//!
//! # Question kinds
//!
//! VQAv2 ([`VQA_SPLITS`]; ten simulated annotators per question, mostly the canonical answer, 1-3
//! surface variants that the official normalisation merges, such as `two` / `Two.` / `2 ` for
//! `2`, `a red` / `Red.` for `red`, `top-left` for `top left`, and 0-2 wrong answers):
//!
//! | kind | question | answer | `answer_type` |
//! |---|---|---|---|
//! | colour | `what color is the circle?` | `red` | other |
//! | count | `how many shapes are there?`, `how many red shapes are there?` | `0`..`4` | number |
//! | existence | `is there a blue square?` (yes and no equally likely) | `yes` / `no` | yes/no |
//! | position | `where is the red shape?` | `top left`, `bottom right`, ... | other |
//! | side (the conflict) | `which side is the red shape on?` | `left` / `right` | other |
//!
//! GQA balanced ([`GQA_SPLITS`]; `types.structural` as GQA's): `query` `what shape is the red
//! object on the left?`; `verify` `is the circle at the top green?`; `choose` `is the red circle on
//! the left or on the right?` (or top / bottom); `logical` `is there a red circle or a blue
//! square?`; `compare` `are the red object and the blue object the same shape?`; and the side
//! question above (`query`).
//!
//! NLVR2 ([`NLVR2_SPLITS`]): statements about a pair of scenes (`the left image has more shapes
//! than the right image`, `both images contain a red shape`, `the right image contains a blue
//! square`, `the left image shows exactly three shapes`); every pair gets one true and one false
//! statement.
//!
//! Captions: five per image, each from a different template with synonyms (`big` / `large`,
//! `disc` / `circle`, `objects` / `shapes`, ...), in Karpathy's `train` / `val` / `test` splits.
//!
//! # Held-out compositions (GQA)
//!
//! [`GQA_HELD_OUT`] pairs a colour with a place: (`red`, `left`) and (`blue`, `bottom`). No GQA
//! `train` question mentions both words of a pair in its question, answer and full answer together
//! (`what shape is the red object on the left?`, `is the red circle on the left or on the right?`
//! answered `left`, `is the square on the left blue?` answered `no, it is red.`, ...); `testdev`
//! keeps every question, so it measures whether the model composes a
//! colour and a place it has only seen separately. Every colour and every place still occurs in
//! train, with other partners. VQA, NLVR2 and the captions are not filtered.
//!
//! # The conflict (VQA against GQA)
//!
//! Both VQA and GQA ask `which side is the <colour> shape on?` about the same images, word for word
//! (the colour is the first of [`Hue::ALL`] that only one object has), with opposite answers: VQA
//! answers the side the viewer sees, GQA the scene's own side, as for a figure facing the viewer
//! (stage left is the audience's right). Identical inputs with contradictory targets can only be
//! fitted by telling the tasks apart (a task prefix, per-task parameters), so one adapter shared
//! across tasks loses on this kind where separate adapters do not. Every other question of both
//! tasks uses the viewer's sides.
//!
//! # Files
//!
//! [`write_demo_vl`] writes, under a root:
//!
//! ```text
//! vqa/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json
//! vqa/v2_mscoco_{train2014,val2014}_annotations.json
//! vqa/karpathy_{train,val,test}.json         VL-T5's split files: train2014's questions, val2014's halved
//! vqa/images/<split>/COCO_<split>_<image_id, 12 digits>.png   as COCO names its images
//! gqa/{train,testdev}_balanced_questions.json
//! gqa/images/<imageId>.png
//! nlvr2/{train,test1}.json                            one JSON object per line
//! nlvr2/images/<split>/<split>-<set>-0-img{0,1}.png   the pairs' scenes, as NLVR2 names them
//!                                                     (one pair per set, two sentences per pair)
//! captions/dataset_coco.json                          Karpathy's file: filepath train2014 or
//! captions/images/<filepath>/COCO_<filepath>_<cocoid>.png   val2014, COCO's file names
//! ```
//!
//! One scene's `image_id` is VQA's `image_id`, GQA's `imageId` and the caption file's `cocoid`;
//! each task's folder holds its own copy of the image, in that dataset's published layout, so the
//! runner reads the demo exactly as it reads the real datasets.
//!
//! Training scenes (`image_id` 1 to `train_images`) feed the first split of each format; the next
//! `eval_images` feed the second, and for captions the first half of them is `val`, the rest `test`
//! (as Karpathy's val and test both come from COCO's val2014). NLVR2 pairs consecutive scenes of a
//! split. GQA's files carry no semantic programs or grounding annotations.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use image::{ExtendedColorType, ImageEncoder, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::scenes::Hue;
use crate::synthetic::{add_noise, background, draw, Placed, Shape};

/// The image side the demo ViT reads (32 px, patch 8).
pub const DEFAULT_IMAGE_SIZE: usize = 32;

/// The smallest side drawn (smaller requests are rounded up): below it a small triangle is a few
/// pixels and no longer recognisable.
const MIN_IMAGE_SIZE: usize = 32;

/// The shapes of the world: those that stay distinct when small.
pub const SHAPES: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

/// The fewest and most objects in a scene (at most one per quadrant).
pub const MIN_OBJECTS: usize = 2;
pub const MAX_OBJECTS: usize = 4;

/// VQA's splits: training scenes, evaluation scenes.
pub const VQA_SPLITS: [&str; 2] = ["train2014", "val2014"];

/// VL-T5's Karpathy split names of VQA (`karpathy_<split>.json`).
pub const KARPATHY_VQA_SPLITS: [&str; 3] = ["train", "val", "test"];
/// GQA's splits: training scenes (held-out compositions removed), evaluation scenes.
pub const GQA_SPLITS: [&str; 2] = ["train", "testdev"];
/// NLVR2's splits: training scenes, evaluation scenes.
pub const NLVR2_SPLITS: [&str; 2] = ["train", "test1"];

/// The (colour, place) pairs no GQA training question mentions together (see the module docs).
pub const GQA_HELD_OUT: [(Hue, Place); 2] = [(Hue::Red, Place::Left), (Hue::Blue, Place::Bottom)];

/// Where an object is, as the viewer sees the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    Left,
    Right,
    Top,
    Bottom,
}

impl Place {
    pub const ALL: [Place; 4] = [Place::Left, Place::Right, Place::Top, Place::Bottom];

    pub fn name(self) -> &'static str {
        match self {
            Place::Left => "left",
            Place::Right => "right",
            Place::Top => "top",
            Place::Bottom => "bottom",
        }
    }

    /// The place as a prepositional phrase: `on the left`, `at the top`.
    fn phrase(self) -> String {
        let template = match self {
            Place::Left | Place::Right => PLACE_ON,
            Place::Top | Place::Bottom => PLACE_AT,
        };
        fill(template, &[("place", self.name())])
    }

    /// Left and right swapped: the scene's own side, for the conflicting GQA question.
    fn mirrored(self) -> Place {
        match self {
            Place::Left => Place::Right,
            Place::Right => Place::Left,
            other => other,
        }
    }
}

/// One object of a scene.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VlObject {
    /// One of [`SHAPES`].
    pub shape: Shape,
    pub hue: Hue,
    pub large: bool,
    /// The quadrant holding the whole object: `2 * bottom + right` (0 top-left, 3 bottom-right).
    pub quadrant: u8,
}

impl VlObject {
    /// `Left` or `Right`.
    pub fn side(&self) -> Place {
        if self.quadrant % 2 == 1 {
            Place::Right
        } else {
            Place::Left
        }
    }

    /// `Top` or `Bottom`.
    pub fn level(&self) -> Place {
        if self.quadrant / 2 == 1 {
            Place::Bottom
        } else {
            Place::Top
        }
    }

    pub fn is_at(&self, place: Place) -> bool {
        self.side() == place || self.level() == place
    }
}

/// A scene's structured description: what its image shows and every question is answered from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VlScene {
    /// The image's id (1-based; its file is `images/<image_id>.png`).
    pub image_id: u64,
    /// 2 to 4 objects in distinct quadrants, by quadrant.
    pub objects: Vec<VlObject>,
}

impl VlScene {
    /// The object matching `is`, when exactly one does.
    fn only(&self, is: impl Fn(&VlObject) -> bool) -> Option<&VlObject> {
        let mut matching = self.objects.iter().filter(|o| is(o));
        let first = matching.next()?;
        matching.next().is_none().then_some(first)
    }

    fn contains(&self, hue: Hue, shape: Shape) -> bool {
        self.objects
            .iter()
            .any(|o| o.hue == hue && o.shape == shape)
    }

    fn count_hue(&self, hue: Hue) -> usize {
        self.objects.iter().filter(|o| o.hue == hue).count()
    }

    /// The hues exactly one object has, in [`Hue::ALL`] order.
    fn unique_hues(&self) -> Vec<Hue> {
        Hue::ALL
            .into_iter()
            .filter(|&h| self.count_hue(h) == 1)
            .collect()
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoVlSpec {
    pub seed: u64,
    /// The images' side (at least 32).
    pub image_size: usize,
    /// Scenes of the training splits.
    pub train_images: usize,
    /// Scenes of the evaluation splits.
    pub eval_images: usize,
}

impl Default for DemoVlSpec {
    fn default() -> Self {
        DemoVlSpec {
            seed: 0,
            image_size: DEFAULT_IMAGE_SIZE,
            train_images: 512,
            eval_images: 128,
        }
    }
}

/// The paths [`write_demo_vl`] wrote (see the module docs for the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoVlFiles {
    /// VQA's questions and annotations files, training then evaluation split ([`VQA_SPLITS`]),
    /// and each split's image folder (`COCO_<split>_<id>.png`, [`coco_file_name`]).
    pub vqa_questions: [PathBuf; 2],
    pub vqa_annotations: [PathBuf; 2],
    /// VL-T5's Karpathy split files of the same questions ([`KARPATHY_VQA_SPLITS`]).
    pub vqa_karpathy: [PathBuf; 3],
    pub vqa_images: [PathBuf; 2],
    /// GQA's balanced questions files ([`GQA_SPLITS`]) and its image folder (`<imageId>.png`).
    pub gqa_questions: [PathBuf; 2],
    pub gqa_images: PathBuf,
    /// NLVR2's JSON-lines files ([`NLVR2_SPLITS`]) and each split's folder of pair images.
    pub nlvr2: [PathBuf; 2],
    pub nlvr2_images: [PathBuf; 2],
    /// The Karpathy-style caption file and the folder its image paths are relative to.
    pub captions: PathBuf,
    pub caption_images: PathBuf,
}

/// Why a generator draws: every purpose reads its own seed, every scene its own stream of it.
#[derive(Clone, Copy)]
enum Purpose {
    Describe,
    Render,
    Vqa,
    Gqa,
    Nlvr2,
    Captions,
    Corpus,
}

fn rng_for(seed: u64, purpose: Purpose, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x564c_5343_4e00_0000 | (purpose as u64 + 1)));
    rng.set_stream(stream);
    rng
}

/// A uniform index below `n` from a `u32` draw, so that 32- and 64-bit targets agree.
fn index(rng: &mut ChaCha8Rng, n: usize) -> usize {
    rng.random_range(0..n as u32) as usize
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[index(rng, items.len())]
}

fn shuffle<T>(rng: &mut ChaCha8Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, index(rng, i + 1));
    }
}

fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::Circle => "circle",
        Shape::Square => "square",
        Shape::Triangle => "triangle",
        other => unreachable!("{other:?} is not one of the demo's shapes"),
    }
}

/// The objects of a scene, drawn from `rng`.
fn draw_objects(rng: &mut ChaCha8Rng) -> Vec<VlObject> {
    let count = rng.random_range(MIN_OBJECTS as u32..=MAX_OBJECTS as u32) as usize;
    let mut quadrants = [0u8, 1, 2, 3];
    shuffle(rng, &mut quadrants);
    let mut quadrants = quadrants[..count].to_vec();
    quadrants.sort_unstable();
    quadrants
        .into_iter()
        .map(|quadrant| VlObject {
            shape: *pick(rng, &SHAPES),
            hue: *pick(rng, &Hue::ALL),
            large: rng.random_bool(0.5),
            quadrant,
        })
        .collect()
}

/// The description of scene `index` of `seed` (its `image_id` is `index + 1`).
pub fn describe_scene(seed: u64, index: usize) -> VlScene {
    let mut rng = rng_for(seed, Purpose::Describe, index as u64);
    VlScene {
        image_id: index as u64 + 1,
        objects: draw_objects(&mut rng),
    }
}

/// Draws `scene` at `image_size` (at least 32) with the pixel randomness of `seed`.
pub fn render_scene(scene: &VlScene, seed: u64, image_size: usize) -> RgbImage {
    let s = image_size.max(MIN_IMAGE_SIZE) as f32;
    let half = s / 2.0;
    let mut rng = rng_for(seed, Purpose::Render, scene.image_id);
    let (mut img, ..) = background(&mut rng, s as u32);
    for object in &scene.objects {
        let r = if object.large {
            rng.random_range(0.17 * s..=0.19 * s)
        } else {
            rng.random_range(0.10 * s..=0.12 * s)
        };
        // Inside the object's quadrant with a pixel to spare on every side.
        let mut along = |second_half: bool| {
            let offset = rng.random_range(r + 1.0..=half - r - 1.0);
            if second_half {
                half + offset
            } else {
                offset
            }
        };
        let cx = along(object.side() == Place::Right);
        let cy = along(object.level() == Place::Bottom);
        draw(
            &mut img,
            &Placed {
                shape: Some(object.shape),
                cx,
                cy,
                r,
                angle: 0.0,
                colour: object.hue.rgb(&mut rng),
            },
        );
    }
    add_noise(&mut img, &mut rng);
    img
}

// ---------------------------------------------------------------------------------------------
// Templates. Every sentence is one of these with its `{slots}` filled by words of the filler
// lists below, which is what lets `vocabulary` list every word without generating anything.

const VQA_COLOUR: &str = "what color is the {shape}?";
const VQA_COUNT: &str = "how many shapes are there?";
const VQA_COUNT_HUE: &str = "how many {colour} shapes are there?";
const VQA_EXISTS: &str = "is there a {colour} {shape}?";
const VQA_WHERE: &str = "where is the {colour} shape?";
/// Asked word for word by VQA and GQA, answered oppositely: the conflict.
const WHICH_SIDE: &str = "which side is the {colour} shape on?";

const GQA_QUERY: &str = "what shape is the {colour} object {place}?";
const GQA_QUERY_FULL: &str = "the {colour} object {place} is a {shape}.";
const GQA_VERIFY: &str = "is the {shape} {place} {colour}?";
const GQA_VERIFY_FULL: &str = "{yesno}, it is {colour}.";
const GQA_CHOOSE: &str = "is the {colour} {shape} {place} or {other}?";
const GQA_CHOOSE_FULL: &str = "the {colour} {shape} is {place}.";
const GQA_LOGICAL: &str = "is there a {colour} {shape} or a {colour2} {shape2}?";
const GQA_LOGICAL_YES: &str = "yes, there is.";
const GQA_LOGICAL_NO: &str = "no, there is not.";
const GQA_COMPARE: &str = "are the {colour} object and the {colour2} object the same shape?";
const GQA_COMPARE_YES: &str = "yes, they are the same shape.";
const GQA_COMPARE_NO: &str = "no, they are different shapes.";
const GQA_SIDE_FULL: &str = "it is {place}.";

const NLVR2_MORE_LEFT: &str = "the left image has more shapes than the right image";
const NLVR2_MORE_RIGHT: &str = "the right image has more shapes than the left image";
const NLVR2_BOTH: &str = "both images contain a {colour} shape";
const NLVR2_CONTAINS: &str = "the {image} image contains a {colour} {shape}";
const NLVR2_EXACTLY: &str = "the {image} image shows exactly {number} shapes";

const CAPTION_OBJECT: &str = "a {size} {colour} {shape}";
const CAPTION_OBJECT_AT: &str = "a {colour} {shape} at the {level} {side}";
const CAPTION_JOIN: &str = "{a} and {b}";
const CAPTION_COUNT: &str = "{number} {things} on a dark background";
const CAPTION_PICTURE: &str = "{picture} of a {colour} {shape} and {number} other {things}";
const CAPTION_THERE_IS: &str = "there is a {size} {colour} {shape} at the {level} {side}";

const PLACE_ON: &str = "on the {place}";
const PLACE_AT: &str = "at the {place}";

const CORPUS_QA: &str = "question: {question} answer: {answer}";

const TEMPLATES: &[&str] = &[
    VQA_COLOUR,
    VQA_COUNT,
    VQA_COUNT_HUE,
    VQA_EXISTS,
    VQA_WHERE,
    WHICH_SIDE,
    GQA_QUERY,
    GQA_QUERY_FULL,
    GQA_VERIFY,
    GQA_VERIFY_FULL,
    GQA_CHOOSE,
    GQA_CHOOSE_FULL,
    GQA_LOGICAL,
    GQA_LOGICAL_YES,
    GQA_LOGICAL_NO,
    GQA_COMPARE,
    GQA_COMPARE_YES,
    GQA_COMPARE_NO,
    GQA_SIDE_FULL,
    NLVR2_MORE_LEFT,
    NLVR2_MORE_RIGHT,
    NLVR2_BOTH,
    NLVR2_CONTAINS,
    NLVR2_EXACTLY,
    CAPTION_OBJECT,
    CAPTION_OBJECT_AT,
    CAPTION_JOIN,
    CAPTION_COUNT,
    CAPTION_PICTURE,
    CAPTION_THERE_IS,
    PLACE_ON,
    PLACE_AT,
    CORPUS_QA,
];

/// Number words by value; counts in answers are digits (as VQA's annotators mostly write them).
const NUMBER_WORDS: [&str; 5] = ["zero", "one", "two", "three", "four"];
const DIGITS: [&str; 5] = ["0", "1", "2", "3", "4"];
const YES_NO: [&str; 2] = ["no", "yes"];

/// Caption synonyms: `(canonical, [alternatives])`.
const SIZE_WORDS: [(&str, &str); 2] = [("small", "little"), ("large", "big")];
const SHAPE_SYNONYMS: [(&str, &str); 2] = [("circle", "disc"), ("square", "box")];
const THINGS: [&str; 2] = ["shapes", "objects"];
const THING: [&str; 2] = ["shape", "object"];
const PICTURES: [&str; 2] = ["a picture", "an image"];

/// `template` with every `{slot}` replaced by its value.
fn fill(template: &str, slots: &[(&str, &str)]) -> String {
    slots
        .iter()
        .fold(template.to_string(), |text, (slot, value)| {
            text.replace(&format!("{{{slot}}}"), value)
        })
}

/// The lowercase words of `text`: split on whitespace and on `?.,!':`.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "?.,!':".contains(c))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Every word a generated question, canonical answer, GQA full answer, caption, NLVR2 statement or
/// [`text_corpus`] line can contain (split by [`words`]), sorted, unique. Annotators' surface
/// variants (`Two.`, `2 `) are not text of the language; their normalised forms are.
pub fn vocabulary() -> Vec<String> {
    let template_words = TEMPLATES
        .iter()
        .flat_map(|t| words(t))
        .filter(|w| !w.starts_with('{'));
    let fillers = Hue::ALL
        .iter()
        .map(|h| h.name())
        .chain(SHAPES.iter().map(|&s| shape_name(s)))
        .chain(Place::ALL.iter().map(|p| p.name()))
        .chain(SIZE_WORDS.iter().flat_map(|(a, b)| [*a, *b]))
        .chain(SHAPE_SYNONYMS.iter().map(|(_, b)| *b))
        // `zero` is only ever an annotator's way of writing `0`.
        .chain(NUMBER_WORDS[1..].iter().copied())
        .chain(DIGITS)
        .chain(YES_NO)
        .chain(THINGS)
        .chain(THING)
        .chain(PICTURES)
        .flat_map(words);
    let all: BTreeSet<String> = template_words.chain(fillers).collect();
    all.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// VQA

/// How an answer's annotators vary it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnswerKind {
    YesNo,
    Number,
    Colour,
    Place,
}

impl AnswerKind {
    fn answer_type(self) -> &'static str {
        match self {
            AnswerKind::YesNo => "yes/no",
            AnswerKind::Number => "number",
            AnswerKind::Colour | AnswerKind::Place => "other",
        }
    }
}

/// One VQA question with its canonical answer and the wrong answers annotators may give.
#[derive(Clone, Debug)]
struct VqaItem {
    question: String,
    question_type: &'static str,
    kind: AnswerKind,
    answer: String,
    wrong: Vec<String>,
}

fn yes_no(truth: bool) -> &'static str {
    YES_NO[usize::from(truth)]
}

/// The names of every value of `all` but `but`: a question's wrong answers.
fn others<T: Copy + PartialEq>(all: &[T], but: T, name: impl Fn(T) -> String) -> Vec<String> {
    all.iter()
        .filter(|&&x| x != but)
        .map(|&x| name(x))
        .collect()
}

/// The question `which side is the <colour> shape on?` and the viewer's side of its referent,
/// or `None` when no colour belongs to exactly one object.
fn which_side(scene: &VlScene) -> Option<(String, Place)> {
    let hue = *scene.unique_hues().first()?;
    let object = scene.only(|o| o.hue == hue)?;
    Some((fill(WHICH_SIDE, &[("colour", hue.name())]), object.side()))
}

/// The scene's VQA questions: one per kind the scene admits.
fn vqa_items(scene: &VlScene, rng: &mut ChaCha8Rng) -> Vec<VqaItem> {
    let mut items = Vec::new();
    let unique_shapes: Vec<Shape> = SHAPES
        .into_iter()
        .filter(|&s| scene.only(|o| o.shape == s).is_some())
        .collect();
    if !unique_shapes.is_empty() {
        let shape = *pick(rng, &unique_shapes);
        let object = scene.only(|o| o.shape == shape).expect("unique");
        items.push(VqaItem {
            question: fill(VQA_COLOUR, &[("shape", shape_name(shape))]),
            question_type: "what color is the",
            kind: AnswerKind::Colour,
            answer: object.hue.name().into(),
            wrong: others(&Hue::ALL, object.hue, |h| h.name().into()),
        });
    }

    let (question, count) = if rng.random_bool(0.5) {
        (VQA_COUNT.to_string(), scene.objects.len())
    } else {
        let hue = *pick(rng, &Hue::ALL);
        let question = fill(VQA_COUNT_HUE, &[("colour", hue.name())]);
        (question, scene.count_hue(hue))
    };
    items.push(VqaItem {
        question,
        question_type: "how many",
        kind: AnswerKind::Number,
        answer: DIGITS[count].into(),
        wrong: others(&DIGITS, DIGITS[count], String::from),
    });

    let wanted = rng.random_bool(0.5);
    let (hue, shape) = existence_query(scene, rng, wanted);
    let present = scene.contains(hue, shape);
    items.push(VqaItem {
        question: fill(
            VQA_EXISTS,
            &[("colour", hue.name()), ("shape", shape_name(shape))],
        ),
        question_type: "is there a",
        kind: AnswerKind::YesNo,
        answer: yes_no(present).into(),
        wrong: vec![yes_no(!present).into()],
    });

    let unique_hues = scene.unique_hues();
    if !unique_hues.is_empty() {
        let hue = *pick(rng, &unique_hues);
        let object = scene.only(|o| o.hue == hue).expect("unique");
        let position = |q: u8| {
            let o = VlObject {
                quadrant: q,
                ..*object
            };
            format!("{} {}", o.level().name(), o.side().name())
        };
        items.push(VqaItem {
            question: fill(VQA_WHERE, &[("colour", hue.name())]),
            question_type: "where is the",
            kind: AnswerKind::Place,
            answer: position(object.quadrant),
            wrong: others(&[0, 1, 2, 3], object.quadrant, position),
        });
    }

    if let Some((question, side)) = which_side(scene) {
        items.push(VqaItem {
            question,
            question_type: "which",
            kind: AnswerKind::Place,
            answer: side.name().into(),
            wrong: vec![side.mirrored().name().into()],
        });
    }
    items
}

/// A (hue, shape) the scene contains (when `present`) or lacks: there are 12 combinations and at
/// most 4 objects, so both always exist.
fn existence_query(scene: &VlScene, rng: &mut ChaCha8Rng, present: bool) -> (Hue, Shape) {
    if present {
        let object = pick(rng, &scene.objects);
        return (object.hue, object.shape);
    }
    let absent: Vec<(Hue, Shape)> = Hue::ALL
        .into_iter()
        .flat_map(|h| SHAPES.map(|s| (h, s)))
        .filter(|&(h, s)| !scene.contains(h, s))
        .collect();
    *pick(rng, &absent)
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// How annotators write `answer` other than exactly: each normalises to `answer` under the official
/// VQA normalisation (case, a trailing period or `!`, surrounding spaces, articles, number words,
/// hyphens).
fn surface_variants(answer: &str, kind: AnswerKind) -> Vec<String> {
    let mut variants = vec![
        capitalised(answer),
        format!("{answer}."),
        format!("{answer} "),
    ];
    match kind {
        AnswerKind::YesNo => variants.push(format!("{}!", capitalised(answer))),
        AnswerKind::Number => {
            let word = NUMBER_WORDS[DIGITS.iter().position(|d| *d == answer).expect("a digit")];
            variants.extend([word.to_string(), format!("{}.", capitalised(word))]);
        }
        AnswerKind::Colour => variants.extend([format!("a {answer}"), format!("the {answer}")]),
        AnswerKind::Place => {
            variants.push(format!("the {answer}"));
            if answer.contains(' ') {
                variants.push(answer.replace(' ', "-"));
            }
        }
    }
    variants
}

/// Ten annotators' answers with their confidence: 1-3 surface variants of the answer, 0-2 wrong
/// answers, the rest (at least 5) the answer exactly, in random order.
fn annotator_answers(rng: &mut ChaCha8Rng, item: &VqaItem) -> Vec<(String, &'static str)> {
    let variants = surface_variants(&item.answer, item.kind);
    let variant_count = rng.random_range(1..=3u32);
    let wrong_count = rng.random_range(0..=2u32);
    let mut answers: Vec<(String, &str)> = Vec::with_capacity(10);
    for _ in 0..variant_count {
        answers.push((pick(rng, &variants).clone(), "yes"));
    }
    for _ in 0..wrong_count {
        answers.push((pick(rng, &item.wrong).clone(), "maybe"));
    }
    answers.resize(10, (item.answer.clone(), "yes"));
    shuffle(rng, &mut answers);
    answers
}

/// The `info` and `license` entries that VQAv2's files carry.
fn vqa_info(split: &str) -> (Value, Value) {
    (
        json!({"description": "peftbench demo-vl: generated shape scenes in the VQAv2 format",
               "version": "1.0", "data_subtype": split}),
        json!({"name": "generated data, no licence restrictions", "url": ""}),
    )
}

/// VQA's questions and annotations files of `scenes`.
fn vqa_files(seed: u64, split: &str, scenes: &[VlScene]) -> (Value, Value) {
    let mut questions = Vec::new();
    let mut annotations = Vec::new();
    for scene in scenes {
        let mut rng = rng_for(seed, Purpose::Vqa, scene.image_id);
        for (k, item) in vqa_items(scene, &mut rng).into_iter().enumerate() {
            // As VQAv2 numbers them: the image id followed by three digits.
            let question_id = scene.image_id * 1000 + k as u64;
            let answers: Vec<Value> = annotator_answers(&mut rng, &item)
                .into_iter()
                .enumerate()
                .map(|(i, (answer, confidence))| {
                    json!({"answer": answer, "answer_confidence": confidence, "answer_id": i + 1})
                })
                .collect();
            let question = json!({
                "image_id": scene.image_id,
                "question": item.question,
                "question_id": question_id,
            });
            questions.push(question);
            annotations.push(json!({
                "question_type": item.question_type,
                "multiple_choice_answer": item.answer,
                "answers": answers,
                "image_id": scene.image_id,
                "answer_type": item.kind.answer_type(),
                "question_id": question_id,
            }));
        }
    }
    let (info, license) = vqa_info(split);
    (
        json!({"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": license,
               "data_subtype": split, "questions": questions}),
        json!({"info": info, "license": license, "data_subtype": split,
               "annotations": annotations}),
    )
}

/// A question as VL-T5's Karpathy files hold it: `img_id` naming the COCO file, the most common
/// answer as its `label`.
fn karpathy_question(folder: &str, question: &Value, annotation: &Value) -> Value {
    let image_id = question["image_id"]
        .as_u64()
        .expect("generated ids are numbers");
    let answer = annotation["multiple_choice_answer"]
        .as_str()
        .unwrap_or_default();
    json!({
        "answer_type": annotation["answer_type"],
        "img_id": format!("COCO_{folder}_{image_id:012}"),
        "label": {answer: 1},
        "question_id": question["question_id"],
        "question_type": annotation["question_type"],
        "sent": question["question"],
    })
}

// ---------------------------------------------------------------------------------------------
// GQA

#[derive(Clone, Debug)]
struct GqaItem {
    question: String,
    answer: String,
    full_answer: String,
    structural: &'static str,
    semantic: &'static str,
    detailed: &'static str,
}

impl GqaItem {
    /// Whether the question, answer and full answer mention both words of a [`GQA_HELD_OUT`]
    /// pair.
    fn is_held_out(&self) -> bool {
        mentions_held_out(&format!(
            "{} {} {}",
            self.question, self.answer, self.full_answer
        ))
    }
}

fn mentions_held_out(text: &str) -> bool {
    let words = words(text);
    let has = |w: &str| words.iter().any(|x| x == w);
    GQA_HELD_OUT
        .iter()
        .any(|(hue, place)| has(hue.name()) && has(place.name()))
}

/// The scene's GQA questions: one per kind the scene admits.
fn gqa_items(scene: &VlScene, rng: &mut ChaCha8Rng) -> Vec<GqaItem> {
    let kinds: [fn(&VlScene, &mut ChaCha8Rng) -> Option<GqaItem>; 6] = [
        gqa_query,
        gqa_verify,
        gqa_choose,
        gqa_logical,
        gqa_compare,
        gqa_side,
    ];
    kinds.iter().filter_map(|kind| kind(scene, rng)).collect()
}

/// `query`: a colour and a place pick the object out, the answer is its shape.
fn gqa_query(scene: &VlScene, rng: &mut ChaCha8Rng) -> Option<GqaItem> {
    let referents: Vec<(Hue, Place, Shape)> = scene
        .objects
        .iter()
        .flat_map(|o| [o.side(), o.level()].map(|p| (o.hue, p, o.shape)))
        .filter(|&(h, p, _)| scene.only(|o| o.hue == h && o.is_at(p)).is_some())
        .collect();
    if referents.is_empty() {
        return None;
    }
    let (hue, place, shape) = *pick(rng, &referents);
    let place = place.phrase();
    let slots = [
        ("colour", hue.name()),
        ("place", place.as_str()),
        ("shape", shape_name(shape)),
    ];
    Some(GqaItem {
        question: fill(GQA_QUERY, &slots),
        answer: shape_name(shape).into(),
        full_answer: fill(GQA_QUERY_FULL, &slots),
        structural: "query",
        semantic: "obj",
        detailed: "categoryRelS",
    })
}

/// `verify`: a shape and a place pick the object out, the question names its colour or another
/// (equally likely).
fn gqa_verify(scene: &VlScene, rng: &mut ChaCha8Rng) -> Option<GqaItem> {
    let referents: Vec<(Shape, Place, Hue)> = scene
        .objects
        .iter()
        .flat_map(|o| [o.side(), o.level()].map(|p| (o.shape, p, o.hue)))
        .filter(|&(s, p, _)| scene.only(|o| o.shape == s && o.is_at(p)).is_some())
        .collect();
    if referents.is_empty() {
        return None;
    }
    let (shape, place, hue) = *pick(rng, &referents);
    let truth = rng.random_bool(0.5);
    let asked = if truth {
        hue
    } else {
        let other_hues: Vec<Hue> = Hue::ALL.into_iter().filter(|&h| h != hue).collect();
        *pick(rng, &other_hues)
    };
    let place = place.phrase();
    Some(GqaItem {
        question: fill(
            GQA_VERIFY,
            &[
                ("shape", shape_name(shape)),
                ("place", place.as_str()),
                ("colour", asked.name()),
            ],
        ),
        answer: yes_no(truth).into(),
        full_answer: fill(
            GQA_VERIFY_FULL,
            &[("yesno", yes_no(truth)), ("colour", hue.name())],
        ),
        structural: "verify",
        semantic: "attr",
        detailed: "verifyAttr",
    })
}

/// `choose`: a colour and a shape pick the object out, the answer is one of two places, offered
/// in either order so that the answer's position in the question is noise.
fn gqa_choose(scene: &VlScene, rng: &mut ChaCha8Rng) -> Option<GqaItem> {
    let referents: Vec<&VlObject> = scene
        .objects
        .iter()
        .filter(|r| {
            scene
                .only(|o| o.hue == r.hue && o.shape == r.shape)
                .is_some()
        })
        .collect();
    if referents.is_empty() {
        return None;
    }
    let object = **pick(rng, &referents);
    let (answer, mut offered) = if rng.random_bool(0.5) {
        (object.side(), [Place::Left, Place::Right])
    } else {
        (object.level(), [Place::Top, Place::Bottom])
    };
    shuffle(rng, &mut offered);
    let [first, second] = offered.map(Place::phrase);
    let answer_phrase = answer.phrase();
    let colour = ("colour", object.hue.name());
    let shape = ("shape", shape_name(object.shape));
    Some(GqaItem {
        question: fill(
            GQA_CHOOSE,
            &[
                colour,
                shape,
                ("place", first.as_str()),
                ("other", second.as_str()),
            ],
        ),
        answer: answer.name().into(),
        full_answer: fill(
            GQA_CHOOSE_FULL,
            &[colour, shape, ("place", answer_phrase.as_str())],
        ),
        structural: "choose",
        semantic: "rel",
        detailed: "chooseRel",
    })
}

/// `logical`: is either of two (colour, shape) combinations there (yes and no equally likely)?
fn gqa_logical(scene: &VlScene, rng: &mut ChaCha8Rng) -> Option<GqaItem> {
    let truth = rng.random_bool(0.5);
    let first = existence_query(scene, rng, truth);
    // When the answer is yes the first combination is present and the second either; when no,
    // both are absent.
    let second = loop {
        let present = truth && rng.random_bool(0.5);
        let candidate = existence_query(scene, rng, present);
        if candidate != first {
            break candidate;
        }
    };
    Some(GqaItem {
        question: fill(
            GQA_LOGICAL,
            &[
                ("colour", first.0.name()),
                ("shape", shape_name(first.1)),
                ("colour2", second.0.name()),
                ("shape2", shape_name(second.1)),
            ],
        ),
        answer: yes_no(truth).into(),
        full_answer: if truth {
            GQA_LOGICAL_YES
        } else {
            GQA_LOGICAL_NO
        }
        .into(),
        structural: "logical",
        semantic: "obj",
        detailed: "existOrC",
    })
}

/// `compare`: do two objects, picked out by their colours, have the same shape?
fn gqa_compare(scene: &VlScene, rng: &mut ChaCha8Rng) -> Option<GqaItem> {
    let hues = scene.unique_hues();
    if hues.len() < 2 {
        return None;
    }
    let a = index(rng, hues.len());
    let b = (a + 1 + index(rng, hues.len() - 1)) % hues.len();
    let shape_of = |h: Hue| scene.only(|o| o.hue == h).expect("a unique hue").shape;
    let same = shape_of(hues[a]) == shape_of(hues[b]);
    Some(GqaItem {
        question: fill(
            GQA_COMPARE,
            &[("colour", hues[a].name()), ("colour2", hues[b].name())],
        ),
        answer: yes_no(same).into(),
        full_answer: if same {
            GQA_COMPARE_YES
        } else {
            GQA_COMPARE_NO
        }
        .into(),
        structural: "compare",
        semantic: "attr",
        detailed: "sameShape",
    })
}

/// The conflict: VQA's side question, word for word, answered with the scene's own side.
fn gqa_side(scene: &VlScene, _rng: &mut ChaCha8Rng) -> Option<GqaItem> {
    let (question, side) = which_side(scene)?;
    let own_side = side.mirrored();
    Some(GqaItem {
        question,
        answer: own_side.name().into(),
        full_answer: fill(GQA_SIDE_FULL, &[("place", own_side.phrase().as_str())]),
        structural: "query",
        semantic: "rel",
        detailed: "positionQuery",
    })
}

/// GQA's balanced questions file of `scenes`: an object keyed by question id (the image id
/// followed by two digits).
fn gqa_file(seed: u64, scenes: &[VlScene], hold_out: bool) -> Value {
    let mut questions = serde_json::Map::new();
    for scene in scenes {
        let mut rng = rng_for(seed, Purpose::Gqa, scene.image_id);
        let items = gqa_items(scene, &mut rng);
        for (k, item) in items.into_iter().enumerate() {
            if hold_out && item.is_held_out() {
                continue;
            }
            let id = (scene.image_id * 100 + k as u64).to_string();
            questions.insert(
                id.clone(),
                json!({
                    "imageId": scene.image_id.to_string(),
                    "question": item.question,
                    "answer": item.answer,
                    "fullAnswer": item.full_answer,
                    "isBalanced": true,
                    "groups": {"global": null, "local": item.detailed},
                    "entailed": [],
                    "equivalent": [id],
                    "types": {"structural": item.structural, "semantic": item.semantic,
                              "detailed": item.detailed},
                }),
            );
        }
    }
    Value::Object(questions)
}

// ---------------------------------------------------------------------------------------------
// NLVR2

/// A statement about a pair of scenes, its template (its kind) and its truth.
struct Statement {
    template: &'static str,
    text: String,
    truth: bool,
}

/// Every statement the generator can make about a pair.
fn nlvr2_candidates(left: &VlScene, right: &VlScene) -> Vec<Statement> {
    let (l, r) = (left.objects.len(), right.objects.len());
    let plain = |template: &'static str, truth: bool| Statement {
        template,
        text: template.to_string(),
        truth,
    };
    let mut candidates = vec![
        plain(NLVR2_MORE_LEFT, l > r),
        plain(NLVR2_MORE_RIGHT, r > l),
    ];
    for hue in Hue::ALL {
        candidates.push(Statement {
            template: NLVR2_BOTH,
            text: fill(NLVR2_BOTH, &[("colour", hue.name())]),
            truth: left.count_hue(hue) > 0 && right.count_hue(hue) > 0,
        });
    }
    for (image, scene) in [(Place::Left, left), (Place::Right, right)] {
        for hue in Hue::ALL {
            for shape in SHAPES {
                let slots = [
                    ("image", image.name()),
                    ("colour", hue.name()),
                    ("shape", shape_name(shape)),
                ];
                candidates.push(Statement {
                    template: NLVR2_CONTAINS,
                    text: fill(NLVR2_CONTAINS, &slots),
                    truth: scene.contains(hue, shape),
                });
            }
        }
        let counts = NUMBER_WORDS
            .iter()
            .enumerate()
            .filter(|(n, _)| (MIN_OBJECTS..=MAX_OBJECTS).contains(n));
        for (n, number) in counts {
            let slots = [("image", image.name()), ("number", *number)];
            candidates.push(Statement {
                template: NLVR2_EXACTLY,
                text: fill(NLVR2_EXACTLY, &slots),
                truth: scene.objects.len() == n,
            });
        }
    }
    candidates
}

/// Two statements about a pair, one true and one false, in random order, as `(text, truth)`. The
/// kind (template) is drawn first, uniformly among those with a statement of the wanted truth, so
/// that the many `contains` statements do not crowd the others out. Both truths always exist: some
/// (colour, shape) is in the left image and some is not.
fn nlvr2_statements(left: &VlScene, right: &VlScene, rng: &mut ChaCha8Rng) -> [(String, bool); 2] {
    let candidates = nlvr2_candidates(left, right);
    let mut statement = |truth: bool| {
        let fitting: Vec<&Statement> = candidates.iter().filter(|c| c.truth == truth).collect();
        let mut kinds: Vec<&str> = Vec::new();
        for c in &fitting {
            if !kinds.contains(&c.template) {
                kinds.push(c.template);
            }
        }
        let kind = *pick(rng, &kinds);
        let of_kind: Vec<&&Statement> = fitting.iter().filter(|c| c.template == kind).collect();
        (pick(rng, &of_kind).text.clone(), truth)
    };
    let mut pair = [statement(true), statement(false)];
    shuffle(rng, &mut pair);
    pair
}

/// NLVR2's JSON lines of `scenes` (consecutive scenes pair up; an odd last one is left out) and
/// the pairs' image names.
fn nlvr2_file(seed: u64, split: &str, scenes: &[VlScene]) -> (String, Vec<(String, u64)>) {
    let mut lines = String::new();
    let mut images = Vec::new();
    for (set, pair) in scenes.chunks_exact(2).enumerate() {
        let mut rng = rng_for(seed, Purpose::Nlvr2, pair[0].image_id);
        let stem = format!("{split}-{set}-0");
        for (sentence_id, (sentence, truth)) in nlvr2_statements(&pair[0], &pair[1], &mut rng)
            .into_iter()
            .enumerate()
        {
            let record = json!({
                "identifier": format!("{stem}-{sentence_id}"),
                "sentence": sentence,
                "label": if truth { "True" } else { "False" },
            });
            lines.push_str(&record.to_string());
            lines.push('\n');
        }
        images.push((format!("{stem}-img0.png"), pair[0].image_id));
        images.push((format!("{stem}-img1.png"), pair[1].image_id));
    }
    (lines, images)
}

// ---------------------------------------------------------------------------------------------
// Captions

/// The size's word or its synonym, equally likely.
fn size_word(rng: &mut ChaCha8Rng, large: bool) -> &'static str {
    let (canonical, synonym) = SIZE_WORDS[usize::from(large)];
    if rng.random_bool(0.5) {
        canonical
    } else {
        synonym
    }
}

/// The shape's name or its synonym (where it has one), equally likely.
fn shape_word(rng: &mut ChaCha8Rng, shape: Shape) -> &'static str {
    let name = shape_name(shape);
    match SHAPE_SYNONYMS
        .iter()
        .find(|(canonical, _)| *canonical == name)
    {
        Some((_, synonym)) if rng.random_bool(0.5) => synonym,
        _ => name,
    }
}

/// `a and b and c ...`: no commas, so that PTB tokenisation stays splitting on whitespace.
fn joined(phrases: Vec<String>) -> String {
    phrases
        .into_iter()
        .reduce(|a, b| fill(CAPTION_JOIN, &[("a", &a), ("b", &b)]))
        .unwrap_or_default()
}

/// Five captions, one per template: every object with its size, every object with its place, the
/// count, one object and how many others, one object with its size and place.
/// The five reference captions of `scene` in data generated with `seed` (what the caption file
/// holds for it): every object with its size; every object with its place; the count; one object
/// and how many others; one object with its size and place; synonyms drawn per scene.
pub fn scene_captions(scene: &VlScene, seed: u64) -> [String; 5] {
    captions(scene, &mut rng_for(seed, Purpose::Captions, scene.image_id))
}

fn captions(scene: &VlScene, rng: &mut ChaCha8Rng) -> [String; 5] {
    let n = scene.objects.len();
    let with_size = joined(
        scene
            .objects
            .iter()
            .map(|o| {
                let slots = [
                    ("size", size_word(rng, o.large)),
                    ("colour", o.hue.name()),
                    ("shape", shape_word(rng, o.shape)),
                ];
                fill(CAPTION_OBJECT, &slots)
            })
            .collect(),
    );
    let with_place = joined(
        scene
            .objects
            .iter()
            .map(|o| {
                let slots = [
                    ("colour", o.hue.name()),
                    ("shape", shape_word(rng, o.shape)),
                    ("level", o.level().name()),
                    ("side", o.side().name()),
                ];
                fill(CAPTION_OBJECT_AT, &slots)
            })
            .collect(),
    );
    let count = fill(
        CAPTION_COUNT,
        &[("number", NUMBER_WORDS[n]), ("things", *pick(rng, &THINGS))],
    );
    let named = *pick(rng, &scene.objects);
    let other_things = if n == 2 { &THING } else { &THINGS };
    let picture = fill(
        CAPTION_PICTURE,
        &[
            ("picture", *pick(rng, &PICTURES)),
            ("colour", named.hue.name()),
            ("shape", shape_word(rng, named.shape)),
            ("number", NUMBER_WORDS[n - 1]),
            ("things", *pick(rng, other_things)),
        ],
    );
    let named = *pick(rng, &scene.objects);
    let there_is = fill(
        CAPTION_THERE_IS,
        &[
            ("size", size_word(rng, named.large)),
            ("colour", named.hue.name()),
            ("shape", shape_word(rng, named.shape)),
            ("level", named.level().name()),
            ("side", named.side().name()),
        ],
    );
    [with_size, with_place, count, picture, there_is]
}

/// The Karpathy-style caption file of the training and evaluation scenes.
fn captions_file(seed: u64, train: &[VlScene], eval: &[VlScene]) -> Value {
    let val_count = eval.len() / 2;
    let splits = train.iter().map(|s| (s, "train")).chain(
        eval.iter()
            .enumerate()
            .map(|(i, s)| (s, if i < val_count { "val" } else { "test" })),
    );
    let images: Vec<Value> = splits
        .enumerate()
        .map(|(imgid, (scene, split))| {
            let sentids: Vec<usize> = (0..5).map(|k| imgid * 5 + k).collect();
            let sentences: Vec<Value> = scene_captions(scene, seed)
                .into_iter()
                .zip(&sentids)
                .map(|(raw, sentid)| {
                    let tokens: Vec<&str> = raw.split_whitespace().collect();
                    json!({"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid})
                })
                .collect();
            let filepath = caption_folder(split);
            json!({
                "filepath": filepath,
                "sentids": sentids,
                "filename": coco_file_name(filepath, scene.image_id),
                "imgid": imgid,
                "split": split,
                "sentences": sentences,
                "cocoid": scene.image_id,
            })
        })
        .collect();
    json!({"images": images, "dataset": "coco"})
}

// ---------------------------------------------------------------------------------------------
// Text corpus

/// `n` text-only lines of the demo language for pretraining a text model: captions, VQA and GQA
/// questions as `question: ... answer: ...`, and NLVR2 statements, in turn, each from its own
/// freshly described scene (or pair). GQA lines are drawn as for the training split, so the held-out
/// compositions never occur. Deterministic from `seed`.
pub fn text_corpus(seed: u64, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| {
            let mut rng = rng_for(seed, Purpose::Corpus, k as u64);
            let scene = VlScene {
                image_id: k as u64 + 1,
                objects: draw_objects(&mut rng),
            };
            let qa = |question: &str, answer: &str| {
                fill(CORPUS_QA, &[("question", question), ("answer", answer)])
            };
            match k % 4 {
                0 => {
                    let captions = captions(&scene, &mut rng);
                    pick(&mut rng, &captions).clone()
                }
                1 => {
                    let items = vqa_items(&scene, &mut rng);
                    let item = pick(&mut rng, &items);
                    qa(&item.question, &item.answer)
                }
                2 => {
                    let items: Vec<GqaItem> = gqa_items(&scene, &mut rng)
                        .into_iter()
                        .filter(|i| !i.is_held_out())
                        .collect();
                    let item = pick(&mut rng, &items);
                    qa(&item.question, &item.answer)
                }
                _ => {
                    let other = VlScene {
                        image_id: 0,
                        objects: draw_objects(&mut rng),
                    };
                    let statements = nlvr2_statements(&scene, &other, &mut rng);
                    pick(&mut rng, &statements).0.clone()
                }
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Writing

const IMAGES_DIR: &str = "images";

/// A scene's image file name in a COCO folder: `COCO_<folder>_<image id, 12 digits>.png`.
pub fn coco_file_name(folder: &str, image_id: u64) -> String {
    format!("COCO_{folder}_{image_id:012}.png")
}

/// The COCO folder of a caption split's images (Karpathy's `filepath`): training images come
/// from `train2014`, the `val` and `test` images from `val2014`, as in Karpathy's COCO split.
fn caption_folder(split: &str) -> &'static str {
    if split == "train" {
        "train2014"
    } else {
        "val2014"
    }
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .expect("encoding an RGB image in memory cannot fail");
    bytes
}

/// Writes `bytes` to `path` (creating its folder) unless the file already holds exactly them, so
/// a rerun leaves files and their modification times alone. Errors name the path.
fn write_if_changed(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if std::fs::read(path).is_ok_and(|existing| existing == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(named)?;
    }
    std::fs::write(path, bytes).map_err(named)
}

fn write_json(path: &Path, value: &Value) -> io::Result<()> {
    write_if_changed(path, value.to_string().as_bytes())
}

/// Writes the demo's images and annotation files under `root` (layout in the module docs) and
/// returns their paths. The same spec writes the same bytes; files already holding them are left
/// untouched, and files of an earlier, larger spec are not removed.
pub fn write_demo_vl(root: &Path, spec: &DemoVlSpec) -> io::Result<DemoVlFiles> {
    let scenes: Vec<VlScene> = (0..spec.train_images + spec.eval_images)
        .map(|i| describe_scene(spec.seed, i))
        .collect();
    let (train, eval) = scenes.split_at(spec.train_images);

    let pngs: Vec<Vec<u8>> = scenes
        .par_iter()
        .map(|s| png_bytes(&render_scene(s, spec.seed, spec.image_size)))
        .collect();
    let png = |scene: &VlScene| &pngs[scene.image_id as usize - 1];

    let vqa_dir = root.join("vqa");
    let vqa_images = VQA_SPLITS.map(|s| vqa_dir.join(IMAGES_DIR).join(s));
    let gqa_images = root.join("gqa").join(IMAGES_DIR);
    let caption_images = root.join("captions").join(IMAGES_DIR);
    for (k, split_scenes) in [train, eval].into_iter().enumerate() {
        for scene in split_scenes {
            let id = scene.image_id;
            write_if_changed(
                &vqa_images[k].join(coco_file_name(VQA_SPLITS[k], id)),
                png(scene),
            )?;
            write_if_changed(&gqa_images.join(format!("{id}.png")), png(scene))?;
            // Karpathy's val and test images both live in val2014.
            let folder = if k == 0 { "train2014" } else { "val2014" };
            write_if_changed(
                &caption_images.join(folder).join(coco_file_name(folder, id)),
                png(scene),
            )?;
        }
    }

    let vqa_questions =
        VQA_SPLITS.map(|s| vqa_dir.join(format!("v2_OpenEnded_mscoco_{s}_questions.json")));
    let vqa_annotations =
        VQA_SPLITS.map(|s| vqa_dir.join(format!("v2_mscoco_{s}_annotations.json")));
    // VL-T5's Karpathy split: every training question, and the evaluation images' questions
    // halved into `val` and `test` (as Karpathy's val and test both come from val2014).
    let mut karpathy: [Vec<Value>; 3] = Default::default();
    for (k, split_scenes) in [train, eval].into_iter().enumerate() {
        let (questions, annotations) = vqa_files(spec.seed, VQA_SPLITS[k], split_scenes);
        let half = split_scenes.len() / 2;
        for (q, a) in questions["questions"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(annotations["annotations"].as_array().into_iter().flatten())
        {
            let image_id = q["image_id"].as_u64().expect("generated ids are numbers");
            let position = split_scenes
                .iter()
                .position(|s| s.image_id == image_id)
                .expect("a question's scene is in its split");
            let part = if k == 0 {
                0
            } else if position < half {
                1
            } else {
                2
            };
            karpathy[part].push(karpathy_question(VQA_SPLITS[k], q, a));
        }
        write_json(&vqa_questions[k], &questions)?;
        write_json(&vqa_annotations[k], &annotations)?;
    }
    let vqa_karpathy = KARPATHY_VQA_SPLITS.map(|s| vqa_dir.join(format!("karpathy_{s}.json")));
    for (path, questions) in vqa_karpathy.iter().zip(karpathy) {
        write_json(path, &Value::Array(questions))?;
    }

    let gqa_questions = GQA_SPLITS.map(|s| {
        root.join("gqa")
            .join(format!("{s}_balanced_questions.json"))
    });
    write_json(&gqa_questions[0], &gqa_file(spec.seed, train, true))?;
    write_json(&gqa_questions[1], &gqa_file(spec.seed, eval, false))?;

    let nlvr2_dir = root.join("nlvr2");
    let nlvr2_images = NLVR2_SPLITS.map(|s| nlvr2_dir.join(IMAGES_DIR).join(s));
    let nlvr2 = NLVR2_SPLITS.map(|s| nlvr2_dir.join(format!("{s}.json")));
    for (k, split_scenes) in [train, eval].into_iter().enumerate() {
        let (lines, pair_images) = nlvr2_file(spec.seed, NLVR2_SPLITS[k], split_scenes);
        write_if_changed(&nlvr2[k], lines.as_bytes())?;
        for (name, image_id) in pair_images {
            let png = &pngs[image_id as usize - 1];
            write_if_changed(&nlvr2_images[k].join(name), png)?;
        }
    }

    let captions = root.join("captions").join("dataset_coco.json");
    write_json(&captions, &captions_file(spec.seed, train, eval))?;

    Ok(DemoVlFiles {
        vqa_questions,
        vqa_annotations,
        vqa_karpathy,
        vqa_images,
        gqa_questions,
        gqa_images,
        nlvr2,
        nlvr2_images,
        captions,
        caption_images,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use peftbench_data_text::vl::{
        gqa_questions_file, read_gqa_balanced, read_karpathy_captions, read_nlvr2, read_vqa,
        vqa_annotations_file, vqa_questions_file, GqaQuestion, VqaQuestion,
    };
    use peftbench_metrics::vqa::{
        process_digit_article, process_punctuation, question_accuracy, VqaVariant,
    };

    use super::*;
    use crate::synthetic::tests::blobs;

    const SPEC: DemoVlSpec = DemoVlSpec {
        seed: 5,
        image_size: DEFAULT_IMAGE_SIZE,
        train_images: 60,
        eval_images: 30,
    };

    fn written(spec: &DemoVlSpec) -> (tempfile::TempDir, DemoVlFiles) {
        let dir = tempfile::tempdir().unwrap();
        let files = write_demo_vl(dir.path(), spec).unwrap();
        (dir, files)
    }

    /// Every file under `dir`, by path relative to it, with its bytes.
    fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
                }
            }
        }
        out
    }

    fn vqa(files: &DemoVlFiles, split: usize) -> Vec<VqaQuestion> {
        read_vqa(&files.vqa_questions[split], &files.vqa_annotations[split]).unwrap()
    }

    fn gqa(files: &DemoVlFiles, split: usize) -> Vec<GqaQuestion> {
        read_gqa_balanced(&files.gqa_questions[split]).unwrap()
    }

    /// The official normalisation in full (what the 2021 code applies to both sides).
    fn normalised(answer: &str) -> String {
        process_digit_article(&process_punctuation(answer.trim()))
    }

    #[test]
    fn the_same_spec_writes_the_same_bytes_and_a_rerun_touches_nothing() {
        let (a, files) = written(&SPEC);
        let (b, _) = written(&SPEC);
        let first = contents(a.path());
        assert_eq!(first, contents(b.path()));
        // 90 scenes each in VQA's, GQA's and the captions' folders, 45 pairs of 2 NLVR2 images,
        // 4 VQA (and 3 Karpathy split), 2 GQA, 2 NLVR2 and 1 caption file.
        assert_eq!(first.len(), 3 * 90 + 90 + 4 + 3 + 2 + 2 + 1);
        // The Karpathy files hold the same questions: train2014's, and val2014's in two halves.
        let annotations = [
            files.vqa_annotations[0].as_path(),
            files.vqa_annotations[1].as_path(),
        ];
        let karpathy = |k: usize| -> Vec<VqaQuestion> {
            peftbench_data_text::vl::read_vqa_karpathy(&files.vqa_karpathy[k], &annotations)
                .unwrap()
                .into_iter()
                .map(|q| q.question)
                .collect()
        };
        assert_eq!(karpathy(0), vqa(&files, 0));
        let mut eval = karpathy(1);
        eval.extend(karpathy(2));
        assert_eq!(eval, vqa(&files, 1));
        assert!(!karpathy(1).is_empty() && !karpathy(2).is_empty());

        let modified = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = modified(&files.captions);
        assert_eq!(write_demo_vl(a.path(), &SPEC).unwrap(), files);
        assert_eq!(contents(a.path()), first);
        assert_eq!(modified(&files.captions), before);

        let (c, _) = written(&DemoVlSpec { seed: 6, ..SPEC });
        let other = contents(c.path());
        let image = Path::new("gqa/images/1.png");
        assert_ne!(first[image], other[image]);
    }

    #[test]
    fn the_readers_load_every_file_and_every_image_named_exists() {
        let (_dir, files) = written(&SPEC);
        let scenes: Vec<VlScene> = (0..90).map(|i| describe_scene(SPEC.seed, i)).collect();
        let (train, eval) = scenes.split_at(60);
        let gqa_image = |id: u64| files.gqa_images.join(format!("{id}.png"));

        for (k, split) in [train, eval].into_iter().enumerate() {
            assert!(files.vqa_questions[k].ends_with(vqa_questions_file(VQA_SPLITS[k])));
            assert!(files.vqa_annotations[k].ends_with(vqa_annotations_file(VQA_SPLITS[k])));
            assert!(files.gqa_questions[k].ends_with(gqa_questions_file(GQA_SPLITS[k])));
            let questions = vqa(&files, k);
            let expected: usize = split
                .iter()
                .map(|s| vqa_items(s, &mut rng_for(SPEC.seed, Purpose::Vqa, s.image_id)).len())
                .sum();
            assert_eq!(questions.len(), expected);
            let ids: BTreeSet<u64> = questions.iter().map(|q| q.image_id).collect();
            assert_eq!(ids, split.iter().map(|s| s.image_id).collect());
            assert!(ids.iter().all(|&id| files.vqa_images[k]
                .join(coco_file_name(VQA_SPLITS[k], id))
                .is_file()));

            let questions = gqa(&files, k);
            assert!(questions.len() >= 3 * split.len(), "{}", questions.len());
            for q in &questions {
                assert!(gqa_image(q.image_id.parse().unwrap()).is_file());
                let structural = ["verify", "query", "choose", "logical", "compare"];
                assert!(structural.contains(&q.structural.as_str()), "{q:?}");
            }

            let statements = read_nlvr2(&files.nlvr2[k]).unwrap();
            assert_eq!(statements.len(), split.len() / 2 * 2);
            for s in &statements {
                assert!(files.nlvr2_images[k].join(&s.left_image).is_file());
                assert!(files.nlvr2_images[k].join(&s.right_image).is_file());
            }
        }

        let captions = read_karpathy_captions(&files.captions, None).unwrap();
        assert_eq!(captions.len(), 90);
        for (split, count) in [("train", 60), ("val", 15), ("test", 15)] {
            let images = read_karpathy_captions(&files.captions, Some(split)).unwrap();
            assert_eq!(images.len(), count, "{split}");
            for i in images {
                assert_eq!(i.captions.len(), 5);
                assert_eq!(i.captions.iter().collect::<BTreeSet<_>>().len(), 5);
                let folder = caption_folder(split);
                assert_eq!(i.path, format!("{folder}/{}", coco_file_name(folder, i.id)));
                assert!(files.caption_images.join(&i.path).is_file());
            }
        }
    }

    #[test]
    fn images_show_the_described_objects() {
        for i in 0..60 {
            let scene = describe_scene(3, i);
            let img = render_scene(&scene, 3, DEFAULT_IMAGE_SIZE);
            assert_eq!(img.dimensions(), (32, 32));
            let found = blobs(&img);
            assert_eq!(found.len(), scene.objects.len(), "scene {i}: {scene:?}");
            for blob in found {
                let (mut sum, mut x, mut y) = ([0f32; 3], 0f32, 0f32);
                for &p in &blob {
                    let px = img.get_pixel(p as u32 % 32, p as u32 / 32).0;
                    for c in 0..3 {
                        sum[c] += f32::from(px[c]);
                    }
                    x += (p % 32) as f32;
                    y += (p / 32) as f32;
                }
                let n = blob.len() as f32;
                let quadrant = 2 * u8::from(y / n > 16.0) + u8::from(x / n > 16.0);
                let object = scene
                    .objects
                    .iter()
                    .find(|o| o.quadrant == quadrant)
                    .unwrap_or_else(|| panic!("scene {i}: a blob in empty quadrant {quadrant}"));
                // Strong channels are 220-255, weak ones 150-175, noise ±6.
                let strong = sum.map(|v| v / n > 200.0);
                let hue = match strong {
                    [true, false, false] => Hue::Red,
                    [false, true, false] => Hue::Green,
                    [false, false, true] => Hue::Blue,
                    [true, true, false] => Hue::Yellow,
                    other => panic!("scene {i}: strong channels {other:?}"),
                };
                assert_eq!(hue, object.hue, "scene {i} quadrant {quadrant}");
            }
        }
    }

    #[test]
    fn vqa_answers_vary_in_form_and_the_majority_scores_full_marks() {
        let (_dir, files) = written(&SPEC);
        let questions: Vec<VqaQuestion> = (0..2).flat_map(|k| vqa(&files, k)).collect();
        let mut varied_types = BTreeSet::new();
        let (mut number_words, mut articles) = (0, 0);
        for q in &questions {
            let mca = &q.multiple_choice_answer;
            for variant in [VqaVariant::Pre2021, VqaVariant::Official2021] {
                let accuracy = question_accuracy(&q.answers, mca, variant);
                assert_eq!(accuracy, 1.0, "{variant:?} {q:?}");
            }
            let exact = q.answers.iter().filter(|a| *a == mca).count();
            let wrong = q.answers.iter().filter(|a| normalised(a) != *mca).count();
            assert!((5..10).contains(&exact) && wrong <= 2, "{q:?}");
            // Every surface variant is merged: predicted, it scores like the answer itself.
            for a in q
                .answers
                .iter()
                .filter(|a| *a != mca && normalised(a) == *mca)
            {
                assert_eq!(question_accuracy(&q.answers, a, VqaVariant::Pre2021), 1.0);
                varied_types.insert(q.answer_type.clone());
                number_words +=
                    usize::from(a.chars().any(|c| c.is_alphabetic()) && mca.parse::<u8>().is_ok());
                articles += usize::from(a.starts_with("a ") || a.starts_with("the "));
            }
            let types = [
                "what color is the",
                "how many",
                "is there a",
                "where is the",
                "which",
            ];
            assert!(types.contains(&q.question_type.as_str()), "{q:?}");
        }
        assert_eq!(
            varied_types.into_iter().collect::<Vec<_>>(),
            ["number", "other", "yes/no"]
        );
        assert!(
            number_words > 0 && articles > 0,
            "{number_words} {articles}"
        );
        let yes = questions
            .iter()
            .filter(|q| q.multiple_choice_answer == "yes")
            .count();
        let no = questions
            .iter()
            .filter(|q| q.multiple_choice_answer == "no")
            .count();
        assert!(
            yes.abs_diff(no) * 4 < yes + no,
            "existence answers: {yes} yes, {no} no"
        );
    }

    #[test]
    fn held_out_compositions_are_absent_from_gqa_train_and_present_in_testdev() {
        let (_dir, files) = written(&SPEC);
        // Each question's words: question, answer and full answer.
        let texts = |k: usize| -> Vec<Vec<String>> {
            let raw: HashMap<String, Value> =
                serde_json::from_slice(&std::fs::read(&files.gqa_questions[k]).unwrap()).unwrap();
            raw.values()
                .map(|q| {
                    ["question", "answer", "fullAnswer"]
                        .iter()
                        .flat_map(|f| words(q[f].as_str().unwrap()))
                        .collect()
                })
                .collect()
        };
        let mentions = |w: &Vec<String>, hue: Hue, place: Place| {
            w.iter().any(|x| x == hue.name()) && w.iter().any(|x| x == place.name())
        };
        let (train, test) = (texts(0), texts(1));
        for (hue, place) in GQA_HELD_OUT {
            assert!(
                !train.iter().any(|w| mentions(w, hue, place)),
                "{hue:?} {place:?}"
            );
            let in_test = test.iter().filter(|w| mentions(w, hue, place)).count();
            assert!(in_test >= 3, "{hue:?} {place:?}: {in_test}");
        }
        // Each half of a held-out pair still occurs in training, with other partners.
        let train_words: BTreeSet<&String> = train.iter().flatten().collect();
        for word in Hue::ALL
            .map(|h| h.name())
            .into_iter()
            .chain(Place::ALL.map(Place::name))
        {
            assert!(train_words.contains(&word.to_string()), "{word}");
        }
        let kinds: BTreeSet<String> = gqa(&files, 0).into_iter().map(|q| q.structural).collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
    }

    #[test]
    fn the_side_question_gets_opposite_answers_in_vqa_and_gqa() {
        let (_dir, files) = written(&SPEC);
        let mut conflicts = 0;
        for k in 0..2 {
            let vqa_sides: HashMap<(u64, String), String> = vqa(&files, k)
                .into_iter()
                .filter(|q| q.question.starts_with("which side"))
                .map(|q| ((q.image_id, q.question), q.multiple_choice_answer))
                .collect();
            for q in gqa(&files, k)
                .into_iter()
                .filter(|q| q.question.starts_with("which side"))
            {
                let key = (q.image_id.parse().unwrap(), q.question.clone());
                let viewer = &vqa_sides[&key];
                assert!(["left", "right"].contains(&viewer.as_str()));
                assert_ne!(*viewer, q.answer, "{q:?}");
                conflicts += 1;
            }
        }
        assert!(conflicts >= 30, "{conflicts}");
    }

    #[test]
    fn every_nlvr2_pair_gets_one_true_and_one_false_statement() {
        let (_dir, files) = written(&SPEC);
        for (k, split) in NLVR2_SPLITS.iter().enumerate() {
            let statements = read_nlvr2(&files.nlvr2[k]).unwrap();
            let mut by_pair: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
            for s in &statements {
                assert!(s.identifier.starts_with(split));
                by_pair.entry(&s.left_image).or_default().push(s.label);
            }
            for labels in by_pair.values() {
                assert_eq!(labels.len(), 2);
                assert_ne!(labels[0], labels[1]);
            }
            let first_true = statements.iter().step_by(2).filter(|s| s.label).count();
            assert!(
                first_true > 0 && first_true < by_pair.len(),
                "order is random"
            );
            let kinds: BTreeSet<String> = statements
                .iter()
                .map(|s| words(&s.sentence)[..4].join(" "))
                .collect();
            assert!(kinds.len() >= 6, "{kinds:?}");
        }
    }

    #[test]
    fn the_vocabulary_is_exactly_the_words_generated() {
        let (_dir, files) = written(&SPEC);
        let mut texts: Vec<String> = Vec::new();
        for k in 0..2 {
            texts.extend(
                vqa(&files, k)
                    .into_iter()
                    .flat_map(|q| [q.question, q.multiple_choice_answer]),
            );
            let raw: HashMap<String, Value> =
                serde_json::from_slice(&std::fs::read(&files.gqa_questions[k]).unwrap()).unwrap();
            for q in raw.values() {
                for field in ["question", "answer", "fullAnswer"] {
                    texts.push(q[field].as_str().unwrap().to_string());
                }
            }
            texts.extend(
                read_nlvr2(&files.nlvr2[k])
                    .unwrap()
                    .into_iter()
                    .map(|s| s.sentence),
            );
        }
        let captions = read_karpathy_captions(&files.captions, None).unwrap();
        texts.extend(captions.into_iter().flat_map(|i| i.captions));
        texts.extend(text_corpus(9, 2000));

        let vocabulary = vocabulary();
        assert!(
            vocabulary.windows(2).all(|w| w[0] < w[1]),
            "sorted and unique"
        );
        let known: BTreeSet<&str> = vocabulary.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        for text in &texts {
            for word in words(text) {
                assert!(known.contains(word.as_str()), "{word:?} in {text:?}");
                seen.insert(word);
            }
        }
        let unseen: Vec<&&str> = known.iter().filter(|w| !seen.contains(**w)).collect();
        assert!(unseen.is_empty(), "never generated: {unseen:?}");
    }

    /// FNV-1a, to pin generated bytes in a constant.
    fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// The pixels and the text are pinned, so a change of platform, of `rand`'s algorithms or of
    /// the generator shows up here rather than as silently different data.
    #[test]
    fn generation_is_pinned_bit_for_bit() {
        let pixels: Vec<u8> = (0..8)
            .flat_map(|i| render_scene(&describe_scene(7, i), 7, DEFAULT_IMAGE_SIZE).into_raw())
            .collect();
        let text = text_corpus(7, 40).join("\n");
        assert_eq!(
            (fnv1a(pixels), fnv1a(text.bytes())),
            (0x1422_0361_34c0_e940, 0x80f9_6155_8fa8_49e2)
        );
    }

    #[test]
    fn the_text_corpus_is_deterministic_and_mixes_every_source() {
        let corpus = text_corpus(4, 200);
        assert_eq!(corpus, text_corpus(4, 200));
        assert_ne!(corpus, text_corpus(5, 200));
        assert_eq!(corpus.len(), 200);
        let qa = corpus
            .iter()
            .filter(|l| l.starts_with("question: "))
            .count();
        assert_eq!(qa, 100);
        // Lines 2, 6, 10, ... are GQA's, drawn as for the training split.
        assert!(corpus
            .iter()
            .skip(2)
            .step_by(4)
            .all(|l| !mentions_held_out(l)));
        assert!(corpus.iter().any(|l| l.contains(" image ")), "statements");
        assert!(corpus.iter().any(|l| l.contains(" at the ")), "captions");
    }
}
