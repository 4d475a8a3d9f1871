//! Reading suite files: YAML -> raw structs (with source spans) -> validated [`Suite`].
//!
//! Line numbers: schema errors (unknown field, wrong type, malformed YAML) carry the line and column
//! reported by `serde-saphyr`. Semantic errors (unknown method, unknown task in a group, ...) use
//! `serde_saphyr::Spanned<T>` on the offending values, so they name the line of that value. A few
//! section-level errors (for example `data` missing `train_examples`) locate the section key by
//! scanning the source text for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::error::{list, SuiteError};
use crate::schema::*;
use crate::MethodCatalog;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    /// Optional: the kind of task, checked against the one the sections imply.
    #[serde(default)]
    kind: Option<Spanned<TaskKind>>,
    backbone: BackboneSpec,
    data: DataSpec,
    #[serde(default)]
    preprocess: Option<PreprocessSpec>,
    #[serde(default)]
    audio: Option<AudioSpec>,
    #[serde(default)]
    text: Option<TextSpec>,
    #[serde(default)]
    retrieval: Option<peftbench_retrieval::RetrievalSpec>,
    #[serde(default)]
    language_adapters: Option<LanguageAdapterSpec>,
    #[serde(default)]
    multitask: Option<MultiTaskSpec>,
    #[serde(default)]
    vision_language: Option<VisionLanguageSpec>,
    #[serde(default)]
    image_text_retrieval: Option<ImageTextRetrievalSpec>,
    #[serde(default)]
    continual: Option<ContinualSpec>,
    #[serde(default)]
    music: Option<MusicSpec>,
    #[serde(default)]
    protocol: Option<Protocol>,
    #[serde(default)]
    recipe: Recipe,
    seeds: Spanned<Vec<u64>>,
    #[serde(default = "default_averaging")]
    averaging: Vec<Averaging>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    tasks: Option<Spanned<Vec<RawTask>>>,
    methods: Spanned<Vec<RawMethod>>,
    #[serde(default)]
    published: Option<RawPublished>,
    #[serde(default)]
    tolerance: Option<Spanned<f64>>,
    #[serde(default)]
    threads: Option<Spanned<usize>>,
}

fn default_averaging() -> Vec<Averaging> {
    vec![Averaging::Mean]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: Spanned<String>,
    /// Classification tasks only (vision-language tasks generate text).
    #[serde(default)]
    num_classes: Option<usize>,
    #[serde(default)]
    generator: Option<Generator>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    tolerance: Option<Spanned<f64>>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    eval_language: Option<String>,
    #[serde(default)]
    columns: Option<Spanned<RawColumns>>,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    skills: Option<Vec<String>>,
    #[serde(default)]
    vl_task: Option<VlTask>,
}

