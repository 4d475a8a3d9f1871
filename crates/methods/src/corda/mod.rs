//! CorDA: Context-oriented Decomposition Adaptation (Yang et al., 2024, "CorDA: Context-Oriented
//! Decomposition Adaptation of Large Language Models for Task-Aware Parameter-Efficient
//! Fine-tuning", NeurIPS, arXiv:2406.05223).
//!
//! A calibration step (see the crate docs) runs a few training batches and collects each adapted
//! projection's input covariance `C = XᵀX / n`. The weight is decomposed as `W C = U Σ Vᵀ`, i.e.
//! `W = U Σ Vᵀ C⁻¹`; `r` components become a LoRA pair (`B = U_r √Σ_r`,
//! `A = √Σ_r V_rᵀ C⁻¹ / scaling`) and the frozen weight is replaced by the residual
//! `W − scaling · B A`, so the model is unchanged at initialisation. The knowledge-preserved mode
//! adapts the `r` smallest components, the instruction-previewed mode the `r` largest.
//!
//! Saved in Hugging Face PEFT's LoRA format against the *original* weights, the conversion PEFT
//! applies to PiSSA/CorDA adapters: rank `2r` with `A' = [A; A₀]`, `B' = [B, −B₀]`, so that
//! `scaling · B' A' = W_trained − W`.

mod config;
mod decompose;

pub use config::{CordaConfig, CordaMode};
pub use decompose::{decompose, CordaInit};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};
use peftbench_backbones::{Backbone, BackboneInfo, Hooks, Linear, LinearSite};
use peftbench_core::{ForwardCtx, NamedVars, SeededInit};

use crate::lora::LoraLayer;
use crate::shira::to_f64_vec;
use crate::{
    parse_config, peft_format, Adaptation, CalibrationRequest, ClassifierHead, Method, MethodInfo,
    ParamDoc,
};

pub struct Corda;

/// Sum of `xᵀx` and the number of rows seen, per projection.
type Covariances = BTreeMap<(usize, LinearSite), (Tensor, usize)>;

pub struct CordaAdaptation {
    config: CordaConfig,
    layers: BTreeMap<(usize, LinearSite), LoraLayer>,
    /// The frozen residual weight replacing `W` after calibration.
    residuals: BTreeMap<(usize, LinearSite), Tensor>,
    /// The adapter's initial `(A₀, B₀)`, for saving against the original weights.
    initial: BTreeMap<(usize, LinearSite), (Tensor, Tensor)>,
    paths: BTreeMap<(usize, LinearSite), String>,
    weights: BTreeMap<(usize, LinearSite), Tensor>,
    covariances: RefCell<Covariances>,
    params: NamedVars,
}

impl CordaAdaptation {
    pub fn new(
        config: CordaConfig,
        backbone: &dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Self> {
        let mut this = Self {
            layers: BTreeMap::new(),
            residuals: BTreeMap::new(),
            initial: BTreeMap::new(),
            paths: BTreeMap::new(),
            weights: BTreeMap::new(),
            covariances: RefCell::new(BTreeMap::new()),
            params: NamedVars::default(),
            config,
        };
        for layer in 0..backbone.info().num_layers {
            for &site in &this.config.target_modules {
                let (inp, out) = backbone.linear_dims(site);
                let path = backbone.module_path(layer, site);
                // Zero until calibration decomposes the weight (the model is the frozen one meanwhile).
                let lora = LoraLayer::new(
                    inp,
                    out,
                    this.config.r,
                    this.config.scaling(),
                    0.0,
                    &init.fork(&path),
                )?;
                lora.a.set(&lora.a.zeros_like()?)?;
                this.params
                    .push(format!("{path}.lora_A.weight"), lora.a.clone());
                this.params
                    .push(format!("{path}.lora_B.weight"), lora.b.clone());
                this.weights
                    .insert((layer, site), backbone.linear(layer, site).weight.clone());
                this.layers.insert((layer, site), lora);
                this.paths.insert((layer, site), path);
            }
        }
        Ok(this)
    }

    /// Whether calibration has decomposed the weights.
    pub fn is_calibrated(&self) -> bool {
        !self.residuals.is_empty()
    }

    /// The frozen residual weight of a projection (after calibration).
    pub fn residual(&self, layer: usize, site: LinearSite) -> Option<&Tensor> {
        self.residuals.get(&(layer, site))
    }

    pub fn layer(&self, layer: usize, site: LinearSite) -> Option<&LoraLayer> {
        self.layers.get(&(layer, site))
    }
}

impl Hooks for CordaAdaptation {
    fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let key = (layer, site);
        let Some(lora) = self.layers.get(&key) else {
            return base.forward(x);
        };
        match self.residuals.get(&key) {
            Some(residual) => {
                let frozen = Linear {
                    weight: residual.clone(),
                    bias: base.bias.clone(),
                };
                lora.forward(x, &frozen, ctx)
            }
            None => {
                // Calibrating: record the input covariance, compute the frozen projection.
                let rows = x.detach().flatten_to(x.rank() - 2)?.to_dtype(DType::F64)?;
                let gram = rows.t()?.matmul(&rows)?;
                let mut covariances = self.covariances.borrow_mut();
                let entry = covariances.entry(key).or_insert((gram.zeros_like()?, 0));
                entry.0 = (&entry.0 + gram)?;
                entry.1 += rows.dim(0)?;
                base.forward(x)
            }
        }
    }
}

