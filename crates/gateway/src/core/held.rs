//! Calls held for a human's approval (the `awaiting` map, by approval id): holding them, asking
//! the client's user by elicitation, acting on the verdict, withdrawing them.

use super::*;

/// A call held for approval, in the session that holds it.
#[derive(Debug)]
pub(super) struct Held {
    /// The agent's request id.
    pub(super) id: Value,
    pub(super) call: Call,
    /// The message as the client sent it (forwarded with the validated arguments).
    pub(super) original: Value,
    /// The engine that decided to hold it: its rule takes the limits when approved.
    pub(super) engine: Arc<Engine>,
    pub(super) redacted: Value,
    pub(super) decision_seq: Option<u64>,
    pub(super) started: Duration,
    pub(super) deadline: Duration,
    pub(super) rule: RuleRef,
    pub(super) reason: Option<String>,
    pub(super) on_timeout: TimeoutOutcome,
    /// The id of the `elicitation/create` request asking the client's user, if any.
    pub(super) elicit: Option<String>,
}

/// The prefix of the ids of the gateway's own `elicitation/create` requests.
pub(super) const ELICIT_PREFIX: &str = "tollgate-elicit-";

impl SessionCore {
    /// Who can approve a call under `via` in this session: `operators`, `elicitation`, or
    /// nobody.
    pub(super) fn approval_channel(&self, via: ApprovalVia) -> Option<&'static str> {
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
    pub(super) fn hold(
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

    pub(super) fn elicitation_request(
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

    pub(super) fn is_elicit(&self, id: &Value) -> bool {
        id.as_str().is_some_and(|s| self.elicits.contains_key(s))
    }

    /// The client's answer to an `elicitation/create`: accept approves, decline and cancel
    /// (and an error) deny; the approver recorded is `elicitation`.
    pub(super) fn elicitation_answer(
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
    pub(super) fn cancels_held(&self, params: Option<&Value>) -> bool {
        let Some(request) = params.and_then(|p| p.get("requestId")) else {
            return false;
        };
        self.awaiting.values().any(|h| &h.id == request)
    }

    /// The agent cancelled a held call: it is withdrawn (audited) and nobody answers it.
    pub(super) fn withdraw_request(
        &mut self,
        request: Option<&Value>,
        now: Duration,
        out: &mut Vec<Out>,
    ) {
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
    pub(super) fn conclude(
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
            replica: None,
        };
        self.gateway.approvals.conclude(approval, verdict, |a, v| {
            if let Err(e) = self.gateway.approval_record(now, a, v) {
                tracing::error!("cannot audit the end of approval {}: {e}", a.id);
            }
        })
    }

    /// Acts on every decided or expired held call of this session.
    pub(super) fn settle(&mut self, now: Duration) -> Vec<Out> {
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

    pub(super) fn act(
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
        let mut decision = h.engine.admit_approved(&h.call, now);
        self.gateway.metrics.observe_decision(
            &mut self.metric_handles,
            &h.call.tool,
            h.call.meta.upstream.as_deref(),
            &decision,
        );
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
        let on_error = std::mem::take(&mut decision.on_error);
        self.forward(&id, &call, seq, None, on_error, now);
        out.push(forwarded(original, call.arguments));
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
}
