//! A deliberately naive upstream MCP server, for tests: it trusts whatever reaches it, so every
//! message the gateway lets through undecided shows up as an execution.
//!
//! - It answers `initialize`, `server/discover` and `tools/list` (a fixed set of tools with
//!   input schemas, some annotated read-only or destructive), and every other request with an
//!   empty result; notifications and responses get no answer.
//! - It accepts batches whatever the protocol version.
//! - It **runs** every message whose method is `tools/call` compared loosely ([`loose_method`]:
//!   trimmed, ASCII case folded, every character that is not an ASCII letter or digit
//!   ignored), request or notification, single or inside a batch, with the tool and arguments
//!   its lenient parse reads (serde_json's default: the last of duplicate keys wins). A tool
//!   it does not know still counts as run (the answer says `Unknown tool`): a call that was
//!   never decided must never reach it, whatever it names.
//! - Every answer but `initialize`'s names the request it answers in its result's `_meta`
//!   ([`ECHO`]: method, id, client), so an answer that reaches the wrong request or the wrong
//!   client can be told.
//! - Every execution is logged ([`Execution`]): the tool, the arguments as it parsed them,
//!   what it can see of who sent it ([`Facts`]: never an `Authorization` header), and the raw
//!   message. Over HTTP the log is shared in process ([`ExecLog::Memory`]); the stdio server
//!   (`tollgate naive-upstream --log FILE`, a child process) appends JSON lines to a file,
//!   each written before its answer, so an answer seen means its execution is on disk.
//!
//! Over stdio it reads one JSON message per line; over Streamable HTTP it serves `POST /mcp`
//! with JSON answers, and `initialize` gives an `Mcp-Session-Id`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tollgate_mcp::protocol::{
    HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID, META_CLIENT_INFO, META_PROTOCOL_VERSION,
};
use tollgate_mcp::{ErrorCode, ProtocolVersion, error_response, result_response};

/// The server's name in `serverInfo`.
pub const SERVER_NAME: &str = "tollgate-naive-upstream";

/// The largest message the naive server reads (bigger ones are refused, not run).
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// The method with everything a loose comparison ignores taken out: ASCII letters (lower
/// case) and digits only. `Tools/Call`, ` tools/call `, `tools.call`, `TOOLS_CALL` and
/// `tools/call\u{200b}` all give `toolscall`.
pub fn loose_method(method: &str) -> String {
    method
        .trim()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether the naive server runs a message with this method.
pub fn runs_as_tools_call(method: &str) -> bool {
    loose_method(method) == "toolscall"
}

/// The naive server's tools, as its `tools/list` gives them.
pub fn tools() -> Value {
    let string = || json!({"type": "string"});
    let integer = || json!({"type": "integer"});
    json!([
        {"name": "read_file", "description": "Read a file.",
         "inputSchema": {"type": "object", "properties": {"path": string(), "max_bytes": integer()}, "required": ["path"]},
         "annotations": {"readOnlyHint": true}},
        {"name": "list_dir", "description": "List a folder.",
         "inputSchema": {"type": "object", "properties": {"path": string()}},
         "annotations": {"readOnlyHint": true}},
        {"name": "search", "description": "Search documents.",
         "inputSchema": {"type": "object", "properties": {"query": string(), "limit": integer()}, "required": ["query"]},
         "annotations": {"readOnlyHint": true, "openWorldHint": true}},
        {"name": "write_file", "description": "Write a file.",
         "inputSchema": {"type": "object", "properties": {"path": string(), "content": string()}, "required": ["path", "content"]}},
        {"name": "delete_file", "description": "Delete a file.",
         "inputSchema": {"type": "object", "properties": {"path": string()}, "required": ["path"]},
         "annotations": {"destructiveHint": true}},
        {"name": "run_command", "description": "Run a shell command.",
         "inputSchema": {"type": "object", "properties": {"command": string(), "timeout_s": {"type": "number"}}, "required": ["command"]},
         "annotations": {"destructiveHint": true, "openWorldHint": true}},
        {"name": "deploy", "description": "Deploy the service.",
         "inputSchema": {"type": "object", "properties": {"env": {"type": "string", "enum": ["dev", "staging", "prod"]}, "replicas": integer(), "force": {"type": "boolean"}}, "required": ["env"]}},
        {"name": "kv", "description": "A key-value store.",
         "inputSchema": {"type": "object", "properties": {"op": {"type": "string", "enum": ["get", "put", "del"]}, "key": string(), "value": {}}, "required": ["op", "key"]}},
        {"name": "send_email", "description": "Send an email.",
         "inputSchema": {"type": "object", "properties": {"to": string(), "body": string()}, "required": ["to"]},
         "annotations": {"openWorldHint": true}},
    ])
}

/// The names of [`tools`].
pub const TOOL_NAMES: [&str; 9] = [
    "read_file",
    "list_dir",
    "search",
    "write_file",
    "delete_file",
    "run_command",
    "deploy",
    "kv",
    "send_email",
];

/// One message the naive server ran as a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// `params.name` as parsed (normally a string; whatever it was otherwise, `null` when
    /// missing).
    pub tool: Value,
    /// `params.arguments` as parsed, `null` when missing.
    pub arguments: Value,
    /// The request's id; `None` for a notification.
    pub id: Option<Value>,
    /// The method as it arrived.
    pub method: String,
    pub facts: Facts,
    /// The wire message it came in (the whole batch, for an item of one), as text.
    pub raw: String,
}

