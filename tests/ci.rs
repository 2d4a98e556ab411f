//! What a CI pipeline runs: the workflow docs/ci.md gives (its `run:` commands, against a copy
//! of this repository's policies and scenarios), `tollgate test --format json` against its
//! schema, `--coverage` and `--min-coverage`, `tollgate diff`'s report and exit codes, and a
//! new scenario's snapshot found from its project and accepted as its one line says.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{root, tollgate};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The workflow of docs/ci.md: each step's name and its `run:` text.
fn workflow_steps() -> Vec<(String, Option<String>)> {
    let doc = std::fs::read_to_string(root().join("docs/ci.md")).unwrap();
    let start = doc
        .find("## A ready GitHub Actions workflow")
        .unwrap_or_else(|| panic!("docs/ci.md has no workflow section"));
    let block = &doc[start..];
    let yaml_start = block.find("```yaml\n").unwrap() + "```yaml\n".len();
    let yaml = &block[yaml_start..];
    let yaml = &yaml[..yaml.find("```").unwrap()];
    let workflow: serde_json::Value = serde_norway::from_str(yaml).unwrap();
    let jobs = workflow["jobs"].as_object().unwrap();
    assert_eq!(jobs.len(), 1, "one job");
    jobs.values().next().unwrap()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["run"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// docs/ci.md's workflow runs: every `run:` command but the install (which needs the network)
/// is run, as GitHub runs it (`bash -e`, the base branch in `GITHUB_BASE_REF`), in a git
/// repository holding a copy of this repository's policies, scenarios and snapshots, on a
/// branch that changes a policy. Each exits 0; the summary holds the diff's counterexample
/// and the JUnit report is written. So the doc cannot rot.
#[test]
fn the_ci_workflow_in_docs_runs_against_this_repository() {
    let steps = workflow_steps();
    let runs: Vec<&(String, Option<String>)> = steps.iter().filter(|(_, r)| r.is_some()).collect();
    let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Install tollgate",
            "Check the policies",
            "Run the scenarios, with coverage",
            "What the change does to every call"
        ]
    );
    let all: String = runs.iter().filter_map(|(_, r)| r.as_deref()).collect();
    for needed in [
        "--deny-warnings",
        "--junit",
        "--coverage",
        "--min-coverage",
        "tollgate diff",
    ] {
        assert!(all.contains(needed), "the workflow runs {needed}");
    }
    let upload = steps.iter().any(|(n, _)| n == "Upload the reports");
    assert!(upload, "the workflow uploads its reports");

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for sub in ["examples", "scenarios", "snapshots"] {
        copy_dir(&root().join(sub), &repo.join(sub));
    }
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    git(&repo, &["update-ref", "refs/remotes/origin/main", "HEAD"]);
    // The pull request: IAM changes go from approval to deny (no scenario calls the tool, so
    // the scenarios still pass; the diff shows the change).
    let policy = repo.join("examples/policies/eks-recommended.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    doc["tools"]["add_inline_policy"] =
        serde_json::json!({"action": "deny", "reason": "no IAM changes by agents"});
    std::fs::write(&policy, serde_json::to_string_pretty(&doc).unwrap()).unwrap();

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_tollgate")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let summary = dir.path().join("summary.md");
    for (name, run) in runs.iter().skip(1) {
        let out = Command::new("bash")
            .args(["-e", "-c", run.as_deref().unwrap()])
            .current_dir(&repo)
            .env("PATH", &path)
            .env("GITHUB_BASE_REF", "main")
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "step `{name}` failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(
        summary.contains("add_inline_policy {")
            && summary.contains("new: deny (rule `add_inline_policy`"),
        "{summary}"
    );
    let junit = std::fs::read_to_string(repo.join("tollgate-junit.xml")).unwrap();
    assert!(
        junit.contains("<testsuite name=\"tollgate scenarios\""),
        "{junit}"
    );
}

/// The report `--format json` writes follows docs/test-report.schema.json, carries every
/// call's rule, reason and retry time as numbers, and is snapshotted for one scenario with an
/// approval denied, one approved and rate limits.
#[test]
fn tollgate_test_json_report_follows_its_schema() {
    let out = tollgate()
        .args([
            "test",
            "scenarios/approval-denied.yaml",
            "scenarios/window-edge.yaml",
            "--format",
            "json",
            "--coverage",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/test-report.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let edge = &report["scenarios"][1];
    let limited: Vec<&serde_json::Value> = edge["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["decision"] == "rate_limited")
        .collect();
    assert!(!limited.is_empty());
    for c in limited {
        assert!(
            c["retry_after_seconds"].as_f64().is_some_and(|r| r > 0.0),
            "{c}"
        );
        assert_eq!(c["rule"]["pointer"], "/tools/GetAHOBatch");
    }
    insta::with_settings!({
        snapshot_path => root().join("tests/snapshots"),
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_json_snapshot!("tollgate_test_json", report["scenarios"][0]);
    });
}

/// `--coverage` over this repository's scenarios: the human report (reviewed as a snapshot:
/// each policy's share and every item not covered, at its place), and `--min-coverage` exits
/// 1 below the minimum and 0 at or above it.
#[test]
fn coverage_of_this_repository_and_its_minimum() {
    let run = |extra: &[&str]| {
        tollgate()
            .args(["test", "--coverage"])
            .args(extra)
            .current_dir(root())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = &text[text.find("\ncoverage (").unwrap() + 1..];
    insta::with_settings!({
        snapshot_path => root().join("tests/snapshots"),
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("tollgate_test_coverage", report);
    });
    let total: f64 = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("total: "))
        .and_then(|l| l.split(['(', '%']).nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let below = run(&["--min-coverage", &format!("{}", total + 0.1)]);
    assert_eq!(below.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&below.stdout).contains("NOT met"));
    let met = run(&["--min-coverage", &format!("{total}")]);
    assert_eq!(met.status.code(), Some(0));
    let bad = run(&["--min-coverage", "120"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// A scenario's snapshot is found from its path, not the working directory: the project is
/// the nearest folder above it holding `snapshots/`, `Cargo.toml` or `.git`. A new scenario's
/// first run fails with one line that names the pending transcript and the command that
/// accepts it; that command, run from elsewhere, accepts it.
#[test]
fn a_new_scenarios_snapshot_is_found_from_its_project_and_accepted_as_its_line_says() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::create_dir_all(project.join("policies/scenarios")).unwrap();
    let scenario = project.join("policies/scenarios/first.yaml");
    std::fs::write(
        &scenario,
        "name: first\npolicy: {version: \"1\", default: deny}\nagents: {a: {grant: g}}\nsteps:\n  - {agent: a, call: GetAHOBatch, args: {batchId: rb-0001}, expect: {decision: deny}}\n",
    )
    .unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let first = tollgate()
        .args(["test", scenario.to_str().unwrap()])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(1));
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    let pending = project.join("snapshots/scenarios/first.snap.new");
    assert!(pending.exists(), "{text}");
    let line: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("no snapshot yet"))
        .collect();
    assert_eq!(line.len(), 1, "{text}");
    let command = line[0]
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("the line quotes no command: {}", line[0]));
    assert_eq!(
        command,
        format!("tollgate test {} --accept", scenario.display())
    );
    // The command as printed, from another directory (the scenario's own).
    let args: Vec<&str> = command.split(' ').skip(1).collect();
    let accepted = tollgate()
        .args(&args)
        .current_dir(project.join("policies"))
        .output()
        .unwrap();
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&accepted.stdout)
    );
    assert!(project.join("snapshots/scenarios/first.snap").exists());
    assert!(!pending.exists());
}

fn diff(old: &Path, new: &Path, extra: &[&str]) -> std::process::Output {
    tollgate()
        .arg("diff")
        .args([old, new])
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `tollgate diff`: a reformatted policy decides alike (exit 0 even with `--fail-on-change`);
/// a change prints each changed call (tool, arguments, grant, old and new decision and rule)
/// and each changed limit (a snapshot of the report), and exits 1 with `--fail-on-change`, 0
/// without; a broken policy exits 2 with file:line:col.
#[test]
fn tollgate_diff_reports_changed_calls_and_limits_with_its_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let old = root().join("examples/policies/eks-recommended.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&old).unwrap()).unwrap();
    let same = write(
        dir.path(),
        "same.json",
        &serde_json::to_string(&doc).unwrap(),
    );
    let out = diff(&old, &same, &["--fail-on-change"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no change"));

    let cases = &mut doc["tools"]["manage_k8s_resource"]["when"]["cases"];
    cases["delete"] = serde_json::json!({"action": "deny", "reason": "change freeze"});
    doc["tools"]["search_eks_troubleshoot_guide"]["rate_limit"]["max"] = serde_json::json!(10);
    let new = write(
        dir.path(),
        "new.json",
        &serde_json::to_string_pretty(&doc).unwrap(),
    );
    let changed = diff(&old, &new, &["--fail-on-change"]);
    assert_eq!(changed.status.code(), Some(1));
    let text = String::from_utf8_lossy(&changed.stdout)
        .replace(&*old.to_string_lossy(), "OLD")
        .replace(&*new.to_string_lossy(), "NEW");
    insta::with_settings!({
        snapshot_path => root().join("tests/snapshots"),
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("tollgate_diff_human", text);
    });
    assert_eq!(diff(&old, &new, &[]).status.code(), Some(0));
    let json = diff(&old, &new, &["--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["unchanged"], false);
    assert!(
        report["report"]["changed_calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["tool"] == "manage_k8s_resource"
                    && c["arguments"]["operation"] == "delete"
                    && c["old"]["decision"] == "approval_required"
                    && c["new"]["decision"] == "deny"
            })
    );

    let broken = write(
        dir.path(),
        "broken.json",
        "{\"version\":\"1\",\n \"default\":\"maybe\"}",
    );
    let out = diff(&old, &broken, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.json:2:12"), "{err}");
}

/// Coverage counts what its definition says (docs/ci.md, "Coverage"): a scenario that makes
/// a check pass and fail, a limit admit and refuse, every case of a `when` taken, a held call
/// approved and one denied, and the default decide, covers its policy entirely; without the
/// calls that fail the check and fill the limit, exactly those two items are missing, each
/// saying what it lacks.
#[test]
fn coverage_counts_each_kind_of_item_as_defined() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = |extra_steps: &str| {
        format!(
            r#"name: cover
policy:
  version: "1"
  default: deny
  tools:
    GetAHOBatch:
      arguments: {{batchId: {{prefix: "rb-"}}}}
      limits: [{{counter: reads, window: minute, max: 1}}]
    manage_k8s_resource:
      when:
        argument: operation
        cases:
          read: {{}}
          delete: {{action: require_approval}}
upstream: {{tools: default, allow_write: true}}
approvers: [alice]
agents: {{a: {{grant: g}}}}
steps:
  - {{at: 0s, agent: a, call: GetAHOBatch, args: {{batchId: rb-0001}}}}
  - {{agent: a, call: manage_k8s_resource, args: {{operation: read, cluster_name: c, kind: Pod, api_version: v1, name: p, namespace: shop}}}}
  - {{agent: a, call: manage_k8s_resource, args: {{operation: delete, cluster_name: c, kind: Pod, api_version: v1, name: p, namespace: shop}}}}
  - {{agent: a, call: manage_k8s_resource, args: {{operation: delete, cluster_name: c, kind: Pod, api_version: v1, name: q, namespace: shop}}}}
  - {{at: 10s, approve: {{held: 1, by: alice}}}}
  - {{at: 11s, deny: {{held: 2, by: alice}}}}
  - {{at: 12s, agent: a, call: ListAHOBatch, args: {{}}}}
{extra_steps}"#
        )
    };
    let run = |text: String| {
        let file = dir.path().join("cover.yaml");
        std::fs::write(&file, text).unwrap();
        let out = tollgate()
            .args([
                "test",
                file.to_str().unwrap(),
                "--update",
                "--format",
                "json",
                "--coverage",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["summary"]["passed"], 1, "{report:#}");
        report["coverage"]["policies"][0].clone()
    };
    let full = run(scenario(
        "  - {at: 13s, agent: a, call: GetAHOBatch, args: {batchId: rb-0001}}\n  - {at: 14s, agent: a, call: GetAHOBatch, args: {batchId: xx-1}}\n",
    ));
    let missing = |p: &serde_json::Value| -> Vec<String> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["covered"] == false)
            .map(|i| {
                format!(
                    "{} {} {} seen {}",
                    i["kind"], i["pointer"], i["name"], i["seen"]
                )
            })
            .collect()
    };
    assert_eq!(missing(&full), Vec::<String>::new(), "{full:#}");
    assert_eq!(
        (full["covered"].as_u64(), full["total"].as_u64()),
        (Some(9), Some(9))
    );
    let partial = run(scenario(""));
    assert_eq!(
        missing(&partial),
        [
            r#""check" "/tools/GetAHOBatch" "batchId" seen ["passed"]"#,
            r#""limit" "/tools/GetAHOBatch" "reads" seen ["admitted"]"#,
        ]
    );
}
