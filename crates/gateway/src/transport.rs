//! Running sessions for real: one task per client session drives a [`SessionCore`] between the
//! client (this process's stdio, or HTTP requests) and its own upstream connection, with the
//! real clock ([`Clock`]). Time for the policy is the monotonic time since the gateway started
//! (scaled by `--time-scale`).
//!
//! - Timeouts: the task wakes at the core's next deadline and lets it answer late calls.
//! - Upstream crash: pending calls get an error result at once; a child upstream is restarted
//!   with backoff (100 ms doubling to 5 s) and re-initialized with the client's own
//!   `initialize`, so the session goes on. The old child is gone (waited for) before the new
//!   one starts: a session never runs two. A child that could not be run, or exited before it
//!   answered anything, is a failed start; after [`MAX_START_FAILURES`] in a row the command is
//!   left alone and every request gets the failure (its exit status, its last stderr line).
//! - Shutdown: the task stops reading the client, waits (bounded) for the calls in flight, and
//!   stops the upstream.
//! - A remote counter store (Redis): the core is synchronous, so a decision waits for the
//!   store's round trip. On a multi-thread runtime that wait runs under `block_in_place`, which
//!   hands this worker's other tasks (other sessions) to another thread first; the bounded
//!   store timeouts bound the wait (docs/PERFORMANCE.md, "Redis store").
//!
//! Bounds ([`TransportLimits`], docs/security.md, "Limits"): every queue between tasks holds at
//! most `queue` messages. A message that finds its queue full waits in the session task, and
//! while one waits the task reads nothing more from its client (nor from its upstream while
//! the client's queue is full): the client's reader blocks, so a stdio client that does not
//! read stdout stops being read, and an HTTP request waits to be queued. An HTTP request's
//! event stream and a session's GET stream are never waited for: one that is full is closed
//! (logged; the GET stream's closings are counted in `tollgate_get_streams_closed_total`).
//! The HTTP front ([`serve`]) bounds connections, header, body and idle times, live sessions
//! (idle ones expire) and, for a command upstream, live child processes.

mod listen;
mod serve;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;

pub use crate::clock::Clock;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tollgate_mcp::protocol::HEADER_SESSION_ID;
use tollgate_mcp::{ErrorCode, WireError, error_response};

use crate::core::{Out, SessionCore};
use crate::upstream::{Ended, FromUpstream, Upstream, UpstreamSpec};

pub use serve::{BodyTimedOut, serve, serve_tls};

/// How long a shutdown waits for calls in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const REINIT_PREFIX: &str = "tollgate-reinit-";

/// The bounds of the transports; each is a flag of `tollgate gateway` with this default
/// (docs/gateway.md; docs/security.md, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// The largest message read from a client or an upstream, in bytes
    /// (`--max-message-bytes`, 4 MiB): a longer one is thrown away as it is read.
    pub max_message_bytes: usize,
    /// Messages each queue between one session's tasks holds (`--queue-depth`, 64).
    pub queue: usize,
    /// HTTP: a request's headers must be complete within this of the connection's opening or
    /// of the first byte of its request (`--header-timeout`, 10 s).
    pub header_timeout: Duration,
    /// HTTP: a request's body must be complete within this of its headers (`--body-timeout`,
    /// 30 s).
    pub body_timeout: Duration,
    /// HTTP: a keep-alive connection with no request is closed after this
    /// (`--keep-alive-timeout`, 60 s).
    pub idle_timeout: Duration,
    /// HTTP: a connection whose client takes no byte of an answer for this long (a write that
    /// cannot go on: its socket's buffers are full) is closed (`--write-timeout`, 30 s).
    pub write_timeout: Duration,
    /// HTTP: open connections (`--max-connections`, 512); the next waits to be accepted.
    pub max_connections: usize,
    /// HTTP: live sessions (`--max-sessions`, 1024); past it `initialize` is refused (503).
    pub max_sessions: usize,
    /// HTTP: a session with no request in flight and no GET stream open for this long ends,
    /// as a DELETE would end it (`--session-idle-timeout`, 30 min).
    pub session_idle: Duration,
    /// HTTP with a command upstream: live child processes, one per session
    /// (`--max-upstream-processes`, 16); past it `initialize` is refused (503).
    pub max_upstream_processes: usize,
    /// HTTPS: a connection's TLS handshake must be complete within this of its opening, or the
    /// connection is closed and counted (`--tls-handshake-timeout`, 10 s).
    pub handshake_timeout: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_message_bytes: tollgate_mcp::Limits::default().max_bytes,
            queue: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_sessions: 1024,
            session_idle: Duration::from_secs(30 * 60),
            max_upstream_processes: 16,
            handshake_timeout: tollgate_mcp::tls::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// What a client sends a session task.
#[derive(Debug)]
pub enum ClientInput {
    /// One message.
    Message {
        bytes: Vec<u8>,
        /// For HTTP: where the answer goes (`None` means "nothing to answer": 202).
        /// Messages for this request: server-to-client messages sent while it is pending, then
        /// its answer; the channel closes after the answer (or at once, with nothing, for 202).
        reply: Option<Reply>,
        /// HTTP: the request's W3C trace context (`traceparent`, `tracestate` headers), which
        /// the spans of its requests continue unless a request carries its own in `_meta`.
        trace: Option<crate::telemetry::Carrier>,
    },
    /// A message over `max_message_bytes`, thrown away while it was read (stdio): `size`
    /// bytes. It is answered with the parse error an oversized message gets.
    TooLarge { size: usize },
}

/// Where an HTTP request's messages go (bounded: a full one is closed, never waited for).
pub type Reply = mpsc::Sender<Value>;

/// Where the session sends messages for the client that no request is waiting for (stdio
/// writes them; HTTP sends them on the session's GET stream). Bounded: when it is full the
/// session stops reading its client until there is room.
pub type ClientSink = mpsc::Sender<Value>;

struct Waiter {
    ids: Vec<String>,
    batch: bool,
    got: Vec<Value>,
    reply: Reply,
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
    #[serde(default, deserialize_with = "present")]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    error: Option<serde::de::IgnoredAny>,
}

/// A field that is present is `Some`, even when it is `null` (`"id": null` is an id here).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Whether `v` is an error (or a batch of errors) under `own` ids or none: the answer to a
/// message that carried those ids and no valid request id.
fn errors_for(v: &Value, own: &[Value]) -> bool {
    let items: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        m => vec![m],
    };
    !items.is_empty()
        && items.iter().all(|m| {
            m.get("error").is_some()
                && m.get("id")
                    .is_some_and(|id| id.is_null() || own.contains(id))
        })
}

/// Every id a client message carries (read leniently), whatever its kind.
fn message_ids(bytes: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => items.iter().filter_map(|m| m.get("id").cloned()).collect(),
        Ok(m) => m.get("id").cloned().into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether a request id is one JSON-RPC lets a request carry (and so its answer carries).
fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// The ids of the requests in a client message (a batch's, or the one).
fn request_ids(bytes: &[u8]) -> (Vec<String>, bool) {
    // Only a valid id (a string or an integer) is answered with itself: any other gets an
    // error without an id, which is not waited for under it.
    let one = |m: Envelope| m.method.and(m.id).filter(valid_id).map(|id| id.to_string());
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
    let one = |m: &Value| {
        m.get("method")
            .and(m.get("id"))
            .filter(|id| valid_id(id))
            .map(Value::to_string)
    };
    match &v {
        Value::Array(items) => (items.iter().filter_map(one).collect(), true),
        m => (one(m).into_iter().collect(), false),
    }
}

/// Whether an upstream message is the answer to the gateway's own re-`initialize` after a
/// restart: a response (a result or an error, no method) whose id is a string with the
/// gateway's prefix. A request or notification with such an id is the upstream's own and
/// goes to the core like any other (the core escapes client ids with a `tollgate-` prefix, so
/// no client request can carry it).
fn is_reinit_answer(bytes: &[u8]) -> bool {
    if !may_contain(bytes, REINIT_PREFIX.as_bytes()) {
        return false;
    }
    let Ok(m) = serde_json::from_slice::<Envelope>(bytes) else {
        return false;
    };
    m.method.is_none()
        && (m.result.is_some() || m.error.is_some())
        && m.id
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|id| id.starts_with(REINIT_PREFIX))
}

