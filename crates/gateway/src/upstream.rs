//! Connections to the upstream MCP server: a child process spoken to over stdio, or a
//! Streamable HTTP endpoint. Both look the same to a session: send a JSON message, receive
//! messages (or the news that the upstream went away) on a channel.
//!
//! Bounds: both channels hold at most `queue` messages (a full one makes its writer wait: the
//! session stops reading its client, the reader of the child's stdout stops reading it); a
//! message read from the upstream (a line of the child's stdout, an HTTP answer's body, one
//! SSE event) is thrown away as it arrives once it passes `max_message` bytes, never held
//! whole; an HTTP upstream has at most `queue` requests of one session in flight.
//!
//! A child's stderr is passed on to the gateway's own stderr as it arrives, and its last
//! [`STDERR_LINES`] lines (each cut at [`STDERR_LINE_BYTES`] bytes) are kept, so that a child
//! that exits can be explained to the client by what it said last ([`Ended`]).

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tollgate_mcp::protocol::{HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID};

/// What arrives from the upstream.
#[derive(Debug)]
pub enum FromUpstream {
    /// One wire message (a JSON text: a message or a batch).
    Message(Vec<u8>),
    /// The upstream went away (the child exited, the connection failed).
    Closed(String),
}

/// How to reach the upstream.
#[derive(Debug, Clone)]
pub enum UpstreamSpec {
    Command {
        program: String,
        args: Vec<String>,
    },
    /// A Streamable HTTP endpoint (`http://` or `https://`), reached with `client` (made by
    /// [`http_client`]: which certificates it trusts).
    Url {
        url: String,
        client: reqwest::Client,
    },
    /// Several upstreams behind one session, their tools namespaced ([`crate::multi`]).
    Several(Arc<Vec<NamedUpstream>>),
}

impl UpstreamSpec {
    /// An HTTP upstream reached with the process's default client, which trusts the system's
    /// certificate authorities only ([`default_client`]).
    pub fn url(url: impl Into<String>) -> UpstreamSpec {
        UpstreamSpec::Url {
            url: url.into(),
            client: default_client(),
        }
    }
}

/// Two specs are equal when they reach the same upstream; an HTTP upstream is compared by its
/// URL alone (its `reqwest::Client`, which says which certificates it trusts, has no
/// equality), so configs that differ only in `ca_file` compare equal.
impl PartialEq for UpstreamSpec {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                UpstreamSpec::Command { program, args },
                UpstreamSpec::Command {
                    program: p,
                    args: a,
                },
            ) => program == p && args == a,
            (UpstreamSpec::Url { url, .. }, UpstreamSpec::Url { url: u, .. }) => url == u,
            (UpstreamSpec::Several(x), UpstreamSpec::Several(y)) => x == y,
            _ => false,
        }
    }
}

impl Eq for UpstreamSpec {}

/// One upstream of several: its name (in the config file, the audit log, the metrics), the
/// prefix of its exposed tool and prompt names, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedUpstream {
    pub name: String,
    pub prefix: String,
    pub spec: UpstreamSpec,
}

/// How many of a child's last stderr lines are kept.
pub const STDERR_LINES: usize = 8;
/// How much of one stderr line is kept, in bytes (the rest of the line is passed on, not kept).
pub const STDERR_LINE_BYTES: usize = 1024;

/// A child's last stderr lines, bounded: [`STDERR_LINES`] lines of at most
/// [`STDERR_LINE_BYTES`] bytes, and the line being written.
#[derive(Debug, Default)]
struct StderrTail {
    lines: VecDeque<String>,
    current: Vec<u8>,
}

