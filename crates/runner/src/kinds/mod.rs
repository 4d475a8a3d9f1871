//! The kinds of task a suite can run, one module each behind one interface, [`Kind`].
//!
//! A suite's kind ([`TaskKind`]) is decided once when the suite loads. The sweep, its preflight
//! and `--dry-run` never look at which optional sections a spec has: they hand the kind to
//! [`with_kind`], the one place kinds are listed, and drive the [`Kind`] it selects. Adding a kind
//! is a variant of [`TaskKind`], one module here implementing [`Kind`], and one arm in
//! [`with_kind`]; the compiler names every other match that must learn it.
//!
//! What is not a kind's own stays shared: frozen features and frozen prefixes
//! ([`crate::features`], [`crate::frozen_prefix`]), language modules
//! ([`crate::language_adapters`]), calibration and training phases ([`crate::run`],
//! [`crate::classification`]), and the input pipelines the kinds read through ([`crate::data`]
//! for images, [`crate::audio`], [`crate::text`], [`crate::rerank`]).

mod audio_classification;
mod class_incremental;
mod image_classification;
mod image_text_retrieval;
mod multi_task;
mod music_generation;
mod reranking;
mod text_classification;
mod text_input;
mod token_tagging;
mod vision_language;

use candle_core::Device;
use peftbench_backbones::TextEncoder;
use peftbench_suite::{RunSpec, Suite, TaskKind};

use crate::backbone::{BackboneModel, LoadedBackbone};
use crate::run::{Finished, RunContext};
use crate::Paths;

pub(crate) use audio_classification::AudioClassification;
pub(crate) use class_incremental::ClassIncremental;
pub(crate) use image_classification::ImageClassification;
pub(crate) use image_text_retrieval::ImageTextRetrieval;
pub(crate) use multi_task::MultiTask;
pub(crate) use music_generation::MusicGeneration;
pub(crate) use reranking::Reranking;
pub(crate) use text_classification::TextClassification;
pub(crate) use token_tagging::TokenTagging;
pub(crate) use vision_language::VisionLanguage;

/// One kind of task as the runner drives it: from the data a task needs, through inputs prepared
/// once for all of its runs, to one run's training, evaluation and metrics.
///
/// A sweep calls, in order: [`Kind::locate`] for every task (the preflight: nothing trains before
/// all data is found), [`Kind::check_backbone`] and [`Kind::encoders`] once, then per task
/// [`Kind::prepare`] and per run [`Kind::run`]; every record names [`Kind::primary_metric`].
pub(crate) trait Kind {
    /// What every run of the suite shares to turn raw inputs into model inputs (a filter-bank
    /// cache, a tokenizer).
    type Encoders;
    /// A task's data as the preflight found it: files listed or generated, nothing decoded.
    type Located;
    /// A task's inputs prepared once for all of its runs (decoded, tokenised, first stage run).
    type Prepared;

    /// Finds the task's data (one fold of it), or fails saying where it looked and how to get it.
    fn locate(spec: &RunSpec, paths: &Paths, quiet: bool) -> anyhow::Result<Self::Located>;

    /// Checks that the backbone reads this kind's input with the suite's settings.
    fn check_backbone(spec: &RunSpec, backbone: &BackboneModel) -> anyhow::Result<()> {
        backbone.check_modality(spec)
    }

    /// Builds what the runs share; may set how the backbone reads the input (text pooling).
    fn encoders(
        suite: &Suite,
        backbone: &mut LoadedBackbone,
        paths: &Paths,
    ) -> anyhow::Result<Self::Encoders>;

    /// The tokenizer, for kinds that read text (language modules train with it).
    fn text_encoder(encoders: &Self::Encoders) -> Option<&TextEncoder>;

    /// Decodes a task's located data into what its runs read.
    fn prepare(
        spec: &RunSpec,
        located: &Self::Located,
        encoders: &Self::Encoders,
        device: &Device,
        quiet: bool,
    ) -> anyhow::Result<Self::Prepared>;