impl Adaptation for CordaAdaptation {
    fn trainable(&self) -> &NamedVars {
        &self.params
    }

    fn calibration(&self) -> Option<CalibrationRequest> {
        Some(CalibrationRequest {
            batches: self.config.calibration_batches,
            gradients: false,
        })
    }

    fn observe_calibration_batch(&self, _gradients: Option<&GradStore>) -> Result<()> {
        Ok(())
    }

    fn finish_calibration(&mut self) -> anyhow::Result<()> {
        let covariances = std::mem::take(&mut *self.covariances.borrow_mut());
        anyhow::ensure!(
            !covariances.is_empty(),
            "method `corda`: calibration saw no data"
        );
        for (key, (sum, rows)) in covariances {
            let weight = &self.weights[&key];
            let (out, inp) = weight.dims2()?;
            let covariance = to_f64_vec(&(sum / rows.max(1) as f64)?)?;
            let init = decompose(
                &to_f64_vec(weight)?,
                (out, inp),
                &covariance,
                self.config.r,
                self.config.scaling(),
                self.config.mode,
            );
            let (device, dtype) = (weight.device(), weight.dtype());
            let tensor = |v: Vec<f64>, shape: (usize, usize)| {
                Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
            };
            let lora = &self.layers[&key];
            lora.a.set(&tensor(init.a, (self.config.r, inp))?)?;
            lora.b.set(&tensor(init.b, (out, self.config.r))?)?;
            self.initial.insert(
                key,
                (lora.a.as_tensor().copy()?, lora.b.as_tensor().copy()?),
            );
            self.residuals
                .insert(key, tensor(init.residual, (out, inp))?);
        }
        Ok(())
    }

    fn save(
        &self,
        dir: &Path,
        head: &ClassifierHead,
        base_model: &str,
    ) -> anyhow::Result<Vec<PathBuf>> {
        anyhow::ensure!(
            self.is_calibrated(),
            "method `corda`: the adapter was never calibrated"
        );
        let c = &self.config;
        let mut config = peft_format::base_config("LORA", base_model);
        let naming = self
            .paths
            .values()
            .next()
            .map_or(peft_format::ModuleNaming::Checkpoint, |p| {
                peft_format::ModuleNaming::for_module_path(p)
            });
        // Rank 2r with the same scaling: alpha' / 2r = alpha / r.
        for (k, v) in [
            ("r", serde_json::json!(2 * c.r)),
            ("lora_alpha", serde_json::json!(2.0 * c.alpha)),
            ("lora_dropout", serde_json::json!(0.0)),
            ("use_rslora", serde_json::json!(false)),
            ("use_dora", serde_json::json!(false)),
            ("bias", serde_json::json!("none")),
            ("fan_in_fan_out", serde_json::json!(false)),
            ("init_lora_weights", serde_json::json!(true)),
            (
                "target_modules",
                peft_format::target_modules_value(&c.target_modules, naming),
            ),
        ] {
            config.insert(k.into(), v);
        }
        let mut tensors = BTreeMap::new();
        for (key, lora) in &self.layers {
            let (a0, b0) = &self.initial[key];
            let path = &self.paths[key];
            tensors.insert(
                format!("{path}.lora_A.weight"),
                Tensor::cat(&[lora.a.as_tensor(), a0], 0)?,
            );
            tensors.insert(
                format!("{path}.lora_B.weight"),
                Tensor::cat(&[lora.b.as_tensor(), &b0.neg()?], 1)?,
            );
        }
        peft_format::write_adapter(dir, &serde_json::Value::Object(config), tensors, head)
    }
}

impl Method for Corda {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "corda",
            summary: "CorDA: LoRA initialised from the SVD of W·C (C = input covariance of a few batches); kpm or ipm",
            paper: "Yang et al., CorDA, NeurIPS 2024 (arXiv:2406.05223)",
            params: &[
                ParamDoc { name: "r", default: "8", doc: "rank of the adapted components (1..=smaller width)" },
                ParamDoc { name: "alpha", default: "8", doc: "scale numerator: the delta is scaled alpha/r" },
                ParamDoc { name: "mode", default: "ipm", doc: "ipm (adapt the largest components) or kpm (the smallest)" },
                ParamDoc { name: "target_modules", default: "[query, key, value, attention_output, fc1, fc2]", doc: "projections to adapt" },
                ParamDoc { name: "calibration_batches", default: "4", doc: "training batches forming the covariance" },
            ],
        }
    }

    fn validate(&self, params: &serde_json::Value) -> std::result::Result<(), String> {
        parse_config::<CordaConfig>("corda", params)?.check()
    }

    fn check_backbone(
        &self,
        params: &serde_json::Value,
        info: &BackboneInfo,
    ) -> std::result::Result<(), String> {
        let config = parse_config::<CordaConfig>("corda", params)?;
        crate::check_rank_widths("corda", "r", config.r, &config.target_modules, info)
    }

    fn attach(
        &self,
        params: &serde_json::Value,
        backbone: &mut dyn Backbone,
        init: &SeededInit,
    ) -> anyhow::Result<Box<dyn Adaptation>> {
        let config: CordaConfig = parse_config("corda", params).map_err(anyhow::Error::msg)?;
        config.check().map_err(anyhow::Error::msg)?;
        Ok(Box::new(CordaAdaptation::new(config, backbone, init)?))
    }
}
