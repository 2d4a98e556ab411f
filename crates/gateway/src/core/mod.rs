//! One session's enforcement, in process: no sockets, no clock. A transport feeds it what the
//! client sent and what the upstream sent, with the instant, and sends what it returns. The
//! scenario runner drives the same code in virtual time.
//!
//! For each client message:
//! - malformed input (not JSON, invalid UTF-8, too large or deep, duplicate keys, a wrong
//!   `jsonrpc`) is answered here with the JSON-RPC error and never forwarded;
//! - every `tools/call` (each one inside a batch too) is decided before anything is forwarded:
//!   the tool must be one the upstream advertised (the session lists the upstream's tools
//!   itself when the client has not) and, with `--lock`, match its pin, then the policy decides; the decision is written to the
//!   audit log, and only then is the call forwarded, with the validated arguments
//!   re-serialized, or answered with a refusal;
//! - everything else passes through unchanged, both ways, ids included (one upstream session
//!   per client session, so ids need no mapping).
//!
//! Upstream answers to forwarded calls are audited as outcomes (latency, isError, error). A
//! call the upstream does not answer within its timeout gets an error result and a
//! `notifications/cancelled` upstream; when the upstream goes away every pending call gets an
//! error result.
//!
//! # Layout
//! - this module: [`SessionCore`] (what one session holds) and its message entries
//!   (`from_client*`, `from_upstream*`, `tick`), the shared types;
//! - `gateway.rs`: [`Gateway`], what every session shares (engine, audit, approvals);
//! - `record.rs`: the `--record` writer and what a session records;
//! - `client.rs`: what comes from the client and its classification;
//! - `decide.rs`: building the policy `Call` and deciding it (and the direct path);
//! - `held.rs`: calls held for a human's approval;
//! - `listing.rs`: the upstream's tool list (the gateway's own `tools/list`) and
//!   `list_changed`;
//! - `pins.rs`: every `tools/list` answer checked against the pinned tool definitions
//!   (`--lock`: a drifted tool hidden, its calls refused);
//! - `upstream.rs`: what comes from the upstream, and the id mapping.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tollgate_mcp::display::{ident, text as prose};
use tollgate_mcp::jsonrpc::salvage_id;
use tollgate_mcp::{
    ErrorCode, Incoming, Limits, Message, MethodKind, ProtocolVersion, WireError, error_response,
    method_kind, parse_incoming, result_response,
};
use tollgate_policy::engine::StoreFailure;
use tollgate_policy::limiter::{CounterKey, LimitSpec};
use tollgate_policy::{
    Annotation, ApprovalVia, Call, CounterState, Decision, DecisionKind, Engine, RiskClass,
    RuleRef, TimeoutOutcome, ToolMeta,
};

use crate::approvals::{
    ApprovalError, DecidedApproval, Decider, PendingApproval, Registry, Verdict, VerdictKind,
};
use crate::audit::{AuditLog, redact};
use crate::metrics::MetricHandles;
use crate::refusal;

mod client;
mod decide;
mod errors;
mod gateway;
mod held;
mod listing;
mod pins;
mod record;
mod upstream;

use client::*;
use decide::*;
use held::*;
use listing::*;
use upstream::*;

pub use decide::{Direct, DirectAnswer, call_class, call_meta, policy_class};
pub use record::Recorder;

/// The hasher of the core's maps: foldhash, seeded per process (ids and tool names come from
/// clients and upstreams), several times cheaper than SipHash on short keys.
type Hasher = foldhash::quality::RandomState;

/// How the gateway behaves, whatever the transport.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub limits: Limits,
    /// How long a forwarded call may wait for the upstream.
    pub call_timeout: Duration,
    /// Per-tool timeouts (exact names), overriding `call_timeout`.
    pub tool_timeouts: HashMap<String, Duration>,
    /// Whether operators can decide approvals (the admin API is on, or an in-process driver
    /// such as the scenario runner decides them). Without it, and without elicitation, a call
    /// that requires approval is refused at once: nobody could approve it.
    pub approvals: bool,
    /// How many calls one grant may have waiting for approval at once; the next is refused
    /// (`approval_queue_full`), so a runaway agent cannot flood the approvers.
    pub max_held_per_grant: usize,
    /// How many calls one session may have forwarded and unanswered (or waiting for the
    /// upstream's tool list) at once; the next is refused (`too_many_in_flight`), so a client
    /// cannot make the gateway hold unbounded state for a slow upstream.
    pub max_in_flight: usize,
    /// Pinned tool definitions (`--lock`, docs/pinning.md): every `tools/list` answer is
    /// checked against them (`pins.rs`).
    pub pins: Option<Arc<crate::pin::Pins>>,
    /// Where each listed tool's risk class comes from (`class:` selectors): the catalogue,
    /// then the tool's annotations, unless told otherwise ([`crate::classify`]).
    pub classifiers: crate::classify::Classifiers,
    /// The upstreams of a config with several (their names and prefixes): a decision's audit
    /// record names the upstream of its tool. Empty with one upstream.
    pub upstreams: Arc<Vec<crate::upstream::NamedUpstream>>,
}