/// Waits until `shutdown` turns true (forever when its sender is gone without it).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// A child upstream that fails to start this many times in a row (it cannot be run, or it
/// exits before it has answered anything) is not started again: the session answers every
/// request with the failure (docs/gateway.md, "Failures"). A child that has answered and then
/// crashes does not count: it is restarted as often as it crashes.
pub const MAX_START_FAILURES: u32 = 3;

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client went away, or the gateway shut down.
    Closed,
    /// The upstream command never started: the last time it was started, it could not be
    /// run, or it exited before answering anything. The text says what happened and what to
    /// do.
    UpstreamNotStarted(String),
}

/// The starts of a child upstream that failed in a row, and what the last one said.
#[derive(Debug)]
struct Starts {
    failures: u32,
    backoff: Duration,
    last: Option<String>,
}

impl Starts {
    fn new() -> Starts {
        Starts {
            failures: 0,
            backoff: Duration::from_millis(100),
            last: None,
        }
    }

    /// Counts one failed start; says whether that was the last one allowed.
    fn failed(&mut self, why: String) -> bool {
        self.failures += 1;
        self.last = Some(if self.given_up() {
            format!(
                "{why}. Tollgate stopped restarting it after {MAX_START_FAILURES} failed starts: fix the command or its environment, then restart the gateway (or the client that runs it)"
            )
        } else {
            why
        });
        self.given_up()
    }

    fn given_up(&self) -> bool {
        self.failures >= MAX_START_FAILURES
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
    }
}

/// The upstream command as a person would type it, escaped and cut to a readable length.
fn command_line(spec: &UpstreamSpec) -> String {
    let UpstreamSpec::Command { program, args } = spec else {
        return String::new();
    };
    let mut line = tollgate_mcp::display::text(program).to_string();
    for a in args {
        line.push(' ');
        line.push_str(&tollgate_mcp::display::text(a).to_string());
    }
    if line.chars().count() > 120 {
        line = line.chars().take(119).collect::<String>() + "…";
    }
    line
}

/// Why a child could not be run at all, and what to do.
fn spawn_failed(spec: &UpstreamSpec, e: &std::io::Error) -> String {
    format!(
        "the upstream command `{}` could not be started: {e}; check that it is installed and on the gateway's PATH, or give its full path",
        command_line(spec)
    )
}

/// How a child ended, for a message: its exit status, and its last stderr line.
fn how_it_ended(ended: &Ended) -> (String, String) {
    let status = match ended.status {
        Some(s) => match s.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("was ended ({s})"),
        },
        None => "stopped".to_owned(),
    };
    let said = match ended.stderr.last() {
        Some(line) => format!(
            "its last stderr line: `{}`",
            tollgate_mcp::display::text(line)
        ),
        None => "it wrote nothing on stderr".to_owned(),
    };
    (status, said)
}

/// Why a child that never answered anything is gone, and what to do.
fn exited_early(spec: &UpstreamSpec, ended: &Ended) -> String {
    let (status, said) = how_it_ended(ended);
    format!(
        "the upstream command `{}` {status} before it answered anything; {said}. Run it by hand with the gateway's environment to see why (a server may need variables such as AWS_REGION)",
        command_line(spec),
    )
}

/// Starts a child upstream (or prepares an HTTP one), trying again after a pause while the
/// command cannot be run, until [`MAX_START_FAILURES`] starts in a row have failed: then
/// `None`.
async fn start_upstream(
    spec: &UpstreamSpec,
    limits: &TransportLimits,
    starts: &mut Starts,
) -> Option<Upstream> {
    // Bounded: each failure counts, and the count stops the loop.
    loop {
        match Upstream::connect(spec, limits.max_message_bytes, limits.queue) {
            Ok(u) => return Some(u),
            Err(e) => {
                tracing::error!("cannot start the upstream: {e}");
                if starts.failed(spawn_failed(spec, &e)) {
                    return None;
                }
                starts.pause().await;
            }
        }
    }
}

/// Whether an upstream message is an answer (a result or an error): a child that sent one has
/// started.
fn is_answer(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => items
            .iter()
            .any(|m| m.get("result").is_some() || m.get("error").is_some()),
        Ok(m) => m.get("result").is_some() || m.get("error").is_some(),
        Err(_) => false,
    }
}

/// Drives one session until the client goes away or `shutdown` turns true. A child upstream
/// that never starts ([`MAX_START_FAILURES`]) is not started again: every request of the
/// session gets the failure as its error until the client goes away, and the session ends as
/// [`SessionEnd::UpstreamNotStarted`].
pub async fn run_session(
    core: SessionCore,
    spec: UpstreamSpec,
    client: mpsc::Receiver<ClientInput>,
    sink: ClientSink,
    clock: Clock,
    limits: TransportLimits,
    shutdown: watch::Receiver<bool>,
) -> SessionEnd {
    drive(core, spec, client, sink, clock, limits, shutdown, true).await
}

