//! Hugging Face PEFT's on-disk format: `adapter_config.json` (sorted keys, indent 2) and
//! `adapter_model.safetensors` with `base_model.model.<module path>.<param>` keys, the adapter
//! name `default` removed, and the head saved under `modules_to_save` as `classifier`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use peftbench_backbones::LinearSite;
use serde_json::Value;

use crate::lora::LoraConfig;
use crate::ClassifierHead;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const KEY_PREFIX: &str = "base_model.model.";

/// Writes `adapter_config.json` (keys sorted, since `Value`'s map is a BTreeMap) and the
/// safetensors file with `tensors` (module-path keys) plus the head, both with PEFT's key prefix.
pub fn write_adapter(
    dir: &Path,
    config: &Value,
    tensors: BTreeMap<String, Tensor>,
    head: &ClassifierHead,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, serde_json::to_string_pretty(config)? + "\n")?;
    let naming = ModuleNaming::for_tensors(&tensors);
    let mut all: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| {
            let k = match naming {
                ModuleNaming::Transformers5 => transformers5_module_key(&k),
                ModuleNaming::Checkpoint => k,
            };
            (format!("{KEY_PREFIX}{k}"), t)
        })
        .collect();
    for (name, t) in head.saved_tensors()? {
        all.insert(format!("{KEY_PREFIX}{name}"), t);
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&all, &weights_path)?;
    Ok(vec![config_path, weights_path])
}

/// Reads an adapter written by [`write_adapter`] or by Python PEFT: its config and tensors with
/// the `base_model.model.` prefix removed.
pub fn read_adapter(dir: &Path) -> anyhow::Result<(Value, BTreeMap<String, Tensor>)> {
    let config_path = dir.join(CONFIG_FILE);
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?,
    )?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&weights_path, &candle_core::Device::Cpu)
        .map_err(|e| anyhow::anyhow!("{}: {e}", weights_path.display()))?;
    Ok((
        config,
        tensors
            .into_iter()
            .map(|(k, t)| {
                // Task-specific PEFT models (e.g. feature extraction) save `base_model.<path>`.
                let name = k
                    .strip_prefix(KEY_PREFIX)
                    .or_else(|| k.strip_prefix("base_model."))
                    .unwrap_or(&k);
                (name.to_string(), t)
            })
            .collect(),
    ))
}

/// Fields every PEFT config carries, for the method-specific config to extend.
pub fn base_config(peft_type: &str, base_model: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("peft_type".into(), Value::from(peft_type));
    m.insert("task_type".into(), Value::Null);
    m.insert("base_model_name_or_path".into(), Value::from(base_model));
    m.insert("revision".into(), Value::Null);
    m.insert("inference_mode".into(), Value::Bool(true));
    m.insert("modules_to_save".into(), serde_json::json!(["classifier"]));
    m
}

pub const NATIVE_CONFIG_FILE: &str = "peftbench_adapter.json";
pub const NATIVE_WEIGHTS_FILE: &str = "adapter.safetensors";

/// peftbench's own format for methods HF PEFT does not have: the method name and configuration in
/// `peftbench_adapter.json`, the trained tensors (head included) by name in `adapter.safetensors`.
pub fn write_native(
    dir: &Path,
    method: &str,
    config: &impl serde::Serialize,
    base_model: &str,
    trainable: &peftbench_core::NamedVars,
    head: &ClassifierHead,
) -> anyhow::Result<Vec<PathBuf>> {
    write_native_tensors(dir, method, config, base_model, trainable.tensors(), head)
}

/// [`write_native`] with the tensors to store given (e.g. packed low-bit codes instead of the
/// trained values).
pub fn write_native_tensors(
    dir: &Path,
    method: &str,
    config: &impl serde::Serialize,
    base_model: &str,
    tensors: BTreeMap<String, Tensor>,
    head: &ClassifierHead,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let config_path = dir.join(NATIVE_CONFIG_FILE);
    let doc = serde_json::json!({
        "method": method,
        "config": config,
        "base_model_name_or_path": base_model,
    });
    std::fs::write(&config_path, serde_json::to_string_pretty(&doc)? + "\n")?;
    let mut all: HashMap<String, Tensor> = tensors.into_iter().collect();
    all.extend(head.saved_tensors()?);
    let weights_path = dir.join(NATIVE_WEIGHTS_FILE);
    candle_core::safetensors::save(&all, &weights_path)?;
    Ok(vec![config_path, weights_path])
}

