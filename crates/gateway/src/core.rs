//! One session's enforcement, in process: no sockets, no clock. A transport feeds it what the
//! client sent and what the upstream sent, with the instant, and sends what it returns. The
//! scenario runner drives the same code in virtual time.
//!
//! For each client message:
//! - malformed input (not JSON, invalid UTF-8, too large or deep, duplicate keys, a wrong
//!   `jsonrpc`) is answered here with the JSON-RPC error and never forwarded;
//! - every `tools/call` (each one inside a batch too) is decided before anything is forwarded:
//!   the tool must be one the upstream advertised (the session lists the upstream's tools
//!   itself when the client has not), then the policy decides; the decision is written to the
//!   audit log, and only then is the call forwarded, with the validated arguments
//!   re-serialized, or answered with a refusal;
//! - everything else passes through unchanged, both ways, ids included (one upstream session
//!   per client session, so ids need no mapping).
//!
//! Upstream answers to forwarded calls are audited as outcomes (latency, isError, error). A
//! call the upstream does not answer within its timeout gets an error result and a
//! `notifications/cancelled` upstream; when the upstream goes away every pending call gets an
//! error result.

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
use tollgate_policy::{
    Annotation, ApprovalVia, Call, Decision, DecisionKind, Engine, RiskClass, RuleRef,
    TimeoutOutcome, ToolMeta,
};

use crate::approvals::{
    ApprovalError, DecidedApproval, Decider, PendingApproval, Registry, Verdict, VerdictKind,
};
use crate::audit::{AuditLog, redact};
use crate::metrics::MetricHandles;
use crate::refusal;

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
}

/// The most pages of `tools/list` the gateway reads from an upstream before it stops asking
/// (an upstream that keeps answering with a `nextCursor` would otherwise be listed forever).
pub const MAX_LIST_PAGES: u32 = 100;
/// The shortest wait for a page of the gateway's own `tools/list` (see
/// `SessionCore::list_timeout`).
pub const MIN_LIST_TIMEOUT: Duration = Duration::from_secs(300);
/// The most tools the gateway keeps from one upstream's listing; tools past it are unknown.
pub const MAX_LISTED_TOOLS: usize = 20_000;
/// The most ids of timed-out calls remembered (to drop their late answers); past it the
/// oldest are forgotten, and a very late answer goes to the client, which has its answer.
const MAX_EXPIRED_IDS: usize = 4096;

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            limits: Limits::default(),
            call_timeout: Duration::from_secs(60),
            tool_timeouts: HashMap::new(),
            approvals: false,
            max_held_per_grant: 16,
            max_in_flight: 1024,
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
}

/// The `--record FILE` writer: every message of every session, one JSON line each
/// (docs/gateway.md, "Recordings"): `{"t_ms", "session", "grant", "dir", "message"}` where `dir`
/// is `client` (from the client), `to_client`, `to_upstream` or `upstream` (from the upstream).
/// Messages only: HTTP headers (and so bearer tokens) are never recorded.
#[derive(Debug)]
pub struct Recorder {
    file: std::fs::File,
}

impl Recorder {
    pub fn create(path: &std::path::Path) -> std::io::Result<Recorder> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Recorder { file })
    }

    fn write(&mut self, line: &Value) {
        use std::io::Write;
        // A recording is a debugging aid: a failed write must not stop the gateway.
        let _ = writeln!(self.file, "{line}");
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Upstream(Value),
    Client(Value),
}

impl Gateway {
    pub fn new(engine: Engine, audit: Option<AuditLog>, options: GatewayOptions) -> Arc<Gateway> {
        Arc::new(Gateway::build(engine, audit, options, None))
    }

    fn build(
        engine: Engine,
        audit: Option<AuditLog>,
        options: GatewayOptions,
        recorder: Option<Recorder>,
    ) -> Gateway {
        let metrics = crate::metrics::Metrics::default();
        let approvals = Registry::new(metrics.approvals_pending.clone());
        let mut audit = audit;
        if let Some(log) = audit.as_mut() {
            log.set_metrics(metrics.audit.clone());
        }
        Gateway {
            engine: std::sync::RwLock::new(Arc::new(engine)),
            audit: audit.map(Mutex::new),
            options,
            recorder: recorder.map(Mutex::new),
            metrics,
            policy_generation: tokio::sync::watch::Sender::new(0),
            approvals,
            next_core: AtomicU64::new(1),
        }
    }

    /// The same gateway, recording every message to `recorder`.
    pub fn new_recording(
        engine: Engine,
        audit: Option<AuditLog>,
        options: GatewayOptions,
        recorder: Recorder,
    ) -> Arc<Gateway> {
        Arc::new(Gateway::build(engine, audit, options, Some(recorder)))
    }

    fn record(&self, now: Duration, session: &str, grant: &str, dir: &str, message: Value) {
        if let Some(r) = &self.recorder {
            let line = json!({"t_ms": ms(now), "session": session, "grant": grant, "dir": dir, "message": message});
            r.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write(&line);
        }
    }

    /// The engine deciding now.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the policy with a validated one, keeping the counter store: counters the new
    /// policy keeps go on counting. The reload is audited with the policy's hash. (A policy that
    /// failed validation never gets here: `Policy::load` refused it.)
    pub fn reload(
        &self,
        policy: tollgate_policy::Policy,
        now: Duration,
        fields: Value,
    ) -> Result<(), String> {
        let old = self.engine();
        let store = Arc::clone(old.store());
        // The counters keep what they remember under the longest window and largest `max` of
        // the old and new limits (docs/limits.md, "Reloads"); a store that could not be told
        // keeps deciding, and the audit record says so.
        let mut fields = fields;
        if let Err(why) = store.reloaded(&old.policy().counters(), &policy.counters(), now)
            && let Some(map) = fields.as_object_mut()
        {
            map.insert("counter_store_error".into(), Value::String(why));
        }
        let engine = Arc::new(Engine::new(Arc::new(policy), store));
        // Audit first: a reload that cannot be recorded does not happen.
        self.audit(now, "reload", fields)?;
        *self.engine.write().unwrap_or_else(PoisonError::into_inner) = engine;
        self.policy_generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Changes with every reload: a session loop waits on it and then calls
    /// [`SessionCore::policy_changed`].
    pub fn policy_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.policy_generation.subscribe()
    }

    /// Records a reload that was refused (the old policy keeps running).
    pub fn reload_refused(&self, now: Duration, fields: Value) -> Result<(), String> {
        self.audit(now, "reload_refused", fields).map(|_| ())
    }

    /// A new session for one client (its grant and session id).
    pub fn session(self: &Arc<Self>, grant: &str, session: &str) -> SessionCore {
        let core_id = self.next_core.fetch_add(1, Ordering::Relaxed);
        SessionCore {
            gateway: Arc::clone(self),
            core_id,
            waker: self.approvals.waker(core_id),
            awaiting: BTreeMap::new(),
            elicits: HashMap::default(),
            elicitation: None,
            protocol: None,
            stateless: false,
            last_now: Duration::ZERO,
            grant: Arc::from(grant),
            session: Arc::from(session),
            advertised: None,
            listing: None,
            held: Vec::new(),
            pending: HashMap::default(),
            batches: HashMap::default(),
            next_internal: 0,
            next_batch: 0,
            expired: HashSet::default(),
            listed_under: None,
            handshake_ids: HashSet::default(),
            metric_handles: MetricHandles::default(),
            reparse_checked: tollgate_mcp::CheckedCalls::new(self.options.limits),
        }
    }

    /// [`Gateway::audit`] with the record built only when there is a log to write it to (a
    /// replay without an audit log skips building it).
    fn audit_with(
        &self,
        now: Duration,
        kind: &str,
        fields: impl FnOnce() -> Value,
    ) -> Result<Option<u64>, String> {
        match &self.audit {
            None => Ok(None),
            Some(_) => self.audit(now, kind, fields()),
        }
    }

    /// The options this gateway runs with.
    pub fn options(&self) -> &GatewayOptions {
        &self.options
    }

    /// The registry of held calls (for the live feed and the scenario runner).
    pub fn approvals(&self) -> &Registry {
        &self.approvals
    }

    /// The calls waiting for approval at `now`, oldest first, and the latest decisions,
    /// newest first.
    pub fn list_approvals(&self, now: Duration) -> (Vec<PendingApproval>, Vec<DecidedApproval>) {
        self.approvals.list(ms(now))
    }

    /// An operator approves held call `id`: it is audited (who, when, why), then the session
    /// holding it forwards it, taking its limits at `now`.
    pub fn approve(
        &self,
        id: u64,
        approver: &str,
        reason: Option<&str>,
        now: Duration,
    ) -> Result<DecidedApproval, ApprovalError> {
        self.decide_approval(
            id,
            VerdictKind::Approved,
            approver,
            reason,
            now,
            Decider::Operator,
        )
    }

    /// An operator denies held call `id`: audited, then the agent gets a refusal naming the
    /// approver and their reason.
    pub fn deny(
        &self,
        id: u64,
        approver: &str,
        reason: Option<&str>,
        now: Duration,
    ) -> Result<DecidedApproval, ApprovalError> {
        self.decide_approval(
            id,
            VerdictKind::Denied,
            approver,
            reason,
            now,
            Decider::Operator,
        )
    }

    fn decide_approval(
        &self,
        id: u64,
        verdict: VerdictKind,
        approver: &str,
        reason: Option<&str>,
        now: Duration,
        decider: Decider,
    ) -> Result<DecidedApproval, ApprovalError> {
        let verdict = Verdict {
            verdict,
            approver: Some(approver.to_owned()),
            reason: reason
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            decided_at_ms: ms(now),
        };
        self.approvals.decide(id, verdict, decider, |a, v| {
            self.approval_record(now, a, v).map(|_| ())
        })
    }