/// [`run_session`]; without `linger`, a session whose upstream never starts answers what its
/// client has already sent and ends (the HTTP front: the client initializes a new session).
#[expect(
    clippy::too_many_arguments,
    reason = "run_session's arguments and one switch"
)]
async fn drive(
    mut core: SessionCore,
    spec: UpstreamSpec,
    mut client: mpsc::Receiver<ClientInput>,
    sink: ClientSink,
    clock: Clock,
    limits: TransportLimits,
    mut shutdown: watch::Receiver<bool>,
    linger: bool,
) -> SessionEnd {
    let now = || clock.now();
    let mut starts = Starts::new();
    let mut upstream = Box::pin(start_upstream(&spec, &limits, &mut starts)).await;
    // Whether the running child has answered anything: a child that exits before it has
    // counts as a failed start.
    let mut served = false;
    if starts.given_up() {
        give_up(&starts, linger, &mut client);
    }
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut initialize: Option<Value> = None;
    let mut restarts = 0u64;
    let mut closing = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut policy_changes = core.policy_changes();
    let mut reloads_open = true;
    let approvals = core.approval_waker();
    // Messages that found their queue full, oldest first. While any waits, the client is not
    // read (nor the upstream while messages for the client wait), so these hold at most what
    // one step produced, plus the answers of calls that time out meanwhile.
    let mut to_client: VecDeque<Value> = VecDeque::new();
    let mut to_upstream: VecDeque<Value> = VecDeque::new();
    loop {
        if closing && !core.has_pending() && to_client.is_empty() {
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
        let upstream_tx = upstream.as_ref().map(Upstream::sender);
        let from_upstream = async {
            match upstream.as_mut() {
                Some(u) => u.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let upstream_room = async {
            match upstream_tx {
                Some(tx) => tx.reserve_owned().await.ok(),
                None => std::future::pending().await,
            }
        };
        let read_client = !closing && to_client.is_empty() && to_upstream.is_empty();
        let read_upstream = to_client.is_empty() && to_upstream.len() < limits.queue;
        let outs: Vec<Out> = tokio::select! {
            input = client.recv(), if read_client => match input {
                None => {
                    closing = true;
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                    Vec::new()
                }
                Some(ClientInput::TooLarge { size }) => {
                    // Thrown away while it was read: the answer any oversized message gets.
                    let why = WireError::TooLarge { size, limit: limits.max_message_bytes };
                    vec![Out::Client(error_response(None, ErrorCode::ParseError, &why.to_string(), None))]
                }
                Some(ClientInput::Message { bytes, reply, trace }) => {
                    if may_contain(&bytes, b"initialize")
                        && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
                        && v.get("method").and_then(Value::as_str) == Some("initialize")
                    {
                        initialize = Some(v);
                    }
                    let (ids, batch) = request_ids(&bytes);
                    let mut outs = off_worker(core.may_block(), || {
                        core.set_trace_header(trace);
                        let outs = core.from_client(&bytes, now());
                        core.set_trace_header(None);
                        outs
                    });
                    if let Some(reply) = reply {
                        // An error without an id, made now, refuses this very message whole
                        // (it could not be read): it is this request's answer, and no other's.
                        let whole = outs.iter().position(|o| {
                            matches!(o, Out::Client(v) if v.get("error").is_some() && v.get("id").is_some_and(Value::is_null))
                        });
                        if let Some(i) = whole {
                            if let Out::Client(v) = outs.remove(i) {
                                let _ = reply.try_send(v);
                            }
                        } else if ids.is_empty() {
                            // Notifications and responses: nothing to wait for, unless the
                            // message was refused outright (a parse error answers it).
                            // Taken out: an error under one of this message's own ids is its
                            // answer and no one else's. (Other answers made now, such as the
                            // refusal of a held call a client's elicitation answer denied, go
                            // to the requests that wait for them.)
                            let own = message_ids(&bytes);
                            let direct = outs.iter().position(|o| {
                                matches!(o, Out::Client(v) if errors_for(v, &own))
                            });
                            if let Some(Out::Client(v)) = direct.map(|i| outs.remove(i)) {
                                let _ = reply.try_send(v);
                            }
                        } else {
                            // Requests whose client went away need no answer any more.
                            waiters.retain(|w| !w.reply.is_closed());
                            let mine = ids.clone();
                            waiters.push(Waiter { ids, batch, got: Vec::new(), reply });
                            // Answers the session made now, under this message's ids, are this
                            // message's: an older request that reuses one of its ids (a client
                            // breaking the rule of unique ids) must not take them.
                            let mut rest = Vec::with_capacity(outs.len());
                            for o in outs {
                                match o {
                                    Out::Client(v) if answers_only(&v, &mine) && waiters.last().is_some_and(|w| w.ids == mine) => {
                                        let last = waiters.len() - 1;
                                        deliver_to(last, v, &mut waiters);
                                    }
                                    other => rest.push(other),
                                }
                            }
                            outs = rest;
                        }
                    }
                    outs
                }
            },
            msg = from_upstream, if read_upstream => match msg {
                Some(FromUpstream::Message(bytes)) => {
                    if !served && is_answer(&bytes) {
                        served = true;
                        starts = Starts::new();
                    }
                    if is_reinit_answer(&bytes) {
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
                    // The old child is waited for before a new one starts: never two.
                    // Boxed, as are the other rare waits below: the task's future (kept per
                    // session) holds only what the loop's common path needs.
                    let ended = match upstream.take() {
                        Some(u) => Box::pin(u.shutdown()).await,
                        None => Ended::default(),
                    };
                    let command = matches!(spec, UpstreamSpec::Command { .. });
                    let why = if command && !served {
                        starts.failed(exited_early(&spec, &ended));
                        starts.last.clone().unwrap_or(why)
                    } else if command {
                        let (status, said) = how_it_ended(&ended);
                        format!("{why}: it {status}; {said}")
                    } else {
                        why
                    };
                    tracing::warn!("upstream closed: {why}");
                    // Counting the calls' errors may ask the counter store (Redis).
                    let outs = off_worker(core.may_block(), || core.upstream_closed(now(), &why));
                    to_upstream.clear();
                    served = false;
                    if command && !closing && !starts.given_up() {
                        Box::pin(starts.pause()).await;
                        restarts += 1;
                        upstream = Box::pin(start_upstream(&spec, &limits, &mut starts)).await;
                        if let (Some(_), Some(init)) = (&upstream, &initialize) {
                            let mut again = init.clone();
                            again["id"] = json!(format!("{REINIT_PREFIX}{restarts}"));
                            to_upstream.push_back(again);
                            to_upstream.push_back(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
                        }
                    }
                    if command && starts.given_up() {
                        give_up(&starts, linger, &mut client);
                    }
                    outs
                }
            },
            permit = sink.reserve(), if !to_client.is_empty() => {
                match permit {
                    Ok(permit) => {
                        if let Some(v) = to_client.pop_front() {
                            permit.send(v);
                        }
                        // Whatever else fits now goes too.
                        while let Some(v) = to_client.pop_front() {
                            match sink.try_send(v) {
                                Ok(()) => {}
                                Err(TrySendError::Full(v)) => {
                                    to_client.push_front(v);
                                    break;
                                }
                                Err(TrySendError::Closed(_)) => to_client.clear(),
                            }
                        }
                    }
                    // The client is gone: nobody reads these.
                    Err(_) => to_client.clear(),
                }
                Vec::new()
            },
            permit = upstream_room, if !to_upstream.is_empty() => {
                match (permit, upstream.as_ref()) {
                    (Some(permit), Some(u)) => {
                        if let Some(v) = to_upstream.pop_front() {
                            permit.send(v);
                        }
                        while let Some(v) = to_upstream.pop_front() {
                            match u.try_send(v) {
                                Ok(()) => {}
                                Err(TrySendError::Full(v)) => {
                                    to_upstream.push_front(v);
                                    break;
                                }
                                Err(TrySendError::Closed(_)) => to_upstream.clear(),
                            }
                        }
                    }
                    // The upstream's writer is gone; its reader tells the session soon.
                    _ => to_upstream.clear(),
                }
                Vec::new()
            },
            () = timer => {
                if drain_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                // A timeout's error is counted, an approved call's limits taken: both may ask
                // the counter store (Redis).
                off_worker(core.may_block(), || core.tick(now()))
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
            () = approvals.notified() => off_worker(core.may_block(), || core.tick(now())),
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
                    if !to_upstream.is_empty() {
                        to_upstream.push_back(v);
                        continue;
                    }
                    let sent = match upstream.as_ref().map(|u| u.try_send(v)) {
                        Some(Ok(())) => true,
                        Some(Err(TrySendError::Full(v))) => {
                            to_upstream.push_back(v);
                            true
                        }
                        Some(Err(TrySendError::Closed(_))) | None => false,
                    };
                    if !sent {
                        let why = match &starts.last {
                            Some(why) if starts.given_up() => why.as_str(),
                            _ => "the upstream is not running",
                        };
                        for o in core.upstream_closed(now(), why) {
                            if let Out::Client(c) = o {
                                deliver(c, &mut waiters, &sink, &mut to_client);
                            }
                        }
                    }
                }
                Out::Client(v) => deliver(v, &mut waiters, &sink, &mut to_client),
            }
        }
    }
    // Calls still held for approval get an answer: nobody will decide them in this session.
    for out in core.release_held(now(), "the gateway's session ended") {
        if let Out::Client(v) = out {
            deliver(v, &mut waiters, &sink, &mut to_client);
        }
    }
    // What the client's queue could not take yet, until the drain deadline: a client that
    // does not read loses the rest.
    let until = drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + DRAIN_TIMEOUT);
    let _ = Box::pin(tokio::time::timeout_at(until, async {
        while let Some(v) = to_client.pop_front() {
            if sink.send(v).await.is_err() {
                break;
            }
        }
    }))
    .await;
    if let Some(u) = upstream.take() {
        Box::pin(u.shutdown()).await;
    }
    match starts.last {
        Some(why) if starts.failures > 0 => SessionEnd::UpstreamNotStarted(why),
        _ => SessionEnd::Closed,
    }
}

/// Says (once) that the session's upstream never started; without `linger`, stops taking
/// client messages: the ones already sent are answered with the failure, then the session
/// ends.
fn give_up(starts: &Starts, linger: bool, client: &mut mpsc::Receiver<ClientInput>) {
    let why = starts
        .last
        .as_deref()
        .unwrap_or("the upstream never started");
    tracing::error!("{why}");
    if linger {
        tracing::error!("every request of this session gets that error until its client leaves");
    } else {
        client.close();
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

/// Hands a message to the HTTP request waiting for it, or to the sink (or, when the sink's
/// queue is full, to `to_client`, which the session flushes before it reads its client again).
/// An HTTP request's stream is never waited for: one that is full is closed.
/// Whether `v` is an answer (or a batch of answers) whose ids are all among `ids` (or `null`).
fn answers_only(v: &Value, ids: &[String]) -> bool {
    let items: Vec<&Value> = match v {
        Value::Array(items) => items.iter().collect(),
        m => vec![m],
    };
    // An error without an id made now (an item whose id was not valid, or that is not a
    // message at all) answers this message too.
    let mine = |m: &Value| m.get("id").is_some_and(|id| ids.contains(&id.to_string()));
    !items.is_empty()
        && items.iter().all(|m| {
            (m.get("result").is_some() || m.get("error").is_some())
                && (mine(m) || m.get("id").is_some_and(Value::is_null))
        })
}

/// Gives an answer to waiter `i`; the waiter's reply goes out once every id it waits for is
/// answered (a single request: at once).
fn deliver_to(i: usize, v: Value, waiters: &mut Vec<Waiter>) {
    let Some(w) = waiters.get_mut(i) else {
        return;
    };
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
        if let Err(TrySendError::Full(_)) = w.reply.try_send(answer) {
            tracing::warn!(
                "dropped the answer of an HTTP request: its client left {} messages of its event stream unread",
                w.reply.max_capacity()
            );
        }
    }
}

fn deliver(
    v: Value,
    waiters: &mut Vec<Waiter>,
    sink: &ClientSink,
    to_client: &mut VecDeque<Value>,
) {
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
    // A waiter takes an answer under an id it waits for and has no answer for yet (a client
    // that reused an id in flight has two waiters for it: the first answer goes to the first).
    let open_for = |w: &Waiter, id: &String| {
        w.ids.contains(id)
            && !w
                .got
                .iter()
                .filter_map(|m| m.get("id"))
                .map(Value::to_string)
                .any(|g| g == *id)
    };
    // A batch's answers come together: they go to the waiter open for all of their ids (two
    // batches may share one reused id, never all of them), else to one open for any.
    let known: Vec<&String> = ids.iter().filter(|id| *id != "null").collect();
    let whole = (v.is_array() && !known.is_empty())
        .then(|| {
            waiters
                .iter()
                .position(|w| known.iter().all(|id| open_for(w, id)))
        })
        .flatten();
    if is_response
        && let Some(i) = whole.or_else(|| {
            waiters.iter().position(|w| {
                ids.iter().any(|id| open_for(w, id)) || (ids == ["null"] && !w.ids.is_empty())
            })
        })
    {
        deliver_to(i, v, waiters);
        return;
    }
    // A server-to-client request or notification: it goes on the stream of a request in
    // flight (the oldest), as Streamable HTTP carries them; with none, to the sink.
    if !is_response && let Some(w) = waiters.first() {
        if let Err(TrySendError::Full(_)) = w.reply.try_send(v) {
            // Its client does not read: the stream closes (the request's answer with it).
            let w = waiters.remove(0);
            tracing::warn!(
                "closed the event stream of an HTTP request: its client left {} messages unread",
                w.reply.max_capacity()
            );
        }
        return;
    }
    if !to_client.is_empty() {
        to_client.push_back(v);
        return;
    }
    match sink.try_send(v) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(v)) => to_client.push_back(v),
    }
}

/// The transports' own metrics, served at `/metrics` after the gateway's.
#[derive(Debug)]
pub struct TransportMetrics {
    registry: Registry,
    /// Open HTTP connections (set when the metrics are read).
    connections: Gauge,
    /// Live HTTP sessions (set when the metrics are read).
    sessions: Gauge,
    /// Live child processes of a command upstream, one per HTTP session (set when read).
    upstream_processes: Gauge,
    /// Sessions ended because they were idle for `--session-idle-timeout`.
    pub sessions_expired: Counter,
    /// `initialize` refused because `--max-sessions` sessions were live.
    pub sessions_refused: Counter,
    /// `initialize` refused because `--max-upstream-processes` children were running.
    pub upstream_processes_refused: Counter,
    /// GET streams closed because their client left `--queue-depth` messages unread.
    pub get_streams_closed: Counter,
    /// Requests refused for their credentials, by reason (docs/auth.md).
    pub auth_refused: Family<Vec<(String, String)>, Counter>,
    /// HTTPS connections closed because their TLS handshake took `--tls-handshake-timeout`.
    pub tls_handshakes_timed_out: Counter,
    /// HTTPS connections closed because their TLS handshake failed (not TLS, no common
    /// version or cipher, a client that refused the certificate).
    pub tls_handshakes_failed: Counter,
}

impl Default for TransportMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let connections = Gauge::default();
        registry.register(
            "http_connections",
            "Open HTTP connections (at most --max-connections)",
            connections.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "http_sessions",
            "Live HTTP sessions (at most --max-sessions)",
            sessions.clone(),
        );
        let upstream_processes = Gauge::default();
        registry.register(
            "upstream_processes",
            "Live child processes of a command upstream for HTTP sessions (at most --max-upstream-processes)",
            upstream_processes.clone(),
        );
        let sessions_expired = Counter::default();
        registry.register(
            "http_sessions_expired",
            "HTTP sessions ended after --session-idle-timeout without a request",
            sessions_expired.clone(),
        );
        let sessions_refused = Counter::default();
        registry.register(
            "http_sessions_refused",
            "initialize refused: --max-sessions sessions were live",
            sessions_refused.clone(),
        );
        let upstream_processes_refused = Counter::default();
        registry.register(
            "upstream_processes_refused",
            "initialize refused: --max-upstream-processes child processes were running",
            upstream_processes_refused.clone(),
        );
        let get_streams_closed = Counter::default();
        registry.register(
            "get_streams_closed",
            "GET /mcp streams closed because their client left --queue-depth messages unread",
            get_streams_closed.clone(),
        );
        let auth_refused = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "http_auth_refused",
            "HTTP requests refused for their bearer token (missing, invalid, expired, no grant...), by reason",
            auth_refused.clone(),
        );
        let tls_handshakes_timed_out = Counter::default();
        registry.register(
            "tls_handshakes_timed_out",
            "HTTPS connections closed: no complete TLS handshake within --tls-handshake-timeout",
            tls_handshakes_timed_out.clone(),
        );
        let tls_handshakes_failed = Counter::default();
        registry.register(
            "tls_handshakes_failed",
            "HTTPS connections closed: their TLS handshake failed",
            tls_handshakes_failed.clone(),
        );
        TransportMetrics {
            auth_refused,
            registry,
            connections,
            sessions,
            upstream_processes,
            sessions_expired,
            sessions_refused,
            upstream_processes_refused,
            get_streams_closed,
            tls_handshakes_timed_out,
            tls_handshakes_failed,
        }
    }
}

