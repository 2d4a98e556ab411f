//! Model-based property tests of the strict sliding-window limiter: the in-memory store is
//! compared, after every step, with a brute-force model that keeps every admitted call and
//! counts those in the trailing window.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use tollgate_policy::limiter::{Acquire, CounterKey, CounterStore, LimitSpec, MemoryStore, Scope};

/// Three counters with different windows, maxes and scopes.
fn specs() -> Vec<LimitSpec> {
    let spec = |name: &str, secs: u64, max: u32, scope: Scope| LimitSpec {
        counter: Arc::from(name),
        window: Duration::from_secs(secs),
        max,
        scope,
    };
    vec![
        spec("per_grant", 10, 3, Scope::Grant),
        spec("per_session", 60, 5, Scope::Session),
        spec("global", 7, 2, Scope::Global),
    ]
}

#[derive(Debug, Clone)]
struct Step {
    /// Milliseconds to move the clock; negative moves it backwards.
    delta_ms: i64,
    grant: u8,
    session: u8,
    /// Which of the three limits apply (never empty).
    mask: u8,
    dry_run: bool,
    evict_before: bool,
}

fn step(backwards: bool) -> impl Strategy<Value = Step> {
    // Deltas cluster at 0 and at the windows' edges, where off-by-one errors live.
    let edge = prop_oneof![
        Just(0i64),
        Just(1),
        Just(7_000),
        Just(10_000),
        Just(9_999),
        Just(10_001),
        0i64..3_000,
        0i64..70_000,
    ];
    let delta = if backwards {
        prop_oneof![3 => edge, 1 => -12_000i64..0].boxed()
    } else {
        edge.boxed()
    };
    (
        delta,
        0u8..3,
        0u8..3,
        1u8..8,
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(delta_ms, grant, session, mask, dry_run, evict_before)| Step {
                delta_ms,
                grant,
                session,
                mask,
                dry_run,
                evict_before,
            },
        )
}

fn limits_for(step: &Step) -> Vec<(CounterKey, LimitSpec)> {
    specs()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| step.mask & (1 << i) != 0)
        .map(|(_, spec)| {
            let scope_value: Arc<str> = match spec.scope {
                Scope::Grant => format!("g{}", step.grant).into(),
                Scope::Session => format!("s{}", step.session).into(),
                Scope::Global => "*".into(),
            };
            (
                CounterKey {
                    counter: spec.counter.clone(),
                    scope_value,
                },
                spec,
            )
        })
        .collect()
}

/// The obviously-correct model: every admitted (key, instant), forever.
#[derive(Default)]
struct Model {
    admitted: Vec<(CounterKey, Duration)>,
    /// The latest instant seen: the store never evaluates earlier than this.
    high_water: Duration,
}

impl Model {
    /// The instant a call at `now` is evaluated at (the documented clamp).
    fn at(&self, _key: &CounterKey, now: Duration) -> Duration {
        now.max(self.high_water)
    }

    fn admits_one(&self, key: &CounterKey, spec: &LimitSpec, now: Duration) -> bool {
        let at = self.at(key, now);
        let used = self
            .admitted
            .iter()
            .filter(|(k, t)| k == key && *t + spec.window > at)
            .count();
        used < spec.max as usize
    }