/// The most pages of `tools/list` the gateway reads from an upstream before it stops asking
/// (an upstream that keeps answering with a `nextCursor` would otherwise be listed forever).
pub const MAX_LIST_PAGES: u32 = 100;
/// The shortest wait for a page of the gateway's own `tools/list` (see
/// `SessionCore::list_timeout`).
pub const MIN_LIST_TIMEOUT: Duration = Duration::from_secs(300);
/// The most tools the gateway keeps from one upstream's listing; tools past it are unknown.
pub const MAX_LISTED_TOOLS: usize = 20_000;
impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            limits: Limits::default(),
            call_timeout: Duration::from_secs(60),
            tool_timeouts: HashMap::new(),
            approvals: false,
            max_held_per_grant: 16,
            max_in_flight: 1024,
            pins: None,
            classifiers: crate::classify::Classifiers::standard(),
            upstreams: Arc::default(),
        }
    }
}

/// What every session shares: the engine (policy and counters), the audit log, the options.
#[derive(Debug)]
pub struct Gateway {
    /// Swapped whole by a reload; a decision holds the engine it started with.
    engine: std::sync::RwLock<Arc<Engine>>,
    audit: Option<Mutex<AuditLog>>,
    options: GatewayOptions,
    recorder: Option<Mutex<Recorder>>,
    pub metrics: crate::metrics::Metrics,
    /// Bumped by every reload, so session loops can tell their clients when the tools they
    /// may see changed (`notifications/tools/list_changed`).
    policy_generation: tokio::sync::watch::Sender<u64>,
    approvals: Registry,
    next_core: AtomicU64,
    /// Traces, when exported: each new session gets its span map.
    telemetry: std::sync::OnceLock<crate::telemetry::Telemetry>,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Upstream(Value),
    Client(Value),
}

/// The key of a span ([`crate::telemetry`]) of the request a forwarded message carries (its id
/// as the upstream sees it): the client's id's text; `None` for the gateway's own requests.
pub(crate) fn client_id_key(id: &Value) -> Option<String> {
    unescape_id(id).map(|id| id_key(&id))
}