impl StderrTail {
    fn push(&mut self, chunk: &[u8]) {
        for part in chunk.split_inclusive(|b| *b == b'\n') {
            let room = STDERR_LINE_BYTES.saturating_sub(self.current.len());
            let text = part.strip_suffix(b"\n").unwrap_or(part);
            self.current
                .extend_from_slice(&text[..text.len().min(room)]);
            if part.ends_with(b"\n") {
                self.end_line();
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.current).trim_end().to_owned();
        self.current.clear();
        if line.trim().is_empty() {
            return;
        }
        if self.lines.len() == STDERR_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// How a child upstream ended: its exit status (when it could be read) and its last stderr
/// lines, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    pub status: Option<ExitStatus>,
    pub stderr: Vec<String>,
}

/// A live connection: send with [`Upstream::try_send`] (or a [`Upstream::sender`]'s permit),
/// receive on `rx`.
#[derive(Debug)]
pub struct Upstream {
    tx: mpsc::Sender<Value>,
    pub rx: mpsc::Receiver<FromUpstream>,
    child: Option<Child>,
    stderr: Option<(Arc<Mutex<StderrTail>>, JoinHandle<()>)>,
    /// Several upstreams: the task that routes between them (it stops them all when `tx`
    /// closes).
    router: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Queues a message without waiting: it is handed back when the queue is full (the
    /// upstream is not reading) or closed (it went away).
    pub fn try_send(&self, message: Value) -> Result<(), mpsc::error::TrySendError<Value>> {
        self.tx.try_send(message)
    }

    /// The queue's sender, to wait for room in it.
    pub fn sender(&self) -> mpsc::Sender<Value> {
        self.tx.clone()
    }

    /// Connects (spawns the child, or prepares the HTTP client). Messages from the upstream
    /// over `max_message` bytes are dropped (logged); each channel holds `queue` messages.
    pub fn connect(
        spec: &UpstreamSpec,
        max_message: usize,
        queue: usize,
    ) -> std::io::Result<Upstream> {
        let queue = queue.max(1);
        match spec {
            UpstreamSpec::Command { program, args } => {
                spawn_child(program, args, max_message, queue)
            }
            UpstreamSpec::Url { url, client } => Ok(http_upstream(
                url.clone(),
                client.clone(),
                max_message,
                queue,
            )),
            UpstreamSpec::Several(parts) => {
                let (tx, rx, router) = crate::multi::start(Arc::clone(parts), max_message, queue);
                Ok(Upstream {
                    tx,
                    rx,
                    child: None,
                    stderr: None,
                    router: Some(router),
                })
            }
        }
    }

    /// The child's process id, if it is a child that still runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the child, if any, and waits for it (bounded): once this returns, the process
    /// is gone, so a restart never runs two children for one session. Says how it ended
    /// (nothing for an HTTP upstream).
    pub async fn shutdown(mut self) -> Ended {
        let mut ended = Ended::default();
        if let Some(router) = self.router.take() {
            // The router stops its upstreams once its queue closes (each bounded, as below).
            drop(self.tx);
            let _ = tokio::time::timeout(Duration::from_secs(10), router).await;
            return ended;
        }
        if let Some(mut child) = self.child.take() {
            drop(self.tx);
            // A well-behaved server exits when its stdin closes; give it a moment.
            match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(status) => ended.status = status.ok(),
                Err(_) => {
                    let _ = child.kill().await;
                }
            }
        }
        if let Some((tail, reader)) = self.stderr.take() {
            // The rest of what it wrote before it exited; bounded, because a grandchild may
            // keep the pipe open.
            let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if !tail.current.is_empty() {
                tail.end_line();
            }
            ended.stderr = tail.lines.iter().cloned().collect();
        }
        ended
    }
}

/// Passes the child's stderr on to ours as it arrives, keeping its last lines in `tail`.
fn read_stderr(mut stderr: ChildStderr, tail: Arc<Mutex<StderrTail>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ours = tokio::io::stderr();
        let mut buf = vec![0u8; 8192];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = &buf[..n];
                    tail.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(chunk);
                    let _ = ours.write_all(chunk).await;
                }
            }
        }
    })
}

