//! The pre-norm encoder layer that CLIP and SigLIP share (`CLIPEncoderLayer`,
//! `SiglipEncoderLayer`: the same weights under the same names, `self_attn.{q,k,v,out}_proj`,
//! `mlp.fc{1,2}`, `layer_norm{1,2}`, every projection with a bias): how it is loaded, named and
//! visited. Each model runs it in its own forward pass (SigLIP's calls the prompt sites, CLIP's
//! towers do not).

use candle_core::{Result, Tensor};

use crate::encoder::Norm;
use crate::sites::{Linear, LinearSite};

/// Looks a tensor up by its checkpoint name, checking its shape.
pub(crate) type Getter<'a> = dyn Fn(&str, &[usize]) -> Result<Tensor> + 'a;

/// Module path of a projection within a layer; `family` names the model in the error for a
/// cross-attention site, which these encoders do not have.
pub(crate) fn site_suffix(site: LinearSite, family: &str) -> &'static str {
    match site {
        LinearSite::Query => "self_attn.q_proj",
        LinearSite::Key => "self_attn.k_proj",
        LinearSite::Value => "self_attn.v_proj",
        LinearSite::AttentionOutput => "self_attn.out_proj",
        LinearSite::Fc1 => "mlp.fc1",
        LinearSite::Fc2 => "mlp.fc2",
        cross => crate::sites::no_cross_attention(family, cross),
    }
}

/// A projection `name.{weight,bias}` of shape `[out, inp]`.
pub(crate) fn linear(get: &Getter<'_>, name: &str, out: usize, inp: usize) -> Result<Linear> {
    Ok(Linear {
        weight: get(&format!("{name}.weight"), &[out, inp])?,
        bias: Some(get(&format!("{name}.bias"), &[out])?),
    })
}

/// A layer norm `name.{weight,bias}` of `width`.
pub(crate) fn norm(get: &Getter<'_>, name: &str, width: usize, eps: f64) -> Result<Norm> {
    Ok(Norm {
        weight: get(&format!("{name}.weight"), &[width])?,
        bias: get(&format!("{name}.bias"), &[width])?,
        eps,
    })
}

pub(crate) fn visit_linear(
    name: &str,
    lin: &mut Linear,
    f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
) -> Result<()> {
    f(&format!("{name}.weight"), &mut lin.weight)?;
    match lin.bias.as_mut() {
        Some(bias) => f(&format!("{name}.bias"), bias),
        None => Ok(()),
    }
}

pub(crate) fn visit_norm(
    name: &str,
    norm: &mut Norm,
    f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
) -> Result<()> {
    f(&format!("{name}.weight"), &mut norm.weight)?;
    f(&format!("{name}.bias"), &mut norm.bias)
}

/// One layer's weights.
#[derive(Debug, Clone)]
pub(crate) struct PreNormLayer {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub fc1: Linear,
    pub fc2: Linear,
    pub layer_norm1: Norm,
    pub layer_norm2: Norm,
    /// `CLIP` or `SigLIP`, for messages.
    family: &'static str,
}

impl PreNormLayer {
    /// The layer under module path `base`: width `hidden`, MLP width `inner`.
    pub fn new(
        get: &Getter<'_>,
        base: &str,
        hidden: usize,
        inner: usize,
        eps: f64,
        family: &'static str,
    ) -> Result<Self> {
        let site = |s: LinearSite| format!("{base}.{}", site_suffix(s, family));
        let (d, f) = (hidden, inner);
        Ok(Self {
            q_proj: linear(get, &site(LinearSite::Query), d, d)?,
            k_proj: linear(get, &site(LinearSite::Key), d, d)?,
            v_proj: linear(get, &site(LinearSite::Value), d, d)?,
            out_proj: linear(get, &site(LinearSite::AttentionOutput), d, d)?,
            fc1: linear(get, &site(LinearSite::Fc1), f, d)?,
            fc2: linear(get, &site(LinearSite::Fc2), d, f)?,
            layer_norm1: norm(get, &format!("{base}.layer_norm1"), d, eps)?,
            layer_norm2: norm(get, &format!("{base}.layer_norm2"), d, eps)?,
            family,
        })
    }

    pub fn linear(&self, site: LinearSite) -> &Linear {
        match site {
            LinearSite::Query => &self.q_proj,
            LinearSite::Key => &self.k_proj,
            LinearSite::Value => &self.v_proj,
            LinearSite::AttentionOutput => &self.out_proj,
            LinearSite::Fc1 => &self.fc1,
            LinearSite::Fc2 => &self.fc2,
            cross => crate::sites::no_cross_attention(self.family, cross),
        }
    }

    /// Every tensor under its name below `base`.
    pub fn visit(
        &mut self,
        base: &str,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        for site in LinearSite::ALL {
            let name = format!("{base}.{}", site_suffix(site, self.family));
            let lin = match site {
                LinearSite::Query => &mut self.q_proj,
                LinearSite::Key => &mut self.k_proj,
                LinearSite::Value => &mut self.v_proj,
                LinearSite::AttentionOutput => &mut self.out_proj,
                LinearSite::Fc1 => &mut self.fc1,
                LinearSite::Fc2 => &mut self.fc2,
                cross => crate::sites::no_cross_attention(self.family, cross),
            };
            visit_linear(&name, lin, f)?;
        }
        visit_norm(&format!("{base}.layer_norm1"), &mut self.layer_norm1, f)?;
        visit_norm(&format!("{base}.layer_norm2"), &mut self.layer_norm2, f)
    }
}
