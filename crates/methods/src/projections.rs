//! The shared plumbing of methods that adapt chosen linear projections (LoRA, DoRA, Hydra, IA3,
//! Bi-LoRA): one adapter per (block, targeted projection), built, named, dispatched to in the
//! forward pass and merged the same way for all of them.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, Var};
use peftbench_backbones::{Backbone, Linear, LinearSite, Sublayer};
use peftbench_core::{NamedVars, SeededInit};

/// The adapters of one method, by (block, site), each with its projection's module path.
pub(crate) struct ProjectionAdapters<T> {
    adapters: BTreeMap<(usize, LinearSite), (String, T)>,
}

impl<T> ProjectionAdapters<T> {
    /// One adapter per block and site of `sites`. `make(site, base, init)` builds it from the
    /// frozen projection, with `init` forked by the module path, and returns its trainable parameters
    /// by name; they are added to `params` as `<module path>.<name>` (PEFT's key layout).
    pub fn build(
        backbone: &dyn Backbone,
        sites: &[LinearSite],
        init: &SeededInit,
        params: &mut NamedVars,
        make: impl FnMut(LinearSite, &Linear, &SeededInit) -> Result<(T, Vec<(&'static str, Var)>)>,
    ) -> Result<Self> {
        Self::build_in_layers(backbone, None, sites, init, params, make)
    }

    /// [`ProjectionAdapters::build`] in the blocks `layers` only (`None` = every block). An
    /// adapter's initial values depend on its module path alone, so they do not change with the
    /// choice of blocks.
    pub fn build_in_layers(
        backbone: &dyn Backbone,
        layers: Option<&[usize]>,
        sites: &[LinearSite],
        init: &SeededInit,
        params: &mut NamedVars,
        mut make: impl FnMut(LinearSite, &Linear, &SeededInit) -> Result<(T, Vec<(&'static str, Var)>)>,
    ) -> Result<Self> {
        backbone
            .info()
            .check_sites(sites)
            .map_err(candle_core::Error::Msg)?;
        let num_layers = backbone.info().num_layers;
        if let Some(&layer) = layers.and_then(|l| l.iter().find(|&&l| l >= num_layers)) {
            candle_core::bail!("block {layer} does not exist: the backbone has {num_layers}");
        }
        let mut adapters = BTreeMap::new();
        for layer in (0..num_layers).filter(|l| layers.is_none_or(|set| set.contains(l))) {
            for &site in sites.iter().filter(|&&s| backbone.has_linear(layer, s)) {
                let path = backbone.module_path(layer, site);
                let (adapter, vars) = make(site, backbone.linear(layer, site), &init.fork(&path))?;
                for (name, var) in vars {
                    params.push(format!("{path}.{name}"), var);
                }
                adapters.insert((layer, site), (path, adapter));
            }
        }
        Ok(Self { adapters })
    }

    /// The projection through its adapter (`forward(adapter)`), or the frozen projection where
    /// the method has none.
    pub fn linear(
        &self,
        layer: usize,
        site: LinearSite,
        x: &Tensor,
        base: &Linear,
        forward: impl FnOnce(&T) -> Result<Tensor>,
    ) -> Result<Tensor> {
        match self.adapters.get(&(layer, site)) {
            Some((_, adapter)) => forward(adapter),
            None => base.forward(x),
        }
    }

    /// Whether any projection of branch `kind` in block `layer` has an adapter
    /// ([`peftbench_backbones::Hooks::adapts_inside`] for methods that hook projections only).
    pub fn adapts_inside(&self, layer: usize, kind: Sublayer) -> bool {
        kind.sites()
            .iter()
            .any(|&site| self.adapters.contains_key(&(layer, site)))
    }

    /// The adapter of projection `site` in block `layer`, if it has one.
    pub fn get(&self, layer: usize, site: LinearSite) -> Option<&T> {
        self.adapters
            .get(&(layer, site))
            .map(|(_, adapter)| adapter)
    }

    /// Blocks below the lowest adapted one: there the projections are the frozen ones.
    pub fn untouched_blocks(&self) -> usize {
        self.adapters.keys().next().map_or(0, |&(layer, _)| layer)
    }

    /// `(block, site, module path, adapter)` in block-then-site order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, LinearSite, &str, &T)> {
        self.adapters
            .iter()
            .map(|(&(layer, site), (path, adapter))| (layer, site, path.as_str(), adapter))
    }

    /// The backbone's new tensors once every adapter is folded in: `merged(base, adapter)` gives
    /// `(parameter name, value)` pairs, e.g. `("weight", W')`, keyed `<module path>.<name>` for
    /// [`crate::replace_pretrained`].
    pub fn merged(
        &self,
        backbone: &dyn Backbone,
        mut merged: impl FnMut(&Linear, &T) -> Result<Vec<(&'static str, Tensor)>>,
    ) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (layer, site, path, adapter) in self.iter() {
            for (name, value) in merged(backbone.linear(layer, site), adapter)? {
                out.insert(format!("{path}.{name}"), value);
            }
        }
        Ok(out)
    }
}
