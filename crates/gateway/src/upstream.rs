//! Connections to the upstream MCP server: a child process spoken to over stdio, or a
//! Streamable HTTP endpoint. Both look the same to a session: send a JSON message, receive
//! messages (or the news that the upstream went away) on a channel.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
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
    Command { program: String, args: Vec<String> },
    Url(String),
}

/// A live connection: send with [`Upstream::send`], receive on `rx`.
#[derive(Debug)]
pub struct Upstream {
    out: Outbox,
    pub rx: mpsc::UnboundedReceiver<FromUpstream>,
    child: Option<Child>,
}

/// Where [`Upstream::send`] puts a message.
#[derive(Debug)]
enum Outbox {
    /// The child's stdin writer task.
    Child(mpsc::UnboundedSender<Value>),
    /// A Streamable HTTP upstream: each message spawns its own exchange.
    Http(Arc<HttpCtx>),
}

impl Upstream {
    pub fn send(&self, message: Value) -> bool {
        match &self.out {
            Outbox::Child(tx) => tx.send(message).is_ok(),
            Outbox::Http(ctx) => {
                HttpCtx::send(ctx, message);
                true
            }
        }
    }

    /// Connects (spawns the child, or prepares the HTTP client).
    pub fn connect(spec: &UpstreamSpec, max_line: usize) -> std::io::Result<Upstream> {
        match spec {
            UpstreamSpec::Command { program, args } => spawn_child(program, args, max_line),
            UpstreamSpec::Url(url) => Ok(http_upstream(url.clone())),
        }
    }

    /// Stops the child, if any.
    pub async fn shutdown(mut self) {
        if let Some(mut child) = self.child.take() {
            drop(self.out);
            // A well-behaved server exits when its stdin closes; give it a moment.
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

fn spawn_child(program: &str, args: &[String], max_line: usize) -> std::io::Result<Upstream> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other(
            "the child's stdio could not be captured",
        ));
    };
    let (tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let (in_tx, rx) = mpsc::unbounded_channel::<FromUpstream>();
    tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            // Write whatever else is already queued before flushing once.
            let mut batch = format!("{msg}\n");
            while let Ok(more) = out_rx.try_recv() {
                batch.push_str(&format!("{more}\n"));
                if batch.len() > 1 << 20 {
                    break;
                }
            }
            if stdin.write_all(batch.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match (&mut reader)
                .take(max_line as u64 + 1)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) => {
                    let _ = in_tx.send(FromUpstream::Closed(
                        "the upstream process closed its output".into(),
                    ));
                    return;
                }
                Ok(_) if line.len() > max_line && line.last() != Some(&b'\n') => {
                    // An oversized answer cannot be trusted or matched: skip to the next line;
                    // the call's timeout answers the client.
                    let mut rest = Vec::new();
                    loop {
                        rest.clear();
                        match (&mut reader)
                            .take(64 * 1024)
                            .read_until(b'\n', &mut rest)
                            .await
                        {
                            Ok(0) | Err(_) => break,
                            Ok(_) if rest.last() == Some(&b'\n') => break,
                            Ok(_) => {}
                        }
                    }
                    tracing::warn!("dropped an upstream message over {max_line} bytes");
                }
                Ok(_) => {
                    while matches!(line.last(), Some(b'\n' | b'\r')) {
                        line.pop();
                    }
                    if !line.is_empty() && in_tx.send(FromUpstream::Message(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = in_tx.send(FromUpstream::Closed(format!(
                        "reading the upstream failed: {e}"
                    )));
                    return;
                }
            }
        }
    });
    Ok(Upstream {
        out: Outbox::Child(tx),
        rx,
        child: Some(child),
    })
}

/// A Streamable HTTP upstream: each message is one POST; the answer (JSON or an SSE stream)
/// comes back as messages. The session id and protocol version the upstream gives are sent
/// with every later request. Each message's exchange is a task of its own, spawned where the
/// session sends it (a slow call does not hold up the others); an `initialize` holds the
/// session's state for writing until its exchange is done, so every later request waits for
/// the session id it gives.
fn http_upstream(url: String) -> Upstream {
    let (in_tx, rx) = mpsc::unbounded_channel::<FromUpstream>();
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("`{url}` is not a valid URL: {e}"));
    let ctx = Arc::new(HttpCtx {
        // One client for the whole process: its pool keeps HTTP/1.1 connections to the
        // upstream alive and shares them between sessions (each request carries its own
        // session id), and an idle session costs no client of its own.
        client: shared_client(),
        url: parsed,
        in_tx,
        session: Arc::default(),
    });
    Upstream {
        out: Outbox::Http(ctx),
        rx,
        child: None,
    }
}

/// What one session's HTTP exchanges share.
#[derive(Debug)]
struct HttpCtx {
    client: reqwest::Client,
    url: Result<reqwest::Url, String>,
    in_tx: mpsc::UnboundedSender<FromUpstream>,
    /// The upstream's session id and negotiated protocol version.
    session: Arc<tokio::sync::RwLock<SessionState>>,
}

