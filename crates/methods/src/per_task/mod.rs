//! `per-task`: one copy of a PEFT method per task of a multi-task run, each example routed to its
//! own task's copy: the "separate adapters per task" baseline of multi-task PEFT (Houlsby et al.,
//! 2019, "Parameter-Efficient Transfer Learning for NLP", ICML, arXiv:1902.00751, section 3: one
//! adapter set per task over a shared frozen model; Karimi Mahabadi et al., 2021, "Parameter-efficient
//! Multi-task Fine-tuning for Transformers via Shared Hypernetworks", ACL, arXiv:2106.04489, and
//! Sung et al., 2022, "VL-Adapter", CVPR, arXiv:2112.06825, compare against it).
//!
//! Every hook splits the batch rows by task id (`ForwardCtx::task_ids`; none = task 0), runs
//! that task's copy on its rows and puts the rows back in batch order. The gathers are
//! differentiable, so an example's gradient reaches its task's copy only, and a copy whose task
//! is absent from a batch gets no gradient. A batch of one task goes to its copy untouched.
//!
//! Only methods that add hooks and parameters can be copied: one that trains the backbone's own
//! weights would share them between the copies, and calibration or phases would have to run per
//! task. Such methods are refused by name (`config::REFUSED`) and, for any method, when its first
//! copy attaches (`added_params` differing from the trainable count, calibration, phases, or
//! nothing added).
//!
//! Initialisation: with `init: same` (the default) every copy draws from the stream named after
//! the copied method, `init.fork(<method>)`, which is the stream a single-task run of that method
//! attaches from: per-task training at one seed is N independent single-task runs started alike.
//! `init: independent` re-forks it per task, `init.fork(<method>).fork("task_<t>")`. See
//! [`copy_init`].
//!
//! Parameters are the copies' own, prefixed `task_<t>.`; the adapter is saved in peftbench's own
//! format (method, copied method and its parameters in the config, tensors by those names), so
//! `PeftModel::from_adapter` rebuilds the copies and loads every value by name.

mod config;
pub(crate) mod route;

pub use config::{CopyInit, PerTaskConfig};

use std::path::{Path, PathBuf};

use candle_core::{Device, Result, Tensor};
use peftbench_backbones::{Backbone, BackboneInfo, Hooks, Linear, LinearSite, NormSite, Sublayer};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::{
    find_method, parse_config, peft_format, Adaptation, ClassifierHead, Method, MethodInfo,
    ParamDoc,
};
use route::{Route, RouteCache};

pub struct PerTask;

/// The random stream copy `task` of `method` attaches from, given the stream `init` the per-task
/// method received.
pub fn copy_init(init: &SeededInit, method: &str, how: CopyInit, task: usize) -> SeededInit {
    let stream = init.fork(method);
    match how {
        CopyInit::Same => stream,
        CopyInit::Independent => stream.fork(&format!("task_{task}")),
    }
}

/// The name copy `task`'s parameter `name` carries.
pub fn task_param_name(task: usize, name: &str) -> String {
    format!("task_{task}.{name}")
}

/// N copies of one method behind task routing.
pub struct PerTaskAdaptation {
    config: PerTaskConfig,
    copies: Vec<Box<dyn Adaptation>>,
    params: NamedVars,
    device: Device,
    routes: RouteCache,
}

impl PerTaskAdaptation {
    /// Copy `task` (for inspection and tests).
    pub fn copy(&self, task: usize) -> &dyn Adaptation {
        self.copies[task].as_ref()
    }

    fn route(&self, ctx: &ForwardCtx, rows: usize) -> Result<std::rc::Rc<Route>> {
        let route = self
            .routes
            .route(ctx, self.copies.len(), &self.device)
            .map_err(|e| candle_core::Error::msg(format!("method `per-task`: {e}")))?;
        route
            .check_rows(rows)
            .map_err(|e| candle_core::Error::msg(format!("method `per-task`: {e}")))?;
        Ok(route)
    }

    /// Runs `f` of each present task's copy on that task's rows of `parts` (tensors with the batch
    /// in their first dimension) and merges the outputs back into batch order.
    fn each_task(
        &self,
        ctx: &ForwardCtx,
        parts: &[&Tensor],
        f: impl Fn(&dyn Adaptation, &[Tensor]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let route = self.route(ctx, parts[0].dim(0)?)?;
        match &*route {
            Route::Single(task) => {
                let whole: Vec<Tensor> = parts.iter().map(|&p| p.clone()).collect();
                f(self.copies[*task].as_ref(), &whole)
            }
            Route::Split {
                groups, inverse, ..
            } => {
                let pieces = groups
                    .iter()
                    .map(|(task, rows)| {
                        let sub = parts
                            .iter()
                            .map(|p| {
                                p.contiguous()?
                                    .index_select(&rows.to_device(p.device())?, 0)
                            })
                            .collect::<Result<Vec<_>>>()?;
                        f(self.copies[*task].as_ref(), &sub)
                    })
                    .collect::<Result<Vec<_>>>()?;
                route::merge(&pieces, &inverse.to_device(pieces[0].device())?)
            }
        }
    }
}

impl Hooks for PerTaskAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.each_task(ctx, &[x], |copy, p| {
            copy.linear(layer, site, &p[0], base, ctx)
        })
    }

    fn sublayer(
        &self,
        layer: usize,
        kind: Sublayer,
        input: &Tensor,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.each_task(ctx, &[&output, input], |copy, p| {
            copy.sublayer(layer, kind, &p[1], p[0].clone(), ctx)
        })
    }

    fn tokens(&self, layer: usize, tokens: Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        self.each_task(ctx, &[&tokens], |copy, p| {
            copy.tokens(layer, p[0].clone(), ctx)
        })
    }

    fn prefix(
        &self,
        layer: usize,
        batch: usize,
        ctx: &ForwardCtx,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let route = self.route(ctx, batch)?;
        let (groups, inverse) = match &*route {
            Route::Single(task) => return self.copies[*task].prefix(layer, batch, ctx),
            Route::Split {
                groups, inverse, ..
            } => (groups, inverse),
        };
        let mut keys = Vec::with_capacity(groups.len());
        let mut values = Vec::with_capacity(groups.len());
        for (task, rows) in groups {
            if let Some((k, v)) = self.copies[*task].prefix(layer, rows.dim(0)?, ctx)? {
                keys.push(k);
                values.push(v);
            }
        }
        match keys.len() {
            0 => Ok(None),
            n if n == groups.len() => {
                let inverse = inverse.to_device(keys[0].device())?;
                Ok(Some((
                    route::merge(&keys, &inverse)?,
                    route::merge(&values, &inverse)?,
                )))
            }
            _ => candle_core::bail!(
                "method `per-task`: the copies of `{}` disagree on whether block {layer} has a prefix",
                self.config.method
            ),
        }
    }

    fn norm(
        &self,
        layer: Option<usize>,
        site: NormSite,
        output: Tensor,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        self.each_task(ctx, &[&output], |copy, p| {
            copy.norm(layer, site, p[0].clone(), ctx)
        })
    }
}

