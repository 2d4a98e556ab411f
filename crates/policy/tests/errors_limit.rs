//! Limits that count upstream errors (`"counts": "errors"`): parsing and diagnostics, the
//! refusal (`error_limited`, its text and exact `retry_after`), composition with limits that
//! count calls, and the engine against a brute-force model of errors answered later than
//! their calls were decided.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Map, Value, json};
use tollgate_policy::engine::DecisionKind;
use tollgate_policy::limiter::{CounterKey, LimitSpec};
use tollgate_policy::{Call, Counts, Engine, MemoryStore, Policy, ToolMeta};

/// At most 2 upstream errors per cluster per 10 s (per grant), and 5 calls per 10 s for
/// everybody.
const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
    "create_cluster": {"reason": "creates keep failing: look at the errors first", "limits": [
        {"counter": "create_errors", "window": 10, "max": 2, "by": ["/cluster_name"], "counts": "errors"},
        {"counter": "everyone", "window": 10, "max": 5, "scope": "global"}
    ]}
}}"#;

fn call(grant: u8, cluster: &str) -> Call {
    let mut arguments = Map::new();
    arguments.insert("cluster_name".into(), json!(cluster));
    Call {
        tool: "create_cluster".into(),
        arguments: Arc::new(Value::Object(arguments)),
        grant: format!("g{grant}").into(),
        session: "s".into(),
        meta: ToolMeta::default(),
    }
}

