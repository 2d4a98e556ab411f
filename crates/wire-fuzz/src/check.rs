//! The invariants checked after every case, from what the case left behind: the naive
//! upstream's executions, the gateway's audit log, and the answers each client got.
//!
//! 1. Every execution at the upstream has an audited `decision` record with
//!    `decision.decision == "allow"` for exactly that call (same session, grant, tool,
//!    arguments as forwarded, and request id), and no allow record is used by two executions.
//! 2. The audit log verifies (`tollgate_gateway::audit::verify`).
//! 3. Every request the client sent with a valid id (a string or an integer, in a message the
//!    gateway can read: within its size limit, JSON) was answered with that id within the
//!    bounded wait, or its whole message was refused (an HTTP 4xx); every answer's id is one
//!    the client sent (over HTTP: in that very POST), or `null`; and an answer the upstream
//!    made reaches the client and the request it answers (the naive upstream names them in
//!    its answer, [`misdelivered`]).
//!
//! (The memory bound is checked by the runner, across cases.)

use std::path::Path;

use serde_json::Value;

use crate::naive::Execution;

/// Who a client is to the gateway and to the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Its `clientInfo.name` (how the naive upstream names it).
    pub name: String,
    pub grant: String,
    /// The gateway's session id for it (what the audit records name).
    pub session: String,
    /// The protocol version it speaks.
    pub version: String,
}

/// How one wire message was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Over HTTP: the status and body.
    Http { status: u16, body: Vec<u8> },
    /// Over HTTP: no response within the bound.
    TimedOut,
    /// Over HTTP: the request failed otherwise (connection refused, reset).
    Failed(String),
    /// Over stdio: answers come on the client's output, not per message.
    Stdio,
}

/// One wire message a client sent, and its reply.
#[derive(Debug, Clone)]
pub struct Sent {
    pub client: usize,
    pub bytes: Vec<u8>,
    pub reply: Reply,
    /// What it was: `handshake`, `step N`, `barrier`.
    pub label: String,
}

/// Everything a case left behind.
#[derive(Debug, Default)]
pub struct Observed {
    pub clients: Vec<ClientInfo>,
    pub sent: Vec<Sent>,
    /// Over stdio: every message each client received, in order.
    pub received: Vec<Vec<Value>>,
    pub executions: Vec<Execution>,
    /// Whether several upstreams stood behind the router: each execution's tool is then the
    /// exposed name of the upstream that ran it (its prefix put in front of the name it ran,
    /// so a call run on another upstream than its name routes to matches no allow record),
    /// and the upstream saw the router's own ids (numbers), not the client's.
    pub routed: bool,
}

/// What one case did, for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Wire messages sent (handshakes and barriers included).
    pub messages: u64,
    /// JSON-RPC messages in them (each batch item counts).
    pub items: u64,
    pub executions: u64,
    pub allowed: u64,
    pub refused: u64,
}

/// A value's JSON text, cut to a length a message can show.
pub fn brief(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 300 {
        return text;
    }
    let cut: String = text.chars().take(297).collect();
    format!("{cut}...")
}

/// Whether `id` is a valid JSON-RPC id the gateway must answer with: a string or an integer.
pub fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// The objects of a wire message, parsed leniently; empty when it is not JSON.
fn items(bytes: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => items,
        Ok(v) => vec![v],
        Err(_) => Vec::new(),
    }
}

/// The ids of the requests in a wire message that must be answered: the message is within
/// `limit` bytes and JSON, and the request has a string `method` and a valid id.
pub fn expected_ids(bytes: &[u8], limit: usize) -> Vec<Value> {
    if bytes.len() > limit {
        return Vec::new();
    }
    items(bytes)
        .iter()
        .filter(|m| m.get("method").is_some_and(Value::is_string))
        .filter_map(|m| m.get("id").filter(|id| valid_id(id)).cloned())
        .collect()
}

/// Every id in a wire message (of any type), parsed leniently.
pub fn sent_ids(bytes: &[u8]) -> Vec<Value> {
    items(bytes)
        .iter()
        .filter_map(|m| m.get("id").cloned())
        .collect()
}

