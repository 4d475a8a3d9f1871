//! Expanding a suite into runs: tasks x methods x grid points x seeds, then overrides and filters.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{list, SuiteError};
use crate::load::{grid_points, recipe_from_json, resolve_point, sorted, validate_protocol};
use crate::schema::*;
use crate::MethodCatalog;

/// Command-line adjustments to a suite's plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Filter terms. A term is `key=value` conditions joined by commas (all must hold) or a bare
    /// substring of the run id; a run is kept when any term matches. Keys: task, method, label,
    /// group, seed.
    pub filter: Vec<String>,
    /// Overrides `key=value`, the value read as a YAML scalar or flow list: `recipe.<field>=...`,
    /// `params.<name>=...` (every selected method), `protocol.<field>=...`, `seeds=[0, 1]`.
    pub overrides: Vec<String>,
    /// Sets `recipe.epochs` of every run (and caps `warmup_epochs` at it).
    pub epochs: Option<usize>,
    /// Caps the number of training and evaluation examples per run (quick checks).
    pub limit: Option<usize>,
    /// Keep only this part of the (filtered) plan; several shards apply in order (a shard of a
    /// shard: a Slurm array task that runs one worker per GPU).
    pub shards: Vec<Shard>,
}

/// Part `index` (1-based) of `count` of a plan (`--shard 2/4`). Runs are dealt round robin in
/// plan order: run `i` (0-based) goes to shard `i % count + 1`. The partition depends only on the
/// plan, so every shard started with the same suite file and options gets a disjoint part, the
/// parts together are the whole plan, and shard sizes differ by at most one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    /// 1-based shard number.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// The runs of this shard, in plan order.
    pub fn select<T>(&self, runs: Vec<T>) -> Vec<T> {
        runs.into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count + 1 == self.index)
            .map(|(_, r)| r)
            .collect()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with `1 <= I <= N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid shard `{s}`: expected I/N with 1 <= I <= N, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// Methods that compose a task module with a per-language module (`language_adapters`): MAD-X's
/// stacked adapters, LT-SFT's added sparse differences.
pub const COMPOSING_METHODS: &[&str] = &["madx", "lt-sft"];

/// One training run: everything needed to train and evaluate, and to identify the result.
///
/// Serialised (into records and the configuration hash) without its `kind`, which follows from
/// the sections it carries: records and hashes made before kinds were explicit stay valid.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(from = "SerialisedRunSpec")]
pub struct RunSpec {
    /// Suite name.
    pub suite: String,
    /// The suite's kind of task.
    #[serde(skip)]
    pub kind: TaskKind,
    /// The task.
    pub task: TaskSpec,
    /// The task's group, if any.
    pub group: Option<String>,
    /// Registered method name.
    pub method: String,
    /// Label: the method entry's label plus grid values.
    pub label: String,
    /// Method parameters (a JSON object with sorted keys).
    pub params: Value,
    /// The resolved recipe.
    pub recipe: Recipe,
    /// Seed.
    pub seed: u64,
    /// Backbone.
    pub backbone: BackboneSpec,
    /// Data.
    pub data: DataSpec,
    /// Image preprocessing (absent for audio suites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<PreprocessSpec>,
    /// Audio input pipeline (absent for image suites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioSpec>,
    /// Text input pipeline (absent for image and audio suites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextSpec>,
    /// Reranking runs: the task's queries, corpus and judgements, the first stage, the training
    /// triples and the measures (absent for classification runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<peftbench_retrieval::RerankRun>,
    /// Language modules of composing methods ([`COMPOSING_METHODS`]); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_adapters: Option<LanguageAdapterSpec>,
    /// Multi-task runs: the member tasks (then `task` names the run and has the widest task's
    /// classes) and how they mix; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multitask: Option<MultiTaskRun>,
    /// Few-shot runs on a task held out of multi-task training: how the run starts; absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferRun>,
    /// Vision-language runs: the image encoder, text lengths and decoding; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_language: Option<VisionLanguageSpec>,
    /// Image-text retrieval runs: how the dual encoder reads images and captions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_text_retrieval: Option<ImageTextRetrievalSpec>,
    /// Continual runs: the stream of classes and the learner; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continual: Option<ContinualRun>,
    /// Music-generation runs: source style, training size, codec and generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub music: Option<MusicSpec>,
    /// Protocol (splits, selection rule).
    pub protocol: Protocol,
    /// Cap on train and eval examples (`--limit`).
    pub limit: Option<usize>,
    /// The held-out fold (1-based) under `protocol.folds`; absent otherwise (so the configuration hashes
    /// of suites without folds are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<u32>,
}

/// A [`RunSpec`] as records hold it: every field but the kind, which is read back from the
/// sections by the rule the suite loader uses ([`TaskKind::of_sections`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SerialisedRunSpec {
    suite: String,
    task: TaskSpec,
    group: Option<String>,
    method: String,
    label: String,
    params: Value,
    recipe: Recipe,
    seed: u64,
    backbone: BackboneSpec,
    data: DataSpec,
    #[serde(default)]
    preprocess: Option<PreprocessSpec>,
    #[serde(default)]
    audio: Option<AudioSpec>,
    #[serde(default)]
    text: Option<TextSpec>,
    #[serde(default)]
    retrieval: Option<peftbench_retrieval::RerankRun>,
    #[serde(default)]
    language_adapters: Option<LanguageAdapterSpec>,
    #[serde(default)]
    multitask: Option<MultiTaskRun>,
    #[serde(default)]
    transfer: Option<TransferRun>,
    #[serde(default)]
    vision_language: Option<VisionLanguageSpec>,
    #[serde(default)]
    image_text_retrieval: Option<ImageTextRetrievalSpec>,
    #[serde(default)]
    continual: Option<ContinualRun>,
    #[serde(default)]
    music: Option<MusicSpec>,
    protocol: Protocol,
    limit: Option<usize>,
    #[serde(default)]
    fold: Option<u32>,
}

impl From<SerialisedRunSpec> for RunSpec {
    fn from(s: SerialisedRunSpec) -> Self {
        let modality = if s.music.is_some() {
            Modality::Music
        } else if s.image_text_retrieval.is_some() {
            Modality::ImageText
        } else if s.vision_language.is_some() {
            Modality::VisionLanguage
        } else if s.audio.is_some() {
            Modality::Audio
        } else if s.text.is_some() {
            Modality::Text
        } else {
            Modality::Image
        };
        RunSpec {
            kind: TaskKind::of_sections(
                modality,
                s.data.format,
                s.retrieval.is_some(),
                s.multitask.is_some() || s.transfer.is_some(),
                s.continual.is_some(),
            ),
            suite: s.suite,
            task: s.task,
            group: s.group,
            method: s.method,
            label: s.label,
            params: s.params,
            recipe: s.recipe,
            seed: s.seed,
            backbone: s.backbone,
            data: s.data,
            preprocess: s.preprocess,
            audio: s.audio,
            text: s.text,
            retrieval: s.retrieval,
            language_adapters: s.language_adapters,
            multitask: s.multitask,
            transfer: s.transfer,
            vision_language: s.vision_language,
            image_text_retrieval: s.image_text_retrieval,
            continual: s.continual,
            music: s.music,
            protocol: s.protocol,
            limit: s.limit,
            fold: s.fold,
        }
    }
}

impl RunSpec {
    /// SHA-256 (hex) of the canonical JSON of the spec (object keys sorted, no whitespace).
    /// Every field that can change the numbers takes part, including `suite`, `label` and `limit`;
    /// `data.root` does not: moving the data to another folder keeps the runs' identity.
    pub fn config_hash(&self) -> String {
        let mut v = serde_json::to_value(self).expect("RunSpec serialises to JSON");
        if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
            data.remove("root");
        }
        let mut s = String::new();
        canonical_json(&v, &mut s);
        let digest = Sha256::digest(s.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `<task>/<label>/seed<seed>-<first 10 hex digits of config_hash>`; every component is
    /// filesystem-safe (task names and labels are validated when the suite loads).
    pub fn run_id(&self) -> String {
        let fold = self.fold.map(|k| format!("-fold{k}")).unwrap_or_default();
        format!(
            "{}/{}/seed{}{fold}-{}",
            self.task.name,
            self.label,
            self.seed,
            &self.config_hash()[..10]
        )
    }
}

/// Writes `v` as JSON with object keys sorted at every level.
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string serialises"));
                out.push(':');
                canonical_json(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).expect("scalar serialises")),
    }
}

/// Grid values as label text: numbers as written by serde_json, strings as is, lists joined by `+`.
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join("+"),
        Value::Object(_) => v.to_string(),
    }
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The run label of a grid point: `<label>-<key><value>...` (key without `recipe.`).
pub fn point_label(base: &str, point: &[(String, Value)]) -> String {
    let mut s = base.to_string();
    for (k, v) in point {
        let short = k.rsplit('.').next().unwrap_or(k);
        s.push('-');
        s.push_str(&safe(&format!("{short}{}", value_text(v))));
    }
    s
}

enum Override {
    Recipe(String, Value),
    Param(String, Value),
    Protocol(String, Value),
    Seeds(Vec<u64>),
}

fn valid_override_keys() -> String {
    format!(
        "recipe.<field> ({}), params.<name>, protocol.<field> ({}), seeds",
        RECIPE_FIELDS.join(", "),
        PROTOCOL_FIELDS.join(", ")
    )
}

fn parse_override(spec: &str) -> Result<Override, SuiteError> {
    let err = |message: String| SuiteError::Override {
        spec: spec.to_string(),
        message,
    };
    let (key, value) = spec.split_once('=').ok_or_else(|| {
        err(format!(
            "expected key=value; valid keys: {}",
            valid_override_keys()
        ))
    })?;
    let key = key.trim();
    let value: Value = serde_saphyr::from_str(value.trim())
        .map_err(|e| err(format!("cannot read the value: {}", e.without_snippet())))?;
    if key == "seeds" {
        let seeds: Vec<u64> = match &value {
            Value::Array(_) => serde_json::from_value(value.clone()),
            _ => serde_json::from_value(value.clone()).map(|s: u64| vec![s]),
        }
        .map_err(|e| {
            err(format!(
                "seeds must be a non-negative integer or a list of them: {e}"
            ))
        })?;
        if seeds.is_empty() {
            return Err(err("seeds is empty".into()));
        }
        return Ok(Override::Seeds(seeds));
    }
    if let Some(f) = key.strip_prefix("recipe.") {
        if !RECIPE_FIELDS.contains(&f) {
            return Err(err(format!(
                "unknown recipe field `{f}`; expected one of: {}",
                RECIPE_FIELDS.join(", ")
            )));
        }
        return Ok(Override::Recipe(f.to_string(), value));
    }
    if let Some(f) = key.strip_prefix("protocol.") {
        if !PROTOCOL_FIELDS.contains(&f) {
            return Err(err(format!(
                "unknown protocol field `{f}`; expected one of: {}",
                PROTOCOL_FIELDS.join(", ")
            )));
        }
        return Ok(Override::Protocol(f.to_string(), value));
    }
    if let Some(p) = key.strip_prefix("params.") {
        if p.is_empty() || p.contains('.') {
            return Err(err("params.<name> needs one parameter name".into()));
        }
        return Ok(Override::Param(p.to_string(), value));
    }
    Err(err(format!(
        "unknown key `{key}`; valid keys: {}",
        valid_override_keys()
    )))
}

const FILTER_KEYS: &[&str] = &["task", "method", "label", "group", "seed"];

enum Cond {
    Key(&'static str, String),
    Substring(String),
}

fn parse_filter(term: &str) -> Result<Vec<Cond>, SuiteError> {
    let mut conds = Vec::new();
    for part in term.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) => {
                let k = k.trim();
                let key =
                    FILTER_KEYS
                        .iter()
                        .find(|f| **f == k)
                        .ok_or_else(|| SuiteError::Filter {
                            term: term.to_string(),
                            message: format!(
                                "unknown key `{k}`; valid keys: {}",
                                FILTER_KEYS.join(", ")
                            ),
                        })?;
                conds.push(Cond::Key(key, v.trim().to_string()));
            }
            None => conds.push(Cond::Substring(part.to_string())),
        }
    }
    if conds.is_empty() {
        return Err(SuiteError::Filter {
            term: term.to_string(),
            message: "empty filter".into(),
        });
    }
    Ok(conds)
}

fn matches(c: &Cond, r: &RunSpec, id: &str) -> bool {
    match c {
        Cond::Substring(s) => id.contains(s.as_str()),
        Cond::Key(k, v) => match *k {
            "task" => &r.task.name == v,
            "method" => &r.method == v,
            "label" => &r.label == v,
            "group" => r.group.as_deref() == Some(v.as_str()),
            "seed" => r.seed.to_string() == *v,
            _ => false,
        },
    }
}

/// Expands a suite into runs, in a deterministic order: task order, then method order, then grid
/// points (first axis slowest), then seeds. Applies `opts.overrides`, then `opts.epochs`, then
/// `opts.limit`, then keeps the runs matching `opts.filter`, then those of `opts.shards`; method parameters are re-validated with
/// `catalog` when `params.*` overrides are given.
pub fn plan(
    suite: &Suite,
    opts: &PlanOptions,
    catalog: &dyn MethodCatalog,
) -> Result<Vec<RunSpec>, SuiteError> {
    let plan_err = |message: String| SuiteError::Plan {
        suite: suite.name.clone(),
        message,
    };
    if opts.epochs == Some(0) {
        return Err(plan_err("--epochs must be at least 1".into()));
    }
    if opts.limit == Some(0) {
        return Err(plan_err("--limit must be at least 1".into()));
    }
    let overrides: Vec<(String, Override)> = opts
        .overrides
        .iter()
        .map(|s| parse_override(s).map(|o| (s.clone(), o)))
        .collect::<Result<_, _>>()?;
    let filters: Vec<(String, Vec<Cond>)> = opts
        .filter
        .iter()
        .map(|t| parse_filter(t).map(|c| (t.clone(), c)))
        .collect::<Result<_, _>>()?;

    // Suite-level overrides: seeds and protocol.
    let mut seeds = suite.seeds.clone();
    let mut protocol = serde_json::to_value(&suite.protocol).expect("protocol serialises");
    for (_, o) in &overrides {
        match o {
            Override::Seeds(s) => seeds = s.clone(),
            Override::Protocol(f, v) => protocol[f.as_str()] = v.clone(),
            _ => {}
        }
    }
    let protocol: Protocol = serde_json::from_value(protocol)
        .map_err(|e| plan_err(format!("protocol after overrides: {e}")))?;
    validate_protocol(&protocol).map_err(|m| plan_err(format!("protocol after overrides: {m}")))?;

    // A multi-task suite is one run per method, grid point and seed over all its tasks: `task`
    // names the run and has the widest member's classes.
    let run_tasks: Vec<(TaskSpec, Option<MultiTaskRun>)> = match &suite.multitask {
        Some(mt) => {
            let members: Vec<TaskSpec> = mt
                .tasks
                .iter()
                .map(|name| {
                    suite
                        .tasks
                        .iter()
                        .find(|t| &t.name == name)
                        .expect("validated: multitask tasks are suite tasks")
                        .clone()
                })
                .collect();
            let task = TaskSpec {
                name: mt.name.clone(),
                num_classes: members.iter().map(|t| t.num_classes).max().unwrap_or(0),
                generator: None,
                group: None,
                language: None,
                eval_language: None,
                columns: None,
                audio_columns: None,
                labels: None,
                skills: None,
                vl_task: None,
            };
            let run = MultiTaskRun {
                tasks: members,
                sampling: mt.sampling,
                temperature: mt.temperature,
                heads: mt.heads,
            };
            vec![(task, Some(run))]
        }
        None => suite.tasks.iter().map(|t| (t.clone(), None)).collect(),
    };
    let mut runs = Vec::new();
    for (task, multitask) in &run_tasks {
        for m in &suite.methods {
            for point in grid_points(&m.grid) {
                let (params, recipe) = resolve_point(m, &suite.recipe, &point)
                    .map_err(|e| plan_err(format!("method `{}`: {e}", m.label)))?;
                let mut params = match params {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                let mut recipe = serde_json::to_value(&recipe).expect("recipe serialises");
                for (spec, o) in &overrides {
                    match o {
                        Override::Recipe(f, v) => recipe[f.as_str()] = v.clone(),
                        Override::Param(p, v) => {
                            if m.grid.iter().any(|a| &a.key == p) {
                                return Err(SuiteError::Override {
                                    spec: spec.clone(),
                                    message: format!(
                                        "`{p}` is a grid axis of method `{}`; select grid points with --filter label=... instead",
                                        m.label
                                    ),
                                });
                            }
                            params.insert(p.clone(), v.clone());
                        }
                        _ => {}
                    }
                }
                let mut recipe = recipe_from_json(recipe)
                    .map_err(|e| plan_err(format!("method `{}` after overrides: {e}", m.label)))?;
                if let Some(n) = opts.epochs {
                    recipe.epochs = n;
                    recipe.warmup_epochs = recipe.warmup_epochs.min(n);
                }
                recipe
                    .validate()
                    .map_err(|e| plan_err(format!("method `{}` after overrides: {e}", m.label)))?;
                let label = point_label(&m.label, &point);
                // Methods that condition on the task learn one of each per task of the run.
                if let Some(mt) = multitask {
                    if catalog.takes_task_count(&m.method) {
                        let n = mt.tasks.len();
                        match params.get("n_tasks").map(|v| v.as_u64()) {
                            None => {
                                params.insert("n_tasks".into(), Value::from(n));
                            }
                            Some(Some(given)) if given as usize == n => {}
                            Some(_) => {
                                return Err(plan_err(format!(
                                    "method `{}`: `n_tasks` is {}, but the multi-task run has {n} \
                                     tasks; leave it out to have it set",
                                    m.label, params["n_tasks"]
                                )))
                            }
                        }
                    }
                }
                let params = Value::Object(sorted(params));
                let folds: Vec<Option<u32>> = match protocol.folds {
                    Some(k) => (1..=k).map(Some).collect(),
                    None => vec![None],
                };
                for (&seed, &fold) in seeds.iter().flat_map(|s| folds.iter().map(move |f| (s, f))) {
                    runs.push(RunSpec {
                        suite: suite.name.clone(),
                        task: task.clone(),
                        group: task.group.clone(),
                        method: m.method.clone(),
                        label: label.clone(),
                        params: params.clone(),
                        recipe: recipe.clone(),
                        seed,
                        backbone: suite.backbone.clone(),
                        data: suite.data.clone(),
                        kind: suite.kind,
                        preprocess: suite.preprocess.clone(),
                        audio: suite.audio.clone(),
                        text: suite.text.clone(),
                        retrieval: suite.retrieval.as_ref().map(|r| {
                            let spec = r
                                .tasks
                                .iter()
                                .find(|t| t.name == task.name)
                                .expect("a reranking suite's tasks are its retrieval tasks");
                            r.run_of(spec)
                        }),
                        language_adapters: suite
                            .language_adapters
                            .clone()
                            .filter(|_| COMPOSING_METHODS.contains(&m.method.as_str())),
                        multitask: multitask.clone(),
                        transfer: None,
                        vision_language: suite.vision_language.clone(),
                        image_text_retrieval: suite.image_text_retrieval.clone(),
                        continual: suite.continual.clone().map(|stream| ContinualRun {
                            stream,
                            learner: m.learner.unwrap_or_default(),
                            learner_params: m.learner_params.clone(),
                        }),
                        music: suite.music.clone(),
                        protocol: protocol.clone(),
                        limit: opts.limit,
                        fold,
                    });
                }
            }
        }
    }

    // Few-shot runs on the held-out tasks, after every multi-task run they may start from (task
    // by task, so each task's data is prepared once).
    if let Some(held_out) = suite.multitask.as_ref().and_then(|m| m.held_out.as_ref()) {
        let mut transfers = Vec::new();
        for name in &held_out.tasks {
            let task = suite
                .tasks
                .iter()
                .find(|t| &t.name == name)
                .expect("validated: held-out tasks are suite tasks");
            for source in runs.iter().filter(|r| r.multitask.is_some()) {
                let modes: Vec<TransferMode> = match catalog.transfer_modes(&source.method) {
                    modes if modes.is_empty() => vec![TransferMode::Fresh],
                    modes => modes,
                };
                for mode in modes {
                    let mut params = source.params.clone();
                    // A fresh adapter learns one task.
                    if mode == TransferMode::Fresh && catalog.takes_task_count(&source.method) {
                        params["n_tasks"] = Value::from(1);
                    }
                    let mut recipe = source.recipe.clone();
                    if let Some(epochs) = held_out.epochs.filter(|_| opts.epochs.is_none()) {
                        recipe.epochs = epochs;
                        recipe.warmup_epochs = recipe.warmup_epochs.min(epochs);
                    }
                    transfers.push(RunSpec {
                        task: task.clone(),
                        group: task.group.clone(),
                        label: format!("{}-{}", source.label, mode.name()),
                        params,
                        recipe,
                        multitask: None,
                        transfer: Some(TransferRun {
                            mode,
                            source: (mode != TransferMode::Fresh).then(|| source.run_id()),
                            shots: held_out.shots,
                        }),
                        ..source.clone()
                    });
                }
            }
        }
        runs.extend(transfers);
    }

    // Filter values must name something in the suite.
    let mut choices: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    choices.insert(
        "task",
        run_tasks
            .iter()
            .map(|(t, _)| t.name.clone())
            .chain(
                suite
                    .multitask
                    .iter()
                    .flat_map(|m| m.held_out.iter().flat_map(|h| h.tasks.clone())),
            )
            .collect(),
    );
    choices.insert(
        "method",
        uniq(suite.methods.iter().map(|m| m.method.clone())),
    );
    choices.insert("label", uniq(runs.iter().map(|r| r.label.clone())));
    choices.insert("group", suite.groups.keys().cloned().collect());
    choices.insert("seed", seeds.iter().map(|s| s.to_string()).collect());
    for (term, conds) in &filters {
        for c in conds {
            if let Cond::Key(k, v) = c {
                let valid = &choices[k];
                if !valid.contains(v) {
                    return Err(SuiteError::Filter {
                        term: term.clone(),
                        message: format!(
                            "no {k} `{v}` in suite `{}`; valid {k}s: {}",
                            suite.name,
                            list(valid)
                        ),
                    });
                }
            }
        }
    }
    if !filters.is_empty() {
        runs.retain(|r| {
            let id = r.run_id();
            filters
                .iter()
                .any(|(_, conds)| conds.iter().all(|c| matches(c, r, &id)))
        });
        if runs.is_empty() {
            return Err(plan_err(format!(
                "the filter {} selects no runs",
                filters
                    .iter()
                    .map(|(t, _)| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
    }

    for shard in &opts.shards {
        runs = shard.select(runs);
    }

    // Parameters changed on the command line are checked again.
    if overrides
        .iter()
        .any(|(_, o)| matches!(o, Override::Param(..)))
    {
        let mut checked = BTreeSet::new();
        for r in &runs {
            let key = (r.method.clone(), r.params.to_string());
            if checked.insert(key) {
                catalog.validate_params(&r.method, &r.params).map_err(|msg| {
                    let specs: Vec<&str> = overrides
                        .iter()
                        .filter(|(_, o)| matches!(o, Override::Param(..)))
                        .map(|(s, _)| s.as_str())
                        .collect();
                    SuiteError::Override {
                        spec: specs.join(" "),
                        message: format!(
                            "method `{}` (label `{}`): {msg}; restrict the runs with --filter method=...",
                            r.method, r.label
                        ),
                    }
                })?;
            }
        }
    }

    let mut ids = BTreeSet::new();
    for r in &runs {
        if !ids.insert((&r.task.name, &r.label, r.seed, r.fold)) {
            return Err(plan_err(format!(
                "two runs of task `{}` have the label `{}` and seed {} (a grid lists the same value twice?)",
                r.task.name, r.label, r.seed
            )));
        }
    }
    Ok(runs)
}

fn uniq(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    it.filter(|s| seen.insert(s.clone())).collect()
}