    fn admits(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> bool {
        limits.iter().all(|(k, s)| self.admits_one(k, s, now))
    }

    /// The first instant >= now at which the same call would be admitted, by brute force over
    /// every instant where the answer can change.
    fn first_admitting(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> Duration {
        let mut candidates: Vec<Duration> = self
            .admitted
            .iter()
            .flat_map(|(_, t)| specs().into_iter().map(move |s| *t + s.window))
            .filter(|c| *c >= now)
            .collect();
        candidates.push(now);
        candidates.sort();
        candidates
            .into_iter()
            .find(|c| self.admits(limits, *c))
            .unwrap()
    }

    fn take(&mut self, limits: &[(CounterKey, LimitSpec)], now: Duration) {
        for (k, _) in limits {
            let at = self.at(k, now);
            self.admitted.push((k.clone(), at));
        }
    }
}

fn check(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let store = MemoryStore::with_shards(4);
    let mut model = Model::default();
    let mut now = Duration::from_secs(100);
    for (i, step) in steps.iter().enumerate() {
        now = if step.delta_ms >= 0 {
            now + Duration::from_millis(step.delta_ms.unsigned_abs())
        } else {
            now.saturating_sub(Duration::from_millis(step.delta_ms.unsigned_abs()))
        };
        if step.evict_before {
            store.evict_idle(now);
            model.high_water = model.high_water.max(now);
        }
        let limits = limits_for(step);
        model.high_water = model.high_water.max(now);
        let expected = model.admits(&limits, now);
        match store.acquire(&limits, now, step.dry_run) {
            Acquire::Admitted { states } => {
                prop_assert!(
                    expected,
                    "step {i}: store admitted, model refuses (over-admission)"
                );
                for s in &states {
                    prop_assert!(s.used <= s.max, "step {i}: used {} > max {}", s.used, s.max);
                }
                if !step.dry_run {
                    model.take(&limits, now);
                }
            }
            Acquire::Refused {
                retry_after,
                refused_by,
                ..
            } => {
                prop_assert!(
                    !expected,
                    "step {i}: store refused, model admits (false refusal)"
                );
                prop_assert!(!refused_by.is_empty());
                let first = model.first_admitting(&limits, now);
                prop_assert_eq!(
                    now + retry_after,
                    first,
                    "step {}: retry_after is not exact",
                    i
                );
            }
            Acquire::Unavailable { .. } => {
                prop_assert!(false, "step {i}: the memory store is never unavailable");
            }
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

    /// Strictness and exactness: with monotonic time, the store admits exactly when the
    /// brute-force model does (no over-admission, no false refusal), `retry_after` is the first
    /// admitting instant, scopes are isolated, refused calls and dry runs consume nothing, and
    /// evicting idle keys at arbitrary points changes no decision.
    #[test]
    fn limiter_admits_exactly_what_the_trailing_window_model_admits(
        steps in prop::collection::vec(step(false), 1..120)
    ) {
        check(steps)?;
    }

    /// The same equivalence holds when the clock goes backwards (clock skew, out-of-order
    /// replays): a call earlier than a key's newest admission is evaluated at that admission.
    #[test]
    fn limiter_matches_model_when_time_goes_backwards(
        steps in prop::collection::vec(step(true), 1..120)
    ) {
        check(steps)?;
    }
}

/// A call exactly `window` after the oldest admission is admitted: the window is half-open.
#[test]
fn call_exactly_one_window_after_the_oldest_is_admitted() {
    let store = MemoryStore::new();
    let spec = &specs()[0];
    let limits = vec![(
        CounterKey {
            counter: spec.counter.clone(),
            scope_value: "g".into(),
        },
        spec.clone(),
    )];
    let t0 = Duration::from_secs(5);
    for _ in 0..3 {
        assert!(matches!(
            store.acquire(&limits, t0, false),
            Acquire::Admitted { .. }
        ));
    }
    let just_before = t0 + spec.window - Duration::from_nanos(1);
    match store.acquire(&limits, just_before, false) {
        Acquire::Refused { retry_after, .. } => assert_eq!(retry_after, Duration::from_nanos(1)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        store.acquire(&limits, t0 + spec.window, false),
        Acquire::Admitted { .. }
    ));
}

/// The seed's runaway agent: 10 per minute per grant; the 11th call in the minute is refused
/// and told to come back when the first call leaves the window; another grant is unaffected.
#[test]
fn seed_runaway_agent_gets_ten_per_minute_per_grant() {
    let store = MemoryStore::new();
    let spec = LimitSpec {
        counter: "cancelahorunbatch_rate".into(),
        window: Duration::from_secs(60),
        max: 10,
        scope: Scope::Grant,
    };
    let key = |g: &str| {
        vec![(
            CounterKey {
                counter: spec.counter.clone(),
                scope_value: g.into(),
            },
            spec.clone(),
        )]
    };
    for i in 0..10 {
        let r = store.acquire(&key("ci-bot"), Duration::from_secs(i), false);
        assert!(matches!(r, Acquire::Admitted { .. }), "call {i}");
    }
    match store.acquire(&key("ci-bot"), Duration::from_secs(12), false) {
        Acquire::Refused {
            retry_after,
            states,
            ..
        } => {
            assert_eq!(retry_after, Duration::from_secs(48));
            assert_eq!(states[0].used, 10);
            assert_eq!(states[0].oldest_leaves_at, Some(Duration::from_secs(60)));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        store.acquire(&key("other"), Duration::from_secs(12), false),
        Acquire::Admitted { .. }
    ));
}

/// Idle keys are evicted, so memory follows the active keys only.
#[test]
fn idle_keys_are_evicted() {
    let store = MemoryStore::new();
    let spec = specs()[0].clone();
    for g in 0..100 {
        let limits = vec![(
            CounterKey {
                counter: spec.counter.clone(),
                scope_value: format!("g{g}").into(),
            },
            spec.clone(),
        )];
        store.acquire(&limits, Duration::from_secs(1), false);
    }
    assert_eq!(store.len(), 100);
    store.evict_idle(Duration::from_secs(10));
    assert_eq!(
        store.len(),
        100,
        "a key is not idle before its window has passed"
    );
    store.evict_idle(Duration::from_secs(11));
    assert!(store.is_empty());
}
