//! PEFT methods behind one registry.
//!
//! Each method lives in its own folder (`config` = its documented hyper-parameters with the paper's
//! defaults, `layer`/`model` = what it adds to a backbone) and is registered once in
//! [`registry`] under a unique name. A method *attaches* to a [`Backbone`]: it creates its
//! trainable parameters, may swap pretrained tensors for variables (full fine-tuning, BitFit), and
//! returns an [`Adaptation`], the [`Hooks`] the backbone calls on every forward pass.
//! [`PeftModel`] puts backbone, adaptation and classification head together.
//!
//! # Data-dependent and multi-phase methods
//!
//! Most methods are fully defined by `attach`. Some need data first or train in several phases;
//! two optional [`Adaptation`] hooks cover them, and methods that do not override them are
//! unchanged:
//!
//! * **Calibration** ([`Adaptation::calibration`]): before training, the runner lets
//!   [`PeftModel::calibrate`] run a few training batches through the model (evaluation mode) and, if
//!   asked, back-propagates the training loss. After each batch the adaptation sees the gradients
//!   ([`Adaptation::observe_calibration_batch`]); its hooks may record activations meanwhile. Then
//!   [`Adaptation::finish_calibration`] turns what it saw into its initial state. CorDA collects
//!   input covariances this way; SHiRA's gradient mask accumulates gradient magnitudes.
//! * **Phases** ([`Adaptation::phases`]): a method may train in several consecutive phases, each
//!   with its own trainable set and optionally its own epochs and learning rate; the runner calls
//!   [`PeftModel::enter_phase`] and trains once per phase, with a fresh optimizer. LT-SFT trains
//!   densely, keeps the top-k changes, resets and trains those sparsely; MAD-X trains the language
//!   adapter, then the task adapter stacked on it.

pub mod adapter;
pub mod adaptformer;
pub mod bitfit;
pub mod compacter;
pub mod conv_adapter;
pub mod corda;
pub mod dora;
pub mod dual_encoder;
pub mod full;
mod head;
pub mod hydra;
pub mod hyperformer;
pub mod ia3;
pub mod linear_probe;
pub mod lora;
pub mod lowbit;
pub mod lt_sft;
pub mod madx;
mod model;
pub mod mosa;
pub mod music_adapters;
pub mod music_generation;
pub mod peft_format;
pub mod per_task;
pub mod poly;
pub mod prefix;
mod projections;
pub mod registry;
pub mod shira;
pub mod ssf;
pub mod vision_language;
pub mod vpt;
pub mod zero_shot;

pub use dual_encoder::{DualEncoderModel, LogitScale};
pub use head::ClassifierHead;
pub use model::PeftModel;
pub use music_generation::MusicModel;
pub use registry::{find_method, registry};
pub use vision_language::{ParameterCounts, VisionLanguageModel};

use std::path::Path;

use peftbench_backbones::{Backbone, BackboneInfo, Hooks, LinearSite};
use peftbench_core::{NamedVars, SeededInit};
use serde::de::DeserializeOwned;

/// One documented hyper-parameter of a method, for `harness list methods` and error messages.
#[derive(Debug, Clone, Copy)]
pub struct ParamDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// What `harness list methods` prints about a method.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// Unique registry name used in suite files (`method: lora`).
    pub name: &'static str,
    pub summary: &'static str,
    /// The paper that introduced it.
    pub paper: &'static str,
    pub params: &'static [ParamDoc],
}

/// A PEFT method: validates its configuration and attaches to a backbone.
pub trait Method: Sync {
    fn info(&self) -> MethodInfo;

    /// Checks a parameter object (`params:` of a suite entry) without building anything.
    fn validate(&self, params: &serde_json::Value) -> Result<(), String>;

    /// Checks a parameter object against the backbone's sizes (ranks within the adapted widths,
    /// divisibility), from its configuration alone: `harness suite --dry-run` and the sweep's
    /// preflight call this before anything trains, and [`PeftModel::new`] before `attach`.
    fn check_backbone(
        &self,
        _params: &serde_json::Value,
        _info: &BackboneInfo,
    ) -> Result<(), String> {
        Ok(())
    }

    /// The backbone families the method adapts (`BackboneInfo::family`), when it adapts only
    /// some: MusicGen's own adapters and `zero-shot` adapt generative MusicGen only. `None`:
    /// every backbone whose sites it finds ([`Method::check_backbone`] says which).
    fn backbone_families(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Whether [`PeftModel::new`] hands `attach` the run's random stream forked by the method's
    /// name (the default) or the run's stream itself: a wrapper whose copies should start where a
    /// single-task run of the wrapped method starts (`per-task`) forks by that method's name.
    fn forks_own_init(&self) -> bool {
        true
    }

    /// The ways a trained multi-task adapter of this method carries to a held-out task
    /// ([`Adaptation::transfer`]); none for most methods.
    fn transfers(&self) -> &'static [Transfer] {
        &[]
    }

