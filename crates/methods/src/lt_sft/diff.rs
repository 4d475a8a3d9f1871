//! A sparse difference of model weights: per tensor, ascending flat positions and the values added
//! there. Differences compose by addition and are removed by subtraction (Ansell et al.'s
//! composable SFT), and are stored in a sparse safetensors file: `<name>.indices` (u32),
//! `<name>.values` (the model dtype) and `<name>.shape` (u32 dims).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use peftbench_backbones::Backbone;

/// One tensor's sparse difference.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseEntries {
    pub shape: Vec<usize>,
    /// Flat row-major positions, strictly ascending.
    pub indices: Vec<u32>,
    pub values: Vec<f64>,
}

/// A sparse difference of several tensors, by checkpoint name (`<module>.weight`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseDiff {
    pub tensors: BTreeMap<String, SparseEntries>,
    /// dtype the values are stored in.
    pub dtype: Option<DType>,
}

impl SparseDiff {
    /// Non-zero entries in all tensors.
    pub fn nnz(&self) -> usize {
        self.tensors.values().map(|t| t.indices.len()).sum()
    }

    /// `self + sign * other`, merging positions (a position in both gets the sum of values).
    fn combine(&self, other: &SparseDiff, sign: f64) -> anyhow::Result<SparseDiff> {
        let mut out = self.clone();
        for (name, b) in &other.tensors {
            let Some(a) = self.tensors.get(name) else {
                let negated = SparseEntries {
                    values: b.values.iter().map(|v| sign * v).collect(),
                    ..b.clone()
                };
                out.tensors.insert(name.clone(), negated);
                continue;
            };
            anyhow::ensure!(
                a.shape == b.shape,
                "sparse diff `{name}`: shapes {:?} and {:?} differ",
                a.shape,
                b.shape
            );
            let (mut i, mut j) = (0, 0);
            let mut merged = SparseEntries {
                shape: a.shape.clone(),
                indices: Vec::new(),
                values: Vec::new(),
            };
            while i < a.indices.len() || j < b.indices.len() {
                let ai = a.indices.get(i).copied().unwrap_or(u32::MAX);
                let bj = b.indices.get(j).copied().unwrap_or(u32::MAX);
                let (index, value) = if ai < bj {
                    i += 1;
                    (ai, a.values[i - 1])
                } else if bj < ai {
                    j += 1;
                    (bj, sign * b.values[j - 1])
                } else {
                    i += 1;
                    j += 1;
                    (ai, a.values[i - 1] + sign * b.values[j - 1])
                };
                merged.indices.push(index);
                merged.values.push(value);
            }
            out.tensors.insert(name.clone(), merged);
        }
        out.dtype = self.dtype.or(other.dtype);
        Ok(out)
    }

    /// The composition of two differences: `self + other`.
    pub fn add(&self, other: &SparseDiff) -> anyhow::Result<SparseDiff> {
        self.combine(other, 1.0)
    }

    /// `self - other`: removes a composed difference again.
    pub fn sub(&self, other: &SparseDiff) -> anyhow::Result<SparseDiff> {
        self.combine(other, -1.0)
    }

    /// Adds (`sign` 1) or subtracts (`sign` -1) this difference to the backbone's weights.
    pub fn apply_to(&self, backbone: &mut dyn Backbone, sign: f64) -> anyhow::Result<()> {
        let mut seen = 0;
        backbone.visit_params(&mut |name, t| {
            let Some(entries) = self.tensors.get(name) else {
                return Ok(());
            };
            seen += 1;
            let n = entries.indices.len();
            let indices = Tensor::from_slice(&entries.indices, n, t.device())?;
            let values = (Tensor::from_slice(&entries.values, n, t.device())? * sign)?
                .to_dtype(t.dtype())?;
            *t = t
                .flatten_all()?
                .index_add(&indices, &values, 0)?
                .reshape(t.shape())?;
            Ok(())
        })?;
        anyhow::ensure!(
            seen == self.tensors.len(),
            "sparse diff names tensors the backbone does not have"
        );
        Ok(())
    }

    /// Writes the sparse safetensors file.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dtype = self.dtype.unwrap_or(DType::F32);
        let mut all = HashMap::new();
        for (name, e) in &self.tensors {
            let n = e.indices.len();
            all.insert(
                format!("{name}.indices"),
                Tensor::from_slice(&e.indices, n, &Device::Cpu)?,
            );
            all.insert(
                format!("{name}.values"),
                Tensor::from_slice(&e.values, n, &Device::Cpu)?.to_dtype(dtype)?,
            );
            let dims: Vec<u32> = e.shape.iter().map(|&d| d as u32).collect();
            all.insert(
                format!("{name}.shape"),
                Tensor::from_slice(&dims, dims.len(), &Device::Cpu)?,
            );
        }
        candle_core::safetensors::save(&all, path)?;
        Ok(())
    }

    /// Reads a file written by [`SparseDiff::save`].
    pub fn load(path: &Path) -> anyhow::Result<SparseDiff> {
        let all = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut diff = SparseDiff::default();
        for (key, values) in &all {
            let Some(name) = key.strip_suffix(".values") else {
                continue;
            };
            let get = |suffix: &str| {
                all.get(&format!("{name}.{suffix}")).ok_or_else(|| {
                    anyhow::anyhow!("{}: `{name}` has no `{suffix}`", path.display())
                })
            };
            diff.dtype = Some(values.dtype());
            diff.tensors.insert(
                name.to_string(),
                SparseEntries {
                    shape: get("shape")?
                        .to_vec1::<u32>()?
                        .into_iter()
                        .map(|d| d as usize)
                        .collect(),
                    indices: get("indices")?.to_vec1()?,
                    values: values.to_dtype(DType::F64)?.to_vec1()?,
                },
            );
        }
        Ok(diff)
    }
}