/// A task's `columns`: `text`, `text_pair`, `prefix` and `label` of `table` tasks, `audio`, `label`
/// and `fold` of `audio-parquet` tasks (which keys apply is checked against the format in [`task_columns`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumns {
    #[serde(default)]
    text: Option<Spanned<String>>,
    #[serde(default)]
    text_pair: Option<Spanned<String>>,
    #[serde(default)]
    prefix: Option<Spanned<String>>,
    #[serde(default)]
    label: Option<Spanned<String>>,
    #[serde(default)]
    audio: Option<Spanned<String>>,
    #[serde(default)]
    fold: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMethod {
    method: Spanned<String>,
    #[serde(default)]
    label: Option<Spanned<String>>,
    #[serde(default)]
    params: Option<Map<String, Value>>,
    #[serde(default)]
    grid: OrderedGrid,
    #[serde(default)]
    recipe: RecipePatch,
    #[serde(default)]
    learner: Option<Spanned<Learner>>,
    #[serde(default)]
    learner_params: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublished {
    source: String,
    #[serde(default = "default_metric")]
    metric: String,
    #[serde(default)]
    results: BTreeMap<String, BTreeMap<String, Spanned<f64>>>,
    #[serde(default)]
    means: BTreeMap<String, Spanned<f64>>,
    #[serde(default)]
    group_means: BTreeMap<String, Spanned<f64>>,
}

fn default_metric() -> String {
    "accuracy".to_string()
}

/// A YAML mapping read in file order (grid axes keep their order).
#[derive(Default)]
struct OrderedGrid(Vec<(Spanned<String>, Vec<Value>)>);

impl<'de> Deserialize<'de> for OrderedGrid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedGrid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from parameter or recipe.* keys to lists of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedGrid, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Spanned<String>, Vec<Value>>()? {
                    out.push((k, v));
                }
                Ok(OrderedGrid(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Names usable for tasks, labels and suites: they become path components of run ids.
pub(crate) fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

fn line_of<T>(s: &Spanned<T>) -> Option<usize> {
    let l = s.referenced.line() as usize;
    (l > 0).then_some(l)
}

/// The line of a top-level key (`data:`) or of a key nested under it (`["data", "format"]`),
/// found by scanning the source text (used where no span is recorded).
pub(crate) fn key_line(src: &str, path: &[&str]) -> Option<usize> {
    let mut depth = 0;
    let mut min_indent = 0usize;
    for (i, line) in src.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if depth > 0 && indent < min_indent {
            return None; // left the parent block
        }
        let key = path[depth];
        if (depth == 0 && indent == 0 || depth > 0) && trimmed.starts_with(&format!("{key}:")) {
            depth += 1;
            if depth == path.len() {
                return Some(i + 1);
            }
            min_indent = indent + 1;
        }
    }
    None
}

/// Dotted path of the mapping keys enclosing `line` (1-based), from indentation; sequence
/// items are shown as `[first value]` (`methods[lora].recipe`). Best effort, used in messages.
pub(crate) fn context_at(src: &str, line: usize, column: usize) -> String {
    let lines: Vec<&str> = src.lines().collect();
    if line == 0 || line > lines.len() {
        return String::new();
    }
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let item_marker = |item: &str| {
        let first = item
            .split_once(':')
            .map(|(_, v)| v.trim())
            .unwrap_or(item.trim())
            .trim_matches(|c| c == '{' || c == '}' || c == '"' || c == '\'');
        format!("[{}]", first.split(',').next().unwrap_or("").trim())
    };
    let own = lines[line - 1];
    let mut cur = indent_of(own);
    let mut parts: Vec<String> = Vec::new();
    if let Some(item) = own.trim_start().strip_prefix("- ") {
        if column > cur + 1 {
            parts.push(item_marker(item));
        }
    }
    for l in lines[..line - 1].iter().rev() {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = indent_of(l);
        if let Some(item) = t.strip_prefix("- ") {
            // A sequence item: `- key: value` opens a mapping whose keys sit at ind + 2.
            if ind < cur {
                parts.push(item_marker(item));
                cur = ind;
            } else if ind + 2 < cur {
                if let Some((k, _)) = item.split_once(':') {
                    parts.push(k.trim().to_string());
                }
                cur = ind + 2;
            }
            continue;
        }
        if ind < cur {
            if let Some((k, _)) = t.split_once(':') {
                parts.push(k.trim().to_string());
            }
            cur = ind;
            if ind == 0 {
                break;
            }
        }
    }
    parts.reverse();
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        out.push_str(&p);
    }
    out
}

/// The mapping key written before `column` on `line` (`epochs` for `  epochs: four`), if any.
fn key_before(src: &str, line: usize, column: usize) -> Option<String> {
    let text = src.lines().nth(line.checked_sub(1)?)?;
    let upto: String = text.chars().take(column.saturating_sub(1)).collect();
    let before_value = upto.trim_end().strip_suffix(':')?;
    let key = before_value.rsplit(['{', ',', '-', ' ']).next()?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

fn parse_error(path: &Path, src: &str, e: &serde_saphyr::Error) -> SuiteError {
    let loc = e.location();
    let (line, column) = loc
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((0, 0));
    let mut message = e.without_snippet().to_string();
    let suffix = format!(" at line {line}, column {column}");
    if let Some(m) = message.strip_suffix(&suffix) {
        message = m.to_string();
    }
    let message = message.replace("expected one of ", "expected one of: ");
    let mut ctx = context_at(src, line, column);
    if !message.starts_with("unknown field") {
        if let Some(k) = key_before(src, line, column) {
            if !ctx.is_empty() {
                ctx.push('.');
            }
            ctx.push_str(&k);
        }
    }
    let message = if ctx.is_empty() {
        message
    } else if let Some(rest) = message.strip_prefix("unknown field `") {
        match rest.split_once('`') {
            Some((field, tail)) => format!("unknown field `{field}` in {ctx}{tail}"),
            None => format!("{message} (in {ctx})"),
        }
    } else {
        format!("{message} (in {ctx})")
    };
    if line == 0 {
        SuiteError::Invalid {
            path: path.to_path_buf(),
            line: None,
            message,
        }
    } else {
        SuiteError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

/// Suite names (file stems) and descriptions of `*.yaml` / `*.yml` files in `suites_dir`, sorted
/// by name. A file that does not parse is listed with its error as description.
pub fn list_suites(suites_dir: &Path) -> Vec<(String, String)> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        description: Option<String>,
    }
    let Ok(rd) = std::fs::read_dir(suites_dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            let desc = match std::fs::read_to_string(&p) {
                Ok(src) => match serde_saphyr::from_str::<Head>(&src) {
                    Ok(h) => h.description.unwrap_or_default(),
                    Err(e) => format!("(invalid: {})", e.without_snippet()),
                },
                Err(e) => format!("(unreadable: {e})"),
            };
            Some((stem, desc))
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn resolve(path_or_name: &str, suites_dir: &Path) -> Result<PathBuf, SuiteError> {
    let direct = PathBuf::from(path_or_name);
    if direct.is_file() {
        return Ok(direct);
    }
    let is_name = !path_or_name.contains(['/', '\\']) && direct.extension().is_none();
    if is_name {
        for ext in ["yaml", "yml"] {
            let p = suites_dir.join(format!("{path_or_name}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(SuiteError::NotFound {
        name: path_or_name.to_string(),
        looked: if is_name {
            suites_dir.join(format!("{path_or_name}.yaml"))
        } else {
            direct
        },
        available: list_suites(suites_dir)
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
    })
}

/// Loads a suite by path, or by name from `suites_dir/<name>.yaml`, and validates it (method names
/// and parameters against `catalog`, tasks, groups, labels, seeds, recipe ranges, published table).
pub fn load_suite(
    path_or_name: &str,
    suites_dir: &Path,
    catalog: &dyn MethodCatalog,
) -> Result<Suite, SuiteError> {
    let path = resolve(path_or_name, suites_dir)?;
    let src = std::fs::read_to_string(&path).map_err(|source| SuiteError::Io {
        path: path.clone(),
        source,
    })?;
    parse_suite(&src, &path, catalog)
}

/// Parses and validates suite text; `path` is used for the default name and in messages.
pub fn parse_suite(
    src: &str,
    path: &Path,
    catalog: &dyn MethodCatalog,
) -> Result<Suite, SuiteError> {
    let raw: RawSuite = serde_saphyr::from_str(src).map_err(|e| parse_error(path, src, &e))?;
    let invalid = |line: Option<usize>, message: String| SuiteError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    let section = |key: &str| key_line(src, &[key]);
    // Reranking suites list their tasks under `retrieval.tasks` and may leave out `protocol`
    // (they train on the triples and evaluate every task's queries); other suites need both.
    let (tasks_line, raw_tasks) = match (raw.tasks, &raw.retrieval) {
        (Some(t), None) => (line_of(&t), t.value),
        (Some(t), Some(_)) => {
            return Err(invalid(
                line_of(&t),
                "a reranking suite lists its tasks under `retrieval.tasks`, not `tasks`".into(),
            ))
        }
        (None, Some(_)) => (section("retrieval"), Vec::new()),
        (None, None) => return Err(invalid(None, "missing field `tasks`".into())),
    };
    let protocol = match (raw.protocol, &raw.retrieval) {
        (Some(p), Some(_)) if p.folds.is_some() || p.val_split.is_some() => {
            return Err(invalid(
                section("protocol"),
                "a reranking suite trains on its triples and evaluates every task's queries: \
                 `protocol.folds` and `protocol.val_split` do not apply"
                    .into(),
            ))
        }
        (Some(p), _) => p,
        (None, Some(_)) => Protocol {
            train_split: "train".into(),
            eval_split: "test".into(),
            val_split: None,
            selection: Selection::Final,
            on_data_error: OnDataError::Stop,
            folds: None,
        },
        (None, None) => return Err(invalid(None, "missing field `protocol`".into())),
    };

    // Name.
    let name = match &raw.name {
        Some(n) => {
            if !is_safe_name(&n.value) {
                return Err(invalid(
                    line_of(n),
                    format!(
                        "suite name `{}` may only use letters, digits, `.`, `_`, `-`",
                        n.value
                    ),
                ));
            }
            n.value.clone()
        }
        None => path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("suite")
            .to_string(),
    };

    // Seeds.
    if raw.seeds.value.is_empty() {
        return Err(invalid(
            line_of(&raw.seeds),
            "`seeds` is empty; give at least one seed".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for s in &raw.seeds.value {
        if !seen.insert(*s) {
            return Err(invalid(
                line_of(&raw.seeds),
                format!("seed {s} is listed twice"),
            ));
        }
    }

    // Backbone, data, preprocess, protocol, recipe.
    if raw.backbone.checkpoint.trim().is_empty() {
        return Err(invalid(
            section("backbone"),
            "`backbone.checkpoint` is empty".into(),
        ));
    }
    let generated = raw.data.format == DataFormat::Generated;
    if generated {
        for (field, v) in [
            ("train_examples", raw.data.train_examples),
            ("eval_examples", raw.data.eval_examples),
        ] {
            match v {
                None => {
                    return Err(invalid(
                        section("data"),
                        format!("`data.{field}` is required for format `generated`"),
                    ))
                }
                Some(0) => {
                    return Err(invalid(
                        key_line(src, &["data", field]),
                        format!("`data.{field}` must be at least 1"),
                    ))
                }
                _ => {}
            }
        }
    } else {
        for (field, set) in [
            ("image_size", raw.data.image_size.is_some()),
            ("train_examples", raw.data.train_examples.is_some()),
            ("eval_examples", raw.data.eval_examples.is_some()),
        ] {
            if set {
                return Err(invalid(
                    key_line(src, &["data", field]).or(section("data")),
                    format!("`data.{field}` only applies to format `generated`"),
                ));
            }
        }
    }
    // Image suites describe their input in `preprocess`, audio suites (audio formats, generated
    // `keywords`) in `audio`, text suites (text formats, generated `sentiment` / `topics`) in
    // `text`; a suite is one kind.
    let kind_of = |g: Generator| {
        if g.is_music() {
            Modality::Music
        } else if g.is_vision_language() {
            Modality::VisionLanguage
        } else if g.is_audio() {
            Modality::Audio
        } else if g.is_text() {
            Modality::Text
        } else {
            Modality::Image
        }
    };
    let modality = if raw.music.is_some() {
        if !matches!(
            raw.data.format,
            DataFormat::MusicFolder | DataFormat::Generated
        ) {
            return Err(invalid(
                key_line(src, &["data", "format"]).or(section("data")),
                "a suite with a `music` section reads music clips in styles (`data.format: \
                 music-folder`) or generates them (`generated`, generator `melodies`)"
                    .into(),
            ));
        }
        Modality::Music
    } else if raw.data.format == DataFormat::MusicFolder {
        return Err(invalid(
            key_line(src, &["data", "format"]).or(section("data")),
            "data format `music-folder` needs a `music` section (at least `source_style`)".into(),
        ));
    } else if raw.retrieval.is_some() {
        if !matches!(raw.data.format, DataFormat::Trec | DataFormat::Generated) {
            return Err(invalid(
                key_line(src, &["data", "format"]).or(section("data")),
                "a suite with a `retrieval` section reads TREC files (`data.format: trec`) or \
                 generates them (`generated`)"
                    .into(),
            ));
        }
        Modality::Text
    } else if raw.data.format == DataFormat::Trec {
        return Err(invalid(
            key_line(src, &["data", "format"]).or(section("data")),
            "data format `trec` needs a `retrieval` section (queries, corpus, qrels per task)"
                .into(),
        ));
    } else if raw.image_text_retrieval.is_some() {
        if !matches!(
            raw.data.format,
            DataFormat::VisionLanguage | DataFormat::Generated
        ) {
            return Err(invalid(
                key_line(src, &["data", "format"]).or(section("data")),
                "a suite with an `image_text_retrieval` section reads captioned images \
                 (`data.format: vision-language`) or generates them (`generated`)"
                    .into(),
            ));
        }
        Modality::ImageText
    } else if raw.data.format == DataFormat::VisionLanguage {
        Modality::VisionLanguage
    } else if raw.data.format.is_audio() {
        Modality::Audio
    } else if raw.data.format.is_text() {
        Modality::Text
    } else if generated {
        let kinds: BTreeSet<Modality> = raw_tasks
            .iter()
            .filter_map(|t| t.generator.map(kind_of))
            .collect();
        if kinds.len() > 1 {
            return Err(invalid(
                tasks_line,
                "a suite mixes image, audio (`keywords`) and text (`sentiment`, `topics`) \
                 generators; use one kind per suite"
                    .into(),
            ));
        }
        kinds.into_iter().next().unwrap_or(Modality::Image)
    } else {
        Modality::Image
    };
    let sections = [
        ("preprocess", raw.preprocess.is_some(), Modality::Image),
        ("audio", raw.audio.is_some(), Modality::Audio),
        ("text", raw.text.is_some(), Modality::Text),
        (
            "vision_language",
            raw.vision_language.is_some(),
            Modality::VisionLanguage,
        ),
        (
            "image_text_retrieval",
            raw.image_text_retrieval.is_some(),
            Modality::ImageText,
        ),
        ("music", raw.music.is_some(), Modality::Music),
    ];
    for (name, present, owner) in sections {
        if present && owner != modality {
            return Err(invalid(
                section(name),
                format!(
                    "`{name}` is for {} suites, and this is {} suite; it sets its input in `{}`",
                    owner.noun(),
                    modality.article_noun(),
                    modality.section()
                ),
            ));
        }
    }
    match modality {
        Modality::Audio => match &raw.audio {
            None => {
                return Err(invalid(
                    None,
                    "an audio suite needs an `audio` section (at least `target_frames`)".into(),
                ))
            }
            Some(a) if a.target_frames == 0 || a.num_mel_bins == 0 || a.std <= 0.0 => {
                return Err(invalid(
                    section("audio"),
                    "`audio.target_frames` and `audio.num_mel_bins` must be at least 1 and `audio.std` positive".into(),
                ))
            }
            Some(_) => {}
        },
        Modality::Text => match &raw.text {
            None => {
                return Err(invalid(
                    None,
                    "a text suite needs a `text` section (`max_tokens`)".into(),
                ))
            }
            Some(t) if t.max_tokens < 3 => {
                return Err(invalid(
                    key_line(src, &["text", "max_tokens"]).or(section("text")),
                    format!(
                        "`text.max_tokens` must leave room for a word besides the special \
                         tokens (at least 3, got {})",
                        t.max_tokens
                    ),
                ))
            }
            Some(_) => {}
        },
        Modality::VisionLanguage => match &raw.vision_language {
            None => {
                return Err(invalid(
                    None,
                    "a vision-language suite needs a `vision_language` section (at least \
                     `visual_backbone` and `preprocess`)"
                        .into(),
                ))
            }
            Some(vl) => check_vision_language(vl).map_err(|m| invalid(section("vision_language"), m))?,
        },
        Modality::ImageText => {
            let r = raw
                .image_text_retrieval
                .as_ref()
                .expect("the section makes the modality");
            if r.preprocess.image_size == 0 || r.max_text_tokens < 3 {
                return Err(invalid(
                    section("image_text_retrieval"),
                    "`image_text_retrieval.preprocess.image_size` must be at least 1 and \
                     `max_text_tokens` at least 3 (start, a word, end)"
                        .into(),
                ));
            }
        }
        Modality::Music => {
            let music = raw.music.as_ref().expect("the section makes the modality");
            check_music(music).map_err(|(field, m)| {
                invalid(key_line(src, &["music", field]).or(section("music")), m)
            })?;
        }
        Modality::Image => match &raw.preprocess {
            None => {
                return Err(invalid(
                    None,
                    "an image suite needs a `preprocess` section".into(),
                ))
            }
            Some(p) if p.image_size == 0 || raw.data.image_size == Some(0) => {
                return Err(invalid(
                    section("data").or(section("preprocess")),
                    "image_size must be at least 1".into(),
                ));
            }
            Some(_) => {}
        },
    }
    // The kind of task: the input, and for text what is predicted (a class, a tag per word, a
    // ranking). A declared `kind:` must agree, so a suite says what it means.
    let kind = TaskKind::of_sections(
        modality,
        raw.data.format,
        raw.retrieval.is_some(),
        raw.multitask.is_some(),
        raw.continual.is_some(),
    );
    if raw.continual.is_some() {
        if modality != Modality::Image {
            return Err(invalid(
                section("continual"),
                format!(
                    "`continual` streams image classes, and this is {} suite",
                    modality.article_noun()
                ),
            ));
        }
        if raw.multitask.is_some() {
            return Err(invalid(
                section("continual"),
                "`continual` and `multitask` do not go together: a continual suite streams \
                 one task's classes"
                    .into(),
            ));
        }
    }
    if raw.multitask.is_some() {
        let unsupported = if raw.retrieval.is_some() {
            Some("reranking")
        } else if modality == Modality::Audio {
            Some("audio")
        } else if raw.data.format.is_token_level() {
            Some("token-tagging")
        } else if modality == Modality::VisionLanguage {
            None
        } else if modality == Modality::ImageText {
            Some("image-text retrieval")
        } else {
            None
        };
        if let Some(what) = unsupported {
            return Err(invalid(
                section("multitask"),
                format!(
                    "`multitask` trains image or text classification tasks together; {what}                      suites run one task per run"
                ),
            ));
        }
    }
    if let Some(declared) = &raw.kind {
        if declared.value != kind {
            return Err(invalid(
                line_of(declared),
                format!(
                    "`kind: {}` does not match the suite's sections, which make it `{kind}` \
                     (data format `{}`{})",
                    declared.value,
                    serde_json::to_value(raw.data.format)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    if raw.retrieval.is_some() {
                        ", a `retrieval` section"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    validate_protocol(&protocol).map_err(|m| invalid(section("protocol"), m))?;
    if let Some(la) = &raw.language_adapters {
        let line = section("language_adapters");
        if modality != Modality::Text {
            return Err(invalid(
                line,
                "`language_adapters` is for text suites (masked language modelling)".into(),
            ));
        }
        if la.max_texts == 0 || la.epochs == 0 || la.batch_size == 0 {
            return Err(invalid(
                line,
                "`language_adapters`: max_texts, epochs and batch_size must be at least 1".into(),
            ));
        }
        if !(la.lr > 0.0 && la.lr.is_finite()) {
            return Err(invalid(
                line,
                "`language_adapters.lr` must be a positive number".into(),
            ));
        }
        match (&la.corpus, generated) {
            (None, false) => {
                return Err(invalid(
                    line,
                    "`language_adapters.corpus` is required for data on disk: a path under the \
                     data root with `{language}` in it (plain text or parquet)"
                        .into(),
                ))
            }
            (Some(c), _) if !c.contains("{language}") => {
                return Err(invalid(
                    line,
                    format!("`language_adapters.corpus` `{c}` has no `{{language}}` in it"),
                ))
            }
            _ => {}
        }
    }
    raw.recipe
        .validate()
        .map_err(|m| invalid(section("recipe"), m))?;

    // Tasks.
    let mut tasks: Vec<TaskSpec> = Vec::new();
    let mut task_lines: BTreeMap<String, Option<usize>> = BTreeMap::new();
    if let Some(retrieval) = &raw.retrieval {
        check_retrieval(retrieval).map_err(|m| invalid(section("retrieval"), m))?;
        for (i, t) in retrieval.tasks.iter().enumerate() {
            let line = key_line(src, &["retrieval", "tasks"]);
            if !is_safe_name(&t.name) {
                return Err(invalid(
                    line,
                    format!(
                        "task name `{}` may only use letters, digits, `.`, `_`, `-`",
                        t.name
                    ),
                ));
            }
            if task_lines.insert(t.name.clone(), line).is_some() {
                return Err(invalid(line, format!("task `{}` is listed twice", t.name)));
            }
            if let Some(field) = &t.corpus_id_field {
                if field.trim().is_empty() || field.chars().any(char::is_whitespace) {
                    // Tasks that set the field, in file order, are the key's occurrences in order.
                    let nth = retrieval.tasks[..i]
                        .iter()
                        .filter(|t| t.corpus_id_field.is_some())
                        .count();
                    return Err(invalid(
                        nth_key_line(src, "corpus_id_field", nth).or(line),
                        format!(
                            "task `{}`: `corpus_id_field` {field:?} is not a JSON field name \
                             (give the field holding each document's id, e.g. `id`, or leave it \
                             out for `_id`, `docid` or `doc_id`)",
                            t.name
                        ),
                    ));
                }
            }
            // One relevance logit per (query, document) pair.
            tasks.push(TaskSpec {
                name: t.name.clone(),
                num_classes: 1,
                generator: None,
                group: None,
                language: None,
                eval_language: None,
                columns: None,
                audio_columns: None,
                labels: None,
                skills: None,
                vl_task: None,
            });
        }
    } else if raw_tasks.is_empty() {
        return Err(invalid(tasks_line, "`tasks` is empty".into()));
    }
    for t in &raw_tasks {
        let line = line_of(&t.name);
        let tname = &t.name.value;
        if !is_safe_name(tname) {
            return Err(invalid(
                line,
                format!("task name `{tname}` may only use letters, digits, `.`, `_`, `-`"),
            ));
        }
        if task_lines.insert(tname.clone(), line).is_some() {
            return Err(invalid(line, format!("task `{tname}` is listed twice")));
        }
        let generative = matches!(
            modality,
            Modality::VisionLanguage | Modality::ImageText | Modality::Music
        );
        let num_classes = match (generative, t.num_classes) {
            (true, None) => 0,
            (true, Some(_)) if modality == Modality::Music => {
                return Err(invalid(
                    line,
                    format!(
                        "task `{tname}`: `num_classes` does not apply to music tasks, which \
                         generate audio in the style the task names"
                    ),
                ))
            }
            (true, Some(_)) => {
                return Err(invalid(
                    line,
                    format!(
                        "task `{tname}`: `num_classes` does not apply to vision-language tasks, \
                         which generate or match text"
                    ),
                ))
            }
            (false, None) => {
                return Err(invalid(line, format!("task `{tname}` needs `num_classes`")))
            }
            (false, Some(n)) if n < 2 => {
                return Err(invalid(
                    line,
                    format!("task `{tname}`: num_classes must be at least 2"),
                ))
            }
            (false, Some(n)) => n,
        };
        match (modality, t.vl_task) {
            (Modality::ImageText, Some(VlTask::Captions)) => {}
            (Modality::ImageText, _) => {
                return Err(invalid(
                    line,
                    format!(
                        "task `{tname}`: image-text retrieval reads captioned images; give it \
                         `vl_task: captions`"
                    ),
                ))
            }
            (Modality::VisionLanguage, None) => {
                return Err(invalid(
                    line,
                    format!(
                        "task `{tname}` needs a `vl_task` (what it asks and how it is scored); \
                         valid: vqa, gqa, nlvr2, captions"
                    ),
                ))
            }
            (Modality::VisionLanguage, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(invalid(
                    line,
                    format!("task `{tname}`: `vl_task` only applies to vision-language suites"),
                ))
            }
        }
        match (generated, t.generator) {
            (true, None) => {
                return Err(invalid(
                    line,
                    format!(
                        "task `{tname}` needs a `generator` (format `generated`); valid generators: position, orientation, count, shapes, keywords, sentiment, topics"
                    ),
                ))
            }
            (false, Some(_)) => {
                return Err(invalid(
                    line,
                    format!("task `{tname}`: `generator` only applies to data format `generated`"),
                ))
            }
            _ => {}
        }
        check_text_fields(t, modality, raw.data.format, generated).map_err(|m| invalid(line, m))?;
        check_skills(t).map_err(|m| invalid(line, m))?;
        let (columns, audio_columns) = task_columns(t, modality, raw.data.format, &protocol)
            .map_err(|(l, m)| invalid(l.or(line), m))?;
        tasks.push(TaskSpec {
            name: tname.clone(),
            num_classes,
            generator: t.generator,
            group: t.group.clone(),
            language: t.language.clone(),
            eval_language: t.eval_language.clone(),
            columns,
            audio_columns,
            labels: t.labels.clone(),
            skills: t.skills.clone(),
            vl_task: t.vl_task,
        });
    }
    let task_names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    if let Some(stream) = &raw.continual {
        for task in &tasks {
            check_continual(stream, task.num_classes).map_err(|(field, m)| {
                invalid(
                    key_line(src, &["continual", field]).or(section("continual")),
                    format!("task `{}`: {m}", task.name),
                )
            })?;
        }
    }
    if let Some(multitask) = &raw.multitask {
        check_multitask(multitask, &tasks).map_err(|m| invalid(section("multitask"), m))?;
    }

    // Groups: from `groups` and from tasks' `group`.
    let mut member_of: BTreeMap<String, String> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (g, members) in &raw.groups {
        if !is_safe_name(g) {
            return Err(invalid(
                section("groups"),
                format!("group name `{g}` may only use letters, digits, `.`, `_`, `-`"),
            ));
        }
        let entry = groups.entry(g.clone()).or_default();
        for m in members {
            let line = line_of(m);
            if !task_lines.contains_key(&m.value) {
                return Err(invalid(
                    line,
                    format!(
                        "group `{g}` lists task `{}`, which is not in `tasks`; valid tasks: {}",
                        m.value,
                        list(&task_names)
                    ),
                ));
            }
            if let Some(other) = member_of.insert(m.value.clone(), g.clone()) {
                return Err(invalid(
                    line,
                    format!("task `{}` is in two groups: `{other}` and `{g}`", m.value),
                ));
            }
            entry.push(m.value.clone());
        }
    }
    for (t, raw_t) in tasks.iter_mut().zip(&raw_tasks) {
        match (&t.group, member_of.get(&t.name)) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    line_of(&raw_t.name),
                    format!(
                        "task `{}` says group `{a}` but `groups` puts it in `{b}`",
                        t.name
                    ),
                ))
            }
            (Some(a), None) => {
                if !is_safe_name(a) {
                    return Err(invalid(
                        line_of(&raw_t.name),
                        format!("group name `{a}` may only use letters, digits, `.`, `_`, `-`"),
                    ));
                }
                groups.entry(a.clone()).or_default().push(t.name.clone());
            }
            (None, Some(b)) => t.group = Some(b.clone()),
            _ => {}
        }
    }
    // Members in task order within each group.
    for members in groups.values_mut() {
        members.sort_by_key(|m| task_names.iter().position(|t| t == m));
    }

    // Averaging.
    let mut averaging = raw.averaging.clone();
    averaging.dedup();
    if averaging.is_empty() {
        return Err(invalid(
            section("averaging"),
            "`averaging` is empty; valid: mean, group-mean".into(),
        ));
    }
    if averaging.contains(&Averaging::GroupMean) {
        let ungrouped: Vec<&str> = tasks
            .iter()
            .filter(|t| t.group.is_none())
            .map(|t| t.name.as_str())
            .collect();
        if !ungrouped.is_empty() {
            return Err(invalid(
                section("averaging"),
                format!(
                    "`group-mean` averaging needs every task in a group; ungrouped: {}",
                    list(&ungrouped)
                ),
            ));
        }
    }

    // Methods.
    if raw.methods.value.is_empty() {
        return Err(invalid(line_of(&raw.methods), "`methods` is empty".into()));
    }
    let mut valid_methods = catalog.method_names();
    valid_methods.sort();
    let mut methods: Vec<MethodSpec> = Vec::new();
    let mut labels: BTreeMap<String, Option<usize>> = BTreeMap::new();
    for m in &raw.methods.value {
        let line = line_of(&m.method);
        let mname = &m.method.value;
        if !valid_methods.iter().any(|v| v == mname) {
            return Err(invalid(
                line,
                format!(
                    "unknown method `{mname}`; valid methods: {}",
                    list(&valid_methods)
                ),
            ));
        }
        let (label, label_line) = match &m.label {
            Some(l) => (l.value.clone(), line_of(l)),
            None => (mname.clone(), line),
        };
        if !is_safe_name(&label) {
            return Err(invalid(
                label_line,
                format!("label `{label}` may only use letters, digits, `.`, `_`, `-`, `+`"),
            ));
        }
        if let Some(prev) = labels.insert(label.clone(), label_line) {
            let prev = prev
                .map(|l| format!(" (first at line {l})"))
                .unwrap_or_default();
            return Err(invalid(
                label_line,
                format!(
                    "duplicate label `{label}`{prev}; give each entry of the same method a distinct `label:`"
                ),
            ));
        }
        let mut grid = Vec::new();
        for (k, values) in &m.grid.0 {
            let kline = line_of(k).or(line);
            let key = k
                .value
                .strip_prefix("params.")
                .unwrap_or(&k.value)
                .to_string();
            if let Some(field) = key.strip_prefix("recipe.") {
                if !RECIPE_FIELDS.contains(&field) {
                    return Err(invalid(
                        kline,
                        format!(
                            "unknown grid key `{key}` in method `{label}`; valid recipe keys: {}",
                            RECIPE_FIELDS
                                .iter()
                                .map(|f| format!("recipe.{f}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            } else if key.is_empty() || key.contains('.') {
                return Err(invalid(
                    kline,
                    format!("grid key `{key}` in method `{label}` must be a method parameter name or `recipe.<field>`"),
                ));
            }
            if values.is_empty() {
                return Err(invalid(
                    kline,
                    format!("grid axis `{key}` of method `{label}` has no values"),
                ));
            }
            if grid.iter().any(|a: &GridAxis| a.key == key) {
                return Err(invalid(
                    kline,
                    format!("grid axis `{key}` of method `{label}` is given twice"),
                ));
            }
            grid.push(GridAxis {
                key,
                values: values.clone(),
            });
        }
        if let (Some(learner), None) = (&m.learner, &raw.continual) {
            return Err(invalid(
                line_of(learner),
                format!(
                    "`learner: {}` is for continual suites (section `continual`)",
                    learner.value.name()
                ),
            ));
        }
        if let (Some(_), None) = (&m.learner_params, &raw.continual) {
            return Err(invalid(
                line,
                format!("`learner_params` of method `{label}` are for continual suites (section `continual`)"),
            ));
        }
        let learner_params = Value::Object(sorted(m.learner_params.clone().unwrap_or_default()));
        if m.learner_params.is_some() {
            let learner = m.learner.as_ref().map(|l| l.value).unwrap_or_default();
            learner.validate_params(&learner_params).map_err(|msg| {
                invalid(
                    line,
                    format!(
                        "`learner_params` of method `{label}` (learner `{}`): {msg}",
                        learner.name()
                    ),
                )
            })?;
        }
        let spec = MethodSpec {
            method: mname.clone(),
            label,
            params: Value::Object(sorted(m.params.clone().unwrap_or_default())),
            grid,
            recipe: m.recipe.clone(),
            learner: m.learner.as_ref().map(|l| l.value),
            learner_params,
            line: line.unwrap_or(0),
        };
        // Every grid point must have valid params and a valid recipe.
        for point in grid_points(&spec.grid) {
            let (params, recipe) = resolve_point(&spec, &raw.recipe, &point)
                .map_err(|msg| invalid(line, format!("method `{}`: {msg}", spec.label)))?;
            catalog.validate_params(mname, &params).map_err(|msg| {
                invalid(
                    line,
                    format!("method `{mname}` (label `{}`): {msg}", spec.label),
                )
            })?;
            recipe
                .validate()
                .map_err(|msg| invalid(line, format!("method `{}`: {msg}", spec.label)))?;
        }
        methods.push(spec);
    }
    // Labels of grid points must not collide with other entries' labels.
    let mut run_labels: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for m in &methods {
        for point in grid_points(&m.grid) {
            let l = crate::plan::point_label(&m.label, &point);
            if let Some((other, _)) = run_labels.insert(l.clone(), (m.label.clone(), m.line)) {
                return Err(invalid(
                    Some(m.line).filter(|l| *l > 0),
                    format!(
                        "run label `{l}` of entry `{}` repeats one of entry `{other}` (a grid value listed twice, or labels that collide); change a `label:`",
                        m.label
                    ),
                ));
            }
        }
    }

    // Published.
    let published = match raw.published {
        None => None,
        Some(p) => {
            // Scores are percentages, except CIDEr (a vision-language task score), which
            // papers print x100 and which exceeds 100 on COCO.
            let ceiling = if kind == TaskKind::VisionLanguage {
                f64::INFINITY
            } else {
                100.0
            };
            let check = |v: &Spanned<f64>, what: String| -> Result<f64, SuiteError> {
                if !(v.value >= 0.0 && v.value <= ceiling) {
                    return Err(invalid(
                        line_of(v),
                        format!(
                            "published {what} = {} is not a percentage in [0, 100]",
                            v.value
                        ),
                    ));
                }
                Ok(v.value)
            };
            let mut results = BTreeMap::new();
            for (label, per_task) in &p.results {
                let mut row = BTreeMap::new();
                for (task, v) in per_task {
                    if !task_lines.contains_key(task) {
                        return Err(invalid(
                            line_of(v),
                            format!(
                                "published result for `{label}` names task `{task}`, which is not in `tasks`; valid tasks: {}",
                                list(&task_names)
                            ),
                        ));
                    }
                    row.insert(task.clone(), check(v, format!("{label}/{task}"))?);
                }
                results.insert(label.clone(), row);
            }
            let mut means = BTreeMap::new();
            for (label, v) in &p.means {
                means.insert(label.clone(), check(v, format!("mean of {label}"))?);
            }
            let mut group_means = BTreeMap::new();
            for (label, v) in &p.group_means {
                group_means.insert(label.clone(), check(v, format!("group mean of {label}"))?);
            }
            Some(Published {
                source: p.source,
                metric: p.metric,
                results,
                means,
                group_means,
            })
        }
    };

    // Regression tolerances.
    let check_tolerance = |t: &Spanned<f64>, whose: &str| -> Result<f64, SuiteError> {
        if !(t.value.is_finite() && t.value >= 0.0) {
            return Err(invalid(
                line_of(t),
                format!(
                    "{whose} tolerance {} must be zero or a positive number of percentage points",
                    t.value
                ),
            ));
        }
        Ok(t.value)
    };
    let tolerance = match &raw.tolerance {
        Some(t) => check_tolerance(t, "suite")?,
        None => DEFAULT_TOLERANCE,
    };
    let mut task_tolerances = BTreeMap::new();
    for t in &raw_tasks {
        if let Some(tol) = &t.tolerance {
            let v = check_tolerance(tol, &format!("task `{}`", t.name.value))?;
            task_tolerances.insert(t.name.value.clone(), v);
        }
    }

    // Composing methods pick a language module per task: classification tasks must name their
    // language (reranking tasks name theirs in `retrieval.tasks`).
    if raw.language_adapters.is_some() && raw.retrieval.is_none() {
        let composing: Vec<&str> = methods
            .iter()
            .map(|m| m.method.as_str())
            .filter(|m| crate::plan::COMPOSING_METHODS.contains(m))
            .collect();
        if let (Some(method), Some(task)) = (
            composing.first(),
            tasks.iter().find(|t| t.language.is_none()),
        ) {
            return Err(invalid(
                task_lines.get(&task.name).copied().flatten(),
                format!(
                    "task `{}` names no `language`, and method `{method}` composes a language \
                     module (section `language_adapters`) for the task's language",
                    task.name
                ),
            ));
        }
    }
    Ok(Suite {
        source: path.to_path_buf(),
        name,
        description: raw.description,
        kind,
        backbone: raw.backbone,
        data: raw.data,
        preprocess: raw.preprocess,
        audio: raw.audio,
        text: raw.text,
        retrieval: raw.retrieval,
        language_adapters: raw.language_adapters,
        multitask: raw.multitask,
        vision_language: raw.vision_language,
        image_text_retrieval: raw.image_text_retrieval,
        continual: raw.continual,
        music: raw.music,
        protocol,
        recipe: raw.recipe,
        seeds: raw.seeds.value,
        averaging,
        groups,
        tasks,
        methods,
        published,
        tolerance,
        task_tolerances,
        threads: match raw.threads {
            Some(t) if t.value == 0 => {
                return Err(invalid(line_of(&t), "`threads` must be at least 1".into()))
            }
            t => t.map(|t| t.value),
        },
    })
}

/// A `continual` stream fits a task of `num_classes` classes; an error names the field.
fn check_continual(
    stream: &ContinualSpec,
    num_classes: usize,
) -> Result<(), (&'static str, String)> {
    if stream.increment == 0 {
        return Err((
            "increment",
            "`continual.increment` must be at least 1".into(),
        ));
    }
    if stream.init_classes >= num_classes {
        return Err((
            "init_classes",
            format!(
                "`continual.init_classes` {} leaves none of the {num_classes} classes for later stages",
                stream.init_classes
            ),
        ));
    }
    let first = if stream.init_classes == 0 {
        stream.increment
    } else {
        stream.init_classes
    };
    let left = num_classes.saturating_sub(first);
    if first > num_classes || left % stream.increment != 0 {
        return Err((
            "increment",
            format!(
                "`continual.increment` {} does not divide the {left} classes left after a first \
                 stage of {first} (of {num_classes})",
                stream.increment
            ),
        ));
    }
    if let Some(order) = &stream.class_order {
        if stream.shuffle_seed.is_some() {
            return Err((
                "class_order",
                "give `continual.class_order` or `continual.shuffle_seed`, not both".into(),
            ));
        }
        let mut seen = vec![false; num_classes];
        for &class in order {
            if class >= num_classes || std::mem::replace(&mut seen[class], true) {
                return Err((
                    "class_order",
                    format!(
                        "`continual.class_order` must list each of the {num_classes} classes \
                         (0 to {}) once; {class} is {}",
                        num_classes - 1,
                        if class >= num_classes {
                            "out of range"
                        } else {
                            "repeated"
                        }
                    ),
                ));
            }
        }
        if order.len() != num_classes {
            return Err((
                "class_order",
                format!(
                    "`continual.class_order` lists {} classes; the task has {num_classes}",
                    order.len()
                ),
            ));
        }
    }
    Ok(())
}

/// A `music` section's sizes and sampling are usable; an error names the field.
fn check_music(music: &MusicSpec) -> Result<(), (&'static str, String)> {
    if music.source_style.trim().is_empty() {
        return Err(("source_style", "`music.source_style` is empty".into()));
    }
    if music.train_clips == Some(0) {
        return Err((
            "train_clips",
            "`music.train_clips` must be at least 1".into(),
        ));
    }
    if music.test_clips.is_some_and(|n| n < 2) {
        return Err((
            "test_clips",
            "`music.test_clips` must be at least 2 (the noise floor compares two halves)".into(),
        ));
    }
    if !(music.clip_seconds > 0.0 && music.clip_seconds <= 60.0) {
        return Err((
            "clip_seconds",
            format!(
                "`music.clip_seconds` must be in (0, 60], not {}",
                music.clip_seconds
            ),
        ));
    }
    if music.max_prompt_tokens < 1 {
        return Err((
            "max_prompt_tokens",
            "`music.max_prompt_tokens` must be at least 1".into(),
        ));
    }
    if let Some(e) = &music.embedding {
        match e.hop_ms {
            Some(_) if !e.name.takes_hop() => {
                return Err((
                    "embedding",
                    format!(
                        "`music.embedding.hop_ms` does not apply to `{}`, which reads fixed \
                         0.96 s examples",
                        e.name
                    ),
                ));
            }
            Some(hop) if !(hop.is_finite() && hop >= 1.0) => {
                return Err((
                    "embedding",
                    format!("`music.embedding.hop_ms` must be at least 1 millisecond, not {hop}"),
                ));
            }
            _ => {}
        }
    }
    let g = &music.generation;
    if g.clips < 2 {
        return Err((
            "generation",
            "`music.generation.clips` must be at least 2 (distances compare sets)".into(),
        ));
    }
    let usable = g.guidance_scale.is_finite()
        && g.guidance_scale >= 1.0
        && g.temperature.is_finite()
        && g.temperature > 0.0;
    if !usable {
        return Err((
            "generation",
            "`music.generation.guidance_scale` must be at least 1 and `temperature` positive"
                .into(),
        ));
    }
    if music.wav_clips > g.clips {
        return Err((
            "wav_clips",
            format!(
                "`music.wav_clips` {} exceeds the {} clips generated",
                music.wav_clips, g.clips
            ),
        ));
    }
    Ok(())
}

/// A `vision_language` section's lengths and decoding are usable.
fn check_vision_language(vl: &VisionLanguageSpec) -> Result<(), String> {
    if vl.visual_backbone.checkpoint.trim().is_empty() {
        return Err("`vision_language.visual_backbone.checkpoint` is empty".into());
    }
    if vl.preprocess.image_size == 0 {
        return Err("`vision_language.preprocess.image_size` must be at least 1".into());
    }
    if vl.max_text_tokens < 2 || vl.max_target_tokens < 2 {
        return Err(
            "`vision_language.max_text_tokens` and `max_target_tokens` must be at least 2 (a \
             word and the end token)"
                .into(),
        );
    }
    if vl.num_beams == 0 {
        return Err("`vision_language.num_beams` must be at least 1 (1 is greedy)".into());
    }
    if vl.max_length < 2 {
        return Err(
            "`vision_language.max_length` must be at least 2 (the start token and one more)".into(),
        );
    }
    Ok(())
}

/// A generated `skills` task names two distinct skills and has their 4 value pairs as classes;
/// no other task names skills.
fn check_skills(t: &RawTask) -> Result<(), String> {
    let name = &t.name.value;
    match (t.generator, &t.skills) {
        (Some(Generator::Skills), None) => Err(format!(
            "task `{name}` (generator `skills`) needs `skills: [a, b]`, the two latent skills \
             whose values make its label"
        )),
        (Some(Generator::Skills), Some(skills)) => {
            if skills.len() != 2 || skills[0] == skills[1] {
                return Err(format!(
                    "task `{name}`: `skills` must name two different skills, got {skills:?}"
                ));
            }
            if t.num_classes != Some(4) {
                return Err(format!(
                    "task `{name}`: a `skills` task has 4 classes (2 values of each of its two \
                     skills), not {}",
                    t.num_classes.unwrap_or(0)
                ));
            }
            Ok(())
        }
        (_, Some(_)) => Err(format!(
            "task `{name}`: `skills` only applies to generator `skills`"
        )),
        (_, None) => Ok(()),
    }
}

/// The `multitask` section names at least two tasks of `tasks`, each once; a shared head needs
/// one label set; the sampling temperature is a positive number.
fn check_multitask(multitask: &MultiTaskSpec, tasks: &[TaskSpec]) -> Result<(), String> {
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    if !is_safe_name(&multitask.name) {
        return Err(format!(
            "`multitask.name` `{}` may only use letters, digits, `.`, `_`, `-`, `+`",
            multitask.name
        ));
    }
    if names.contains(&multitask.name.as_str()) {
        return Err(format!(
            "`multitask.name` `{}` is also a task's name; the multi-task run needs its own",
            multitask.name
        ));
    }
    if multitask.tasks.len() < 2 {
        return Err("`multitask.tasks` must list at least two tasks of `tasks`".into());
    }
    let mut seen = BTreeSet::new();
    for t in &multitask.tasks {
        if !names.contains(&t.as_str()) {
            return Err(format!(
                "`multitask.tasks` lists `{t}`, which is not in `tasks`; valid tasks: {}",
                list(&names)
            ));
        }
        if !seen.insert(t) {
            return Err(format!("`multitask.tasks` lists `{t}` twice"));
        }
    }
    let held_out: Vec<&String> = multitask
        .held_out
        .iter()
        .flat_map(|h| h.tasks.iter())
        .collect();
    for t in &held_out {
        if !names.contains(&t.as_str()) {
            return Err(format!(
                "`multitask.held_out.tasks` lists `{t}`, which is not in `tasks`; valid tasks: {}",
                list(&names)
            ));
        }
        if !seen.insert(t) {
            return Err(format!(
                "`{t}` is listed twice in `multitask` (a task is trained together or held out)"
            ));
        }
    }
    if let Some(h) = &multitask.held_out {
        if h.shots == 0 || h.epochs == Some(0) {
            return Err("`multitask.held_out`: `shots` and `epochs` must be at least 1".into());
        }
    }
    if let Some(left_out) = names.iter().find(|n| !seen.contains(&n.to_string())) {
        return Err(format!(
            "task `{left_out}` is neither in `multitask.tasks` nor in `multitask.held_out.tasks`"
        ));
    }
    if multitask.heads == Heads::Shared {
        let classes: BTreeSet<usize> = tasks.iter().map(|t| t.num_classes).collect();
        if classes.len() > 1 {
            return Err(format!(
                "`multitask.heads: shared` needs one label set, but the tasks have {} classes; \
                 use `heads: per-task`",
                classes
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if !(multitask.temperature.is_finite() && multitask.temperature > 0.0) {
        return Err(format!(
            "`multitask.temperature` must be a positive number, got {}",
            multitask.temperature
        ));
    }
    Ok(())
}

/// The text-only task fields: where each is required, allowed, or wrong.
fn check_text_fields(
    t: &RawTask,
    modality: Modality,
    format: DataFormat,
    generated: bool,
) -> Result<(), String> {
    let name = &t.name.value;
    if modality != Modality::Text {
        for (field, set) in [
            ("language", t.language.is_some()),
            ("eval_language", t.eval_language.is_some()),
            ("labels", t.labels.is_some()),
        ] {
            if set {
                return Err(format!(
                    "task `{name}`: `{field}` only applies to text tasks"
                ));
            }
        }
        return Ok(());
    }
    if (generated || format == DataFormat::Sib200 || format.is_token_level())
        && t.language.is_none()
    {
        return Err(format!(
            "task `{name}` needs a `language` (the folder or generated language it trains on)"
        ));
    }
    if t.eval_language.is_some() && t.language.is_none() {
        return Err(format!(
            "task `{name}`: `eval_language` needs a `language` to transfer from"
        ));
    }
    if let Some(labels) = &t.labels {
        if Some(labels.len()) != t.num_classes {
            return Err(format!(
                "task `{name}`: `labels` lists {} classes but num_classes is {}",
                labels.len(),
                t.num_classes.unwrap_or(0)
            ));
        }
        let unique: BTreeSet<&String> = labels.iter().collect();
        if unique.len() != labels.len() {
            return Err(format!("task `{name}`: `labels` lists a class twice"));
        }
    }
    Ok(())
}

/// The first two keys of `given` that name the same column, and that column.
fn same_column<'a>(
    given: &[(&'a str, Option<&'a String>)],
) -> Option<(&'a str, &'a str, &'a String)> {
    given.iter().enumerate().find_map(|(i, (a, x))| {
        let x = (*x)?;
        given[i + 1..]
            .iter()
            .find(|(_, y)| *y == Some(x))
            .map(|(b, _)| (*a, *b, x))
    })
}

/// A task's `columns`, checked against its format: a `table` task's text (pair, prefix) and label
/// columns, or an `audio-parquet` task's audio, label and fold columns (`None` when they are the
/// defaults). Errors carry the line of the offending key when there is one.
fn task_columns(
    t: &RawTask,
    modality: Modality,
    format: DataFormat,
    protocol: &Protocol,
) -> Result<(Option<TextColumns>, Option<AudioColumns>), (Option<usize>, String)> {
    let name = &t.name.value;
    let fold_column = t.columns.as_ref().and_then(|c| c.value.fold.as_ref());
    if format == DataFormat::AudioParquet && protocol.folds.is_some() && fold_column.is_none() {
        return Err((
            t.columns.as_ref().and_then(line_of),
            format!(
                "task `{name}`: `protocol.folds` needs the column holding each clip's fold \
                 (`columns: {{ fold: fold }}` for the Hugging Face ESC-50 and UrbanSound8K copies)"
            ),
        ));
    }
    let Some(spanned) = &t.columns else {
        return Ok((None, None));
    };
    let line = line_of(spanned);
    let c = &spanned.value;
    let named = [
        ("text", &c.text),
        ("text_pair", &c.text_pair),
        ("prefix", &c.prefix),
        ("label", &c.label),
        ("audio", &c.audio),
        ("fold", &c.fold),
    ];
    for (key, value) in named {
        if let Some(v) = value {
            if v.value.trim().is_empty() {
                return Err((
                    line_of(v).or(line),
                    format!("task `{name}`: `columns.{key}` is empty"),
                ));
            }
        }
    }
    let misplaced = |keys: &[&str], valid: &str| {
        named
            .iter()
            .find(|(k, v)| keys.contains(k) && v.is_some())
            .map(|(k, v)| {
                (
                    v.as_ref().and_then(line_of).or(line),
                    format!(
                        "task `{name}`: `columns.{k}` does not apply to data format `{}`; its \
                         columns are {valid}",
                        format_name(format)
                    ),
                )
            })
    };
    let value = |v: &Option<Spanned<String>>, default: &str| {
        v.as_ref()
            .map_or_else(|| default.to_string(), |v| v.value.clone())
    };
    match format {
        DataFormat::Table => {
            if let Some(e) = misplaced(
                &["audio", "fold"],
                "`text` and `label` (sentence pairs: also `text_pair` and `prefix`)",
            ) {
                return Err(e);
            }
            if let (Some(prefix), None) = (&c.prefix, &c.text_pair) {
                return Err((
                    line_of(prefix).or(line),
                    format!(
                        "task `{name}`: `columns.prefix` applies to sentence pairs only; name \
                         the second text in `columns.text_pair`"
                    ),
                ));
            }
            // Kept even when both are the defaults: table runs have always serialised them.
            let columns = TextColumns {
                text: value(&c.text, "text"),
                text_pair: c.text_pair.as_ref().map(|v| v.value.clone()),
                prefix: c.prefix.as_ref().map(|v| v.value.clone()),
                label: value(&c.label, "label"),
            };
            let given = [
                ("text", Some(&columns.text)),
                ("text_pair", columns.text_pair.as_ref()),
                ("prefix", columns.prefix.as_ref()),
                ("label", Some(&columns.label)),
            ];
            if let Some((a, b, column)) = same_column(&given) {
                return Err((
                    line,
                    format!(
                        "task `{name}`: `columns.{a}` and `columns.{b}` name the same column \
                         `{column}`"
                    ),
                ));
            }
            Ok((Some(columns), None))
        }
        DataFormat::AudioParquet => {
            if let Some(e) = misplaced(
                &["text", "text_pair", "prefix"],
                "`audio`, `label` and `fold`",
            ) {
                return Err(e);
            }
            let columns = AudioColumns {
                audio: value(&c.audio, "audio"),
                label: value(&c.label, "label"),
                fold: c.fold.as_ref().map(|f| f.value.clone()),
            };
            let given = [
                ("audio", Some(&columns.audio)),
                ("label", Some(&columns.label)),
                ("fold", columns.fold.as_ref()),
            ];
            if let Some((a, b, column)) = same_column(&given) {
                return Err((
                    line,
                    format!(
                        "task `{name}`: `columns.{a}` and `columns.{b}` name the same column \
                         `{column}`"
                    ),
                ));
            }
            if let (Some(fold), None) = (&c.fold, protocol.folds) {
                return Err((
                    line_of(fold).or(line),
                    format!(
                        "task `{name}`: `columns.fold` needs `protocol.folds` (how many folds the \
                         copy has; each run holds one out)"
                    ),
                ));
            }
            Ok((
                None,
                (columns != AudioColumns::default()).then_some(columns),
            ))
        }
        _ if modality == Modality::Text => Err((
            line,
            format!("task `{name}`: `columns` only applies to data format `table`"),
        )),
        _ => Err((
            line,
            format!(
                "task `{name}`: `columns` only applies to data formats `table` and `audio-parquet` \
                 (format `{}` reads fixed columns)",
                format_name(format)
            ),
        )),
    }
}

/// The line of the `nth` (0-based) occurrence of `key:` outside comments.
fn nth_key_line(src: &str, key: &str, nth: usize) -> Option<usize> {
    let pattern = format!("{key}:");
    src.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(&pattern))
        .nth(nth)
        .map(|(i, _)| i + 1)
}

/// The name a suite file gives `format` (`audio-parquet`).
fn format_name(format: DataFormat) -> String {
    serde_json::to_value(format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{format:?}"))
}

/// What a `retrieval` section must hold beyond its types.
fn check_retrieval(r: &peftbench_retrieval::RetrievalSpec) -> Result<(), String> {
    if r.tasks.is_empty() {
        return Err("`retrieval.tasks` is empty".into());
    }
    if r.rerank_depth == 0 || r.first_stage_depth == 0 {
        return Err("`retrieval.first_stage_depth` and `rerank_depth` must be at least 1".into());
    }
    if r.training.negatives == 0 {
        return Err("`retrieval.training.negatives` must be at least 1".into());
    }
    if r.training.max_triples == Some(0) {
        return Err("`retrieval.training.max_triples` must be at least 1".into());
    }
    if !(r.training.margin > 0.0 && r.training.margin.is_finite()) {
        return Err("`retrieval.training.margin` must be a positive number".into());
    }
    Ok(())
}

pub(crate) fn validate_protocol(p: &Protocol) -> Result<(), String> {
    for (field, v) in [
        ("train_split", &p.train_split),
        ("eval_split", &p.eval_split),
    ] {
        if v.trim().is_empty() {
            return Err(format!("`protocol.{field}` is empty"));
        }
    }
    if p.folds.is_some_and(|k| k < 2) {
        return Err("`protocol.folds` must be at least 2 (omit it for fixed splits)".into());
    }
    if p.selection == Selection::BestVal && p.val_split.is_none() {
        return Err("`protocol.selection: best-val` needs `protocol.val_split`".into());
    }
    if p.val_split.as_deref() == Some(p.eval_split.as_str()) && p.selection == Selection::BestVal {
        return Err(format!(
            "`protocol.val_split` is the evaluation split `{}`: selecting on it leaks the test set",
            p.eval_split
        ));
    }
    Ok(())
}

/// A JSON object with sorted keys (independent of serde_json's `preserve_order` feature).
pub(crate) fn sorted(m: Map<String, Value>) -> Map<String, Value> {
    let b: BTreeMap<String, Value> = m.into_iter().collect();
    b.into_iter().collect()
}

/// Grid points: the cartesian product of the axes, first axis slowest. No axes -> one empty point.
pub(crate) fn grid_points(axes: &[GridAxis]) -> Vec<Vec<(String, Value)>> {
    let mut points: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for axis in axes {
        let mut next = Vec::with_capacity(points.len() * axis.values.len());
        for p in &points {
            for v in &axis.values {
                let mut q = p.clone();
                q.push((axis.key.clone(), v.clone()));
                next.push(q);
            }
        }
        points = next;
    }
    points
}

/// Sets `field` of a recipe given as JSON; the result is checked when converted back.
pub(crate) fn recipe_from_json(json: Value) -> Result<Recipe, String> {
    serde_json::from_value(json).map_err(|e| format!("invalid recipe: {e}"))
}

/// Params and recipe of one grid point (before command-line overrides).
pub(crate) fn resolve_point(
    m: &MethodSpec,
    base: &Recipe,
    point: &[(String, Value)],
) -> Result<(Value, Recipe), String> {
    let mut params = match &m.params {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    let mut recipe = serde_json::to_value(base).map_err(|e| e.to_string())?;
    let obj = recipe
        .as_object_mut()
        .expect("recipe serialises to an object");
    for (k, v) in m.recipe.to_json() {
        obj.insert(k, v);
    }
    for (k, v) in point {
        match k.strip_prefix("recipe.") {
            Some(f) => {
                obj.insert(f.to_string(), v.clone());
            }
            None => {
                params.insert(k.clone(), v.clone());
            }
        }
    }
    let recipe = recipe_from_json(recipe)?;
    Ok((Value::Object(sorted(params)), recipe))
}