/// The module names an adapter file uses. Hugging Face PEFT matches `target_modules` against the
/// module names of the model *in memory* and keys tensors by them, and transformers 5 renamed the
/// modules of ViT and AST (`vit.layers.N.attention.q_proj`, `mlp.fc1`; checkpoints keep the old
/// names and are converted on load, adapters are not). BERT-family models keep their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleNaming {
    /// The checkpoint's own names (`bert.encoder.layer.N.attention.self.query`): BERT-family
    /// models (and ViT/AST under transformers 4).
    Checkpoint,
    /// ViT and AST under transformers 5, what current Python PEFT loads.
    Transformers5,
}

impl ModuleNaming {
    /// The naming adapters of a backbone are saved with, from one of its module paths: ViT's and
    /// AST's follow current transformers (5), the rest their checkpoints.
    pub fn for_module_path(path: &str) -> Self {
        if split_block_key(path, "encoder.layer.").is_some() {
            Self::Transformers5
        } else {
            Self::Checkpoint
        }
    }

    /// The naming of an adapter's tensors (keys are module paths plus a parameter name).
    pub fn for_tensors(tensors: &BTreeMap<String, Tensor>) -> Self {
        tensors
            .keys()
            .map(|k| Self::for_module_path(k))
            .find(|n| *n == Self::Transformers5)
            .unwrap_or(Self::Checkpoint)
    }
}

/// ViT's projections under transformers 5 and 4, below `vit.layers.N.` / `vit.encoder.layer.N.`.
const VIT_RENAMES: [(&str, &str); 6] = [
    ("attention.q_proj", "attention.attention.query"),
    ("attention.k_proj", "attention.attention.key"),
    ("attention.v_proj", "attention.attention.value"),
    ("attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
];

/// The module-name suffix PEFT matches `target_modules` against, per site. The cross-attention
/// sites exist in T5 only, whose module names are the same under both namings
/// (`decoder.block.N.layer.1.EncDecAttention.q`).
pub fn module_suffix(site: LinearSite, naming: ModuleNaming) -> &'static str {
    match (naming, site) {
        (_, LinearSite::CrossQuery) => "EncDecAttention.q",
        (_, LinearSite::CrossKey) => "EncDecAttention.k",
        (_, LinearSite::CrossValue) => "EncDecAttention.v",
        (_, LinearSite::CrossAttentionOutput) => "EncDecAttention.o",
        (ModuleNaming::Checkpoint, LinearSite::Query) => "query",
        (ModuleNaming::Checkpoint, LinearSite::Key) => "key",
        (ModuleNaming::Checkpoint, LinearSite::Value) => "value",
        (ModuleNaming::Checkpoint, LinearSite::AttentionOutput) => "attention.output.dense",
        (ModuleNaming::Checkpoint, LinearSite::Fc1) => "intermediate.dense",
        (ModuleNaming::Checkpoint, LinearSite::Fc2) => "output.dense",
        (ModuleNaming::Transformers5, LinearSite::Query) => "q_proj",
        (ModuleNaming::Transformers5, LinearSite::Key) => "k_proj",
        (ModuleNaming::Transformers5, LinearSite::Value) => "v_proj",
        (ModuleNaming::Transformers5, LinearSite::AttentionOutput) => "o_proj",
        (ModuleNaming::Transformers5, LinearSite::Fc1) => "fc1",
        (ModuleNaming::Transformers5, LinearSite::Fc2) => "fc2",
    }
}

/// With checkpoint names, fc2's suffix `output.dense` also matches `attention.output.dense`: a
/// plain suffix list selects attention_output too unless it is targeted anyway.
fn suffixes_are_ambiguous(sites: &[LinearSite], naming: ModuleNaming) -> bool {
    naming == ModuleNaming::Checkpoint
        && sites.contains(&LinearSite::Fc2)
        && !sites.contains(&LinearSite::AttentionOutput)
}

/// PEFT's `target_modules`: module-name suffixes, or a regex where a suffix would be ambiguous.
pub fn target_modules_value(sites: &[LinearSite], naming: ModuleNaming) -> Value {
    if suffixes_are_ambiguous(sites, naming) {
        let alts: Vec<String> = sites
            .iter()
            .map(|&s| match s {
                LinearSite::Fc2 => r"(?<!attention\.)output\.dense".to_string(),
                other => module_suffix(other, naming).replace('.', r"\."),
            })
            .collect();
        Value::from(format!(r".*\.layer\.\d+\..*({})", alts.join("|")))
    } else {
        let mut names: Vec<&str> = sites.iter().map(|&s| module_suffix(s, naming)).collect();
        names.sort_unstable();
        names.dedup();
        serde_json::json!(names)
    }
}

