//! Running sessions for real: one task per client session drives a [`SessionCore`] between the
//! client (this process's stdio, or HTTP requests) and its own upstream connection, with the
//! real clock ([`Clock`]). Time for the policy is the monotonic time since the gateway started
//! (scaled by `--time-scale`).
//!
//! - Timeouts: the task wakes at the core's next deadline and lets it answer late calls.
//! - Upstream crash: pending calls get an error result at once; a child upstream is restarted
//!   with backoff (100 ms doubling to 5 s) and re-initialized with the client's own
//!   `initialize`, so the session goes on.
//! - Shutdown: the task stops reading the client, waits (bounded) for the calls in flight, and
//!   stops the upstream.
//! - A remote counter store (Redis): the core is synchronous, so a decision waits for the
//!   store's round trip. On a multi-thread runtime that wait runs under `block_in_place`, which
//!   hands this worker's other tasks (other sessions) to another thread first; the bounded
//!   store timeouts bound the wait (docs/PERFORMANCE.md, "Redis store").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use crate::clock::Clock;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tollgate_mcp::protocol::HEADER_SESSION_ID;
use tollgate_mcp::{ErrorCode, error_response};

use crate::core::{Out, SessionCore};
use crate::upstream::{FromUpstream, Upstream, UpstreamSpec};

/// How long a shutdown waits for calls in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const REINIT_PREFIX: &str = "tollgate-reinit-";

/// What a client sends a session task.
#[derive(Debug)]
pub struct ClientInput {
    pub bytes: Vec<u8>,
    /// For HTTP: where the answer goes (`None` means "nothing to answer": 202).
    /// Messages for this request: server-to-client messages sent while it is pending, then its
    /// answer; the channel closes after the answer (or at once, with nothing, for 202).
    pub reply: Option<mpsc::UnboundedSender<Value>>,
}

/// Where the session sends messages for the client that no request is waiting for (stdio
/// writes them; HTTP has no stream for them and drops them, logged).
pub type ClientSink = mpsc::UnboundedSender<Value>;

struct Waiter {
    ids: Vec<String>,
    batch: bool,
    got: Vec<Value>,
    reply: mpsc::UnboundedSender<Value>,
}

/// Whether JSON text may hold `needle` in a string: it does literally, or it has an escape
/// (`\u0069nitialize` is `initialize` too), so only texts that may hold it need parsing.
pub(crate) fn may_contain(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.contains(&b'\\') || bytes.windows(needle.len()).any(|w| w == needle)
}

/// The envelope fields `request_ids` needs; every other field is skipped unparsed.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: Option<serde::de::IgnoredAny>,
}

/// A field that is present is `Some`, even when it is `null` (`"id": null` is an id here).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The ids of the requests in a client message (a batch's, or the one).
fn request_ids(bytes: &[u8]) -> (Vec<String>, bool) {
    let one = |m: Envelope| m.method.and(m.id).map(|id| id.to_string());
    let batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if batch {
        match serde_json::from_slice::<Vec<Envelope>>(bytes) {
            Ok(items) => (items.into_iter().filter_map(one).collect(), true),
            Err(_) => request_ids_lenient(bytes),
        }
    } else {
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(m) => (one(m).into_iter().collect(), false),
            Err(_) => request_ids_lenient(bytes),
        }
    }
}

/// The same from a full parse, for texts the envelope does not fit (a duplicated `id`, items
/// that are not objects): what the gateway answered before the envelope fast path existed.
fn request_ids_lenient(bytes: &[u8]) -> (Vec<String>, bool) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return (Vec::new(), false);
    };
    let one = |m: &Value| m.get("method").and(m.get("id")).map(Value::to_string);
    match &v {
        Value::Array(items) => (items.iter().filter_map(one).collect(), true),
        m => (one(m).into_iter().collect(), false),
    }
}