/// What the naive server can tell about who sent a message (never a credential).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// `stdio` or `http`.
    pub transport: String,
    /// Its own session: the `Mcp-Session-Id` it gave (HTTP), or `pid-N` (stdio: one process
    /// per gateway session).
    pub session: Option<String>,
    /// The client: named by the connection (a stdio child started for one client, an HTTP
    /// URL with `?client=NAME`), else the `clientInfo.name` of the session's `initialize`, else
    /// that of the message's stateless `_meta` envelope.
    pub client: Option<String>,
    /// The protocol version: the `Mcp-Protocol-Version` header, the version `initialize`
    /// negotiated, or the `_meta` envelope's.
    pub protocol_version: Option<String>,
    /// The item's place in a batch, for a batch.
    pub batch_index: Option<usize>,
}

/// Where executions are logged.
#[derive(Debug, Clone)]
pub enum ExecLog {
    /// In process, shared with the test that reads it.
    Memory(Arc<Mutex<Vec<Execution>>>),
    /// Appended to a file, one JSON line each, written (one `write(2)`) before the answer.
    File(Arc<Mutex<std::fs::File>>),
    /// JSON lines on stderr (`naive-upstream` without `--log`).
    Stderr,
}

impl ExecLog {
    /// A new, empty in-process log.
    pub fn memory() -> ExecLog {
        ExecLog::Memory(Arc::default())
    }

    /// Appending to `path` (created if missing).
    pub fn file(path: &std::path::Path) -> std::io::Result<ExecLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(ExecLog::File(Arc::new(Mutex::new(file))))
    }

    fn push(&self, e: Execution) {
        match self {
            ExecLog::Memory(log) => log.lock().unwrap_or_else(PoisonError::into_inner).push(e),
            ExecLog::File(file) => {
                let mut line = serde_json::to_vec(&e).unwrap_or_default();
                line.push(b'\n');
                let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(err) = file.write_all(&line) {
                    tracing::error!("cannot log an execution: {err}");
                }
            }
            ExecLog::Stderr => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "{}",
                    serde_json::to_string(&e).unwrap_or_default()
                );
            }
        }
    }

    /// What an in-process log holds so far (empty for the others).
    pub fn snapshot(&self) -> Vec<Execution> {
        match self {
            ExecLog::Memory(log) => log.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            _ => Vec::new(),
        }
    }
}

/// Reads an execution log file (JSON lines); lines that do not parse are skipped (a child
/// killed in the middle of a write leaves at most one).
pub fn read_log(path: &std::path::Path) -> std::io::Result<Vec<Execution>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// What a connection knows of its sender when a message arrives.
#[derive(Debug, Clone, Default)]
pub struct Sender {
    pub transport: &'static str,
    pub session: Option<String>,
    pub client: Option<String>,
    pub protocol_version: Option<String>,
}