/// The (id, method) of every request in a wire message, parsed leniently.
pub fn requests(bytes: &[u8]) -> Vec<(Value, Value)> {
    items(bytes)
        .iter()
        .filter_map(|m| Some((m.get("id")?.clone(), m.get("method")?.clone())))
        .collect()
}

/// Why an answer did not reach the request it answers, if it did not: the naive upstream names
/// the request (method, id, client) in every answer's `_meta` (crate::naive::ECHO); the answer
/// must carry that id, reach that client, and a request of the client's with that id must have
/// that method. Answers without the note (the gateway's own) are not judged here.
///
/// The upstream sees the client's id as docs/security.md ("Ids") says: unchanged, except a string
/// starting `tollgate-`, which gets `tollgate-x-` in front; and a stateless client's request as a
/// number the gateway gave it (its grant's clients share one session), so for those any number
/// is accepted and the method must match (`renumbered`). Behind the router of several upstreams
/// every request reaches its upstream under a number of the router's: `renumbered` too.
pub fn misdelivered(
    answer: &Value,
    client: &str,
    requests: &[(Value, Value)],
    renumbered: bool,
) -> Option<String> {
    let echo = answer
        .get("result")?
        .get("_meta")?
        .get(crate::naive::ECHO)?;
    let id = answer.get("id").unwrap_or(&Value::Null);
    let seen = echo.get("id");
    let delivered = if renumbered {
        seen.is_some_and(Value::is_u64)
    } else {
        seen == Some(&upstream_side(id))
    };
    if !delivered {
        return Some(format!(
            "the answer with id {id} is the upstream's answer to id {}",
            echo.get("id").unwrap_or(&Value::Null)
        ));
    }
    // A stateless client speaking under another grant's token names itself `NAME~GRANT`.
    if let Some(to) = echo.get("client").and_then(Value::as_str)
        && to != client
        && !to
            .strip_prefix(client)
            .is_some_and(|rest| rest.starts_with('~'))
    {
        return Some(format!(
            "{client} got the answer the upstream gave {to} (id {id})"
        ));
    }
    let method = echo.get("method").unwrap_or(&Value::Null);
    if !requests.iter().any(|(i, m)| i == id && m == method) {
        return Some(format!(
            "the answer to id {id} is the upstream's answer to a {method} request, which {client} never sent with that id"
        ));
    }
    None
}

/// A client's request id as the upstream sees it (docs/security.md, "Ids").
fn upstream_side(id: &Value) -> Value {
    match id.as_str() {
        Some(s) if s.starts_with("tollgate-") => Value::String(format!("tollgate-x-{s}")),
        _ => id.clone(),
    }
}

/// The answers (messages with `result` or `error`) in a reply.
pub fn answers(reply: &Value) -> Vec<&Value> {
    let list: Vec<&Value> = match reply {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    list.into_iter()
        .filter(|m| m.get("result").is_some() || m.get("error").is_some())
        .collect()
}

/// Whether a reply refuses a whole message: one error (not a batch of answers) with a `null`
/// id, as JSON-RPC answers a message whose ids cannot be read, and as the gateway answers one
/// it refuses as a whole (a duplicate key anywhere in it).
pub fn refuses_whole(reply: &Value) -> bool {
    reply.get("error").is_some() && reply.get("id").is_some_and(Value::is_null)
}

/// What a wire message must get.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// The ids to answer ([`expected_ids`]).
    pub ids: Vec<Value>,
    /// Whether the gateway may instead refuse the message whole ([`refuses_whole`]): only
    /// when its strict parser (size, UTF-8, JSON, depth, duplicate keys) refuses it. Any other
    /// message's requests get answers with their own ids.
    pub may_refuse: bool,
    /// Whether the gateway's strict parser refuses the message (it is then refused whole).
    pub unreadable: bool,
    /// For an unreadable single message, the id the refusal carries when the message's id can
    /// still be read leniently (a string or an integer: docs/errors.md); `None`: `null`.
    pub salvaged: Option<Value>,
}