fn engine_of(text: &str) -> Engine {
    let policy = Policy::parse("p.json", text).unwrap_or_else(|d| panic!("{d}"));
    Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Two errors at 1 s and 3 s fill the budget: the call at 4 s is refused as `error_limited`,
/// naming the rule, the counter, the count and the time to retry (when the error at 1 s
/// leaves the window: 11 s); the call at 11 s is admitted again. Refusals count nothing.
#[test]
fn two_errors_in_the_window_refuse_until_the_oldest_leaves_it() {
    let e = engine_of(POLICY);
    let c = call(0, "prod");
    let first = e.decide(&c, secs(0));
    assert!(first.admits());
    assert_eq!(
        first.on_error.len(),
        1,
        "the errors counter is charged on error"
    );
    assert_eq!(first.on_error[0].1.counts, Counts::Errors);
    assert_eq!(&*first.on_error[0].0.scope_value, "g0|\"prod\"");
    let counted = e.record_error(&first.on_error, secs(1)).unwrap();
    assert_eq!((counted[0].used, counted[0].max), (1, 2));
    let second = e.decide(&c, secs(2));
    assert!(second.admits(), "one error in the window: still admitted");
    e.record_error(&second.on_error, secs(3)).unwrap();
    let refused = e.decide(&c, secs(4));
    assert_eq!(
        refused.kind,
        DecisionKind::ErrorLimited {
            retry_after: secs(7)
        }
    );
    assert!(refused.on_error.is_empty());
    assert_eq!(
        refused.summary("create_cluster"),
        "`create_cluster` stopped by rule `create_cluster` (/tools/create_cluster): creates keep \
         failing: look at the errors first: too many upstream errors (create_errors 2/2 errors \
         per 10s); stop retrying, the call is refused until the oldest error leaves the window: \
         retry in 7s"
    );
    let json = serde_json::to_value(&refused).unwrap();
    assert_eq!(json["decision"], "error_limited");
    assert_eq!(json["retry_after_seconds"], 7.0);
    assert_eq!(json["limits"][0]["counts"], "errors");
    assert_eq!(json["limits"][0]["used"], 2);
    assert!(
        json["limits"][1].get("counts").is_none(),
        "a calls counter's record is unchanged"
    );
    // Another cluster has its own budget; the refused call took nothing from `everyone`.
    assert!(e.decide(&call(0, "dev"), secs(4)).admits());
    assert_eq!(
        e.decide(&c, Duration::from_millis(10_999)).kind.name(),
        "error_limited"
    );
    assert!(e.decide(&c, secs(11)).admits(), "exactly one window later");
}

/// A call admitted before the budget filled whose answer is an error after it filled (a call
/// in flight) is counted too: the refusal lasts until the newest `max` errors leave.
#[test]
fn an_error_of_a_call_in_flight_is_counted_when_the_budget_is_full() {
    let e = engine_of(POLICY);
    let c = call(1, "prod");
    let in_flight: Vec<_> = (0..3).map(|i| e.decide(&c, secs(i))).collect();
    assert!(in_flight.iter().all(|d| d.admits()));
    for (i, d) in in_flight.iter().enumerate() {
        e.record_error(&d.on_error, secs(5 + i as u64)).unwrap();
    }
    // Errors at 5, 6 and 7 s: admitted again when the error at 6 s leaves (16 s), not 15 s.
    assert_eq!(
        e.decide(&c, secs(15)).kind,
        DecisionKind::ErrorLimited {
            retry_after: secs(1)
        }
    );
    assert!(e.decide(&c, secs(16)).admits());
}

/// When a limit on calls and a limit on errors both refuse, the refusal is `error_limited`
/// and waits for both; when only the calls limit refuses, it stays `rate_limited`.
#[test]
fn error_limited_names_the_errors_and_waits_for_every_refusing_limit() {
    let e = engine_of(POLICY);
    let c = call(2, "prod");
    let admitted: Vec<_> = (0..5).map(|_| e.decide(&c, secs(0))).collect();
    assert!(admitted.iter().all(|d| d.admits()));
    assert_eq!(e.decide(&c, secs(1)).kind.name(), "rate_limited");
    e.record_error(&admitted[0].on_error, secs(1)).unwrap();
    e.record_error(&admitted[1].on_error, secs(2)).unwrap();
    // Calls free at 10 s, errors at 11 s.
    assert_eq!(
        e.decide(&c, secs(3)).kind,
        DecisionKind::ErrorLimited {
            retry_after: secs(8)
        }
    );
}

/// Nothing is counted for a rule without an errors limit, and `record_error` of nothing asks
/// no store.
#[test]
fn a_rule_without_an_errors_limit_charges_nothing() {
    let e = engine_of(
        r#"{"version":"1","default":"deny","tools":{"t":{"rate_limit":{"max":1,"window":60}}}}"#,
    );
    let mut c = call(0, "x");
    c.tool = "t".into();
    let d = e.decide(&c, secs(0));
    assert!(d.admits() && d.on_error.is_empty());
    assert_eq!(e.record_error(&d.on_error, secs(1)).unwrap(), Vec::new());
}

/// One counter is one budget: the same name declared once counting calls and once errors is
/// an error at the second declaration, naming both; `counts` takes only `calls` or `errors`.
#[test]
fn counts_mismatch_and_unknown_values_are_located_errors() {
    let text = r#"{"version": "1", "default": "deny", "tools": {
  "a": {"limits": [{"counter": "c", "window": 60, "max": 3}]},
  "b": {"limits": [{"counter": "c", "window": 60, "max": 3, "counts": "errors"}]}
}}"#;
    let err = Policy::parse("p.json", text).unwrap_err().to_string();
    assert!(
        err.contains("counter `c` is declared twice with different limits"),
        "{err}"
    );
    assert!(err.contains("p.json:3:20"), "{err}");
    assert!(err.contains("max 3 errors per minute"), "{err}");
    let bad = r#"{"version": "1", "default": "deny", "tools": {
  "a": {"limits": [{"counter": "c", "window": 60, "max": 3, "counts": "failures"}]}
}}"#;
    let err = Policy::parse("p.json", bad).unwrap_err().to_string();
    assert!(err.contains("p.json:2:"), "{err}");
    assert!(err.contains("`calls`") && err.contains("`errors`"), "{err}");
}

/// `explain` shows what an errors limit counts, and the counters as they are (nothing taken).
#[test]
fn explain_shows_an_errors_limit() {
    let e = engine_of(POLICY);
    let c = call(0, "prod");
    let d = e.decide(&c, secs(0));
    e.record_error(&d.on_error, secs(1)).unwrap();
    let text = e.explain(&c, secs(2)).render();
    assert!(
        text.contains(
            "limit: create_errors scope=grant key=g0|\"prod\": 1/2 upstream errors per 10s"
        ),
        "{text}"
    );
}

/// The brute-force model: every recorded error (grant, cluster, instant) and every admitted
/// call's instant.
#[derive(Default)]
struct Model {
    errors: Vec<(u8, u8, Duration)>,
    calls: Vec<Duration>,
}

const WINDOW: Duration = Duration::from_secs(10);

