//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "not every test module uses every helper")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Waits (at most 60 s, polling every 50 ms) until `path` exists: a file a client or an
/// upstream writes to say it reached a step.
pub fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON lines of `path` (an audit log, a journal, a recording), each parsed; none when the
/// file does not exist yet.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