/// The sessions of an HTTP gateway.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Sessions opened by `initialize`, by grant and `Mcp-Session-Id`.
    by_id: HashMap<(String, String), SessionHandle>,
    /// The stateless protocol's one session per grant, kept apart: no `Mcp-Session-Id`
    /// (`stateless` included) addresses it.
    stateless: HashMap<String, SessionHandle>,
}

impl Sessions {
    /// Live sessions, stateful and stateless.
    pub fn len(&self) -> usize {
        self.by_id.len() + self.stateless.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, grant: &str, id: &str) -> Option<&SessionHandle> {
        self.by_id.get(&(grant.to_owned(), id.to_owned()))
    }

    /// Ends a session (DELETE): dropping its handle closes its queue, so its task answers its
    /// calls in flight (bounded), withdraws its held calls and stops its upstream.
    fn remove(&mut self, grant: &str, id: &str) -> Option<SessionHandle> {
        self.by_id.remove(&(grant.to_owned(), id.to_owned()))
    }

    /// Takes out the sessions idle for `idle` (no request in flight, no GET stream open) and
    /// those whose task ended; they end as [`Sessions::remove`] ends one.
    fn expire(&mut self, idle: Duration) -> Vec<SessionHandle> {
        let mut gone = take_expired(&mut self.by_id, idle);
        gone.extend(take_expired(&mut self.stateless, idle));
        gone
    }
}

fn take_expired<K: Clone + Eq + std::hash::Hash>(
    map: &mut HashMap<K, SessionHandle>,
    idle: Duration,
) -> Vec<SessionHandle> {
    let keys: Vec<K> = map
        .iter()
        .filter(|(_, h)| h.activity.idle_for(idle) || h.tx.is_closed())
        .map(|(k, _)| k.clone())
        .collect();
    keys.iter().filter_map(|k| map.remove(k)).collect()
}