impl Adaptation for PerTaskAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    /// The copied method's rate for the parameter under its own name.
    fn lr_multiplier(&self, name: &str) -> f64 {
        name.strip_prefix("task_")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(task, inner)| Some((task.parse::<usize>().ok()?, inner)))
            .and_then(|(task, inner)| Some(self.copies.get(task)?.lr_multiplier(inner)))
            .unwrap_or(1.0)
    }

    fn added_params(&self) -> usize {
        self.copies.iter().map(|c| c.added_params()).sum()
    }

    fn untouched_blocks(&self) -> usize {
        self.copies
            .iter()
            .map(|c| c.untouched_blocks())
            .min()
            .unwrap_or(0)
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        peft_format::write_native(
            dir,
            "per-task",
            &self.config,
            base_model,
            &self.params,
            head,
        )
    }

    /// A single task's copy is the copied method itself: it merges as that method does.
    fn merge_into(&self, backbone: &mut dyn Backbone) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.copies.len() == 1,
            "method `per-task`: {} task copies cannot be merged into one set of backbone weights",
            self.copies.len()
        );
        self.copies[0].merge_into(backbone)
    }
}

/// Refuses a first copy that does more than add hooks and parameters (see the module docs).
fn check_copyable(method: &str, copy: &dyn Adaptation) -> anyhow::Result<()> {
    let refuse = |why: &str| {
        anyhow::bail!(
            "method `per-task`: cannot copy method `{method}` per task: {why}; copy a method that only adds hooks (lora, adapter, ...)"
        )
    };
    if copy.calibration().is_some() {
        return refuse("it calibrates on data before training");
    }
    if !copy.phases().is_empty() {
        return refuse("it trains in phases");
    }
    if copy.leaves_backbone_unchanged() || copy.trainable().is_empty() {
        return refuse("it adds nothing to the backbone");
    }
    if copy.added_params() != copy.trainable().count() {
        return refuse("it trains the backbone's own weights, which every task shares");
    }
    Ok(())
}

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "method",
        default: "lora",
        doc: "registry name of the method copied once per task; it must only add hooks and parameters (not full, bitfit, linear, lt-sft, madx, corda, nor a task-conditioned method)",
    },
    ParamDoc {
        name: "params",
        default: "{}",
        doc: "the copied method's parameters, as under its own `params:`",
    },
    ParamDoc {
        name: "n_tasks",
        default: "1",
        doc: "number of tasks (copies); examples carry task ids 0 to n_tasks-1, single-task data is task 0",
    },
    ParamDoc {
        name: "init",
        default: "same",
        doc: "same: every copy starts from the values a single-task run of the method draws; independent: copy t from that stream re-forked by `task_t`",
    },
];

impl Method for PerTask {
    /// The copies fork the run's stream by the wrapped method's name themselves ([`copy_init`]),
    /// so with `init: same` each starts where a single-task run of that method starts.
    fn forks_own_init(&self) -> bool {
        false
    }

    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "per-task",
            summary: "One copy of any hook-adding method per task; each example routed to its task's copy",
            paper: "Houlsby et al., ICML 2019 (arXiv:1902.00751), per-task adapters; baseline of Hyperformer (ACL 2021) and VL-Adapter (CVPR 2022)",
            params: PARAMS,
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<PerTaskConfig>("per-task", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> std::result::Result<(), String> {
        let config = parse_config::<PerTaskConfig>("per-task", params)?;
        config.check()?;
        find_method(&config.method)?
            .check_backbone(&config.params, info)
            .map_err(|e| format!("method `per-task`: {e}"))
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: PerTaskConfig = parse_config("per-task", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        let inner = find_method(&config.method).map_err(anyhow::Error::msg)?;
        let mut copies = Vec::with_capacity(config.n_tasks);
        let mut all = NamedVars::default();
        for task in 0..config.n_tasks {
            let copy = inner.attach(
                &config.params,
                backbone,
                &copy_init(init, &config.method, config.init, task),
            )?;
            // Checked before the next copy attaches to a backbone the first may have changed.
            if task == 0 {
                check_copyable(&config.method, copy.as_ref())?;
            }
            for p in copy.trainable().iter() {
                all.push(task_param_name(task, &p.name), p.var.clone());
            }
            copies.push(copy);
        }
        Ok(Box::new(PerTaskAdaptation {
            config,
            copies,
            params: all,
            device: init.device().clone(),
            routes: RouteCache::default(),
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests;
