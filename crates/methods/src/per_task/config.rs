use serde::{Deserialize, Serialize};

use crate::find_method;

/// How the copies' initial values are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyInit {
    /// Every copy starts from the values the copied method draws from the stream named after it
    /// (`init.fork(<method>)`): the same start a separate single-task run of each task at this
    /// seed gets, so per-task training equals N independent runs.
    Same,
    /// Copy `t` draws from that stream re-forked by `task_{t}` (`init.fork(<method>).fork("task_t")`):
    /// the copies start apart.
    Independent,
}

/// `per-task` hyper-parameters: which method to copy, its parameters, and how many tasks.
/// Defaults: one LoRA (with LoRA's own defaults) for a single task, copies starting alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerTaskConfig {
    /// Registry name of the method copied once per task.
    pub method: String,
    /// That method's parameters, as under its own `params:` (its defaults where left out).
    pub params: serde_json::Value,
    /// Number of tasks; examples carry task ids `0..n_tasks` (single-task data is task 0).
    pub n_tasks: usize,
    pub init: CopyInit,
}

impl Default for PerTaskConfig {
    fn default() -> Self {
        Self {
            method: "lora".into(),
            params: serde_json::json!({}),
            n_tasks: 1,
            init: CopyInit::Same,
        }
    }
}

/// Methods that cannot be copied per task, and why. Checked before anything attaches; methods
/// added later that break the same rules are caught when the first copy attaches (see
/// `PerTask::attach`).
pub(crate) const REFUSED: &[(&str, &str)] = &[
    (
        "full",
        "it trains the backbone's own weights, which every task shares",
    ),
    (
        "bitfit",
        "it trains the backbone's own biases, which every task shares",
    ),
    (
        "linear",
        "it adds nothing to the backbone (a linear probe trains the head only)",
    ),
    ("lt-sft", "it trains in phases"),
    ("madx", "it trains in phases"),
    ("corda", "it calibrates on data before training"),
    ("per-task", "it is already one copy per task"),
    ("hyperformer", "it is already conditioned on the task"),
    ("poly", "it is already conditioned on the task"),
    ("mhr", "it is already conditioned on the task"),
];

impl PerTaskConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.n_tasks == 0 {
            return Err("method `per-task`: n_tasks must be at least 1".into());
        }
        if let Some((_, why)) = REFUSED.iter().find(|(name, _)| *name == self.method) {
            return Err(format!(
                "method `per-task`: cannot copy method `{}` per task: {why}; copy a method that only adds hooks (lora, adapter, ...)",
                self.method
            ));
        }
        let inner = find_method(&self.method).map_err(|e| format!("method `per-task`: {e}"))?;
        if !(self.params.is_object() || self.params.is_null()) {
            return Err(format!(
                "method `per-task`: field `params` must be an object of `{}`'s parameters",
                self.method
            ));
        }
        inner
            .validate(&self.params)
            .map_err(|e| format!("method `per-task`: {e}"))
    }
}
