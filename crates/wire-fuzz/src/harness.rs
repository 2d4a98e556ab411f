//! Running one [`Case`] for real: a fresh gateway (its own audit log, counters and clock) with
//! the fixed policy, in front of a fresh naive upstream, driven through one of its fronts:
//!
//! - the Streamable HTTP front: `tollgate_gateway::transport::http_router` on 127.0.0.1:0 in
//!   process, with a tokens file mapping a token to each grant; the clients are HTTP clients;
//! - the stdio session loop: `tollgate_gateway::transport::run_session` in process, fed line by
//!   line through its channels as `tollgate gateway` feeds it from its stdin.
//!
//! The upstream is the naive server over HTTP (in process) or over stdio (`tollgate
//! naive-upstream`, a child process per gateway session, as the gateway runs any stdio
//! upstream). After the steps every client sends two rounds of barrier pings, so everything it
//! sent has been handled (and run) before the checks read the logs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tollgate_gateway::audit::AuditLog;
use tollgate_gateway::core::{Gateway, GatewayOptions};
use tollgate_gateway::tokens::Tokens;
use tollgate_gateway::transport::{
    Auth, ClientInput, Clock, HttpFront, TransportLimits, run_session, serve,
};
use tollgate_gateway::upstream::{NamedUpstream, UpstreamSpec};
use tollgate_mcp::Limits;
use tollgate_mcp::protocol::{HEADER_PROTOCOL_VERSION, HEADER_SESSION_ID};
use tollgate_policy::{Engine, MemoryStore, Policy};

use crate::check::{ClientInfo, Observed, Reply, Sent, Stats, expected};
use crate::naive::{ExecLog, NaiveHttp};
use crate::wire::{
    Case, ClientSpec, GRANTS, INITIALIZED, LIMIT, Sender, Transport, barrier, client_name,
    initialize, render, show,
};

/// The fixed policy the wire fuzzer runs (over the naive upstream's tools).
pub const POLICY: &str = include_str!("policy.json");

/// How long a forwarded call may wait for the naive upstream (it answers at once: far more
/// than the bounded wait, so a call that is never answered is a hang, not a timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One message of a case, as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Planned {
    pub client: usize,
    pub bytes: Vec<u8>,
    pub label: String,
    /// Wait for its answers before the next message.
    pub wait: bool,
    /// The bearer token it carries (HTTP).
    pub token: &'static str,
    /// It is the client's `initialize` (HTTP: it opens the session).
    pub opens_session: bool,
}

fn sender(i: usize, c: &ClientSpec, upstreams: usize) -> Sender {
    Sender {
        upstreams,
        name: client_name(i),
        stateless: c.stateless(),
    }
}

/// The name a stateless client gives in `_meta` when it presents `grant`'s token instead of
/// its own (over HTTP the token, which the upstream never sees, picks the gateway session).
pub fn stateless_alias(i: usize, grant: &str) -> String {
    format!("{}~{grant}", client_name(i))
}

/// Every message a case sends, in order: the handshakes, the steps, two rounds of barriers.
/// Over stdio a message with line breaks is the lines the gateway reads.
pub fn plan(case: &Case) -> Vec<Planned> {
    let mut out = Vec::new();
    let stdio = case.front == Transport::Stdio;
    let mut push = |client: usize, bytes: Vec<u8>, label: String, wait, token, opens_session| {
        if !stdio {
            out.push(Planned {
                client,
                bytes,
                label,
                wait,
                token,
                opens_session,
            });
            return;
        }
        // As `tollgate gateway` reads its stdin: split at line feeds, a trailing `\r` dropped,
        // blank lines skipped.
        let lines: Vec<Vec<u8>> = bytes
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .collect();
        let n = lines.len();
        for (k, line) in lines.into_iter().enumerate() {
            out.push(Planned {
                client,
                bytes: line,
                label: if n == 1 {
                    label.clone()
                } else {
                    format!("{label}, line {}", k + 1)
                },
                wait: wait && k + 1 == n,
                token,
                opens_session,
            });
        }
    };
    for (i, c) in case.clients.iter().enumerate() {
        if !c.stateless() {
            push(
                i,
                initialize(i, c.version()).into_bytes(),
                "handshake".into(),
                true,
                c.token(),
                true,
            );
            push(
                i,
                INITIALIZED.as_bytes().to_vec(),
                "handshake".into(),
                true,
                c.token(),
                false,
            );
        }
    }
    let n = case.clients.len().max(1);
    for (k, step) in case.steps.iter().enumerate() {
        let i = step.client % n;
        let Some(c) = case.clients.get(i) else {
            continue;
        };
        let (token, grant) = step
            .token
            .map_or((c.token(), c.grant()), |t| GRANTS[t % GRANTS.len()]);
        let mut from = sender(i, c, case.upstreams);
        if !stdio && grant != c.grant() {
            // A stateless request goes to the session of the token's grant: its `_meta` says
            // so, for the upstream's log (see `stateless_alias`).
            from.name = stateless_alias(i, grant);
        }
        push(
            i,
            render(&step.body, &from),
            format!("step {}", k + 1),
            step.wait,
            token,
            false,
        );
    }
    for round in 1..=2 {
        for (i, c) in case.clients.iter().enumerate() {
            push(
                i,
                barrier(i, round, &sender(i, c, case.upstreams)).into_bytes(),
                "barrier".into(),
                true,
                c.token(),
                false,
            );
        }
    }
    out
}

