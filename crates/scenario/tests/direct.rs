//! The runner's direct path (plain calls decided by the core, run by the mock and written to
//! the transcript from their parts, without a message as a value at each hop) against the value
//! path it stands in for: on generated scenarios (policies with limits, denials, approvals and
//! argument rules; approvers or none; faults of every kind; several agents and protocol
//! versions; calls at bursts and window edges, with odd tool names and arguments), both paths
//! give exactly the same outcome, audit log and metrics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

use std::fmt::Write as _;
use std::path::PathBuf;

use proptest::prelude::*;

const TOOLS: &[&str] = &[
    "GetAHOBatch",
    "CancelAHORunBatch",
    "getahobatch",
    "list_k8s_resources",
    "manage_k8s_resource",
    "get_eks_insights",
    "get_pod_logs",
    "NoSuchTool",
];

const ARGS: &[&str] = &[
    "{}",
    "{batchId: rb-0001}",
    "{batchId: rb-0013}",
    "{batchId: rb-9999}",
    "{cluster_name: prod-eks, kind: Pod, api_version: v1}",
    "{operation: read, cluster_name: prod-eks, kind: Deployment, api_version: apps/v1, name: web, namespace: shop}",
    "{operation: delete, cluster_name: prod-eks, kind: Deployment, api_version: apps/v1, name: web, namespace: shop}",
    "{operation: create, cluster_name: prod-eks, kind: Pod, api_version: v1, name: x}",
    "{cluster_name: prod-eks, pod_name: web-1, namespace: shop, tail_lines: 100}",
    // A float: its text may not parse back to the same value.
    "{batchId: rb-0001, ratio: 0.1}",
    "{nested: {a: [1, 2, {b: null}]}, flag: true}",
];

const POLICIES: &[&str] = &[
    "policy: ../../../../examples/policies/seed.json",
    "policy: ../../../../examples/policies/eks-recommended.json",
    "policy: ../../../../examples/policies/runaway-agent.json",
    "policy: {version: \"1\", default: allow}",
    "policy: {version: \"1\", default: deny, tools: {GetAHOBatch: {limits: [{counter: r, window: second, max: 2, scope: session}]}, CancelAHORunBatch: {limits: [{counter: r, window: second, max: 2, scope: session}]}, get_pod_logs: {limits: [{counter: c, window: minute, max: 3}]}, get_eks_insights: {action: allow}, list_k8s_resources: {action: deny, reason: not here}}}",
];

const FAULTS: &[&str] = &[
    "{tool: GetAHOBatch, latency_ms: 1500}",
    "{tool: \"*\", from_call: 3, until_call: 5, effect: is_error, message: flaky}",
    "{tool: CancelAHORunBatch, effect: rpc_error, code: -32000, message: boom}",
    "{tool: list_k8s_resources, effect: malformed}",
    "{tool: get_eks_insights, effect: hang}",
    "{tool: GetAHOBatch, from_call: 6, until_call: 7, effect: crash}",
    "{tool: get_pod_logs, effect: trickle, bytes_per_second: 4096}",
    "{tool: \"*\", probability: 0.3, latency_ms: 200}",
];

const PROTOCOLS: &[&str] = &["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

#[derive(Debug, Clone)]
struct Step {
    gap_ms: u64,
    agent: usize,
    tool: usize,
    args: usize,
    repeat: u32,
    every_ms: u64,
    /// 0: a call; 1: approve the tool's held call; 2: deny it; 3: faults off; 4: faults on.
    kind: u8,
    /// Behind several upstreams: which upstream's prefix the tool's name gets (`PREFIXES`).
    prefix: usize,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![Just(0u64), Just(1), 0..2_000u64, Just(60_000)],
        0..3usize,
        0..TOOLS.len(),
        0..ARGS.len(),
        prop_oneof![4 => Just(1u32), 1 => 2..12u32],
        prop_oneof![Just(0u64), Just(1), 1..1_500u64],
        prop_oneof![12 => Just(0u8), 1 => 1..5u8],
        0..PREFIXES.len(),
    )
        .prop_map(
            |(gap_ms, agent, tool, args, repeat, every_ms, kind, prefix)| Step {
                gap_ms,
                agent,
                tool,
                args,
                repeat,
                every_ms,
                kind,
                prefix,
            },
        )
}

/// Behind several upstreams: the exposed names' prefixes (`eks`'s default, `omics`'s own, the
/// `down` upstream's) and no prefix (a name no upstream lists).
const PREFIXES: &[&str] = &["eks__", "o.", "spare__", ""];