    /// The audit record of a verdict.
    fn approval_record(
        &self,
        now: Duration,
        a: &PendingApproval,
        v: &Verdict,
    ) -> Result<Option<u64>, String> {
        let mut record = json!({
            "approval_id": a.id, "verdict": v.verdict.name(), "approver": v.approver,
            "session": a.session, "grant": a.grant, "id": a.request_id, "tool": a.tool,
            "decision_seq": a.decision_seq, "via": a.via,
            "waited_ms": ms(now).saturating_sub(a.created_at_ms),
        });
        if let Some(r) = &v.reason {
            record["reason"] = json!(r);
        }
        if v.verdict == VerdictKind::Expired {
            record["on_timeout"] = json!(a.on_timeout);
        }
        self.audit(now, "approval", record)
    }

    /// Appends an audit record; `None` when there is no audit log.
    fn audit(&self, now: Duration, kind: &str, fields: Value) -> Result<Option<u64>, String> {
        let Some(log) = &self.audit else {
            return Ok(None);
        };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.append(ms(now), kind, fields)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// A record nothing waits for (a call's outcome): chained now, written with the next
    /// durable record or by [`Gateway::flush_audit`] (see `audit.rs`, "Durability").
    fn audit_deferred(&self, now: Duration, kind: &str, fields: impl FnOnce() -> Value) {
        let Some(log) = &self.audit else {
            return;
        };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = log.append_deferred(ms(now), kind, fields()) {
            tracing::error!("{e}");
        }
    }

    /// Writes the audit records deferred so far (the gateway process calls it every 20 ms).
    pub fn flush_audit(&self) {
        let Some(log) = &self.audit else {
            return;
        };
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = log.flush() {
            tracing::error!("{e}");
        }
    }

    /// Writes the closing record of a clean shutdown, and waits for the log's background work
    /// (compressing and removing rotated files).
    pub fn close(&self, now: Duration) -> Result<(), String> {
        let closed = self.audit(now, "close", json!({})).map(|_| ());
        if let Some(log) = &self.audit {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .finish_housekeeping();
        }
        closed
    }

    /// Writes an opening record (gateway start, with the policy's hash).
    pub fn open(&self, now: Duration, fields: Value) -> Result<(), String> {
        self.audit(now, "open", fields).map(|_| ())
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the upstream said about one tool in `tools/list`.
#[derive(Debug, Clone)]
struct ToolInfo {
    /// Shared: every call of the tool copies its `ToolInfo` out of the session's list, and
    /// gives the set to its policy `ToolMeta`.
    annotations: Arc<BTreeSet<Annotation>>,
    /// The tool's catalogue entry, looked up once when it is listed.
    catalogued: Option<&'static tollgate_catalog::CatalogTool>,
    /// The scalar parameter types of its `inputSchema`, read once when it is listed: a call's
    /// arguments are brought to the values the tool reads before the policy decides.
    types: Option<crate::coerce::ToolTypes>,
}

#[derive(Debug)]
struct Listing {
    /// The id of the gateway's own `tools/list` request in flight.
    id: String,
    tools: HashMap<String, ToolInfo, Hasher>,
    meta: Option<Value>,
    /// Pages asked for so far (at most [`MAX_LIST_PAGES`]).
    pages: u32,
    /// When the gateway stops waiting for the page asked for.
    deadline: Duration,
}

#[derive(Debug)]
struct Pending {
    /// The call's tool, shared with its policy `Call`; empty for the gateway's own requests.
    tool: Arc<str>,
    audit_seq: Option<u64>,
    started: Duration,
    deadline: Duration,
    batch: Option<u64>,
}

#[derive(Debug, Default)]
struct BatchState {
    /// Answers the gateway gave itself (refusals) for this batch.
    local: Vec<Value>,
    /// Its forwarded requests not settled yet: the local answers go with the last one's.
    open: usize,
}

/// A call held for approval, in the session that holds it.
#[derive(Debug)]
struct Held {
    /// The agent's request id.
    id: Value,
    call: Call,
    /// The message as the client sent it (forwarded with the validated arguments).
    original: Value,
    /// The engine that decided to hold it: its rule takes the limits when approved.
    engine: Arc<Engine>,
    redacted: Value,
    decision_seq: Option<u64>,
    started: Duration,
    deadline: Duration,
    rule: RuleRef,
    reason: Option<String>,
    on_timeout: TimeoutOutcome,
    /// The id of the `elicitation/create` request asking the client's user, if any.
    elicit: Option<String>,
}

/// What the client declared in `initialize` about elicitation.
#[derive(Debug, Clone)]
struct ClientElicitation {
    form: bool,
    /// Whether `elicitation/create` carries `mode` (2025-11-25 and later).
    with_mode: bool,
}

/// The prefix of the ids of the gateway's own `elicitation/create` requests.
const ELICIT_PREFIX: &str = "tollgate-elicit-";

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
    listing: Option<Listing>,
    /// Client calls waiting for the upstream's tool list.
    held: Vec<Value>,
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
}

/// The prefix of every id the gateway makes itself (its own `tools/list`, elicitation and
/// re-initialize requests).
const RESERVED_ID: &str = "tollgate-";
/// What a client's (or the upstream's) string id that starts with [`RESERVED_ID`] becomes on the
/// other side: the two id spaces never meet (docs/security.md, "Ids").
const ESCAPED_ID: &str = "tollgate-x-";

/// The id a request takes to the other side: itself, unless it is a string in the gateway's own
/// id space (starting `tollgate-`), which gets [`ESCAPED_ID`] in front. Injective, and no id it
/// gives starts with `tollgate-` without `tollgate-x-`, so no peer can ever send an id the
/// gateway takes for its own.
fn escape_id(id: &Value) -> std::borrow::Cow<'_, Value> {
    match id {
        Value::String(s) if s.starts_with(RESERVED_ID) => {
            std::borrow::Cow::Owned(Value::String(format!("{ESCAPED_ID}{s}")))
        }
        other => std::borrow::Cow::Borrowed(other),
    }
}

/// The id an answer takes back to the side that asked: [`escape_id`] undone. `None` for an id in
/// the gateway's own space that no escaping made: an answer to one of the gateway's own
/// requests, which no peer gets.
fn unescape_id(id: &Value) -> Option<Value> {
    match id {
        Value::String(s) => match s.strip_prefix(ESCAPED_ID) {
            Some(rest) => Some(Value::String(rest.to_owned())),
            None if s.starts_with(RESERVED_ID) => None,
            None => Some(id.clone()),
        },
        other => Some(other.clone()),
    }
}

/// A message as it crosses to the other side, ids mapped ([`escape_id`]): a request's id is
/// escaped, an answer's unescaped (`None`: it answers one of the gateway's own requests, and is
/// dropped), and the `requestId` of a `notifications/cancelled` escaped (it names a request of
/// the side that sends it). The same in both directions.
fn crossing(mut v: Value) -> Option<Value> {
    let Some(obj) = v.as_object_mut() else {
        return Some(v);
    };
    let has_method = obj.contains_key("method");
    if has_method {
        if let Some(id) = obj.get_mut("id")
            && let std::borrow::Cow::Owned(escaped) = escape_id(id)
        {
            *id = escaped;
        }
        if obj.get("method").and_then(Value::as_str) == Some("notifications/cancelled")
            && let Some(request) = obj.get_mut("params").and_then(|p| p.get_mut("requestId"))
            && let std::borrow::Cow::Owned(escaped) = escape_id(request)
        {
            *request = escaped;
        }
        return Some(v);
    }
    if let Some(id) = obj.get_mut("id")
        && id.as_str().is_some_and(|s| s.starts_with(RESERVED_ID))
    {
        *id = unescape_id(id)?;
    }
    Some(v)
}

fn id_key(id: &Value) -> String {
    // An integer id's text is its digits (what serde_json writes too), made without the
    // serializer: every call's id is keyed on the way out and on the way back.
    match id {
        Value::Number(n) if n.is_u64() => {
            n.as_u64().map(|u| itoa::Buffer::new().format(u).to_owned())
        }
        Value::Number(n) if n.is_i64() => {
            n.as_i64().map(|i| itoa::Buffer::new().format(i).to_owned())
        }
        _ => None,
    }
    .unwrap_or_else(|| id.to_string())
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
        !self.pending.is_empty() || !self.held.is_empty()
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

    fn record_in(&self, dir: &str, bytes: &[u8], now: Duration) {
        if self.gateway.recorder.is_some() {
            let message = match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => self.redacted_for_record(v),
                // Text that is not JSON cannot be searched for the arguments to redact: under
                // a policy that redacts, only its size is written.
                Err(_) if self.gateway.engine().policy().redacts_anything() => json!({
                    "unparsed": format!("[redacted: {} bytes that are not JSON]", bytes.len())
                }),
                Err(_) => json!({"unparsed": String::from_utf8_lossy(bytes)}),
            };
            self.gateway
                .record(now, &self.session, &self.grant, dir, message);
        }
    }

    /// What every batch of outputs goes through before it leaves: the stateless protocol's
    /// `resultType` on each result the client gets, then the recording.
    fn record_out(&self, outs: &mut [Out], now: Duration) {
        if self.stateless {
            for o in outs.iter_mut() {
                if let Out::Client(v) = o {
                    complete(v);
                }
            }
        }
        if self.gateway.recorder.is_some() {
            for o in outs {
                let (dir, v) = match o {
                    Out::Client(v) => ("to_client", v),
                    Out::Upstream(v) => ("to_upstream", v),
                };
                let v = self.redacted_for_record(v.clone());
                self.gateway.record(now, &self.session, &self.grant, dir, v);
            }
        }
    }

