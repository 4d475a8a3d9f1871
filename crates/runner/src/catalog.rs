//! The method registry seen through the suite crate's catalog interface.

use peftbench_methods::{registry, Transfer};
use peftbench_suite::{MethodCatalog, TransferMode};

/// Validates suite method entries against [`peftbench_methods::registry`].
pub struct RegistryCatalog;

impl MethodCatalog for RegistryCatalog {
    fn method_names(&self) -> Vec<String> {
        registry::method_names()
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn validate_params(&self, method: &str, params: &serde_json::Value) -> Result<(), String> {
        registry::find_method(method)?.validate(params)
    }

    fn transfer_modes(&self, method: &str) -> Vec<TransferMode> {
        let Ok(found) = registry::find_method(method) else {
            return Vec::new();
        };
        found
            .transfers()
            .iter()
            .map(|t| match t {
                Transfer::Routing => TransferMode::Routing,
                Transfer::AverageSkills => TransferMode::AverageSkills,
            })
            .collect()
    }

    fn takes_task_count(&self, method: &str) -> bool {
        registry::find_method(method)
            .is_ok_and(|m| m.info().params.iter().any(|p| p.name == "n_tasks"))
    }
}
