//! SHiRA: Sparse High-Rank Adapters (Bhardwaj et al., 2024, "Sparse High Rank Adapters",
//! NeurIPS, arXiv:2406.13175). A fixed mask of 1-2% of each adapted weight is trained directly;
//! everything else stays frozen. The mask is random, by weight magnitude, or by gradient magnitude
//! accumulated over a few training batches (a calibration step, see the crate docs).
//!
//! `W' = W + scatter(values)`: the values start at zero, so the model is unchanged at
//! initialisation, and the update is always exactly as sparse as the mask. Because the update is
//! sparse, switching adapters on fused weights is a scatter of `k` values
//! ([`scatter_in_place`]), not a dense rewrite (`benches/adapter_switch.rs`). Saved in Hugging Face
//! PEFT's SHiRA format: `<module>.shira_weight` `[k]` and `<module>.shira_indices` `[2, k]` (i32).

mod config;
mod layer;

pub use config::{ShiraConfig, ShiraMask};
pub use layer::{scatter_in_place, to_f64_vec, top_k_positions, SparseDelta};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, Hooks, Linear, LinearSite};
use peftbench_core::{ops, ForwardCtx, NamedVars, SeededInit};

use crate::{
    parse_config, peft_format, Adaptation, CalibrationRequest, ClassifierHead, Method, MethodInfo,
    ParamDoc,
};

pub struct Shira;

/// Dense zero probes whose gradients equal `dL/dW` during gradient-mask calibration, and the
/// accumulated magnitudes.
struct GradientProbe {
    probe: Var,
    magnitude: Vec<f64>,
}

/// SHiRA attached to a backbone.
pub struct ShiraAdaptation {
    config: ShiraConfig,
    /// Per (block, site): the sparse update; `None` until the gradient mask is known.
    deltas: BTreeMap<(usize, LinearSite), Option<SparseDelta>>,
    paths: BTreeMap<(usize, LinearSite), String>,
    /// Entries per adapted projection.
    entries: BTreeMap<(usize, LinearSite), usize>,
    probes: RefCell<BTreeMap<(usize, LinearSite), GradientProbe>>,
    params: NamedVars,
}

impl ShiraAdaptation {
    pub fn new(
        config: ShiraConfig,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        let mut this = Self {
            deltas: BTreeMap::new(),
            paths: BTreeMap::new(),
            entries: BTreeMap::new(),
            probes: RefCell::new(BTreeMap::new()),
            params: NamedVars::default(),
            config,
        };
        for layer in 0..backbone.info().num_layers {
            for &site in &this.config.target_modules {
                let (inp, out) = backbone.linear_dims(site);
                let k = this.config.entries(inp, out).map_err(anyhow::Error::msg)?;
                let path = backbone.module_path(layer, site);
                let weight = &backbone.linear(layer, site).weight;
                let delta = match this.config.mask {
                    ShiraMask::Random => {
                        let noise = init
                            .fork(&format!("{}/{path}", this.config.random_seed))
                            .uniform((out, inp), 0.0, 1.0)?;
                        Some(top_k_positions(&to_f64_vec(noise.as_tensor())?, k))
                    }
                    ShiraMask::WeightMagnitude => {
                        let magnitude: Vec<f64> =
                            to_f64_vec(weight)?.iter().map(|w| w.abs()).collect();
                        Some(top_k_positions(&magnitude, k))
                    }
                    ShiraMask::GradientMagnitude => {
                        this.probes.borrow_mut().insert(
                            (layer, site),
                            GradientProbe {
                                probe: Var::zeros((out, inp), weight.dtype(), weight.device())?,
                                magnitude: vec![0.0; out * inp],
                            },
                        );
                        None
                    }
                }
                .map(|positions| SparseDelta::zeros((out, inp), &positions, weight))
                .transpose()?;
                this.entries.insert((layer, site), k);
                this.paths.insert((layer, site), path);
                this.deltas.insert((layer, site), delta);
            }
        }
        this.collect_params();
        Ok(this)
    }

