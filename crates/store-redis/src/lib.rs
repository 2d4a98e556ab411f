//! A Redis-backed [`CounterStore`]: the strict sliding-window limits of `tollgate-policy`,
//! shared by every gateway replica that points at the same Redis.
//!
//! # Semantics
//! Exactly [`tollgate_policy::MemoryStore`]'s (see `tollgate_policy::limiter`): a call is
//! admitted iff every limit has fewer than `max` admissions in `(now - window, now]`; all or
//! nothing; a refused call and a dry run take nothing; `retry_after` is exact; time never goes
//! backwards inside the store. One `acquire` is one Lua script (`acquire.lua`, sent as
//! `EVALSHA`, loaded again after `NOSCRIPT`, e.g. after a Redis restart) over all the call's
//! keys, so it is atomic with respect to every other replica's acquires. The model test
//! (`tests/model.rs`) runs the same random sequences against both stores and compares every
//! answer.
//!
//! # Whose clock
//! [`ClockSource::Server`] (the default): the script reads Redis's `TIME`, in microseconds, so
//! every replica measures windows on one clock; the caller's `now` only translates the answer's
//! instants (`oldest_leaves_at`) into the caller's frame. A window that is not a whole number of
//! microseconds is rounded up (stricter; policy windows are whole seconds). Redis's wall clock
//! stepping back is harmless: the store's high-water mark holds time still until it catches up.
//! [`ClockSource::Caller`] is a test seam: the caller's `now` (nanoseconds, below 2^53) instead
//! of `TIME`, and no key expiry, so a virtual-time test can compare with `MemoryStore`.
//!
//! # Keys (prefix `{tollgate}` by default; the braces are a Redis Cluster hash tag)
//! - `PREFIX:us:hw`, `PREFIX:us:seq`: the high-water mark and the member sequence (`ns` instead
//!   of `us` with the caller's clock, so the two never mix);
//! - `PREFIX:us:c:LEN:COUNTER:SCOPE`: one sorted set per counter key, scored by admission
//!   instant, members `INSTANT:SEQ`; trimmed to the window and to `max` members on every take,
//!   and `PEXPIRE`d when its newest admission leaves its window (idle keys vanish by themselves).
//!   `LEN` is the counter name's length in bytes, so a `:` in a name cannot alias another key.
//!
//! # When Redis cannot answer
//! Every call is bounded: connecting (TCP and the handshake) by `connect_timeout` (default
//! 500 ms), each request by `response_timeout` (default 250 ms). A refused connection, a timeout
//! or an error answer becomes [`Acquire::Unavailable`] with the [`FailMode`] configured
//! (`Closed` by default; the engine refuses the call as `store_unavailable`; `Open` lets it
//! through uncounted, and the audit record says so). A pooled connection found dead (Redis
//! restarted) is replaced and the request sent once more, at once; a timeout is never retried.
//! The one case where a call's effect is unknown: Redis ran the script and the answer was lost
//! (the connection broke or timed out after the request). The call is then reported unavailable
//! (refused when failing closed) while its admission may have been recorded: the bound still
//! holds, at the cost of one slot.
//!
//! # Blocking
//! `acquire` blocks its thread for the round trip (the `CounterStore` trait is synchronous, like
//! the gateway's session core); [`CounterStore::blocks`] says so, and the gateway's transport
//! runs such decisions under `tokio::task::block_in_place` so other sessions' tasks move to
//! another worker (docs/PERFORMANCE.md, "Redis store").

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use tollgate_policy::limiter::{CounterKey, LimitSpec};
use tollgate_policy::{Acquire, CounterState, CounterStore, FailMode};

pub mod approvals;
pub mod testing;

/// The acquire script (see its header for the keys, arguments and answer), after the prelude
/// both scripts share (`common.lua`: the store's clock, what a key keeps).
pub const SCRIPT: &str = concat!(include_str!("common.lua"), include_str!("acquire.lua"));

