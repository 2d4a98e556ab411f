//! Building a call's policy [`Call`] (its tool as listed, its arguments coerced) and deciding
//! it: admitted calls are forwarded, refused ones answered; the direct path
//! ([`SessionCore::call_direct`]) of the scenario runner decides the same way.

use super::*;

impl SessionCore {
    pub(super) fn call(
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
            self.waiting_for_list.push(original);
            return Vec::new();
        };
        let Some(info) = advertised.get(&name).cloned() else {
            return vec![
                self.pin_refusal(&id, &name, now)
                    .unwrap_or_else(|| self.unknown_tool(&id, &name, now)),
            ];
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
            Called::Refused { tool, decision } => {
                let mut answer = refusal::from_decision(&tool, &self.grant, &decision);
                // With several upstreams the detail names the one the tool belongs to.
                if let Some(upstream) =
                    crate::multi::upstream_of(&self.gateway.options.upstreams, &tool)
                {
                    answer["_meta"][refusal::META_KEY]["upstream"] = json!(upstream.name);
                }
                vec![result_response(&id, answer)]
            }
            Called::Admitted { arguments } => {
                out.push(forwarded(original, arguments));
                Vec::new()
            }
            Called::Hold(h) => self.hold(id, h, original, now, out),
        }
    }

    /// Whether the session holds as many calls in flight (forwarded and unanswered, or waiting
    /// for the tool list) as it may.
    pub(super) fn in_flight_full(&self) -> bool {
        self.pending.len() + self.waiting_for_list.len() >= self.gateway.options.max_in_flight
    }

    /// The refusal of a call past the session's bound on calls in flight: nothing decided.
    pub(super) fn too_many_in_flight(&self, id: &Value, name: &str, now: Duration) -> Value {
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
    pub(super) fn unknown_tool(&self, id: &Value, name: &str, now: Duration) -> Value {
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
    pub(super) fn decide_call(
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
        let mut meta = meta_of(&arguments, info);
        meta.upstream = upstream_name(&self.gateway.options, &name);
        let call = Call {
            tool: name,
            arguments,
            grant: Arc::clone(&self.grant),
            session: Arc::clone(&self.session),
            meta,
        };
        let name = &*call.tool;
        let mut decision = engine.decide_coerced(&call, now, &unreadable);
        if let Some(t) = &mut self.traces {
            let upstream = crate::multi::upstream_of(&self.gateway.options.upstreams, name);
            t.decision(&id_key(id), &decision, upstream.map(|u| u.name.as_str()));
        }
        self.gateway.metrics.observe_decision(
            &mut self.metric_handles,
            &call.tool,
            call.meta.upstream.as_deref(),
            &decision,
        );
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
            if let Some(upstream) = crate::multi::upstream_of(&self.gateway.options.upstreams, name)
            {
                record["upstream"] = json!(upstream.name);
            }
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
        let on_error = std::mem::take(&mut decision.on_error);
        self.forward(id, &call, seq, batch, on_error, now);
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
    pub(super) fn forward(
        &mut self,
        id: &Value,
        call: &Call,
        seq: Option<u64>,
        batch: Option<u64>,
        on_error: Vec<(CounterKey, LimitSpec)>,
        now: Duration,
    ) {
        let timeout = self
            .gateway
            .options
            .tool_timeouts
            .get(&*call.tool)
            .copied()
            .unwrap_or(self.gateway.options.call_timeout);
        self.pending.insert(
            id_key(&escape_id(id)),
            Pending {
                tool: Arc::clone(&call.tool),
                upstream: call.meta.upstream.clone(),
                audit_seq: seq,
                on_error,
                started: now,
                deadline: now.saturating_add(timeout),
                batch,
            },
        );
        self.gateway.metrics.in_flight.inc();
    }

    pub(super) fn audit_failure(&self, id: &Value, tool: &str, error: &str) -> Value {
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
}

/// The risk class the policy engine sees for one call of the tool `listed` (its `tools/list`
/// entry; `{"name": ...}` for a catalogued tool) with `arguments` as the gateway decides on
/// them, by the chain `classifiers`: a catalogued tool's `operation`'s class where its effect
/// depends on it (`manage_k8s_resource {"operation": "read"}` is read), its worst case otherwise;
/// another tool's class by its annotations. The one function the gateway and `tollgate explain`
/// both use, so they pick the same rule.
pub fn call_class(
    classifiers: &crate::classify::Classifiers,
    listed: &Value,
    arguments: &Value,
) -> Option<RiskClass> {
    classifiers
        .classify(listed)
        .map(|class| class.call_class(arguments))
}

pub use crate::classify::policy_class;

/// What the policy engine knows of a call's tool: its class for these arguments (by the
/// gateway's classifiers, when the tool was listed) and the annotations the upstream advertised.
/// The upstream of an exposed tool name, for `upstream:` selectors (several upstreams only).
pub(super) fn upstream_name(options: &GatewayOptions, tool: &str) -> Option<Arc<str>> {
    crate::multi::upstream_of(&options.upstreams, tool).map(|u| Arc::from(u.name.as_str()))
}

pub(super) fn meta_of(arguments: &Value, info: &ToolInfo) -> ToolMeta {
    let class = info.class.map(|c| c.call_class(arguments));
    ToolMeta {
        class,
        annotations: Arc::clone(&info.annotations),
        defaults: info.types.as_ref().and_then(|t| t.defaults().cloned()),
        upstream: None,
    }
}

/// The [`ToolMeta`] the gateway gives the engine for a call of the tool `listed` (one entry of
/// an upstream's `tools/list` answer) with `arguments`: for tools that check a policy the way
/// the gateway does (the fuzzer's reference model).
pub fn call_meta(listed: &Value, arguments: &Value) -> ToolMeta {
    meta_of(
        arguments,
        &tool_info(listed, &crate::classify::Classifiers::standard()),
    )
}

/// An admitted call as it goes upstream: its message with the validated arguments put back
/// (re-serialized from the parsed value, never the raw bytes).
pub(super) fn forwarded(mut original: Value, arguments: Arc<Value>) -> Out {
    original["params"]["arguments"] = Arc::unwrap_or_clone(arguments);
    if let Some(id) = original.get_mut("id")
        && let std::borrow::Cow::Owned(escaped) = escape_id(id)
    {
        *id = escaped;
    }
    Out::Upstream(original)
}

/// What [`SessionCore::decide_call`] made of a call.
pub(super) enum Called {
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
pub(super) struct Hold {
    pub(super) approval: u64,
    pub(super) channel: &'static str,
    pub(super) call: Call,
    pub(super) engine: Arc<Engine>,
    pub(super) redacted: Value,
    pub(super) decision: Decision,
    pub(super) decision_seq: Option<u64>,
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