/// Drives one session until the client goes away or `shutdown` turns true.
pub async fn run_session(
    mut core: SessionCore,
    spec: UpstreamSpec,
    mut client: mpsc::UnboundedReceiver<ClientInput>,
    sink: ClientSink,
    clock: Clock,
    max_line: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let now = || clock.now();
    let mut upstream = match Upstream::connect(&spec, max_line) {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::error!("cannot start the upstream: {e}");
            None
        }
    };
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut initialize: Option<Value> = None;
    let mut backoff = Duration::from_millis(100);
    let mut restarts = 0u64;
    let mut closing = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut policy_changes = core.policy_changes();
    let mut reloads_open = true;
    let approvals = core.approval_waker();
    loop {
        if closing && !core.has_pending() {
            break;
        }
        let deadline = core.next_deadline().map(|d| clock.instant_at(d));
        let sleep_until = match (deadline, drain_deadline) {
            (Some(a), Some(b)) => Some(tokio::time::Instant::from_std(a).min(b)),
            (Some(a), None) => Some(tokio::time::Instant::from_std(a)),
            (None, b) => b,
        };
        let timer = async {
            match sleep_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let from_upstream = async {
            match upstream.as_mut() {
                Some(u) => u.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let outs: Vec<Out> = tokio::select! {
            input = client.recv(), if !closing => match input {
                None => {
                    closing = true;
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                    Vec::new()
                }
                Some(input) => {
                    if may_contain(&input.bytes, b"initialize")
                        && let Ok(v) = serde_json::from_slice::<Value>(&input.bytes)
                        && v.get("method").and_then(Value::as_str) == Some("initialize")
                    {
                        initialize = Some(v);
                    }
                    let (ids, batch) = request_ids(&input.bytes);
                    let outs = off_worker(core.may_block(), || core.from_client(&input.bytes, now()));
                    if let Some(reply) = input.reply {
                        if ids.is_empty() {
                            // Notifications and responses: nothing to wait for, unless the
                            // message was refused outright (a parse error answers it).
                            let direct: Vec<&Value> = outs.iter().filter_map(|o| match o { Out::Client(v) => Some(v), Out::Upstream(_) => None }).collect();
                            if let Some(v) = direct.first() {
                                let _ = reply.send((*v).clone());
                            }
                        } else {
                            waiters.push(Waiter { ids, batch, got: Vec::new(), reply });
                        }
                    }
                    outs
                }
            },
            msg = from_upstream => match msg {
                Some(FromUpstream::Message(bytes)) => {
                    let is_reinit = may_contain(&bytes, REINIT_PREFIX.as_bytes()) && serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v.get("id").and_then(Value::as_str).map(|s| s.starts_with(REINIT_PREFIX))).unwrap_or(false);
                    if is_reinit {
                        backoff = Duration::from_millis(100);
                        Vec::new()
                    } else {
                        // Held calls are decided when the upstream's tool list arrives.
                        off_worker(core.may_block(), || core.from_upstream(&bytes, now()))
                    }
                }
                closed => {
                    let why = match closed {
                        Some(FromUpstream::Closed(why)) => why,
                        _ => "the upstream connection closed".to_owned(),
                    };
                    tracing::warn!("upstream closed: {why}");
                    let outs = core.upstream_closed(now(), &why);
                    if let Some(u) = upstream.take() {
                        u.shutdown().await;
                    }
                    if matches!(spec, UpstreamSpec::Command { .. }) && !closing {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        restarts += 1;
                        match Upstream::connect(&spec, max_line) {
                            Ok(u) => {
                                if let Some(init) = &initialize {
                                    let mut again = init.clone();
                                    again["id"] = json!(format!("{REINIT_PREFIX}{restarts}"));
                                    u.send(again);
                                    u.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
                                }
                                upstream = Some(u);
                            }
                            Err(e) => tracing::error!("cannot restart the upstream: {e}"),
                        }
                    }
                    outs
                }
            },
            () = timer => {
                if drain_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                core.tick(now())
            },
            changed = policy_changes.changed(), if reloads_open => {
                if changed.is_ok() {
                    core.policy_changed(now())
                } else {
                    // The gateway is gone: nothing will reload it any more.
                    reloads_open = false;
                    Vec::new()
                }
            },
            // One of this session's held calls was decided (by an operator, elsewhere).
            () = approvals.notified() => core.tick(now()),
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                }
                Vec::new()
            },
        };
        for out in outs {
            match out {
                Out::Upstream(v) => {
                    let sent = upstream.as_ref().is_some_and(|u| u.send(v));
                    if !sent {
                        for o in core.upstream_closed(now(), "the upstream is not running") {
                            if let Out::Client(c) = o {
                                deliver(c, &mut waiters, &sink);
                            }
                        }
                    }
                }
                Out::Client(v) => deliver(v, &mut waiters, &sink),
            }
        }
    }
    // Calls still held for approval get an answer: nobody will decide them in this session.
    for out in core.release_held(now(), "the gateway's session ended") {
        if let Out::Client(v) = out {
            deliver(v, &mut waiters, &sink);
        }
    }
    if let Some(u) = upstream.take() {
        u.shutdown().await;
    }
}

