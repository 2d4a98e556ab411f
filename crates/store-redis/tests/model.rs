//! The Redis store against the in-memory store, which is the model: the same random sequences
//! of multi-limit acquires (several counters, windows and scopes, a key named twice, dry runs,
//! bursts at window edges, time stepping back, a counter of upstream errors recorded after
//! acquires and changed to count calls by a reload) give identical answers after every step. Then
//! the server clock, bounded memory and expiry, and the failure modes against a real
//! `redis-server`: down, restarted, stalled.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use tollgate_policy::limiter::{CounterKey, LimitSpec};
use tollgate_policy::{Acquire, CounterStore, Counts, FailMode, MemoryStore, Scope};
use tollgate_store_redis::testing::RedisServer;
use tollgate_store_redis::{ClockSource, RedisOptions, RedisStore};

/// One server for the property (each case uses its own key prefix), kept for the process.
fn shared_server() -> &'static RedisServer {
    static SERVER: OnceLock<(tempfile::TempDir, RedisServer)> = OnceLock::new();
    &SERVER
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let server = RedisServer::start(dir.path()).unwrap();
            (dir, server)
        })
        .1
}

fn caller_store(url: &str) -> RedisStore {
    static CASE: AtomicU64 = AtomicU64::new(0);
    let n = CASE.fetch_add(1, Ordering::Relaxed);
    RedisStore::open(
        url,
        RedisOptions {
            clock: ClockSource::Caller,
            prefix: format!("{{model-{n}}}"),
            // Generous: a loaded test machine must not turn a slow answer into a failure here.
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ..RedisOptions::default()
        },
    )
    .unwrap()
}

/// The counters a step can name: different windows, maxes and scopes (and one that never
/// admits), in three versions of the policy that a reload switches between (version 1
/// lengthens windows and raises maxes, version 2 shortens and lowers them).
fn spec_of(i: usize, version: u8) -> LimitSpec {
    let (counter, window_ms, max, scope) = [
        ("per_grant", 1_000, 3, Scope::Grant),
        ("per_session", 5_000, 5, Scope::Session),
        ("everyone", 2_000, 2, Scope::Global),
        ("odd:na*me[1]?", 1_500, 4, Scope::Grant),
        ("closed", 1_000, 0, Scope::Global),
        ("errors", 1_500, 2, Scope::Grant),
    ][i];
    let (window_ms, max) = match (version, max) {
        (_, 0) => (window_ms, 0),
        (1, _) => (window_ms * 3, max + 2),
        (2, _) => (window_ms / 2, max - 1),
        _ => (window_ms, max),
    };
    LimitSpec {
        counter: Arc::from(counter),
        window: Duration::from_millis(window_ms),
        max,
        scope,
        // `errors` counts upstream errors, except in version 2, whose reload turns it into a
        // counter of calls (and back): a change of `counts` starts its keys afresh.
        counts: if counter == "errors" && version != 2 {
            Counts::Errors
        } else {
            Counts::Calls
        },
    }
}

fn all_specs(version: u8) -> Vec<LimitSpec> {
    (0..6).map(|i| spec_of(i, version)).collect()
}

#[derive(Debug, Clone)]
struct Step {
    /// How far time moves before the step (nanoseconds; negative steps back).
    delta: i64,
    grant: u8,
    session: u8,
    /// Indexes into `spec`, in call order; a repeat names the same key twice.
    limits: Vec<usize>,
    dry_run: bool,
    /// A reload to this version of the policy before the step.
    reload: Option<u8>,
    /// After the acquire, an upstream error is recorded on the step's limits that count errors.
    error: bool,
}

/// Time steps that land on and around window edges, bursts at one instant, random gaps, and
/// steps back.
fn delta() -> impl Strategy<Value = i64> {
    let edge = prop_oneof![Just(1_000i64), Just(1_500), Just(2_000), Just(5_000)];
    prop_oneof![
        3 => Just(0i64),
        2 => edge.clone().prop_map(|ms| ms * 1_000_000),
        2 => edge.clone().prop_map(|ms| ms * 1_000_000 - 1),
        2 => edge.prop_map(|ms| ms * 1_000_000 + 1),
        1 => Just(1i64),
        4 => 0i64..3_000_000_000,
        1 => -2_000_000_000i64..0,
    ]
}