/// `adapter_config.json` of a LoRA adapter (`use_dora` for DoRA).
pub fn lora_config(
    c: &LoraConfig,
    use_dora: bool,
    base_model: &str,
    naming: ModuleNaming,
) -> Value {
    let mut config = base_config("LORA", base_model);
    let (target_modules, layers_to_transform) = match (
        &c.layers_to_transform,
        target_modules_value(&c.target_modules, naming),
    ) {
        // PEFT ignores `layers_to_transform` beside a regex (and refuses the pair): the blocks
        // go into the regex instead.
        (Some(layers), Value::String(regex)) => {
            let blocks: Vec<String> = layers.iter().map(usize::to_string).collect();
            let regex = regex.replacen(r"\d+", &format!("({})", blocks.join("|")), 1);
            (Value::from(regex), Value::Null)
        }
        (layers, names) => (names, serde_json::json!(layers)),
    };
    for (k, v) in [
        ("r", serde_json::json!(c.r)),
        ("lora_alpha", serde_json::json!(c.alpha)),
        ("lora_dropout", serde_json::json!(c.dropout)),
        ("use_rslora", serde_json::json!(c.use_rslora)),
        ("use_dora", serde_json::json!(use_dora)),
        ("bias", serde_json::json!("none")),
        ("fan_in_fan_out", serde_json::json!(false)),
        ("init_lora_weights", serde_json::json!(true)),
        ("target_modules", target_modules),
        ("exclude_modules", Value::Null),
        ("layers_to_transform", layers_to_transform),
        ("layers_pattern", Value::Null),
        ("rank_pattern", serde_json::json!({})),
        ("alpha_pattern", serde_json::json!({})),
    ] {
        config.insert(k.into(), v);
    }
    Value::Object(config)
}

/// `adapter_config.json` of a Poly / MHR adapter (PEFT's `PolyConfig`; both are `poly_type: "poly"`,
/// MHR having `n_splits > 1`). The routing's learning rate is peftbench's own field, which PEFT
/// ignores.
pub fn poly_config(c: &crate::poly::PolyConfig, base_model: &str, naming: ModuleNaming) -> Value {
    let mut config = base_config("POLY", base_model);
    for (k, v) in [
        ("r", serde_json::json!(c.r)),
        ("n_tasks", serde_json::json!(c.n_tasks)),
        ("n_skills", serde_json::json!(c.n_skills)),
        ("n_splits", serde_json::json!(c.n_splits)),
        ("poly_type", serde_json::json!(c.poly_type)),
        ("init_weights", serde_json::json!(c.init_weights)),
        (
            "target_modules",
            target_modules_value(&c.target_modules, naming),
        ),
        ("exclude_modules", Value::Null),
        (
            "peftbench_router_lr_multiplier",
            serde_json::json!(c.router_lr_multiplier),
        ),
    ] {
        config.insert(k.into(), v);
    }
    Value::Object(config)
}

/// An adapter read from disk, ready for [`crate::PeftModel::from_adapter`]: the registry method,
/// its parameters, and the tensors under the names that method's parameters carry.
pub struct LoadedAdapter {
    pub method: String,
    pub params: Value,
    pub tensors: BTreeMap<String, Tensor>,
    pub base_model: Option<String>,
}

/// Models built on transformers' ViT layer code, whose projections transformers 5 renamed in
/// memory: ViT and the Audio Spectrogram Transformer (`<prefix>.layers.N.attention.q_proj`,
/// `mlp.fc1`, where checkpoints keep `<prefix>.encoder.layer.N.attention.attention.query`).
const RENAMED_MODELS: [&str; 2] = ["vit", "audio_spectrogram_transformer"];

/// Splits `<model>.<infix><layer>.<tail>` for a [`RENAMED_MODELS`] prefix.
fn split_block_key<'a>(key: &'a str, infix: &str) -> Option<(&'static str, &'a str, &'a str)> {
    RENAMED_MODELS.iter().find_map(|model| {
        let rest = key
            .strip_prefix(model)?
            .strip_prefix('.')?
            .strip_prefix(infix)?;
        let (layer, tail) = rest.split_once('.')?;
        Some((*model, layer, tail))
    })
}