/// Policies for several upstreams: `upstream:` rules, prefixed names and patterns, and one
/// written for a single upstream (its names never match: the default decides).
const SEVERAL_POLICIES: &[&str] = &[
    "policy: {version: \"1\", default: deny, tools: {\"upstream:eks\": {limits: [{counter: e, window: second, max: 2, scope: session}]}, \"o.*\": {limits: [{counter: o, window: minute, max: 3, scope: grant}]}, eks__get_pod_logs: {action: deny, reason: not here}, \"upstream:omics\": {action: require_approval}}}",
    "policy: {version: \"1\", default: allow, tools: {\"upstream:omics\": {limits: [{counter: errs, window: minute, max: 2, scope: global, counts: errors}]}, \"eks__*\": {limits: [{counter: all, window: second, max: 3, scope: grant}]}}}",
    "policy: ../../../../examples/policies/seed.json",
    "policy: {version: \"1\", default: allow}",
];

/// The faults that behind several upstreams virtual time models (no connection effects).
const SEVERAL_FAULTS: &[usize] = &[0, 1, 2, 4, 7];

#[derive(Debug, Clone)]
struct Case {
    /// Several upstreams (`eks`, `omics` with prefix `o.`, and `spare` down when `down`).
    several: Option<bool>,
    policy: usize,
    approvers: bool,
    allow_write: bool,
    timeout_s: Option<u64>,
    faults: Vec<usize>,
    protocols: [usize; 3],
    steps: Vec<Step>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..POLICIES.len(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1..10u64),
        prop::collection::vec(0..FAULTS.len(), 0..3),
        [0..PROTOCOLS.len(), 0..PROTOCOLS.len(), 0..PROTOCOLS.len()],
        prop::collection::vec(step(), 1..25),
    )
        .prop_map(
            |(policy, approvers, allow_write, timeout_s, faults, protocols, steps)| Case {
                several: None,
                policy,
                approvers,
                allow_write,
                timeout_s,
                faults,
                protocols,
                steps,
            },
        )
}

fn scenario(c: &Case) -> String {
    let mut s = String::from("name: generated\n");
    match c.several {
        Some(_) => writeln!(s, "{}", SEVERAL_POLICIES[c.policy % SEVERAL_POLICIES.len()]),
        None => writeln!(s, "{}", POLICIES[c.policy]),
    }
    .unwrap();
    if let Some(t) = c.timeout_s {
        let _ = writeln!(s, "gateway: {{timeout: {t}s}}");
    }
    let faults: Vec<&str> = c.faults.iter().map(|&f| FAULTS[f]).collect();
    match c.several {
        None => writeln!(
            s,
            "upstream: {{tools: default, allow_write: {}, faults: {{seed: 7, faults: [{}]}}}}",
            c.allow_write,
            faults.join(", ")
        ),
        Some(down) => writeln!(
            s,
            "upstreams:\n  - {{name: eks, tools: default, allow_write: {}, faults: {{seed: 7, faults: [{}]}}}}\n  - {{name: omics, prefix: o., tools: \"*AHO*Batch*\", faults: {{seed: 3, faults: [{}]}}}}\n  - {{name: spare, tools: real, down: {down}}}",
            c.allow_write,
            faults.join(", "),
            faults.iter().rev().copied().collect::<Vec<_>>().join(", ")
        ),
    }
    .unwrap();
    if c.approvers {
        s.push_str("approvers: [alice]\n");
    }
    s.push_str("agents:\n");
    for (i, p) in c.protocols.iter().enumerate() {
        // Agents 0 and 1 share a grant (grant-scoped counters), 2 has its own.
        let grant = if i == 2 { "other" } else { "ci-bot" };
        let _ = writeln!(
            s,
            "  a{i}: {{grant: {grant}, protocol: \"{}\"}}",
            PROTOCOLS[*p]
        );
    }
    s.push_str("steps:\n");
    let mut at = 0u64;
    for st in &c.steps {
        at += st.gap_ms;
        let when = format!("{}.{:03}s", at / 1000, at % 1000);
        let tool = match c.several {
            Some(_) => format!("{}{}", PREFIXES[st.prefix], TOOLS[st.tool]),
            None => TOOLS[st.tool].to_owned(),
        };
        // Approve and deny steps need an approver; without one they are calls.
        let kind = if c.approvers || !matches!(st.kind, 1 | 2) {
            st.kind
        } else {
            0
        };
        let _ = match kind {
            0 => writeln!(
                s,
                "  - {{at: {when}, agent: a{}, call: {tool}, args: {}, repeat: {}, every: {}ms}}",
                st.agent, ARGS[st.args], st.repeat, st.every_ms
            ),
            1 => writeln!(
                s,
                "  - {{at: {when}, approve: {{tool: {tool}, by: alice}}}}"
            ),
            2 => writeln!(
                s,
                "  - {{at: {when}, deny: {{tool: {tool}, by: alice, reason: no}}}}"
            ),
            3 => writeln!(s, "  - {{at: {when}, faults: off}}"),
            _ => writeln!(s, "  - {{at: {when}, faults: on}}"),
        };
    }
    s
}