/// The case as a person can replay it: the setup, then every message on the wire.
pub fn transcript(case: &Case) -> String {
    let mut s = format!(
        "front: {} ({}), upstream: {} ({}), gateway limit {LIMIT} bytes a message, policy crates/wire-fuzz/src/policy.json\n",
        case.front.name(),
        match case.front {
            Transport::Http => "tollgate_gateway::transport::http_router, POST /mcp",
            Transport::Stdio => "tollgate_gateway::transport::run_session, one line each",
        },
        case.upstream.name(),
        match case.upstream {
            Transport::Http => "the naive upstream over HTTP",
            Transport::Stdio => "`tollgate naive-upstream` as a child process",
        },
    );
    if case.upstreams > 1 {
        s.push_str(&format!(
            "{} such upstreams behind the router of several upstreams: {}; the policy's tool rules copied for each prefix (routed_policy)\n",
            case.upstreams,
            (0..case.upstreams)
                .map(|k| format!("`{}` (prefix `{}`)", crate::wire::upstream_name(k), crate::wire::prefix(k)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (i, c) in case.clients.iter().enumerate() {
        s.push_str(&format!(
            "client c{i}: grant {} (token {}), protocol {}{}\n",
            c.grant(),
            c.token(),
            c.version(),
            if c.stateless() { ", stateless" } else { "" }
        ));
    }
    for p in plan(case) {
        let how = match case.front {
            Transport::Http => format!(
                "POST Bearer {}{}",
                p.token,
                if p.opens_session || case.clients[p.client].stateless() {
                    String::new()
                } else {
                    format!(", Mcp-Session-Id of c{}", p.client)
                }
            ),
            Transport::Stdio => "stdin".to_owned(),
        };
        s.push_str(&format!(
            "c{} {how} [{}{}]: {}\n",
            p.client,
            p.label,
            if p.wait { "" } else { ", no wait" },
            show(&p.bytes)
        ));
    }
    s
}

/// The wire fuzzer's policy for `n` upstreams behind the router: each rule that names tools
/// (a name or a glob) once per upstream with its prefix in front (`u0__read_file`, …), each
/// named counter of those rules per upstream too; the rules on annotations as they are.
pub fn routed_policy(n: usize) -> Result<String, String> {
    let mut policy: Value =
        serde_json::from_str(POLICY).map_err(|e| format!("the wire fuzzer's policy: {e}"))?;
    let Some(tools) = policy.get_mut("tools").and_then(Value::as_object_mut) else {
        return Err("the wire fuzzer's policy has no `tools`".into());
    };
    let mut routed = serde_json::Map::new();
    for (selector, rule) in std::mem::take(tools) {
        if selector.contains(':') {
            routed.insert(selector, rule);
            continue;
        }
        for k in 0..n {
            let mut rule = rule.clone();
            if let Some(limits) = rule.get_mut("limits").and_then(Value::as_array_mut) {
                for limit in limits {
                    if let Some(counter) = limit.get("counter").and_then(Value::as_str) {
                        limit["counter"] =
                            Value::from(format!("{}_{counter}", crate::wire::upstream_name(k)));
                    }
                }
            }
            routed.insert(format!("{}{selector}", crate::wire::prefix(k)), rule);
        }
    }
    *tools = routed;
    serde_json::to_string_pretty(&policy).map_err(|e| e.to_string())
}

/// What every case shares: the runtime, the policy, the naive upstream's binary.
#[derive(Debug)]
pub struct Env {
    runtime: tokio::runtime::Runtime,
    policy: Arc<Policy>,
    /// The `tollgate` binary, for `tollgate naive-upstream` children (stdio upstreams).
    pub naive_bin: Option<PathBuf>,
    /// How long a client waits for an answer.
    pub answer_timeout: Duration,
    http: reqwest::Client,
}

impl Env {
    pub fn new(naive_bin: Option<PathBuf>, answer_timeout: Duration) -> Result<Env, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let policy = Policy::parse("crates/wire-fuzz/src/policy.json", POLICY)
            .map_err(|d| format!("the wire fuzzer's policy is invalid: {}", d.render_plain()))?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Env {
            runtime,
            policy: Arc::new(policy),
            naive_bin,
            answer_timeout,
            http,
        })
    }

    /// Runs one case and checks it (crate::check).
    pub fn run(&self, case: &Case) -> Result<Stats, String> {
        self.run_waiting(case, self.answer_timeout)
    }

    /// [`Env::run`], with clients waiting at most `answer_timeout` for an answer.
    pub fn run_waiting(&self, case: &Case, answer_timeout: Duration) -> Result<Stats, String> {
        if case.clients.is_empty() {
            return Ok(Stats::default());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("cannot make a folder: {e}"))?;
        let audit = dir.path().join("audit.jsonl");
        let observed =
            self.runtime
                .block_on(self.drive(case, dir.path(), &audit, answer_timeout))?;
        crate::check::check(&observed, &audit, LIMIT)
    }

    async fn drive(
        &self,
        case: &Case,
        dir: &Path,
        audit: &Path,
        answer_timeout: Duration,
    ) -> Result<Observed, String> {
        let n = case.upstreams.max(1);
        let mut upstreams = Vec::with_capacity(n);
        for k in 0..n {
            upstreams
                .push(Upstream::start(case.upstream, dir, self.naive_bin.as_deref(), k).await?);
        }
        let upstreams = Upstreams(upstreams);
        let log = AuditLog::open(audit, false).map_err(|e| e.to_string())?;
        let policy = if n > 1 {
            let text = routed_policy(n)?;
            Arc::new(
                Policy::parse("routed wire-fuzz policy", &text).map_err(|d| {
                    format!(
                        "the wire fuzzer's routed policy is invalid: {}",
                        d.render_plain()
                    )
                })?,
            )
        } else {
            Arc::clone(&self.policy)
        };
        let engine = Engine::new(policy, Arc::new(MemoryStore::new()));
        let options = GatewayOptions {
            limits: Limits { max_bytes: LIMIT },
            call_timeout: CALL_TIMEOUT,
            ..GatewayOptions::default()
        };
        let gateway = Gateway::new(engine, Some(log), options);
        gateway.open(
            Duration::ZERO,
            json!({"policy": "wire-fuzz", "version": env!("CARGO_PKG_VERSION")}),
        )?;
        let planned = plan(case);
        let mut observed = match case.front {
            Transport::Http => {
                self.http_front(
                    case,
                    &planned,
                    &gateway,
                    upstreams.spec(None),
                    answer_timeout,
                )
                .await?
            }
            Transport::Stdio => {
                self.stdio_front(case, &planned, &gateway, &upstreams, answer_timeout)
                    .await
            }
        };
        observed.routed = n > 1;
        observed.executions = upstreams.finish().await?;
        gateway.flush_audit();
        Ok(observed)
    }

    async fn http_front(
        &self,
        case: &Case,
        planned: &[Planned],
        gateway: &Arc<Gateway>,
        spec: UpstreamSpec,
        answer_timeout: Duration,
    ) -> Result<Observed, String> {
        let tokens = Tokens::parse("wire-fuzz tokens", &crate::wire::tokens_file())
            .map_err(|e| e.to_string())?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let front = HttpFront::new(
            Arc::clone(gateway),
            spec,
            Auth {
                tokens: Some(tokens),
                admin_tokens: None,
                default_grant: "default".into(),
                oauth: None,
            },
            Clock::start(),
            transport_limits(),
            stop_rx.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen: {e}"))?;
        let url = format!(
            "http://{}/mcp",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        drop(stop_rx);
        let mut server = tokio::spawn(serve(listener, front));
        let mut observed = Observed::default();
        let mut sessions: Vec<Option<String>> = vec![None; case.clients.len()];
        let mut in_flight: Vec<(usize, tokio::task::JoinHandle<Posted>)> = Vec::new();
        for p in planned {
            let c = &case.clients[p.client];
            let task = tokio::spawn(post(
                self.http.clone(),
                url.clone(),
                p.token,
                if p.opens_session {
                    None
                } else {
                    sessions[p.client].clone()
                },
                (!p.opens_session).then_some(c.version()),
                p.bytes.clone(),
                answer_timeout,
            ));
            observed.sent.push(Sent {
                client: p.client,
                bytes: p.bytes.clone(),
                reply: Reply::TimedOut,
                label: p.label.clone(),
            });
            in_flight.push((observed.sent.len() - 1, task));
            if p.wait {
                let mut hung = false;
                for (k, task) in in_flight.drain(..) {
                    let (reply, session) = task
                        .await
                        .unwrap_or_else(|e| (Reply::Failed(e.to_string()), None));
                    if planned[k].opens_session {
                        sessions[planned[k].client] = session;
                    }
                    hung |= reply == Reply::TimedOut;
                    observed.sent[k].reply = reply;
                }
                // The case has failed: what follows would only wait out more hangs.
                if hung {
                    break;
                }
            }
        }
        for (k, task) in in_flight {
            let (reply, _) = task
                .await
                .unwrap_or_else(|e| (Reply::Failed(e.to_string()), None));
            observed.sent[k].reply = reply;
        }
        for (i, c) in case.clients.iter().enumerate() {
            observed.clients.push(ClientInfo {
                name: client_name(i),
                grant: c.grant().to_owned(),
                session: if c.stateless() {
                    format!("stateless:{}", c.grant())
                } else {
                    sessions[i].clone().unwrap_or_default()
                },
                version: c.version().to_owned(),
            });
        }
        // A stateless client that presents another grant's token speaks in that grant's
        // stateless session.
        for (i, c) in case.clients.iter().enumerate() {
            for (_, grant) in GRANTS
                .iter()
                .filter(|(_, g)| c.stateless() && *g != c.grant())
            {
                observed.clients.push(ClientInfo {
                    name: stateless_alias(i, grant),
                    grant: (*grant).to_owned(),
                    session: format!("stateless:{grant}"),
                    version: c.version().to_owned(),
                });
            }
        }
        let _ = stop_tx.send(true);
        // Sessions with a call still pending drain on their own; the listener goes now.
        if tokio::time::timeout(Duration::from_millis(200), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        Ok(observed)
    }

    async fn stdio_front(
        &self,
        case: &Case,
        planned: &[Planned],
        gateway: &Arc<Gateway>,
        upstream: &Upstreams,
        answer_timeout: Duration,
    ) -> Observed {
        let (stop_tx, stop_rx) = watch::channel(false);
        let clock = Clock::start();
        let mut conns = Vec::new();
        let mut observed = Observed::default();
        for (i, c) in case.clients.iter().enumerate() {
            let limits = transport_limits();
            let (tx, rx) = mpsc::channel(limits.queue);
            let (sink, mut out) = mpsc::channel::<Value>(limits.queue);
            let session = format!("stdio-c{i}");
            let core = gateway.session(c.grant(), &session);
            let session_run = run_session(
                core,
                upstream.spec(Some(&client_name(i))),
                rx,
                sink,
                clock,
                limits,
                stop_rx.clone(),
            );
            // How the session ended is not an invariant the fuzzer checks.
            let task = tokio::spawn(async move {
                let _ = session_run.await;
            });
            let received: Arc<Mutex<Vec<Value>>> = Arc::default();
            let (count_tx, count_rx) = watch::channel(0usize);
            let into = Arc::clone(&received);
            let collector = tokio::spawn(async move {
                while let Some(v) = out.recv().await {
                    into.lock().unwrap_or_else(PoisonError::into_inner).push(v);
                    count_tx.send_modify(|n| *n += 1);
                }
            });
            observed.clients.push(ClientInfo {
                name: client_name(i),
                grant: c.grant().to_owned(),
                session,
                version: c.version().to_owned(),
            });
            conns.push(StdioConn {
                tx: Some(tx),
                received,
                count: count_rx,
                task,
                collector,
                lines: Vec::new(),
            });
        }
        for p in planned {
            let conn = &mut conns[p.client];
            if let Some(tx) = &conn.tx {
                let _ = tx
                    .send(ClientInput::Message {
                        bytes: p.bytes.clone(),
                        reply: None,
                        trace: None,
                    })
                    .await;
            }
            conn.lines
                .push(expected(&p.bytes, LIMIT, case.clients[p.client].version()));
            observed.sent.push(Sent {
                client: p.client,
                bytes: p.bytes.clone(),
                reply: Reply::Stdio,
                label: p.label.clone(),
            });
            // A wait that runs out means the case has failed: what follows would only wait
            // out more hangs.
            if p.wait && !conn.wait(answer_timeout).await {
                break;
            }
        }
        let _ = stop_tx.send(true);
        for mut conn in conns {
            conn.tx = None;
            if tokio::time::timeout(Duration::from_millis(300), &mut conn.task)
                .await
                .is_err()
            {
                conn.task.abort();
            }
            let _ = tokio::time::timeout(Duration::from_millis(300), &mut conn.collector).await;
            conn.collector.abort();
            let received = conn
                .received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            observed.received.push(received);
        }
        observed
    }
}

/// One stdio client's connection to its session task.
struct StdioConn {
    tx: Option<mpsc::Sender<ClientInput>>,
    received: Arc<Mutex<Vec<Value>>>,
    /// How many messages it has received (changes wake a waiter).
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
    collector: tokio::task::JoinHandle<()>,
    /// The ids each line it sent must be answered with.
    lines: Vec<crate::check::Expected>,
}

impl StdioConn {
    /// Waits until every line sent is answered or refused whole
    /// ([`crate::check::stdio_unanswered`]); `false` if `bound` passed first.
    async fn wait(&mut self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let answered = {
                let received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
                crate::check::stdio_unanswered(&self.lines, &received).is_none()
            };
            if answered {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.count.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }
}

/// What one POST got: the reply, and the session id it gave.
type Posted = (Reply, Option<String>);

/// One HTTP request to the gateway; the reply and the session id it gave.
async fn post(
    http: reqwest::Client,
    url: String,
    token: &str,
    session: Option<String>,
    version: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
) -> Posted {
    let mut req = http
        .post(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .timeout(timeout)
        .body(body);
    if let Some(s) = session {
        req = req.header(HEADER_SESSION_ID, s);
    }
    if let Some(v) = version {
        req = req.header(HEADER_PROTOCOL_VERSION, v);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return (Reply::TimedOut, None),
        Err(e) => return (Reply::Failed(e.to_string()), None),
    };
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get(HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match resp.bytes().await {
        Ok(body) => (
            Reply::Http {
                status,
                body: body.to_vec(),
            },
            session,
        ),
        Err(e) if e.is_timeout() => (Reply::TimedOut, session),
        Err(e) => (Reply::Failed(e.to_string()), session),
    }
}

/// The naive upstream of one case.
enum Upstream {
    Http {
        state: Arc<NaiveHttp>,
        url: String,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    },
    Stdio {
        program: PathBuf,
        log: PathBuf,
    },
}

impl Upstream {
    /// Starts upstream `k` of a case (its own log).
    async fn start(
        transport: Transport,
        dir: &Path,
        naive_bin: Option<&Path>,
        k: usize,
    ) -> Result<Upstream, String> {
        match transport {
            Transport::Http => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("cannot listen: {e}"))?;
                let url = format!(
                    "http://{}/mcp",
                    listener.local_addr().map_err(|e| e.to_string())?
                );
                let state = NaiveHttp::new(ExecLog::memory());
                let (stop, mut stopped) = watch::channel(false);
                let task = tokio::spawn(crate::naive::serve_http(
                    listener,
                    Arc::clone(&state),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                ));
                Ok(Upstream::Http {
                    state,
                    url,
                    stop,
                    task,
                })
            }
            Transport::Stdio => {
                let Some(program) = naive_bin else {
                    return Err("a stdio upstream needs the `tollgate` binary (naive_bin)".into());
                };
                Ok(Upstream::Stdio {
                    program: program.to_owned(),
                    log: dir.join(if k == 0 {
                        "naive.jsonl".to_owned()
                    } else {
                        format!("naive-{k}.jsonl")
                    }),
                })
            }
        }
    }

    /// How a gateway reaches it; `client` names the one client behind a gateway session that
    /// has its own upstream spec (the stdio front), so the upstream can tell who sent what
    /// even when the messages do not say (a stateless client without its `_meta`).
    fn spec(&self, client: Option<&str>) -> UpstreamSpec {
        match self {
            Upstream::Http { url, .. } => match client {
                Some(c) => UpstreamSpec::url(format!("{url}?client={c}")),
                None => UpstreamSpec::url(url.clone()),
            },
            Upstream::Stdio { program, log } => {
                let mut args = vec![
                    "naive-upstream".into(),
                    "--log".into(),
                    log.display().to_string(),
                ];
                if let Some(c) = client {
                    args.extend(["--client".into(), c.to_owned()]);
                }
                UpstreamSpec::Command {
                    program: program.display().to_string(),
                    args,
                }
            }
        }
    }

    /// Waits until the upstream is idle (HTTP: no request in flight three times in a row; a
    /// forwarded message still on its way when the barriers came back would be missed, never
    /// misjudged),
    /// stops it, and returns what it ran.
    async fn finish(self) -> Result<Vec<crate::naive::Execution>, String> {
        match self {
            Upstream::Http {
                state, stop, task, ..
            } => {
                let mut idle = 0;
                // At most a second; three looks 2 ms apart cost 6 ms a case.
                for _ in 0..500 {
                    if state.in_flight() == 0 {
                        idle += 1;
                        if idle == 3 {
                            break;
                        }
                    } else {
                        idle = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let executions = state.log.snapshot();
                let _ = stop.send(true);
                let mut task = task;
                if tokio::time::timeout(Duration::from_millis(200), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
                Ok(executions)
            }
            Upstream::Stdio { log, .. } => {
                crate::naive::read_log(&log).map_err(|e| format!("cannot read the naive log: {e}"))
            }
        }
    }
}

/// The naive upstreams of one case: one as it is, or several behind the router.
struct Upstreams(Vec<Upstream>);

impl Upstreams {
    /// How a gateway reaches them ([`Upstream::spec`]): one upstream's spec, or the router's
    /// over `u0`, `u1`, ….
    fn spec(&self, client: Option<&str>) -> UpstreamSpec {
        match self.0.as_slice() {
            [one] => one.spec(client),
            several => UpstreamSpec::Several(Arc::new(
                several
                    .iter()
                    .enumerate()
                    .map(|(k, u)| NamedUpstream {
                        name: crate::wire::upstream_name(k),
                        prefix: crate::wire::prefix(k),
                        spec: u.spec(client),
                    })
                    .collect(),
            )),
        }
    }

    /// Every upstream's executions ([`Upstream::finish`]); behind the router each tool name
    /// gets the prefix of the upstream that ran it, so an execution matches only the allow
    /// record of a call whose name routes to that upstream.
    async fn finish(self) -> Result<Vec<crate::naive::Execution>, String> {
        let routed = self.0.len() > 1;
        let mut all = Vec::new();
        for (k, u) in self.0.into_iter().enumerate() {
            for mut e in u.finish().await? {
                if routed && let Some(name) = e.tool.as_str() {
                    e.tool = Value::from(format!("{}{name}", crate::wire::prefix(k)));
                }
                all.push(e);
            }
        }
        Ok(all)
    }
}

/// The gateway's transport bounds in the fuzzer: its message limit, the defaults otherwise.
fn transport_limits() -> TransportLimits {
    TransportLimits {
        max_message_bytes: LIMIT,
        ..TransportLimits::default()
    }
}