/// The reload script: what a reload keeps of each key of one counter (its header), after the
/// same prelude.
pub const RELOAD_SCRIPT: &str = concat!(include_str!("common.lua"), include_str!("reload.lua"));

/// Keys asked for per `SCAN` step (and so per reload script) on a reload.
const SCAN_BATCH: usize = 512;

/// The most `SCAN` steps one counter's reload takes (a bound, far above any real key count:
/// 2^20 steps of up to 512 keys).
const MAX_SCAN_STEPS: usize = 1 << 20;

/// The largest tick the script handles exactly (Lua numbers are doubles).
const MAX_TICK: u64 = 1 << 53;

/// Idle connections kept for reuse (more are opened under load, and closed after).
const MAX_IDLE: usize = 64;

/// Whose clock measures the windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockSource {
    /// Redis's `TIME`: one clock for every replica. What a gateway uses.
    #[default]
    Server,
    /// For tests only: the caller's `now` (nanoseconds below 2^53) and no key expiry, so a
    /// virtual-time run gives exactly the answers of `MemoryStore`.
    Caller,
}

/// How the store talks to Redis and what it does when Redis cannot answer.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The longest wait to open a connection (TCP connect and the handshake).
    pub connect_timeout: Duration,
    /// The longest wait for one answer.
    pub response_timeout: Duration,
    /// What a call whose limits cannot be checked gets.
    pub on_unavailable: FailMode,
    pub clock: ClockSource,
    /// The first part of every key: replicas that share counters share the prefix.
    pub prefix: String,
}

/// The default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The default `response_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            on_unavailable: FailMode::Closed,
            clock: ClockSource::Server,
            prefix: "{tollgate}".to_owned(),
        }
    }
}

/// A Redis URL the store cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{0}` is not a Redis URL: write `redis://HOST:PORT` or `redis://HOST:PORT/DB`")]
    Scheme(String),
    #[error("`{0}` has no port: write `redis://HOST:PORT`, e.g. `redis://127.0.0.1:6379`")]
    NoPort(String),
    #[error("`{url}` is not a usable Redis URL ({why}): write `redis://HOST:PORT[/DB]`")]
    Invalid { url: String, why: String },
}

/// Checks a `redis://HOST:PORT[/DB]` URL (a `user:password@` part is allowed) and returns the
/// client for it and the name to show people (the URL without its password).
fn parse_url(url: &str) -> Result<(redis::Client, String), UrlError> {
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err(UrlError::Scheme(url.to_owned()));
    };
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        return Err(UrlError::NoPort(url.to_owned()));
    }
    let invalid = |why: String| UrlError::Invalid {
        url: url.to_owned(),
        why,
    };
    let info = url
        .into_connection_info()
        .map_err(|e| invalid(e.to_string()))?;
    let name = match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            format!("redis://{host}:{port}/{}", info.redis_settings().db())
        }
        other => return Err(invalid(format!("unsupported address {other}"))),
    };
    let info = info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = redis::Client::open(info).map_err(|e| invalid(e.to_string()))?;
    Ok((client, name))
}