    fn collect_params(&mut self) {
        self.params = NamedVars::default();
        for (key, delta) in &self.deltas {
            if let Some(delta) = delta {
                self.params.push(
                    format!("{}.shira_weight", self.paths[key]),
                    delta.values.clone(),
                );
            }
        }
    }

    /// `[out, in]` of the projection at `key`.
    fn shape_of(&self, key: &(usize, LinearSite)) -> Result<(usize, usize)> {
        match (self.deltas.get(key), self.probes.borrow().get(key)) {
            (Some(Some(delta)), _) => Ok(delta.shape),
            (_, Some(probe)) => probe.probe.dims2(),
            _ => candle_core::bail!("no SHiRA update at {key:?}"),
        }
    }

    /// A tensor of the adapter's dtype and device.
    fn like_tensor(&self) -> Result<Tensor> {
        if let Some(delta) = self.deltas.values().flatten().next() {
            return Ok(delta.values.as_tensor().clone());
        }
        match self.probes.borrow().values().next() {
            Some(probe) => Ok(probe.probe.as_tensor().clone()),
            None => candle_core::bail!("SHiRA adapts no projection"),
        }
    }

    /// The sparse update of each adapted projection, by module path.
    pub fn deltas(&self) -> impl Iterator<Item = (&str, &SparseDelta)> {
        self.deltas
            .iter()
            .filter_map(|(key, d)| d.as_ref().map(|d| (self.paths[key].as_str(), d)))
    }

    /// Folds every update into the backbone's weights (`W += scatter(values)`).
    pub fn merge_into(&self, backbone: &mut dyn Backbone) -> Result<()> {
        let mut merged = BTreeMap::new();
        for (&(layer, site), delta) in &self.deltas {
            if let Some(delta) = delta {
                merged.insert(
                    format!("{}.weight", self.paths[&(layer, site)]),
                    delta.apply(&backbone.linear(layer, site).weight)?.detach(),
                );
            }
        }
        crate::replace_pretrained(backbone, merged)
    }
}

impl Hooks for ShiraAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        _ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        if let Some(p) = self.probes.borrow().get(&(layer, site)) {
            let weight = (&base.weight + p.probe.as_tensor())?;
            return ops::linear(x, &weight, base.bias.as_ref());
        }
        match self.deltas.get(&(layer, site)) {
            Some(Some(delta)) => delta.forward(x, base),
            _ => base.forward(x),
        }
    }
}