type SessionState = (Option<String>, Option<String>);

impl HttpCtx {
    fn send(ctx: &Arc<HttpCtx>, msg: Value) {
        // Taken here, in the order the session sends, so no later request can go first.
        let guard = if is_initialize(&msg) {
            Arc::clone(&ctx.session).try_write_owned().ok()
        } else {
            None
        };
        tokio::spawn(exchange(Arc::clone(ctx), msg, guard));
    }
}

/// One message's POST and its answer.
async fn exchange(
    ctx: Arc<HttpCtx>,
    msg: Value,
    guard: Option<tokio::sync::OwnedRwLockWriteGuard<SessionState>>,
) {
    let is_init = is_initialize(&msg);
    let mut guard = match guard {
        // The lock was busy when it was sent (a reader finishing): wait for it here.
        None if is_init => Some(Arc::clone(&ctx.session).write_owned().await),
        g => g,
    };
    let id = msg.get("id").cloned();
    // An HTTP failure is answered as a JSON-RPC error for the request that met it.
    let fail = |why: String| {
        if let Some(id) = &id {
            let e = tollgate_mcp::error_response(
                Some(id),
                tollgate_mcp::ErrorCode::InternalError,
                &why,
                None,
            );
            let _ = ctx
                .in_tx
                .send(FromUpstream::Message(e.to_string().into_bytes()));
        } else {
            tracing::warn!("{why}");
        }
    };
    let url = match &ctx.url {
        Ok(u) => u,
        Err(e) => return fail(format!("the upstream cannot be reached: {e}")),
    };
    let (sid, version) = match &guard {
        Some(g) => (**g).clone(),
        None => ctx.session.read().await.clone(),
    };
    let mut req = ctx
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
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return fail(format!("the upstream {url} cannot be reached: {e}")),
    };
    if let Some(s) = resp
        .headers()
        .get(HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
    {
        match guard.as_mut() {
            Some(g) => g.0 = Some(s.to_owned()),
            None => ctx.session.write().await.0 = Some(s.to_owned()),
        }
    }
    let status = resp.status();
    let is_sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    if status == reqwest::StatusCode::ACCEPTED {
        return;
    }
    if is_sse && status.is_success() {
        // Read the stream as it comes: a server may send requests (sampling,
        // elicitation) or progress before its answer, and wait for the client.
        let mut stream = resp.bytes_stream();
        let mut buffer = String::new();
        let mut answered = false;
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            let Ok(chunk) = chunk else { break };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            let normalized = buffer.replace("\r\n", "\n");
            let Some(cut) = normalized.rfind("\n\n") else {
                buffer = normalized;
                continue;
            };
            let (complete, rest) = normalized.split_at(cut + 2);
            for m in tollgate_mcp::sse::decode_events(complete) {
                let Ok(v) = serde_json::from_str::<Value>(&m) else {
                    return fail("the upstream sent an event that is not JSON".into());
                };
                if is_init && let Some(pv) = v["result"]["protocolVersion"].as_str() {
                    if let Some(g) = guard.as_mut() {
                        g.1 = Some(pv.to_owned());
                    }
                }
                if v.get("id") == id.as_ref()
                    && (v.get("result").is_some() || v.get("error").is_some())
                {
                    answered = true;
                }
                if ctx
                    .in_tx
                    .send(FromUpstream::Message(m.into_bytes()))
                    .is_err()
                {
                    return;
                }
            }
            buffer = rest.to_owned();
        }
        if !answered && id.is_some() && msg.get("method").is_some() {
            let what = if buffer.trim().is_empty() {
                "ended"
            } else {
                "was cut"
            };
            return fail(format!(
                "the upstream's event stream {what} before the answer (the data so far is not JSON)"
            ));
        }
        return;
    }
    let body = match resp.text().await {
        Ok(b) => b,
        Err(e) => return fail(format!("the upstream's answer broke off: {e}")),
    };
    if status.is_success() && body.trim().is_empty() {
        return;
    }
    // Checked without building a value: the session core parses the answer itself.
    let is_json = serde_json::from_str::<serde::de::IgnoredAny>(&body).is_ok();
    if !status.is_success() && !is_json {
        let excerpt: String = body.chars().take(200).collect();
        return fail(format!("the upstream answered HTTP {status}: {excerpt}"));
    }
    if !is_json {
        return fail("the upstream answered with something that is not JSON".into());
    }
    if is_init
        && let Ok(v) = serde_json::from_str::<Value>(&body)
        && let Some(pv) = v["result"]["protocolVersion"].as_str()
    {
        if let Some(g) = guard.as_mut() {
            g.1 = Some(pv.to_owned());
        }
    }
    let _ = ctx.in_tx.send(FromUpstream::Message(body.into_bytes()));
}

/// The process's HTTP client for upstreams (built on first use).
fn shared_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new).clone()
}

fn is_initialize(msg: &Value) -> bool {
    msg.get("method").and_then(Value::as_str) == Some("initialize")
}