fn step(reloads: bool) -> impl Strategy<Value = Step> {
    let limit = prop_oneof![8 => 0usize..4, 1 => Just(4usize), 4 => Just(5usize)];
    let reload = if reloads {
        prop_oneof![5 => Just(None), 1 => (0u8..3).prop_map(Some)].boxed()
    } else {
        Just(None).boxed()
    };
    (
        delta(),
        0u8..2,
        0u8..3,
        proptest::collection::vec(limit, 1..4),
        proptest::bool::weighted(0.2),
        reload,
        proptest::bool::weighted(0.5),
    )
        .prop_map(
            |(delta, grant, session, limits, dry_run, reload, error)| Step {
                delta,
                grant,
                session,
                limits,
                dry_run,
                reload,
                error,
            },
        )
}

fn keyed(step: &Step, version: u8) -> Vec<(CounterKey, LimitSpec)> {
    step.limits
        .iter()
        .map(|&i| {
            let spec = spec_of(i, version);
            let scope_value = match spec.scope {
                // Grant 1's keys look like a limit keyed by an argument (`by`): the key's
                // value holds `|`, quotes, `:` and glob characters.
                Scope::Grant if step.grant == 1 => "grant-1|\"prod:eks*\"|7".to_owned(),
                Scope::Grant => format!("grant-{}", step.grant),
                Scope::Session => format!("session-{}", step.session),
                Scope::Global => "*".to_owned(),
            };
            (
                CounterKey {
                    counter: Arc::clone(&spec.counter),
                    scope_value: Arc::from(scope_value),
                },
                spec,
            )
        })
        .collect()
}

fn config() -> Config {
    Config {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// After every step of a random sequence, the Redis store (caller's clock) answers exactly
    /// what the in-memory store answers: admitted or refused, by which limits, the exact
    /// retry_after, and every counter state.
    #[test]
    fn redis_store_answers_exactly_as_the_memory_store(steps in proptest::collection::vec(step(false), 1..48)) {
        compare(&steps)?;
    }

    /// The same, with reloads that lengthen and shorten windows and raise and lower maxes
    /// mid-run: both stores keep exactly what the limiter's documentation says a reload keeps.
    #[test]
    fn redis_store_keeps_what_the_memory_store_keeps_across_reloads(steps in proptest::collection::vec(step(true), 1..48)) {
        compare(&steps)?;
    }
}

fn compare(steps: &[Step]) -> Result<(), TestCaseError> {
    let server = shared_server();
    let redis = caller_store(&server.url());
    let memory = MemoryStore::with_shards(4);
    let mut now = Duration::from_secs(100);
    let mut version = 0u8;
    for (i, step) in steps.iter().enumerate() {
        now = if step.delta >= 0 {
            now + Duration::from_nanos(step.delta.unsigned_abs())
        } else {
            now.saturating_sub(Duration::from_nanos(step.delta.unsigned_abs()))
        };
        if let Some(next) = step.reload {
            let (old, new) = (all_specs(version), all_specs(next));
            memory.reloaded(&old, &new, now).unwrap();
            redis.reloaded(&old, &new, now).unwrap();
            version = next;
        }
        let limits = keyed(step, version);
        let expected = memory.acquire(&limits, now, step.dry_run);
        let got = redis.acquire(&limits, now, step.dry_run);
        prop_assert_eq!(got, expected, "step {} at {:?}: {:?}", i, now, step);
        let errors: Vec<_> = limits
            .iter()
            .filter(|(_, s)| s.counts == Counts::Errors)
            .cloned()
            .collect();
        if step.error && !errors.is_empty() {
            let expected = memory.record(&errors, now);
            let got = redis.record(&errors, now);
            prop_assert_eq!(got, expected, "step {} (recording errors) at {:?}", i, now);
        }
    }
    Ok(())
}

fn limit(counter: &str, window: Duration, max: u32) -> (CounterKey, LimitSpec) {
    (
        CounterKey {
            counter: Arc::from(counter),
            scope_value: Arc::from("*"),
        },
        LimitSpec {
            counter: Arc::from(counter),
            window,
            max,
            scope: Scope::Global,
            counts: Counts::Calls,
        },
    )
}

fn query<T: redis::FromRedisValue>(url: &str, cmd: &mut redis::Cmd) -> T {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    cmd.query(&mut con).unwrap()
}

/// On the server's clock: `max` admissions in a window, then a refusal whose retry_after is
/// within the window; the counter key holds at most `max` members and expires once idle
/// (its TTL is at most the window); the caller's `now` does not matter.
#[test]
fn server_clock_admits_max_then_refuses_and_keys_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).unwrap();
    let store = RedisStore::open(&server.url(), RedisOptions::default()).unwrap();
    let limits = [limit("reads", Duration::from_secs(60), 3)];
    for i in 0..3u32 {
        // The caller's clock is ignored for the windows: a wild `now` changes nothing.
        let now = Duration::from_secs(u64::from(i) * 1_000_000);
        match store.acquire(&limits, now, false) {
            Acquire::Admitted { states } => assert_eq!(states[0].used, i + 1),
            other => panic!("call {i}: {other:?}"),
        }
    }
    match store.acquire(&limits, Duration::ZERO, false) {
        Acquire::Refused {
            retry_after,
            states,
            refused_by,
        } => {
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60));
            assert_eq!((states[0].used, refused_by), (3, vec![0]));
        }
        other => panic!("{other:?}"),
    }
    let key = store.key_of(&limits[0].0);
    assert_eq!(key, "{tollgate}:us:c:5:reads:*");
    let members: u64 = query(&server.url(), redis::cmd("ZCARD").arg(&key));
    assert_eq!(members, 3);
    let ttl: i64 = query(&server.url(), redis::cmd("PTTL").arg(&key));
    assert!(ttl > 0 && ttl <= 60_001, "{ttl}");
    // A dry run on a fresh key takes nothing.
    let other = [limit("writes", Duration::from_secs(60), 1)];
    assert!(matches!(
        store.acquire(&other, Duration::ZERO, true),
        Acquire::Admitted { .. }
    ));
    let exists: u64 = query(
        &server.url(),
        redis::cmd("EXISTS").arg(store.key_of(&other[0].0)),
    );
    assert_eq!(exists, 0);
}

