//! The fuzzer checks real properties: it passes a correct gateway, and it finds, shrinks and
//! saves a broken one (a counter store that over-admits, injected as a test seam).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail by panicking"
)]

use std::path::PathBuf;
use std::sync::Arc;

use tollgate_policy::limiter::{Acquire, CounterKey, LimitSpec};
use tollgate_policy::{CounterStore, MemoryStore, Policy};
use tollgate_scenario::fuzz::{FuzzOptions, fuzz};

/// The policy at `path` (relative to this crate), loaded.
fn policy_at(path: &str) -> (PathBuf, Arc<Policy>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    let policy = Policy::load(&path).unwrap_or_else(|d| panic!("{}", d.render_plain()));
    (path, Arc::new(policy))
}

fn seed_policy() -> (PathBuf, Arc<Policy>) {
    policy_at("../../examples/policies/seed.json")
}

fn memory() -> Arc<dyn CounterStore> {
    Arc::new(MemoryStore::new())
}

/// A store that admits what it should refuse: the bug the fuzzer must catch.
#[derive(Debug, Default)]
struct OverAdmitting(MemoryStore);

impl CounterStore for OverAdmitting {
    fn record(&self, limits: &[(CounterKey, LimitSpec)], now: std::time::Duration) -> Acquire {
        self.0.record(limits, now)
    }

    fn acquire(
        &self,
        limits: &[(CounterKey, LimitSpec)],
        now: std::time::Duration,
        dry_run: bool,
    ) -> Acquire {
        match self.0.acquire(limits, now, dry_run) {
            Acquire::Refused { states, .. } => Acquire::Admitted { states },
            other => other,
        }
    }
}

/// On the seed policy the gateway keeps every property over many generated sessions, and the
/// summary covers the policy's rules (its one rule and `default` both decide calls).
#[test]
fn the_seed_policy_keeps_every_property() {
    let (path, policy) = seed_policy();
    let options = FuzzOptions {
        cases: 48,
        seed: 7,
        ..FuzzOptions::default()
    };
    let report = fuzz(&path, policy, &memory, &options, |_| {});
    assert!(report.violation.is_none(), "{:?}", report.violation);
    assert_eq!(report.cases, 48);
    assert!(report.calls >= 48);
    assert!(report.fired.contains("CancelAHORunBatch"), "{report:?}");
    assert!(report.fired.contains("default"), "{report:?}");
    assert!(report.decisions.contains_key("deny"), "{report:?}");
    assert!(
        report.decisions.contains_key("unknown_tool"),
        "near misses are generated: {report:?}"
    );
}

