//! What a test does when an optional package or weight file (installed from PyPI, or supplied by
//! the user) is missing: it skips with a message saying what installs it and where it was looked
//! for, except under `PEFTBENCH_REQUIRE_OPTIONAL=1` (CI installs every optional package and sets
//! it), where a skip would hide a broken install and so fails.

use std::path::PathBuf;

/// The variable that turns a skip into a failure.
pub const REQUIRE_OPTIONAL_ENV: &str = "PEFTBENCH_REQUIRE_OPTIONAL";

/// `Some` of what a lookup found; else prints `SKIPPED: <missing>; looked in <paths>` and returns
/// `None` (the test returns), or panics with that message under `PEFTBENCH_REQUIRE_OPTIONAL=1`.
/// `missing` says what is missing and what provides it.
pub fn found_or_skip<T>(lookup: Result<T, Vec<PathBuf>>, missing: &str) -> Option<T> {
    match lookup {
        Ok(found) => Some(found),
        Err(looked) => {
            let looked: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
            let message = format!("{missing}; looked in {}", looked.join(", "));
            if std::env::var(REQUIRE_OPTIONAL_ENV).as_deref() == Ok("1") {
                panic!("{REQUIRE_OPTIONAL_ENV}=1 but {message}");
            }
            eprintln!("SKIPPED: {message}");
            None
        }
    }
}
