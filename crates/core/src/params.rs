//! Named trainable parameters: what an optimizer updates, what a checkpoint saves, what is counted.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Result, Tensor, Var};

/// One trainable tensor with its checkpoint name (Hugging Face module path + `.weight` etc.).
#[derive(Clone)]
pub struct NamedVar {
    pub name: String,
    pub var: Var,
}

/// An ordered list of trainable parameters. Order is the creation order, which is deterministic,
/// so optimizer state and checkpoints line up across runs.
#[derive(Clone, Default)]
pub struct NamedVars(pub Vec<NamedVar>);

impl NamedVars {
    pub fn push(&mut self, name: impl Into<String>, var: Var) {
        self.0.push(NamedVar {
            name: name.into(),
            var,
        });
    }

    pub fn extend(&mut self, other: NamedVars) {
        self.0.extend(other.0);
    }

    pub fn iter(&self) -> impl Iterator<Item = &NamedVar> {
        self.0.iter()
    }

    pub fn vars(&self) -> Vec<Var> {
        self.0.iter().map(|p| p.var.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of trainable scalars.
    pub fn count(&self) -> usize {
        self.0.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Snapshot of the current values, by name (sorted: stable on disk). A deep copy: `Var::set`
    /// writes in place, so a detached view would change with the next optimizer step.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.0
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.var
                        .as_tensor()
                        .detach()
                        .copy()
                        .expect("copy of a live tensor"),
                )
            })
            .collect()
    }

    /// Overwrites values from `tensors` by name; every parameter must be present with its shape.
    pub fn load(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for p in &self.0 {
            let t = tensors
                .get(&p.name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor `{}`", p.name)))?;
            p.var
                .set(&t.to_device(p.var.device())?.to_dtype(p.var.dtype())?)?;
        }
        Ok(())
    }

    /// Writes the parameters as safetensors, names as given.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        // safetensors orders tensors itself (by dtype, then name), so the file is deterministic.
        let tensors: std::collections::HashMap<String, Tensor> =
            self.tensors().into_iter().collect();
        candle_core::safetensors::save(&tensors, path)
    }
}
