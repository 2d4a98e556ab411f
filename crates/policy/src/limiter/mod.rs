//! The strict sliding-window limiter and the counter stores behind it.
//!
//! # Semantics
//! A limit is `max` calls per `window`, kept per counter key (counter name + scope value). A
//! call at `now` is admitted iff fewer than `max` admitted timestamps `t` of that key satisfy
//! `t + window > now`, i.e. lie in the half-open interval `(now - window, now]`. So in every
//! interval of length `window` at most `max` calls are admitted, and a call exactly `window`
//! after the oldest admitted one is admitted again.
//!
//! - All or nothing: when several limits apply and one refuses, none is consumed.
//! - Exactness: `retry_after` is the first instant at which the same call would be admitted
//!   (the latest over the refusing limits), minus `now`.
//! - Time going backwards (clock skew, out-of-order replays): time never goes backwards inside
//!   a store. A call whose `now` is earlier than the latest instant the store has seen is
//!   evaluated, and recorded, at that instant; `retry_after` is still measured from the call's
//!   own `now`. Strictness then holds over the recorded timestamps, nothing underflows, and
//!   evicting idle keys cannot change a later decision.
//! - What a key remembers (this is what a policy reload keeps): from its first admission
//!   until it is idle, a key remembers its newest `keep_max` admissions, whatever their age,
//!   where `keep_max` is the largest `max` and `keep_window` the longest window of the limits
//!   it was taken under since then. It is idle once its newest admission is `keep_window` old
//!   (`newest + keep_window <= now`); an idle key remembers nothing and starts afresh under the
//!   limit of its next admission. A call is judged by its own limit over what the key
//!   remembers. Without reloads `keep_max` and `keep_window` are the limit's own and this is
//!   the plain strict window above. A reload that lengthens a window or raises `max` counts
//!   every admission the key remembers (3 per minute with calls at 0, 1 and 2 s, then 3 per
//!   hour from 30 s: a call at 40 s is refused until 3600 s; from 70 s instead, the key has
//!   been idle since 62 s and the hour starts afresh). Counters are kept by name and scope
//!   value: a reload that changes a counter's scope starts it afresh.
//! - Memory: per key a ring of at most `keep_max` timestamps (only the newest `max` can matter
//!   to a limit of that `max`). An idle key can be evicted without changing any decision;
//!   `MemoryStore` does this amortised during `acquire`.
//! - Limits that count errors ([`Counts::Errors`]): the same keys, windows, rings and reload
//!   rule, over recorded errors instead of admitted calls. `acquire` judges them with the
//!   others (all or nothing: one that refuses refuses the call) and takes nothing from them;
//!   `record` takes them unconditionally when an admitted call's answer is an error.
//! - Unavailable: a store that lives elsewhere (Redis) may be unable to answer. It says so with
//!   [`Acquire::Unavailable`], naming itself, the cause and the [`FailMode`] its operator chose;
//!   nothing is known about the counters then, and the engine either refuses the call (fail
//!   closed, the default) or lets it through unmetered (fail open), recording which in the
//!   decision.

mod memory;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;

/// Whose calls a counter counts.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Per agent credential.
    #[default]
    Grant,
    /// Per MCP session.
    Session,
    /// One budget for everybody.
    Global,
}

/// What a limit counts.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Counts {
    /// Admitted calls (the default): a call is admitted iff fewer than `max` calls were
    /// admitted in the window, and it is counted when admitted.
    #[default]
    Calls,
    /// Upstream errors of admitted calls: a call is admitted iff fewer than `max` errors were
    /// recorded in the window; deciding takes nothing, and [`CounterStore::record`] counts one
    /// error when an admitted call's answer is an error (at the answer's instant).
    Errors,
}

impl Counts {
    pub fn is_calls(&self) -> bool {
        *self == Counts::Calls
    }

    /// `calls` or `errors`, as a policy writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Counts::Calls => "calls",
            Counts::Errors => "errors",
        }
    }
}

/// One limit as a counter store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LimitSpec {
    pub counter: Arc<str>,
    pub window: Duration,
    pub max: u32,
    pub scope: Scope,
    /// What the counter counts: admitted calls (taken by `acquire`) or upstream errors
    /// (checked by `acquire`, taken by `record`).
    #[serde(default, skip_serializing_if = "Counts::is_calls")]
    pub counts: Counts,
}

/// The key a limit is kept under: the counter name and the scope's value (a grant name, a
/// session id, or `*` for the global scope).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CounterKey {
    pub counter: Arc<str>,
    pub scope_value: Arc<str>,
}