fn spawn_child(
    program: &str,
    args: &[String],
    max_message: usize,
    queue: usize,
) -> std::io::Result<Upstream> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other(
            "the child's stdio could not be captured",
        ));
    };
    let tail = Arc::new(Mutex::new(StderrTail::default()));
    let stderr = Some((Arc::clone(&tail), read_stderr(stderr, tail)));
    let (tx, mut out_rx) = mpsc::channel::<Value>(queue);
    let (in_tx, rx) = mpsc::channel::<FromUpstream>(queue);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(msg) = out_rx.recv().await {
            // Write whatever else is already queued before flushing once.
            batch.clear();
            let mut next = Some(msg);
            while let Some(m) = next.take() {
                // A `Value` always serializes.
                let _ = serde_json::to_writer(&mut batch, &m);
                batch.push(b'\n');
                if batch.len() <= 1 << 20 {
                    next = out_rx.try_recv().ok();
                }
            }
            if stdin.write_all(&batch).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            match tollgate_mcp::stdio::read_line(&mut reader, &mut line, max_message).await {
                Ok(tollgate_mcp::stdio::Line::End) => {
                    let _ = in_tx
                        .send(FromUpstream::Closed(
                            "the upstream process closed its output".into(),
                        ))
                        .await;
                    return;
                }
                Ok(tollgate_mcp::stdio::Line::TooLarge { size }) => {
                    // An oversized answer cannot be trusted or matched: it was skipped as it
                    // arrived; the call's timeout answers the client.
                    tracing::warn!(
                        "dropped an upstream message of {size} bytes, over the limit of {max_message} bytes (--max-message-bytes)"
                    );
                }
                Ok(tollgate_mcp::stdio::Line::Message) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let message = std::mem::take(&mut line);
                    // A full queue makes this wait: the child's stdout is not read meanwhile.
                    if in_tx.send(FromUpstream::Message(message)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = in_tx
                        .send(FromUpstream::Closed(format!(
                            "reading the upstream failed: {e}"
                        )))
                        .await;
                    return;
                }
            }
        }
    });
    Ok(Upstream {
        tx,
        rx,
        child: Some(child),
        stderr,
        router: None,
    })
}

/// A Streamable HTTP upstream: each message is one POST; the answer (JSON or an SSE stream)
/// comes back as messages. The session id and protocol version the upstream gives are sent
/// with every later request. At most `queue` requests run at once; the next waits for one
/// of them to end (and the session's queue to the upstream fills behind it).
fn http_upstream(
    url: String,
    client: reqwest::Client,
    max_message: usize,
    queue: usize,
) -> Upstream {
    let (tx, mut out_rx) = mpsc::channel::<Value>(queue);
    let (in_tx, rx) = mpsc::channel::<FromUpstream>(queue);
    tokio::spawn(async move {
        // One client per upstream spec, shared by its sessions (a clone is a handle): its pool
        // keeps HTTP/1.1 connections to the upstream alive and shares them between sessions
        // (each request carries its own session id), and an idle session costs no client of
        // its own.
        let url = match reqwest::Url::parse(&url) {
            Ok(u) => u,
            Err(e) => {
                let _ = in_tx
                    .send(FromUpstream::Closed(format!(
                        "the upstream URL `{url}` is not valid: {e}"
                    )))
                    .await;
                return;
            }
        };
        let session: HttpSession = Default::default();
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(queue));
        let mut get_stream_open = false;
        while let Some(msg) = out_rx.recv().await {
            let init_first = is_initialize(&msg);
            let initialized =
                msg.get("method").and_then(Value::as_str) == Some("notifications/initialized");
            let request = HttpRequest {
                client: client.clone(),
                url: url.clone(),
                session: std::sync::Arc::clone(&session),
                in_tx: in_tx.clone(),
                max_message,
            };
            if init_first {
                // The session id must be known before anything else is sent.
                request.run(msg).await;
            } else if initialized && !get_stream_open {
                // The session is set up: open the GET stream, where the upstream sends what
                // belongs to no request (notifications, its own requests).
                request.run(msg).await;
                get_stream_open = true;
                tokio::spawn(get_stream(
                    client.clone(),
                    url.clone(),
                    std::sync::Arc::clone(&session),
                    in_tx.clone(),
                    max_message,
                ));
            } else {
                // Requests run concurrently, a slow call does not hold up the others, up to
                // `queue` at once.
                let Ok(permit) = std::sync::Arc::clone(&in_flight).acquire_owned().await else {
                    return;
                };
                tokio::spawn(async move {
                    request.run(msg).await;
                    drop(permit);
                });
            }
        }
    });
    Upstream {
        tx,
        rx,
        child: None,
        stderr: None,
        router: None,
    }
}

/// An HTTP upstream session: its `Mcp-Session-Id` and negotiated protocol version.
type HttpSession = std::sync::Arc<tokio::sync::Mutex<(Option<String>, Option<String>)>>;

/// What one POST to an HTTP upstream needs.
struct HttpRequest {
    client: reqwest::Client,
    url: reqwest::Url,
    session: HttpSession,
    in_tx: mpsc::Sender<FromUpstream>,
    max_message: usize,
}