/// PEFT adapters saved with transformers 5 carry its module names (`vit.layers.N.attention.q_proj`);
/// map them to the checkpoint names the backbones use.
pub fn normalize_module_key(key: &str) -> String {
    let Some((model, layer, tail)) = split_block_key(key, "layers.") else {
        return key.to_string();
    };
    for (new, old) in VIT_RENAMES {
        if let Some(param) = tail
            .strip_prefix(new)
            .filter(|p| p.is_empty() || p.starts_with('.'))
        {
            return format!("{model}.encoder.layer.{layer}.{old}{param}");
        }
    }
    format!("{model}.encoder.layer.{layer}.{tail}")
}

/// The inverse of [`normalize_module_key`]: a checkpoint key under transformers 5's names.
pub fn transformers5_module_key(key: &str) -> String {
    let Some((model, layer, tail)) = split_block_key(key, "encoder.layer.") else {
        return key.to_string();
    };
    // Full paths below the block, so `output.dense` cannot match `attention.output.dense`.
    for (new, old) in VIT_RENAMES {
        if let Some(param) = tail
            .strip_prefix(old)
            .filter(|p| p.is_empty() || p.starts_with('.'))
        {
            return format!("{model}.layers.{layer}.{new}{param}");
        }
    }
    format!("{model}.layers.{layer}.{tail}")
}

/// The projection a (normalised) module key belongs to: `<model>.encoder.layer.N.<suffix>.<param>`,
/// for ViT and AST (`attention.attention.query`) and the BERT family (`attention.self.query`,
/// under any model prefix: `bert`, `roberta`, ...).
fn site_of_key(key: &str) -> Option<LinearSite> {
    // T5's decoder cross-attention: `decoder.block.N.layer.1.EncDecAttention.<q|k|v|o>.<param>`.
    if let Some((_, tail)) = key.split_once(".EncDecAttention.") {
        return match tail.split_once('.')?.0 {
            "q" => Some(LinearSite::CrossQuery),
            "k" => Some(LinearSite::CrossKey),
            "v" => Some(LinearSite::CrossValue),
            "o" => Some(LinearSite::CrossAttentionOutput),
            _ => None,
        };
    }
    let (_, rest) = key.split_once("encoder.layer.")?;
    let (layer, tail) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    // Full paths below the block, so `output.dense.` cannot match `attention.output.dense.`.
    let path_sites = [
        (LinearSite::Query, "attention.attention.query."),
        (LinearSite::Key, "attention.attention.key."),
        (LinearSite::Value, "attention.attention.value."),
        (LinearSite::Query, "attention.self.query."),
        (LinearSite::Key, "attention.self.key."),
        (LinearSite::Value, "attention.self.value."),
        (LinearSite::AttentionOutput, "attention.output.dense."),
        (LinearSite::Fc1, "intermediate.dense."),
        (LinearSite::Fc2, "output.dense."),
    ];
    path_sites
        .iter()
        .find(|(_, p)| tail.starts_with(p))
        .map(|(s, _)| *s)
}

/// The block a (normalised) module key belongs to: `...encoder.layer.N....`.
fn block_of_key(key: &str) -> Option<usize> {
    let (_, rest) = key.split_once("encoder.layer.")?;
    rest.split_once('.')?.0.parse().ok()
}

/// The blocks that have a tensor whose key ends in `param`, ascending.
fn blocks_with(tensors: &BTreeMap<String, Tensor>, param: &str) -> Vec<usize> {
    let blocks: std::collections::BTreeSet<usize> = tensors
        .keys()
        .filter(|k| k.ends_with(param))
        .filter_map(|k| block_of_key(k))
        .collect();
    blocks.into_iter().collect()
}

fn sites_with(tensors: &BTreeMap<String, Tensor>, param: &str) -> Vec<LinearSite> {
    let mut sites: Vec<LinearSite> = tensors
        .keys()
        .filter(|k| k.ends_with(param))
        .filter_map(|k| site_of_key(k))
        .collect();
    sites.sort_unstable();
    sites.dedup();
    sites
}

