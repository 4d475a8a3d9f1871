use peftbench_backbones::{BackboneInfo, LinearSite};
use serde::{Deserialize, Deserializer, Serialize};

/// LoRA hyper-parameters. Defaults follow HF PEFT's `LoraConfig` (r 8, alpha 8, no dropout) with
/// query and value targeted, as in the LoRA paper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// Scale numerator: the delta is multiplied by `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
    pub alpha: f64,
    /// Dropout applied to the input of the LoRA branch only.
    pub dropout: f64,
    /// Projections to adapt: a list of site names, or a preset (`qv`, `qkv`, `all-linear`) so a
    /// suite grid can sweep partial against full adaptation.
    #[serde(deserialize_with = "target_modules_or_preset")]
    pub target_modules: Vec<LinearSite>,
    /// Rank-stabilised scaling `alpha / sqrt(r)`.
    pub use_rslora: bool,
    /// Blocks to adapt, counted from the input (0 = the first block), as PEFT's
    /// `layers_to_transform` (a list, or one index); `None` = every block. Blocks below the lowest
    /// one stay exactly pretrained, so the runner computes their output once per example and
    /// trains from it (frozen-prefix caching).
    #[serde(deserialize_with = "layers_to_transform")]
    pub layers_to_transform: Option<Vec<usize>>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: vec![LinearSite::Query, LinearSite::Value],
            use_rslora: false,
            layers_to_transform: None,
        }
    }
}

impl LoraConfig {
    /// The factor applied to `B A x`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub fn check(&self) -> Result<(), String> {
        self.check_as("lora")
    }

    /// The checks of [`LoraConfig::check`], naming `method` (DoRA shares this configuration).
    pub fn check_as(&self, method: &str) -> Result<(), String> {
        if self.r == 0 {
            return Err(format!(
                "method `{method}`: field `r` is 0; allowed range: 1 to the adapted layer's width"
            ));
        }
        if self.target_modules.is_empty() {
            return Err(format!("method `{method}`: field `target_modules` is empty; allowed: a non-empty subset of {}, or a preset ({})", site_names(), PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "method `{method}`: field `dropout` is {}; allowed range [0, 1)",
                self.dropout
            ));
        }
        if self.layers_to_transform.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!("method `{method}`: field `layers_to_transform` is empty; allowed: block indices from 0, or leave it out to adapt every block"));
        }
        Ok(())
    }

    /// A rank above `min(in, out)` of an adapted projection adds parameters without adding rank;
    /// a block index must exist in the backbone.
    pub fn check_widths(&self, method: &str, info: &BackboneInfo) -> Result<(), String> {
        crate::check_rank_widths(method, "r", self.r, &self.target_modules, info)?;
        crate::check_layer_indices(
            method,
            "layers_to_transform",
            self.layers_to_transform.as_deref(),
            info.num_layers,
        )
    }
}

/// Accepts PEFT's `layers_to_transform`: one block index or a list of them (sorted, duplicates
/// dropped), or null.
pub(crate) fn layers_to_transform<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<usize>>, D::Error> {
    block_indices(d, "layers_to_transform")
}

/// The same for the bottleneck adapter's `layers`.
pub(crate) fn adapter_layers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<usize>>, D::Error> {
    block_indices(d, "layers")
}

fn block_indices<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
) -> Result<Option<Vec<usize>>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let index = |v: &serde_json::Value| v.as_u64().map(|i| i as usize);
    let layers = match &value {
        serde_json::Value::Array(items) => items.iter().map(index).collect::<Option<Vec<_>>>(),
        one => index(one).map(|i| vec![i]),
    };
    let mut layers = layers.ok_or_else(|| {
        serde::de::Error::custom(format!(
            "field `{field}` is {value}; allowed: a block index (0 = the first block) or a list of them"
        ))
    })?;
    layers.sort_unstable();
    layers.dedup();
    Ok(Some(layers))
}

/// Named target sets: attention query and value (the LoRA paper), all of query, key and value,
/// and every linear projection of a block (PEFT's `all-linear`).
pub const PRESETS: &[(&str, &[LinearSite])] = &[
    ("qv", &[LinearSite::Query, LinearSite::Value]),
    (
        "qkv",
        &[LinearSite::Query, LinearSite::Key, LinearSite::Value],
    ),
    ("all-linear", &LinearSite::ALL),
];

/// The site names a configuration may use: every backbone's, then the decoder cross-attention
/// ones of encoder-decoder models (which no preset includes).
fn site_names() -> String {
    let cross = LinearSite::CROSS_ATTENTION.map(|s| s.name()).join(", ");
    format!(
        "{} (encoder-decoder models also: {cross})",
        LinearSite::ALL.map(|s| s.name()).join(", ")
    )
}

/// Accepts `target_modules` as a list of site names or as one preset name.
pub(crate) fn target_modules_or_preset<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<LinearSite>, D::Error> {
    sites_or_preset(d, "target_modules")
}

/// The same for IA3's `feedforward_modules`.
pub(crate) fn feedforward_modules_or_preset<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<LinearSite>, D::Error> {
    sites_or_preset(d, "feedforward_modules")
}

fn sites_or_preset<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
) -> Result<Vec<LinearSite>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Targets {
        Preset(String),
        Sites(Vec<String>),
    }
    let unknown = |name: &str| {
        serde::de::Error::custom(format!(
            "field `{field}`: unknown module `{name}`; allowed: {}, or a preset ({})",
            site_names(),
            PRESETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    match Targets::deserialize(d)? {
        Targets::Preset(name) => PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, sites)| sites.to_vec())
            .ok_or_else(|| unknown(&name)),
        Targets::Sites(names) => names
            .iter()
            .map(|n| LinearSite::from_name(n).ok_or_else(|| unknown(n)))
            .collect(),
    }
}
