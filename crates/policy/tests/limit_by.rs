//! Limits keyed by argument values (`"by": ["/cluster_name"]`): the engine against a
//! brute-force model that counts, per (grant, value), the admitted calls in the trailing window.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Map, Value, json};
use tollgate_policy::{Call, Engine, MemoryStore, Policy, ToolMeta};

const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
    "create_cluster": {"limits": [
        {"counter": "per_cluster", "window": 10, "max": 2, "scope": "grant", "by": ["/cluster_name"]},
        {"counter": "everyone", "window": 10, "max": 5, "scope": "global"}
    ]}
}}"#;

/// The cluster names a call can carry: two names, the tool's default spelled out, a number,
/// and none (which counts as the default).
const CLUSTERS: [Option<&str>; 5] = [
    Some("\"prod\""),
    Some("\"dev\""),
    Some("\"default-cluster\""),
    Some("7"),
    None,
];

fn call(grant: u8, cluster: Option<&str>) -> Call {
    let mut arguments = Map::new();
    if let Some(c) = cluster {
        arguments.insert("cluster_name".into(), serde_json::from_str(c).unwrap());
    }
    let defaults: Map<String, Value> = [("cluster_name".to_owned(), json!("default-cluster"))]
        .into_iter()
        .collect();
    Call {
        tool: "create_cluster".into(),
        arguments: Arc::new(Value::Object(arguments)),
        grant: format!("g{grant}").into(),
        session: "s".into(),
        meta: ToolMeta {
            defaults: Some(Arc::new(defaults)),
            ..ToolMeta::default()
        },
    }
}

fn engine() -> Engine {
    let policy = Policy::parse("p.json", POLICY).unwrap_or_else(|d| panic!("{d}"));
    Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()))
}

/// The obviously-correct model: every admitted call as (grant, effective cluster, instant).
#[derive(Default)]
struct Model {
    admitted: Vec<(u8, String, Duration)>,
}

impl Model {
    fn effective(cluster: Option<&str>) -> String {
        cluster.unwrap_or("\"default-cluster\"").to_owned()
    }

    fn admits(&self, grant: u8, cluster: Option<&str>, now: Duration) -> bool {
        let window = Duration::from_secs(10);
        let c = Model::effective(cluster);
        let in_window = |t: &Duration| *t + window > now;
        let per_cluster = self
            .admitted
            .iter()
            .filter(|(g, k, t)| *g == grant && *k == c && in_window(t))
            .count();
        let everyone = self
            .admitted
            .iter()
            .filter(|(_, _, t)| in_window(t))
            .count();
        per_cluster < 2 && everyone < 5
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    /// A limit with `by` is one budget per (scope value, argument value): the engine admits
    /// exactly when the per-(grant, cluster) and global brute-force counts allow, an argument
    /// left out counts as its default (the same budget as the default written out), and the
    /// value's JSON kind matters (`7` is not `"7"`).
    #[test]
    fn a_limit_by_an_argument_counts_each_value_apart(
        steps in prop::collection::vec((0u64..4_000, 0u8..2, 0usize..5), 1..80)
    ) {
        let engine = engine();
        let mut model = Model::default();
        let mut now = Duration::from_secs(100);
        for (i, (delta_ms, grant, cluster)) in steps.into_iter().enumerate() {
            now += Duration::from_millis(delta_ms);
            let cluster = CLUSTERS[cluster];
            let expected = model.admits(grant, cluster, now);
            let decision = engine.decide(&call(grant, cluster), now);
            prop_assert_eq!(decision.admits(), expected, "step {}: {:?}", i, decision);
            if expected {
                model.admitted.push((grant, Model::effective(cluster), now));
            }
        }
    }
}

/// The key names the value, so an explanation and the audit record say whose budget it is; a
/// long value is cut, with its length.
#[test]
fn the_key_names_the_scope_and_the_value() {
    let engine = engine();
    let d = engine.decide(&call(0, Some("\"prod\"")), Duration::ZERO);
    assert_eq!(&*d.limits[0].key, "g0|\"prod\"");
    assert_eq!(&*d.limits[1].key, "*");
    let long = format!("\"{}\"", "x".repeat(1_000));
    let d = engine.decide(&call(0, Some(&long)), Duration::ZERO);
    assert_eq!(
        d.limits[0].key.len(),
        "g0|".len() + 256 + "…(1002 bytes)".len()
    );
    assert!(d.limits[0].key.ends_with("…(1002 bytes)"));
}

/// `by` takes JSON pointers, and a counter shared by two rules must be keyed alike.
#[test]
fn bad_by_pointers_and_counters_keyed_differently_are_refused() {
    let err = Policy::parse(
        "p.json",
        r#"{"version": "1", "default": "deny", "tools": {"t": {"limits": [
            {"counter": "c", "window": 10, "max": 2, "by": ["cluster_name"]}]}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("is not a JSON pointer"), "{err}");
    let err = Policy::parse(
        "p.json",
        r#"{"version": "1", "default": "deny", "tools": {
            "a": {"limits": [{"counter": "c", "window": 10, "max": 2, "by": ["/cluster_name"]}]},
            "b": {"limits": [{"counter": "c", "window": 10, "max": 2}]}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("declared twice"), "{err}");
}