/// What one wire message did.
#[derive(Debug, Default)]
pub struct Handled {
    /// The answer to send (`None`: nothing to answer).
    pub answer: Option<Value>,
    /// Set by an `initialize`: the client's name and the negotiated version.
    pub initialized: Option<(Option<String>, String)>,
}

/// Handles one wire message (a message or a batch) from `sender`, logging what it runs.
pub fn handle(bytes: &[u8], sender: &Sender, log: &ExecLog) -> Handled {
    let mut handled = Handled::default();
    if bytes.len() > MAX_MESSAGE {
        handled.answer = Some(error_response(
            None,
            ErrorCode::ParseError,
            "message too large",
            None,
        ));
        return handled;
    }
    let raw = String::from_utf8_lossy(bytes);
    let value = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(e) => {
            handled.answer = Some(error_response(
                None,
                ErrorCode::ParseError,
                &format!("not JSON: {e}"),
                None,
            ));
            return handled;
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => {
            handled.answer = Some(error_response(
                None,
                ErrorCode::InvalidRequest,
                "empty batch",
                None,
            ));
        }
        Value::Array(items) => {
            let answers: Vec<Value> = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| item_answer(item, Some(i), &raw, sender, log, &mut handled))
                .collect();
            if !answers.is_empty() {
                handled.answer = Some(Value::Array(answers));
            }
        }
        item => {
            handled.answer = item_answer(&item, None, &raw, sender, log, &mut handled);
        }
    }
    handled
}

/// The stateless `_meta` envelope's client name and version, if the message has one.
fn meta_of(item: &Value) -> (Option<String>, Option<String>) {
    let meta = item.get("params").and_then(|p| p.get("_meta"));
    let client = meta
        .and_then(|m| m.get(META_CLIENT_INFO))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let version = meta
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        .map(str::to_owned);
    (client, version)
}

fn item_answer(
    item: &Value,
    batch_index: Option<usize>,
    raw: &str,
    sender: &Sender,
    log: &ExecLog,
    handled: &mut Handled,
) -> Option<Value> {
    let Some(obj) = item.as_object() else {
        return Some(error_response(
            None,
            ErrorCode::InvalidRequest,
            "a message is an object",
            None,
        ));
    };
    // A message without a string method is a response (or garbage): nothing to answer.
    let method = obj.get("method").and_then(Value::as_str)?;
    let id = obj.get("id");
    let params = obj.get("params");
    if runs_as_tools_call(method) {
        let (meta_client, meta_version) = meta_of(item);
        let client = sender.client.clone().or(meta_client);
        let tool = params
            .and_then(|p| p.get("name"))
            .cloned()
            .unwrap_or(Value::Null);
        let arguments = params
            .and_then(|p| p.get("arguments"))
            .cloned()
            .unwrap_or(Value::Null);
        log.push(Execution {
            tool: tool.clone(),
            arguments,
            id: id.cloned(),
            method: method.to_owned(),
            facts: Facts {
                transport: sender.transport.to_owned(),
                session: sender.session.clone(),
                client: client.clone(),
                protocol_version: sender.protocol_version.clone().or(meta_version),
                batch_index,
            },
            raw: raw.to_owned(),
        });
        let name = tool.as_str().unwrap_or_default();
        let known = TOOL_NAMES.contains(&name);
        let text = if known {
            format!("ran {name}")
        } else {
            format!("Unknown tool: {tool}")
        };
        return id.map(|id| {
            result_response(
                id,
                json!({
                    "content": [{"type": "text", "text": text}],
                    "isError": !known,
                    "_meta": {ECHO: echo(method, id, client.as_deref())},
                }),
            )
        });
    }
    let id = id?;
    let result = match method {
        "initialize" => {
            let requested = params
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let version = ProtocolVersion::negotiate(requested).as_str().to_owned();
            let client = params
                .and_then(|p| p.get("clientInfo"))
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            handled.initialized = Some((client, version.clone()));
            json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION")},
            })
        }
        "server/discover" => json!({
            "supportedVersions": ProtocolVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION")},
        }),
        "tools/list" => json!({"tools": tools()}),
        _ => json!({}),
    };
    let mut result = result;
    if method != "initialize" {
        let client = sender.client.clone().or_else(|| meta_of(item).0);
        result["_meta"] = json!({ECHO: echo(method, id, client.as_deref())});
    }
    Some(result_response(id, result))
}