    /// Creates the method's parameters on `backbone`, drawing initial values from `init`.
    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>>;
}

/// What [`Adaptation::restore`] took from a saved adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Tensors of the adapter file it consumed (they are not parameters of those names).
    pub used: Vec<String>,
    /// Trainable parameters whose values it set itself (not looked up by name).
    pub set: Vec<String>,
}

/// A method attached to a backbone: the hooks it installs plus the parameters it trains.
/// What a method asks of [`PeftModel::calibrate`] before training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationRequest {
    /// Training batches to run through the model.
    pub batches: usize,
    /// Whether to back-propagate the training loss of each batch (else forward only).
    pub gradients: bool,
}

/// One training phase of a multi-phase method.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Shown in progress output and records (`full`, `sparse`, ...).
    pub name: &'static str,
    /// Epochs of this phase; `None` = the recipe's epochs.
    pub epochs: Option<usize>,
    /// Peak learning rate of this phase; `None` = the recipe's.
    pub lr: Option<f64>,
}

/// How a multi-task adaptation is carried to a task held out of its training (Caccia et al., 2023,
/// "Multi-Head Adapter Routing for Cross-Task Generalization", section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transfer {
    /// MHR-z: the trained skills stay frozen; only a fresh routing for the new task trains.
    Routing,
    /// MHR-μ: the routing is dropped and the average of the skills is fine-tuned as one adapter.
    AverageSkills,
}

impl Transfer {
    pub fn name(self) -> &'static str {
        match self {
            Transfer::Routing => "routing",
            Transfer::AverageSkills => "average-skills",
        }
    }
}

pub trait Adaptation: Hooks {
    /// The method's trainable parameters (the classification head is separate).
    fn trainable(&self) -> &NamedVars;

    /// The learning rate of trainable parameter `name` relative to the recipe's: 1 (the default)
    /// for every parameter of most methods; Poly/MHR train their routing logits at their own rate.
    fn lr_multiplier(&self, _name: &str) -> f64 {
        1.0
    }

    /// Scalars this method adds to the model (0 for methods that only unfreeze pretrained ones).
    fn added_params(&self) -> usize {
        self.trainable().count()
    }

    /// True when the backbone's output is exactly the pretrained model's (no hooks, nothing
    /// unfrozen): the runner may then compute features once and train only the head on them.
    fn leaves_backbone_unchanged(&self) -> bool {
        false
    }

    /// How many blocks, counted from the input, the method leaves exactly as pretrained: its
    /// hooks change nothing there and none of their tensors trains. The runner may then compute
    /// the token stream entering the first adapted block once per example and train from it
    /// (frozen-prefix caching). 0, the default, promises nothing.
    fn untouched_blocks(&self) -> usize {
        0
    }

    /// Writes the trained adapter into `dir` (HF PEFT format where PEFT has the method), with the
    /// head under `modules_to_save`. Returns the files written.
    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<std::path::PathBuf>>;

    /// Data the method needs before training; `None` (the default) for data-free methods.
    fn calibration(&self) -> Option<CalibrationRequest> {
        None
    }

    /// Called after each calibration batch's forward pass (and backward pass, with the gradients,
    /// when [`CalibrationRequest::gradients`] is set).
    fn observe_calibration_batch(
        &self,
        _gradients: Option<&candle_core::backprop::GradStore>,
    ) -> candle_core::Result<()> {
        Ok(())
    }

