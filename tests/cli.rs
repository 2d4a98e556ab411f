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

/// `tollgate demo` (the README's main command) runs on the embedded defaults alone: the live
/// replay through a real gateway process cuts the runaway agent at the seed's limit, nothing
/// refused reaches the mock, the audit log verifies, the virtual-time replay decides every call
/// the same, and it points at the command that keeps the run as a regression test.
#[test]
fn demo_replays_the_runaway_agent_live_and_agrees_with_virtual_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = tollgate()
        // A slower clock than the default: the shared test machine is busy.
        .args([
            "demo",
            "--time-scale",
            "10",
            "--keep",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("CancelAHORunBatch -> allow").count(),
        13,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("CancelAHORunBatch -> rate_limited").count(),
        6,
        "{stdout}"
    );
    assert!(
        stdout.contains("GetAHOBatch -> deny (rule default)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(its journal): CancelAHORunBatch 13"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the hash chain is intact, closed cleanly"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every decision the same as live"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tollgate test scenarios/runaway-burst.yaml"),
        "{stdout}"
    );
    // --keep leaves the run's files, and the audit log verifies with the CLI too.
    let verify = tollgate()
        .args([
            "audit",
            "verify",
            dir.path().join("audit.jsonl").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0));
    assert!(dir.path().join("recording.jsonl").exists());
    assert!(
        stdout.contains("tollgate scenario from-recording"),
        "{stdout}"
    );
}

/// A time scale the demo cannot use is bad input (exit 2), not a run.
#[test]
fn demo_refuses_an_unusable_time_scale() {
    let out = tollgate()
        .args(["demo", "--time-scale", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--time-scale 0"));
}

/// `tollgate fuzz` on the seed policy: every property holds (exit 0) and the summary names the
/// sessions, the decisions and the rules' coverage; a broken policy is exit 2.
#[test]
fn fuzz_passes_the_seed_policy_and_refuses_a_broken_one() {
    let out = tollgate()
        .args([
            "fuzz",
            "--policy",
            "examples/policies/seed.json",
            "--cases",
            "12",
            "--seed",
            "3",
        ])
        .current_dir(crate::util::root())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("12 sessions"), "{stdout}");
    assert!(stdout.contains("every property held"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"version": "1", "defualt": "deny"}"#).unwrap();
    let out = tollgate()
        .args(["fuzz", "--policy", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid policy"));
    // Session lengths that cannot be: exit 2, naming both flags.
    let out = tollgate()
        .args([
            "fuzz",
            "--policy",
            "examples/policies/seed.json",
            "--min-calls",
            "9",
            "--max-calls",
            "3",
        ])
        .current_dir(crate::util::root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--min-calls 9 is more than --max-calls 3"),
        "{stderr}"
    );
}

/// `tollgate bench replay` and `tollgate bench fuzz` run (small sizes) and check what they
/// measure: every replayed call answered, every fuzzed property held (exit 0). No timing is
/// asserted: the figures are for docs/PERFORMANCE.md.
#[test]
fn bench_replay_and_fuzz_run_and_check_their_calls() {
    let out = tollgate()
        .args(["bench", "replay", "--rounds", "1", "--replay-calls", "2000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("2000 calls per round"), "{stdout}");
    assert!(!stdout.contains("UNEXPECTED"), "{stdout}");
    let out = tollgate()
        .args(["bench", "fuzz", "--rounds", "1", "--fuzz-sessions", "8"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("8 sessions (400 calls)"), "{stdout}");
}

/// `tollgate bench http` and `tollgate bench stdio` (small sizes) measure three paths, direct,
/// through the byte relay and through the gateway, and every call on each is the mock's own
/// successful answer (a call the relay garbled or lost would fail the run, exit 1). No timing is
/// asserted.
#[test]
fn bench_http_and_stdio_answer_every_call_on_all_three_paths() {
    for what in ["http", "stdio"] {
        let out = tollgate()
            .args([
                "bench",
                what,
                "--rounds",
                "1",
                "--calls",
                "40",
                "--clients",
                "4",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{what}: {stdout}{stderr}");
        for line in ["added by byte relay:", "added by gateway:", "round 1: p50"] {
            assert!(stdout.contains(line), "{what}: no `{line}` in {stdout}");
        }
        assert!(stdout.contains("(direct/byte relay/gateway)"), "{stdout}");
    }
}

/// `--tool-timeout` takes `TOOL=SECS` and `--call-timeout` SECS (seconds with a fraction
/// allowed, 0.001 to 86400); anything else is bad input (exit 2) with a message that says what
/// to write, before the gateway starts anything.
#[test]
fn gateway_timeouts_must_be_seconds() {
    for (flag, value, says) in [
        ("--tool-timeout", "get_pod_logs", "is not TOOL=SECS"),
        ("--tool-timeout", "=5", "names no tool"),
        (
            "--tool-timeout",
            "get_pod_logs=0",
            "give seconds from 0.001 to 86400, e.g. get_pod_logs=5",
        ),
        (
            "--tool-timeout",
            "get_pod_logs=soon",
            "`soon` is not a timeout for `get_pod_logs`",
        ),
        (
            "--call-timeout",
            "0",
            "`0` is not a timeout: give seconds from 0.001 to 86400",
        ),
    ] {
        let out = tollgate()
            .args(["gateway", "--policy", "examples/policies/seed.json"])
            .args([flag, value, "--", "true"])
            .current_dir(crate::util::root())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
}
