//! What comes from the upstream: answers to forwarded calls (audited as outcomes), batches'
//! answers, timeouts' late answers, the upstream going away; and the id mapping between the
//! client's and the gateway's own id spaces (`tollgate-` ids, docs/security.md "Ids").

use super::*;

/// The most ids of timed-out calls remembered (to drop their late answers); past it the
/// oldest are forgotten, and a very late answer goes to the client, which has its answer.
pub(super) const MAX_EXPIRED_IDS: usize = 4096;

#[derive(Debug)]
pub(super) struct Pending {
    /// The call's tool, shared with its policy `Call`; empty for the gateway's own requests.
    pub(super) tool: Arc<str>,
    /// The upstream the call was routed to (behind several upstreams), for its metrics.
    pub(super) upstream: Option<Arc<str>>,
    pub(super) audit_seq: Option<u64>,
    /// The errors limits its decision charges if its answer is an upstream error
    /// ([`tollgate_policy::Decision::on_error`]); empty for most calls.
    pub(super) on_error: Vec<(CounterKey, LimitSpec)>,
    pub(super) started: Duration,
    pub(super) deadline: Duration,
    pub(super) batch: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct BatchState {
    /// Answers the gateway gave itself (refusals) for this batch.
    pub(super) local: Vec<Value>,
    /// Its forwarded requests not settled yet: the local answers go with the last one's.
    pub(super) open: usize,
}

/// The prefix of every id the gateway makes itself (its own `tools/list`, elicitation and
/// re-initialize requests).
pub(super) const RESERVED_ID: &str = "tollgate-";
/// What a client's (or the upstream's) string id that starts with [`RESERVED_ID`] becomes on the
/// other side: the two id spaces never meet (docs/security.md, "Ids").
pub(super) const ESCAPED_ID: &str = "tollgate-x-";

/// The id a request takes to the other side: itself, unless it is a string in the gateway's own
/// id space (starting `tollgate-`), which gets [`ESCAPED_ID`] in front. Injective, and no id it
/// gives starts with `tollgate-` without `tollgate-x-`, so no peer can ever send an id the
/// gateway takes for its own.
pub(super) fn escape_id(id: &Value) -> std::borrow::Cow<'_, Value> {
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
pub(super) fn unescape_id(id: &Value) -> Option<Value> {
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
pub(super) fn crossing(mut v: Value) -> Option<Value> {
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

pub(super) fn id_key(id: &Value) -> String {
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
    /// Handles bytes from the upstream.
    pub fn from_upstream(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
        self.last_now = self.last_now.max(now);
        self.record_in("upstream", bytes, now);
        let mut outs = self.handle_upstream(bytes, now);
        self.record_out(&mut outs, now);
        outs
    }

    pub(super) fn handle_upstream(&mut self, bytes: &[u8], now: Duration) -> Vec<Out> {
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
    pub(super) fn upstream_value(&mut self, value: Value, now: Duration) -> Vec<Out> {
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

    pub(super) fn upstream_message(&mut self, v: Value, now: Duration) -> Vec<Out> {
        let mut due = None;
        let mut out = self.upstream_message_inner(v, now, &mut due);
        // A batch's refusals go after the answer that settled its last forwarded request.
        if let Some(local) = due {
            out.push(Out::Client(Value::Array(local)));
        }
        out
    }

    /// [`Self::upstream_message`], leaving in `due` the local answers of a batch it settled.
    pub(super) fn upstream_message_inner(
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
                self.pin_screen(&mut v, now);
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
            self.drifted.clear();
        }
        // An answer to one of the gateway's own requests that is not in flight (a listing
        // the session gave up on) is dropped by `crossing`: no client asked for it.
        out.extend(crossing(v).map(Out::Client));
        out
    }

    /// One forwarded request of batch `b` is settled (answered, timed out or failed): when it
    /// was the last, the batch's local answers (its refusals) are due, returned here.
    pub(super) fn batch_item_done(&mut self, b: u64) -> Option<Vec<Value>> {
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
    pub(super) fn settle_pending(
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
            p.upstream.as_deref(),
            now.saturating_sub(p.started),
        );
        let charged = self.charge_error(&p, is_error || error.is_some(), now);
        self.gateway.audit_deferred(now, "outcome", || {
            let mut record = json!({
                "session": self.session, "grant": self.grant, "id": id, "tool": p.tool, "decision_seq": p.audit_seq,
                "latency_ms": ms(now.saturating_sub(p.started)), "is_error": is_error,
                "error": error,
            });
            charged.annotate(&mut record);
            record
        });
    }

    /// Whether `id` belongs to a call that timed out (its late answer is dropped once).
    pub(super) fn is_expired_id(&mut self, id: &Value) -> bool {
        self.expired.remove(&id_key(id))
    }

    /// The upstream went away: every pending call gets an error result.
    pub fn upstream_closed(&mut self, now: Duration, why: &str) -> Vec<Out> {
        let mut outs = self.upstream_closed_inner(now, why);
        self.record_out(&mut outs, now);
        outs
    }

    pub(super) fn upstream_closed_inner(&mut self, now: Duration, why: &str) -> Vec<Out> {
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
            let mut record = json!({"session": self.session, "grant": self.grant, "id": id, "tool": p.tool, "decision_seq": p.audit_seq, "error": why});
            // The upstream gone mid-call is an upstream error.
            self.charge_error(&p, true, now).annotate(&mut record);
            let _ = self.gateway.audit(now, "outcome", record);
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
        for msg in std::mem::take(&mut self.waiting_for_list) {
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    /// An id's key is its JSON text, whichever way it is made.
    #[test]
    pub(super) fn id_keys_are_the_ids_json_text() {
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
