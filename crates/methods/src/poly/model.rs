use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use super::layer::{PolyLayer, Routing, LOGIT_INIT};
use super::PolyConfig;
use crate::{peft_format, Adaptation, ClassifierHead, Transfer};

/// Parameter names below a projection's module path, as PEFT saves them (adapter name removed).
pub const A_NAME: &str = "poly_lora_A";
pub const B_NAME: &str = "poly_lora_B";
pub const LOGITS_NAME: &str = "poly_router.module_logits";

/// Poly / MHR attached to a backbone: one [`PolyLayer`] (skills and its own router, as PEFT gives
/// every adapted `Linear` its own `PolyRouter`) per (block, targeted projection).
pub struct PolyAdaptation {
    /// The configuration the adapter has now (a transfer narrows it to one task, or one skill).
    config: PolyConfig,
    layers: BTreeMap<(usize, LinearSite), (String, PolyLayer)>,
    params: NamedVars,
    /// Where a [`Transfer::Routing`]'s fresh logits are drawn from.
    transfer_init: SeededInit,
}

impl PolyAdaptation {
    pub fn new(config: PolyConfig, backbone: &dyn Backbone, init: &SeededInit) -> Result<Self> {
        let mut layers = BTreeMap::new();
        for layer in 0..backbone.info().num_layers {
            for &site in &config.target_modules {
                let path = backbone.module_path(layer, site);
                let (out, inp) = backbone.linear(layer, site).weight.dims2()?;
                let poly = PolyLayer::new(
                    inp,
                    out,
                    config.r,
                    config.n_tasks,
                    config.n_skills,
                    config.n_splits,
                    config.init_weights,
                    &init.fork(&crate::init_stream(layer, &site_stream(site))),
                )?;
                layers.insert((layer, site), (path, poly));
            }
        }
        let mut adaptation = Self {
            config,
            layers,
            params: NamedVars::default(),
            transfer_init: init.fork("transfer"),
        };
        adaptation.params = adaptation.all_vars();
        Ok(adaptation)
    }

    pub fn config(&self) -> &PolyConfig {
        &self.config
    }

    /// `(module path, layer)` in block-then-site order.
    pub fn layers(&self) -> impl Iterator<Item = (&str, &PolyLayer)> {
        self.layers.values().map(|(path, l)| (path.as_str(), l))
    }

    /// Every tensor of the adapter, by PEFT's names: skills and routing logits.
    fn all_vars(&self) -> NamedVars {
        let mut vars = NamedVars::default();
        for (path, layer) in self.layers.values() {
            vars.push(format!("{path}.{A_NAME}"), layer.a.clone());
            vars.push(format!("{path}.{B_NAME}"), layer.b.clone());
            if let Some(logits) = layer.logits() {
                vars.push(format!("{path}.{LOGITS_NAME}"), logits.clone());
            }
        }
        vars
    }

    /// What [`Adaptation::save`] writes (module-path keys): every skill and router. An averaged
    /// adapter (no router) gets zero logits `[1, n_splits]`: PEFT's routing weight over its one
    /// skill is then `sigmoid(0) / (sigmoid(0) + 1e-12)`, exactly 1 in f32.
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut tensors = self.all_vars().tensors();
        for (path, layer) in self.layers.values() {
            if layer.logits().is_none() {
                let zeros = Tensor::zeros(
                    (1, layer.n_splits() * layer.n_skills()),
                    layer.a.dtype(),
                    layer.a.device(),
                )?;
                tensors.insert(format!("{path}.{LOGITS_NAME}"), zeros);
            }
        }
        Ok(tensors)
    }
}

/// The stream name of a site's module (ViT's path, see [`crate::init_stream`]).
fn site_stream(site: LinearSite) -> String {
    format!("{}.poly", site.name())
}

impl Hooks for PolyAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        match self.layers.get(&(layer, site)) {
            Some((_, poly)) => poly.forward(x, base, ctx),
            None => base.forward(x),
        }
    }
}

