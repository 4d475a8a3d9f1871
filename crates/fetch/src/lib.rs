//! Outside data and weights of the suites: pinned manifests (`manifests/`), verified concurrent
//! downloads (`harness fetch`), checks of a folder against the pins (`harness verify`), and
//! filling pins from downloaded files (`harness manifest pin`).
//!
//! Exit codes shared by fetch and verify: 0 everything present and verified; 1 something present
//! differs from the manifest (never fixed by rewriting it); 2 cannot start; 3 incomplete.

pub mod archive;
pub mod download;
pub mod hashing;
pub mod install;
pub mod manifest;
pub mod pin;
pub mod progress;
pub mod verify;

pub use install::{fetch, FetchOptions, FileState, Mirrors, Report, Row};
pub use manifest::{load_suite_manifest, Artifact, ManifestError, SuiteManifest};
pub use verify::{verify, VerifyOptions};
