//! Class names to ids, in a fixed order so that ids do not depend on file order.

use std::collections::BTreeMap;

/// The classes of a task, sorted by name (or in the order a suite lists them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelSet {
    names: Vec<String>,
}

impl LabelSet {
    /// Classes in the given order (a suite's explicit `labels:`).
    pub fn new(names: Vec<String>) -> Self {
        Self { names }
    }

    /// The distinct labels of `labels`, sorted.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = labels.into_iter().map(str::to_string).collect();
        names.sort();
        names.dedup();
        Self { names }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.names.iter().position(|n| n == name).map(|i| i as u32)
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    /// Label name -> id, for reports.
    pub fn to_map(&self) -> BTreeMap<String, u32> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect()
    }
}