/// One HTTP session: where its requests go, its open GET stream (if any) for server-to-client
/// messages sent while no request of it is in flight, and when it was last used.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    tx: mpsc::Sender<ClientInput>,
    stream: Arc<Mutex<Option<GetStream>>>,
    activity: Arc<Activity>,
}

/// A session's open GET stream: a bounded queue of encoded events, and the signal that closes
/// it when its client left the queue full. For the stateless protocol, the stream of a
/// `subscriptions/listen` request (its id, and whether it asked for `toolsListChanged`) takes
/// its place ([`listen`]).
#[derive(Debug)]
struct GetStream {
    tx: mpsc::Sender<Bytes>,
    overflowed: Arc<Notify>,
    listen: Option<(Value, bool)>,
}

/// When a session was last used, and how many of its requests and streams are open.
#[derive(Debug)]
struct Activity {
    started: tokio::time::Instant,
    /// Milliseconds since `started` when a request or stream of it last began or ended.
    last: AtomicU64,
    open: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
            open: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle_for(&self, idle: Duration) -> bool {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        self.open.load(Ordering::Acquire) == 0
            && self
                .now_ms()
                .saturating_sub(self.last.load(Ordering::Relaxed))
                >= idle_ms
    }
}

/// A request or stream of a session in progress: the session is not idle while one is held.
#[derive(Debug)]
struct InUse(Arc<Activity>);

impl InUse {
    fn new(activity: &Arc<Activity>) -> InUse {
        activity.open.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InUse(Arc::clone(activity))
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who may use the HTTP front: the agents' tokens (none: everyone gets `default_grant`) and
/// the approvers'.
#[derive(Debug, Default)]
pub struct Auth {
    pub tokens: Option<crate::tokens::Tokens>,
    /// `--admin-tokens`: the approvers of the admin API (none: the admin API is off).
    pub admin_tokens: Option<crate::tokens::Tokens>,
    pub default_grant: String,
    /// `--oauth-issuer` and its flags: JWT access tokens beside (or instead of) `tokens`.
    pub oauth: Option<Arc<crate::oauth::OAuth>>,
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
    /// The OAuth resource server (docs/auth.md), if configured.
    pub oauth: Option<Arc<crate::oauth::OAuth>>,
    /// How many refused tokens may still be audited this second.
    pub auth_refusals: crate::oauth::http::RefusalBudget,
    pub sessions: tokio::sync::Mutex<Sessions>,
    pub clock: Clock,
    pub limits: TransportLimits,
    pub shutdown: watch::Receiver<bool>,
    pub next: AtomicU64,
    /// The ids the stateless protocol's requests take inside their grant's shared session
    /// (see [`StatelessIds`]).
    next_stateless_id: AtomicU64,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    /// One permit per live child process of a command upstream (one per session).
    upstream_processes: Arc<Semaphore>,
    pub metrics: TransportMetrics,
    /// The browser origins let in besides this machine's own (`--allow-origin`).
    pub allowed_origins: AllowedOrigins,
}

impl HttpFront {
    pub fn new(
        gateway: Arc<crate::core::Gateway>,
        spec: UpstreamSpec,
        auth: Auth,
        clock: Clock,
        limits: TransportLimits,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<HttpFront> {
        HttpFront::with_origins(
            gateway,
            spec,
            auth,
            clock,
            limits,
            shutdown,
            AllowedOrigins::default(),
        )
    }

    /// [`HttpFront::new`], letting in the pages of `origins` too (`--allow-origin`).
    pub fn with_origins(
        gateway: Arc<crate::core::Gateway>,
        spec: UpstreamSpec,
        auth: Auth,
        clock: Clock,
        limits: TransportLimits,
        shutdown: watch::Receiver<bool>,
        allowed_origins: AllowedOrigins,
    ) -> Arc<HttpFront> {
        Arc::new(HttpFront {
            gateway,
            spec,
            tokens: auth.tokens,
            admin_tokens: auth.admin_tokens,
            default_grant: auth.default_grant,
            oauth: auth.oauth,
            auth_refusals: crate::oauth::http::RefusalBudget::default(),
            sessions: tokio::sync::Mutex::new(Sessions::default()),
            clock,
            limits,
            shutdown,
            next: AtomicU64::new(0),
            next_stateless_id: AtomicU64::new(1),
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            upstream_processes: Arc::new(Semaphore::new(limits.max_upstream_processes.max(1))),
            metrics: TransportMetrics::default(),
            allowed_origins,
        })
    }

    /// The gateway's metrics and the transports', in one OpenMetrics text.
    async fn encode_metrics(&self) -> String {
        let live = |max: usize, sem: &Semaphore| {
            i64::try_from(max.max(1).saturating_sub(sem.available_permits())).unwrap_or(i64::MAX)
        };
        let m = &self.metrics;
        m.connections
            .set(live(self.limits.max_connections, &self.connections));
        m.upstream_processes.set(live(
            self.limits.max_upstream_processes,
            &self.upstream_processes,
        ));
        let sessions = self.sessions.lock().await.len();
        m.sessions.set(i64::try_from(sessions).unwrap_or(i64::MAX));
        let mut text = self.gateway.metrics.encode();
        // One exposition: the gateway's families, then ours, then one `# EOF`.
        if let Some(body) = text.strip_suffix("# EOF\n") {
            text.truncate(body.len());
        }
        if prometheus_client::encoding::text::encode(&mut text, &m.registry).is_err() {
            text.push_str("# EOF\n");
        }
        text
    }
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
    rpc_error(status, None, ErrorCode::InvalidRequest, message)
}

/// A JSON-RPC error answered with an HTTP status.
fn rpc_error(status: StatusCode, id: Option<&Value>, code: ErrorCode, message: &str) -> Response {
    let body = error_response(id, code, message, None);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// 503 for an `initialize` past a capacity limit: a JSON-RPC error answering the request (its
/// id when it is one message), naming the limit and its flag, with `Retry-After`.
fn at_capacity(body: &[u8], message: &str) -> Box<Response> {
    let id = serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|m| m.id);
    let mut r = rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        id.as_ref(),
        ErrorCode::InternalError,
        message,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    Box::new(r)
}

/// The gateway's Streamable HTTP front at `/mcp`, with `/healthz` (the process answers),
/// `/readyz` (it takes new sessions: 503 once a shutdown has begun) and `/metrics`
/// (Prometheus), none of which needs a token (bind the listener where only operators reach
/// it), and the admin API under `/admin` with its console at `/ui` ([`crate::admin`]).
/// [`serve`] serves it with the front's connection limits.
pub fn http_router(front: Arc<HttpFront>) -> Router {
    let max_body = front.limits.max_message_bytes;
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
                    front.encode_metrics().await,
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
        .merge(crate::oauth::http::router())
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(front)
}

/// The grant of a request: from its bearer token when tokens are configured: a token of the
/// `--tokens` file, else (with OAuth) a JWT access token (docs/auth.md).
async fn grant_of(front: &HttpFront, headers: &HeaderMap) -> Result<String, Box<Response>> {
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
    if let (Some(tokens), Some(t)) = (&front.tokens, presented)
        && let Some(grant) = tokens.lookup(t)
    {
        return Ok(grant.to_owned());
    }
    if let Some(oauth) = &front.oauth {
        let checked = match presented {
            Some(t) => oauth
                .validate(t, crate::oauth::http::unix_now())
                .await
                .map(|p| p.grant),
            None => Err(crate::oauth::AuthFailure::Missing),
        };
        return checked.map_err(|failure| {
            crate::oauth::http::record(front, &failure);
            Box::new(crate::oauth::http::refusal(front, headers, &failure))
        });
    }
    if front.tokens.is_none() {
        return Ok(front.default_grant.clone());
    }
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: present a valid bearer token (Authorization: Bearer TOKEN)",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Err(Box::new(r))
}

/// The browser origins whose pages may reach `/mcp` besides this machine's own
/// (`--allow-origin`; docs/security.md, "Origin"). A request without `Origin` (not from a
/// browser) is always let in; one from `localhost`, 127.0.0.0/8 or `[::1]` too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// Exact origins, as a browser serializes them (`https://app.example.com`, the scheme and
    /// host lowercased, no default port).
    exact: Vec<String>,
    /// `*`: every origin (only with bearer tokens).
    any: bool,
}

impl AllowedOrigins {
    /// Reads `--allow-origin` values: exact origins (`scheme://host[:port]`, http or https, no
    /// path, no userinfo), or `*`, which turns the check off and is refused unless every
    /// request must carry a bearer token (`with_tokens`): without one, any web page the user
    /// opens could call the gateway's tools through their browser (DNS rebinding).
    pub fn parse(values: &[String], with_tokens: bool) -> Result<AllowedOrigins, String> {
        let mut allowed = AllowedOrigins::default();
        for value in values {
            let value = value.trim();
            if value == "*" {
                if !with_tokens {
                    return Err("`--allow-origin *` lets every web page the user opens reach the gateway through their browser (DNS rebinding), and without `--tokens` nothing else stops it: name the origins (`--allow-origin https://app.example.com`), or require bearer tokens with `--tokens FILE`".to_owned());
                }
                allowed.any = true;
                continue;
            }
            match serialize_origin(value) {
                Some(origin) => allowed.exact.push(origin),
                None => {
                    return Err(format!(
                        "`--allow-origin {}` is not an origin: write `scheme://host[:port]` as a browser sends it, e.g. `https://app.example.com` or `http://192.168.1.5:8080` (http or https, no path), or `*`",
                        tollgate_mcp::display::text(value)
                    ));
                }
            }
        }
        allowed.exact.sort_unstable();
        allowed.exact.dedup();
        Ok(allowed)
    }

    /// Whether a request with this `Origin` header (`None`: no header) may go on.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => {
                self.any
                    || tollgate_mcp::http::origin_is_local(Some(o))
                    || serialize_origin(o).is_some_and(|o| self.exact.contains(&o))
            }
        }
    }
}