impl HttpRequest {
    /// Sends one message and passes on what comes back; an HTTP failure is answered as a
    /// JSON-RPC error for the request that met it.
    async fn run(self, msg: Value) {
        let id = msg.get("id").cloned();
        if let Err(why) = self.exchange(&msg, id.as_ref()).await {
            match &id {
                Some(id) => {
                    let e = tollgate_mcp::error_response(
                        Some(id),
                        tollgate_mcp::ErrorCode::InternalError,
                        &why,
                        None,
                    );
                    let _ = self
                        .in_tx
                        .send(FromUpstream::Message(e.to_string().into_bytes()))
                        .await;
                }
                None => tracing::warn!("{why}"),
            }
        }
    }

    async fn exchange(&self, msg: &Value, id: Option<&Value>) -> Result<(), String> {
        let (url, max) = (&self.url, self.max_message);
        let is_init = is_initialize(msg);
        let (sid, version) = self.session.lock().await.clone();
        let mut req = self
            .client
            .post(url.clone())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(msg.to_string());
        if let Some(s) = &sid {
            req = req.header(HEADER_SESSION_ID, s);
        }
        if let Some(v) = &version {
            req = req.header(HEADER_PROTOCOL_VERSION, v);
        }
        // The trace context the gateway's span put in `_meta` (crate::telemetry) goes in the
        // W3C headers too, for an upstream (or a proxy before it) that reads those.
        if let Some(c) = crate::telemetry::Carrier::of_meta(msg.get("params")) {
            req = req.header("traceparent", c.traceparent);
            if let Some(s) = c.tracestate {
                req = req.header("tracestate", s);
            }
        }
        let resp = req.send().await.map_err(|e| unreachable(url, &e))?;
        if let Some(s) = resp
            .headers()
            .get(HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
        {
            self.session.lock().await.0 = Some(s.to_owned());
        }
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(());
        }
        if is_sse && status.is_success() {
            // Read the stream as it comes: a server may send requests (sampling,
            // elicitation) or progress before its answer, and wait for the client.
            let mut stream = resp.bytes_stream();
            let mut events = SseReader::new(max);
            let mut answered = false;
            while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
                let Ok(chunk) = chunk else { break };
                let (messages, oversized) = events.push(&chunk);
                if oversized > 0 {
                    return Err(format!(
                        "the upstream sent an event over the limit of {max} bytes (--max-message-bytes)"
                    ));
                }
                for m in messages {
                    let Ok(v) = serde_json::from_str::<Value>(&m) else {
                        return Err("the upstream sent an event that is not JSON".into());
                    };
                    if is_init && let Some(pv) = v["result"]["protocolVersion"].as_str() {
                        self.session.lock().await.1 = Some(pv.to_owned());
                    }
                    if v.get("id") == id && (v.get("result").is_some() || v.get("error").is_some())
                    {
                        answered = true;
                    }
                    if self
                        .in_tx
                        .send(FromUpstream::Message(m.into_bytes()))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            if !answered && id.is_some() && msg.get("method").is_some() {
                let what = if events.is_empty() {
                    "ended"
                } else {
                    "was cut"
                };
                return Err(format!(
                    "the upstream's event stream {what} before the answer (the data so far is not JSON)"
                ));
            }
            return Ok(());
        }
        let body = read_limited(resp, max).await?;
        if status.is_success() && body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        // Checked without building a value: the session core parses the answer itself.
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        if !status.is_success() && !is_json {
            let excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(format!("the upstream answered HTTP {status}: {excerpt}"));
        }
        if !is_json {
            return Err("the upstream answered with something that is not JSON".into());
        }
        if is_init
            && let Ok(v) = serde_json::from_slice::<Value>(&body)
            && let Some(pv) = v["result"]["protocolVersion"].as_str()
        {
            self.session.lock().await.1 = Some(pv.to_owned());
        }
        let _ = self.in_tx.send(FromUpstream::Message(body)).await;
        Ok(())
    }
}

/// An answer's body, read as it arrives and refused once it passes `max` bytes (before
/// anything is read when its `Content-Length` says so).
async fn read_limited(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let over =
        || format!("the upstream's answer is over the limit of {max} bytes (--max-message-bytes)");
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX))
    {
        return Err(over());
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| format!("the upstream's answer broke off: {e}"))?;
        if body.len().saturating_add(chunk.len()) > max {
            return Err(over());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Splits an SSE byte stream into the data of its `message` events as they complete (events
/// with empty data, such as priming events, and other event types are skipped). It holds at
/// most one line and one event's data, each bounded by `max` bytes: a longer event is thrown
/// away as it arrives and counted.
#[derive(Debug)]
struct SseReader {
    max: usize,
    /// The line being read (up to its `\n`).
    line: Vec<u8>,
    /// The event's `data` so far (its lines joined by `\n`).
    data: Vec<u8>,
    has_data: bool,
    /// The event's type is `message` (the default).
    message: bool,
    /// The event passed `max` bytes: it is skipped to its end.
    over: bool,
    /// Bytes of the current line so far (kept or not), and the last of them.
    line_seen: usize,
    line_last: u8,
}

impl SseReader {
    fn new(max: usize) -> SseReader {
        SseReader {
            max,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            message: true,
            over: false,
            line_seen: 0,
            line_last: 0,
        }
    }

    /// The data of the events `chunk` completes, and how many events it completed that were
    /// over the limit (skipped).
    fn push(&mut self, chunk: &[u8]) -> (Vec<String>, usize) {
        let mut out = Vec::new();
        let mut oversized = 0;
        let mut rest = chunk;
        while !rest.is_empty() {
            let (part, ended) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = &rest[(part.len() + usize::from(ended)).min(rest.len())..];
            self.line_seen = self.line_seen.saturating_add(part.len());
            if let Some(&last) = part.last() {
                self.line_last = last;
            }
            // The field name and a `\r` may come on top of the data's bytes.
            if !self.over && self.line.len() + part.len() > self.max.saturating_add(16) {
                self.mark_over();
            }
            if !self.over {
                self.line.extend_from_slice(part);
            }
            if ended {
                match self.end_line() {
                    Some(Ok(m)) => out.push(m),
                    Some(Err(())) => oversized += 1,
                    None => {}
                }
            }
        }
        (out, oversized)
    }

    fn mark_over(&mut self) {
        self.over = true;
        self.line = Vec::new();
        self.data = Vec::new();
    }

    /// Takes the line read: a blank line ends the event (`Some(Ok(data))`, or `Some(Err(()))`
    /// for one over the limit).
    fn end_line(&mut self) -> Option<Result<String, ()>> {
        let seen = std::mem::take(&mut self.line_seen);
        let blank = seen == 0 || (seen == 1 && self.line_last == b'\r');
        if blank {
            let event = if self.over {
                Some(Err(()))
            } else if self.message
                && self.has_data
                && !self.data.iter().all(u8::is_ascii_whitespace)
            {
                Some(Ok(String::from_utf8_lossy(&self.data).into_owned()))
            } else {
                None
            };
            self.line.clear();
            self.data.clear();
            self.has_data = false;
            self.message = true;
            self.over = false;
            return event;
        }
        if self.over {
            return None;
        }
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if let Some(v) = line.strip_prefix(b"data:") {
            let v = v.strip_prefix(b" ").unwrap_or(v);
            if self.data.len() + v.len() + 1 > self.max {
                self.mark_over();
                return None;
            }
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(v);
            self.has_data = true;
        } else if let Some(v) = line.strip_prefix(b"event:") {
            self.message = String::from_utf8_lossy(v).trim() == "message";
        }
        // Comments (`:`), `id:`, `retry:` and unknown fields carry no message.
        line.clear();
        self.line = line;
        None
    }

    /// Whether nothing of a partial event is waiting.
    fn is_empty(&self) -> bool {
        self.line_seen == 0 && !self.has_data && !self.over
    }
}

/// The upstream's GET stream (Streamable HTTP): messages that belong to no request. A server
/// without one answers 405 and nothing more is tried; a stream that ends is opened again with
/// a growing pause (up to 5 s) until the session's connection is dropped.
async fn get_stream(
    client: reqwest::Client,
    url: reqwest::Url,
    session: HttpSession,
    in_tx: mpsc::Sender<FromUpstream>,
    max_message: usize,
) {
    let mut pause = Duration::from_millis(100);
    while !in_tx.is_closed() {
        let (sid, version) = session.lock().await.clone();
        let mut req = client
            .get(url.clone())
            .header("accept", "text/event-stream");
        if let Some(s) = &sid {
            req = req.header(HEADER_SESSION_ID, s);
        }
        if let Some(v) = &version {
            req = req.header(HEADER_PROTOCOL_VERSION, v);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                let mut stream = resp.bytes_stream();
                let mut events = SseReader::new(max_message);
                loop {
                    // The session's connection dropped: stop listening at once.
                    let chunk = tokio::select! {
                        () = in_tx.closed() => return,
                        chunk = futures::StreamExt::next(&mut stream) => chunk,
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    let (messages, oversized) = events.push(&chunk);
                    if oversized > 0 {
                        tracing::warn!(
                            "dropped {oversized} event(s) of the upstream's GET stream over the limit of {max_message} bytes (--max-message-bytes)"
                        );
                    }
                    for m in messages {
                        if serde_json::from_str::<Value>(&m).is_err() {
                            tracing::warn!(
                                "the upstream's GET stream sent an event that is not JSON"
                            );
                            continue;
                        }
                        if in_tx
                            .send(FromUpstream::Message(m.into_bytes()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    pause = Duration::from_millis(100);
                }
            }
            // 405: the server offers no GET stream; 404/400: no such session any more.
            Ok(resp) if resp.status().is_client_error() => return,
            Ok(resp) => tracing::warn!("the upstream's GET stream answered HTTP {}", resp.status()),
            Err(e) => tracing::warn!("the upstream's GET stream failed: {e}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The process's HTTP client for upstreams given no CA file (built on first use):
/// [`http_client`]`(None)`. Should the system's trust store be unreadable, a client that trusts
/// no authority (every https upstream is then refused, saying so) rather than none at all.
pub fn default_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| match http_client(None) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}; https upstreams will not be trusted");
                reqwest::Client::builder()
                    .use_rustls_tls()
                    .tls_built_in_root_certs(false)
                    .build()
                    .unwrap_or_default()
            }
        })
        .clone()
}

/// A CA file given for an upstream that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read the CA file `{path}`: {error}")]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the CA file `{0}` holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block): give `--upstream-ca-file` (`ca_file` of a config's upstream) the certificate of the authority that signed the upstream's certificate, in PEM"
    )]
    NoCertificate(std::path::PathBuf),
    #[error(
        "the CA file `{path}` is not valid PEM: {why}; give `--upstream-ca-file` (`ca_file` of a config's upstream) the authority's certificate in PEM"
    )]
    BadPem {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("certificate {index} of the CA file `{path}` cannot be a trust anchor: {why}")]
    BadCertificate {
        path: std::path::PathBuf,
        index: usize,
        why: String,
    },
    #[error("cannot build the HTTP client for upstreams: {0}")]
    Client(String),
}

