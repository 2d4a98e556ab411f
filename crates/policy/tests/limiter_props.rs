//! Model-based property tests of the strict sliding-window limiter: the in-memory store is
//! compared, after every step, with a brute-force model that keeps every admitted call (and,
//! for a limit that counts errors, every recorded error) and counts those in the trailing
//! window.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use tollgate_policy::limiter::{
    Acquire, CounterKey, CounterStore, Counts, LimitSpec, MemoryStore, Scope,
};

/// Three counters with different windows, maxes and scopes, in three versions of the policy
/// that a reload switches between: version 0, the same counters with longer windows and larger
/// maxes (1), and with shorter windows and smaller maxes (2). Same names and scopes, so a
/// reload keeps their keys.
fn specs_of(version: u8) -> Vec<LimitSpec> {
    let spec = |name: &str, secs: u64, max: u32, scope: Scope| LimitSpec {
        counter: Arc::from(name),
        window: Duration::from_secs(secs),
        max,
        scope,
        counts: Counts::Calls,
    };
    let (windows, maxes) = match version {
        1 => ([30, 600, 20, 15], [5, 8, 4, 3]),
        2 => ([4, 20, 3, 5], [2, 3, 1, 1]),
        _ => ([10, 60, 7, 8], [3, 5, 2, 2]),
    };
    vec![
        spec("per_grant", windows[0], maxes[0], Scope::Grant),
        spec("per_session", windows[1], maxes[1], Scope::Session),
        spec("global", windows[2], maxes[2], Scope::Global),
        // Counts upstream errors: checked by `acquire`, taken by `record`.
        LimitSpec {
            counts: Counts::Errors,
            ..spec("errors", windows[3], maxes[3], Scope::Grant)
        },
    ]
}

fn specs() -> Vec<LimitSpec> {
    specs_of(0)
}

#[derive(Debug, Clone)]
struct Step {
    /// Milliseconds to move the clock; negative moves it backwards.
    delta_ms: i64,
    grant: u8,
    session: u8,
    /// Which of the four limits apply (never empty).
    mask: u8,
    /// After the acquire, an upstream error is recorded on the step's limits that count
    /// errors (the store records whatever they hold, admitted or not).
    error: bool,
    dry_run: bool,
    evict_before: bool,
    /// A reload to this version of the policy before the call (at the step's instant).
    reload: Option<u8>,
}

fn step(backwards: bool, reloads: bool) -> impl Strategy<Value = Step> {
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
    let reload = if reloads {
        prop_oneof![6 => Just(None), 1 => (0u8..3).prop_map(Some)].boxed()
    } else {
        Just(None).boxed()
    };
    (
        delta,
        0u8..3,
        0u8..3,
        1u8..16,
        any::<bool>(),
        prop::bool::weighted(0.1),
        reload,
        prop::bool::weighted(0.4),
    )
        .prop_map(
            |(delta_ms, grant, session, mask, dry_run, evict_before, reload, error)| Step {
                delta_ms,
                grant,
                session,
                mask,
                error,
                dry_run,
                evict_before,
                reload,
            },
        )
}