/// Reads an adapter folder in HF PEFT's format (LoRA, DoRA, IA3, prefix tuning, SHiRA, Poly/MHR) or peftbench's
/// own, and says which registry method with which parameters reproduces it.
pub fn load_adapter(dir: &Path) -> anyhow::Result<LoadedAdapter> {
    let native = dir.join(NATIVE_CONFIG_FILE);
    if native.exists() {
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(&native)
                .map_err(|e| anyhow::anyhow!("{}: {e}", native.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", native.display()))?;
        let weights = dir.join(NATIVE_WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu)
            .map_err(|e| anyhow::anyhow!("{}: {e}", weights.display()))?;
        return Ok(LoadedAdapter {
            method: doc["method"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{}: no `method`", native.display()))?
                .to_string(),
            params: doc["config"].clone(),
            tensors: tensors.into_iter().collect(),
            base_model: doc["base_model_name_or_path"].as_str().map(String::from),
        });
    }
    let (config, raw) = read_adapter(dir)?;
    let tensors: BTreeMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, t)| (normalize_module_key(&k), t))
        .collect();
    let origin = dir.join(CONFIG_FILE).display().to_string();
    let peft_type = config["peft_type"].as_str().unwrap_or_default();
    let names =
        |sites: &[LinearSite]| -> Value { sites.iter().map(|s| Value::from(s.name())).collect() };
    let (method, params, tensors) = match peft_type {
        "LORA" => {
            for unsupported in ["rank_pattern", "alpha_pattern"] {
                if config[unsupported].as_object().is_some_and(|m| !m.is_empty()) {
                    anyhow::bail!("{origin}: `{unsupported}` (per-module ranks) is not supported");
                }
            }
            if config["fan_in_fan_out"].as_bool() == Some(true) {
                anyhow::bail!("{origin}: `fan_in_fan_out: true` is not supported (ViT has no Conv1D)");
            }
            let sites = sites_with(&tensors, ".lora_A.weight");
            let method = if config["use_dora"].as_bool() == Some(true) {
                "dora"
            } else {
                "lora"
            };
            // The adapted blocks are those the file has tensors for, where the config narrows
            // them (`layers_to_transform`, or a regex that may name blocks).
            let narrowed =
                !config["layers_to_transform"].is_null() || config["target_modules"].is_string();
            let params = serde_json::json!({
                "r": config["r"],
                "alpha": config["lora_alpha"],
                "dropout": config["lora_dropout"].as_f64().unwrap_or(0.0),
                "use_rslora": config["use_rslora"].as_bool().unwrap_or(false),
                "target_modules": names(&sites),
                "layers_to_transform": narrowed.then(|| blocks_with(&tensors, ".lora_A.weight")),
            });
            (method, params, tensors)
        }
        "IA3" => {
            let sites = sites_with(&tensors, ".ia3_l");
            // Feed-forward modules scale their input: PEFT stores their vector as `[1, in]`.
            let feedforward: Vec<LinearSite> = sites
                .iter()
                .copied()
                .filter(|&s| {
                    tensors
                        .iter()
                        .any(|(k, t)| k.ends_with(".ia3_l") && site_of_key(k) == Some(s) && t.dims()[0] == 1)
                })
                .collect();
            let params = serde_json::json!({
                "target_modules": names(&sites),
                "feedforward_modules": names(&feedforward),
            });
            ("ia3", params, tensors)
        }
        "PREFIX_TUNING" => {
            let mut tensors = tensors;
            let prompts = tensors
                .remove("prompt_embeddings")
                .ok_or_else(|| anyhow::anyhow!("{origin}: no `prompt_embeddings` tensor"))?;
            // The saved prefixes are the MLP's output when PEFT trained through one: load them
            // directly, as PEFT does in inference mode.
            let params = serde_json::json!({
                "num_virtual_tokens": prompts.dim(0)?,
                "prefix_projection": false,
            });
            tensors.insert("prefix_encoder.embedding.weight".into(), prompts);
            ("prefix-tuning", params, tensors)
        }
        "SHIRA" => {
            if config["fan_in_fan_out"].as_bool() == Some(true) {
                anyhow::bail!("{origin}: `fan_in_fan_out: true` is not supported (ViT has no Conv1D)");
            }
            // The mask comes from the saved `shira_indices` (SHiRA's `restore`), so
            // the mask type and seed only matter for sizes: a random mask of the same budget.
            let sites = sites_with(&tensors, ".shira_weight");
            let mut params = serde_json::json!({
                "mask": "random",
                "random_seed": config["random_seed"].as_u64().unwrap_or(0),
                "target_modules": names(&sites),
            });
            match (config["r"].as_u64(), config["peftbench_sparsity"].as_f64()) {
                (Some(r), _) => params["r"] = r.into(),
                (None, Some(sparsity)) => params["sparsity"] = sparsity.into(),
                (None, None) => anyhow::bail!("{origin}: SHiRA config has neither `r` nor `peftbench_sparsity`"),
            }
            ("shira", params, tensors)
        }
        "POLY" => {
            if config["poly_type"].as_str().is_some_and(|t| t != crate::poly::config::POLY_TYPE) {
                anyhow::bail!("{origin}: `poly_type` {} is not supported; supported: \"poly\"", config["poly_type"]);
            }
            // One split is Polytropon, more is multi-head routing: the same method, two names.
            let n_splits = config["n_splits"].as_u64().unwrap_or(1);
            let method = if n_splits > 1 {
                crate::poly::MHR_NAME
            } else {
                crate::poly::POLY_NAME
            };
            let mut params = serde_json::json!({
                "r": config["r"],
                "n_tasks": config["n_tasks"],
                "n_skills": config["n_skills"],
                "n_splits": n_splits,
                "target_modules": names(&sites_with(&tensors, ".poly_lora_A")),
                "init_weights": config["init_weights"].as_bool().unwrap_or(true),
            });
            if let Some(m) = config["peftbench_router_lr_multiplier"].as_f64() {
                params["router_lr_multiplier"] = m.into();
            }
            (method, params, tensors)
        }
        other => anyhow::bail!(
            "{origin}: peft_type `{other}` is not supported; supported: LORA (with or without use_dora), IA3, PREFIX_TUNING, SHIRA, POLY"
        ),
    };
    Ok(LoadedAdapter {
        method: method.to_string(),
        params,
        tensors,
        base_model: config["base_model_name_or_path"].as_str().map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transformers5_names_round_trip_for_vit_and_ast() {
        for (checkpoint, renamed) in [
            (
                "vit.encoder.layer.3.attention.attention.query.lora_A.weight",
                "vit.layers.3.attention.q_proj.lora_A.weight",
            ),
            (
                "vit.encoder.layer.0.output.dense.ia3_l",
                "vit.layers.0.mlp.fc2.ia3_l",
            ),
            (
                "vit.encoder.layer.11.attention.output.dense",
                "vit.layers.11.attention.o_proj",
            ),
            (
                "audio_spectrogram_transformer.encoder.layer.2.intermediate.dense.shira_weight",
                "audio_spectrogram_transformer.layers.2.mlp.fc1.shira_weight",
            ),
        ] {
            assert_eq!(transformers5_module_key(checkpoint), renamed);
            assert_eq!(normalize_module_key(renamed), checkpoint);
            assert_eq!(
                ModuleNaming::for_module_path(checkpoint),
                ModuleNaming::Transformers5
            );
        }
        // BERT's names are the same under both versions.
        let bert = "bert.encoder.layer.0.attention.self.query.lora_A.weight";
        assert_eq!(transformers5_module_key(bert), bert);
        assert_eq!(normalize_module_key(bert), bert);
        assert_eq!(
            ModuleNaming::for_module_path(bert),
            ModuleNaming::Checkpoint
        );
        assert_eq!(
            normalize_module_key("classifier.weight"),
            "classifier.weight"
        );
    }

    /// T5's cross-attention modules keep their checkpoint names and map back to their sites.
    #[test]
    fn t5_cross_attention_keys_name_their_sites() {
        for (site, suffix) in [
            (LinearSite::CrossQuery, "q"),
            (LinearSite::CrossKey, "k"),
            (LinearSite::CrossValue, "v"),
            (LinearSite::CrossAttentionOutput, "o"),
        ] {
            for naming in [ModuleNaming::Checkpoint, ModuleNaming::Transformers5] {
                assert_eq!(
                    module_suffix(site, naming),
                    format!("EncDecAttention.{suffix}")
                );
            }
            let key = format!("decoder.block.1.layer.1.EncDecAttention.{suffix}.lora_A.weight");
            assert_eq!(site_of_key(&key), Some(site));
            assert_eq!(normalize_module_key(&key), key);
            assert_eq!(transformers5_module_key(&key), key);
        }
        assert_eq!(
            site_of_key("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias"),
            None
        );
    }
}
