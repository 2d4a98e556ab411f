//! The mock server over real transports: MCP over stdio (one JSON message per line) and
//! Streamable HTTP (axum, at `/mcp`). Both wrap the in-process [`MockEks`]: state changes
//! happen in arrival order under one lock; a fault's latency is then slept for real, per
//! request, so a slow call does not hold up the others; effects are acted out (a crash exits
//! the process, a hang never answers, a malformed answer is a line that is not JSON, a trickle
//! sends the answer a few bytes at a time).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tollgate_mcp::protocol::{HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID};
use tollgate_mcp::{ErrorCode, ProtocolVersion, error_response};

use crate::faults::FaultEffect;
use crate::server::{Handled, MockEks};

/// The notification a `rug_pull` fault makes the server send.
const LIST_CHANGED: &str = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;

/// The exit code of a process that a `crash` fault ends.
pub const CRASH_EXIT_CODE: i32 = 70;

/// The mock shared by a transport's tasks, with the journal file it appends to.
#[derive(Debug)]
pub struct Shared {
    mock: Mutex<MockEks>,
    journal: Mutex<Option<(std::fs::File, usize)>>,
    start: Instant,
    /// A file saying `on` or `off`, read before each message: switches the faults from
    /// outside the process, and keeps the switch across a crash and restart.
    faults_switch: Option<std::path::PathBuf>,
}