/// Many admissions on a one-second window keep the sorted set at `max` members.
#[test]
fn memory_per_key_is_bounded_by_max() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).unwrap();
    let store = caller_store(&server.url());
    let limits = [limit("c", Duration::from_secs(1), 4)];
    let mut admitted = 0;
    for i in 0..400u64 {
        if let Acquire::Admitted { .. } =
            store.acquire(&limits, Duration::from_millis(100 * i), false)
        {
            admitted += 1;
        }
    }
    // 40 seconds, 4 per second.
    assert_eq!(admitted, 160);
    let members: u64 = query(
        &server.url(),
        redis::cmd("ZCARD").arg(store.key_of(&limits[0].0)),
    );
    assert!(members <= 4, "{members}");
}

/// Nothing listening: the answer is `Unavailable`, naming the store, the cause and the mode.
#[test]
fn an_unreachable_redis_is_unavailable_in_the_configured_mode() {
    let port = tollgate_store_redis::testing::free_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    for mode in [FailMode::Closed, FailMode::Open] {
        let store = RedisStore::open(
            &url,
            RedisOptions {
                on_unavailable: mode,
                ..RedisOptions::default()
            },
        )
        .unwrap();
        match store.acquire(
            &[limit("c", Duration::from_secs(1), 1)],
            Duration::ZERO,
            false,
        ) {
            Acquire::Unavailable {
                store,
                reason,
                mode: m,
            } => {
                assert_eq!(&*store, format!("redis://127.0.0.1:{port}/0"));
                assert!(reason.contains("refused"), "{reason}");
                assert_eq!(m, mode);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A Redis restart (script cache and connections gone): the next call reconnects, loads the
/// script again and is answered; while it is down, calls are unavailable.
#[test]
fn a_restarted_redis_is_used_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = RedisServer::start(dir.path()).unwrap();
    let store = RedisStore::open(&server.url(), RedisOptions::default()).unwrap();
    let limits = [limit("c", Duration::from_secs(60), 100)];
    assert!(matches!(
        store.acquire(&limits, Duration::ZERO, false),
        Acquire::Admitted { .. }
    ));
    server.kill();
    assert!(matches!(
        store.acquire(&limits, Duration::ZERO, false),
        Acquire::Unavailable { .. }
    ));
    server.restart().unwrap();
    match store.acquire(&limits, Duration::ZERO, false) {
        // The server kept nothing (no persistence): the count starts again.
        Acquire::Admitted { states } => assert_eq!(states[0].used, 1),
        other => panic!("{other:?}"),
    }
}

/// A stalled Redis (SIGSTOP): the call is answered `Unavailable` with a timeout, instead of
/// hanging; after SIGCONT calls are admitted again.
#[test]
fn a_stalled_redis_times_out_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).unwrap();
    let store = RedisStore::open(&server.url(), RedisOptions::default()).unwrap();
    let limits = [limit("c", Duration::from_secs(60), 100)];
    assert!(matches!(
        store.acquire(&limits, Duration::ZERO, false),
        Acquire::Admitted { .. }
    ));
    let pid = server.pid().unwrap().to_string();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    for _ in 0..2 {
        // The first uses the pooled connection (response timeout), the second a new one
        // (connect timeout: the kernel accepts, the handshake gets no answer).
        match store.acquire(&limits, Duration::ZERO, false) {
            Acquire::Unavailable { reason, .. } => {
                assert!(reason.contains("timed out after"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    signal("-CONT");
    assert!(matches!(
        store.acquire(&limits, Duration::ZERO, false),
        Acquire::Admitted { .. }
    ));
}

/// Bad URLs are refused with what to write instead.
#[test]
fn bad_urls_say_what_to_write() {
    for (url, says) in [
        ("http://127.0.0.1:6379", "is not a Redis URL"),
        ("redis://127.0.0.1", "has no port"),
        ("redis://127.0.0.1:99999", "has no port"),
        ("redis://127.0.0.1:6379/notadb", "not a usable Redis URL"),
    ] {
        let e = RedisStore::open(url, RedisOptions::default()).unwrap_err();
        assert!(e.to_string().contains(says), "{url}: {e}");
    }
    let ok = RedisStore::open("redis://:secret@127.0.0.1:6379/2", RedisOptions::default()).unwrap();
    assert_eq!(ok.name(), "redis://127.0.0.1:6379/2");
}

/// On the server's clock, a reload that lengthens a window (3 a minute, then 3 an hour) keeps
/// the admissions the key remembers: the next call is refused for about an hour, and the key's
/// expiry follows the kept window (it would otherwise vanish a minute after its last
/// admission and forget them); the kept window and max sit in the `-inf` member.
#[test]
fn server_clock_reload_keeps_the_admissions_and_extends_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).unwrap();
    let store = RedisStore::open(&server.url(), RedisOptions::default()).unwrap();
    let minute = limit("reads", Duration::from_secs(60), 3);
    let hour = limit("reads", Duration::from_secs(3_600), 2);
    for i in 0..3 {
        assert!(
            matches!(
                store.acquire(std::slice::from_ref(&minute), Duration::ZERO, false),
                Acquire::Admitted { .. }
            ),
            "call {i}"
        );
    }
    store
        .reloaded(
            std::slice::from_ref(&minute.1),
            std::slice::from_ref(&hour.1),
            Duration::ZERO,
        )
        .unwrap();
    let key = store.key_of(&minute.0);
    let ttl: i64 = query(&server.url(), redis::cmd("PTTL").arg(&key));
    assert!(ttl > 3_500_000 && ttl <= 3_600_001, "{ttl}");
    let keep: Vec<String> = query(
        &server.url(),
        redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg("-inf"),
    );
    assert_eq!(keep, ["k:3600000000:3"]);
    match store.acquire(std::slice::from_ref(&hour), Duration::ZERO, false) {
        Acquire::Refused {
            retry_after,
            states,
            ..
        } => {
            assert!(retry_after > Duration::from_secs(3_500), "{retry_after:?}");
            assert_eq!(states[0].used, 3);
        }
        other => panic!("{other:?}"),
    }
}