/// The HTTP client for upstreams: rustls (the `ring` provider) trusting the system's
/// certificate authorities (rustls-native-certs: Debian's `/etc/ssl/certs`, or what
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` name) and, with `ca_file`, every certificate of that PEM file
/// too. One client serves every session of an upstream (its connections are pooled).
pub fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, CaFileError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_native_certs(true);
    if let Some(path) = ca_file {
        let certs = tollgate_mcp::tls::read_certificates(path).map_err(|e| match e {
            tollgate_mcp::tls::TlsFileError::Read { error, .. } => CaFileError::Read {
                path: path.to_owned(),
                error,
            },
            tollgate_mcp::tls::TlsFileError::BadCertificate { why, .. } => CaFileError::BadPem {
                path: path.to_owned(),
                why,
            },
            _ => CaFileError::NoCertificate(path.to_owned()),
        })?;
        for (index, der) in certs.iter().enumerate() {
            let cert =
                reqwest::Certificate::from_der(der).map_err(|e| CaFileError::BadCertificate {
                    path: path.to_owned(),
                    index: index + 1,
                    why: e.to_string(),
                })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| CaFileError::Client(error_chain(&e)))
}

/// An error and its causes, `: `-separated (reqwest's own text names only the request).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    // Bounded: error chains are short.
    for _ in 0..16 {
        let Some(cause) = next else { break };
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

/// The rustls error behind a failed request, if TLS is what failed. An `io::Error`'s
/// `source()` skips the error it wraps (the connector wraps rustls's error in two of them), so
/// the chain is followed through what each `io::Error` wraps.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    // Bounded: error chains are short.
    for _ in 0..16 {
        let link = next?;
        if let Some(tls) = link.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match link
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => link.source(),
        };
    }
    None
}

/// Why a request to the upstream at `url` got no answer, and what to do: a TLS failure says
/// which (an untrusted, expired or misnamed certificate; a server that does not speak TLS).
fn unreachable(url: &reqwest::Url, e: &reqwest::Error) -> String {
    let Some(tls) = tls_error(e) else {
        return format!("the upstream {url} cannot be reached: {e}");
    };
    tls_failure(url, tls)
}

/// A UNIX time as `YYYY-MM-DD HH:MM:SS` in UTC (the civil calendar from days since the epoch,
/// Howard Hinnant's `civil_from_days`).
fn utc_date(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// [`unreachable`] for a TLS failure.
fn tls_failure(url: &reqwest::Url, tls: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let host = url.host_str().unwrap_or("");
    const CA_HINT: &str = "give the certificate of the authority that signed it (PEM) with `--upstream-ca-file FILE` (`ca_file` of a config's upstream); the system's authorities are trusted already";
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension => format!(
                "the upstream {url} presented a TLS certificate that is not trusted ({tls}): no authority this gateway trusts signed it; {CA_HINT}"
            ),
            // Said with the certificate's own date, not rustls's text (which carries the time
            // of the check).
            C::ExpiredContext { not_after, .. } => format!(
                "the upstream {url} presented a TLS certificate that expired on {} (UTC): renew the upstream's certificate (or check this machine's clock)",
                utc_date(not_after.as_secs())
            ),
            C::NotValidYetContext { not_before, .. } => format!(
                "the upstream {url} presented a TLS certificate that is not valid before {} (UTC): check this machine's clock, or the upstream's certificate",
                utc_date(not_before.as_secs())
            ),
            C::Expired | C::NotValidYet => format!(
                "the upstream {url} presented a TLS certificate that is out of its validity period ({tls}): renew the upstream's certificate (or check this machine's clock)"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the upstream {url} presented a TLS certificate for another name than `{host}` ({tls}): reach it by a name its certificate lists, or give it a certificate that names `{host}`"
            ),
            _ => format!(
                "the upstream {url} presented a TLS certificate that cannot be used ({tls}): give it a valid certificate, or if it is signed by an authority of your own, {CA_HINT}"
            ),
        },
        rustls::Error::InvalidMessage(_) => format!(
            "the upstream {url} does not speak TLS ({tls}): if it serves plain HTTP, give an `http://` URL"
        ),
        other => format!("the TLS handshake with the upstream {url} failed: {other}"),
    }
}