/// The `_meta` key under which an answer names the request it answers.
pub const ECHO: &str = "tollgate-naive/answers";

/// What every answer (but `initialize`'s) says about its request, in its result's `_meta`
/// ([`ECHO`]): the method, the id and the client as the naive server saw them, so a test can
/// tell an answer delivered to the wrong request or the wrong client.
fn echo(method: &str, id: &Value, client: Option<&str>) -> Value {
    json!({"method": method, "id": id, "client": client})
}

/// Serves the naive upstream over this process's stdin and stdout until stdin closes, one
/// JSON message per line, logging executions to `log`. `client` names the one client behind
/// this process when its starter knows it (a test that runs one gateway session per client);
/// otherwise the first `initialize` names it.
pub fn serve_stdio(log: &ExecLog, client: Option<String>) -> std::io::Result<()> {
    let mut sender = Sender {
        transport: "stdio",
        session: Some(format!("pid-{}", std::process::id())),
        client,
        ..Sender::default()
    };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let handled = handle(&line, &sender, log);
        // The first `initialize` names the session's client for good (a gateway restarts a
        // child with the client's own `initialize`, so it is the same client).
        if let Some((client, version)) = handled.initialized
            && sender.client.is_none()
        {
            sender.client = client;
            sender.protocol_version = Some(version);
        }
        if let Some(answer) = handled.answer {
            let mut text = serde_json::to_vec(&answer).unwrap_or_default();
            text.push(b'\n');
            stdout.write_all(&text)?;
            stdout.flush()?;
        }
    }
    Ok(())
}

/// The naive HTTP server's state: its sessions, its log, and how many requests it is
/// handling now (a test waits for none before it reads the log).
#[derive(Debug)]
pub struct NaiveHttp {
    pub log: ExecLog,
    sessions: Mutex<HashMap<String, Sender>>,
    next: AtomicU64,
    in_flight: AtomicUsize,
}

impl NaiveHttp {
    pub fn new(log: ExecLog) -> Arc<NaiveHttp> {
        Arc::new(NaiveHttp {
            log,
            sessions: Mutex::default(),
            next: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// How many requests are being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// `POST /mcp` (any other method on `/mcp` is 405: no server-to-client stream).
pub fn router(state: Arc<NaiveHttp>) -> Router {
    Router::new()
        .route("/mcp", post(http_post))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE))
        .with_state(state)
}

/// Decrements the in-flight count when the request is done, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn http_post(
    State(state): State<Arc<NaiveHttp>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let _done = InFlight(&state.in_flight);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let session = header(HEADER_SESSION_ID);
    let mut sender = session
        .as_ref()
        .and_then(|s| {
            state
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(s)
                .cloned()
        })
        .unwrap_or_else(|| Sender {
            transport: "http",
            session: session.clone(),
            ..Sender::default()
        });
    // A URL made for one client (`/mcp?client=NAME`, a test that gives each gateway session
    // its own upstream URL) names it, whatever the messages say.
    if let Some(name) = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("client="))
    {
        sender.client = Some(name.to_owned());
    }
    if let Some(v) = header(HEADER_PROTOCOL_VERSION) {
        sender.protocol_version = Some(v);
    }
    let handled = handle(&body, &sender, &state.log);
    let mut new_session = None;
    if let Some((client, version)) = handled.initialized {
        let n = state.next.fetch_add(1, Ordering::SeqCst) + 1;
        let id = format!("naive-{n}");
        state
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id.clone(),
                Sender {
                    transport: "http",
                    session: Some(id.clone()),
                    client,
                    protocol_version: Some(version),
                },
            );
        new_session = Some(id);
    }
    let Some(answer) = handled.answer else {
        return StatusCode::ACCEPTED.into_response();
    };
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response();
    if let Some(id) = new_session
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        response.headers_mut().insert(HEADER_SESSION_ID, v);
    }
    response
}

