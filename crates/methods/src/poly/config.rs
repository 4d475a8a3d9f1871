use peftbench_backbones::{BackboneInfo, LinearSite};
use serde::{Deserialize, Serialize};

use crate::lora::config::{target_modules_or_preset, PRESETS};

/// The one routing variant PEFT has (`poly_type: "poly"`): a learned logit per (task, split, skill).
pub const POLY_TYPE: &str = "poly";

/// How many times faster than the recipe's rate the routing logits learn, by default. The
/// authors' reference code (microsoft/mttl, which PEFT's Poly cites as its source) trains
/// `module_logits` at `module_logits_learning_rate` 0.1 beside a `learning_rate` of 1e-3.
pub const DEFAULT_ROUTER_LR_MULTIPLIER: f64 = 100.0;

/// MHR's default number of heads when a suite does not set `n_splits` for `mhr`: peftbench's
/// choice (PEFT's own default, 1, is plain Poly); it divides the widths of ViT-B (768), BERT-base
/// (768), MiniLM (384) and the test backbones (16, 32).
pub const MHR_DEFAULT_SPLITS: usize = 8;

/// Poly / MHR hyper-parameters, PEFT's `PolyConfig` field names and defaults (r 8, one task, four
/// skills, one split), query and value targeted as LoRA's paper, plus the routing's learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolyConfig {
    /// Rank of every skill (a LoRA pair); the update is scaled by `1 / r`, as PEFT's layer does.
    pub r: usize,
    /// Tasks with a routing row each: a batch's task ids must be below this. Single-task runs
    /// (no task ids) use task 0.
    pub n_tasks: usize,
    /// Skills (LoRA pairs) per adapted projection, mixed per task by the router.
    pub n_skills: usize,
    /// Heads each skill is split into, along the input (A) and output (B) widths, each routed
    /// separately: 1 = Polytropon, more = Multi-Head Routing. Must divide the adapted widths.
    pub n_splits: usize,
    /// The router: only `"poly"` (PEFT has no other).
    pub poly_type: String,
    /// Projections to adapt: site names or a preset (`qv`, `qkv`, `all-linear`).
    #[serde(deserialize_with = "target_modules_or_preset")]
    pub target_modules: Vec<LinearSite>,
    /// PEFT's `init_weights`: B starts at zero (the adapter is the identity at initialisation);
    /// `false` draws B like A (Kaiming-uniform).
    pub init_weights: bool,
    /// Learning rate of the routing logits relative to the recipe's (see
    /// [`DEFAULT_ROUTER_LR_MULTIPLIER`]); not part of PEFT's format.
    pub router_lr_multiplier: f64,
}

impl Default for PolyConfig {
    fn default() -> Self {
        Self {
            r: 8,
            n_tasks: 1,
            n_skills: 4,
            n_splits: 1,
            poly_type: POLY_TYPE.into(),
            target_modules: vec![LinearSite::Query, LinearSite::Value],
            init_weights: true,
            router_lr_multiplier: DEFAULT_ROUTER_LR_MULTIPLIER,
        }
    }
}

impl PolyConfig {
    /// Parses `params` for registry method `method` (`poly` or `mhr`); `mhr` defaults `n_splits`
    /// to [`MHR_DEFAULT_SPLITS`].
    pub fn parse(method: &str, params: &serde_json::Value) -> Result<Self, String> {
        let mut params = if params.is_null() {
            serde_json::json!({})
        } else {
            params.clone()
        };
        if method == super::MHR_NAME {
            if let Some(map) = params.as_object_mut() {
                map.entry("n_splits")
                    .or_insert_with(|| MHR_DEFAULT_SPLITS.into());
            }
        }
        crate::parse_config(method, &params)
    }

    pub fn check(&self, method: &str) -> Result<(), String> {
        for (field, value) in [
            ("r", self.r),
            ("n_tasks", self.n_tasks),
            ("n_skills", self.n_skills),
            ("n_splits", self.n_splits),
        ] {
            if value == 0 {
                return Err(format!(
                    "method `{method}`: field `{field}` is 0; allowed range: 1 or more"
                ));
            }
        }
        if method == super::MHR_NAME && self.n_splits < 2 {
            return Err(format!(
                "method `{method}`: field `n_splits` is {}; allowed: 2 or more (one split is Poly: use method `poly`)",
                self.n_splits
            ));
        }
        if self.poly_type != POLY_TYPE {
            return Err(format!(
                "method `{method}`: field `poly_type` is `{}`; allowed: `{POLY_TYPE}`",
                self.poly_type
            ));
        }
        if self.target_modules.is_empty() {
            return Err(format!(
                "method `{method}`: field `target_modules` is empty; allowed: a non-empty subset of {}, or a preset ({})",
                LinearSite::ALL.map(|s| s.name()).join(", "),
                PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ));
        }
        if !(self.router_lr_multiplier.is_finite() && self.router_lr_multiplier > 0.0) {
            return Err(format!(
                "method `{method}`: field `router_lr_multiplier` is {}; allowed: a positive number",
                self.router_lr_multiplier
            ));
        }
        Ok(())
    }

    /// Every split must divide the adapted widths (PEFT slices `in / n_splits` and
    /// `out / n_splits` and would silently drop a remainder); the rank stays within the adapted
    /// widths, as LoRA's (the splits of a skill share its `r` columns, so the whole update has rank
    /// up to `r` even where `r` exceeds a split's width).
    pub fn check_widths(&self, method: &str, info: &BackboneInfo) -> Result<(), String> {
        crate::check_sites(method, &self.target_modules, info)?;
        for &site in &self.target_modules {
            let (inp, out) = info.linear_dims(site);
            for (side, width) in [("input", inp), ("output", out)] {
                if width % self.n_splits != 0 {
                    return Err(format!(
                        "method `{method}`: field `n_splits` is {} but the {side} width of `{}` is {width}; allowed: a divisor of every adapted width ({inp} -> {out})",
                        self.n_splits,
                        site.name()
                    ));
                }
            }
        }
        crate::check_rank_widths(method, "r", self.r, &self.target_modules, info)
    }

    /// The factor PEFT applies to the mixed update: `1 / r`.
    pub fn scaling(&self) -> f64 {
        1.0 / self.r as f64
    }
}