/// Strict sliding-window counters in Redis (module docs).
pub struct RedisStore {
    client: redis::Client,
    name: Arc<str>,
    options: RedisOptions,
    script: redis::Script,
    reload_script: redis::Script,
    idle: Mutex<Vec<redis::Connection>>,
    hw_key: String,
    seq_key: String,
    counter_prefix: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("store", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why one request failed, and whether sending it again on a new connection is safe and useful.
struct Failure {
    reason: String,
    retry: bool,
}

impl RedisStore {
    /// A store for `url` (`redis://HOST:PORT[/DB]`). Connects lazily: a Redis that is down at
    /// start only makes calls unavailable until it is up.
    pub fn open(url: &str, options: RedisOptions) -> Result<RedisStore, UrlError> {
        let (client, name) = parse_url(url)?;
        let unit = match options.clock {
            ClockSource::Server => "us",
            ClockSource::Caller => "ns",
        };
        let base = format!("{}:{unit}", options.prefix);
        Ok(RedisStore {
            client,
            name: Arc::from(name),
            script: redis::Script::new(SCRIPT),
            reload_script: redis::Script::new(RELOAD_SCRIPT),
            idle: Mutex::new(Vec::new()),
            hw_key: format!("{base}:hw"),
            seq_key: format!("{base}:seq"),
            counter_prefix: format!("{base}:c"),
            options,
        })
    }

    /// The store as people name it: `redis://127.0.0.1:6379/0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks Redis for `PONG`, within the timeouts.
    pub fn ping(&self) -> Result<(), String> {
        self.with_connection(|con| {
            redis::cmd("PING")
                .query::<String>(con)
                .map(|_| ())
                .map_err(|e| classify(&e, &self.options))
        })
        .map_err(|f| f.reason)
    }

    /// The Redis key of one counter key.
    pub fn key_of(&self, key: &CounterKey) -> String {
        format!(
            "{}:{}:{}:{}",
            self.counter_prefix,
            key.counter.len(),
            key.counter,
            key.scope_value
        )
    }

    /// The `SCAN MATCH` pattern of every key of one counter (glob characters escaped).
    fn pattern_of(&self, counter: &str) -> String {
        let escape = |text: &str| {
            text.chars().fold(String::new(), |mut out, c| {
                if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                    out.push('\\');
                }
                out.push(c);
                out
            })
        };
        format!(
            "{}:{}:{}:*",
            escape(&self.counter_prefix),
            counter.len(),
            escape(counter)
        )
    }

    /// Runs the reload script over every key of one counter whose limit changed.
    fn reload_counter(
        &self,
        previous: &LimitSpec,
        next: &LimitSpec,
        now: Duration,
    ) -> Result<(), String> {
        let clock = self.options.clock;
        let pattern = self.pattern_of(&next.counter);
        let mut cursor: u64 = 0;
        for _ in 0..MAX_SCAN_STEPS {
            let (next_cursor, keys): (u64, Vec<String>) = self
                .with_connection(|con| {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH)
                        .query(con)
                        .map_err(|e| classify(&e, &self.options))
                })
                .map_err(|f| f.reason)?;
            if !keys.is_empty() {
                let mut invocation = self.reload_script.prepare_invoke();
                invocation.key(&self.hw_key);
                for key in &keys {
                    invocation.key(key);
                }
                invocation
                    .arg(match clock {
                        ClockSource::Server => "server",
                        ClockSource::Caller => "caller",
                    })
                    .arg(ticks(now, clock))
                    .arg(match clock {
                        ClockSource::Server => 1000u64,
                        ClockSource::Caller => 0,
                    })
                    .arg(ticks(previous.window, clock))
                    .arg(previous.max)
                    .arg(ticks(next.window, clock))
                    .arg(next.max)
                    .arg(u8::from(previous.counts != next.counts));
                self.with_connection(|con| {
                    invocation
                        .invoke::<i64>(con)
                        .map_err(|e| classify(&e, &self.options))
                })
                .map_err(|f| f.reason)?;
            }
            if next_cursor == 0 {
                return Ok(());
            }
            cursor = next_cursor;
        }
        Err(format!(
            "counter `{}` has more keys than one reload walks",
            next.counter
        ))
    }

