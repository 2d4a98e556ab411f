//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "not every test module uses every helper")]

use std::path::PathBuf;
use std::process::Command;

/// The `tollgate` binary that cargo built for this test run.
pub fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// The workspace root (where `Cargo.toml`, `examples/` and `scenarios/` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