impl Adaptation for ShiraAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn calibration(&self) -> Option<CalibrationRequest> {
        (self.config.mask == ShiraMask::GradientMagnitude).then_some(CalibrationRequest {
            batches: self.config.calibration_batches,
            gradients: true,
        })
    }

    /// Takes the mask from the saved `[2, k]` row/column indices (any order, as PEFT saves them),
    /// so an adapter trained elsewhere keeps its exact entries.
    fn restore(
        &mut self,
        _dir: &Path,
        tensors: &BTreeMap<String, Tensor>,
    ) -> anyhow::Result<crate::Restored> {
        let mut used = Vec::new();
        for (key, path) in &self.paths {
            let name = format!("{path}.shira_indices");
            let Some(coords) = tensors.get(&name) else {
                continue;
            };
            let (out, inp) = self.shape_of(key)?;
            let rows_cols: Vec<Vec<i64>> = coords.to_dtype(candle_core::DType::I64)?.to_vec2()?;
            anyhow::ensure!(
                rows_cols.len() == 2,
                "`{name}` has shape {:?}; expected [2, k]",
                coords.dims()
            );
            let positions = rows_cols[0]
                .iter()
                .zip(&rows_cols[1])
                .map(|(&r, &c)| {
                    anyhow::ensure!(
                        (0..out as i64).contains(&r) && (0..inp as i64).contains(&c),
                        "`{name}`: entry ({r}, {c}) is outside the {out}x{inp} weight"
                    );
                    Ok((r as usize * inp + c as usize) as u32)
                })
                .collect::<anyhow::Result<Vec<u32>>>()?;
            let like = self.like_tensor()?;
            self.deltas.insert(
                *key,
                Some(SparseDelta::zeros((out, inp), &positions, &like)?),
            );
            used.push(name);
        }
        self.probes.borrow_mut().clear();
        self.collect_params();
        Ok(crate::Restored {
            used,
            set: Vec::new(),
        })
    }

    fn observe_calibration_batch(&self, gradients: Option<&GradStore>) -> Result<()> {
        let Some(grads) = gradients else {
            return Ok(());
        };
        for probe in self.probes.borrow_mut().values_mut() {
            if let Some(g) = grads.get(&probe.probe) {
                for (m, g) in probe.magnitude.iter_mut().zip(to_f64_vec(g)?) {
                    *m += g.abs();
                }
            }
        }
        Ok(())
    }

    fn finish_calibration(&mut self) -> anyhow::Result<()> {
        let probes = std::mem::take(&mut *self.probes.borrow_mut());
        for (key, probe) in probes {
            let positions = top_k_positions(&probe.magnitude, self.entries[&key]);
            let (out, inp) = probe.probe.dims2()?;
            self.deltas.insert(
                key,
                Some(SparseDelta::zeros(
                    (out, inp),
                    &positions,
                    probe.probe.as_tensor(),
                )?),
            );
        }
        self.collect_params();
        Ok(())
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        anyhow::ensure!(
            self.probes.borrow().is_empty(),
            "method `shira`: the gradient mask was never calibrated"
        );
        let mut config = peft_format::base_config("SHIRA", base_model);
        let c = &self.config;
        let mask_type = match c.mask {
            ShiraMask::Random => "random",
            ShiraMask::WeightMagnitude => "weight_magnitude",
            ShiraMask::GradientMagnitude => "gradient_magnitude",
        };
        let naming = self
            .paths
            .values()
            .next()
            .map_or(peft_format::ModuleNaming::Checkpoint, |p| {
                peft_format::ModuleNaming::for_module_path(p)
            });
        let targets = peft_format::target_modules_value(&c.target_modules, naming);
        for (k, v) in [
            ("r", serde_json::json!(c.r)),
            ("mask_type", serde_json::json!(mask_type)),
            ("random_seed", serde_json::json!(c.random_seed)),
            ("fan_in_fan_out", serde_json::json!(false)),
            ("init_weights", serde_json::json!(true)),
            ("target_modules", targets),
            ("peftbench_sparsity", serde_json::json!(c.sparsity)),
        ] {
            config.insert(k.into(), v);
        }
        let mut tensors = BTreeMap::new();
        for (path, delta) in self.deltas() {
            tensors.insert(
                format!("{path}.shira_weight"),
                delta.values.as_tensor().copy()?,
            );
            tensors.insert(format!("{path}.shira_indices"), delta.coordinates()?);
        }
        peft_format::write_adapter(dir, &serde_json::Value::Object(config), tensors, head)
    }
}

impl Method for Shira {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "shira",
            summary: "SHiRA: trains a fixed sparse mask (1-2%) of the base weights; random, weight- or gradient-magnitude mask",
            paper: "Bhardwaj et al., Sparse High Rank Adapters, NeurIPS 2024 (arXiv:2406.13175)",
            params: &[
                ParamDoc { name: "sparsity", default: "0.01", doc: "fraction of each adapted weight trained, in (0, 1)" },
                ParamDoc { name: "r", default: "null", doc: "PEFT budget r*(in+out) entries per weight instead of sparsity" },
                ParamDoc { name: "mask", default: "random", doc: "random, weight_magnitude or gradient_magnitude" },
                ParamDoc { name: "target_modules", default: "[query, key, value, attention_output, fc1, fc2]", doc: "projections to adapt" },
                ParamDoc { name: "random_seed", default: "0", doc: "seed of the random mask" },
                ParamDoc { name: "calibration_batches", default: "4", doc: "training batches ranking entries for the gradient mask" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<ShiraConfig>("shira", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &peftbench_backbones::BackboneInfo,
    ) -> std::result::Result<(), String> {
        let config = parse_config::<ShiraConfig>("shira", params)?;
        crate::check_sites("shira", &config.target_modules, info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: ShiraConfig = parse_config("shira", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(ShiraAdaptation::new(config, backbone, init)?))
    }
}