    fn connect(&self) -> Result<redis::Connection, Failure> {
        let con = self
            .client
            .get_connection_with_timeout(self.options.connect_timeout)
            .map_err(|e| Failure {
                reason: describe(&e, "connecting", self.options.connect_timeout),
                retry: false,
            })?;
        let timeout = Some(self.options.response_timeout.max(Duration::from_millis(1)));
        con.set_read_timeout(timeout)
            .and_then(|()| con.set_write_timeout(timeout))
            .map_err(|e| Failure {
                reason: e.to_string(),
                retry: false,
            })?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection (or a new one); a pooled connection found dead is
    /// replaced once. The connection goes back to the pool only after a success.
    fn with_connection<T>(
        &self,
        f: impl Fn(&mut redis::Connection) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let (mut con, was_pooled) = match pooled {
            Some(c) => (c, true),
            None => (self.connect()?, false),
        };
        let result = match f(&mut con) {
            Err(failure) if was_pooled && failure.retry => {
                con = self.connect()?;
                f(&mut con)
            }
            other => other,
        };
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(con);
            }
        }
        result
    }

    fn unavailable(&self, reason: String) -> Acquire {
        Acquire::Unavailable {
            store: Arc::clone(&self.name),
            reason,
            mode: self.options.on_unavailable,
        }
    }
}

/// A failed request: its cause for people, and whether it is a dead connection (retry once on
/// a new one) rather than a timeout or an answer.
fn classify(e: &redis::RedisError, options: &RedisOptions) -> Failure {
    let dead = e.is_connection_dropped() || e.is_connection_refusal();
    Failure {
        reason: describe(e, "waiting for an answer", options.response_timeout),
        retry: dead && !e.is_timeout(),
    }
}

fn describe(e: &redis::RedisError, doing: &str, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("timed out after {} ms {doing}", timeout.as_millis())
    } else if e.is_connection_refusal() {
        format!("connection refused ({e})")
    } else {
        e.to_string()
    }
}

fn ticks(d: Duration, clock: ClockSource) -> u64 {
    let n = match clock {
        ClockSource::Server => d.as_nanos().div_ceil(1000),
        ClockSource::Caller => d.as_nanos(),
    };
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn duration_of(t: u64, clock: ClockSource) -> Duration {
    match clock {
        ClockSource::Server => Duration::from_micros(t),
        ClockSource::Caller => Duration::from_nanos(t),
    }
}

impl CounterStore for RedisStore {
    /// Walks the keys of every counter whose window or max changed (`SCAN`, in batches) and
    /// runs the reload script on them. A counter the previous policy did not declare is left
    /// alone: its keys, if any, keep what they served.
    fn reloaded(
        &self,
        previous: &[LimitSpec],
        next: &[LimitSpec],
        now: Duration,
    ) -> Result<(), String> {
        let mut failures = Vec::new();
        for spec in next {
            let Some(old) = previous.iter().find(|p| p.counter == spec.counter) else {
                continue;
            };
            if (old.window, old.max, old.counts) == (spec.window, spec.max, spec.counts) {
                continue;
            }
            if let Err(why) = self.reload_counter(old, spec, now) {
                failures.push(format!("counter `{}`: {why}", spec.counter));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: could not carry counters over the reload ({})",
                self.name,
                failures.join("; ")
            ))
        }
    }

    fn acquire(&self, limits: &[(CounterKey, LimitSpec)], now: Duration, dry_run: bool) -> Acquire {
        self.run(limits, now, if dry_run { Mode::DryRun } else { Mode::Take })
    }

    fn record(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> Acquire {
        self.run(limits, now, Mode::Record)
    }

    fn blocks(&self) -> bool {
        true
    }
}

/// What one run of the acquire script does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An acquire: judge every limit, take the ones that count calls if all admit.
    Take,
    /// The same answer, nothing taken.
    DryRun,
    /// Record one event (an upstream error) on every key, whatever it holds.
    Record,
}

