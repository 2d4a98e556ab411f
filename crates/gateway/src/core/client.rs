//! What comes from the client: parsing, batches, classification of each message (a
//! `tools/call` to decide, a refusal before any decision, or a passthrough), and the refusals of
//! messages that never reach the policy.

use super::*;

/// What the client declared in `initialize` about elicitation.
#[derive(Debug, Clone)]
pub(super) struct ClientElicitation {
    pub(super) form: bool,
    /// Whether `elicitation/create` carries `mode` (2025-11-25 and later).
    pub(super) with_mode: bool,
}

impl SessionCore {
    pub(super) fn handle_client(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
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
    pub(super) fn handle_incoming(
        &mut self,
        parsed: Result<Incoming, WireError>,
        now: Duration,
    ) -> Vec<Out> {
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
    pub(super) fn batch_refusal_text(&self) -> String {
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
    pub(super) fn refuse_batch(&mut self, items: &[Value], now: Duration) -> Vec<Out> {
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

    pub(super) fn client_batch(&mut self, items: Vec<Value>, now: Duration) -> Vec<Out> {
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
    pub(super) fn client_message(
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
        if self.traces.is_some()
            && let (Some(id), Some(method)) = (id, method)
        {
            // A request reusing an id in flight is refused below; a call that waited for the
            // tool list comes through here again, and keeps its span.
            let reused = self.request_in_flight(id);
            let protocol = self.protocol.map(ProtocolVersion::as_str);
            if let Some(t) = &mut self.traces {
                let about = crate::telemetry::McpRequest {
                    id,
                    method,
                    params,
                    session: &self.session,
                    grant: &self.grant,
                    protocol,
                };
                t.request(id_key(id), &about, reused);
            }
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
                        upstream: None,
                        audit_seq: None,
                        on_error: Vec::new(),
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
    pub(super) fn request_in_flight(&self, id: &Value) -> bool {
        self.pending.contains_key(&id_key(&escape_id(id)))
            || self.waiting_for_list.iter().any(|m| m.get("id") == Some(id))
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
    pub(super) fn passthrough_timeout(&self) -> Duration {
        self.gateway.options.call_timeout.max(MIN_LIST_TIMEOUT)
    }

    /// Refuses a message that could make a loose upstream run a tool undecided, or that reuses
    /// an id in flight: audited, answered with a JSON-RPC error when it is a request (a
    /// notification gets no answer, as JSON-RPC says), never forwarded.
    pub(super) fn refuse_message(
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
}

/// Why a client message was refused before any decision (the `decision` of its `refusal`
/// audit record, and the `reason` label of its metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MethodRefusal {
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
    pub(super) fn name(self) -> &'static str {
        match self {
            MethodRefusal::CallAsNotification => "call_as_notification",
            MethodRefusal::LookAlike => "method_look_alike",
            MethodRefusal::Malformed => "malformed_method",
            MethodRefusal::IdInFlight => "id_in_flight",
            MethodRefusal::Batch => "batch_not_allowed",
        }
    }
}

/// What an `initialize` says about elicitation: present means supported; form mode is
/// supported when `form` is declared, or when neither mode is (the 2025-06-18 shape, `{}`).
pub(super) fn client_elicitation(params: Option<&Value>) -> Option<ClientElicitation> {
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