fn limits_for(step: &Step, version: u8) -> Vec<(CounterKey, LimitSpec)> {
    specs_of(version)
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

/// What one key remembers, kept as the documented rule says (limiter module docs): its newest
/// `keep_max` admissions since it was last idle, with the longest window and largest max it
/// served; idle once its newest admission is `keep_window` old.
#[derive(Debug, Clone)]
struct Remembered {
    admitted: Vec<Duration>,
    keep_window: Duration,
    keep_max: u32,
}

impl Remembered {
    fn idle_at(&self) -> Option<Duration> {
        self.admitted.last().map(|t| *t + self.keep_window)
    }

    fn is_idle(&self, at: Duration) -> bool {
        self.idle_at().is_none_or(|i| i <= at)
    }
}

/// The obviously-correct model: per key, the admissions it remembers, counted by brute force
/// over the trailing window. Without reloads it keeps every admission of the key's current
/// episode, so it is the plain "count admitted calls in the window" model.
#[derive(Default)]
struct Model {
    keys: Vec<(CounterKey, Remembered)>,
    /// The latest instant seen: the store never evaluates earlier than this.
    high_water: Duration,
}

impl Model {
    /// The instant a call at `now` is evaluated at (the documented clamp).
    fn at(&self, now: Duration) -> Duration {
        now.max(self.high_water)
    }

    fn get(&self, key: &CounterKey) -> Option<&Remembered> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, r)| r)
    }

    fn admits_one(&self, key: &CounterKey, spec: &LimitSpec, now: Duration) -> bool {
        let at = self.at(now);
        let used = self.get(key).filter(|r| !r.is_idle(at)).map_or(0, |r| {
            r.admitted.iter().filter(|t| **t + spec.window > at).count()
        });
        used < spec.max as usize
    }

    fn admits(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> bool {
        limits.iter().all(|(k, s)| self.admits_one(k, s, now))
    }

    /// The first instant >= now at which the same call would be admitted, by brute force over
    /// every instant where the answer can change.
    fn first_admitting(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> Duration {
        let windows: Vec<Duration> = (0..3)
            .flat_map(|v| specs_of(v).into_iter().map(|s| s.window))
            .collect();
        let mut candidates: Vec<Duration> = self
            .keys
            .iter()
            .flat_map(|(_, r)| {
                let windows = &windows;
                r.admitted
                    .iter()
                    .flat_map(move |t| windows.iter().map(move |w| *t + *w))
                    .chain(r.idle_at())
            })
            .filter(|c| *c >= now)
            .collect();
        candidates.push(now);
        candidates.sort();
        candidates
            .into_iter()
            .find(|c| self.admits(limits, *c))
            .unwrap()
    }

    /// An admission: every limit that counts calls takes the call.
    fn take(&mut self, limits: &[(CounterKey, LimitSpec)], now: Duration) {
        let calls: Vec<_> = limits
            .iter()
            .filter(|(_, s)| s.counts == Counts::Calls)
            .cloned()
            .collect();
        self.push(&calls, now);
    }

    /// An upstream error: every limit given takes it, whatever it holds.
    fn push(&mut self, limits: &[(CounterKey, LimitSpec)], now: Duration) {
        let at = self.at(now);
        for (i, (k, spec)) in limits.iter().enumerate() {
            if limits[..i].iter().any(|(earlier, _)| earlier == k) {
                continue;
            }
            let fresh = Remembered {
                admitted: Vec::new(),
                keep_window: spec.window,
                keep_max: spec.max,
            };
            let r = match self.keys.iter().position(|(key, _)| key == k) {
                Some(p) => &mut self.keys[p].1,
                None => {
                    self.keys.push((k.clone(), fresh.clone()));
                    &mut self.keys.last_mut().unwrap().1
                }
            };
            if r.is_idle(at) {
                *r = fresh;
            } else {
                r.keep_window = r.keep_window.max(spec.window);
                r.keep_max = r.keep_max.max(spec.max);
            }
            r.admitted.push(at);
            let excess = r.admitted.len().saturating_sub(r.keep_max as usize);
            r.admitted.drain(..excess);
        }
    }

    /// A reload at `now`: keys not idle take the longest window and largest max of what they
    /// served and their counter's new limit; idle ones are forgotten.
    fn reload(&mut self, next: &[LimitSpec], now: Duration) {
        self.high_water = self.high_water.max(now);
        let at = self.high_water;
        self.keys.retain_mut(|(k, r)| {
            let Some(spec) = next.iter().find(|s| s.counter == k.counter) else {
                return true;
            };
            if r.is_idle(at) {
                return false;
            }
            r.keep_window = r.keep_window.max(spec.window);
            r.keep_max = r.keep_max.max(spec.max);
            true
        });
    }
}

fn check(steps: Vec<Step>) -> Result<(), TestCaseError> {
    check_with_jitter(steps, &[])
}

/// [`check`], with step `i` moved on by `jitter[i % len]` nanoseconds more (none when empty).
fn check_with_jitter(steps: Vec<Step>, jitter: &[u64]) -> Result<(), TestCaseError> {
    let store = MemoryStore::with_shards(4);
    let mut model = Model::default();
    let mut now = Duration::from_secs(100);
    let mut version = 0u8;
    for (i, step) in steps.iter().enumerate() {
        now = if step.delta_ms >= 0 {
            now + Duration::from_millis(step.delta_ms.unsigned_abs())
        } else {
            now.saturating_sub(Duration::from_millis(step.delta_ms.unsigned_abs()))
        };
        if !jitter.is_empty() {
            now += Duration::from_nanos(jitter[i % jitter.len()]);
        }
        if let Some(next) = step.reload {
            store
                .reloaded(&specs_of(version), &specs_of(next), now)
                .unwrap();
            model.reload(&specs_of(next), now);
            version = next;
        }
        if step.evict_before {
            store.evict_idle(now);
            model.high_water = model.high_water.max(now);
        }
        let limits = limits_for(step, version);
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
        let errors: Vec<_> = limits
            .iter()
            .filter(|(_, s)| s.counts == Counts::Errors)
            .cloned()
            .collect();
        if step.error && !errors.is_empty() {
            model.push(&errors, now);
            let at = model.at(now);
            let Acquire::Admitted { states } = store.record(&errors, now) else {
                panic!("step {i}: recording an error is never refused");
            };
            for ((k, spec), state) in errors.iter().zip(&states) {
                let expected = model.get(k).map_or(0, |r| {
                    r.admitted.iter().filter(|t| **t + spec.window > at).count()
                });
                prop_assert_eq!(
                    state.used as usize,
                    expected,
                    "step {}: the errors counted after recording",
                    i
                );
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
        steps in prop::collection::vec(step(false, false), 1..120)
    ) {
        check(steps)?;
    }

    /// The same equivalence holds when the clock goes backwards (clock skew, out-of-order
    /// replays): a call earlier than a key's newest admission is evaluated at that admission.
    #[test]
    fn limiter_matches_model_when_time_goes_backwards(
        steps in prop::collection::vec(step(true, false), 1..120)
    ) {
        check(steps)?;
    }

    /// Reloads that lengthen and shorten windows and raise and lower `max` mid-run: the store
    /// decides exactly as the documented rule of what a key remembers across reloads (its
    /// newest admissions since it was last idle, under the longest window and largest max it
    /// served), whatever unrelated traffic, dry runs and evictions happen in between.
    #[test]
    fn limiter_matches_model_across_reloads_that_change_windows_and_max(
        steps in prop::collection::vec(step(true, true), 1..120)
    ) {
        check(steps)?;
    }
}

/// Nanoseconds added to steps, clustered where the store's packing of a key's admissions
/// changes: offsets just below and at 2^32 and 2^40 nanoseconds (4- to 5- and 5- to 6-byte
/// offsets), sub-millisecond jitter that makes every timestamp odd, and a step of just under
/// the longest window (600 s), so a key that is not idle spans more than 2^40 ns.
fn jitter_ns() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        3 => Just(1),
        6 => 0u64..1_000_000,
        1 => Just((1 << 32) - 1),
        1 => Just(1 << 32),
        1 => Just((1 << 40) - 1),
        1 => Just(1 << 40),
        1 => Just(599_999_999_999),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// The store keeps each admission to the nanosecond, however it packs them: with
    /// timestamps off the millisecond grid and gaps around the packing's width edges, with
    /// time going backwards and reloads, it still decides exactly as the model.
    #[test]
    fn limiter_matches_model_at_nanosecond_instants_across_packing_widths(
        steps in prop::collection::vec(step(true, true), 1..120),
        jitter in prop::collection::vec(jitter_ns(), 1..16),
    ) {
        check_with_jitter(steps, &jitter)?;
    }

    /// `acquire_one` (the engine's path for a rule with one limit, by borrowed key parts) and
    /// `acquire` of the same single limit answer identically, step for step, on two stores
    /// fed the same calls.
    #[test]
    fn acquire_one_answers_as_acquire_of_one_limit(
        steps in prop::collection::vec(step(true, false), 1..120),
    ) {
        let (by_one, by_list) = (MemoryStore::with_shards(4), MemoryStore::with_shards(4));
        let mut now = Duration::from_secs(100);
        for (i, step) in steps.iter().enumerate() {
            let delta = Duration::from_millis(step.delta_ms.unsigned_abs());
            now = if step.delta_ms >= 0 { now + delta } else { now.saturating_sub(delta) };
            for limit in limits_for(step, 0) {
                let (key, spec) = &limit;
                let one = by_one.acquire_one(&key.counter, &key.scope_value, spec, now, step.dry_run);
                let list = by_list.acquire(std::slice::from_ref(&limit), now, step.dry_run);
                prop_assert_eq!(one, list, "step {}", i);
            }
        }
    }
}

/// Issue 19: 3 per minute, calls at 0, 1 and 2 s and one at 65 s, a reload to 3 per hour at
/// 70 s. The key was idle from 62 s (every admission had left the only window it served), so
/// the call at 65 s started afresh and the hour counts it alone: two more are admitted at 71 s
/// and the third is refused until 65 s + 1 h. Without the call at 65 s the key is forgotten at
/// the reload and three are admitted; with the reload at 30 s instead, the calls at 0-2 s are
/// remembered and the hour refuses at once. The answer depends on the calls the hour can see,
/// never on when idle keys happen to be swept.
#[test]
fn reload_that_lengthens_a_window_keeps_what_the_key_remembers() {
    let per = |secs: u64| LimitSpec {
        counter: "c".into(),
        window: Duration::from_secs(secs),
        max: 3,
        scope: Scope::Grant,
        counts: Counts::Calls,
    };
    let limits = |spec: &LimitSpec| {
        vec![(
            CounterKey {
                counter: "c".into(),
                scope_value: "g".into(),
            },
            spec.clone(),
        )]
    };
    let admitted = |store: &MemoryStore, spec: &LimitSpec, at: u64| {
        matches!(
            store.acquire(&limits(spec), Duration::from_secs(at), false),
            Acquire::Admitted { .. }
        )
    };
    let (minute, hour) = (per(60), per(3_600));
    for (call_at_65, reload_at, sweep, expected) in [
        (true, 70, false, [true, true, false]),
        (true, 70, true, [true, true, false]),
        (false, 70, false, [true, true, true]),
        (false, 70, true, [true, true, true]),
        (false, 30, false, [false, false, false]),
        (false, 30, true, [false, false, false]),
    ] {
        let store = MemoryStore::new();
        for t in [0, 1, 2] {
            assert!(admitted(&store, &minute, t));
        }
        if sweep {
            store.evict_idle(Duration::from_secs(reload_at.min(64)));
        }
        if call_at_65 {
            assert!(admitted(&store, &minute, 65));
        }
        store
            .reloaded(
                std::slice::from_ref(&minute),
                std::slice::from_ref(&hour),
                Duration::from_secs(reload_at),
            )
            .unwrap();
        let got = [0, 1, 2].map(|_| admitted(&store, &hour, reload_at + 1));
        assert_eq!(
            got, expected,
            "call at 65 s: {call_at_65}, reload at {reload_at} s, swept: {sweep}"
        );
    }
    // The refusal says when: the hour after the oldest admission the key remembers.
    let store = MemoryStore::new();
    for t in [0, 1, 2] {
        assert!(admitted(&store, &minute, t));
    }
    store
        .reloaded(
            std::slice::from_ref(&minute),
            std::slice::from_ref(&hour),
            Duration::from_secs(30),
        )
        .unwrap();
    match store.acquire(&limits(&hour), Duration::from_secs(40), false) {
        Acquire::Refused { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(3_600 - 40));
        }
        other => panic!("expected a refusal, got {other:?}"),
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
        counts: Counts::Calls,
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

/// A counter's state reads back from its JSON as it was written (an audit record's `limits`
/// are read again by `tollgate test --format json` and the audit tools): seconds as numbers,
/// `oldest_leaves_at_seconds` absent as `null`, and a negative number of seconds refused.
#[test]
fn counter_states_read_back_from_their_json() {
    use tollgate_policy::limiter::CounterState;
    for oldest in [Some(Duration::from_millis(61_500)), None] {
        let state = CounterState {
            counter: "reads".into(),
            key: "ci-bot".into(),
            used: 3,
            max: 10,
            window: Duration::from_secs(60),
            oldest_leaves_at: oldest,
            counts: Default::default(),
        };
        let text = serde_json::to_string(&state).unwrap();
        let back: CounterState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state, "{text}");
    }
    let negative = r#"{"counter":"c","key":"k","used":1,"max":1,"window_seconds":-1,"oldest_leaves_at_seconds":-2}"#;
    assert!(serde_json::from_str::<CounterState>(negative).is_err());
    let negative_oldest = r#"{"counter":"c","key":"k","used":1,"max":1,"window_seconds":1,"oldest_leaves_at_seconds":-2}"#;
    assert!(serde_json::from_str::<CounterState>(negative_oldest).is_err());
}

/// The in-memory store answers without IO, so a transport decides on its worker threads.
#[test]
fn the_memory_store_does_not_block() {
    assert!(!MemoryStore::new().blocks());
}

/// Without anybody calling `evict_idle`, `acquire` itself forgets the idle keys now and then
/// (every 1024 acquires of a shard), and only the idle ones: memory stays bounded by the active
/// keys under any traffic.
#[test]
fn acquire_sweeps_idle_keys_and_keeps_active_ones() {
    let store = MemoryStore::with_shards(1);
    let spec = LimitSpec {
        counter: Arc::from("c"),
        window: Duration::from_secs(10),
        max: u32::MAX,
        scope: Scope::Grant,
        counts: Default::default(),
    };
    let key = |name: &str| {
        vec![(
            CounterKey {
                counter: spec.counter.clone(),
                scope_value: name.into(),
            },
            spec.clone(),
        )]
    };
    for g in 0..100 {
        store.acquire(&key(&format!("idle{g}")), Duration::from_secs(1), false);
    }
    assert_eq!(store.len(), 100);
    assert!(!store.is_empty());
    for _ in 0..1024 {
        assert!(matches!(
            store.acquire(&key("active"), Duration::from_secs(20), false),
            Acquire::Admitted { .. }
        ));
    }
    assert_eq!(
        store.len(),
        1,
        "the idle keys are swept, the active one kept"
    );
}