/// The key of a span of the request an answer to the client answers.
pub(crate) fn answer_id_key(id: &Value) -> String {
    id_key(id)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One client session.
#[derive(Debug)]
pub struct SessionCore {
    gateway: Arc<Gateway>,
    /// This core's number in the gateway (the approval registry knows calls by it).
    core_id: u64,
    waker: Arc<tokio::sync::Notify>,
    /// Calls held for approval, by approval id.
    awaiting: BTreeMap<u64, Held>,
    /// Elicitation request id → approval id.
    elicits: HashMap<String, u64, Hasher>,
    elicitation: Option<ClientElicitation>,
    /// The protocol version of the session: what the client's `initialize` asked for, then
    /// what the upstream's answer settled on. `None` before `initialize` (and for the
    /// stateless protocol, which has none).
    protocol: Option<ProtocolVersion>,
    /// Whether the client speaks the stateless protocol (2026-07-28: a request carried its
    /// `_meta` envelope): every result it gets then says `resultType: "complete"`, the gateway's
    /// own refusals included, or its SDK refuses them.
    stateless: bool,
    /// The latest instant the core was given (for records written when it is dropped).
    last_now: Duration,
    grant: Arc<str>,
    session: Arc<str>,
    advertised: Option<HashMap<String, ToolInfo, Hasher>>,
    /// Tools hidden because they drifted from the lock file (`--lock`, refuse mode): a call to
    /// one is refused as `pin_drift`, not as unknown (`pins.rs`).
    drifted: HashMap<String, crate::pin::Drifted, Hasher>,
    listing: Option<Listing>,
    /// Client calls waiting for the upstream's tool list.
    waiting_for_list: Vec<Value>,
    /// Forwarded calls by id (the id's JSON text).
    pending: HashMap<String, Pending, Hasher>,
    batches: HashMap<u64, BatchState, Hasher>,
    next_internal: u64,
    next_batch: u64,
    /// Ids of calls answered by a timeout, whose late answers are dropped.
    expired: HashSet<String, Hasher>,
    /// The engine under which the client was last shown a tool list: what it may see is
    /// compared against the new engine's view after a reload.
    listed_under: Option<Arc<Engine>>,
    /// Ids of the client's `initialize` / `server/discover` requests in flight: their answers
    /// get `capabilities.tools.listChanged`, since a reload can change the visible tools.
    handshake_ids: HashSet<String, Hasher>,
    /// This session's handles to the gateway's metric series.
    metric_handles: MetricHandles,
    /// [`SessionCore::call_direct`]'s check that a call parses back to the same value within
    /// the gateway's limits (which never change).
    reparse_checked: tollgate_mcp::CheckedCalls,
    /// The open spans of this session's requests, when the gateway exports traces
    /// (crate::telemetry).
    traces: Option<Box<crate::telemetry::SessionTraces>>,
}

impl SessionCore {
    pub fn grant(&self) -> &str {
        &self.grant
    }

    /// Changes with every reload of the gateway's policy (see [`Self::policy_changed`]).
    pub fn policy_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.gateway.policy_changes()
    }

    /// Whether handling a message may block on IO: the counter store is remote (Redis), so a
    /// decision waits for a round trip. An async transport then runs it off its workers.
    pub fn may_block(&self) -> bool {
        self.gateway.engine().store().blocks()
    }

    /// Whether calls are waiting for the upstream. (Calls held for approval are not: when the
    /// client goes away they are withdrawn, since nobody is left to answer.)
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.waiting_for_list.is_empty()
    }

    /// The earliest deadline of a forwarded call or of a call held for approval, for the
    /// transport's timer.
    pub fn next_deadline(&self) -> Option<Duration> {
        let forwarded = self.pending.values().map(|p| p.deadline);
        let held = self.awaiting.values().map(|h| h.deadline);
        let listing = self.listing.as_ref().map(|l| l.deadline);
        forwarded.chain(held).chain(listing).min()
    }

    /// Notified when one of this session's held calls is decided: the transport then calls
    /// [`SessionCore::tick`].
    pub fn approval_waker(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.waker)
    }

    /// The approval ids of the calls this session holds, oldest first.
    pub fn held_approvals(&self) -> Vec<u64> {
        self.awaiting.keys().copied().collect()
    }

    /// The W3C trace context of the HTTP request whose message the transport hands over next
    /// (its `traceparent` and `tracestate` headers), for the spans of that message's requests;
    /// `None` once it is handled. Nothing without telemetry.
    pub fn set_trace_header(&mut self, carrier: Option<crate::telemetry::Carrier>) {
        if let Some(t) = &mut self.traces {
            t.set_header(carrier);
        }
    }

    /// Handles bytes from the client.
    pub fn from_client(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
        self.last_now = self.last_now.max(now);
        self.record_in("client", bytes, now);
        let mut outs = self.handle_client(bytes, now);
        self.record_out(&mut outs, now);
        outs
    }

    /// The same as [`SessionCore::from_client`] of the value's text, for an in-process caller
    /// that holds the message as a value (the scenario runner): the text is skipped when it
    /// would parse back to the same value (`tollgate_mcp::reparses_identically`: no floats, no
    /// deep nesting, surely under the size limit), and taken otherwise, so what comes out is the
    /// same either way.
    pub fn from_client_value(&mut self, value: Value, now: Duration) -> Vec<Out> {
        if !tollgate_mcp::reparses_identically(&value, self.gateway.options.limits) {
            return self.from_client(value.to_string().as_bytes(), now);
        }
        self.value_in("client", &value, now);
        let mut outs = self.handle_incoming(tollgate_mcp::incoming(value), now);
        self.record_out(&mut outs, now);
        outs
    }

    /// The same as [`SessionCore::from_upstream`] of the value's text (see
    /// [`SessionCore::from_client_value`]).
    pub fn from_upstream_value(&mut self, value: Value, now: Duration) -> Vec<Out> {
        if !tollgate_mcp::reparses_identically(&value, self.gateway.options.limits) {
            return self.from_upstream(value.to_string().as_bytes(), now);
        }
        self.value_in("upstream", &value, now);
        let mut outs = self.upstream_value(value, now);
        self.record_out(&mut outs, now);
        outs
    }

    /// What the byte paths do on entry, for a message given as a value: the instant (for
    /// records written when the session is dropped) and the recording.
    fn value_in(&mut self, dir: &str, value: &Value, now: Duration) {
        self.last_now = self.last_now.max(now);
        if self.gateway.recorder.is_some() {
            let value = self.redacted_for_record(value.clone());
            self.gateway
                .record(now, &self.session, &self.grant, dir, value);
        }
    }

    /// Answers every forwarded call whose deadline has passed, and tells the upstream to stop.
    /// Also acts on held calls: those decided since (forwarded or refused) and those whose
    /// approval deadline has passed (the policy's `on_timeout`).
    pub fn tick(&mut self, now: Duration) -> Vec<Out> {
        self.last_now = self.last_now.max(now);
        let mut outs = self.settle(now);
        outs.extend(self.tick_inner(now));
        self.record_out(&mut outs, now);
        outs
    }

    fn tick_inner(&mut self, now: Duration) -> Vec<Out> {
        let mut out = self.listing_timed_out(now);
        // In a fixed order (the map's is random): the audit log, the upstream's cancellations
        // and the client's answers come out the same on every run.
        let mut expired: Vec<(Duration, Duration, String)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, p)| (p.deadline, p.started, k.clone()))
            .collect();
        expired.sort_unstable();
        let expired = expired.into_iter().map(|(_, _, k)| k);
        for key in expired {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            // The key is the id as the upstream knows it; the client gets its own back.
            let Ok(id) = serde_json::from_str::<Value>(&key) else {
                continue;
            };
            let client_id = unescape_id(&id).unwrap_or(Value::Null);
            if self.expired.len() >= MAX_EXPIRED_IDS {
                self.expired.clear();
            }
            self.expired.insert(key);
            let waited = now.saturating_sub(p.started);
            out.push(Out::Upstream(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id, "reason": "timeout at the gateway"}})));
            if p.tool.is_empty() {
                // A request of a batch that is not a call (nothing to audit).
                out.push(Out::Client(error_response(
                    Some(&client_id),
                    ErrorCode::InternalError,
                    &format!(
                        "the upstream server did not answer within {}s; Tollgate stopped waiting",
                        waited.as_secs()
                    ),
                    None,
                )));
            } else {
                self.gateway.metrics.in_flight.dec();
                let mut record = json!({"session": self.session, "grant": self.grant, "id": client_id, "tool": p.tool, "decision_seq": p.audit_seq, "latency_ms": ms(waited), "timeout": true});
                // No answer in time is an upstream error.
                self.charge_error(&p, true, now).annotate(&mut record);
                let _ = self.gateway.audit(now, "outcome", record);
                let text = format!(
                    "The upstream server did not answer the call to `{}` within {}s; Tollgate stopped waiting and asked it to cancel. The call may or may not have taken effect.",
                    ident(&p.tool),
                    waited.as_secs()
                );
                out.push(Out::Client(result_response(
                    &client_id,
                    refusal::gateway(&p.tool, &self.grant, "upstream_timeout", text),
                )));
            }
            if let Some(local) = p.batch.and_then(|b| self.batch_item_done(b)) {
                out.push(Out::Client(Value::Array(local)));
            }
        }
        out
    }
}

/// A result (or a batch's) as the stateless protocol wants it: `resultType: "complete"` where
/// it is missing (an upstream of that protocol sets it itself; the gateway's own answers get it
/// here).
fn complete(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(complete),
        Value::Object(m) => {
            if let Some(Value::Object(result)) = m.get_mut("result")
                && !result.contains_key("resultType")
            {
                result.insert("resultType".into(), Value::from("complete"));
            }
        }
        _ => {}
    }
}

impl Drop for SessionCore {
    /// The session ended: its held calls are withdrawn (audited), since nobody is left to
    /// answer them.
    fn drop(&mut self) {
        let held: Vec<u64> = self.awaiting.keys().copied().collect();
        for approval in held {
            self.conclude(
                approval,
                VerdictKind::Withdrawn,
                "the agent's session ended",
                self.last_now,
            );
        }
        self.gateway.approvals.forget_core(self.core_id);
    }
}