impl RedisStore {
    fn run(&self, limits: &[(CounterKey, LimitSpec)], now: Duration, mode: Mode) -> Acquire {
        let clock = self.options.clock;
        let windows: Vec<u64> = limits.iter().map(|(_, s)| ticks(s.window, clock)).collect();
        let caller_now = ticks(now, clock);
        let widest = windows.iter().copied().max().unwrap_or(0);
        if widest >= MAX_TICK || (clock == ClockSource::Caller && caller_now >= MAX_TICK - widest) {
            return self.unavailable(
                "an instant or a window beyond the 2^53 ticks the script counts exactly".into(),
            );
        }
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&self.hw_key)
            .key(&self.seq_key)
            .arg(match clock {
                ClockSource::Server => "server",
                ClockSource::Caller => "caller",
            })
            .arg(caller_now)
            .arg(match mode {
                Mode::Take => "0",
                Mode::DryRun => "1",
                Mode::Record => "r",
            })
            .arg(match clock {
                ClockSource::Server => 1000u64,
                ClockSource::Caller => 0,
            });
        for (i, ((key, spec), window)) in limits.iter().zip(&windows).enumerate() {
            // An acquire takes only the limits that count calls; a record takes every limit.
            let takes = |s: &LimitSpec| mode == Mode::Record || s.counts.is_calls();
            let first =
                takes(spec) && limits.iter().position(|(k, s)| takes(s) && k == key) == Some(i);
            invocation
                .key(self.key_of(key))
                .arg(*window)
                .arg(spec.max)
                .arg(u8::from(first));
        }
        let answer = self.with_connection(|con| {
            invocation
                .invoke::<Vec<i64>>(con)
                .map_err(|e| classify(&e, &self.options))
        });
        let answer = match answer {
            Ok(a) if a.len() == 3 + 3 * limits.len() => a,
            Ok(a) => {
                return self.unavailable(format!(
                    "the acquire script answered {} numbers for {} limits",
                    a.len(),
                    limits.len()
                ));
            }
            Err(f) => return self.unavailable(f.reason),
        };
        let tick = |i: usize| u64::try_from(answer[i]).unwrap_or(0);
        let admitted = answer[0] == 1;
        let asked = tick(1);
        let evaluated = tick(2);
        // An instant of the store, in the caller's frame: with the server's clock, as far from
        // the caller's `now` as it is from the server's reading.
        let instant = |t: u64| match clock {
            ClockSource::Caller => duration_of(t, clock),
            ClockSource::Server => now.saturating_add(duration_of(t.saturating_sub(asked), clock)),
        };
        let mut states = Vec::with_capacity(limits.len());
        let mut refused_by = Vec::new();
        let mut retry_at: Option<Option<u64>> = None;
        for (i, ((key, spec), window)) in limits.iter().zip(&windows).enumerate() {
            let count = tick(3 + 3 * i);
            let oldest = answer[4 + 3 * i];
            let retry = answer[5 + 3 * i];
            if retry != -1 {
                refused_by.push(i);
                // `None` inside: never (max is 0), later than any instant.
                let this = u64::try_from(retry).ok();
                retry_at = Some(match (retry_at, this) {
                    (Some(None), _) | (_, None) => None,
                    (Some(Some(a)), Some(b)) => Some(a.max(b)),
                    (None, Some(b)) => Some(b),
                });
            }
            // A record's counts are read after taking; an acquire's before.
            let took = admitted && mode != Mode::Record && spec.counts.is_calls();
            let used = if took { count + 1 } else { count };
            let oldest_leaves_at = match u64::try_from(oldest) {
                Ok(t) => Some(instant(t)),
                Err(_) => took.then(|| instant(evaluated.saturating_add(*window))),
            };
            states.push(CounterState {
                counter: key.counter.clone(),
                key: key.scope_value.clone(),
                used: u32::try_from(used).unwrap_or(u32::MAX),
                max: spec.max,
                window: spec.window,
                oldest_leaves_at,
                counts: spec.counts,
            });
        }
        if admitted {
            return Acquire::Admitted { states };
        }
        let retry_after = match retry_at.flatten() {
            None => Duration::MAX.saturating_sub(now),
            Some(at) => match clock {
                ClockSource::Caller => duration_of(at, clock).saturating_sub(now),
                ClockSource::Server => duration_of(at.saturating_sub(asked), clock),
            },
        };
        Acquire::Refused {
            retry_after,
            states,
            refused_by,
        }
    }
}