/// Runs `f`, which may block on IO when `may_block`, without stalling the runtime's other tasks:
/// on a multi-thread runtime under `block_in_place`; elsewhere (a current-thread runtime, no
/// runtime) directly.
fn off_worker<R>(may_block: bool, f: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if may_block && multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Hands a message to the HTTP request waiting for it, or to the sink.
fn deliver(v: Value, waiters: &mut Vec<Waiter>, sink: &ClientSink) {
    let ids: Vec<String> = match &v {
        Value::Array(items) => items
            .iter()
            .filter_map(|m| m.get("id").map(Value::to_string))
            .collect(),
        m => m.get("id").map(Value::to_string).into_iter().collect(),
    };
    let is_response = match &v {
        Value::Array(_) => true,
        m => m.get("result").is_some() || m.get("error").is_some(),
    };
    if is_response
        && let Some(i) = waiters.iter().position(|w| {
            ids.iter().any(|id| w.ids.contains(id)) || (ids == ["null"] && !w.ids.is_empty())
        })
    {
        let w = &mut waiters[i];
        match v {
            Value::Array(items) => w.got.extend(items),
            single => w.got.push(single),
        }
        let answered = w
            .got
            .iter()
            .filter_map(|m| m.get("id").map(Value::to_string))
            .collect::<Vec<_>>();
        let done = !w.batch || w.ids.iter().all(|id| answered.contains(id));
        if done {
            let w = waiters.remove(i);
            let answer = if w.batch {
                Value::Array(w.got)
            } else {
                w.got.into_iter().next().unwrap_or(Value::Null)
            };
            let _ = w.reply.send(answer);
        }
        return;
    }
    // A server-to-client request or notification: it goes on the stream of a request in
    // flight (the oldest), as Streamable HTTP carries them; with none, to the sink.
    if !is_response && let Some(w) = waiters.first() {
        let _ = w.reply.send(v);
        return;
    }
    let _ = sink.send(v);
}

/// The sessions of an HTTP gateway, by `Mcp-Session-Id`.
#[derive(Debug, Default)]
pub struct Sessions {
    pub by_id: HashMap<String, SessionHandle>,
}

/// One HTTP session: where its requests go, and its open GET stream (if any) for
/// server-to-client messages sent while no request of it is in flight.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    tx: mpsc::UnboundedSender<ClientInput>,
    stream: Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<Value>>>>,
}

/// Shared by the HTTP handlers.
#[derive(Debug)]
pub struct HttpFront {
    pub gateway: Arc<crate::core::Gateway>,
    pub spec: UpstreamSpec,
    pub tokens: Option<crate::tokens::Tokens>,
    /// `--admin-tokens`: the approvers of the admin API (none: the admin API is off).
    pub admin_tokens: Option<crate::tokens::Tokens>,
    pub default_grant: String,
    pub sessions: tokio::sync::Mutex<Sessions>,
    pub clock: Clock,
    pub max_line: usize,
    pub shutdown: watch::Receiver<bool>,
    pub next: std::sync::atomic::AtomicU64,
}

/// How long an HTTP request waits for its answer before the gateway gives up on it (calls
/// have their own, shorter, upstream timeouts; this bounds everything else). A call held for
/// approval may wait longer: see [`answer_timeout`].
const HTTP_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an HTTP request may wait for its answer: the longest of the fixed bound and the
/// longest approval the policy may hold a call for, plus the upstream's timeout after it.
fn answer_timeout(front: &HttpFront) -> Duration {
    let held = front.gateway.engine().policy().longest_approval();
    if held.is_zero() {
        return HTTP_ANSWER_TIMEOUT;
    }
    HTTP_ANSWER_TIMEOUT.max(held + front.gateway.options().call_timeout + Duration::from_secs(30))
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = error_response(None, ErrorCode::InvalidRequest, message, None);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The gateway's Streamable HTTP front at `/mcp`, with `/healthz` (the process answers),
/// `/readyz` (it takes new sessions: 503 once a shutdown has begun) and `/metrics`
/// (Prometheus), none of which needs a token (bind the listener where only operators reach
/// it), and the admin API under `/admin` with its console at `/ui` ([`crate::admin`]).
pub fn http_router(front: Arc<HttpFront>, max_body: usize) -> Router {
    Router::new()
        .route("/mcp", post(http_post).delete(http_delete).get(http_get))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(|State(front): State<Arc<HttpFront>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    front.gateway.metrics.encode(),
                )
                    .into_response()
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(|State(front): State<Arc<HttpFront>>| async move {
                if *front.shutdown.borrow() {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
                } else {
                    (StatusCode::OK, "ready\n").into_response()
                }
            }),
        )
        .merge(crate::admin::router())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(front)
}

