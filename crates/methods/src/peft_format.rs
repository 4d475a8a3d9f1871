//! Hugging Face PEFT's on-disk format: `adapter_config.json` (sorted keys, indent 2) and
//! `adapter_model.safetensors` with `base_model.model.<module path>.<param>` keys, the adapter
//! name `default` removed, and the head saved under `modules_to_save` as `classifier`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::Value;

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
    let mut all: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| (format!("{KEY_PREFIX}{k}"), t))
        .collect();
    for (name, t) in head.params().tensors() {
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
            .map(|(k, t)| (k.strip_prefix(KEY_PREFIX).unwrap_or(&k).to_string(), t))
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
    std::fs::create_dir_all(dir)?;
    let config_path = dir.join(NATIVE_CONFIG_FILE);
    let doc = serde_json::json!({
        "method": method,
        "config": config,
        "base_model_name_or_path": base_model,
    });
    std::fs::write(&config_path, serde_json::to_string_pretty(&doc)? + "\n")?;
    let mut all: HashMap<String, Tensor> = trainable.tensors().into_iter().collect();
    all.extend(head.params().tensors());
    let weights_path = dir.join(NATIVE_WEIGHTS_FILE);
    candle_core::safetensors::save(&all, &weights_path)?;
    Ok(vec![config_path, weights_path])
}