/// How long [`check_tls`] waits for an upstream's answer.
pub const TLS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What [`check_tls`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCheck {
    /// The handshake succeeded (any HTTP answer), or the URL is not `https://`.
    Verified,
    /// The certificate (or the handshake) failed: said with what to do. Retrying cannot fix
    /// it: the gateway does not start.
    Failed(String),
    /// No answer (refused, no route, timed out): the upstream may come up later.
    Unreachable(String),
}

/// Checks an `https://` upstream's certificate before the gateway serves (`tollgate gateway`
/// fails fast on it): one `HEAD` request through `client` (the gateway's own TLS settings:
/// system roots plus a CA file), bounded by `timeout`. Whatever HTTP status answers, the
/// handshake passed.
pub async fn check_tls(
    url: &str,
    client: &reqwest::Client,
    timeout: std::time::Duration,
) -> TlsCheck {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return TlsCheck::Verified;
    };
    if parsed.scheme() != "https" {
        return TlsCheck::Verified;
    }
    match client.head(parsed.clone()).timeout(timeout).send().await {
        Ok(_) => TlsCheck::Verified,
        Err(e) => match tls_error(&e) {
            Some(tls) => TlsCheck::Failed(tls_failure(&parsed, tls)),
            None => TlsCheck::Unreachable(unreachable(&parsed, &e)),
        },
    }
}