    /// Turns what calibration saw into the method's initial state.
    fn finish_calibration(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The training phases, in order; empty (the default) = one ordinary phase.
    fn phases(&self) -> Vec<Phase> {
        Vec::new()
    }

    /// Prepares phase `index` of [`Adaptation::phases`] (after the previous one has trained): may
    /// change [`Adaptation::trainable`].
    fn enter_phase(&mut self, _index: usize) -> anyhow::Result<()> {
        Ok(())
    }

    /// Restores what a saved adapter (the folder `dir`, its adapter file's `tensors`) holds
    /// besides trained values stored under their parameter names, before those are loaded:
    /// structure stored beside the values (SHiRA's mask, `<module>.shira_indices`), side files
    /// (MAD-X's language adapters, LT-SFT's sparse difference), the training phase the adapter
    /// was saved in, or values kept in another form (low-bit methods' packed codes). The default
    /// has none of these.
    fn restore(
        &mut self,
        _dir: &std::path::Path,
        _tensors: &std::collections::BTreeMap<String, candle_core::Tensor>,
    ) -> anyhow::Result<Restored> {
        Ok(Restored::default())
    }

    /// Replaces the method's language module with the one saved in `dir` (MAD-X's adapter swap
    /// for zero-shot transfer); methods without one say so.
    fn swap_language_module(&self, _dir: &std::path::Path) -> anyhow::Result<()> {
        anyhow::bail!("this method has no language module to swap")
    }

    /// The final token states as a head tied to the input embeddings (a masked-LM decoder) should
    /// read them: MAD-X undoes its invertible adapter here; the default changes nothing.
    fn before_output_embeddings(
        &self,
        states: candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor> {
        Ok(states)
    }

    /// Routing methods: each task's mean routing weight on each skill, `[tasks][skills]`
    /// (averaged over adapted projections and heads, in evaluation mode), for comparing the
    /// learned allocation with a known one. `None` for methods without skills.
    fn task_allocation(&self) -> anyhow::Result<Option<Vec<Vec<f64>>>> {
        Ok(None)
    }

    /// Carries a multi-task adaptation to one task it was not trained on (few-shot transfer, see
    /// [`Transfer`]): afterwards the adaptation serves a single new task (task id 0) and
    /// [`Adaptation::trainable`] holds what that transfer trains. Methods without such a mode
    /// say so.
    fn transfer(&mut self, transfer: Transfer) -> anyhow::Result<()> {
        anyhow::bail!(
            "this method has no `{}` transfer to new tasks",
            transfer.name()
        )
    }

    /// Folds the method into the backbone's own weights, so that the backbone alone (no hooks)
    /// computes what backbone + method computed. Methods that cannot merge say so.
    fn merge_into(&self, _backbone: &mut dyn Backbone) -> anyhow::Result<()> {
        anyhow::bail!("this method cannot be merged into the backbone's weights")
    }
}

/// Parses a method's configuration from a suite's JSON parameter object: missing fields take the
/// documented defaults, unknown ones are errors naming the valid choices.
pub fn parse_config<C: DeserializeOwned>(
    method: &str,
    params: &serde_json::Value,
) -> Result<C, String> {
    let value = if params.is_null() {
        serde_json::json!({})
    } else {
        params.clone()
    };
    serde_json::from_value(value).map_err(|e| format!("method `{method}`: {e}"))
}

/// A rank `r` (field `field`) above `min(in, out)` of an adapted projection adds parameters without
/// adding rank: the error names the method, the field, the projection and the allowed range.
pub(crate) fn check_rank_widths(
    method: &str,
    field: &str,
    r: usize,
    sites: &[LinearSite],
    info: &BackboneInfo,
) -> Result<(), String> {
    check_sites(method, sites, info)?;
    for &site in sites {
        let (inp, out) = info.linear_dims(site);
        if r > inp.min(out) {
            return Err(format!(
                "method `{method}`: field `{field}` is {r} but `{}` is {inp} -> {out}; allowed range: 1 to {}",
                site.name(),
                inp.min(out)
            ));
        }
    }
    Ok(())
}

/// Every projection a method targets must exist in the backbone: the decoder cross-attention sites
/// ([`LinearSite::CROSS_ATTENTION`]) exist in encoder-decoder models only
/// ([`BackboneInfo::check_sites`]). Encoder-only backbones cannot hand out such a projection, so
/// this runs at `check_backbone` (dry run, preflight) and again before adapters are built.
pub(crate) fn check_sites(
    method: &str,
    sites: &[LinearSite],
    info: &BackboneInfo,
) -> Result<(), String> {
    info.check_sites(sites)
        .map_err(|e| format!("method `{method}`: {e}"))
}

/// Every block index a method's `field` (`layers_to_transform`, `layers`) names must exist in a
/// backbone of `num_layers` blocks.
pub(crate) fn check_layer_indices(
    method: &str,
    field: &str,
    layers: Option<&[usize]>,
    num_layers: usize,
) -> Result<(), String> {
    match layers.and_then(|l| l.iter().find(|&&layer| layer >= num_layers)) {
        Some(layer) => Err(format!(
            "method `{method}`: field `{field}` names block {layer}, but the backbone has {num_layers} blocks; allowed range: 0 to {}",
            num_layers.saturating_sub(1)
        )),
        None => Ok(()),
    }
}

/// Replaces the backbone's pretrained tensors named in `merged` (checkpoint names) by the given
/// values: how mergeable methods fold themselves into the frozen weights.
pub(crate) fn replace_pretrained(
    backbone: &mut dyn Backbone,
    mut merged: std::collections::BTreeMap<String, candle_core::Tensor>,
) -> candle_core::Result<()> {
    backbone.visit_params(&mut |name, t| {
        if let Some(w) = merged.remove(name) {
            *t = w;
        }
        Ok(())
    })
}

/// The random stream a method's module `module` in block `layer` is initialised from. It is the
/// same on every backbone (ViT's module path, the only one when methods were first written), so a
/// method's initial values depend on the seed alone and earlier records stay reproducible; the
/// module's saved name follows the backbone ([`Backbone::block_path`]).
pub(crate) fn init_stream(layer: usize, module: &str) -> String {
    format!("vit.encoder.layer.{layer}.{module}")
}