/// The grant of a request: from its bearer token when tokens are configured.
fn grant_of(front: &HttpFront, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::tokens::bearer);
    // An admin token is not an agent's: an approver's credential never makes calls.
    if let (Some(admin), Some(t)) = (&front.admin_tokens, presented)
        && admin.lookup(t).is_some()
    {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: this is an admin token (from --admin-tokens); it works on /admin and /ui only. Present an agent's token at /mcp.",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(Box::new(r));
    }
    let Some(tokens) = &front.tokens else {
        return Ok(front.default_grant.clone());
    };
    match presented.and_then(|t| tokens.lookup(t)) {
        Some(grant) => Ok(grant.to_owned()),
        None => {
            let mut r = json_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: present a valid bearer token (Authorization: Bearer TOKEN)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(Box::new(r))
        }
    }
}

fn spawn_session(front: &Arc<HttpFront>, grant: &str, session: &str) -> SessionHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (sink, mut unsolicited) = mpsc::unbounded_channel::<Value>();
    let core = front.gateway.session(grant, session);
    tokio::spawn(run_session(
        core,
        front.spec.clone(),
        rx,
        sink,
        front.clock,
        front.max_line,
        front.shutdown.clone(),
    ));
    let stream: Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<Value>>>> = Arc::default();
    let slot = Arc::clone(&stream);
    tokio::spawn(async move {
        // Server-to-client messages with no request in flight go on the session's GET stream;
        // without one, no stream can carry them (logged).
        while let Some(v) = unsolicited.recv().await {
            let sent = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .is_some_and(|s| s.send(v.clone()).is_ok());
            if !sent {
                tracing::debug!("dropped a server-to-client message (no GET stream open): {v}");
            }
        }
    });
    SessionHandle { tx, stream }
}

