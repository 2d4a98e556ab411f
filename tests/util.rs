//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "not every test module uses every helper")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `tollgate` binary that cargo built for this test run.
pub fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// The workspace root (where `Cargo.toml`, `examples/` and `scenarios/` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tollgate audit verify AUDIT` exits 0: the hash chain holds (its report in the failure).
pub fn assert_audit_verifies(audit: &Path) {
    let out = tollgate()
        .args(["audit", "verify", audit.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