fn is_initialize(msg: &Value) -> bool {
    msg.get("method").and_then(Value::as_str) == Some("initialize")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// The stderr tail keeps the last lines whatever the chunks, each cut at its bound, and a
    /// flood of output never grows it past its bound.
    #[test]
    fn utc_dates_match_the_calendar() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_date(1_609_459_200), "2021-01-01 00:00:00");
        assert_eq!(utc_date(4_102_444_799), "2099-12-31 23:59:59");
    }

    #[test]
    fn the_stderr_tail_keeps_the_last_lines_within_its_bounds() {
        let text = "Traceback (most recent call last):\n  File \"x\"\n\nException: no region\n";
        for chunk in [1, 3, 7, 1000] {
            let mut tail = StderrTail::default();
            for part in text.as_bytes().chunks(chunk) {
                tail.push(part);
            }
            assert_eq!(
                tail.lines.back().map(String::as_str),
                Some("Exception: no region"),
                "chunk {chunk}"
            );
            assert_eq!(tail.lines.len(), 3, "blank lines are not kept");
        }
        let mut tail = StderrTail::default();
        let long = "x".repeat(3 * STDERR_LINE_BYTES);
        for _ in 0..100 {
            tail.push(long.as_bytes());
            tail.push(b"\n");
        }
        tail.push(b"last words without a newline");
        assert_eq!(tail.lines.len(), STDERR_LINES);
        assert!(tail.lines.iter().all(|l| l.len() == STDERR_LINE_BYTES));
        assert_eq!(tail.current, b"last words without a newline");
    }

    /// Feeds `stream` to a reader in chunks of `chunk` bytes; returns the messages and the
    /// count of oversized events.
    fn read(stream: &str, max: usize, chunk: usize) -> (Vec<String>, usize) {
        let mut r = SseReader::new(max);
        let (mut all, mut over) = (Vec::new(), 0);
        for part in stream.as_bytes().chunks(chunk) {
            let (m, o) = r.push(part);
            all.extend(m);
            over += o;
        }
        (all, over)
    }

    /// The incremental reader finds the events `tollgate_mcp::sse::decode_events` finds in
    /// the whole text, however the bytes are chunked (a multi-byte character split between
    /// chunks included).
    #[test]
    fn sse_reader_agrees_with_the_whole_text_decoder() {
        let a = tollgate_mcp::sse::encode_event("{\"a\":\"é→\"}", Some("7"));
        let b = tollgate_mcp::sse::encode_event("{\n\"b\":2\n}", None);
        let text = format!(
            ": comment\n\nid: 1\ndata:\n\n{a}event: other\ndata: {{\"x\":1}}\n\n{b}data: {{\"c\":3}}\r\n\r\n"
        );
        let whole = tollgate_mcp::sse::decode_events(&text);
        assert_eq!(whole.len(), 3);
        for chunk in [1, 2, 5, 64, 10_000] {
            assert_eq!(
                read(&text, 1024, chunk),
                (whole.clone(), 0),
                "chunk {chunk}"
            );
        }
    }

    /// An event over the limit is counted and skipped, never held whole; the next is read.
    #[test]
    fn sse_reader_skips_an_event_over_the_limit() {
        let big = "x".repeat(5000);
        let text = format!("data: {big}\n\ndata: {{\"after\":1}}\n\n");
        for chunk in [7, 100, 100_000] {
            let mut r = SseReader::new(1000);
            let (mut all, mut over) = (Vec::new(), 0);
            for part in text.as_bytes().chunks(chunk) {
                let (m, o) = r.push(part);
                all.extend(m);
                over += o;
                assert!(r.line.capacity() <= 100_000 && r.data.len() <= 1000);
            }
            assert_eq!((all, over), (vec!["{\"after\":1}".to_owned()], 1));
        }
        // Many data lines that each fit but add up past the limit.
        let lines = "data: 0123456789\n".repeat(200);
        assert_eq!(read(&format!("{lines}\n"), 1000, 13), (Vec::new(), 1));
    }

    /// A partial event is reported as such (a stream cut in the middle of one).
    #[test]
    fn sse_reader_knows_a_partial_event() {
        let mut r = SseReader::new(100);
        assert!(r.is_empty());
        let _ = r.push(b"data: {\"a\"");
        assert!(!r.is_empty());
        let (m, _) = r.push(b":1}\n\n");
        assert_eq!(m, ["{\"a\":1}"]);
        assert!(r.is_empty());
        let _ = serde_json::from_str::<Value>(&m[0]).unwrap();
    }
}
