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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tollgate_mcp::jsonrpc::salvage_id;
use tollgate_mcp::{
    ErrorCode, Incoming, Limits, Message, WireError, error_response, parse_incoming,
    result_response,
};
use tollgate_policy::{Annotation, Call, Engine, RiskClass, ToolMeta};

use crate::audit::{AuditLog, redact};
use crate::refusal;

/// How the gateway behaves, whatever the transport.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub limits: Limits,
    /// How long a forwarded call may wait for the upstream.
    pub call_timeout: Duration,
    /// Per-tool timeouts (exact names), overriding `call_timeout`.
    pub tool_timeouts: HashMap<String, Duration>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            limits: Limits::default(),
            call_timeout: Duration::from_secs(60),
            tool_timeouts: HashMap::new(),
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
        Arc::new(Gateway {
            engine: std::sync::RwLock::new(Arc::new(engine)),
            audit: audit.map(Mutex::new),
            options,
            recorder: None,
            metrics: crate::metrics::Metrics::default(),
        })
    }

    /// The same gateway, recording every message to `recorder`.
    pub fn new_recording(
        engine: Engine,
        audit: Option<AuditLog>,
        options: GatewayOptions,
        recorder: Recorder,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            engine: std::sync::RwLock::new(Arc::new(engine)),
            audit: audit.map(Mutex::new),
            options,
            recorder: Some(Mutex::new(recorder)),
            metrics: crate::metrics::Metrics::default(),
        })
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
        let store = Arc::clone(self.engine().store());
        let engine = Arc::new(Engine::new(Arc::new(policy), store));
        // Audit first: a reload that cannot be recorded does not happen.
        self.audit(now, "reload", fields)?;
        *self.engine.write().unwrap_or_else(PoisonError::into_inner) = engine;
        Ok(())
    }

    /// Records a reload that was refused (the old policy keeps running).
    pub fn reload_refused(&self, now: Duration, fields: Value) -> Result<(), String> {
        self.audit(now, "reload_refused", fields).map(|_| ())
    }

    /// A new session for one client (its grant and session id).
    pub fn session(self: &Arc<Self>, grant: &str, session: &str) -> SessionCore {
        SessionCore {
            gateway: Arc::clone(self),
            grant: grant.to_owned(),
            session: session.to_owned(),
            advertised: None,
            listing: None,
            held: Vec::new(),
            pending: HashMap::new(),
            batches: HashMap::new(),
            next_internal: 0,
            next_batch: 0,
            expired: HashSet::new(),
        }
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

    /// Writes the closing record of a clean shutdown.
    pub fn close(&self, now: Duration) -> Result<(), String> {
        self.audit(now, "close", json!({})).map(|_| ())
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
#[derive(Debug, Clone, Default)]
struct ToolInfo {
    annotations: Vec<Annotation>,
}

#[derive(Debug)]
struct Listing {
    /// The id of the gateway's own `tools/list` request in flight.
    id: String,
    tools: HashMap<String, ToolInfo>,
    meta: Option<Value>,
}

#[derive(Debug)]
struct Pending {
    tool: String,
    audit_seq: Option<u64>,
    started: Duration,
    deadline: Duration,
    batch: Option<u64>,
}

#[derive(Debug, Default)]
struct BatchState {
    /// Answers the gateway gave itself (refusals) for this batch.
    local: Vec<Value>,
}

/// One client session.
#[derive(Debug)]
pub struct SessionCore {
    gateway: Arc<Gateway>,
    grant: String,
    session: String,
    advertised: Option<HashMap<String, ToolInfo>>,
    listing: Option<Listing>,
    /// Client calls waiting for the upstream's tool list.
    held: Vec<Value>,
    /// Forwarded calls by id (the id's JSON text).
    pending: HashMap<String, Pending>,
    batches: HashMap<u64, BatchState>,
    next_internal: u64,
    next_batch: u64,
    /// Ids of calls answered by a timeout, whose late answers are dropped.
    expired: HashSet<String>,
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

impl SessionCore {
    pub fn grant(&self) -> &str {
        &self.grant
    }

    /// Whether handling a message may block on IO: the counter store is remote (Redis), so a
    /// decision waits for a round trip. An async transport then runs it off its workers.
    pub fn may_block(&self) -> bool {
        self.gateway.engine().store().blocks()
    }

    /// Whether calls are waiting for the upstream.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.held.is_empty()
    }

    /// The earliest deadline of a forwarded call, for the transport's timer.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Handles bytes from the client.
    pub fn from_client(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
        self.record_in("client", bytes, now);
        let outs = self.handle_client(bytes, now);
        self.record_out(&outs, now);
        outs
    }

    fn record_in(&self, dir: &str, bytes: &[u8], now: Duration) {
        if self.gateway.recorder.is_some() {
            let message = serde_json::from_slice::<Value>(bytes)
                .unwrap_or_else(|_| json!({"unparsed": String::from_utf8_lossy(bytes)}));
            self.gateway
                .record(now, &self.session, &self.grant, dir, message);
        }
    }

    fn record_out(&self, outs: &[Out], now: Duration) {
        if self.gateway.recorder.is_some() {
            for o in outs {
                let (dir, v) = match o {
                    Out::Client(v) => ("to_client", v),
                    Out::Upstream(v) => ("to_upstream", v),
                };
                self.gateway
                    .record(now, &self.session, &self.grant, dir, v.clone());
            }
        }
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
                    "the message has the key `{key}` twice in one object; Tollgate refuses it, because two parsers could read different values. Send each key once."
                );
                let _ = self.gateway.audit(now, "refusal", json!({"session": self.session, "grant": self.grant, "tool": tool, "decision": "duplicate_key", "key": key}));
                vec![Out::Client(error_response(
                    id.as_ref(),
                    ErrorCode::InvalidRequest,
                    &text,
                    None,
                ))]
            }
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
            Ok(Incoming::Batch(items)) => self.client_batch(items, now),
        }
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
        let awaits_answer = forward
            .iter()
            .any(|m| m.get("id").is_some() && m.get("method").is_some());
        if !forward.is_empty() {
            out.push(Out::Upstream(Value::Array(forward)));
        }
        if awaits_answer {
            self.batches.insert(batch, BatchState { local });
        } else if !local.is_empty() {
            out.push(Out::Client(Value::Array(local)));
        }
        out
    }

    /// One client message: returns the local answers; pushes what goes upstream to `out`.
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
        match message {
            Message::Request {
                id,
                method: "tools/call",
                params,
            } => {
                let id = id.clone();
                let params = params.cloned();
                self.call(id, params, v, batch, now, out)
            }
            Message::Request { id, .. } => {
                // Other requests pass through; remember batch membership for the merge.
                if let Some(b) = batch {
                    self.pending.insert(
                        id_key(id),
                        Pending {
                            tool: String::new(),
                            audit_seq: None,
                            started: now,
                            deadline: Duration::MAX,
                            batch: Some(b),
                        },
                    );
                }
                out.push(Out::Upstream(v));
                Vec::new()
            }
            _ => {
                out.push(Out::Upstream(v));
                Vec::new()
            }
        }
    }

    fn call(
        &mut self,
        id: Value,
        params: Option<Value>,
        original: Value,
        batch: Option<u64>,
        now: Duration,
        out: &mut Vec<Out>,
    ) -> Vec<Value> {
        let Some(name) = params
            .as_ref()
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
        let arguments = match params.as_ref().and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(_) => {
                return vec![error_response(
                    Some(&id),
                    ErrorCode::InvalidParams,
                    "`params.arguments` must be an object",
                    None,
                )];
            }
        };
        let Some(advertised) = &self.advertised else {
            // The upstream's tools are not known yet: hold the call and list them.
            self.held.push(original);
            if self.listing.is_none() {
                let meta = params.as_ref().and_then(|p| p.get("_meta")).cloned();
                out.push(Out::Upstream(self.start_listing(None, meta)));
            }
            return Vec::new();
        };
        let Some(info) = advertised.get(&name).cloned() else {
            let text = format!(
                "Tollgate refused the call to `{name}`: the upstream server does not offer a tool of that name (see `tools/list`)."
            );
            return match self.gateway.audit(now, "refusal", json!({"session": self.session, "grant": self.grant, "id": id, "tool": name, "decision": "unknown_tool"})) {
                Ok(_) => vec![result_response(&id, refusal::gateway(&name, &self.grant, "unknown_tool", text))],
                Err(e) => vec![self.audit_failure(&id, &name, &e)],
            };
        };
        let engine = self.gateway.engine();
        let catalog_tool = tollgate_catalog::Catalog::embedded().get(&name);
        let class = catalog_tool.map(|t| policy_class(t.class_for(&arguments)));
        let call = Call {
            tool: name.clone(),
            arguments,
            grant: self.grant.clone(),
            session: self.session.clone(),
            meta: ToolMeta {
                class,
                annotations: info.annotations.iter().copied().collect(),
            },
        };
        let decision = engine.decide(&call, now);
        self.gateway
            .metrics
            .decisions
            .get_or_create(&crate::metrics::DecisionLabels {
                tool: name.clone(),
                decision: decision.kind.name().to_owned(),
                rule: decision.rule.selector.to_string(),
            })
            .inc();
        let redactions = engine.policy().redactions(&name, &call.meta);
        let record = json!({
            "session": self.session,
            "grant": self.grant,
            "id": id,
            "tool": name,
            "arguments": redact(&call.arguments, &redactions),
            "decision": decision,
        });
        let seq = match self.gateway.audit(now, "decision", record) {
            Ok(seq) => seq,
            // No record, no forwarding: an unaudited call is refused (fail closed).
            Err(e) => return vec![self.audit_failure(&id, &name, &e)],
        };
        if !decision.admits() {
            return vec![result_response(
                &id,
                refusal::from_decision(&name, &self.grant, &decision),
            )];
        }
        let timeout = self
            .gateway
            .options
            .tool_timeouts
            .get(&name)
            .copied()
            .unwrap_or(self.gateway.options.call_timeout);
        self.pending.insert(
            id_key(&id),
            Pending {
                tool: name.clone(),
                audit_seq: seq,
                started: now,
                deadline: now.saturating_add(timeout),
                batch,
            },
        );
        self.gateway.metrics.in_flight.inc();
        // Forward what was validated, re-serialized from the parsed value, never the raw bytes.
        let mut forwarded = original;
        forwarded["params"]["arguments"] = call.arguments;
        out.push(Out::Upstream(forwarded));
        Vec::new()
    }

    fn audit_failure(&self, id: &Value, tool: &str, error: &str) -> Value {
        let text = format!(
            "Tollgate refused the call to `{tool}`: its audit log cannot be written ({error}), and no call is forwarded unaudited. Tell the gateway's operator."
        );
        result_response(
            id,
            refusal::gateway(tool, &self.grant, "audit_unavailable", text),
        )
    }

    fn start_listing(&mut self, cursor: Option<&str>, meta: Option<Value>) -> Value {
        self.next_internal += 1;
        let id = format!("tollgate-internal-{}", self.next_internal);
        let mut params = json!({});
        if let Some(c) = cursor {
            params["cursor"] = json!(c);
        }
        if let Some(m) = &meta {
            params["_meta"] = m.clone();
        }
        let tools = self.listing.take().map(|l| l.tools).unwrap_or_default();
        self.listing = Some(Listing {
            id: id.clone(),
            tools,
            meta,
        });
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
    }

    /// Handles bytes from the upstream.
    pub fn from_upstream(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
        self.record_in("upstream", bytes, now);
        let outs = self.handle_upstream(bytes, now);
        self.record_out(&outs, now);
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
        match value {
            Value::Array(items) => {
                let mut out = Vec::new();
                let mut to_client = Vec::new();
                let mut batch = None;
                for item in items {
                    if let Some(b) = item
                        .get("id")
                        .and_then(|id| self.pending.get(&id_key(id)))
                        .and_then(|p| p.batch)
                    {
                        batch = Some(b);
                    }
                    for o in self.upstream_message(item, now) {
                        match o {
                            Out::Client(v) => to_client.push(v),
                            other => out.push(other),
                        }
                    }
                }
                if let Some(state) = batch.and_then(|b| self.batches.remove(&b)) {
                    to_client.extend(state.local);
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
        let id = v.get("id").cloned();
        let is_response = v.get("result").is_some() || v.get("error").is_some();
        if let (Some(id), true) = (&id, is_response) {
            if let Some(listing) = &self.listing
                && id.as_str() == Some(listing.id.as_str())
            {
                return self.internal_listing(&v, now);
            }
            if let Some(p) = self.pending.remove(&id_key(id)) {
                if !p.tool.is_empty() {
                    self.gateway.metrics.in_flight.dec();
                    self.gateway
                        .metrics
                        .upstream_latency
                        .get_or_create(&crate::metrics::ToolLabels {
                            tool: p.tool.clone(),
                        })
                        .observe(now.saturating_sub(p.started).as_secs_f64());
                    let is_error = v
                        .get("result")
                        .and_then(|r| r.get("isError"))
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let _ = self.gateway.audit(now, "outcome", json!({
                        "session": self.session, "grant": self.grant, "id": id, "tool": p.tool, "decision_seq": p.audit_seq,
                        "latency_ms": ms(now.saturating_sub(p.started)), "is_error": is_error,
                        "error": v.get("error"),
                    }));
                }
            } else if v.get("method").is_none() && self.is_expired_id(id) {
                // A late answer to a call that already timed out: the client has its answer.
                return Vec::new();
            }
            if v.get("result").and_then(|r| r.get("tools")).is_some() {
                let mut v = v;
                self.absorb_listing(&v);
                self.hide_tools(&mut v);
                return vec![Out::Client(v)];
            }
        }
        if v.get("method").and_then(Value::as_str) == Some("notifications/tools/list_changed") {
            // The upstream's tools changed: list them again before the next call.
            self.advertised = None;
        }
        vec![Out::Client(v)]
    }

    /// Whether `id` belongs to a call that timed out (its late answer is dropped once).
    fn is_expired_id(&mut self, id: &Value) -> bool {
        self.expired.remove(&id_key(id))
    }

    /// Records the tools a client-visible `tools/list` answer names (pages accumulate).
    fn absorb_listing(&mut self, v: &Value) {
        let tools = v["result"]["tools"].as_array().cloned().unwrap_or_default();
        let map = self.advertised.get_or_insert_with(HashMap::new);
        for t in &tools {
            if let Some(name) = t.get("name").and_then(Value::as_str) {
                map.insert(name.to_owned(), tool_info(t));
            }
        }
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
                let class = tollgate_catalog::Catalog::embedded()
                    .get(name)
                    .map(|c| policy_class(c.class));
                let meta = ToolMeta {
                    class,
                    annotations: tool_info(t).annotations.into_iter().collect(),
                };
                !policy.always_denies(name, &meta)
            });
        }
    }

    fn internal_listing(&mut self, v: &Value, now: Duration) -> Vec<Out> {
        let mut listing = match self.listing.take() {
            Some(l) => l,
            None => return Vec::new(),
        };
        for t in v["result"]["tools"].as_array().cloned().unwrap_or_default() {
            if let Some(name) = t.get("name").and_then(Value::as_str) {
                listing.tools.insert(name.to_owned(), tool_info(&t));
            }
        }
        if let Some(cursor) = v["result"]["nextCursor"].as_str() {
            let cursor = cursor.to_owned();
            let meta = listing.meta.clone();
            self.listing = Some(listing);
            return vec![Out::Upstream(self.start_listing(Some(&cursor), meta))];
        }
        // An error answer leaves the tool set empty: every held call is refused as unknown,
        // which is safe, and the next call lists again.
        let failed = v.get("error").is_some();
        self.advertised = Some(listing.tools);
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        for msg in held {
            out.extend(self.handle_client(msg.to_string().as_bytes(), now));
        }
        if failed {
            self.advertised = None;
        }
        out
    }

    /// Answers every forwarded call whose deadline has passed, and tells the upstream to stop.
    pub fn tick(&mut self, now: Duration) -> Vec<Out> {
        let outs = self.tick_inner(now);
        self.record_out(&outs, now);
        outs
    }

    fn tick_inner(&mut self, now: Duration) -> Vec<Out> {
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in expired {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            let Ok(id) = serde_json::from_str::<Value>(&key) else {
                continue;
            };
            self.expired.insert(key);
            self.gateway.metrics.in_flight.dec();
            let waited = now.saturating_sub(p.started);
            let _ = self.gateway.audit(now, "outcome", json!({"session": self.session, "grant": self.grant, "id": id, "tool": p.tool, "decision_seq": p.audit_seq, "latency_ms": ms(waited), "timeout": true}));
            let text = format!(
                "The upstream server did not answer the call to `{}` within {}s; Tollgate stopped waiting and asked it to cancel. The call may or may not have taken effect.",
                p.tool,
                waited.as_secs()
            );
            out.push(Out::Upstream(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id, "reason": "timeout at the gateway"}})));
            out.push(Out::Client(result_response(
                &id,
                refusal::gateway(&p.tool, &self.grant, "upstream_timeout", text),
            )));
        }
        out
    }

    /// The upstream went away: every pending call gets an error result.
    pub fn upstream_closed(&mut self, now: Duration, why: &str) -> Vec<Out> {
        let outs = self.upstream_closed_inner(now, why);
        self.record_out(&outs, now);
        outs
    }

    fn upstream_closed_inner(&mut self, now: Duration, why: &str) -> Vec<Out> {
        let mut out = Vec::new();
        let pending: BTreeMap<String, Pending> = self.pending.drain().collect();
        for (key, p) in pending {
            let Ok(id) = serde_json::from_str::<Value>(&key) else {
                continue;
            };
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
                "The upstream server went away while running `{}` ({why}); the call may or may not have taken effect.",
                p.tool
            );
            out.push(Out::Client(result_response(
                &id,
                refusal::gateway(&p.tool, &self.grant, "upstream_failed", text),
            )));
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

fn tool_info(t: &Value) -> ToolInfo {
    let a = t.get("annotations");
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
    ToolInfo { annotations }
}