/// Where the generated scenario claims to live: its policy paths resolve from here.
fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generated.yaml")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// Invariant: the direct path and the value path give any scenario the same outcome (the
    /// same transcript, expectation failures and decisions, call by call).
    #[test]
    fn direct_path_outcome_equals_value_path_outcome(c in case()) {
        let text = scenario(&c);
        let load = || match tollgate_scenario::load_text(&path(), &text) {
            Ok(l) => l,
            Err(e) => panic!("generated scenario does not load: {e}\n{text}"),
        };
        let (direct, value) = (observed(load(), true), observed(load(), false));
        prop_assert_eq!(&direct.outcome.transcript, &value.outcome.transcript, "{}", text);
        prop_assert_eq!(&direct.outcome, &value.outcome, "{}", text);
        prop_assert_eq!(&direct.audit, &value.audit, "the audit logs differ:\n{}", text);
        prop_assert_eq!(&direct.metrics, &value.metrics, "the metrics differ:\n{}", text);
    }

    /// Invariant: behind several upstreams (two mocks with their own tool sets and faults, a
    /// third down or up; names drawn from the union of exposed names, unprefixed ones too;
    /// policies with `upstream:` rules, prefixed patterns and per-upstream budgets), the direct
    /// path and the value path give the same outcome, audit log and metrics.
    #[test]
    fn direct_path_equals_value_path_behind_several_upstreams(
        c in case(),
        down in any::<bool>(),
        faults in prop::collection::vec(prop::sample::select(SEVERAL_FAULTS), 0..3),
    ) {
        let c = Case { several: Some(down), faults, ..c };
        let text = scenario(&c);
        let load = || match tollgate_scenario::load_text(&path(), &text) {
            Ok(l) => l,
            Err(e) => panic!("generated scenario does not load: {e}\n{text}"),
        };
        let (direct, value) = (observed(load(), true), observed(load(), false));
        prop_assert_eq!(&direct.outcome.transcript, &value.outcome.transcript, "{}", text);
        prop_assert_eq!(&direct.outcome, &value.outcome, "{}", text);
        prop_assert_eq!(&direct.audit, &value.audit, "the audit logs differ:\n{}", text);
        prop_assert_eq!(&direct.metrics, &value.metrics, "the metrics differ:\n{}", text);
    }
}

/// What a run leaves behind: its outcome, the gateway's audit log and its metrics.
struct Observed {
    outcome: tollgate_scenario::Outcome,
    audit: String,
    metrics: String,
}

fn observed(loaded: tollgate_scenario::Loaded, direct: bool) -> Observed {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let (outcome, metrics) = tollgate_scenario::run_observed(loaded, direct, &log).unwrap();
    // A metric family's series come in no fixed order: compare them sorted.
    let mut metrics: Vec<&str> = metrics.lines().collect();
    metrics.sort_unstable();
    Observed {
        outcome,
        audit: std::fs::read_to_string(&log).unwrap(),
        metrics: metrics.join("\n"),
    }
}

/// Arguments too long for the direct path's size bound (whose text is still under the limit)
/// take the value path and give the same outcome.
#[test]
fn arguments_near_the_size_limit_give_the_same_outcome() {
    let long = "x".repeat(700_000);
    let text = format!(
        "name: long\npolicy: {{version: \"1\", default: allow}}\nagents: {{a: {{grant: g}}}}\nsteps:\n  - {{at: 0s, agent: a, call: get_eks_insights, args: {{cluster_name: prod-eks}}}}\n  - {{at: 1s, agent: a, call: get_eks_insights, args: {{cluster_name: \"{long}\"}}}}\n"
    );
    let load = || tollgate_scenario::load_text(&path(), &text).unwrap();
    let (direct, value) = (observed(load(), true), observed(load(), false));
    assert_eq!(direct.outcome.calls, 2);
    assert_eq!(direct.outcome, value.outcome);
    assert_eq!(direct.audit, value.audit);
    assert_eq!(direct.metrics, value.metrics);
}

/// Every scenario of the corpus (scenarios/) has the same outcome, audit log and metrics on
/// the direct path as on the value path.
#[test]
fn every_corpus_scenario_runs_the_same_on_both_paths() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "the corpus is missing from {}",
        corpus.display()
    );
    for file in files {
        let load = || tollgate_scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let (direct, value) = (observed(load(), true), observed(load(), false));
        let name = file.display();
        assert_eq!(
            direct.outcome.transcript, value.outcome.transcript,
            "{name}"
        );
        assert_eq!(direct.outcome, value.outcome, "{name}");
        assert_eq!(direct.audit, value.audit, "the audit logs of {name} differ");
        assert_eq!(
            direct.metrics, value.metrics,
            "the metrics of {name} differ"
        );
    }
}