/// What `bytes` must get from a gateway that reads at most `limit` bytes a message, sent by a
/// client speaking `version`. A batch the version does not allow (only 2025-03-26 has
/// batches) may be refused whole too.
pub fn expected(bytes: &[u8], limit: usize, version: &str) -> Expected {
    let unreadable =
        tollgate_mcp::parse_incoming(bytes, tollgate_mcp::Limits { max_bytes: limit }).is_err();
    let batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let batches = tollgate_mcp::ProtocolVersion::parse(version)
        .is_some_and(tollgate_mcp::ProtocolVersion::allows_batches);
    let salvaged = if unreadable && !batch && bytes.len() <= limit {
        serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| v.get("id").filter(|id| valid_id(id)).cloned())
    } else {
        None
    };
    Expected {
        ids: expected_ids(bytes, limit),
        may_refuse: unreadable || (batch && !batches),
        unreadable,
        salvaged,
    }
}

/// Over stdio, where answers are not tied to lines: the first line (its index) with a request
/// left unanswered, and that request's id. A line that may be refused whole and none of whose
/// requests was answered counts as refused if a whole-message refusal ([`refuses_whole`]) is
/// left for it, each refusal taken once.
pub fn stdio_unanswered(lines: &[Expected], received: &[Value]) -> Option<(usize, Value)> {
    // Each answer is taken by one request only: a client that reuses an id across lines gets
    // one answer per use, and an answer to one line does not count for another.
    let mut pool: Vec<&Value> = received
        .iter()
        .flat_map(answers)
        .filter_map(|a| a.get("id"))
        .collect();
    let mut refusals = received.iter().filter(|m| refuses_whole(m)).count();
    let take = |pool: &mut Vec<&Value>, id: &Value| match pool.iter().position(|a| *a == id) {
        Some(i) => {
            pool.swap_remove(i);
            true
        }
        None => false,
    };
    // First the lines the strict parser refuses: each gets its one refusal, under the id it
    // still shows or none, so their ids never take another line's answers.
    for (k, line) in lines.iter().enumerate().filter(|(_, l)| l.unreadable) {
        let refused = match &line.salvaged {
            Some(id) => take(&mut pool, id),
            None if refusals > 0 => {
                refusals -= 1;
                true
            }
            None => false,
        };
        if !refused {
            let id = line.salvaged.clone().or_else(|| line.ids.first().cloned());
            return Some((k, id.unwrap_or(Value::Null)));
        }
    }
    for (k, line) in lines.iter().enumerate().filter(|(_, l)| !l.unreadable) {
        let mut left = pool.clone();
        let missing = line.ids.iter().find(|id| !take(&mut left, id)).cloned();
        let Some(missing) = missing else {
            pool = left;
            continue;
        };
        // A line answered in part was not refused whole.
        if line.may_refuse && refusals > 0 && !line.ids.iter().any(|id| pool.contains(&id)) {
            refusals -= 1;
            continue;
        }
        return Some((k, missing));
    }
    None
}

/// An allow record of the audit log.
#[derive(Debug)]
struct Allow {
    seq: Option<u64>,
    session: Value,
    grant: Value,
    tool: Value,
    arguments: Value,
    id: Value,
    used: bool,
}