impl Shared {
    /// The mock, the journal file it appends to (if any), and the file that switches its
    /// faults (`on` or `off`, read before each message; a missing file or other contents leave
    /// the faults as they are).
    pub fn new(
        mock: MockEks,
        journal: Option<std::fs::File>,
        faults_switch: Option<std::path::PathBuf>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            mock: Mutex::new(mock),
            journal: Mutex::new(journal.map(|f| (f, 0))),
            start: Instant::now(),
            faults_switch,
        })
    }

    /// Handles one message and appends the new journal entries to the journal file, one JSON
    /// line each, flushed before the answer goes out. The flag says that a `rug_pull` fault
    /// changed a tool's definition: `notifications/tools/list_changed` is due after the answer.
    pub fn handle(&self, session: &str, bytes: &[u8]) -> (Handled, bool) {
        let mut mock = self.mock.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = &self.faults_switch
            && let Ok(text) = std::fs::read_to_string(path)
        {
            match text.trim() {
                "on" => mock.set_faults_enabled(true),
                "off" => mock.set_faults_enabled(false),
                _ => {}
            }
        }
        let handled = mock.handle(session, bytes, self.start.elapsed());
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((file, written)) = journal.as_mut() {
            for entry in mock.journal().get(*written..).unwrap_or_default() {
                if let Ok(line) = serde_json::to_string(entry) {
                    // A journal write failure must not take the server down; the test reading
                    // the journal will see the gap.
                    let _ = writeln!(file, "{line}").and_then(|()| file.flush());
                }
            }
            *written = mock.journal().len();
        }
        (handled, mock.take_list_changed())
    }

    fn with_mock<T>(&self, f: impl FnOnce(&mut MockEks) -> T) -> T {
        f(&mut self.mock.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Serves MCP over this process's stdin and stdout until stdin closes. Lines longer than
/// `max_line` bytes are refused with a parse error (and skipped), never buffered whole.
pub async fn serve_stdio(shared: Arc<Shared>, max_line: usize) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        // A pipe through the event loop (tollgate_mcp::stdio says why), else tokio's stdout.
        let mut stdout = tollgate_mcp::stdio::stdout();
        while let Some(chunk) = rx.recv().await {
            // Write whatever else is already queued before flushing once.
            let mut batch = chunk;
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
                if batch.len() > 1 << 20 {
                    break;
                }
            }
            if stdout.write_all(&batch).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(tollgate_mcp::stdio::stdin());
    loop {
        let mut line = Vec::new();
        let n = (&mut reader)
            .take(max_line as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            break;
        }
        if line.len() > max_line && line.last() != Some(&b'\n') {
            // Skip the rest of the over-long line, then answer for it.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = (&mut reader)
                    .take(64 * 1024)
                    .read_until(b'\n', &mut rest)
                    .await?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            let e = error_response(
                None,
                ErrorCode::ParseError,
                &format!("message is over the limit of {max_line} bytes"),
                None,
            );
            let _ = tx.send(format!("{e}\n").into_bytes());
            continue;
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (handled, list_changed) = shared.handle("stdio", &line);
        // A `rug_pull` fault changed a tool: say so after the answer (a task of its own below
        // when the answer waits; then the notice waits with it).
        let notice = list_changed.then(|| format!("{LIST_CHANGED}\n").into_bytes());
        match handled.effect {
            Some(FaultEffect::Crash) => std::process::exit(CRASH_EXIT_CODE),
            Some(FaultEffect::Hang) => {
                // The hung call is never answered; the others are (as over HTTP, and as in
                // virtual time).
                continue;
            }
            _ => {}
        }
        let Some(response) = handled.response else {
            if let Some(n) = notice {
                let _ = tx.send(n);
            }
            continue;
        };
        if handled.latency.is_zero() && handled.effect.is_none() {
            // The common case needs no task of its own: answer in order, at once.
            let _ = tx.send(format!("{response}\n").into_bytes());
            if let Some(n) = notice {
                let _ = tx.send(n);
            }
            continue;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            if !handled.latency.is_zero() {
                tokio::time::sleep(handled.latency).await;
            }
            match handled.effect {
                Some(FaultEffect::Malformed) => {
                    let _ = tx.send(
                        b"{\"jsonrpc\": \"2.0\", \"result\": <malformed by fault>\n".to_vec(),
                    );
                }
                Some(FaultEffect::Trickle { bytes_per_second }) => {
                    let bytes = format!("{response}\n").into_bytes();
                    trickle(&bytes, bytes_per_second, |chunk| {
                        tx.send(chunk.to_vec()).is_ok()
                    })
                    .await;
                }
                _ => {
                    let _ = tx.send(format!("{response}\n").into_bytes());
                }
            }
            if let Some(n) = notice {
                let _ = tx.send(n);
            }
        });
    }
    drop(tx);
    // Answers still sleeping on a fault's latency are dropped with the process; the writer
    // finishes what was already queued.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    Ok(())
}

async fn trickle(bytes: &[u8], bytes_per_second: u64, mut send: impl FnMut(&[u8]) -> bool) {
    let chunk = usize::try_from(bytes_per_second.clamp(1, 1 << 20))
        .unwrap_or(1)
        .div_ceil(10)
        .max(1);
    for part in bytes.chunks(chunk) {
        if !send(part) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Options of the HTTP transport.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// The largest request body (413 above it).
    pub max_body: usize,
    /// Answer every request with an SSE stream, even when the client accepts JSON.
    pub always_sse: bool,
}

#[derive(Debug)]
struct HttpState {
    shared: Arc<Shared>,
    sessions: AtomicU64,
    options: HttpOptions,
}

/// The Streamable HTTP router: `POST /mcp`, `DELETE /mcp`, `GET /mcp` (405: this server
/// opens no server-to-client stream).
pub fn router(shared: Arc<Shared>, options: HttpOptions) -> Router {
    let state = Arc::new(HttpState {
        shared,
        sessions: AtomicU64::new(0),
        options,
    });
    Router::new()
        .route("/mcp", post(http_post).delete(http_delete).get(http_get))
        .layer(DefaultBodyLimit::max(options.max_body))
        .with_state(state)
}

fn rpc_error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = error_response(None, code, message, None);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn session_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn http_post(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // A body over the limit (or one that broke off) gets the JSON-RPC error the docs promise,
    // not axum's plain-text rejection.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let (code, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                (
                    ErrorCode::ParseError,
                    format!(
                        "message is over the limit of {} bytes",
                        state.options.max_body
                    ),
                )
            } else {
                (
                    ErrorCode::InvalidRequest,
                    format!(
                        "the request body could not be read: {}",
                        rejection.body_text()
                    ),
                )
            };
            return rpc_error_response(status, code, &message);
        }
    };
    if !tollgate_mcp::http::origin_is_local(
        headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()),
    ) {
        return rpc_error_response(
            StatusCode::FORBIDDEN,
            ErrorCode::InvalidRequest,
            "Forbidden: Origin is not a local address",
        );
    }
    if let Some(v) = headers
        .get(HEADER_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        && ProtocolVersion::parse(v).is_none()
    {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            &format!("Bad Request: unsupported MCP-Protocol-Version `{v}`"),
        );
    }
    let tollgate_mcp::http::BodyKind {
        opens_session: initialize,
        stateless,
    } = tollgate_mcp::http::body_kind(&body);
    let mut new_session = None;
    let session = if initialize {
        let n = state.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("mock-session-{n}");
        new_session = Some(id.clone());
        id
    } else if stateless {
        "stateless".to_owned()
    } else {
        match session_header(&headers) {
            None => {
                return rpc_error_response(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "Bad Request: Mcp-Session-Id header is required (send `initialize` first)",
                );
            }
            Some(id) if !state.shared.with_mock(|m| m.has_session(&id)) => {
                return rpc_error_response(
                    StatusCode::NOT_FOUND,
                    ErrorCode::InvalidRequest,
                    "Session not found: initialize a new session",
                );
            }
            Some(id) => id,
        }
    };
    let (handled, list_changed) = state.shared.handle(&session, &body);
    match handled.effect {
        Some(FaultEffect::Crash) => std::process::exit(CRASH_EXIT_CODE),
        Some(FaultEffect::Hang) => {
            // Never answer; the client's timeout ends the exchange.
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    if !handled.latency.is_zero() {
        tokio::time::sleep(handled.latency).await;
    }
    let Some(response) = handled.response else {
        return StatusCode::ACCEPTED.into_response();
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let wants_json = accept.contains("application/json") || accept.contains("*/*");
    // A `rug_pull` fault's `notifications/tools/list_changed` goes before the answer on its SSE
    // stream, when the client accepts one (this server opens no GET stream); with a JSON
    // answer the change is only seen at the next listing.
    let accepts_sse = accept.contains("text/event-stream") || accept.contains("*/*");
    let notify = list_changed && accepts_sse;
    let sse =
        notify || state.options.always_sse || (!wants_json && accept.contains("text/event-stream"));
    let text = match handled.effect {
        Some(FaultEffect::Malformed) => {
            "{\"jsonrpc\": \"2.0\", \"result\": <malformed by fault>".to_owned()
        }
        _ => response.to_string(),
    };
    let (content_type, payload) = if sse {
        let mut events = String::new();
        if notify {
            events.push_str(&tollgate_mcp::sse::encode_event(LIST_CHANGED, None));
        }
        events.push_str(&tollgate_mcp::sse::encode_event(&text, None));
        ("text/event-stream", events)
    } else {
        ("application/json", text)
    };
    let body = match handled.effect {
        Some(FaultEffect::Trickle { bytes_per_second }) => {
            let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
            let bytes = payload.into_bytes();
            tokio::spawn(async move {
                trickle(&bytes, bytes_per_second, |chunk| {
                    tx.send(Ok(Bytes::copy_from_slice(chunk))).is_ok()
                })
                .await;
            });
            Body::from_stream(tokio_stream(rx))
        }
        _ => Body::from(payload),
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(id) = new_session
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        resp.headers_mut().insert(HEADER_SESSION_ID, v);
    }
    resp
}

/// An mpsc receiver as a stream, without pulling in tokio-stream.
fn tokio_stream<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn http_delete(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    match session_header(&headers) {
        None => rpc_error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "Bad Request: Mcp-Session-Id header is required",
        ),
        Some(id) if state.shared.with_mock(|m| m.end_session(&id)) => {
            StatusCode::OK.into_response()
        }
        Some(_) => rpc_error_response(
            StatusCode::NOT_FOUND,
            ErrorCode::InvalidRequest,
            "Session not found",
        ),
    }
}

async fn http_get() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
        "this server opens no server-to-client stream",
    )
        .into_response()
}

