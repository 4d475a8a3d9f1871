//! Suite files: the YAML schema of a benchmark suite, its validation (errors name the file and
//! line), and its expansion into [`RunSpec`]s.
//!
//! A suite names a backbone, a data set layout, a preprocessing pipeline, a protocol (splits and
//! model-selection rule), a recipe, seeds, tasks (optionally grouped) and methods (with fixed
//! parameters, grid axes and recipe overrides), plus optional published numbers. See
//! [`Suite`] and the structs it is made of for every field; `suites/vtab1k.yaml` is a complete
//! example.
//!
//! ```text
//! let suite = load_suite("vtab1k", Path::new("suites"), &catalog)?;
//! let runs = plan(&suite, &PlanOptions { filter: vec!["task=cifar".into()], ..Default::default() }, &catalog)?;
//! ```
//!
//! This crate depends on no other peftbench crate: method names and parameters are checked through
//! the [`MethodCatalog`] trait, which the methods crate implements.

mod error;
mod load;
mod plan;
mod schema;

pub use error::SuiteError;
pub use load::{list_suites, load_suite, parse_suite};
pub use plan::{canonical_json, plan, point_label, PlanOptions, RunSpec, Shard};
pub use schema::*;

/// The registered PEFT methods, as seen by suite validation.
pub trait MethodCatalog {
    /// Names of the registered methods (`full`, `lora`, `vpt-deep`, ...).
    fn method_names(&self) -> Vec<String>;
    /// Checks a method's parameters (a JSON object). The error should name the bad parameter and
    /// list the valid ones; the suite loader prefixes it with file, line and method.
    fn validate_params(&self, method: &str, params: &serde_json::Value) -> Result<(), String>;
    /// Whether `method` conditions on each example's task and takes the number of tasks as its
    /// `n_tasks` parameter (which a multi-task plan fills in).
    fn takes_task_count(&self, _method: &str) -> bool {
        false
    }
    /// How a trained multi-task adapter of `method` carries to a held-out task; empty for
    /// methods that start afresh there.
    fn transfer_modes(&self, _method: &str) -> Vec<TransferMode> {
        Vec::new()
    }
}