/// Checks invariants 1 to 3 on what a case left behind; `Err` names the first broken one.
pub fn check(observed: &Observed, audit: &Path, limit: usize) -> Result<Stats, String> {
    let mut stats = Stats {
        messages: observed.sent.len() as u64,
        items: observed
            .sent
            .iter()
            .map(|s| items(&s.bytes).len().max(1) as u64)
            .sum(),
        executions: observed.executions.len() as u64,
        ..Stats::default()
    };
    let report = tollgate_gateway::audit::verify(audit, None)
        .map_err(|e| format!("the audit log cannot be read: {e}"))?;
    if let Some(p) = report.problems.first() {
        return Err(format!(
            "the audit log does not verify: line {}: {}",
            p.line, p.message
        ));
    }
    let text =
        std::fs::read_to_string(audit).map_err(|e| format!("the audit log cannot be read: {e}"))?;
    let mut allows = Vec::new();
    for line in text.lines() {
        let Ok(r) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if r.get("kind").and_then(Value::as_str) != Some("decision") {
            continue;
        }
        if r["decision"]["decision"] != "allow" {
            stats.refused += 1;
            continue;
        }
        stats.allowed += 1;
        allows.push(Allow {
            seq: r.get("seq").and_then(Value::as_u64),
            session: r["session"].clone(),
            grant: r["grant"].clone(),
            tool: r["tool"].clone(),
            arguments: r["arguments"].clone(),
            id: r["id"].clone(),
            used: false,
        });
    }
    for (n, e) in observed.executions.iter().enumerate() {
        let who = e
            .facts
            .client
            .as_deref()
            .and_then(|name| observed.clients.iter().find(|c| c.name == name));
        let what = format!(
            "execution {} at the naive upstream ({}): tool {}, arguments {}, id {}, method {}",
            n + 1,
            e.facts.transport,
            e.tool,
            e.arguments,
            e.id.as_ref()
                .map_or_else(|| "none (a notification)".to_owned(), Value::to_string),
            Value::from(e.method.as_str()),
        );
        let Some(who) = who else {
            return Err(format!(
                "{what}: the upstream cannot tell which client sent it (client {:?}); the message it ran: {}",
                e.facts.client, e.raw
            ));
        };
        // Behind the router the upstream sees the router's id (a number) for every request.
        let same_id = |a: &Allow| {
            if observed.routed {
                e.id.as_ref().is_some_and(Value::is_u64)
            } else {
                Some(&upstream_side(&a.id)) == e.id.as_ref()
            }
        };
        let found = allows.iter_mut().find(|a| {
            !a.used
                && a.session == who.session.as_str()
                && a.grant == who.grant.as_str()
                && a.tool == e.tool
                && a.arguments == e.arguments
                && same_id(a)
        });
        match found {
            Some(a) => a.used = true,
            None => {
                let other = allows
                    .iter()
                    .find(|a| a.tool == e.tool && a.arguments == e.arguments && same_id(a));
                let hint = match other {
                    Some(a) if a.used => format!(
                        " (the allow record seq {} for that call was already used by another execution)",
                        a.seq.unwrap_or_default()
                    ),
                    Some(a) => format!(
                        " (an allow record seq {} has that call for session {} grant {})",
                        a.seq.unwrap_or_default(),
                        a.session,
                        a.grant
                    ),
                    None => String::new(),
                };
                return Err(format!(
                    "{what} from {} (grant {}, session {}) has no unused allow record in the audit log{hint}; the message it ran: {}",
                    who.name, who.grant, who.session, e.raw
                ));
            }
        }
    }
    check_answers(observed, limit)?;
    Ok(stats)
}

