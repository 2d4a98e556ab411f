//! Scenario files that cannot be run are refused with file:line:col pointing at the step or
//! field at fault, and the runner's ordering rules hold.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::path::Path;

fn error_of(text: &str) -> String {
    match tollgate_scenario::load_text(Path::new("s.yaml"), text) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

const HEAD: &str =
    "name: s\npolicy: {version: \"1\", default: allow}\nagents: {a: {grant: g}}\nsteps:\n";

/// A step naming an agent the file does not declare: the error points at that step.
#[test]
fn unknown_agent_is_located_at_its_step() {
    let text = format!(
        "{HEAD}  - {{agent: a, call: GetAHOBatch}}\n  - {{at: 1s,\n     agent: zed, call: GetAHOBatch}}\n"
    );
    let e = error_of(&text);
    assert!(e.starts_with("s.yaml:6:5: "), "{e}");
    assert!(e.contains("unknown agent `zed`; the agents are a"), "{e}");
}

/// A step of two kinds, a member of a concurrent group that is not a call, a bad protocol.
#[test]
fn malformed_steps_are_located() {
    let e = error_of(&format!("{HEAD}  - {{advance: 1s, call: X, agent: a}}\n"));
    assert!(
        e.starts_with("s.yaml:5:5: ") && e.contains("not several"),
        "{e}"
    );
    let e = error_of(&format!("{HEAD}  - concurrent:\n      - {{advance: 1s}}\n"));
    assert!(
        e.starts_with("s.yaml:5:5: ") && e.contains("calls and batches only"),
        "{e}"
    );
    let e = error_of(
        "name: s\npolicy: {version: \"1\", default: allow}\nagents: {a: {grant: g, protocol: \"2024-01-01\"}}\nsteps: []\n",
    );
    assert!(
        e.starts_with("s.yaml:3:") && e.contains("not a protocol version"),
        "{e}"
    );
    let e = error_of(&format!("{HEAD}  - {{faults: maybe}}\n"));
    assert!(e.starts_with("s.yaml:5:") && e.contains("maybe"), "{e}");
}

/// A catalogue subset that names no tool is refused before the run.
#[test]
fn tool_subset_that_matches_nothing_is_refused() {
    let e = error_of(
        "name: s\npolicy: {version: \"1\", default: allow}\nupstream: {tools: [NoSuchTool]}\nagents: {a: {grant: g}}\nsteps: []\n",
    );
    assert!(e.contains("upstream.tools `NoSuchTool`"), "{e}");
}

/// Members of a concurrent group are interleaved at each instant: first calls of every member,
/// then second calls, whatever the order of their repetitions in the file.
#[test]
fn concurrent_members_interleave_round_robin() {
    let text = "name: s\npolicy: {version: \"1\", default: allow}\nagents: {a: {grant: g}, b: {grant: g}}\nsteps:\n  - concurrent:\n      - {agent: a, call: GetAHOBatch, args: {batchId: rb-0001}, repeat: 2}\n      - {agent: b, call: GetAHOBatch, args: {batchId: rb-0001}, repeat: 2}\n";
    let loaded = tollgate_scenario::load_text(Path::new("s.yaml"), text).unwrap();
    let out = tollgate_scenario::run(loaded);
    let agents: Vec<&str> = out.decisions.iter().map(|d| &*d.agent).collect();
    assert_eq!(agents, ["a", "b", "a", "b"]);
}

/// `upstreams:` follows the gateway's config rules, and each refusal says where and what:
/// both `upstream` and `upstreams`, a name used twice, overlapping prefixes (naming both
/// upstreams), a prefix on a lone upstream, a fault that virtual time cannot model behind
/// several upstreams, a tool selection that names nothing (naming the upstream).
#[test]
fn upstreams_are_checked_by_the_gateways_rules() {
    let with = |upstreams: &str| format!("{HEAD}  - {{agent: a, call: x}}\n{upstreams}");
    let e = error_of(&with("upstream: {tools: real}\nupstreams: [{name: a}]\n"));
    assert!(e.contains("not both"), "{e}");
    let e = error_of(&with("upstreams: [{name: eks}, {name: eks}]\n"));
    assert!(
        e.starts_with("s.yaml:6:") && e.contains("two upstreams are named `eks`"),
        "{e}"
    );
    let e = error_of(&with(
        "upstreams: [{name: a, prefix: k_}, {name: b, prefix: k_v_}]\n",
    ));
    assert!(
        e.contains("upstream `a`") && e.contains("upstream `b`") && e.contains("overlap"),
        "{e}"
    );
    let e = error_of(&with("upstreams: [{name: a, prefix: k_}]\n"));
    assert!(e.contains("only with several upstreams"), "{e}");
    let e = error_of(&with("upstreams: [{name: a, down: true}]\n"));
    assert!(
        e.contains("`down` applies only with several upstreams"),
        "{e}"
    );
    let e = error_of(&with("upstreams: [{name: 'a b'}, {name: c}]\n"));
    assert!(e.contains("not an upstream name"), "{e}");
    let e = error_of(&with(
        "upstreams:\n  - {name: a}\n  - {name: b, faults: {faults: [{tool: '*', effect: crash}]}}\n",
    ));
    assert!(
        e.contains("upstreams[1] (`b`)") && e.contains("`crash` is not modelled"),
        "{e}"
    );
    let e = error_of(&with(
        "upstreams: [{name: a}, {name: b, tools: NoSuchTool}]\n",
    ));
    assert!(e.contains("upstreams `b` tools `NoSuchTool`"), "{e}");
    // One upstream in the list is the single-upstream form: no prefix, no `upstream=`.
    let loaded = tollgate_scenario::load_text(
        Path::new("s.yaml"),
        &with("upstreams: [{name: eks, tools: real}]\n"),
    )
    .unwrap();
    let mocks = loaded.scenario.mocks();
    assert_eq!((mocks.len(), mocks[0].prefix.as_str()), (1, ""));
    assert!(!loaded.scenario.several_upstreams());
}