/// The state of one counter key, as seen by the call that was just decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    pub counter: Arc<str>,
    pub key: Arc<str>,
    /// Calls admitted (for a limit that counts errors: errors recorded) in the window ending
    /// at the call's instant (after taking, if admitted).
    pub used: u32,
    pub max: u32,
    #[serde(rename = "window_seconds", with = "seconds")]
    pub window: Duration,
    /// When the oldest admitted call in the window leaves it (virtual time, in seconds).
    #[serde(rename = "oldest_leaves_at_seconds", with = "opt_seconds")]
    pub oldest_leaves_at: Option<Duration>,
    /// What the counter counts; written only for `errors`.
    #[serde(default, skip_serializing_if = "Counts::is_calls")]
    pub counts: Counts,
}

/// Durations as (fractional) seconds in JSON, the unit people read in audit logs.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

mod opt_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What the engine does with a call whose limits cannot be checked because the counter store
/// is unavailable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailMode {
    /// Refuse the call (`store_unavailable`): no limit can be broken while the store is away.
    #[default]
    #[serde(rename = "fail_closed")]
    Closed,
    /// Let the call through without counting it: availability over strictness, an explicit
    /// choice of the operator, recorded in every such decision.
    #[serde(rename = "fail_open")]
    Open,
}

/// The answer of a counter store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acquire {
    Admitted {
        states: Vec<CounterState>,
    },
    Refused {
        retry_after: Duration,
        states: Vec<CounterState>,
        /// Indexes (into the `limits` argument) of the limits that refused.
        refused_by: Vec<usize>,
    },
    /// The store could not answer (unreachable, timed out, refused the request). Whether
    /// anything was taken is unknown only when the request reached the store and its answer
    /// was lost; the store's documentation says when that can happen.
    Unavailable {
        /// The store, as an operator names it: `redis://127.0.0.1:6379/0`.
        store: Arc<str>,
        /// What went wrong, for people: `timed out after 250 ms`.
        reason: String,
        /// What the operator chose to do about it.
        mode: FailMode,
    },
}

/// Where counters live. Implementations must make one `acquire` atomic with respect to every
/// other `acquire` touching the same keys.
pub trait CounterStore: Send + Sync + std::fmt::Debug {
    /// All-or-nothing: admitted only if every limit admits; then every limit is taken.
    /// `dry_run` computes the same answer and takes nothing (for `explain` and what-if replays).
    /// A limit that counts errors is judged like any other (it refuses when `max` errors lie
    /// in its window) but never taken here: [`CounterStore::record`] takes it.
    fn acquire(&self, limits: &[(CounterKey, LimitSpec)], now: Duration, dry_run: bool) -> Acquire;

    /// [`CounterStore::acquire`] of a call under one limit, the key given by its parts: the
    /// same answer as `acquire(&[(CounterKey { counter, scope_value }, spec)], now,
    /// dry_run)`, which is what the default does. The engine calls it for a rule with one
    /// limit (most rules), so a store that overrides it (the in-memory one) decides without
    /// building an owned key.
    fn acquire_one(
        &self,
        counter: &Arc<str>,
        scope_value: &Arc<str>,
        spec: &LimitSpec,
        now: Duration,
        dry_run: bool,
    ) -> Acquire {
        let key = CounterKey {
            counter: Arc::clone(counter),
            scope_value: Arc::clone(scope_value),
        };
        self.acquire(&[(key, spec.clone())], now, dry_run)
    }

    /// Records one event (an upstream error) at `now` on every key of `limits`, whatever they
    /// hold: an error is a fact, not a request, so it is counted even when the budget is
    /// already full (the key keeps its newest `keep_max` events, which is all a limit of that
    /// `max` can see). A key named twice is taken once. Time never goes backwards: an earlier
    /// `now` is recorded at the store's latest instant. The answer is `Admitted` with the
    /// counters after recording, or `Unavailable`.
    fn record(&self, limits: &[(CounterKey, LimitSpec)], now: Duration) -> Acquire;

    /// A reload at `now` replaced the policy whose limits were `previous` with one whose limits
    /// are `next` (one spec per counter name). Every key of a counter `next` names that is not
    /// idle at `now` goes on remembering its admissions under the longest window and largest
    /// `max` of what it served and of its new limit (the module docs: what a reload keeps), so
    /// a lengthened window or a raised `max` counts them. Changes no decision under the old
    /// policy. An error says why the store could not do it (it keeps deciding either way; a
    /// key it could not reach keeps what it had served). The default does nothing, for stores
    /// that remember no admissions (test stubs); both real stores implement it.
    fn reloaded(
        &self,
        previous: &[LimitSpec],
        next: &[LimitSpec],
        now: Duration,
    ) -> Result<(), String> {
        let _ = (previous, next, now);
        Ok(())
    }

    /// Whether `acquire` waits on IO (a network round trip). A transport that drives sessions
    /// on an async runtime moves such decisions off its worker threads. In-memory stores: no.
    fn blocks(&self) -> bool {
        false
    }
}
