//! The method registry seen through the suite crate's catalog interface.

use peftbench_methods::registry;
use peftbench_suite::MethodCatalog;

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

    fn takes_task_count(&self, method: &str) -> bool {
        registry::find_method(method)
            .is_ok_and(|m| m.info().params.iter().any(|p| p.name == "n_tasks"))
    }
}
