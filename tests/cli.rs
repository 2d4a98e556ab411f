//! The `tollgate` binary's exit-code contract (0 ok, 2 bad input), checked on the built binary.

use crate::util::tollgate;

/// `--version` prints the package version on stdout and exits 0.
#[test]
fn version_prints_the_package_version_and_exits_0() {
    let out = tollgate().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        format!("tollgate {}", env!("CARGO_PKG_VERSION"))
    );
}

/// An unknown subcommand is bad input: exit 2 with clap's message on stderr, nothing on stdout.
#[test]
fn unknown_subcommand_exits_2_with_a_message() {
    let out = tollgate().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("frobnicate"), "stderr: {stderr}");
}

/// Without a subcommand the binary prints its help, says one is required, and exits 2, never 0.
#[test]
fn no_subcommand_is_a_usage_error() {
    let out = tollgate().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("a subcommand is required"),
        "stderr: {stderr}"
    );
}