/// Invariant 3.
fn check_answers(observed: &Observed, limit: usize) -> Result<(), String> {
    for (k, sent) in observed.sent.iter().enumerate() {
        let version = observed
            .clients
            .get(sent.client)
            .map_or("", |c| c.version.as_str());
        let must = expected(&sent.bytes, limit, version);
        let own = sent_ids(&sent.bytes);
        let name = |c: usize| {
            observed
                .clients
                .get(c)
                .map_or_else(|| format!("client {c}"), |c| c.name.clone())
        };
        let what = || {
            format!(
                "message {} ({}, from {})",
                k + 1,
                sent.label,
                name(sent.client)
            )
        };
        match &sent.reply {
            Reply::Stdio => {}
            Reply::TimedOut => {
                return Err(format!(
                    "{}: no HTTP response within the bounded wait (the gateway hangs); the message: {}",
                    what(),
                    crate::wire::show(&sent.bytes)
                ));
            }
            Reply::Failed(why) => {
                return Err(format!("{}: the request failed: {why}", what()));
            }
            Reply::Http { status, body } => {
                // 4xx: the gateway refused the whole message (a bad token, no such session,
                // too large, no session header): nothing of it was taken.
                if (400..500).contains(status) {
                    continue;
                }
                if *status >= 500 {
                    return Err(format!(
                        "{}: HTTP {status} ({}); the message: {}",
                        what(),
                        String::from_utf8_lossy(body),
                        crate::wire::show(&sent.bytes)
                    ));
                }
                if *status == 202 || body.is_empty() {
                    if let Some(id) = must.ids.first() {
                        return Err(format!(
                            "{}: HTTP {status} with no answer, but it has a request with id {id}; the message: {}",
                            what(),
                            crate::wire::show(&sent.bytes)
                        ));
                    }
                    continue;
                }
                let Ok(reply) = serde_json::from_slice::<Value>(body) else {
                    return Err(format!(
                        "{}: HTTP {status} with a body that is not JSON: {}",
                        what(),
                        String::from_utf8_lossy(body)
                    ));
                };
                if refuses_whole(&reply) && must.may_refuse {
                    continue;
                }
                let got = answers(&reply);
                for id in &must.ids {
                    if !got.iter().any(|a| a.get("id") == Some(id)) {
                        return Err(format!(
                            "{}: the request with id {id} was not answered (the reply was {}); the message: {}",
                            what(),
                            brief(&reply),
                            crate::wire::show(&sent.bytes)
                        ));
                    }
                }
                // Two requests of one client with the same id in flight may swap answers
                // (the client broke the protocol's rule of unique ids): the answer must be to
                // a request of this client with that id, in any of its messages.
                let asked: Vec<(Value, Value)> = observed
                    .sent
                    .iter()
                    .filter(|s| s.client == sent.client)
                    .flat_map(|s| requests(&s.bytes))
                    .collect();
                for a in got {
                    let id = a.get("id").unwrap_or(&Value::Null);
                    if !id.is_null() && !own.contains(id) {
                        return Err(format!(
                            "{}: an answer with id {id}, which this message did not send (the reply was {}); the message: {}",
                            what(),
                            brief(&reply),
                            crate::wire::show(&sent.bytes)
                        ));
                    }
                    let stateless = observed
                        .clients
                        .get(sent.client)
                        .is_some_and(|c| c.version == "2026-07-28");
                    if let Some(why) =
                        misdelivered(a, &name(sent.client), &asked, stateless || observed.routed)
                    {
                        return Err(format!(
                            "{}: {why} (the reply was {}); the message: {}",
                            what(),
                            brief(&reply),
                            crate::wire::show(&sent.bytes)
                        ));
                    }
                }
            }
        }
    }
    // Over stdio, answers come on the client's output in any order.
    for (c, received) in observed.received.iter().enumerate() {
        let mine: Vec<&Sent> = observed
            .sent
            .iter()
            .filter(|s| s.client == c && s.reply == Reply::Stdio)
            .collect();
        let own: Vec<Value> = mine.iter().flat_map(|s| sent_ids(&s.bytes)).collect();
        let got: Vec<&Value> = received.iter().flat_map(answers).collect();
        let version = observed.clients.get(c).map_or("", |c| c.version.as_str());
        let lines: Vec<Expected> = mine
            .iter()
            .map(|s| expected(&s.bytes, limit, version))
            .collect();
        if let Some((k, id)) = stdio_unanswered(&lines, received) {
            return Err(format!(
                "{} ({}): the request with id {id} was not answered within the bounded wait; the message: {}",
                observed
                    .clients
                    .get(c)
                    .map_or("a client", |c| c.name.as_str()),
                mine[k].label,
                crate::wire::show(&mine[k].bytes)
            ));
        }
        let name = observed
            .clients
            .get(c)
            .map_or("a client", |c| c.name.as_str());
        let asked: Vec<(Value, Value)> = mine.iter().flat_map(|s| requests(&s.bytes)).collect();
        for a in got {
            let id = a.get("id").unwrap_or(&Value::Null);
            if !id.is_null() && !own.contains(id) {
                return Err(format!(
                    "{name}: an answer with id {id}, which it never sent: {}",
                    brief(a)
                ));
            }
            // Over stdio one client has the session: no id is renumbered (but by the router of
            // several upstreams).
            if let Some(why) = misdelivered(a, name, &asked, observed.routed) {
                return Err(format!("{name}: {why}: {}", brief(a)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;
    use serde_json::json;

    /// A request's id must be answered when it is a string or an integer in a readable
    /// message; floats, `null`, notifications, messages over the limit and texts that are not
    /// JSON expect nothing.
    #[test]
    fn which_ids_must_be_answered() {
        let e = |t: &str| expected_ids(t.as_bytes(), 200);
        assert_eq!(
            e(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            vec![json!(1)]
        );
        assert_eq!(
            e(
                r#"[{"id":"a","method":"x"},{"id":1.5,"method":"x"},{"id":null,"method":"x"},{"method":"n"},{"id":2,"result":{}}]"#
            ),
            vec![json!("a")]
        );
        assert!(e(r#"{"id":1,"method":"ping""#).is_empty());
        assert!(e(&format!(r#"{{"id":1,"method":"{}"}}"#, "x".repeat(300))).is_empty());
        assert_eq!(
            sent_ids(br#"[{"id":1.5},{"id":null}]"#),
            vec![json!(1.5), Value::Null]
        );
        let reply = json!([{"id": 1, "result": {}}, {"method": "notifications/x"}]);
        assert_eq!(answers(&reply).len(), 1);
        assert!(valid_id(&json!(u64::MAX)) && !valid_id(&json!(-0.0)));
    }

    /// Over stdio a line none of whose requests was answered may have been refused whole (one
    /// `null`-id error each); a line answered in part may not.
    #[test]
    fn stdio_lines_are_answered_or_refused_whole() {
        let line = |ids: Vec<Value>| Expected {
            ids,
            may_refuse: true,
            unreadable: false,
            salvaged: None,
        };
        let lines = vec![line(vec![json!(1)]), line(vec![json!(2), json!(3)])];
        let ok = json!({"id": 1, "result": {}});
        let whole = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600}});
        let two = json!([{"id": 2, "result": {}}]);
        assert_eq!(stdio_unanswered(&lines, &[ok.clone(), whole.clone()]), None);
        assert_eq!(
            stdio_unanswered(&lines, std::slice::from_ref(&ok)),
            Some((1, json!(2)))
        );
        assert_eq!(
            stdio_unanswered(&lines, &[ok, two, whole.clone()]),
            Some((1, json!(3)))
        );
        assert_eq!(
            stdio_unanswered(&lines, std::slice::from_ref(&whole)),
            Some((1, json!(2)))
        );
        let readable = vec![Expected {
            ids: vec![json!(1)],
            may_refuse: false,
            unreadable: false,
            salvaged: None,
        }];
        assert_eq!(
            stdio_unanswered(&readable, std::slice::from_ref(&whole)),
            Some((0, json!(1)))
        );
        // An unreadable batch that shows id 3 is refused whole; a later line's id 3 is answered
        // on its own: the refusal is the first line's, the answer the second's (found by the
        // wire fuzzer: the first line took the second's answer).
        let dup = br#"[{"jsonrpc":"2.0","id":3,"method":"x","params":{"a":1,"a":2}}]"#;
        let later =
            br#"[{"jsonrpc":"2.0","id":4,"method":"x"},{"jsonrpc":"2.0","id":3,"method":"x"}]"#;
        let lines = [
            expected(dup, 1000, "2025-03-26"),
            expected(later, 1000, "2025-03-26"),
        ];
        let answers = json!([{"id": 4, "result": {}}, {"id": 3, "error": {}}]);
        assert_eq!(stdio_unanswered(&lines, &[whole.clone(), answers]), None);
        // An unreadable single message whose id still reads is refused under that id.
        let single = br#"{"jsonrpc":"2.0","id":4,"method":"x","params":{"a":1,"a":2}}"#;
        let line = expected(single, 1000, "2025-03-26");
        assert_eq!(line.salvaged, Some(json!(4)));
        let refusal = json!({"id": 4, "error": {}});
        assert_eq!(stdio_unanswered(&[line], &[refusal]), None);
        assert!(expected(br#"{"id":1,"id":2,"method":"x"}"#, 100, "2025-03-26").may_refuse);
        let ping = br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#;
        assert!(!expected(ping, 100, "2025-03-26").may_refuse);
        let batch = br#" [{"jsonrpc":"2.0","id":1,"method":"x"}]"#;
        assert!(!expected(batch, 100, "2025-03-26").may_refuse);
        assert!(expected(batch, 100, "2025-06-18").may_refuse);
    }

    fn observed(executions: Vec<Execution>) -> Observed {
        Observed {
            clients: vec![ClientInfo {
                name: "fuzz-c0".into(),
                grant: "ci-bot".into(),
                session: "s0".into(),
                version: "2025-03-26".into(),
            }],
            executions,
            ..Observed::default()
        }
    }

    fn execution(id: Option<Value>) -> Execution {
        Execution {
            tool: json!("kv"),
            arguments: json!({"op": "get", "key": "k"}),
            id,
            method: "tools/call".into(),
            facts: crate::naive::Facts {
                transport: "http".into(),
                client: Some("fuzz-c0".into()),
                ..Default::default()
            },
            raw: String::new(),
        }
    }

    /// An execution needs its own allow record: same session, grant, tool, arguments and id,
    /// used once.
    #[test]
    fn every_execution_needs_its_own_allow_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        {
            let mut log = tollgate_gateway::audit::AuditLog::open(&path, false).unwrap();
            log.append(0, "decision", json!({"session": "s0", "grant": "ci-bot", "id": 1, "tool": "kv", "arguments": {"op": "get", "key": "k"}, "decision": {"decision": "allow"}})).unwrap();
            log.append(0, "decision", json!({"session": "s0", "grant": "ci-bot", "id": 2, "tool": "kv", "arguments": {"op": "get", "key": "k"}, "decision": {"decision": "deny"}})).unwrap();
        }
        let ok = check(&observed(vec![execution(Some(json!(1)))]), &path, 100).unwrap();
        assert_eq!((ok.allowed, ok.refused, ok.executions), (1, 1, 1));
        let twice = check(
            &observed(vec![execution(Some(json!(1))), execution(Some(json!(1)))]),
            &path,
            100,
        )
        .unwrap_err();
        assert!(twice.contains("already used"), "{twice}");
        let denied = check(&observed(vec![execution(Some(json!(2)))]), &path, 100).unwrap_err();
        assert!(denied.contains("no unused allow record"), "{denied}");
        let note = check(&observed(vec![execution(None)]), &path, 100).unwrap_err();
        assert!(note.contains("a notification"), "{note}");
        let mut stranger = execution(Some(json!(1)));
        stranger.facts.client = Some("someone".into());
        let who = check(&observed(vec![stranger]), &path, 100).unwrap_err();
        assert!(who.contains("cannot tell which client"), "{who}");
    }

    /// Over HTTP, each POST's requests are answered in its own response, and only with ids it
    /// sent; a 4xx refuses the whole message; a timeout is a hang.
    #[test]
    fn http_replies_answer_their_own_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "").unwrap();
        let sent = |bytes: &str, reply: Reply| {
            let mut o = observed(Vec::new());
            o.sent.push(Sent {
                client: 0,
                bytes: bytes.as_bytes().to_vec(),
                reply,
                label: "step 1".into(),
            });
            check(&o, &path, 1000)
        };
        let http = |status, body: &str| Reply::Http {
            status,
            body: body.as_bytes().to_vec(),
        };
        let req = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":"x","method":"ping"}]"#;
        assert!(
            sent(
                req,
                http(200, r#"[{"id":1,"result":{}},{"id":"x","result":{}}]"#)
            )
            .is_ok()
        );
        assert!(sent(req, http(404, "{}")).is_ok());
        assert!(sent(req, http(200, r#"[{"id":1,"result":{}}]"#)).is_err());
        assert!(
            sent(
                req,
                http(
                    200,
                    r#"[{"id":1,"result":{}},{"id":"x","result":{}},{"id":7,"result":{}}]"#
                )
            )
            .is_err()
        );
        assert!(sent(req, http(202, "")).is_err());
        assert!(sent(req, Reply::TimedOut).unwrap_err().contains("hangs"));
        assert!(sent(r#"{"jsonrpc":"2.0","method":"n"}"#, http(202, "")).is_ok());
        assert!(
            sent(
                req,
                http(
                    200,
                    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600}}"#
                )
            )
            .is_err()
        );
        let dup = r#"[{"jsonrpc":"2.0","id":1,"id":1,"method":"ping"}]"#;
        assert!(
            sent(
                dup,
                http(
                    200,
                    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600}}"#
                )
            )
            .is_ok()
        );
        assert!(
            sent(
                req,
                http(
                    200,
                    r#"[{"jsonrpc":"2.0","id":null,"error":{"code":-32600}}]"#
                )
            )
            .is_err()
        );
    }
}