/// [`serve_http`] over https with `tls` (`tollgate_mcp::tls::server_config`): each connection's
/// handshake runs in its own task, bounded by [`tollgate_mcp::tls::DEFAULT_HANDSHAKE_TIMEOUT`],
/// at most [`PENDING_HANDSHAKES`] at once (a client that never completes one is dropped then).
pub async fn serve_https(
    listener: tokio::net::TcpListener,
    tls: Arc<tollgate_mcp::tls::ServerConfig>,
    shared: Arc<Shared>,
    options: HttpOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TlsListener::new(listener, tls)?;
    axum::serve(listener, router(shared, options))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Handshakes of the mock's https listener under way at once; the next connection waits to be
/// accepted.
pub const PENDING_HANDSHAKES: usize = 64;

/// A TCP listener whose connections come out of a TLS handshake: a task accepts and hands each
/// connection to a handshake task of its own; the completed ones queue for axum.
struct TlsListener {
    done: mpsc::Receiver<(
        tollgate_mcp::tls::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
    accepter: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(
        listener: tokio::net::TcpListener,
        tls: Arc<tollgate_mcp::tls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = tollgate_mcp::tls::TlsAcceptor::from(tls);
        let (tx, done) = mpsc::channel(PENDING_HANDSHAKES);
        let pending = Arc::new(tokio::sync::Semaphore::new(PENDING_HANDSHAKES));
        let accepter = tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&pending).acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = tollgate_mcp::tls::accept(
                        &acceptor,
                        stream,
                        tollgate_mcp::tls::DEFAULT_HANDSHAKE_TIMEOUT,
                    )
                    .await;
                    drop(permit);
                    match handshake {
                        Ok(tls) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Err(e) => tracing::debug!("closed a connection from {addr}: {e}"),
                    }
                });
            }
        });
        Ok(TlsListener {
            done,
            local,
            accepter,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepter.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tollgate_mcp::tls::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.done.recv().await {
            Some(connection) => connection,
            // The accepting task ended (its listener failed for good): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves the router on a bound listener until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    options: HttpOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared, options))
        .with_graceful_shutdown(shutdown)
        .await
}
