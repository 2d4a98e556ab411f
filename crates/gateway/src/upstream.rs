//! Connections to the upstream MCP server: a child process spoken to over stdio, or a
//! Streamable HTTP endpoint. Both look the same to a session: send a JSON message, receive
//! messages (or the news that the upstream went away) on a channel.

use std::process::Stdio;
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
    tx: mpsc::UnboundedSender<Value>,
    pub rx: mpsc::UnboundedReceiver<FromUpstream>,
    child: Option<Child>,
}

impl Upstream {
    pub fn send(&self, message: Value) -> bool {
        self.tx.send(message).is_ok()
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
            drop(self.tx);
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
        tx,
        rx,
        child: Some(child),
    })
}

/// A Streamable HTTP upstream: each message is one POST; the answer (JSON or an SSE stream)
/// comes back as messages. The session id and protocol version the upstream gives are sent
/// with every later request.
fn http_upstream(url: String) -> Upstream {
    let (tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let (in_tx, rx) = mpsc::unbounded_channel::<FromUpstream>();
    tokio::spawn(async move {
        // One client for the whole process: its pool keeps HTTP/1.1 connections to the upstream
        // alive and shares them between sessions (each request carries its own session id), and
        // an idle session costs no client of its own.
        let client = shared_client();
        let url = match reqwest::Url::parse(&url) {
            Ok(u) => u,
            Err(e) => {
                let _ = in_tx.send(FromUpstream::Closed(format!(
                    "the upstream URL `{url}` is not valid: {e}"
                )));
                return;
            }
        };
        let session: std::sync::Arc<tokio::sync::Mutex<(Option<String>, Option<String>)>> =
            Default::default();
        while let Some(msg) = out_rx.recv().await {
            let client = client.clone();
            let url = url.clone();
            let in_tx = in_tx.clone();
            let session = std::sync::Arc::clone(&session);
            let init_first = is_initialize(&msg);
            // Requests run concurrently: a slow call does not hold up the others.
            let task = async move {
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
                        let _ = in_tx.send(FromUpstream::Message(e.to_string().into_bytes()));
                    } else {
                        tracing::warn!("{why}");
                    }
                };
                let is_init = is_initialize(&msg);
                let (sid, version) = session.lock().await.clone();
                let mut req = client
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
                    session.lock().await.0 = Some(s.to_owned());
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
                                session.lock().await.1 = Some(pv.to_owned());
                            }
                            if v.get("id") == id.as_ref()
                                && (v.get("result").is_some() || v.get("error").is_some())
                            {
                                answered = true;
                            }
                            if in_tx.send(FromUpstream::Message(m.into_bytes())).is_err() {
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
                    session.lock().await.1 = Some(pv.to_owned());
                }
                let _ = in_tx.send(FromUpstream::Message(body.into_bytes()));
            };
            if init_first {
                // The session id must be known before anything else is sent.
                task.await;
            } else {
                tokio::spawn(task);
            }
        }
    });
    Upstream {
        tx,
        rx,
        child: None,
    }
}

/// The process's HTTP client for upstreams (built on first use).
fn shared_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new).clone()
}

fn is_initialize(msg: &Value) -> bool {
    msg.get("method").and_then(Value::as_str) == Some("initialize")
}