/// An origin as browsers serialize it (RFC 6454): `scheme://host[:port]`, lowercased, without
/// the scheme's default port; `None` for anything else (a path, userinfo, a query, `null`).
fn serialize_origin(text: &str) -> Option<String> {
    let url = reqwest::Url::parse(text).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && !text.trim_end_matches('/').ends_with(':');
    let origin = url.origin();
    (plain && origin.is_tuple()).then(|| origin.ascii_serialization())
}

/// The `Origin` check every `/mcp` request passes first (DNS rebinding).
fn foreign_origin(front: &HttpFront, headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN).map(|o| o.to_str().ok());
    // A header that is not text is not a local origin either.
    let allowed = match origin {
        None => true,
        Some(o) => o.is_some_and(|o| front.allowed_origins.allows(Some(o))),
    };
    (!allowed).then(|| {
        let shown = origin
            .flatten()
            .map(|o| format!("`{}` ", tollgate_mcp::display::text(o)))
            .unwrap_or_default();
        tracing::warn!("refused a request from the web page origin {shown}(not local, not --allow-origin)");
        json_error(
            StatusCode::FORBIDDEN,
            &format!(
                "Forbidden: Origin {shown}is not a local address nor one the gateway allows: a web page of another site may not reach it (DNS rebinding); its operator can let a site's pages in with `--allow-origin ORIGIN`"
            ),
        )
    })
}

/// A new session's task, with its upstream permit (a command upstream's child process), if
/// any, held for as long as the task runs.
fn spawn_session(
    front: &Arc<HttpFront>,
    grant: &str,
    session: &str,
    upstream_permit: Option<OwnedSemaphorePermit>,
) -> SessionHandle {
    let queue = front.limits.queue.max(1);
    let (tx, rx) = mpsc::channel(queue);
    let (sink, mut unsolicited) = mpsc::channel::<Value>(queue);
    let core = front.gateway.session(grant, session);
    // Boxed: a future awaited inside the block would otherwise be laid out twice in it (as
    // the captured value and as the value awaited), doubling the memory of every session.
    let task = Box::pin(drive(
        core,
        front.spec.clone(),
        rx,
        sink,
        front.clock,
        front.limits,
        front.shutdown.clone(),
        false,
    ));
    let (owner, key) = (Arc::clone(front), (grant.to_owned(), session.to_owned()));
    tokio::spawn(async move {
        let end = task.await;
        // The session's child (if any) is gone: its slot is free.
        drop(upstream_permit);
        // A session whose upstream never started has answered what it was sent: it is gone
        // (404), and its client initializes a new one, which tries the command again.
        if matches!(end, SessionEnd::UpstreamNotStarted(_)) {
            let gone = owner.sessions.lock().await.remove(&key.0, &key.1);
            drop(gone);
        }
    });
    let stream: Arc<Mutex<Option<GetStream>>> = Arc::default();
    let slot = Arc::clone(&stream);
    let closed = front.metrics.get_streams_closed.clone();
    let id = session.to_owned();
    tokio::spawn(async move {
        // Server-to-client messages with no request in flight go on the session's GET stream;
        // without one, no stream can carry them (logged). A stream whose client left its queue
        // full is closed: the client reconnects.
        while let Some(v) = unsolicited.recv().await {
            // A response no request waits for any more (its client gave up): a GET stream
            // carries requests and notifications only.
            if v.get("method").is_none() {
                // Logged by id only: an answer can carry what the tool returned.
                tracing::debug!("dropped an answer whose request is gone (id {})", v["id"]);
                continue;
            }
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(get) = slot.as_ref() else {
                tracing::debug!(
                    "dropped a server-to-client `{}` (no GET stream open)",
                    tollgate_mcp::display::text(v["method"].as_str().unwrap_or_default())
                );
                continue;
            };
            let v = match &get.listen {
                None => v,
                Some((id, tools)) => match listen::on_stream(id, *tools, &v) {
                    Some(v) => v,
                    None => continue,
                },
            };
            let event = Bytes::from(tollgate_mcp::sse::encode_event(&v.to_string(), None));
            match get.tx.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    if let Some(get) = slot.take() {
                        get.overflowed.notify_one();
                    }
                    closed.inc();
                    tracing::warn!(
                        "closed the GET stream of session {id}: its client left {queue} messages unread (--queue-depth); it may open it again"
                    );
                }
                Err(TrySendError::Closed(_)) => {
                    *slot = None;
                    tracing::debug!(
                        "dropped a server-to-client message (the GET stream closed): {v}"
                    );
                }
            }
        }
    });
    SessionHandle {
        tx,
        stream,
        activity: Arc::new(Activity::new()),
    }
}

/// Opens a session for `initialize` (or the stateless protocol's per-grant session) within
/// the limits: live sessions, and child processes for a command upstream.
fn open_session(
    front: &Arc<HttpFront>,
    sessions: &Sessions,
    grant: &str,
    id: &str,
    body: &[u8],
) -> Result<SessionHandle, Box<Response>> {
    let limits = &front.limits;
    if sessions.len() >= limits.max_sessions {
        front.metrics.sessions_refused.inc();
        tracing::warn!(
            "refused a new session: {} sessions are live (--max-sessions)",
            limits.max_sessions
        );
        return Err(at_capacity(
            body,
            &format!(
                "the gateway has {} live sessions, its limit (--max-sessions): end a session you no longer use (DELETE /mcp) or retry later",
                limits.max_sessions
            ),
        ));
    }
    let permit = match &front.spec {
        UpstreamSpec::Command { .. } | UpstreamSpec::Several(_) => {
            match Arc::clone(&front.upstream_processes).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    front.metrics.upstream_processes_refused.inc();
                    tracing::warn!(
                        "refused a new session: {} upstream processes are running (--max-upstream-processes)",
                        limits.max_upstream_processes
                    );
                    return Err(at_capacity(
                        body,
                        &format!(
                            "the gateway runs {} upstream processes, one per session, its limit (--max-upstream-processes): end a session you no longer use (DELETE /mcp) or retry later",
                            limits.max_upstream_processes
                        ),
                    ));
                }
            }
        }
        UpstreamSpec::Url { .. } => None,
    };
    Ok(spawn_session(front, grant, id, permit))
}

