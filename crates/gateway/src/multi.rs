//! Several upstreams behind one session: a router that looks to the session core like one
//! upstream ([`crate::upstream::Upstream`]) and speaks to each upstream of the config file.
//!
//! Routing model (docs/gateway.md, "Several upstreams"):
//! - every tool and prompt is exposed as `<prefix><name>` (the prefix is `<upstream>__` unless
//!   the config sets one; prefixes are prefix-free, so exposed names never collide), and the
//!   upstream receives its own name back; an exposed name outside `[A-Za-z0-9_.-]{1,128}` is
//!   not listed (logged), so no call can reach it;
//! - `initialize`, `tools/list`, `prompts/list`, `resources/list`,
//!   `resources/templates/list` and `logging/setLevel` go to every upstream and their answers are
//!   merged (each upstream's pages followed, at most [`MAX_PAGES`]); a call, `prompts/get` and
//!   `resources/read` go to the one upstream that listed the name (or the URI); `ping` is
//!   answered here;
//! - every request to an upstream gets an id of the router's own (a number), so answers,
//!   `notifications/cancelled` and progress keep their upstream; a request from an upstream
//!   (sampling, elicitation, roots) reaches the client with the id `<upstream>-<n>`, and the
//!   client's answer goes back to that upstream with its own id;
//! - progress keeps its upstream too: an upstream's `notifications/progress` reaches the client
//!   only when its token is the `progressToken` of a request routed to that upstream and not yet
//!   answered, and the client's reaches only the upstream whose request to the client carries
//!   the token; any other progress is dropped. An upstream's `notifications/cancelled` names
//!   only its own requests to the client (docs/security.md, "Several upstreams");
//! - a merged list larger than one message may be (`--max-message-bytes`, less a margin for the
//!   envelope) is answered in pages of the router's own, each under that size, with a
//!   `nextCursor` the router answers itself (at most [`MAX_KEPT_PAGES`] pages kept); so one
//!   upstream with a long list cannot make the merged list a message the session drops;
//! - an upstream that goes away answers its requests in flight with an error, its tools leave
//!   the list (`notifications/tools/list_changed`), and it is started again after a backoff
//!   (1 s doubling to 30 s, at most [`MAX_RESTARTS`] tries in a row); once it answers
//!   `initialize` again its tools come back (`list_changed` again). The others go on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tollgate_mcp::{ErrorCode, error_response, result_response};

use crate::upstream::{FromUpstream, NamedUpstream, Upstream};

/// The most pages of one list the router reads from one upstream.
pub const MAX_PAGES: u32 = 100;
/// Start attempts in a row before an upstream is given up on (for this session).
pub const MAX_RESTARTS: u32 = 10;
/// How long a merged request (a list, `initialize`) waits for the slowest upstream; then it
/// is answered with what came.
pub const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most requests in flight through the router at once (either way); past it a request is
/// answered with an error.
pub const MAX_IN_FLIGHT: usize = 4096;
/// The most pages of merged lists the router keeps for their requesters to fetch; past it the
/// oldest is forgotten (its cursor is then unknown, and the list starts again from the top).
pub const MAX_KEPT_PAGES: usize = 256;

/// The default prefix of an upstream's exposed names.
pub fn default_prefix(name: &str) -> String {
    format!("{name}__")
}

/// Whether `name` is a tool name the MCP spec allows: `[A-Za-z0-9_.-]{1,128}`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The upstream an exposed name belongs to, by prefix (for the audit log and policies); `None`
/// with one upstream, or when no prefix matches.
pub fn upstream_of<'a>(parts: &'a [NamedUpstream], exposed: &str) -> Option<&'a NamedUpstream> {
    if parts.len() < 2 {
        return None;
    }
    parts.iter().find(|p| exposed.starts_with(&p.prefix))
}