impl Model {
    fn errors_in(&self, grant: u8, cluster: u8, at: Duration) -> usize {
        self.errors
            .iter()
            .filter(|(g, c, t)| *g == grant && *c == cluster && *t + WINDOW > at)
            .count()
    }

    fn calls_in(&self, at: Duration) -> usize {
        self.calls.iter().filter(|t| **t + WINDOW > at).count()
    }

    fn admits(&self, grant: u8, cluster: u8, at: Duration) -> bool {
        self.errors_in(grant, cluster, at) < 2 && self.calls_in(at) < 5
    }

    fn first_admitting(&self, grant: u8, cluster: u8, now: Duration) -> Duration {
        let mut candidates: Vec<Duration> = self
            .errors
            .iter()
            .map(|e| e.2)
            .chain(self.calls.iter().copied())
            .map(|t| t + WINDOW)
            .filter(|t| *t >= now)
            .collect();
        candidates.push(now);
        candidates.sort();
        candidates
            .into_iter()
            .find(|t| self.admits(grant, cluster, *t))
            .unwrap()
    }
}

/// A call: after `delta_ms`, grant and cluster; if admitted, its answer arrives `answer_ms`
/// later, an error or not.
#[derive(Debug, Clone)]
struct Step {
    delta_ms: u64,
    grant: u8,
    cluster: u8,
    answer_ms: u64,
    error: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![Just(0u64), Just(1), Just(10_000), 0u64..3_000, 0u64..12_000],
        0u8..2,
        0u8..2,
        prop_oneof![Just(0u64), 0u64..4_000, Just(10_000)],
        prop::bool::weighted(0.6),
    )
        .prop_map(|(delta_ms, grant, cluster, answer_ms, error)| Step {
            delta_ms,
            grant,
            cluster,
            answer_ms,
            error,
        })
}

type Pending = (Duration, u8, u8, Vec<(CounterKey, LimitSpec)>);

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let e = engine_of(POLICY);
    let mut model = Model::default();
    let mut now = Duration::ZERO;
    // Errors not yet answered: (arrives at, grant, cluster, what to charge).
    let mut pending: Vec<Pending> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        now += Duration::from_millis(s.delta_ms);
        // Answers that arrived by now are recorded first, in order of arrival.
        pending.sort_by_key(|p| p.0);
        let (due, later): (Vec<Pending>, Vec<Pending>) =
            pending.into_iter().partition(|p| p.0 <= now);
        pending = later;
        for (at, grant, cluster, on_error) in due {
            e.record_error(&on_error, at).unwrap();
            model.errors.push((grant, cluster, at));
        }
        let cluster = ["prod", "dev"][usize::from(s.cluster)];
        let d = e.decide(&call(s.grant, cluster), now);
        let expected = model.admits(s.grant, s.cluster, now);
        match d.kind {
            DecisionKind::Allow => {
                prop_assert!(expected, "step {i}: admitted, the model refuses");
                model.calls.push(now);
                if s.error {
                    pending.push((
                        now + Duration::from_millis(s.answer_ms),
                        s.grant,
                        s.cluster,
                        d.on_error,
                    ));
                }
            }
            DecisionKind::RateLimited { retry_after }
            | DecisionKind::ErrorLimited { retry_after } => {
                prop_assert!(!expected, "step {i}: refused, the model admits");
                let errors_full = model.errors_in(s.grant, s.cluster, now) >= 2;
                prop_assert_eq!(
                    matches!(d.kind, DecisionKind::ErrorLimited { .. }),
                    errors_full,
                    "step {}: the refusal names the errors iff they are full",
                    i
                );
                prop_assert_eq!(
                    now + retry_after,
                    model.first_admitting(s.grant, s.cluster, now),
                    "step {}: retry_after is not exact",
                    i
                );
            }
            other => prop_assert!(false, "step {i}: unexpected {other:?}"),
        }
    }
    Ok(())
}

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// With errors answered later than their calls were decided (a call in flight while the
    /// budget fills included), the engine admits exactly when fewer than `max` errors of the
    /// call's (grant, cluster) and fewer than `max` calls lie in the trailing window; a
    /// refusal is `error_limited` exactly when the errors are full, and `retry_after` is the
    /// first instant the model admits.
    #[test]
    fn errors_limit_admits_exactly_what_the_model_of_recorded_errors_admits(
        steps in prop::collection::vec(step(), 1..80)
    ) {
        run(steps)?;
    }
}