/// An over-admitting store breaks strictness: the fuzzer finds it, shrinks the session to the
/// eleven calls that show it (ten admitted, one too many), and returns a scenario file that
/// loads.
#[test]
fn an_over_admitting_store_is_found_shrunk_and_saved() {
    let (path, policy) = seed_policy();
    let store = || -> Arc<dyn CounterStore> { Arc::new(OverAdmitting::default()) };
    let options = FuzzOptions {
        cases: 200,
        seed: 1,
        ..FuzzOptions::default()
    };
    let report = fuzz(&path, policy, &store, &options, |_| {});
    let v = report
        .violation
        .expect("the fuzzer must find the over-admission");
    assert!(v.message.contains("over-admission"), "{}", v.message);
    assert_eq!(
        v.calls, 11,
        "shrunk to the minimal session:\n{}",
        v.scenario
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fuzz-violation.yaml");
    std::fs::write(&file, &v.scenario).unwrap();
    let loaded = tollgate_scenario::load(&file).unwrap_or_else(|e| panic!("{e}\n{}", v.scenario));
    assert_eq!(loaded.scenario.steps.len(), 11);
    // Replayed with the real store, the saved session is decided correctly: 10 admitted.
    let outcome = tollgate_scenario::run(loaded);
    assert_eq!(
        outcome
            .transcript
            .matches("CancelAHORunBatch -> allow")
            .count(),
        10,
        "{}",
        outcome.transcript
    );
}

/// The same seed gives the same run.
#[test]
fn the_same_seed_gives_the_same_report() {
    let (path, policy) = seed_policy();
    let options = FuzzOptions {
        cases: 16,
        seed: 42,
        ..FuzzOptions::default()
    };
    let a = fuzz(&path, Arc::clone(&policy), &memory, &options, |_| {});
    let b = fuzz(&path, policy, &memory, &options, |_| {});
    assert_eq!(
        (a.cases, a.calls, &a.decisions, &a.fired),
        (b.cases, b.calls, &b.decisions, &b.fired)
    );
}

/// The report depends on the seed alone, not on how many threads ran the shards: one thread and
/// four give the same sessions, decisions and rules fired.
#[test]
fn the_report_does_not_depend_on_the_number_of_threads() {
    let (path, policy) = seed_policy();
    let run = |jobs| {
        let options = FuzzOptions {
            cases: 40,
            seed: 9,
            jobs: Some(jobs),
            ..FuzzOptions::default()
        };
        fuzz(&path, Arc::clone(&policy), &memory, &options, |_| {})
    };
    let (one, four) = (run(1), run(4));
    assert!(one.violation.is_none(), "{:?}", one.violation);
    assert_eq!(
        (one.cases, one.calls, &one.decisions, &one.fired),
        (four.cases, four.calls, &four.decisions, &four.fired)
    );
}

/// An over-admission is reported the same, shrunk to the same minimal session, whether one
/// thread or several looked for it (the lowest failing shard's violation is the one reported).
#[test]
fn the_violation_found_does_not_depend_on_the_number_of_threads() {
    let (path, policy) = seed_policy();
    let store = || -> Arc<dyn CounterStore> { Arc::new(OverAdmitting::default()) };
    let run = |jobs| {
        let options = FuzzOptions {
            cases: 64,
            seed: 1,
            jobs: Some(jobs),
            ..FuzzOptions::default()
        };
        fuzz(&path, Arc::clone(&policy), &store, &options, |_| {})
            .violation
            .expect("the over-admission is found")
    };
    let (one, three) = (run(1), run(3));
    assert_eq!(
        (&one.message, &one.scenario),
        (&three.message, &three.scenario)
    );
}

/// On the recommended EKS policy (`hide_from_list`, argument rules, `when` branches, approvals,
/// shared counters) every property holds, and the generated arguments reach the policy's own
/// argument checks (values at their edges come from the policy) and, in bursts, its limits: calls
/// are allowed, refused as invalid arguments, denied, refused as needing an approval (the fuzzing
/// gateway has no approver) and rate limited. A policy that hides tools from the client's listing
/// once made the fuzzer's model expect `unknown_tool` for a tool the upstream does offer.
#[test]
fn the_recommended_policy_keeps_every_property_and_meets_its_argument_rules() {
    let (path, policy) = policy_at("../../examples/policies/eks-recommended.json");
    let options = FuzzOptions {
        cases: 200,
        seed: 11,
        ..FuzzOptions::default()
    };
    let report = fuzz(&path, policy, &memory, &options, |_| {});
    assert!(report.violation.is_none(), "{:?}", report.violation);
    for decision in [
        "allow",
        "invalid_arguments",
        "approval_required",
        "deny",
        "rate_limited",
    ] {
        assert!(
            report.decisions.contains_key(decision),
            "no call was decided {decision}: {report:?}"
        );
    }
    assert!(
        report.fired.contains("manage_k8s_resource"),
        "the `when` rule decided calls: {report:?}"
    );
}

/// A policy using every kind of argument check (`required`, `prefix`, `max_length`,
/// `not_enum`, `pattern`, `forbidden`, `enum`, `min`, `max`) and `when` branches (string and
/// number cases, with and without `otherwise`): the engine's decisions agree with the fuzzer's
/// own reading of the checks on every generated call, and the generated arguments reach both
/// sides of the checks (calls are refused for their arguments and allowed).
#[test]
fn argument_checks_agree_with_the_fuzzers_own_reading() {
    let (path, policy) = policy_at("tests/fixtures/every-argument-check.json");
    let options = FuzzOptions {
        cases: 200,
        seed: 3,
        ..FuzzOptions::default()
    };
    let report = fuzz(&path, policy, &memory, &options, |_| {});
    assert!(report.violation.is_none(), "{:?}", report.violation);
    for kind in ["allow", "deny", "invalid_arguments", "rate_limited"] {
        assert!(report.decisions.contains_key(kind), "{kind}: {report:?}");
    }
    assert!(report.never_fired.is_empty(), "{report:?}");
}

/// The upstreams of the several-upstreams fuzz: `eks` with the default prefix, `omics` with its
/// own.
fn two_upstreams() -> Vec<(String, String)> {
    vec![
        ("eks".into(), "eks__".into()),
        ("omics".into(), "omics.".into()),
    ]
}

/// Behind two upstreams the gateway keeps every property: sessions draw names from the union of
/// the upstreams' exposed names (and the policy's unprefixed one, which no upstream lists), the
/// model decides `upstream:` rules and prefixed patterns as the gateway does, and what reached
/// the upstreams is checked by exposed name, call by call.
#[test]
fn several_upstreams_keep_every_property() {
    let (path, policy) = policy_at("tests/fixtures/several-upstreams-policy.json");
    let options = FuzzOptions {
        cases: 48,
        seed: 11,
        ..FuzzOptions::default()
    };
    let report = tollgate_scenario::fuzz::fuzz_several(
        &path,
        policy,
        &memory,
        &options,
        &two_upstreams(),
        |_| {},
    );
    assert!(report.violation.is_none(), "{:?}", report.violation);
    for rule in ["upstream:omics", "eks__list_*", "eks__manage_k8s_resource"] {
        assert!(report.fired.contains(rule), "{rule}: {report:?}");
    }
    // The unprefixed name is no tool of this gateway: refused as unknown, never by its rule.
    assert!(
        report.never_fired.contains(&"GetAHOBatch".to_owned()),
        "{report:?}"
    );
    for d in ["allow", "rate_limited", "deny", "unknown_tool"] {
        assert!(report.decisions.contains_key(d), "{d}: {report:?}");
    }
}

/// Behind two upstreams an over-admitting store is caught too, and the minimal session is a
/// scenario of the same two upstreams that loads (and fails its run as the fuzzer said).
#[test]
fn several_upstreams_catch_an_over_admitting_store() {
    let (path, policy) = policy_at("tests/fixtures/several-upstreams-policy.json");
    let options = FuzzOptions {
        cases: 64,
        seed: 5,
        ..FuzzOptions::default()
    };
    let store = || -> Arc<dyn CounterStore> { Arc::new(OverAdmitting::default()) };
    let report = tollgate_scenario::fuzz::fuzz_several(
        &path,
        policy,
        &store,
        &options,
        &two_upstreams(),
        |_| {},
    );
    let v = report
        .violation
        .expect("the over-admitting store is caught");
    assert!(
        v.scenario
            .contains("upstreams:\n  - {name: \"eks\", prefix: \"eks__\""),
        "{}",
        v.scenario
    );
    let loaded = tollgate_scenario::load_text(&path, &v.scenario).unwrap();
    assert!(loaded.scenario.several_upstreams());
}