/// Starts the router: the session's queue to it, its queue to the session, and its task.
pub(crate) fn start(
    parts: Arc<Vec<NamedUpstream>>,
    max_message: usize,
    queue: usize,
) -> (
    mpsc::Sender<Value>,
    mpsc::Receiver<FromUpstream>,
    JoinHandle<()>,
) {
    let (tx, from_core) = mpsc::channel::<Value>(queue);
    let (to_core, rx) = mpsc::channel::<FromUpstream>(queue);
    let (events_tx, events) = mpsc::channel::<(usize, u64, FromUpstream)>(queue);
    let router = Router {
        parts: parts
            .iter()
            .map(|p| Part {
                named: p.clone(),
                up: None,
                generation: 0,
                initialized: false,
                restart_at: None,
                failures: 0,
            })
            .collect(),
        max_message,
        queue,
        to_core,
        events_tx,
        pending: HashMap::new(),
        fan_outs: HashMap::new(),
        server_requests: HashMap::new(),
        tokens: HashMap::new(),
        tools: HashMap::new(),
        prompts: HashMap::new(),
        resources: HashMap::new(),
        next: 0,
        initialize: None,
        pages: BTreeMap::new(),
    };
    let task = tokio::spawn(router.run(from_core, events));
    (tx, rx, task)
}

#[derive(Debug)]
struct Part {
    named: NamedUpstream,
    up: Option<Upstream>,
    /// Bumped at each start: events of an earlier process are dropped.
    generation: u64,
    /// Whether it answered `initialize` (its tools are listed and callable).
    initialized: bool,
    restart_at: Option<Instant>,
    /// Starts in a row that ended before `initialize` was answered.
    failures: u32,
}

/// A request the router sent to an upstream, by the router's id.
#[derive(Debug)]
enum Sent {
    /// A client request routed to one upstream: its answer goes back with the client's id.
    /// `token` is its progress token (its JSON text), if it has one; `cancelled`: the client (or
    /// the core, when the call timed out) cancelled it, so nobody waits for its answer any more
    /// and it is forgotten first when the bound of requests in flight is reached.
    Routed {
        part: usize,
        client_id: Value,
        token: Option<String>,
        cancelled: bool,
    },
    /// One upstream's part of a merged request.
    FanOut { part: usize, fan: u64 },
    /// The router's own `initialize` of a restarted upstream.
    Restart { part: usize },
}

/// Which merged request, and how its answers combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    Initialize,
    /// A list under this result key, names prefixed (`tools`, `prompts`) or not (`resources`,
    /// `resourceTemplates`).
    List(&'static str, bool),
    /// Answered `{}` once every upstream answered.
    Empty,
}

#[derive(Debug)]
struct FanOut {
    client_id: Value,
    method: String,
    params: Option<Value>,
    merge: Merge,
    waiting: BTreeSet<usize>,
    results: BTreeMap<usize, Vec<Value>>,
    /// The first `initialize` result, and the first error.
    first: Option<Value>,
    error: Option<Value>,
    pages: BTreeMap<usize, u32>,
    deadline: Instant,
}

struct Router {
    parts: Vec<Part>,
    max_message: usize,
    queue: usize,
    to_core: mpsc::Sender<FromUpstream>,
    events_tx: mpsc::Sender<(usize, u64, FromUpstream)>,
    pending: HashMap<String, Sent>,
    fan_outs: HashMap<u64, FanOut>,
    /// Requests from upstreams, by the id the client sees: the upstream, its own id and the
    /// request's progress token (its JSON text), if any.
    server_requests: HashMap<String, (usize, Value, Option<String>)>,
    /// The progress tokens of the client's requests in flight, by upstream: how many of its
    /// requests to that upstream carry each (an upstream's progress is delivered only for its
    /// own).
    tokens: HashMap<(usize, String), u32>,
    /// Exposed tool name → (upstream, its own name), from the last merged `tools/list`.
    tools: HashMap<String, (usize, String)>,
    prompts: HashMap<String, (usize, String)>,
    resources: HashMap<String, usize>,
    next: u64,
    /// The client's `initialize` params, for restarted upstreams.
    initialize: Option<Value>,
    /// Pages of merged lists not fetched yet, by their cursor (made from `next`): the page's
    /// result.
    pages: BTreeMap<u64, Value>,
}

/// The start of the cursors of the router's own pages of a merged list.
const PAGE_CURSOR: &str = "tollgate-router-page-";

/// Room left in a message for the JSON-RPC envelope around a page's items.
const PAGE_MARGIN: usize = 1024;