    /// Trains and evaluates one run (a failure is an error; the record is built by the caller).
    fn run(
        spec: &RunSpec,
        task: &Self::Prepared,
        ctx: &RunContext<'_>,
        progress: &mut dyn FnMut(peftbench_train::Progress),
    ) -> anyhow::Result<Finished>;

    /// The metric the leaderboard ranks by, as named in the record's `metrics`.
    fn primary_metric(spec: &RunSpec) -> String;
}

/// Work to do with the [`Kind`] of a suite, whatever it is (see [`with_kind`]).
pub(crate) trait KindVisitor {
    type Output;
    fn visit<K: Kind>(self) -> Self::Output;
}

/// Runs `visitor` with the [`Kind`] that implements `kind`: the one place kinds are listed.
pub(crate) fn with_kind<V: KindVisitor>(kind: TaskKind, visitor: V) -> V::Output {
    match kind {
        TaskKind::ImageClassification => visitor.visit::<ImageClassification>(),
        TaskKind::AudioClassification => visitor.visit::<AudioClassification>(),
        TaskKind::TextClassification => visitor.visit::<TextClassification>(),
        TaskKind::TokenTagging => visitor.visit::<TokenTagging>(),
        TaskKind::Reranking => visitor.visit::<Reranking>(),
        TaskKind::ImageMultiTask => visitor.visit::<MultiTask<ImageClassification>>(),
        TaskKind::TextMultiTask => visitor.visit::<MultiTask<TextClassification>>(),
        TaskKind::VisionLanguage => visitor.visit::<VisionLanguage>(),
        TaskKind::ImageTextRetrieval => visitor.visit::<ImageTextRetrieval>(),
        TaskKind::ClassIncremental => visitor.visit::<ClassIncremental>(),
        TaskKind::MusicGeneration => visitor.visit::<MusicGeneration>(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use peftbench_suite::{load_suite, parse_suite, plan, PlanOptions};

    use super::*;
    use crate::RegistryCatalog;

    fn suites_dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../suites"))
    }

    /// Every shipped suite loads as the kind its sections make it, and its runs carry that kind.
    #[test]
    fn shipped_suites_have_the_kind_of_their_sections() {
        let expected = [
            ("demo", TaskKind::ImageClassification),
            ("vtab1k", TaskKind::ImageClassification),
            ("fgvc", TaskKind::ImageClassification),
            ("demo-audio", TaskKind::AudioClassification),
            ("ast", TaskKind::AudioClassification),
            ("demo-text", TaskKind::TextClassification),
            ("lowres", TaskKind::TextClassification),
            ("lowres-ner", TaskKind::TokenTagging),
            ("demo-rerank", TaskKind::Reranking),
            ("xling-rerank", TaskKind::Reranking),
            ("demo-vl", TaskKind::VisionLanguage),
            ("vl-adapter", TaskKind::VisionLanguage),
            ("demo-clip-retrieval", TaskKind::ImageTextRetrieval),
            ("clip-retrieval", TaskKind::ImageTextRetrieval),
            ("demo-cl", TaskKind::ClassIncremental),
            ("cil-cifar100", TaskKind::ClassIncremental),
            ("cil-cifar100-inc5", TaskKind::ClassIncremental),
            ("cil-imagenet-r", TaskKind::ClassIncremental),
            ("cil-imagenet-a", TaskKind::ClassIncremental),
            ("cil-cub", TaskKind::ClassIncremental),
            ("cil-vtab", TaskKind::ClassIncremental),
            ("demo-music", TaskKind::MusicGeneration),
            ("folk-songs", TaskKind::MusicGeneration),
            ("musicgen-adapters", TaskKind::MusicGeneration),
        ];
        for (name, kind) in expected {
            let suite = load_suite(name, suites_dir(), &RegistryCatalog).unwrap();
            assert_eq!(suite.kind, kind, "{name}");
            let specs = plan(&suite, &PlanOptions::default(), &RegistryCatalog).unwrap();
            assert!(specs.iter().all(|s| s.kind == kind), "{name}");
            // A run read back from its record (which does not store the kind) has it again.
            let json = serde_json::to_value(&specs[0]).unwrap();
            assert!(json.get("kind").is_none(), "{name}");
            let read_back: RunSpec = serde_json::from_value(json).unwrap();
            assert_eq!(read_back, specs[0], "{name}");
        }
    }

    /// A continual stream must fit its task's classes: each error names the file, the field's
    /// line and the field; `learner:` belongs to continual suites only.
    #[test]
    fn continual_streams_are_checked_against_the_classes() {
        let path = suites_dir().join("demo-cl.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let line_of =
            |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        let error = |text: &str| {
            parse_suite(text, &path, &RegistryCatalog)
                .unwrap_err()
                .to_string()
        };
        let uneven = text.replace("increment: 4", "increment: 5");
        let e = error(&uneven);
        assert!(
            e.contains(&format!("demo-cl.yaml:{}", line_of(&uneven, "increment: 5")))
                && e.contains("`continual.increment` 5 does not divide the 19 classes left after a first stage of 5 (of 24)"),
            "{e}"
        );
        let order = text.replace(
            "shuffle_seed: 1993",
            &format!(
                "class_order: [{}]",
                (0..23)
                    .chain([3])
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        let e = error(&order);
        assert!(
            e.contains(&format!("demo-cl.yaml:{}", line_of(&order, "class_order")))
                && e.contains("3 is repeated"),
            "{e}"
        );
        let too_big = text.replace("init_classes: 0", "init_classes: 24");
        assert!(error(&too_big).contains("leaves none of the 24 classes"));
        let demo = std::fs::read_to_string(suites_dir().join("demo.yaml")).unwrap();
        let with_learner = demo.replacen(
            "  - method: linear\n",
            "  - method: linear\n    learner: aper\n",
            1,
        );
        assert_ne!(with_learner, demo);
        let e = parse_suite(
            &with_learner,
            &suites_dir().join("demo.yaml"),
            &RegistryCatalog,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`learner: aper` is for continual suites"), "{e}");
    }

    /// A vision-language task names what it asks (`vl_task`) and has no classes; the errors say
    /// so with the task's line.
    #[test]
    fn vision_language_tasks_are_checked() {
        let path = suites_dir().join("demo-vl.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let with_classes = text.replace(
            "{ name: gqa, vl_task: gqa,",
            "{ name: gqa, vl_task: gqa, num_classes: 3,",
        );
        let e = parse_suite(&with_classes, &path, &RegistryCatalog)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`num_classes` does not apply to vision-language tasks"),
            "{e}"
        );
        let without_task = text.replace("{ name: gqa, vl_task: gqa,", "{ name: gqa,");
        let e = parse_suite(&without_task, &path, &RegistryCatalog)
            .unwrap_err()
            .to_string();
        assert!(e.contains("task `gqa` needs a `vl_task`"), "{e}");
        let line = text.lines().position(|l| l.contains("name: gqa")).unwrap() + 1;
        assert!(e.contains(&format!("demo-vl.yaml:{line}")), "{e}");
        let retrieval = std::fs::read_to_string(suites_dir().join("demo-clip-retrieval.yaml"))
            .unwrap()
            .replace("vl_task: captions", "vl_task: vqa");
        let e = parse_suite(&retrieval, &path, &RegistryCatalog)
            .unwrap_err()
            .to_string();
        assert!(e.contains("give it `vl_task: captions`"), "{e}");
    }

    /// A music suite's section is checked field by field, with the field's line; music tasks
    /// have no classes, and the folder format needs the section.
    #[test]
    fn music_sections_are_checked() {
        let path = suites_dir().join("demo-music.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let error = |text: &str| {
            parse_suite(text, &path, &RegistryCatalog)
                .unwrap_err()
                .to_string()
        };
        let line_of =
            |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        let zero = text.replace("train_clips: 32", "train_clips: 0");
        let e = error(&zero);
        assert!(
            e.contains(&format!(
                "demo-music.yaml:{}",
                line_of(&zero, "train_clips: 0")
            )) && e.contains("`music.train_clips` must be at least 1"),
            "{e}"
        );
        let e = error(&text.replace("wav_clips: 2", "wav_clips: 40"));
        assert!(e.contains("exceeds the 32 clips generated"), "{e}");
        let e = error(&text.replace(
            "{ name: pentatonic, generator: melodies }",
            "{ name: pentatonic, generator: melodies, num_classes: 2 }",
        ));
        assert!(e.contains("does not apply to music tasks"), "{e}");
        let not_music: String = text
            .replace("format: generated", "format: noah")
            .lines()
            .filter(|l| !l.contains("_examples:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = error(&not_music);
        assert!(e.contains("reads music clips in styles"), "{e}");
        let demo = std::fs::read_to_string(suites_dir().join("demo.yaml"))
            .unwrap()
            .replace(
                "  format: generated\n  image_size: 32\n  train_examples: 600\n  eval_examples: 400\n",
                "  format: music-folder\n",
            );
        let e = parse_suite(&demo, &suites_dir().join("demo.yaml"), &RegistryCatalog)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a `music` section"), "{e}");
    }

    /// A declared `kind:` that agrees changes nothing, not even a configuration hash; one that
    /// contradicts the sections is an error naming its line and the kind the sections make.
    #[test]
    fn a_declared_kind_is_checked_and_leaves_hashes_alone() {
        let path = suites_dir().join("demo.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let hashes = |text: &str| -> Vec<String> {
            let suite = parse_suite(text, &path, &RegistryCatalog).unwrap();
            plan(&suite, &PlanOptions::default(), &RegistryCatalog)
                .unwrap()
                .iter()
                .map(|s| s.config_hash())
                .collect()
        };
        let declared = format!("kind: image-classification\n{text}");
        assert_eq!(hashes(&text), hashes(&declared));

        let wrong = format!("kind: reranking\n{text}");
        let e = parse_suite(&wrong, &path, &RegistryCatalog)
            .unwrap_err()
            .to_string();
        assert!(e.contains("demo.yaml:1"), "{e}");
        assert!(
            e.contains("`kind: reranking` does not match the suite's sections, which make it `image-classification`"),
            "{e}"
        );
        let unknown = format!("kind: captioning\n{text}");
        let e = parse_suite(&unknown, &path, &RegistryCatalog)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("image-classification"),
            "the valid kinds listed: {e}"
        );
    }

    /// Length bucketing is part of a text run's configuration when on (it changes the batches),
    /// and absent from it when off, so suites that do not ask for it keep their hashes.
    #[test]
    fn length_buckets_enter_the_configuration_only_when_on() {
        let path = suites_dir().join("demo-text.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let first = |text: &str| {
            let suite = parse_suite(text, &path, &RegistryCatalog).unwrap();
            plan(&suite, &PlanOptions::default(), &RegistryCatalog).unwrap()[0].clone()
        };
        let off = first(&text.replace(
            "  pooling: mean\n",
            "  pooling: mean\n  length_buckets: false\n",
        ));
        let on = first(&text.replace(
            "  pooling: mean\n",
            "  pooling: mean\n  length_buckets: true\n",
        ));
        assert_eq!(off.config_hash(), first(&text).config_hash());
        assert_ne!(on.config_hash(), off.config_hash());
        assert!(on.text.as_ref().unwrap().length_buckets);
    }

    /// Each kind names the primary metric its records rank by.
    #[test]
    fn every_kind_names_its_primary_metric() {
        struct Primary<'a>(&'a RunSpec);
        impl KindVisitor for Primary<'_> {
            type Output = String;
            fn visit<K: Kind>(self) -> String {
                K::primary_metric(self.0)
            }
        }
        for (name, metric) in [
            ("demo", "test_accuracy"),
            ("demo-audio", "test_accuracy"),
            ("demo-text", "test_accuracy"),
            ("lowres-ner", "test_span_f1"),
            ("demo-rerank", "ndcg_cut_10"),
            ("demo-vl", "task_score"),
            ("demo-clip-retrieval", "rsum"),
            ("demo-music", "ce_reduction"),
        ] {
            let suite = load_suite(name, suites_dir(), &RegistryCatalog).unwrap();
            let specs = plan(&suite, &PlanOptions::default(), &RegistryCatalog).unwrap();
            assert_eq!(with_kind(suite.kind, Primary(&specs[0])), metric, "{name}");
        }
    }
}
