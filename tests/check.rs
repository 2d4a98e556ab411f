//! `tollgate check` and `tollgate explain` end to end: the broken-policy corpus under
//! tests/check/broken/ with its rendered diagnostics snapshotted under snapshots/diagnostics/,
//! hostile files generated on the fly (deep nesting, a 100 MB file), the example policies, and
//! the exit codes.

use std::path::Path;
use std::process::Output;

use crate::util::{root, tollgate};

/// What a user reads from one command: the exit code, stdout, then stderr.
fn transcript(out: &Output) -> String {
    format!(
        "exit code: {}\n--- stdout\n{}--- stderr\n{}",
        out.status
            .code()
            .map_or("signal".to_owned(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(args: &[&str]) -> Output {
    tollgate()
        .arg("check")
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Every broken policy is refused (exit 2) or warned about (exit 0, with `--deny-warnings`
/// exit 1), and what the user reads is reviewed text: the file:line:col, the offending line
/// with a caret, the label and a help line.
#[test]
fn broken_policy_corpus_diagnostics() {
    insta::with_settings!({
        snapshot_path => root().join("snapshots/diagnostics"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::glob!("check/broken/*.json", |path| {
            let rel = path.strip_prefix(root()).unwrap().to_str().unwrap().to_owned();
            let out = check(&[&rel]);
            let code = out.status.code();
            assert!(code == Some(2) || code == Some(0), "{rel}: {code:?}");
            if code == Some(0) {
                // A file that only warns must fail under --deny-warnings.
                let strict = check(&["--deny-warnings", &rel]);
                assert_eq!(strict.status.code(), Some(1), "{rel} has no warning");
            }
            insta::assert_snapshot!(transcript(&out));
        });
    });
}

/// The corpus is big enough to mean something: at least 25 broken policies.
#[test]
fn corpus_has_at_least_25_cases() {
    let n = std::fs::read_dir(root().join("tests/check/broken"))
        .unwrap()
        .count();
    assert!(n >= 25, "{n} cases");
}

/// A file nested 100,000 levels deep is refused with a message, not a stack overflow.
#[test]
fn deep_nesting_is_refused_without_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.json");
    let text = format!(
        r#"{{"version": "1", "default": "deny", "tools": {{"x": {{"arguments": {{"a": {{"enum": {}}}}}}}}}}}"#,
        "[".repeat(100_000)
    );
    std::fs::write(&path, text).unwrap();
    let out = check(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", transcript(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("recursion limit exceeded"), "{stderr}");
    // The offending line is 100 KB long: the report names the position instead of quoting it.
    assert!(stderr.len() < 2_000, "{} bytes of stderr", stderr.len());
    assert!(stderr.contains("deep.json:1:"), "{stderr}");
}

/// A 100 MB file is refused by its size before it is read whole.
#[test]
fn a_100_mb_policy_is_refused_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(100 * 1024 * 1024).unwrap();
    let out = check(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", transcript(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("over the limit of 16777216 bytes"),
        "{stderr}"
    );
}

/// A missing file is bad input: exit 2 and the path in the message.
#[test]
fn a_missing_file_is_exit_2_with_its_path() {
    let out = check(&["no/such/policy.json"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read policy file `no/such/policy.json`"),
        "{stderr}"
    );
}

/// Every example policy is valid and draws no warning.
#[test]
fn example_policies_pass_check_without_warnings() {
    let dir = root().join("examples/policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = check(&["--deny-warnings", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
        n += 1;
    }
    assert!(n >= 3, "{n} example policies");
}

/// The JSON report carries each diagnostic's position and pointer for editors and CI.
#[test]
fn json_report_has_positions_and_pointers() {
    let out = check(&[
        "--format",
        "json",
        "tests/check/broken/18-counter-conflict.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &report["files"][0]["diagnostics"][0];
    assert_eq!(d["code"], "policy::counter_conflict");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(9), Some(18))
    );
    assert_eq!(d["pointer"], "/tools/DeleteIAMRole/limits/0");
    assert_eq!(report["errors"], 1);
}

fn explain(args: &[&str]) -> Output {
    tollgate()
        .arg("explain")
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// `explain` shows the path a call takes: the candidates, the branch, the limits, the decision.
#[test]
fn explain_transcripts() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "explain_seed_cancel",
            &[
                "examples/policies/seed.json",
                "CancelAHORunBatch",
                "--grant",
                "ci-bot",
            ],
        ),
        (
            "explain_seed_default_deny",
            &["examples/policies/seed.json", "DeleteEKSCluster"],
        ),
        (
            "explain_branch_delete",
            &[
                "examples/policies/eks-recommended.json",
                "manage_k8s_resource",
                "--args",
                r#"{"operation": "delete", "cluster_name": "prod-eks", "kind": "Deployment", "api_version": "apps/v1", "name": "web", "namespace": "shop"}"#,
            ],
        ),
        (
            "explain_invalid_arguments",
            &[
                "examples/policies/eks-recommended.json",
                "manage_k8s_resource",
                "--args",
                r#"{"operation": "drop"}"#,
            ],
        ),
    ];
    for (name, args) in cases {
        let out = explain(args);
        assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
        insta::with_settings!({
            snapshot_path => root().join("snapshots/diagnostics"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, transcript(&out));
        });
    }
}

/// `explain` decides on the arguments as the tool reads them (its catalogue schema), as the
/// gateway does, and says which it reads otherwise than written: `"yes"` for the boolean
/// `force` is `true`, which `not_enum: [true]` refuses; a `tail_lines` the tool cannot read as
/// an integer fails the rule's checks on it.
#[test]
fn explain_reads_arguments_as_the_tool_does() {
    let cases: [(&str, &[&str]); 2] = [
        (
            "explain_read_as_the_tool_reads",
            &[
                "examples/policies/eks-recommended.json",
                "apply_yaml",
                "--args",
                r#"{"yaml_path": "/m.yaml", "cluster_name": "prod", "namespace": "shop", "force": "yes"}"#,
            ],
        ),
        (
            "explain_unreadable_argument",
            &[
                "examples/policies/eks-recommended.json",
                "get_pod_logs",
                "--args",
                r#"{"cluster_name": "prod", "namespace": "shop", "pod_name": "web", "tail_lines": "all"}"#,
            ],
        ),
    ];
    for (name, args) in cases {
        let out = explain(args);
        assert_eq!(out.status.code(), Some(0), "{}", transcript(&out));
        insta::with_settings!({
            snapshot_path => root().join("snapshots/diagnostics"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, transcript(&out));
        });
    }
}

/// Bad `--args` and a broken policy are exit 2 with a message.
#[test]
fn explain_bad_input_is_exit_2() {
    let out = explain(&["examples/policies/seed.json", "x", "--args", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--args is not JSON"));
    let out = explain(&["examples/policies/seed.json", "x", "--args", "[1]"]);
    assert_eq!(out.status.code(), Some(2));
    let out = explain(&["tests/check/broken/08-misspelt-field.json", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `acton`"));
    assert!(Path::new(&root().join("examples/policies/seed.json")).exists());
}

/// `check --config` of a config with several upstreams: `lock_mode` without `lock` is an error
/// at its line (exit 2); with that fixed, the policy's selectors that can never match behind
/// these upstreams are warnings at file:line:col, each once and with the reason: an exact name
/// and a pattern that no upstream's prefix starts, and `upstream:NAME` for an upstream the config
/// does not have (exit 0, `--deny-warnings` exit 1). Names with a prefix pass.
#[test]
fn check_config_of_several_upstreams_warns_of_rules_that_never_match() {
    let out = check(&["--config", "tests/check/multi/tollgate.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tollgate.toml:2:13")
            && stderr.contains("`lock_mode` is given but `lock` is not"),
        "{stderr}"
    );
    let out = check(&["--config", "tests/check/multi/ok.toml"]);
    insta::with_settings!({
        snapshot_path => root().join("snapshots/diagnostics"),
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("check_config_several_upstreams", transcript(&out));
    });
    assert_eq!(out.status.code(), Some(0));
    let out = check(&["--config", "tests/check/multi/ok.toml", "--deny-warnings"]);
    assert_eq!(out.status.code(), Some(1));
}