    /// A message as a recording keeps it: the arguments of every call in it (any message with
    /// `params.name` and `params.arguments`, whatever its method) redacted as the policy's rule
    /// for that tool says, exactly as the audit log redacts them.
    fn redacted_for_record(&self, mut v: Value) -> Value {
        if let Value::Array(items) = &mut v {
            for item in items.iter_mut() {
                *item = self.redacted_for_record(item.take());
            }
            return v;
        }
        let Some(params) = v.get_mut("params") else {
            return v;
        };
        let Some(name) = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return v;
        };
        let Some(arguments) = params.get_mut("arguments").filter(|a| a.is_object()) else {
            return v;
        };
        let info = self
            .advertised
            .as_ref()
            .and_then(|a| a.get(&name))
            .cloned()
            .unwrap_or_else(|| tool_info(&json!({ "name": name })));
        let meta = meta_of(arguments, &info);
        let names = self.gateway.engine().policy().redactions(&name, &meta);
        if !names.is_empty() {
            *arguments = redact(arguments, &names);
        }
        v
    }

    fn handle_client(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
        match parse_incoming(bytes, self.gateway.options.limits) {
            Err(WireError::DuplicateKey { key }) => {
                // Salvage the id with a lenient parse so the client can match the refusal.
                let lenient: Option<Value> = serde_json::from_slice(bytes).ok();
                let id = lenient.as_ref().and_then(salvage_id).cloned();
                let tool = lenient
                    .as_ref()
                    .and_then(|v| v.get("params"))
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let text = format!(
                    "the message has the key `{}` twice in one object; Tollgate refuses it, because two parsers could read different values. Send each key once.",
                    ident(&key)
                );
                let _ = self.gateway.audit(now, "refusal", json!({"session": self.session, "grant": self.grant, "tool": tool, "decision": "duplicate_key", "key": key}));
                vec![Out::Client(error_response(
                    id.as_ref(),
                    ErrorCode::InvalidRequest,
                    &text,
                    None,
                ))]
            }
            parsed => self.handle_incoming(parsed, now),
        }
    }

    /// A client message after parsing (from text, or a value that needed none).
    fn handle_incoming(&mut self, parsed: Result<Incoming, WireError>, now: Duration) -> Vec<Out> {
        match parsed {
            Err(e) => vec![Out::Client(error_response(
                None,
                e.code(),
                &e.to_string(),
                None,
            ))],
            Ok(Incoming::Single(v)) => {
                let mut out = Vec::new();
                let local = self.client_message(v, None, now, &mut out);
                out.extend(local.into_iter().map(Out::Client));
                out
            }
            Ok(Incoming::Batch(items)) if self.protocol.is_some_and(|p| p.allows_batches()) => {
                self.client_batch(items, now)
            }
            Ok(Incoming::Batch(items)) => self.refuse_batch(&items, now),
        }
    }

    /// Why a batch is refused in this session, for its answers.
    fn batch_refusal_text(&self) -> String {
        let version = match self.protocol {
            Some(p) => format!("protocol version {p}"),
            None => "a session that has not been initialized (or the stateless protocol)".into(),
        };
        format!(
            "Invalid request: JSON-RPC batches are allowed only in protocol version 2025-03-26, and this is {version}; Tollgate refused the whole batch and forwarded none of it. Send each message on its own."
        )
    }

    /// A batch in a session whose protocol has none: refused whole at once, audited, nothing
    /// forwarded. Each request in it gets its error (so a client waiting for each id hears);
    /// a batch of notifications only gets one error without an id.
    fn refuse_batch(&mut self, items: &[Value], now: Duration) -> Vec<Out> {
        let why = MethodRefusal::Batch;
        let tools: Vec<&str> = items
            .iter()
            .filter(|m| {
                m.get("method").and_then(Value::as_str).map(method_kind) != Some(MethodKind::Other)
            })
            .filter_map(|m| m.get("params")?.get("name")?.as_str())
            .collect();
        let record = json!({
            "session": self.session, "grant": self.grant, "decision": why.name(),
            "protocol": self.protocol.map(ProtocolVersion::as_str), "items": items.len(),
            "tools": tools,
        });
        if let Err(e) = self.gateway.audit(now, "refusal", record) {
            tracing::error!("cannot audit a refused batch: {e}");
        }
        self.gateway.metrics.observe_refused_message(why.name());
        let text = self.batch_refusal_text();
        // Each request gets its error under its id; one whose id is not valid (a float, null)
        // gets its error without an id, as JSON-RPC answers an invalid request.
        let answers: Vec<Value> = items
            .iter()
            .filter(|m| m.get("method").is_some() && m.get("id").is_some())
            .map(|m| error_response(salvage_id(m), ErrorCode::InvalidRequest, &text, None))
            .collect();
        if answers.is_empty() {
            // Notifications only: one error without an id, as JSON-RPC refuses a message whole.
            return vec![Out::Client(error_response(
                None,
                ErrorCode::InvalidRequest,
                &text,
                None,
            ))];
        }
        vec![Out::Client(Value::Array(answers))]
    }

    fn client_batch(&mut self, items: Vec<Value>, now: Duration) -> Vec<Out> {
        let batch = self.next_batch;
        self.next_batch += 1;
        let mut out = Vec::new();
        let mut forward = Vec::new();
        let mut local = Vec::new();
        for item in items {
            let mut sub = Vec::new();
            local.extend(self.client_message(item, Some(batch), now, &mut sub));
            for o in sub {
                match o {
                    Out::Upstream(v) if !is_internal(&v) => forward.push(v),
                    other => out.push(other),
                }
            }
        }
        let open = forward
            .iter()
            .filter(|m| m.get("id").is_some() && m.get("method").is_some())
            .count();
        if !forward.is_empty() {
            out.push(Out::Upstream(Value::Array(forward)));
        }
        if open > 0 {
            self.batches.insert(batch, BatchState { local, open });
        } else if !local.is_empty() {
            out.push(Out::Client(Value::Array(local)));
        }
        out
    }

    /// One client message: returns the local answers; pushes what goes upstream to `out`.
    ///
    /// The stance on every message kind (docs/security.md, "Message kinds"): a `tools/call`
    /// request is decided; a `tools/call` notification, a method name that only resembles
    /// `tools/call` and a method name that is not printable ASCII are refused and audited, never
    /// forwarded; a request whose id is already in flight is refused; everything else passes
    /// through with its ids mapped ([`crossing`]).
    fn client_message(
        &mut self,
        v: Value,
        batch: Option<u64>,
        now: Duration,
        out: &mut Vec<Out>,
    ) -> Vec<Value> {
        let message = match Message::classify(&v) {
            Ok(m) => m,
            Err(e) => {
                return vec![error_response(
                    salvage_id(&v),
                    e.code(),
                    &e.to_string(),
                    None,
                )];
            }
        };
        let (id, method, params) = match message {
            Message::Request { id, method, params } => (Some(id), Some(method), params),
            Message::Notification { method, params } => (None, Some(method), params),
            Message::Response { .. } | Message::Error { .. } => (None, None, None),
        };
        if id.is_some()
            && tollgate_mcp::protocol::meta_version(params)
                == Some(ProtocolVersion::V2026_07_28.as_str())
        {
            self.stateless = true;
        }
        if let Some(method) = method {
            let refused = match method_kind(method) {
                MethodKind::ToolsCall if id.is_none() => Some(MethodRefusal::CallAsNotification),
                MethodKind::LookAlike => Some(MethodRefusal::LookAlike),
                MethodKind::Malformed => Some(MethodRefusal::Malformed),
                MethodKind::ToolsCall | MethodKind::Other => None,
            };
            if let Some(why) = refused {
                return self.refuse_message(why, id, method, params, now);
            }
        }
        if let Some(id) = id
            && self.request_in_flight(id)
        {
            let method = method.unwrap_or_default();
            return self.refuse_message(MethodRefusal::IdInFlight, Some(id), method, params, now);
        }
        match message {
            Message::Request {
                id,
                method: "tools/call",
                ..
            } => {
                let id = id.clone();
                self.call(id, v, batch, now, out)
            }
            Message::Response { id, result } if self.is_elicit(id) => {
                let (id, result) = (id.clone(), result.clone());
                self.elicitation_answer(&id, Ok(&result), now, out)
            }
            Message::Error { id, error } if self.is_elicit(id) => {
                let (id, error) = (id.clone(), error.clone());
                self.elicitation_answer(&id, Err(&error), now, out)
            }
            Message::Notification {
                method: "notifications/cancelled",
                params,
            } if self.cancels_held(params) => {
                let request = params.and_then(|p| p.get("requestId")).cloned();
                self.withdraw_request(request.as_ref(), now, out);
                Vec::new()
            }
            Message::Request { id, method, params } => {
                if method == "initialize" {
                    self.elicitation = client_elicitation(params);
                    self.protocol = params
                        .and_then(|p| p.get("protocolVersion"))
                        .and_then(Value::as_str)
                        .and_then(ProtocolVersion::parse);
                }
                let key = id_key(&escape_id(id));
                if method == "initialize" || method == "server/discover" {
                    self.handshake_ids.insert(key.clone());
                }
                // Other requests pass through. Each is remembered while it is in flight (its id
                // may not be reused meanwhile, a batch's answers are merged), with a deadline, so
                // a request the upstream leaves unanswered still gets an answer.
                self.pending.insert(
                    key,
                    Pending {
                        tool: Arc::from(""),
                        audit_seq: None,
                        started: now,
                        deadline: now.saturating_add(self.passthrough_timeout()),
                        batch,
                    },
                );
                out.extend(crossing(v).map(Out::Upstream));
                Vec::new()
            }
            _ => {
                // An answer to none of the upstream's requests (an id in the gateway's own
                // space) is dropped by `crossing`.
                out.extend(crossing(v).map(Out::Upstream));
                Vec::new()
            }
        }
    }

    /// Whether a request with this id (the client's) is in flight: forwarded and unanswered,
    /// waiting for the upstream's tool list, or held for approval.
    fn request_in_flight(&self, id: &Value) -> bool {
        self.pending.contains_key(&id_key(&escape_id(id)))
            || self.held.iter().any(|m| m.get("id") == Some(id))
            || self.awaiting.values().any(|h| &h.id == id)
            // A batch's own answers wait for its forwarded requests: their ids are in flight.
            || self
                .batches
                .values()
                .any(|b| b.local.iter().any(|a| a.get("id") == Some(id)))
    }

    /// How long a forwarded request that is not a call may go unanswered: the call timeout, at
    /// least [`MIN_LIST_TIMEOUT`] (an `initialize` waits for an upstream that is starting; a
    /// listing or a read may be slow).
    fn passthrough_timeout(&self) -> Duration {
        self.gateway.options.call_timeout.max(MIN_LIST_TIMEOUT)
    }

    /// Refuses a message that could make a loose upstream run a tool undecided, or that reuses
    /// an id in flight: audited, answered with a JSON-RPC error when it is a request (a
    /// notification gets no answer, as JSON-RPC says), never forwarded.
    fn refuse_message(
        &mut self,
        why: MethodRefusal,
        id: Option<&Value>,
        method: &str,
        params: Option<&Value>,
        now: Duration,
    ) -> Vec<Value> {
        let tool = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut record = json!({
            "session": self.session, "grant": self.grant, "method": method,
            "tool": tool, "decision": why.name(),
        });
        if let Some(id) = id {
            record["id"] = id.clone();
        }
        if let Err(e) = self.gateway.audit(now, "refusal", record) {
            tracing::error!("cannot audit a refused message: {e}");
        }
        self.gateway.metrics.observe_refused_message(why.name());
        let Some(id) = id else {
            tracing::warn!(
                "refused a notification `{}` ({}): not forwarded",
                ident(method),
                why.name()
            );
            return Vec::new();
        };
        let shown = ident(method);
        let (code, text) = match why {
            MethodRefusal::LookAlike => (
                ErrorCode::MethodNotFound,
                format!(
                    "Method not found: `{shown}` is not `tools/call` (method names are exact and case-sensitive). Tollgate refuses names that resemble `tools/call`, since an upstream that reads them loosely would run a tool nobody decided. Send `tools/call`."
                ),
            ),
            MethodRefusal::Malformed => (
                ErrorCode::InvalidRequest,
                format!(
                    "Invalid request: the method name `{shown}` is not printable ASCII (no spaces, control characters or non-ASCII letters); Tollgate refuses it. Send the method's exact name."
                ),
            ),
            MethodRefusal::IdInFlight => (
                ErrorCode::InvalidRequest,
                format!(
                    "Invalid request: the id {id} is already used by a request of this session that has not been answered; Tollgate refuses the second one. Give every request in flight its own id."
                ),
            ),
            MethodRefusal::Batch => (ErrorCode::InvalidRequest, self.batch_refusal_text()),
            MethodRefusal::CallAsNotification => return Vec::new(),
        };
        vec![error_response(Some(id), code, &text, None)]
    }

    fn call(
        &mut self,
        id: Value,
        mut original: Value,
        batch: Option<u64>,
        now: Duration,
        out: &mut Vec<Out>,
    ) -> Vec<Value> {
        let params = original.get("params");
        let Some(name) = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return vec![error_response(
                Some(&id),
                ErrorCode::InvalidParams,
                "`tools/call` needs `params.name`, the tool's name (a string)",
                None,
            )];
        };
        match params.and_then(|p| p.get("arguments")) {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => {
                return vec![error_response(
                    Some(&id),
                    ErrorCode::InvalidParams,
                    "`params.arguments` must be an object",
                    None,
                )];
            }
        }
        if self.in_flight_full() {
            return vec![self.too_many_in_flight(&id, &name, now)];
        }
        let Some(advertised) = &self.advertised else {
            // The upstream's tools are not known yet: hold the call and list them.
            if self.listing.is_none() {
                let meta = params.and_then(|p| p.get("_meta")).cloned();
                out.push(Out::Upstream(self.start_listing(None, meta, now)));
            }
            self.held.push(original);
            return Vec::new();
        };
        let Some(info) = advertised.get(&name).cloned() else {
            return vec![self.unknown_tool(&id, &name, now)];
        };
        // The arguments move into the call (no copy); the message keeps the rest and gets the
        // validated arguments back when it is forwarded.
        let arguments = match original
            .get_mut("params")
            .and_then(|p| p.get_mut("arguments"))
        {
            Some(a @ Value::Object(_)) => a.take(),
            _ => Value::Object(Map::new()),
        };
        match self.decide_call(&id, Arc::from(name), Arc::new(arguments), &info, batch, now) {
            Called::Answer(v) => vec![v],
            Called::Refused { tool, decision } => vec![result_response(
                &id,
                refusal::from_decision(&tool, &self.grant, &decision),
            )],
            Called::Admitted { arguments } => {
                out.push(forwarded(original, arguments));
                Vec::new()
            }
            Called::Hold(h) => self.hold(id, h, original, now, out),
        }
    }

    /// Whether the session holds as many calls in flight (forwarded and unanswered, or waiting
    /// for the tool list) as it may.
    fn in_flight_full(&self) -> bool {
        self.pending.len() + self.held.len() >= self.gateway.options.max_in_flight
    }

    /// The refusal of a call past the session's bound on calls in flight: nothing decided.
    fn too_many_in_flight(&self, id: &Value, name: &str, now: Duration) -> Value {
        let max = self.gateway.options.max_in_flight;
        let text = format!(
            "Tollgate refused the call to `{}`: this session already has {max} calls in flight (the most a session may have); nothing was forwarded. Wait for some of them to be answered, then call again.",
            ident(name)
        );
        self.gateway
            .metrics
            .observe_refused_message("too_many_in_flight");
        match self.gateway.audit(now, "refusal", json!({"session": self.session, "grant": self.grant, "id": id, "tool": name, "decision": "too_many_in_flight"})) {
            Ok(_) => result_response(id, refusal::gateway(name, &self.grant, "too_many_in_flight", text)),
            Err(e) => self.audit_failure(id, name, &e),
        }
    }

    /// The refusal of a call to a tool the upstream did not advertise.
    fn unknown_tool(&self, id: &Value, name: &str, now: Duration) -> Value {
        let text = format!(
            "Tollgate refused the call to `{}`: the upstream server does not offer a tool of that name (see `tools/list`).",
            ident(name)
        );
        match self.gateway.audit(now, "refusal", json!({"session": self.session, "grant": self.grant, "id": id, "tool": name, "decision": "unknown_tool"})) {
            Ok(_) => result_response(id, refusal::gateway(name, &self.grant, "unknown_tool", text)),
            Err(e) => self.audit_failure(id, name, &e),
        }
    }

    /// Decides a `tools/call` of an advertised tool, audits the decision, and records an
    /// admitted call as pending: the part of a call the value and direct paths share.
    fn decide_call(
        &mut self,
        id: &Value,
        name: Arc<str>,
        mut arguments: Arc<Value>,
        info: &ToolInfo,
        batch: Option<u64>,
        now: Duration,
    ) -> Called {
        let engine = self.gateway.engine();
        // Decided on, audited and forwarded as the tool reads them (crate::coerce), when the
        // policy reads arguments at all.
        let unreadable = match &info.types {
            Some(types) if engine.reads_arguments() => types.coerce(&mut arguments),
            _ => Vec::new(),
        };
        let meta = meta_of(&arguments, info);
        let call = Call {
            tool: name,
            arguments,
            grant: Arc::clone(&self.grant),
            session: Arc::clone(&self.session),
            meta,
        };
        let name = &*call.tool;
        let decision = engine.decide_coerced(&call, now, &unreadable);
        self.gateway
            .metrics
            .observe_decision(&mut self.metric_handles, &call.tool, &decision);
        // A call that requires approval is held when somebody can approve it, and when its
        // grant has room in the queue; the decision record says which.
        let mut approval_note = None;
        let hold = match &decision.kind {
            DecisionKind::ApprovalRequired { via, .. } => match self.approval_channel(*via) {
                None => {
                    approval_note = Some("no_channel");
                    None
                }
                Some(_)
                    if self.gateway.approvals.held_by(&self.grant)
                        >= self.gateway.options.max_held_per_grant =>
                {
                    approval_note = Some("queue_full");
                    None
                }
                Some(channel) => Some((self.gateway.approvals.allocate(), channel)),
            },
            _ => None,
        };
        let redact_arguments = || {
            let redactions = engine.policy().redactions(name, &call.meta);
            redact(&call.arguments, &redactions)
        };
        // The approver sees the redacted arguments too; otherwise they are only needed for the
        // audit record, built only when there is an audit log.
        let redacted = hold.as_ref().map(|_| redact_arguments());
        let record = || {
            let mut record = json!({
                "session": self.session,
                "grant": self.grant,
                "id": id,
                "tool": name,
                "arguments": redacted.clone().unwrap_or_else(redact_arguments),
                "decision": decision,
            });
            if let Some(note) = approval_note {
                record["approval"] = json!(note);
            }
            if let Some((approval, channel)) = &hold {
                record["approval_id"] = json!(approval);
                record["approval_via"] = json!(channel);
            }
            record
        };
        let queue_full = approval_note == Some("queue_full");
        let seq = match self.gateway.audit_with(now, "decision", record) {
            Ok(seq) => seq,
            // No record, no forwarding: an unaudited call is refused (fail closed).
            Err(e) => return Called::Answer(self.audit_failure(id, name, &e)),
        };
        if let Some((approval, channel)) = hold {
            return Called::Hold(Hold {
                approval,
                channel,
                call,
                engine,
                redacted: redacted.unwrap_or_default(),
                decision,
                decision_seq: seq,
            });
        }
        if queue_full {
            return Called::Answer(result_response(
                id,
                refusal::approval_queue_full(
                    name,
                    &self.grant,
                    &decision,
                    self.gateway.options.max_held_per_grant,
                ),
            ));
        }
        if !decision.admits() {
            return Called::Refused {
                tool: call.tool,
                decision,
            };
        }
        self.forward(id, &call.tool, seq, batch, now);
        Called::Admitted {
            arguments: call.arguments,
        }
    }

    /// A plain `tools/call` from an in-process caller that builds its requests itself (the
    /// scenario runner), without the request as a value: the core decides it exactly as it
    /// decides the message `message()` builds (`{"jsonrpc": "2.0", "id": id, "method":
    /// "tools/call", "params": {"name": tool, "arguments": arguments}}`), and says what became
    /// of it. When the call needs anything but the common case (a recorder, the upstream's
    /// tools not listed yet, a tool it did not advertise, arguments whose text would not parse
    /// back to the same value or might pass the size limit), nothing happens and the answer is
    /// [`Direct::Declined`]: the caller then sends the message on the value path. The
    /// differential tests in crates/scenario check that both paths give the same transcript.
    pub fn call_direct(
        &mut self,
        id: u64,
        tool: &Arc<str>,
        arguments: &Arc<Value>,
        message: impl FnOnce() -> Value,
        now: Duration,
    ) -> Direct {
        if self.gateway.recorder.is_some() || !arguments.is_object() || self.in_flight_full() {
            return Direct::Declined;
        }
        let Some(info) = self
            .advertised
            .as_ref()
            .and_then(|a| a.get(&**tool))
            .cloned()
        else {
            return Direct::Declined;
        };
        if !self.reparse_checked.check(tool, arguments) {
            return Direct::Declined;
        }
        self.last_now = self.last_now.max(now);
        let id_value = Value::from(id);
        match self.decide_call(
            &id_value,
            Arc::clone(tool),
            Arc::clone(arguments),
            &info,
            None,
            now,
        ) {
            Called::Answer(v) => Direct::Outs(vec![Out::Client(v)]),
            Called::Refused { decision, .. } => Direct::Refused(decision),
            Called::Admitted { arguments } => Direct::Forward(arguments),
            Called::Hold(h) => {
                let mut original = message();
                if let Some(a) = original
                    .get_mut("params")
                    .and_then(|p| p.get_mut("arguments"))
                {
                    a.take();
                }
                let mut out = Vec::new();
                let local = self.hold(id_value, h, original, now, &mut out);
                out.extend(local.into_iter().map(Out::Client));
                Direct::Outs(out)
            }
        }
    }

    /// The upstream's answer to call `id` forwarded on the direct path (see
    /// [`SessionCore::call_direct`]): a tool result whose `isError` is `is_error`. Does what
    /// the value path does with the answer's message and says whether the client gets it;
    /// [`DirectAnswer::Declined`] (nothing happened) when the answer needs the value path.
    pub fn answer_direct(&mut self, id: u64, is_error: bool, now: Duration) -> DirectAnswer {
        let id_value = Value::from(id);
        // The id's key (its JSON text, its digits) on the stack: looked up, not kept.
        let mut digits = itoa::Buffer::new();
        let key = digits.format(id);
        if self.gateway.recorder.is_some() || self.handshake_ids.contains(key) {
            return DirectAnswer::Declined;
        }
        self.last_now = self.last_now.max(now);
        match self.pending.remove(key) {
            Some(p) => self.settle_pending(&id_value, p, is_error, None, now),
            // A late answer to a call that already timed out: the client has its answer.
            None if self.is_expired_id(&id_value) => return DirectAnswer::Dropped,
            None => {}
        }
        DirectAnswer::Client
    }

    /// Records an admitted call as pending (its timeout starts); the caller forwards it (see
    /// [`forwarded`]).
    fn forward(
        &mut self,
        id: &Value,
        name: &Arc<str>,
        seq: Option<u64>,
        batch: Option<u64>,
        now: Duration,
    ) {
        let timeout = self
            .gateway
            .options
            .tool_timeouts
            .get(&**name)
            .copied()
            .unwrap_or(self.gateway.options.call_timeout);
        self.pending.insert(
            id_key(&escape_id(id)),
            Pending {
                tool: Arc::clone(name),
                audit_seq: seq,
                started: now,
                deadline: now.saturating_add(timeout),
                batch,
            },
        );
        self.gateway.metrics.in_flight.inc();
    }

    /// Who can approve a call under `via` in this session: `operators`, `elicitation`, or
    /// nobody.
    fn approval_channel(&self, via: ApprovalVia) -> Option<&'static str> {
        let elicit = self.elicitation.as_ref().is_some_and(|e| e.form);
        match via {
            ApprovalVia::Elicitation if elicit => Some("elicitation"),
            _ if self.gateway.options.approvals => Some("operators"),
            _ => None,
        }
    }

    /// Holds a decided call for approval (`original` is its message without the arguments):
    /// registers it, and asks the client's user when the channel is elicitation. The agent's
    /// answer comes when it is decided (see `tick`).
    fn hold(
        &mut self,
        id: Value,
        r: Hold,
        original: Value,
        now: Duration,
        out: &mut Vec<Out>,
    ) -> Vec<Value> {
        let (approval, channel) = (r.approval, r.channel);
        let DecisionKind::ApprovalRequired {
            timeout,
            on_timeout,
            ..
        } = r.decision.kind
        else {
            return Vec::new();
        };
        let deadline = now.saturating_add(timeout);
        let reason = r.decision.reason.as_deref().map(str::to_owned);
        self.gateway.approvals.insert(
            self.core_id,
            PendingApproval {
                id: approval,
                tool: r.call.tool.to_string(),
                arguments: r.redacted.clone(),
                grant: self.grant.to_string(),
                session: self.session.to_string(),
                request_id: id.clone(),
                rule: r.decision.rule.clone(),
                policy_reason: reason.clone(),
                via: channel,
                on_timeout,
                created_at_ms: ms(now),
                deadline_ms: ms(deadline),
                decision_seq: r.decision_seq,
            },
        );
        let elicit = (channel == "elicitation").then(|| format!("{ELICIT_PREFIX}{approval}"));
        if let Some(eid) = &elicit {
            self.elicits.insert(eid.clone(), approval);
            out.push(Out::Client(self.elicitation_request(
                eid,
                approval,
                &r.call.tool,
                &r.redacted,
                &r.decision,
                timeout,
            )));
        }
        self.awaiting.insert(
            approval,
            Held {
                id,
                call: r.call,
                original,
                engine: r.engine,
                redacted: r.redacted,
                decision_seq: r.decision_seq,
                started: now,
                deadline,
                rule: r.decision.rule.clone(),
                reason,
                on_timeout,
                elicit,
            },
        );
        Vec::new()
    }

    fn elicitation_request(
        &self,
        eid: &str,
        approval: u64,
        tool: &str,
        arguments: &Value,
        decision: &Decision,
        timeout: Duration,
    ) -> Value {
        let mut args = arguments.to_string();
        if args.chars().count() > 400 {
            args = args.chars().take(397).collect::<String>() + "...";
        }
        let why = decision
            .reason
            .as_deref()
            .map(|r| format!(" ({})", prose(r)))
            .unwrap_or_default();
        // The user decides on this text: the tool's name and the arguments are escaped, so a
        // look-alike name or a control character cannot disguise the call.
        let message = format!(
            "The agent wants to call `{}` with {}. The gateway's policy (rule `{}`) requires your approval{why}. Accept to run the call, decline to refuse it. Tollgate approval {approval}; it is refused in {} if you do not answer.",
            ident(tool),
            prose(&args),
            ident(&decision.rule.selector),
            tollgate_policy::engine::duration_text(timeout)
        );
        let mut params = json!({
            "message": message,
            "requestedSchema": {"type": "object", "properties": {}},
        });
        if self.elicitation.as_ref().is_some_and(|e| e.with_mode) {
            params["mode"] = json!("form");
        }
        json!({"jsonrpc": "2.0", "id": eid, "method": "elicitation/create", "params": params})
    }

    fn is_elicit(&self, id: &Value) -> bool {
        id.as_str().is_some_and(|s| self.elicits.contains_key(s))
    }

    /// The client's answer to an `elicitation/create`: accept approves, decline and cancel
    /// (and an error) deny; the approver recorded is `elicitation`.
    fn elicitation_answer(
        &mut self,
        id: &Value,
        answer: Result<&Value, &Value>,
        now: Duration,
        out: &mut Vec<Out>,
    ) -> Vec<Value> {
        let Some(approval) = id.as_str().and_then(|s| self.elicits.remove(s)) else {
            return Vec::new();
        };
        let (verdict, reason) = match answer {
            Ok(r) => match r.get("action").and_then(Value::as_str) {
                Some("accept") => (VerdictKind::Approved, None),
                Some("decline") => (VerdictKind::Denied, Some("the user declined".to_owned())),
                Some("cancel") => (
                    VerdictKind::Denied,
                    Some("the user dismissed the question without answering".to_owned()),
                ),
                other => (
                    VerdictKind::Denied,
                    Some(format!(
                        "the client answered the elicitation with action {}, which is not accept",
                        other.map_or_else(|| "(none)".to_owned(), |a| format!("`{a}`"))
                    )),
                ),
            },
            Err(e) => (
                VerdictKind::Denied,
                Some(format!(
                    "the client could not ask its user: {}",
                    e.get("message").and_then(Value::as_str).unwrap_or("error")
                )),
            ),
        };
        let decided = self.gateway.decide_approval(
            approval,
            verdict,
            "elicitation",
            reason.as_deref(),
            now,
            Decider::Elicitation,
        );
        if let Err(e) = decided {
            // Expired meanwhile, or the audit log failed (then the call stays held until
            // its timeout): nothing to act on now.
            tracing::warn!("elicitation answer for approval {approval} not taken: {e}");
        }
        out.extend(self.settle(now));
        Vec::new()
    }

    /// Whether a client's `notifications/cancelled` names a call held for approval.
    fn cancels_held(&self, params: Option<&Value>) -> bool {
        let Some(request) = params.and_then(|p| p.get("requestId")) else {
            return false;
        };
        self.awaiting.values().any(|h| &h.id == request)
    }

    /// The agent cancelled a held call: it is withdrawn (audited) and nobody answers it.
    fn withdraw_request(&mut self, request: Option<&Value>, now: Duration, out: &mut Vec<Out>) {
        let Some(approval) = self
            .awaiting
            .iter()
            .find(|(_, h)| Some(&h.id) == request)
            .map(|(a, _)| *a)
        else {
            return;
        };
        if let Some(h) = self.awaiting.remove(&approval) {
            self.conclude(
                approval,
                VerdictKind::Withdrawn,
                "the agent cancelled the call",
                now,
            );
            if let Some(eid) = h.elicit {
                self.elicits.remove(&eid);
                out.push(Out::Client(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": eid, "reason": "the agent cancelled the call"}})));
            }
        }
    }

    /// Ends a held approval without an operator (expiry, withdrawal), auditing it if it was
    /// still undecided; returns the verdict that stands (a decision that came first wins).
    fn conclude(
        &self,
        approval: u64,
        kind: VerdictKind,
        why: &str,
        now: Duration,
    ) -> Option<Verdict> {
        let verdict = Verdict {
            verdict: kind,
            approver: None,
            reason: Some(why.to_owned()),
            decided_at_ms: ms(now),
        };
        self.gateway.approvals.conclude(approval, verdict, |a, v| {
            if let Err(e) = self.gateway.approval_record(now, a, v) {
                tracing::error!("cannot audit the end of approval {}: {e}", a.id);
            }
        })
    }

    /// Acts on every decided or expired held call of this session.
    fn settle(&mut self, now: Duration) -> Vec<Out> {
        let mut out = Vec::new();
        let mut verdicts: Vec<(u64, Verdict)> = self.gateway.approvals.take_decided(self.core_id);
        let due: Vec<u64> = self
            .awaiting
            .iter()
            .filter(|(a, h)| h.deadline <= now && !verdicts.iter().any(|(v, _)| v == *a))
            .map(|(a, _)| *a)
            .collect();
        for approval in due {
            if let Some(v) = self.conclude(
                approval,
                VerdictKind::Expired,
                "nobody decided before the deadline",
                now,
            ) {
                verdicts.push((approval, v));
            }
        }
        verdicts.sort_by_key(|(a, _)| *a);
        for (approval, verdict) in verdicts {
            let Some(h) = self.awaiting.remove(&approval) else {
                continue;
            };
            if let Some(eid) = &h.elicit
                && self.elicits.remove(eid).is_some()
            {
                // The question is moot (expired): tell the client to stop asking.
                out.push(Out::Client(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": eid, "reason": "the approval timed out"}})));
            }
            self.act(approval, h, &verdict, now, &mut out);
        }
        out
    }

    fn act(
        &mut self,
        approval: u64,
        h: Held,
        verdict: &Verdict,
        now: Duration,
        out: &mut Vec<Out>,
    ) {
        let held = refusal::HeldCall {
            tool: &h.call.tool,
            grant: &self.grant,
            approval,
            rule: &h.rule,
            policy_reason: h.reason.as_deref(),
            waited: now.saturating_sub(h.started),
        };
        let admit = match verdict.verdict {
            VerdictKind::Approved => true,
            VerdictKind::Expired => h.on_timeout == TimeoutOutcome::Allow,
            VerdictKind::Denied | VerdictKind::Withdrawn => false,
        };
        if verdict.verdict == VerdictKind::Withdrawn {
            return;
        }
        if !admit {
            let answer = match verdict.verdict {
                VerdictKind::Denied => refusal::approval_denied(
                    &held,
                    verdict.approver.as_deref().unwrap_or("an approver"),
                    verdict.reason.as_deref(),
                ),
                _ => refusal::approval_timeout(&held),
            };
            out.push(Out::Client(result_response(&h.id, answer)));
            return;
        }
        // Admitted by a human (or by the timeout): the limits are taken now, and the release
        // is a decision of its own, audited before the call is forwarded.
        let decision = h.engine.admit_approved(&h.call, now);
        self.gateway
            .metrics
            .observe_decision(&mut self.metric_handles, &h.call.tool, &decision);
        let record = json!({
            "session": self.session, "grant": self.grant, "id": h.id, "tool": h.call.tool,
            "arguments": h.redacted, "decision": decision, "approval_id": approval,
            "approved_by": verdict.approver, "held_decision_seq": h.decision_seq,
        });
        let seq = match self.gateway.audit(now, "decision", record) {
            Ok(seq) => seq,
            Err(e) => {
                out.push(Out::Client(self.audit_failure(&h.id, &h.call.tool, &e)));
                return;
            }
        };
        if !decision.admits() {
            let answer =
                refusal::approved_but_rate_limited(&held, verdict.approver.as_deref(), &decision);
            out.push(Out::Client(result_response(&h.id, answer)));
            return;
        }
        let Held {
            id, call, original, ..
        } = h;
        // A held call of a batch is answered on its own (the batch's other answers went
        // earlier), so it forwards as a single message.
        self.forward(&id, &call.tool, seq, None, now);
        out.push(forwarded(original, call.arguments));
    }

    fn audit_failure(&self, id: &Value, tool: &str, error: &str) -> Value {
        let text = format!(
            "Tollgate refused the call to `{}`: its audit log cannot be written ({}), and no call is forwarded unaudited. Tell the gateway's operator.",
            ident(tool),
            prose(error)
        );
        result_response(
            id,
            refusal::gateway(tool, &self.grant, "audit_unavailable", text),
        )
    }

    fn start_listing(&mut self, cursor: Option<&str>, meta: Option<Value>, now: Duration) -> Value {
        self.next_internal += 1;
        let id = format!("tollgate-internal-{}", self.next_internal);
        let mut params = json!({});
        if let Some(c) = cursor {
            params["cursor"] = json!(c);
        }
        if let Some(m) = &meta {
            params["_meta"] = m.clone();
        }
        let (tools, pages) = self
            .listing
            .take()
            .map(|l| (l.tools, l.pages))
            .unwrap_or_default();
        self.listing = Some(Listing {
            id: id.clone(),
            tools,
            meta,
            pages: pages + 1,
            deadline: now.saturating_add(self.list_timeout()),
        });
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
    }

    /// Handles bytes from the upstream.
    pub fn from_upstream(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
        self.last_now = self.last_now.max(now);
        self.record_in("upstream", bytes, now);
        let mut outs = self.handle_upstream(bytes, now);
        self.record_out(&mut outs, now);
        outs
    }

    fn handle_upstream(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
        // The upstream is trusted less than the client is not: it gets the size limit, but
        // duplicate keys in its answers are its own business.
        if bytes.len() > self.gateway.options.limits.max_bytes {
            return Vec::new();
        }
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            // An answer that is not JSON cannot be matched to a call: the call's timeout
            // answers the client.
            return Vec::new();
        };
        self.upstream_value(value, now)
    }

    /// An upstream message after parsing.
    fn upstream_value(&mut self, value: Value, now: Duration) -> Vec<Out> {
        match value {
            Value::Array(items) => {
                let mut out = Vec::new();
                let mut to_client = Vec::new();
                for item in items {
                    for o in self.upstream_message(item, now) {
                        match o {
                            // A batch's answers go back as one array, its local ones included.
                            Out::Client(Value::Array(local)) => to_client.extend(local),
                            Out::Client(v) => to_client.push(v),
                            other => out.push(other),
                        }
                    }
                }
                if !to_client.is_empty() {
                    out.push(Out::Client(Value::Array(to_client)));
                }
                out
            }
            v => self.upstream_message(v, now),
        }
    }

    fn upstream_message(&mut self, v: Value, now: Duration) -> Vec<Out> {
        let mut due = None;
        let mut out = self.upstream_message_inner(v, now, &mut due);
        // A batch's refusals go after the answer that settled its last forwarded request.
        if let Some(local) = due {
            out.push(Out::Client(Value::Array(local)));
        }
        out
    }

    /// [`Self::upstream_message`], leaving in `due` the local answers of a batch it settled.
    fn upstream_message_inner(
        &mut self,
        v: Value,
        now: Duration,
        due: &mut Option<Vec<Value>>,
    ) -> Vec<Out> {
        let id = v.get("id").cloned();
        let is_response =
            v.get("method").is_none() && (v.get("result").is_some() || v.get("error").is_some());
        let mut out = Vec::new();
        if let (Some(id), true) = (&id, is_response) {
            if let Some(listing) = &self.listing
                && id.as_str() == Some(listing.id.as_str())
            {
                return self.internal_listing(&v, now);
            }
            let key = id_key(id);
            if let Some(p) = self.pending.remove(&key) {
                let is_error = v
                    .get("result")
                    .and_then(|r| r.get("isError"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let batch = p.batch;
                let client_id = unescape_id(id).unwrap_or(Value::Null);
                self.settle_pending(&client_id, p, is_error, v.get("error"), now);
                *due = batch.and_then(|b| self.batch_item_done(b));
            } else if self.is_expired_id(id) {
                // A late answer to a call that already timed out: the client has its answer.
                return out;
            }
            if self.handshake_ids.remove(&key) {
                let mut v = v;
                let result = v.get_mut("result");
                if let Some(p) = result
                    .as_ref()
                    .and_then(|r| r.get("protocolVersion"))
                    .and_then(Value::as_str)
                    .and_then(ProtocolVersion::parse)
                {
                    self.protocol = Some(p);
                }
                if let Some(tools) = result
                    .and_then(|r| r.get_mut("capabilities"))
                    .and_then(|c| c.get_mut("tools"))
                    .and_then(Value::as_object_mut)
                {
                    tools.insert("listChanged".into(), Value::Bool(true));
                }
                out.extend(crossing(v).map(Out::Client));
                return out;
            }
            if v.get("result").and_then(|r| r.get("tools")).is_some() {
                let mut v = v;
                self.absorb_listing(&v);
                self.hide_tools(&mut v);
                self.listed_under = Some(self.gateway.engine());
                out.extend(crossing(v).map(Out::Client));
                return out;
            }
        }
        if v.get("method").and_then(Value::as_str) == Some("notifications/tools/list_changed") {
            // The upstream's tools changed: list them again before the next call.
            self.advertised = None;
        }
        // An answer to one of the gateway's own requests that is not in flight (a listing
        // the session gave up on) is dropped by `crossing`: no client asked for it.
        out.extend(crossing(v).map(Out::Client));
        out
    }

    /// One forwarded request of batch `b` is settled (answered, timed out or failed): when it
    /// was the last, the batch's local answers (its refusals) are due, returned here.
    fn batch_item_done(&mut self, b: u64) -> Option<Vec<Value>> {
        let state = self.batches.get_mut(&b)?;
        state.open = state.open.saturating_sub(1);
        if state.open > 0 {
            return None;
        }
        let state = self.batches.remove(&b)?;
        (!state.local.is_empty()).then_some(state.local)
    }

    /// The end of a pending request the upstream answered: for a forwarded call, its latency
    /// and its audited outcome.
    fn settle_pending(
        &mut self,
        id: &Value,
        p: Pending,
        is_error: bool,
        error: Option<&Value>,
        now: Duration,
    ) {
        if p.tool.is_empty() {
            return;
        }
        self.gateway.metrics.in_flight.dec();
        self.gateway.metrics.observe_latency(
            &mut self.metric_handles,
            &p.tool,
            now.saturating_sub(p.started),
        );
        self.gateway.audit_deferred(now, "outcome", || json!({
            "session": self.session, "grant": self.grant, "id": id, "tool": p.tool, "decision_seq": p.audit_seq,
            "latency_ms": ms(now.saturating_sub(p.started)), "is_error": is_error,
            "error": error,
        }));
    }

    /// Whether `id` belongs to a call that timed out (its late answer is dropped once).
    fn is_expired_id(&mut self, id: &Value) -> bool {
        self.expired.remove(&id_key(id))
    }

    /// Records the tools a client-visible `tools/list` answer names (pages accumulate).
    fn absorb_listing(&mut self, v: &Value) {
        let tools = v["result"]["tools"].as_array().map(Vec::as_slice);
        let map = self.advertised.get_or_insert_with(HashMap::default);
        for t in tools.unwrap_or_default() {
            if let Some(name) = t.get("name").and_then(Value::as_str) {
                map.insert(name.to_owned(), tool_info(t));
            }
        }
    }

    /// After a reload: if the client has listed the tools and the set it may see changed
    /// (`hide_from_list` hides a different set), it is told with
    /// `notifications/tools/list_changed`, so it lists them again.
    pub fn policy_changed(&mut self, now: Duration) -> Vec<Out> {
        let Some(before) = self.listed_under.clone() else {
            return Vec::new();
        };
        let Some(advertised) = &self.advertised else {
            return Vec::new();
        };
        let after = self.gateway.engine();
        if Arc::ptr_eq(&before, &after) {
            return Vec::new();
        }
        let changed = visible_tools(advertised, &before) != visible_tools(advertised, &after);
        self.listed_under = Some(after);
        if !changed {
            return Vec::new();
        }
        let mut outs = vec![Out::Client(json!({
            "jsonrpc": "2.0",
            "method": "notifications/tools/list_changed",
        }))];
        self.record_out(&mut outs, now);
        outs
    }

    /// With `hide_from_list`, removes the tools the policy refuses whatever the arguments.
    fn hide_tools(&self, v: &mut Value) {
        let engine = self.gateway.engine();
        let policy = engine.policy();
        if !policy.doc.hide_from_list {
            return;
        }
        if let Some(tools) = v["result"]["tools"].as_array_mut() {
            tools.retain(|t| {
                let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
                tool_visible(&engine, name, &tool_info(t))
            });
        }
    }

    fn internal_listing(&mut self, v: &Value, now: Duration) -> Vec<Out> {
        let mut listing = match self.listing.take() {
            Some(l) => l,
            None => return Vec::new(),
        };
        for t in v["result"]["tools"].as_array().into_iter().flatten() {
            if listing.tools.len() >= MAX_LISTED_TOOLS {
                tracing::warn!(
                    "the upstream lists more than {MAX_LISTED_TOOLS} tools: the rest are unknown"
                );
                break;
            }
            if let Some(name) = t.get("name").and_then(Value::as_str) {
                listing.tools.insert(name.to_owned(), tool_info(t));
            }
        }
        if let Some(cursor) = v["result"]["nextCursor"].as_str() {
            if listing.pages < MAX_LIST_PAGES {
                let cursor = cursor.to_owned();
                let meta = listing.meta.clone();
                self.listing = Some(listing);
                return vec![Out::Upstream(self.start_listing(Some(&cursor), meta, now))];
            }
            tracing::warn!(
                "the upstream's tool list goes on past {MAX_LIST_PAGES} pages: the gateway stops there"
            );
        }
        // An error answer leaves the tool set empty: every held call is refused as unknown,
        // which is safe, and the next call lists again.
        let failed = v.get("error").is_some();
        self.advertised = Some(listing.tools);
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        // Held messages were parsed (and checked) when they came: they go on as values.
        for msg in held {
            out.extend(self.handle_incoming(Ok(Incoming::Single(msg)), now));
        }
        if failed {
            self.advertised = None;
        }
        out
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
                let _ = self.gateway.audit(now, "outcome", json!({"session": self.session, "grant": self.grant, "id": client_id, "tool": p.tool, "decision_seq": p.audit_seq, "latency_ms": ms(waited), "timeout": true}));
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

    /// How long the gateway waits for a page of its own `tools/list`: the call timeout, but at
    /// least [`MIN_LIST_TIMEOUT`] (the first listing also waits for an upstream that is still
    /// starting).
    fn list_timeout(&self) -> Duration {
        self.gateway.options.call_timeout.max(MIN_LIST_TIMEOUT)
    }

    /// The upstream did not answer the gateway's own `tools/list` in time: the calls waiting
    /// for it get an error (nothing was decided or forwarded), and the next call lists again.
    fn listing_timed_out(&mut self, now: Duration) -> Vec<Out> {
        if self.listing.as_ref().is_none_or(|l| l.deadline > now) {
            return Vec::new();
        }
        self.listing = None;
        let text = format!(
            "the upstream server did not list its tools within {}s, so the call could not be decided; nothing was forwarded. Retry later.",
            self.list_timeout().as_secs()
        );
        std::mem::take(&mut self.held)
            .iter()
            .filter_map(|msg| msg.get("id"))
            .map(|id| {
                Out::Client(error_response(
                    Some(id),
                    ErrorCode::InternalError,
                    &text,
                    None,
                ))
            })
            .collect()
    }

    /// The session is ending (the gateway shuts down, or the client left): every held call is
    /// withdrawn (audited) and answered with a refusal, since nobody will decide it here.
    pub fn release_held(&mut self, now: Duration, why: &str) -> Vec<Out> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.awaiting);
        for (approval, h) in held {
            self.conclude(approval, VerdictKind::Withdrawn, why, now);
            let text = format!(
                "Tollgate refused the call to `{}`: it was waiting for a human's approval (approval {approval}) when {}; nothing was forwarded. Call again later.",
                ident(&h.call.tool),
                prose(why)
            );
            out.push(Out::Client(result_response(
                &h.id,
                refusal::gateway(&h.call.tool, &self.grant, "approval_withdrawn", text),
            )));
        }
        self.elicits.clear();
        self.record_out(&mut out, now);
        out
    }

    /// The upstream went away: every pending call gets an error result.
    pub fn upstream_closed(&mut self, now: Duration, why: &str) -> Vec<Out> {
        let mut outs = self.upstream_closed_inner(now, why);
        self.record_out(&mut outs, now);
        outs
    }

    fn upstream_closed_inner(&mut self, now: Duration, why: &str) -> Vec<Out> {
        let mut out = Vec::new();
        let pending: BTreeMap<String, Pending> = self.pending.drain().collect();
        for (key, p) in pending {
            let Ok(id) = serde_json::from_str::<Value>(&key) else {
                continue;
            };
            let id = unescape_id(&id).unwrap_or(Value::Null);
            if p.tool.is_empty() {
                out.push(Out::Client(error_response(
                    Some(&id),
                    ErrorCode::InternalError,
                    &format!("the upstream server went away: {why}"),
                    None,
                )));
                continue;
            }
            self.gateway.metrics.in_flight.dec();
            let _ = self.gateway.audit(now, "outcome", json!({"session": self.session, "grant": self.grant, "id": id, "tool": p.tool, "decision_seq": p.audit_seq, "error": why}));
            let text = format!(
                "The upstream server went away while running `{}` ({}); the call may or may not have taken effect.",
                ident(&p.tool),
                prose(why)
            );
            out.push(Out::Client(result_response(
                &id,
                refusal::gateway(&p.tool, &self.grant, "upstream_failed", text),
            )));
        }
        // Every batch's requests were settled above: their local answers are due now.
        let batches: BTreeMap<u64, BatchState> = self.batches.drain().collect();
        for (_, state) in batches {
            if !state.local.is_empty() {
                out.push(Out::Client(Value::Array(state.local)));
            }
        }
        for msg in std::mem::take(&mut self.held) {
            if let Some(id) = msg.get("id") {
                out.push(Out::Client(error_response(
                    Some(id),
                    ErrorCode::InternalError,
                    &format!("the upstream server went away: {why}"),
                    None,
                )));
            }
        }
        self.listing = None;
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

/// The names of `advertised` a client may see under `engine` (all of them unless the policy
/// hides the tools it always refuses).
fn visible_tools(advertised: &HashMap<String, ToolInfo, Hasher>, engine: &Engine) -> Vec<String> {
    let mut names: Vec<String> = advertised
        .iter()
        .filter(|(name, info)| tool_visible(engine, name, info))
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}

/// Whether a client may see `name` in `tools/list` under `engine`: with `hide_from_list`, the
/// tools the policy refuses whatever the arguments are hidden.
fn tool_visible(engine: &Engine, name: &str, info: &ToolInfo) -> bool {
    let policy = engine.policy();
    if !policy.doc.hide_from_list {
        return true;
    }
    let catalogued = tollgate_catalog::Catalog::embedded().get(name);
    let meta = |class: Option<RiskClass>| ToolMeta {
        class,
        annotations: Arc::clone(&info.annotations),
        defaults: info.types.as_ref().and_then(|t| t.defaults().cloned()),
    };
    // A call's class is its operation's (`call_class`): the tool is always refused only if it
    // is under its worst-case class (no or an unknown operation) and under every operation's.
    let classes = std::iter::once(catalogued.map(|c| policy_class(c.class))).chain(
        catalogued
            .into_iter()
            .flat_map(|c| c.operation_classes.values().map(|k| Some(policy_class(*k)))),
    );
    !classes
        .into_iter()
        .all(|class| policy.always_denies(name, &meta(class)))
}

/// The risk class the policy engine sees for one call of a catalogued tool, with `arguments`
/// as the gateway decides on them: the class of its `operation` for the tools whose effect
/// depends on it (`manage_k8s_resource {"operation": "read"}` is read), the tool's worst case
/// otherwise (no operation, or one the catalogue does not list). The one function the gateway
/// and `tollgate explain` both use, so they pick the same rule.
pub fn call_class(tool: &tollgate_catalog::CatalogTool, arguments: &Value) -> RiskClass {
    policy_class(tool.class_for(arguments))
}

/// The catalogue's risk class as the policy engine's (the engine does not know the catalogue).
pub fn policy_class(class: tollgate_catalog::RiskClass) -> RiskClass {
    match class {
        tollgate_catalog::RiskClass::Read => RiskClass::Read,
        tollgate_catalog::RiskClass::Write => RiskClass::Write,
        tollgate_catalog::RiskClass::Execute => RiskClass::Execute,
        tollgate_catalog::RiskClass::Destructive => RiskClass::Destructive,
    }
}

fn is_internal(v: &Value) -> bool {
    v.get("id")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("tollgate-internal-"))
}

/// What the policy engine knows of a call's tool: its class for these arguments (from the
/// catalogue) and the annotations the upstream advertised.
fn meta_of(arguments: &Value, info: &ToolInfo) -> ToolMeta {
    let class = info.catalogued.map(|t| call_class(t, arguments));
    ToolMeta {
        class,
        annotations: Arc::clone(&info.annotations),
        defaults: info.types.as_ref().and_then(|t| t.defaults().cloned()),
    }
}

/// The [`ToolMeta`] the gateway gives the engine for a call of the tool `listed` (one entry of
/// an upstream's `tools/list` answer) with `arguments`: for tools that check a policy the way
/// the gateway does (the fuzzer's reference model).
pub fn call_meta(listed: &Value, arguments: &Value) -> ToolMeta {
    meta_of(arguments, &tool_info(listed))
}

fn tool_info(t: &Value) -> ToolInfo {
    let a = t.get("annotations");
    let catalogued = t
        .get("name")
        .and_then(Value::as_str)
        .and_then(|name| tollgate_catalog::Catalog::embedded().get(name));
    let hint = |k: &str| {
        a.and_then(|a| a.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut annotations = Vec::new();
    if hint("readOnlyHint") {
        annotations.push(Annotation::ReadOnly);
    } else if hint("destructiveHint") {
        // Per the specification destructiveHint means nothing on a read-only tool.
        annotations.push(Annotation::Destructive);
    }
    if hint("idempotentHint") {
        annotations.push(Annotation::Idempotent);
    }
    if hint("openWorldHint") {
        annotations.push(Annotation::OpenWorld);
    }
    ToolInfo {
        annotations: Arc::new(annotations.into_iter().collect()),
        catalogued,
        types: crate::coerce::ToolTypes::of_listed(t.get("inputSchema"), catalogued),
    }
}

/// An admitted call as it goes upstream: its message with the validated arguments put back
/// (re-serialized from the parsed value, never the raw bytes).
fn forwarded(mut original: Value, arguments: Arc<Value>) -> Out {
    original["params"]["arguments"] = Arc::unwrap_or_clone(arguments);
    if let Some(id) = original.get_mut("id")
        && let std::borrow::Cow::Owned(escaped) = escape_id(id)
    {
        *id = escaped;
    }
    Out::Upstream(original)
}

/// Why a client message was refused before any decision (the `decision` of its `refusal`
/// audit record, and the `reason` label of its metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MethodRefusal {
    /// A `tools/call` without an id: a notification, which JSON-RPC lets a server run and
    /// nobody could be told the decision of.
    CallAsNotification,
    /// A method name that resembles `tools/call` without being it.
    LookAlike,
    /// A method name that is not printable ASCII.
    Malformed,
    /// A request whose id is already in flight in this session.
    IdInFlight,
    /// A batch in a protocol version without batches (or before `initialize`).
    Batch,
}

impl MethodRefusal {
    fn name(self) -> &'static str {
        match self {
            MethodRefusal::CallAsNotification => "call_as_notification",
            MethodRefusal::LookAlike => "method_look_alike",
            MethodRefusal::Malformed => "malformed_method",
            MethodRefusal::IdInFlight => "id_in_flight",
            MethodRefusal::Batch => "batch_not_allowed",
        }
    }
}

/// What [`SessionCore::decide_call`] made of a call.
enum Called {
    /// The gateway answers the client itself (a refusal before or around the policy).
    Answer(Value),
    /// The policy refused it.
    Refused { tool: Arc<str>, decision: Decision },
    /// Admitted and pending: forward it with these (validated) arguments.
    Admitted { arguments: Arc<Value> },
    /// To be held for a human's approval.
    Hold(Hold),
}

/// A decided call to hold, without its message and id.
struct Hold {
    approval: u64,
    channel: &'static str,
    call: Call,
    engine: Arc<Engine>,
    redacted: Value,
    decision: Decision,
    decision_seq: Option<u64>,
}

/// What became of a call given to [`SessionCore::call_direct`].
#[derive(Debug)]
pub enum Direct {
    /// Not taken (nothing happened): send the message on the value path.
    Declined,
    /// Refused by the policy: the value path would answer
    /// `refusal::from_decision(tool, grant, &decision)`.
    Refused(Decision),
    /// Admitted and pending: send it to the upstream with these arguments, and give its answer
    /// to [`SessionCore::answer_direct`].
    Forward(Arc<Value>),
    /// Anything else, as the value path's outputs (a gateway refusal, a held call).
    Outs(Vec<Out>),
}

/// What became of an upstream answer given to [`SessionCore::answer_direct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectAnswer {
    /// Not taken (nothing happened): give the answer's message to the value path.
    Declined,
    /// The client gets the answer, unchanged.
    Client,
    /// Dropped (the call had timed out; the client has its answer).
    Dropped,
}

/// What an `initialize` says about elicitation: present means supported; form mode is
/// supported when `form` is declared, or when neither mode is (the 2025-06-18 shape, `{}`).
fn client_elicitation(params: Option<&Value>) -> Option<ClientElicitation> {
    let params = params?;
    let e = params.get("capabilities")?.get("elicitation")?;
    let e = e.as_object()?;
    let has = |k: &str| e.get(k).is_some_and(|v| !v.is_null());
    let form = has("form") || !has("url");
    let version = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(ClientElicitation {
        form,
        // Protocol versions are dates: they compare as strings.
        with_mode: version >= "2025-11-25",
    })
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    /// An id's key is its JSON text, whichever way it is made.
    #[test]
    fn id_keys_are_the_ids_json_text() {
        for id in [
            json!(0),
            json!(7),
            json!(u64::MAX),
            json!(-1),
            json!(i64::MIN),
            json!(1.5),
            json!("7"),
            json!("a\"b"),
            Value::Null,
        ] {
            assert_eq!(super::id_key(&id), id.to_string());
        }
    }
}