impl Adaptation for PolyAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    /// Routing logits train at `router_lr_multiplier` times the recipe's rate.
    fn lr_multiplier(&self, name: &str) -> f64 {
        if name.ends_with(LOGITS_NAME) {
            self.config.router_lr_multiplier
        } else {
            1.0
        }
    }

    /// Each task's evaluation-mode routing weights (sigmoid, normalised per head as the forward
    /// pass does), averaged over heads and adapted projections.
    fn task_allocation(&self) -> anyhow::Result<Option<Vec<Vec<f64>>>> {
        let mut sum: Option<Tensor> = None;
        let mut layers = 0usize;
        for (_, layer) in self.layers.values() {
            let Some(logits) = layer.logits() else {
                return Ok(None);
            };
            let (tasks, splits, skills) = (logits.dim(0)?, layer.n_splits(), layer.n_skills());
            let z =
                candle_nn::ops::sigmoid(logits.as_tensor())?.reshape((tasks, splits, skills))?;
            let w = z.broadcast_div(&(z.sum_keepdim(2)? + 1e-12)?)?.mean(1)?;
            sum = Some(match sum {
                Some(s) => (s + w)?,
                None => w,
            });
            layers += 1;
        }
        let Some(sum) = sum else {
            return Ok(None);
        };
        let mean = (sum / layers as f64)?.to_dtype(candle_core::DType::F64)?;
        Ok(Some(mean.to_vec2::<f64>()?))
    }

    /// Skills and routers, also those a transfer froze.
    fn added_params(&self) -> usize {
        self.all_vars().count()
    }

    fn transfer(&mut self, transfer: Transfer) -> anyhow::Result<()> {
        let averaged = self.layers.values().any(|(_, l)| l.logits().is_none());
        if transfer == Transfer::Routing && averaged {
            anyhow::bail!(
                "poly: the skills were averaged (`average-skills`) already; there is no routing to transfer"
            );
        }
        let mut trainable = NamedVars::default();
        for (path, layer) in self.layers.values_mut() {
            let (splits, skills) = (layer.n_splits(), layer.n_skills());
            match transfer {
                Transfer::Routing => {
                    // MHR-z: the skills are frozen (no longer trainable); a fresh row for the new
                    // task, drawn as PEFT's router initialises its logits, is all that trains.
                    let logits = self.transfer_init.fork(path).uniform(
                        (1, splits * skills),
                        -LOGIT_INIT,
                        LOGIT_INIT,
                    )?;
                    let logits = Var::from_tensor(&logits.as_tensor().to_dtype(layer.a.dtype())?)?;
                    trainable.push(format!("{path}.{LOGITS_NAME}"), logits.clone());
                    layer.routing = Routing::Learned(logits);
                }
                Transfer::AverageSkills => {
                    // MHR-μ: the routing is dropped and each split's skills averaged into one
                    // LoRA-like pair, which then trains.
                    let a = Var::from_tensor(&layer.a.as_tensor().mean_keepdim(1)?)?;
                    let b = Var::from_tensor(&layer.b.as_tensor().mean_keepdim(1)?)?;
                    trainable.push(format!("{path}.{A_NAME}"), a.clone());
                    trainable.push(format!("{path}.{B_NAME}"), b.clone());
                    layer.a = a;
                    layer.b = b;
                    layer.routing = Routing::Fixed;
                }
            }
            layer.single_task = true;
        }
        self.config.n_tasks = 1;
        if transfer == Transfer::AverageSkills {
            self.config.n_skills = 1;
        }
        self.params = trainable;
        Ok(())
    }

    /// PEFT's Poly format (`peft_type: POLY`). A transferred adapter saves as a one-task Poly
    /// adapter (MHR-z: the frozen skills with the new task's logits; MHR-μ: one skill per split
    /// with zero logits), which loads back as an ordinary Poly/MHR with the same outputs.
    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let tensors = self.tensors()?;
        let naming = peft_format::ModuleNaming::for_tensors(&tensors);
        let config = peft_format::poly_config(&self.config, base_model, naming);
        peft_format::write_adapter(dir, &config, tensors, head)
    }
}