/// `GET /mcp`: the session's stream of server-to-client messages that belong to no request
/// (notifications such as `tools/list_changed`, server requests). A new GET replaces the old.
async fn http_get(State(front): State<Arc<HttpFront>>, headers: HeaderMap) -> Response {
    let grant = match grant_of(&front, &headers) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.contains("text/event-stream") {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "GET /mcp is an event stream: send Accept: text/event-stream",
        )
            .into_response();
    }
    let Some(id) = headers.get(HEADER_SESSION_ID).and_then(|v| v.to_str().ok()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        );
    };
    let Some(handle) = front
        .sessions
        .lock()
        .await
        .by_id
        .get(&format!("{grant}\u{0}{id}"))
        .cloned()
    else {
        return json_error(StatusCode::NOT_FOUND, "Session not found");
    };
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    *handle
        .stream
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| {
            let event = tollgate_mcp::sse::encode_event(&v.to_string(), None);
            (Ok::<_, std::convert::Infallible>(Bytes::from(event)), rx)
        })
    });
    let mut r = Response::new(axum::body::Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

async fn http_post(
    State(front): State<Arc<HttpFront>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !tollgate_mcp::http::origin_is_local(
        headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()),
    ) {
        return json_error(
            StatusCode::FORBIDDEN,
            "Forbidden: Origin is not a local address",
        );
    }
    let grant = match grant_of(&front, &headers) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let tollgate_mcp::http::BodyKind {
        opens_session: initialize,
        stateless,
    } = tollgate_mcp::http::body_kind(&body);
    let header_session = headers
        .get(HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut new_session = None;
    let tx = {
        let mut sessions = front.sessions.lock().await;
        if initialize {
            let n = front
                .next
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            let nonce: u64 = rand_nonce();
            let id = format!("tg-{n}-{nonce:016x}");
            let handle = spawn_session(&front, &grant, &id);
            let tx = handle.tx.clone();
            sessions.by_id.insert(format!("{grant}\u{0}{id}"), handle);
            new_session = Some(id);
            tx
        } else if let Some(id) = &header_session {
            match sessions.by_id.get(&format!("{grant}\u{0}{id}")) {
                Some(handle) => handle.tx.clone(),
                None => {
                    return json_error(
                        StatusCode::NOT_FOUND,
                        "Session not found: initialize a new session",
                    );
                }
            }
        } else if stateless {
            // The stateless protocol has no sessions: its requests share one gateway session
            // per grant, so `scope: session` limits count per grant for these clients.
            let key = format!("{grant}\u{0}stateless");
            match sessions.by_id.get(&key) {
                Some(handle) if !handle.tx.is_closed() => handle.tx.clone(),
                _ => {
                    let handle = spawn_session(&front, &grant, &format!("stateless:{grant}"));
                    let tx = handle.tx.clone();
                    sessions.by_id.insert(key, handle);
                    tx
                }
            }
        } else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "Bad Request: Mcp-Session-Id header is required (send `initialize` first)",
            );
        }
    };
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel();
    if tx
        .send(ClientInput {
            bytes: body.to_vec(),
            reply: Some(reply_tx),
        })
        .is_err()
    {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session is shutting down",
        );
    }
    let wait = answer_timeout(&front);
    let first = match tokio::time::timeout(wait, reply_rx.recv()).await {
        Ok(first) => first,
        Err(_) => return json_error(StatusCode::GATEWAY_TIMEOUT, "no answer in time"),
    };
    let Some(first) = first else {
        return StatusCode::ACCEPTED.into_response();
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let accepts_sse = accept.contains("text/event-stream");
    let accepts_json = accept.contains("application/json") || accept.contains("*/*");
    let is_answer =
        first.is_array() || first.get("result").is_some() || first.get("error").is_some();
    let mut resp = if is_answer && accepts_json {
        (
            [(header::CONTENT_TYPE, "application/json")],
            first.to_string(),
        )
            .into_response()
    } else if accepts_sse {
        // Server messages before the answer: stream them, then the answer, as SSE events.
        let stream =
            futures::stream::unfold((Some(first), reply_rx), |(pending, mut rx)| async move {
                let next = match pending {
                    Some(v) => Some(v),
                    None => rx.recv().await,
                };
                next.map(|v| {
                    let event = tollgate_mcp::sse::encode_event(&v.to_string(), None);
                    (
                        Ok::<_, std::convert::Infallible>(Bytes::from(event)),
                        (None, rx),
                    )
                })
            });
        let mut r = Response::new(axum::body::Body::from_stream(stream));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r
    } else {
        // A JSON-only client cannot receive server messages: wait for the answer itself.
        let mut answer = first;
        while !(answer.is_array()
            || answer.get("result").is_some()
            || answer.get("error").is_some())
        {
            match tokio::time::timeout(wait, reply_rx.recv()).await {
                Ok(Some(v)) => answer = v,
                _ => {
                    return json_error(
                        StatusCode::BAD_GATEWAY,
                        "the session ended before answering",
                    );
                }
            }
        }
        (
            [(header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
            .into_response()
    };
    if let Some(id) = new_session
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        resp.headers_mut().insert(HEADER_SESSION_ID, v);
    }
    resp
}

async fn http_delete(State(front): State<Arc<HttpFront>>, headers: HeaderMap) -> Response {
    let grant = match grant_of(&front, &headers) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let Some(id) = headers.get(HEADER_SESSION_ID).and_then(|v| v.to_str().ok()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        );
    };
    // Dropping the session's sender ends its task once its calls in flight are answered.
    match front
        .sessions
        .lock()
        .await
        .by_id
        .remove(&format!("{grant}\u{0}{id}"))
    {
        Some(_) => StatusCode::OK.into_response(),
        None => json_error(StatusCode::NOT_FOUND, "Session not found"),
    }
}

/// An unguessable session-id suffix.
fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process and per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// The envelope-only parse finds the same request ids as the full parse it replaced, for
    /// requests, notifications, responses, `null` ids and methods, batches, duplicated ids and
    /// texts that are not JSON.
    #[test]
    fn request_ids_agree_with_the_full_parse() {
        for text in [
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":null}"#,
            r#"{"id":1,"id":2,"method":"ping"}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"},{"id":2,"result":1}]"#,
            r#" [1, {"id":4,"method":"c"}]"#,
            r#"[]"#,
            "not json",
        ] {
            assert_eq!(
                request_ids(text.as_bytes()),
                request_ids_lenient(text.as_bytes()),
                "{text}"
            );
        }
        assert_eq!(
            request_ids(br#"{"jsonrpc":"2.0","id":5,"method":"x"}"#).0,
            vec!["5".to_owned()]
        );
    }

    /// The byte check that spares a parse never says no when the text could hold the word.
    #[test]
    fn may_contain_is_never_wrong_about_a_word_that_is_there() {
        assert!(may_contain(br#"{"method":"initialize"}"#, b"initialize"));
        assert!(may_contain(
            br#"{"method":"\u0069nitialize"}"#,
            b"initialize"
        ));
        assert!(!may_contain(br#"{"method":"tools/call"}"#, b"initialize"));
        let _ = serde_json::from_str::<Value>(r#"{"method":"\u0069nitialize"}"#).unwrap();
    }
}