/// Serves the naive upstream over Streamable HTTP on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    state: Arc<NaiveHttp>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn run(text: &str) -> (Handled, Vec<Execution>) {
        let log = ExecLog::memory();
        let sender = Sender {
            transport: "stdio",
            session: Some("s".into()),
            client: Some("c".into()),
            protocol_version: None,
        };
        let handled = handle(text.as_bytes(), &sender, &log);
        (handled, log.snapshot())
    }

    /// The loose comparison runs every spelling that differs from `tools/call` in case,
    /// surrounding whitespace, separators or characters that are not ASCII letters or digits,
    /// and nothing else.
    #[test]
    fn loose_method_runs_every_spelling_of_tools_call() {
        for m in [
            "tools/call",
            "Tools/Call",
            "TOOLS/CALL",
            "tools/call ",
            "\ttools/call\n",
            "tools.call",
            "tools_call",
            "toolscall",
            "tools//call",
            "tools/call\u{200b}",
            "tools/\u{0430}call",
        ] {
            assert!(runs_as_tools_call(m), "{m:?}");
        }
        for m in ["tools/list", "t\u{043e}ols/call", "tools/calls", "ping", ""] {
            assert!(!runs_as_tools_call(m), "{m:?}");
        }
    }

    /// Requests and notifications are run alike, single or inside a batch, and the lenient
    /// parse keeps the last of duplicated keys.
    #[test]
    fn runs_notifications_batches_and_the_last_duplicate() {
        let (h, e) = run(
            r#"{"jsonrpc":"2.0","method":"Tools/Call","params":{"name":"read_file","name":"delete_file","arguments":{"path":"/x"}}}"#,
        );
        assert!(h.answer.is_none());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].tool, json!("delete_file"));
        assert_eq!(e[0].id, None);
        assert_eq!(e[0].facts.client.as_deref(), Some("c"));
        let (h, e) = run(
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kv","arguments":{"op":"get","key":"k"}}},{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
        );
        let answer = h.answer.unwrap();
        assert_eq!(answer.as_array().unwrap().len(), 2);
        assert_eq!(answer[0]["id"], json!(1));
        assert_eq!(
            answer[1],
            json!({"jsonrpc": "2.0", "id": 2, "result": {"_meta": {ECHO: {"method": "ping", "id": 2, "client": "c"}}}})
        );
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].facts.batch_index, Some(0));
        assert_eq!(e[0].arguments, json!({"op": "get", "key": "k"}));
    }

    /// The handshake: `initialize` names the client and negotiates a version; `tools/list`
    /// gives the fixed tools; garbage is a parse error, never a crash.
    #[test]
    fn answers_the_handshake_and_refuses_garbage() {
        let (h, e) = run(
            r#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2025-06-18","clientInfo":{"name":"fuzz-c0"}}}"#,
        );
        assert!(e.is_empty());
        assert_eq!(
            h.initialized,
            Some((Some("fuzz-c0".into()), "2025-06-18".into()))
        );
        assert_eq!(h.answer.unwrap()["result"]["protocolVersion"], "2025-06-18");
        let (h, _) = run(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
        assert_eq!(
            h.answer.unwrap()["result"]["tools"]
                .as_array()
                .unwrap()
                .len(),
            TOOL_NAMES.len()
        );
        for bad in ["{", "[]", "7", "\u{feff}{}"] {
            let (h, e) = run(bad);
            assert!(e.is_empty());
            assert!(h.answer.unwrap()["error"].is_object(), "{bad}");
        }
    }

    /// A stateless message names its client in its `_meta` envelope.
    #[test]
    fn a_stateless_message_names_its_client_in_meta() {
        let log = ExecLog::memory();
        let sender = Sender {
            transport: "http",
            ..Sender::default()
        };
        let text = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kv","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"fuzz-c2"}}}}"#;
        let _ = handle(text.as_bytes(), &sender, &log);
        let e = log.snapshot();
        assert_eq!(e[0].facts.client.as_deref(), Some("fuzz-c2"));
        assert_eq!(e[0].facts.protocol_version.as_deref(), Some("2026-07-28"));
    }
}