/// Ends the sessions idle for `--session-idle-timeout`, every so often, until shutdown: as a
/// DELETE ends one (held calls withdrawn, calls in flight answered, the upstream stopped).
pub(crate) async fn expire_idle_sessions(front: Arc<HttpFront>) {
    let idle = front.limits.session_idle;
    let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut shutdown = front.shutdown.clone();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stopped(&mut shutdown) => return,
        }
        let gone = front.sessions.lock().await.expire(idle);
        for _ in &gone {
            front.metrics.sessions_expired.inc();
        }
        if !gone.is_empty() {
            tracing::info!(
                "{} session(s) idle for {:?} ended (--session-idle-timeout)",
                gone.len(),
                idle
            );
        }
        drop(gone);
    }
}

/// `GET /mcp`: the session's stream of server-to-client messages that belong to no request
/// (notifications such as `tools/list_changed`, server requests). A new GET replaces the old.
/// Its queue holds `--queue-depth` events; a client that leaves it full has it closed.
async fn http_get(State(front): State<Arc<HttpFront>>, headers: HeaderMap) -> Response {
    if let Some(r) = foreign_origin(&front, &headers) {
        return r;
    }
    let grant = match grant_of(&front, &headers).await {
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
    let (handle, in_use) = {
        let sessions = front.sessions.lock().await;
        let Some(handle) = sessions.get(&grant, id).cloned() else {
            return json_error(StatusCode::NOT_FOUND, "Session not found");
        };
        let in_use = InUse::new(&handle.activity);
        (handle, in_use)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(front.limits.queue.max(1));
    let overflowed = Arc::new(Notify::new());
    *handle.stream.lock().unwrap_or_else(PoisonError::into_inner) = Some(GetStream {
        tx,
        overflowed: Arc::clone(&overflowed),
        listen: None,
    });
    let state = (rx, overflowed, front.shutdown.clone(), in_use);
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let (mut rx, overflowed, mut shutdown, in_use) = state?;
        tokio::select! {
            biased;
            // An error ends the response without its last chunk: the client sees the stream
            // break, and reconnects.
            () = overflowed.notified() => Some((
                Err(std::io::Error::other("the client left its stream's queue full")),
                None,
            )),
            event = rx.recv() => {
                event.map(|e| (Ok(e), Some((rx, overflowed, shutdown, in_use))))
            }
            () = stopped(&mut shutdown) => None,
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// The body of a `POST /mcp`, read with its limits: over `--max-message-bytes` is 413, a body
/// not complete within `--body-timeout` is 408, both with a JSON-RPC error (docs/errors.md)
/// and the connection closed after them (the rest of the body is not read).
async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, Box<Response>> {
    let closing = |mut r: Response| {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Box::new(r)
    };
    let too_large = |size: Option<u64>| {
        let message = match size {
            Some(size) => format!(
                "message of {size} bytes is over the limit of {max} bytes (--max-message-bytes)"
            ),
            None => format!("message is over the limit of {max} bytes (--max-message-bytes)"),
        };
        closing(rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            ErrorCode::ParseError,
            &message,
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > u64::try_from(max).unwrap_or(u64::MAX)
    {
        return Err(too_large(Some(n)));
    }
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(max).min(max));
    let mut bytes = Vec::with_capacity(capacity);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(chunk) => {
                if bytes.len().saturating_add(chunk.len()) > max {
                    return Err(too_large(None));
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(e) if serve::is_body_timeout(&e) => {
                return Err(closing(rpc_error(
                    StatusCode::REQUEST_TIMEOUT,
                    None,
                    ErrorCode::InvalidRequest,
                    &format!("{e} (--body-timeout)"),
                )));
            }
            Err(e) => {
                return Err(closing(json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("the request body could not be read: {e}"),
                )));
            }
        }
    }
    Ok(Bytes::from(bytes))
}

async fn http_post(
    State(front): State<Arc<HttpFront>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(r) = foreign_origin(&front, &headers) {
        return r;
    }
    let grant = match grant_of(&front, &headers).await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let body = match read_body(body, &headers, front.limits.max_message_bytes).await {
        Ok(b) => b,
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
    let (handle, in_use) = {
        let mut sessions = front.sessions.lock().await;
        let handle = if initialize {
            let n = front.next.fetch_add(1, Ordering::Relaxed) + 1;
            let Some(id) = new_session_id(n) else {
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the system's random number generator failed: no session id",
                );
            };
            let handle = match open_session(&front, &sessions, &grant, &id, &body) {
                Ok(h) => h,
                Err(r) => return *r,
            };
            sessions
                .by_id
                .insert((grant.clone(), id.clone()), handle.clone());
            new_session = Some(id);
            handle
        } else if let Some(id) = &header_session {
            match sessions.get(&grant, id) {
                Some(handle) => handle.clone(),
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
            match sessions.stateless.get(&grant) {
                Some(handle) if !handle.tx.is_closed() => handle.clone(),
                _ => {
                    sessions.stateless.remove(&grant);
                    let id = format!("stateless:{grant}");
                    let handle = match open_session(&front, &sessions, &grant, &id, &body) {
                        Ok(h) => h,
                        Err(r) => return *r,
                    };
                    sessions.stateless.insert(grant.clone(), handle.clone());
                    handle
                }
            }
        } else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "Bad Request: Mcp-Session-Id header is required (send `initialize` first)",
            );
        };
        // In use from here, under the lock: the idle sweep cannot take it in between.
        let in_use = InUse::new(&handle.activity);
        (handle, in_use)
    };
    // The stateless protocol's change notifications: the gateway answers `subscriptions/listen`
    // itself, with the session's stream of them.
    if stateless
        && !initialize
        && header_session.is_none()
        && let Some((id, tools)) = listen::listen_request(&body)
    {
        return listen::open(
            &handle,
            in_use,
            id,
            tools,
            front.limits.queue,
            front.shutdown.clone(),
        );
    }
    // The stateless protocol's clients of one grant share a session: their ids are their own
    // (two clients both start at 1), so each request takes a number unique in the session,
    // and its answer gets the client's id back.
    let mut ids = None;
    let bytes = if stateless && !initialize && header_session.is_none() {
        match StatelessIds::assign(&body, &front) {
            Ok((mapped, bytes)) => {
                ids = Some(mapped);
                bytes
            }
            Err(answer) => return json_answer(&answer),
        }
    } else {
        body.to_vec()
    };
    let restore = move |v: Value| match &ids {
        Some(ids) => ids.restore(v),
        None => v,
    };
    let wait = answer_timeout(&front);
    let (reply_tx, mut reply_rx) = mpsc::channel(front.limits.queue.max(1));
    let input = ClientInput::Message {
        bytes,
        reply: Some(reply_tx),
        trace: trace_context(&headers),
    };
    // A full queue makes the request wait (bounded): the session is busy with earlier ones.
    match tokio::time::timeout(wait, handle.tx.send(input)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the session is shutting down",
            );
        }
        Err(_) => return json_error(StatusCode::GATEWAY_TIMEOUT, "no answer in time"),
    }
    drop(handle);
    let first = match tokio::time::timeout(wait, reply_rx.recv()).await {
        Ok(first) => first,
        Err(_) => return json_error(StatusCode::GATEWAY_TIMEOUT, "no answer in time"),
    };
    let Some(first) = first.map(&restore) else {
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
        // Server messages before the answer: stream them, then the answer, as SSE events. The
        // session stays in use while the stream is open.
        let stream = futures::stream::unfold(
            (Some(first), reply_rx, in_use, restore),
            |(pending, mut rx, in_use, restore)| async move {
                let next = match pending {
                    Some(v) => Some(v),
                    None => rx.recv().await.map(&restore),
                };
                next.map(|v| {
                    let event = tollgate_mcp::sse::encode_event(&v.to_string(), None);
                    (
                        Ok::<_, std::convert::Infallible>(Bytes::from(event)),
                        (None, rx, in_use, restore),
                    )
                })
            },
        );
        let mut r = Response::new(Body::from_stream(stream));
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
                Ok(Some(v)) => answer = restore(v),
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

/// An HTTP request's W3C trace context, if it has a `traceparent` header.
fn trace_context(headers: &HeaderMap) -> Option<crate::telemetry::Carrier> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    Some(crate::telemetry::Carrier {
        traceparent: text("traceparent")?.to_owned(),
        tracestate: text("tracestate").map(str::to_owned),
    })
}

/// A JSON-RPC answer the HTTP front gives itself (200, `application/json`).
fn json_answer(answer: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

/// The ids of one stateless POST's requests, mapped to numbers unique in their grant's shared
/// session (the stateless protocol's clients of one grant share one gateway session, and each
/// numbers its requests from its own start): the session, the audit log and the upstream see
/// the numbers, the client gets its own ids back. Without this, two clients that both sent id 1
/// at once could each receive the other's answer.
#[derive(Debug)]
struct StatelessIds {
    /// Number given → the client's id.
    by_number: HashMap<u64, Value>,
}

impl StatelessIds {
    /// Parses the body strictly (as the session would) and gives each request in it a number.
    /// A body the strict parser refuses is answered here with its JSON-RPC error: its id could
    /// not be mapped, and the answer must reach this client only.
    fn assign(body: &[u8], front: &HttpFront) -> Result<(StatelessIds, Vec<u8>), Value> {
        let limits = tollgate_mcp::Limits {
            max_bytes: front.limits.max_message_bytes,
        };
        let parsed = tollgate_mcp::parse_incoming(body, limits).map_err(|e| {
            let lenient = serde_json::from_slice::<Value>(body).ok();
            let id = lenient
                .as_ref()
                .and_then(tollgate_mcp::jsonrpc::salvage_id)
                .cloned();
            tollgate_mcp::error_response(id.as_ref(), e.code(), &e.to_string(), None)
        })?;
        let mut ids = StatelessIds {
            by_number: HashMap::new(),
        };
        let mut number = |m: &mut Value| {
            let is_request = m.get("method").is_some();
            if let (true, Some(id)) = (is_request, m.get_mut("id")) {
                let n = front.next_stateless_id.fetch_add(1, Ordering::Relaxed);
                ids.by_number
                    .insert(n, std::mem::replace(id, Value::from(n)));
            }
        };
        let value = match parsed {
            tollgate_mcp::Incoming::Single(mut m) => {
                number(&mut m);
                m
            }
            tollgate_mcp::Incoming::Batch(mut items) => {
                items.iter_mut().for_each(&mut number);
                Value::Array(items)
            }
        };
        Ok((ids, value.to_string().into_bytes()))
    }

    /// An answer (or a batch of them) with the client's ids back.
    fn restore(&self, mut v: Value) -> Value {
        let one = |m: &mut Value| {
            let is_answer = m.get("method").is_none();
            if let (true, Some(id)) = (is_answer, m.get_mut("id"))
                && let Some(original) = id.as_u64().and_then(|n| self.by_number.get(&n))
            {
                *id = original.clone();
            }
        };
        match &mut v {
            Value::Array(items) => items.iter_mut().for_each(one),
            m => one(m),
        }
        v
    }
}

async fn http_delete(State(front): State<Arc<HttpFront>>, headers: HeaderMap) -> Response {
    if let Some(r) = foreign_origin(&front, &headers) {
        return r;
    }
    let grant = match grant_of(&front, &headers).await {
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
    match front.sessions.lock().await.remove(&grant, id) {
        Some(_) => StatusCode::OK.into_response(),
        None => json_error(StatusCode::NOT_FOUND, "Session not found"),
    }
}

/// A new session id: a counter (for logs and recordings) and 128 bits from the operating
/// system's CSPRNG, so no id can be guessed from another. `None` if the OS cannot give them.
fn new_session_id(n: u64) -> Option<String> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).ok()?;
    Some(format!("tg-{n}-{}", hex::encode(nonce)))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// The envelope-only parse finds the same request ids as the full parse it replaced, for
    /// requests, notifications, responses, `null` ids and methods, batches, duplicated ids and
    /// texts that are not JSON.
    /// `--allow-origin` lets in exactly the origins it names (however a browser writes them),
    /// local origins and requests without `Origin` always; `*` only with bearer tokens; a value
    /// that is not an origin is refused with what to write.
    #[test]
    fn allowed_origins_are_exact_and_star_needs_tokens() {
        let allowed =
            AllowedOrigins::parse(&["https://App.Example.com:443".into()], false).unwrap();
        for ok in [
            None,
            Some("https://app.example.com"),
            Some("HTTPS://APP.EXAMPLE.COM"),
            Some("http://localhost:5173"),
            Some("http://127.0.0.1"),
        ] {
            assert!(allowed.allows(ok), "{ok:?} is allowed");
        }
        for refused in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.example",
            "https://evil.example",
            "https://app.example.com@evil.example",
            "null",
            "",
        ] {
            assert!(!allowed.allows(Some(refused)), "{refused} is refused");
        }
        assert!(!AllowedOrigins::default().allows(Some("https://app.example.com")));
        let err = AllowedOrigins::parse(&["*".into()], false).unwrap_err();
        assert!(
            err.contains("DNS rebinding") && err.contains("--tokens"),
            "{err}"
        );
        let any = AllowedOrigins::parse(&["*".into()], true).unwrap();
        assert!(any.allows(Some("https://evil.example")) && any.allows(Some("null")));
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "ftp://app.example.com",
            "https://app.example.com?x=1",
        ] {
            let err = AllowedOrigins::parse(&[bad.into()], true).unwrap_err();
            assert!(err.contains("is not an origin"), "{bad}: {err}");
        }
    }

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

    /// Only a response (a result or an error, no method) with the gateway's re-initialize id
    /// is taken for the answer to the re-initialize: an upstream request or notification that
    /// carries such an id or text goes to the core like any other message.
    #[test]
    fn only_a_response_is_taken_for_the_reinit_answer() {
        for (text, is) in [
            (
                r#"{"jsonrpc":"2.0","id":"tollgate-reinit-1","result":{}}"#,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":"tollgate-reinit-2","error":{"code":-32603,"message":"x"}}"#,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":"tollgate-reinit-1","method":"sampling/createMessage","params":{}}"#,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"tollgate-reinit-1"}}"#,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":"other","result":{"x":"tollgate-reinit-1"}}"#,
                false,
            ),
            (r#"{"jsonrpc":"2.0","id":1,"result":{}}"#, false),
            (
                r#"{"jsonrpc":"2.0","id":"tollgate-reinit-1","result""#,
                false,
            ),
        ] {
            assert_eq!(is_reinit_answer(text.as_bytes()), is, "{text}");
        }
    }

    /// An HTTP request's event stream is never waited for: once its client leaves it full, it
    /// is closed (its waiter dropped). The sink is not waited for either: what does not fit
    /// waits in the session's own queue (which stops the session reading its client).
    #[test]
    fn a_full_request_stream_is_closed_and_a_full_sink_waits_in_the_session() {
        let (reply, mut stream) = mpsc::channel(2);
        let mut waiters = vec![Waiter {
            ids: vec!["1".into()],
            batch: false,
            got: Vec::new(),
            reply,
        }];
        let (sink, mut out) = mpsc::channel(1);
        let mut to_client = VecDeque::new();
        let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}});
        for _ in 0..3 {
            deliver(note.clone(), &mut waiters, &sink, &mut to_client);
        }
        assert!(waiters.is_empty(), "the full stream was not closed");
        assert_eq!(stream.try_recv().unwrap(), note);
        assert_eq!(stream.try_recv().unwrap(), note);
        assert_eq!(
            stream.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        );
        for _ in 0..3 {
            deliver(note.clone(), &mut waiters, &sink, &mut to_client);
        }
        assert_eq!(out.try_recv().unwrap(), note);
        assert!(out.try_recv().is_err());
        assert_eq!(to_client.len(), 2);
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
