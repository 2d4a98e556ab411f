//! `tollgate catalog` end to end: filters, the table a user reads, the JSON export that
//! `tollgate check --catalog` reads back, and exit code 2 on bad filters.

use crate::util::{root, tollgate};

fn catalog(args: &[&str]) -> std::process::Output {
    tollgate()
        .arg("catalog")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// The HealthOmics run-batch tools as a table: name, class, level, source.
#[test]
fn table_of_a_filtered_selection() {
    let out = catalog(&["--match", "*AHO*Batch*"]);
    assert_eq!(out.status.code(), Some(0));
    insta::with_settings!({snapshot_path => root().join("snapshots/catalog"), prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("aho_run_batch_tools", String::from_utf8(out.stdout).unwrap());
    });
}

/// Class and level filters combine with the selection.
#[test]
fn class_and_level_filters_combine() {
    let out = catalog(&["--tools", "real", "--class", "read", "--level", "medium"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("get_pod_logs") && text.contains("get_cloudwatch_logs"),
        "{text}"
    );
    assert!(text.ends_with("2 tools\n"), "{text}");
}

/// The JSON export is a catalogue file `check --catalog` accepts: a policy naming a tool
/// outside the export draws an unknown-tool warning against it.
#[test]
fn json_export_feeds_check() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("real.json");
    let out = catalog(&["--tools", "real", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    std::fs::write(&export, &out.stdout).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["tools"].as_array().unwrap().len(), 16);
    let check = tollgate()
        .args([
            "check",
            "--deny-warnings",
            "--catalog",
            export.to_str().unwrap(),
            "examples/policies/seed.json",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(1),
        "CancelAHORunBatch is not among the real tools"
    );
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("`CancelAHORunBatch` names no known tool")
    );
}

/// Bad filters are exit 2 with the valid values listed.
#[test]
fn bad_filters_are_exit_2() {
    let out = catalog(&["--class", "dangerous"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use read, write, execute or destructive")
    );
    let out = catalog(&["--tools", "NoSuchTool"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`NoSuchTool` matches no tool"));
    let out = catalog(&["--match", "Delete["]);
    assert_eq!(out.status.code(), Some(2));
}