fn key(id: &Value) -> String {
    id.to_string()
}

/// The progress token of a request (`params._meta.progressToken`) or of a
/// `notifications/progress` (`params.progressToken`), as its JSON text.
fn progress_token(obj: &Map<String, Value>) -> Option<String> {
    let params = obj.get("params")?;
    params
        .get("_meta")
        .and_then(|m| m.get("progressToken"))
        .or_else(|| {
            (obj.get("method").and_then(Value::as_str) == Some("notifications/progress"))
                .then(|| params.get("progressToken"))
                .flatten()
        })
        .map(key)
}

impl Router {
    async fn run(
        mut self,
        mut from_core: mpsc::Receiver<Value>,
        mut events: mpsc::Receiver<(usize, u64, FromUpstream)>,
    ) {
        for i in 0..self.parts.len() {
            self.connect(i);
        }
        let mut every = tokio::time::interval(Duration::from_millis(250));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                msg = from_core.recv() => match msg {
                    Some(v) => self.core_in(v).await,
                    None => break,
                },
                Some((i, generation, ev)) = events.recv() => {
                    if self.parts[i].generation == generation {
                        self.part_in(i, ev).await;
                    }
                }
                _ = every.tick() => self.tick().await,
            }
        }
        for part in &mut self.parts {
            if let Some(up) = part.up.take() {
                let _ = Box::pin(up.shutdown()).await;
            }
        }
    }

    /// Starts upstream `i`; its messages arrive on the router's event queue, tagged.
    fn connect(&mut self, i: usize) {
        let part = &mut self.parts[i];
        part.generation += 1;
        part.initialized = false;
        part.restart_at = None;
        match Upstream::connect(&part.named.spec, self.max_message, self.queue) {
            Ok(mut up) => {
                let (_, closed) = mpsc::channel(1);
                let mut rx = std::mem::replace(&mut up.rx, closed);
                let events = self.events_tx.clone();
                let generation = part.generation;
                tokio::spawn(async move {
                    while let Some(ev) = rx.recv().await {
                        if events.send((i, generation, ev)).await.is_err() {
                            return;
                        }
                    }
                });
                part.up = Some(up);
            }
            Err(e) => {
                tracing::warn!("upstream `{}` could not be started: {e}", part.named.name);
                self.schedule_restart(i);
            }
        }
    }

    fn schedule_restart(&mut self, i: usize) {
        let part = &mut self.parts[i];
        part.failures += 1;
        if part.failures > MAX_RESTARTS {
            tracing::warn!(
                "upstream `{}` failed {MAX_RESTARTS} starts in a row; not started again in this session",
                part.named.name
            );
            part.restart_at = None;
            return;
        }
        let backoff =
            Duration::from_secs(1 << (part.failures - 1).min(5)).min(Duration::from_secs(30));
        part.restart_at = Some(Instant::now() + backoff);
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    async fn to_core(&self, v: Value) {
        let _ = self
            .to_core
            .send(FromUpstream::Message(v.to_string().into_bytes()))
            .await;
    }

    /// Sends to upstream `i`; `false` when it cannot take it (gone, or its queue full).
    fn send(&self, i: usize, v: Value) -> bool {
        self.parts[i]
            .up
            .as_ref()
            .is_some_and(|up| up.try_send(v).is_ok())
    }

    fn live(&self) -> Vec<usize> {
        (0..self.parts.len())
            .filter(|&i| self.parts[i].up.is_some())
            .collect()
    }

    async fn error(&self, id: &Value, code: ErrorCode, message: &str) {
        self.to_core(error_response(Some(id), code, message, None))
            .await;
    }

    async fn core_in(&mut self, v: Value) {
        match v {
            Value::Array(items) => {
                for item in items {
                    Box::pin(self.core_in(item)).await;
                }
            }
            Value::Object(obj) => self.core_message(obj).await,
            _ => {}
        }
    }

    async fn core_message(&mut self, mut obj: Map<String, Value>) {
        let method = obj.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = obj.get("id").cloned();
        match (method.as_deref(), id) {
            (Some(method), Some(id)) => self.core_request(method, id, obj).await,
            (Some("notifications/cancelled"), None) => {
                let Some(request) = obj.get("params").and_then(|p| p.get("requestId")) else {
                    return;
                };
                let found = self.pending.iter_mut().find_map(|(k, s)| match s {
                    Sent::Routed {
                        part,
                        client_id,
                        cancelled,
                        ..
                    } if client_id == request => {
                        *cancelled = true;
                        Some((k.clone(), *part))
                    }
                    _ => None,
                });
                if let Some((k, part)) = found
                    && let Ok(ours) = serde_json::from_str::<Value>(&k)
                {
                    // Its other params (the reason) go along.
                    if let Some(p) = obj.get_mut("params").and_then(Value::as_object_mut) {
                        p.insert("requestId".into(), ours);
                    }
                    self.send(part, Value::Object(obj));
                }
            }
            (Some("notifications/progress"), None) => {
                // Progress on a request of an upstream: to that upstream only.
                let Some(token) = progress_token(&obj) else {
                    return;
                };
                let part = self
                    .server_requests
                    .values()
                    .find(|(_, _, t)| t.as_ref() == Some(&token))
                    .map(|(p, _, _)| *p);
                if let Some(part) = part {
                    self.send(part, Value::Object(obj));
                }
            }
            (Some("notifications/initialized"), None) => {
                for i in 0..self.parts.len() {
                    if self.parts[i].initialized {
                        self.send(i, Value::Object(obj.clone()));
                    }
                }
            }
            (Some(_), None) => {
                for i in self.live() {
                    self.send(i, Value::Object(obj.clone()));
                }
            }
            (None, Some(id)) => {
                // The client's answer to a request of an upstream.
                if let Some((part, theirs, _)) = self.server_requests.remove(&key(&id)) {
                    obj.insert("id".into(), theirs);
                    self.send(part, Value::Object(obj));
                }
            }
            (None, None) => {}
        }
    }

    async fn core_request(&mut self, method: &str, id: Value, mut obj: Map<String, Value>) {
        if self.pending.len() >= MAX_IN_FLIGHT {
            self.forget_cancelled();
        }
        if self.pending.len() >= MAX_IN_FLIGHT {
            return self
                .error(&id, ErrorCode::InternalError, "too many requests in flight through the gateway's router of several upstreams; retry later")
                .await;
        }
        let params = obj.get("params").cloned();
        let merge = match method {
            "initialize" => {
                self.initialize = params.clone();
                Some(Merge::Initialize)
            }
            "tools/list" => Some(Merge::List("tools", true)),
            "prompts/list" => Some(Merge::List("prompts", true)),
            "resources/list" => Some(Merge::List("resources", false)),
            "resources/templates/list" => Some(Merge::List("resourceTemplates", false)),
            "logging/setLevel" => Some(Merge::Empty),
            _ => None,
        };
        if let Some(merge) = merge {
            // A page of a merged list the router made: answered from what it kept.
            if let Merge::List(..) = merge
                && let Some(n) = params
                    .as_ref()
                    .and_then(|p| p.get("cursor"))
                    .and_then(Value::as_str)
                    .and_then(|c| c.strip_prefix(PAGE_CURSOR))
                    .and_then(|n| n.parse::<u64>().ok())
                && let Some(page) = self.pages.remove(&n)
            {
                return self.to_core(result_response(&id, page)).await;
            }
            return self.fan_out(id, method, params, merge).await;
        }
        if method == "ping" {
            return self.to_core(result_response(&id, json!({}))).await;
        }
        let target = match method {
            "tools/call" | "prompts/get" => {
                let table = if method == "tools/call" {
                    &self.tools
                } else {
                    &self.prompts
                };
                let name = params
                    .as_ref()
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match table.get(name) {
                    Some((part, own)) => {
                        let (part, own) = (*part, own.clone());
                        if let Some(p) = obj.get_mut("params") {
                            p["name"] = Value::from(own);
                        }
                        Some(part)
                    }
                    None => {
                        let what = if method == "tools/call" {
                            "tool"
                        } else {
                            "prompt"
                        };
                        return self
                            .error(&id, ErrorCode::InvalidParams, &format!("no upstream lists the {what} `{}` now (it may have gone away): list the {what}s again", tollgate_mcp::display::ident(name)))
                            .await;
                    }
                }
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params
                    .as_ref()
                    .and_then(|p| p.get("uri"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match self.resources.get(uri) {
                    Some(part) => Some(*part),
                    None => {
                        return self
                            .error(
                                &id,
                                ErrorCode::ResourceNotFound,
                                "no upstream lists this resource now: list the resources again",
                            )
                            .await;
                    }
                }
            }
            _ => None,
        };
        let Some(part) = target else {
            return self
                .error(&id, ErrorCode::MethodNotFound, &format!("`{}` is not routed by a gateway of several upstreams (tools, prompts and resources are)", tollgate_mcp::display::ident(method)))
                .await;
        };
        let ours = self.id();
        obj.insert("id".into(), Value::from(ours));
        let token = progress_token(&obj);
        if self.send(part, Value::Object(obj)) {
            if let Some(t) = &token {
                *self.tokens.entry((part, t.clone())).or_default() += 1;
            }
            self.pending.insert(
                ours.to_string(),
                Sent::Routed {
                    part,
                    client_id: id,
                    token,
                    cancelled: false,
                },
            );
        } else {
            let name = self.parts[part].named.name.clone();
            self.error(&id, ErrorCode::InternalError, &format!("the upstream `{name}` cannot take the request now (it is restarting or busy): retry later"))
                .await;
        }
    }

    async fn fan_out(
        &mut self,
        client_id: Value,
        method: &str,
        params: Option<Value>,
        merge: Merge,
    ) {
        let fan = self.id();
        let mut fan_out = FanOut {
            client_id,
            method: method.to_owned(),
            params: params.clone(),
            merge,
            waiting: BTreeSet::new(),
            results: BTreeMap::new(),
            first: None,
            error: None,
            pages: BTreeMap::new(),
            deadline: Instant::now() + FAN_OUT_TIMEOUT,
        };
        // Every running upstream: one still answering `initialize` reads this after it (its
        // messages are in order), and one that never was initialized answers with an error,
        // which leaves it out of the merge.
        let targets = self.live();
        for i in targets {
            let ours = self.id();
            let mut msg = json!({"jsonrpc": "2.0", "id": ours, "method": method});
            if let Some(p) = &params {
                msg["params"] = p.clone();
                if let Merge::List(..) = merge
                    && let Some(o) = msg["params"].as_object_mut()
                {
                    o.remove("cursor");
                }
            }
            if self.send(i, msg) {
                self.pending
                    .insert(ours.to_string(), Sent::FanOut { part: i, fan });
                fan_out.waiting.insert(i);
                fan_out.pages.insert(i, 1);
            }
        }
        self.fan_outs.insert(fan, fan_out);
        self.maybe_done(fan).await;
    }

    async fn maybe_done(&mut self, fan: u64) {
        let done = self
            .fan_outs
            .get(&fan)
            .is_some_and(|f| f.waiting.is_empty() || f.deadline <= Instant::now());
        if !done {
            return;
        }
        let Some(f) = self.fan_outs.remove(&fan) else {
            return;
        };
        self.pending
            .retain(|_, s| !matches!(s, Sent::FanOut { fan: g, .. } if *g == fan));
        for i in &f.waiting {
            tracing::warn!(
                "upstream `{}` did not answer `{}` in time; answered without it",
                self.parts[*i].named.name,
                f.method
            );
        }
        let answer = match f.merge {
            Merge::Initialize => match f.first {
                Some(mut result) => {
                    // Every upstream may change its tools: the client hears of it.
                    result["capabilities"]["tools"]["listChanged"] = Value::Bool(true);
                    result_response(&f.client_id, result)
                }
                None => f.error.unwrap_or_else(|| {
                    error_response(
                        Some(&f.client_id),
                        ErrorCode::InternalError,
                        "no upstream answered `initialize`",
                        None,
                    )
                }),
            },
            Merge::Empty => result_response(&f.client_id, json!({})),
            Merge::List(field, prefixed) => {
                let mut merged = Vec::new();
                if field == "tools" {
                    self.tools.clear();
                } else if field == "prompts" {
                    self.prompts.clear();
                } else {
                    self.resources.retain(|_, p| f.results.contains_key(p));
                }
                for (i, items) in f.results {
                    let prefix = self.parts[i].named.prefix.clone();
                    for mut item in items {
                        let Some(own) = item
                            .get(if prefixed { "name" } else { "uri" })
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                        else {
                            continue;
                        };
                        if !prefixed {
                            self.resources.entry(own).or_insert(i);
                            merged.push(item);
                            continue;
                        }
                        let exposed = format!("{prefix}{own}");
                        if field == "tools" && !valid_tool_name(&exposed) {
                            tracing::warn!(
                                "upstream `{}` lists the tool `{}`, whose exposed name `{}` is not a valid tool name ([A-Za-z0-9_.-], at most 128 characters): it is not listed",
                                self.parts[i].named.name,
                                tollgate_mcp::display::ident(&own),
                                tollgate_mcp::display::ident(&exposed)
                            );
                            continue;
                        }
                        let table = if field == "tools" {
                            &mut self.tools
                        } else {
                            &mut self.prompts
                        };
                        if table.contains_key(&exposed) {
                            continue;
                        }
                        table.insert(exposed.clone(), (i, own));
                        item["name"] = Value::from(exposed);
                        merged.push(item);
                    }
                }
                let first = self.paginate(field, merged);
                result_response(&f.client_id, first)
            }
        };
        self.to_core(answer).await;
    }

    async fn part_in(&mut self, i: usize, ev: FromUpstream) {
        match ev {
            FromUpstream::Closed(why) => self.part_closed(i, &why).await,
            FromUpstream::Message(bytes) => {
                let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                    tracing::warn!(
                        "upstream `{}` sent a message that is not JSON; dropped",
                        self.parts[i].named.name
                    );
                    return;
                };
                match v {
                    Value::Array(items) => {
                        for item in items {
                            self.part_message(i, item).await;
                        }
                    }
                    v => self.part_message(i, v).await,
                }
            }
        }
    }

    async fn part_message(&mut self, i: usize, mut v: Value) {
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        let method = obj.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = obj.get("id").cloned();
        match (method, id) {
            (None, Some(id)) => {
                let k = key(&id);
                match self.pending.get(&k) {
                    Some(
                        Sent::Routed { part, .. }
                        | Sent::FanOut { part, .. }
                        | Sent::Restart { part },
                    ) if *part == i => {}
                    _ => return,
                }
                match self.pending.remove(&k) {
                    Some(Sent::Routed {
                        client_id, token, ..
                    }) => {
                        self.forget_token(i, token);
                        obj.insert("id".into(), client_id);
                        self.to_core(v).await;
                    }
                    Some(Sent::FanOut { fan, .. }) => self.fan_answer(i, fan, v).await,
                    Some(Sent::Restart { .. }) if obj.contains_key("result") => {
                        let part = &mut self.parts[i];
                        part.initialized = true;
                        part.failures = 0;
                        self.send(
                            i,
                            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                        );
                        self.list_changed().await;
                    }
                    Some(Sent::Restart { .. }) => {}
                    None => {}
                }
            }
            (Some(method), Some(id)) => {
                // A request of the upstream (sampling, elicitation, roots, ping).
                if self.server_requests.len() >= MAX_IN_FLIGHT {
                    self.send(
                        i,
                        error_response(
                            Some(&id),
                            ErrorCode::InternalError,
                            "too many requests in flight",
                            None,
                        ),
                    );
                    return;
                }
                let n = self.id();
                let ours = format!("{}-{n}", self.parts[i].named.name);
                let token = progress_token(obj);
                self.server_requests
                    .insert(key(&Value::from(ours.clone())), (i, id, token));
                obj.insert("id".into(), Value::from(ours));
                tracing::debug!(
                    "upstream `{}` asks the client: {method}",
                    self.parts[i].named.name
                );
                self.to_core(v).await;
            }
            (Some(method), None) => {
                if method == "notifications/cancelled" {
                    let Some(request) = obj.get("params").and_then(|p| p.get("requestId")).cloned()
                    else {
                        return;
                    };
                    let found = self
                        .server_requests
                        .iter()
                        .find(|(_, (p, theirs, _))| *p == i && *theirs == request)
                        .map(|(k, _)| k.clone());
                    let Some(k) = found else { return };
                    self.server_requests.remove(&k);
                    let Ok(ours) = serde_json::from_str::<Value>(&k) else {
                        return;
                    };
                    // Its other params (the reason) go along.
                    if let Some(p) = obj.get_mut("params").and_then(Value::as_object_mut) {
                        p.insert("requestId".into(), ours);
                    }
                } else if method == "notifications/progress" {
                    // Only for a request of the client routed to this upstream.
                    let mine =
                        progress_token(obj).is_some_and(|t| self.tokens.contains_key(&(i, t)));
                    if !mine {
                        tracing::debug!(
                            "upstream `{}` sent progress for a token it was not given; dropped",
                            self.parts[i].named.name
                        );
                        return;
                    }
                }
                self.to_core(v).await;
            }
            (None, None) => {}
        }
    }

    async fn fan_answer(&mut self, i: usize, fan: u64, v: Value) {
        let Some(f) = self.fan_outs.get_mut(&fan) else {
            return;
        };
        let mut next_cursor = None;
        match v.get("result") {
            Some(result) => match f.merge {
                Merge::Initialize => {
                    if f.first.is_none() {
                        f.first = Some(result.clone());
                    }
                    self.parts[i].initialized = true;
                    self.parts[i].failures = 0;
                }
                Merge::List(field, _) => {
                    let items = result
                        .get(field)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    f.results.entry(i).or_default().extend(items);
                    next_cursor = result
                        .get("nextCursor")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                Merge::Empty => {}
            },
            None => {
                if f.error.is_none()
                    && let Some(mut e) = v.get("error").cloned()
                {
                    if let Some(m) = e.get("message").and_then(Value::as_str) {
                        e["message"] =
                            Value::from(format!("upstream `{}`: {m}", self.parts[i].named.name));
                    }
                    f.error = Some(json!({"jsonrpc": "2.0", "id": f.client_id, "error": e}));
                }
            }
        }
        let pages = f.pages.get(&i).copied().unwrap_or(1);
        if let Some(cursor) = next_cursor
            && pages < MAX_PAGES
        {
            let method = f.method.clone();
            let mut params = f.params.clone().unwrap_or_else(|| json!({}));
            if !params.is_object() {
                params = json!({});
            }
            params["cursor"] = Value::from(cursor);
            f.pages.insert(i, pages + 1);
            let ours = self.id();
            if self.send(
                i,
                json!({"jsonrpc": "2.0", "id": ours, "method": method, "params": params}),
            ) {
                self.pending
                    .insert(ours.to_string(), Sent::FanOut { part: i, fan });
                return;
            }
        }
        if let Some(f) = self.fan_outs.get_mut(&fan) {
            f.waiting.remove(&i);
        }
        self.maybe_done(fan).await;
    }

    /// Splits a merged list into pages of at most the message size (less [`PAGE_MARGIN`]):
    /// returns the first page's result; the others are kept for their cursors, each page's
    /// `nextCursor` naming the next. One item larger than a page is a page of its own (the
    /// session drops it as it would the upstream's answer).
    fn paginate(&mut self, field: &str, items: Vec<Value>) -> Value {
        let budget = self.max_message.saturating_sub(PAGE_MARGIN).max(1);
        let mut pages: Vec<Vec<Value>> = vec![Vec::new()];
        let mut size = 0;
        for item in items {
            let n = item.to_string().len() + 1;
            if size + n > budget && pages.last().is_some_and(|p| !p.is_empty()) {
                pages.push(Vec::new());
                size = 0;
            }
            size += n;
            if let Some(page) = pages.last_mut() {
                page.push(item);
            }
        }
        if pages.len() > 1 {
            tracing::debug!(
                "the merged `{field}` list is larger than one message: answered in {} pages",
                pages.len()
            );
        }
        // Each page's cursor, made before the pages are kept.
        let cursors: Vec<u64> = (1..pages.len()).map(|_| self.id()).collect();
        let mut results = pages.into_iter().enumerate().map(|(k, items)| {
            let mut result = Map::new();
            result.insert(field.into(), Value::Array(items));
            if let Some(next) = cursors.get(k) {
                result.insert(
                    "nextCursor".into(),
                    Value::from(format!("{PAGE_CURSOR}{next}")),
                );
            }
            Value::Object(result)
        });
        let first = results.next().unwrap_or_else(|| json!({ field: [] }));
        for (cursor, page) in cursors.iter().zip(results) {
            if self.pages.len() >= MAX_KEPT_PAGES {
                self.pages.pop_first();
            }
            self.pages.insert(*cursor, page);
        }
        first
    }

    /// Forgets the requests the client cancelled (an upstream that never answers them, a silent
    /// one, would otherwise hold the router's bound of requests in flight for every upstream);
    /// a late answer to one is dropped, as one to a request that timed out at the core is.
    fn forget_cancelled(&mut self) {
        let cancelled: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s,
                    Sent::Routed {
                        cancelled: true,
                        ..
                    }
                )
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in cancelled {
            if let Some(Sent::Routed { part, token, .. }) = self.pending.remove(&k) {
                self.forget_token(part, token);
            }
        }
    }

    /// A request to upstream `i` carrying the progress `token` is answered (or gone).
    fn forget_token(&mut self, i: usize, token: Option<String>) {
        let Some(t) = token else { return };
        let k = (i, t);
        if let Some(n) = self.tokens.get_mut(&k) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tokens.remove(&k);
            }
        }
    }

    /// The client hears that the tools changed.
    async fn list_changed(&self) {
        self.to_core(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
            .await;
    }

    async fn part_closed(&mut self, i: usize, why: &str) {
        let name = self.parts[i].named.name.clone();
        tracing::warn!("upstream `{name}` went away ({why}); the other upstreams go on");
        let was_initialized = self.parts[i].initialized;
        if let Some(up) = self.parts[i].up.take() {
            let _ = Box::pin(up.shutdown()).await;
        }
        self.parts[i].initialized = false;
        self.parts[i].generation += 1;
        let mine: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, s)| matches!(s, Sent::Routed { part, .. } | Sent::FanOut { part, .. } | Sent::Restart { part } if *part == i))
            .map(|(k, _)| k.clone())
            .collect();
        let mut fans = BTreeSet::new();
        for k in mine {
            match self.pending.remove(&k) {
                Some(Sent::Routed {
                    client_id, token, ..
                }) => {
                    self.forget_token(i, token);
                    self.error(
                        &client_id,
                        ErrorCode::InternalError,
                        &format!("the upstream `{name}` went away before it answered: {why}"),
                    )
                    .await;
                }
                Some(Sent::FanOut { fan, .. }) => {
                    fans.insert(fan);
                }
                _ => {}
            }
        }
        for fan in fans {
            if let Some(f) = self.fan_outs.get_mut(&fan) {
                f.waiting.remove(&i);
            }
            self.maybe_done(fan).await;
        }
        self.server_requests.retain(|_, (p, _, _)| *p != i);
        self.tools.retain(|_, (p, _)| *p != i);
        self.prompts.retain(|_, (p, _)| *p != i);
        self.resources.retain(|_, p| *p != i);
        if was_initialized {
            self.list_changed().await;
        }
        self.schedule_restart(i);
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .fan_outs
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for fan in late {
            self.maybe_done(fan).await;
        }
        for i in 0..self.parts.len() {
            if self.parts[i].up.is_none() && self.parts[i].restart_at.is_some_and(|t| t <= now) {
                self.connect(i);
                if self.parts[i].up.is_some()
                    && let Some(params) = self.initialize.clone()
                {
                    let ours = self.id();
                    let msg = json!({"jsonrpc": "2.0", "id": ours, "method": "initialize", "params": params});
                    if self.send(i, msg) {
                        self.pending
                            .insert(ours.to_string(), Sent::Restart { part: i });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MCP spec's tool names: 1 to 128 of `[A-Za-z0-9_.-]`.
    #[test]
    fn tool_names_follow_the_spec() {
        assert!(valid_tool_name("eks__list_pods"));
        assert!(valid_tool_name("a.b-c_D9"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("has space"));
        assert!(!valid_tool_name("slash/name"));
        assert!(valid_tool_name(&"x".repeat(128)));
        assert!(!valid_tool_name(&"x".repeat(129)));
    }
}
