//! `tollgate bench [http|stdio|sessions|all] [--calls N] [--clients C] [--rounds R]
//! [--sessions N] [--no-audit]`: the load generator of docs/PERFORMANCE.md.
//!
//! It measures, side by side in one run, the same `tools/call` (`GetAHOBatch`, a stateful read
//! the policy admits under a limit that never refuses) made directly to the mock EKS server and
//! through the gateway in front of it, and (for `http` and `stdio`) through a byte relay in
//! front of it: `tollgate bench-relay` (hidden), a process that copies bytes (a thread per
//! direction, blocked in `read`) and reads none of them, the floor any proxy process costs on
//! the machine (the second process, the extra hop each way and the wake-ups). Every party is
//! its own process: this one (the load, on a one-thread runtime), `tollgate mock-eks`,
//! `tollgate bench-relay` and `tollgate gateway` (this same executable), so they share no
//! runtime. Each round measures every path back to back (rotating which goes first); the
//! report gives the median over rounds, and the relay's and the gateway's figures as a
//! difference or a ratio against the direct ones of the same round.
//!
//! - `http`: Streamable HTTP on loopback, HTTP/1.1 keep-alive, JSON answers. Latency with one
//!   client (p50, p99 of `--calls` sequential calls), then throughput with `--clients`
//!   concurrent clients, each its own connection and session. The server processes' CPU time per
//!   call (from /proc) says where the time goes.
//! - `stdio`: the mock as a child over stdio, direct or behind a stdio gateway that runs the
//!   mock as its own child: latency one call at a time, throughput with `--clients` calls in
//!   flight on the one connection.
//! - `sessions`: the gateway's resident memory before and after opening `--sessions` idle HTTP
//!   sessions (initialized, no call in flight), per session.
//! - `replay`: one scenario of `--replay-calls` calls (`GetAHOBatch` admitted, `CancelAHORunBatch`
//!   mostly rate limited, one every millisecond each) replayed in virtual time through the
//!   gateway's session core and the in-process mock, transcript included, in this process:
//!   calls per second of wall time and of this process's CPU time, `--rounds` times.
//! - `fuzz`: `tollgate fuzz` of the seed policy (examples/policies/seed.json, embedded) with
//!   `--fuzz-sessions` sessions of exactly 50 calls, each run twice, on every core, `--rounds`
//!   times.
//!
//! The gateway writes its audit log (in a temporary directory) unless `--no-audit`: a record
//! per decision written before the call is forwarded is part of what is measured. Exit codes: 0
//! when every call was answered as expected, 1 when one was not, 2 when a process cannot start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::FutureExt;
use futures::future::LocalBoxFuture;

use super::procs::{Echo, spawn_listening};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Http,
    Stdio,
    Sessions,
    /// Virtual-time replay through the gateway's core and the in-process mock.
    Replay,
    /// `tollgate fuzz` on the seed policy with sessions of exactly 50 calls.
    Fuzz,
    All,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    what: What,
    /// Calls per latency measurement (per path, per round); throughput rounds make twice as many.
    #[arg(long, default_value_t = 4000)]
    calls: u64,
    /// Concurrent clients (HTTP) or calls in flight (stdio) for throughput.
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Rounds; each measures both paths back to back.
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// Idle sessions to open for the memory figure.
    #[arg(long, default_value_t = 1000)]
    sessions: u64,
    /// Run the gateway without an audit log.
    #[arg(long)]
    no_audit: bool,
    /// Calls in the replayed scenario (`replay`).
    #[arg(long, default_value_t = 400_000)]
    replay_calls: u64,
    /// Generated sessions (`fuzz`), each run twice (the determinism check).
    #[arg(long, default_value_t = 2000)]
    fuzz_sessions: u32,
    /// An extra argument for every gateway the bench starts (repeatable), to compare options:
    /// `--gateway-arg=--threads=1`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    gateway_arg: Vec<String>,
    /// Run the gateway from another `tollgate` executable (an A/B comparison of two builds in
    /// one run); the mock always runs from this one.
    #[arg(long, value_name = "PATH")]
    gateway_exe: Option<PathBuf>,
}

const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
  "GetAHOBatch": {"limits": [{"counter": "reads", "window": "minute", "max": 1000000000, "scope": "grant"}]}}}
"#;

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"tollgate-bench","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

fn call_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"GetAHOBatch","arguments":{{"batchId":"rb-0001"}}}}}}"#
    )
}

/// Whether an answer is the mock's own successful result (not a refusal, not an error).
fn answered_ok(body: &[u8]) -> bool {
    let ok = b"\"isError\":false";
    body.windows(ok.len()).any(|w| w == ok)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = tempdir()?;
    let result = run_in(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    Ok(dir)
}

fn run_in(args: &Args, dir: &Path) -> anyhow::Result<ExitCode> {
    let policy = dir.join("policy.json");
    std::fs::write(&policy, POLICY)?;
    let exe = std::env::current_exe().context("cannot find the tollgate executable")?;
    let gateway_exe = args.gateway_exe.clone().unwrap_or_else(|| exe.clone());
    let exe = Exes {
        mock: exe,
        gateway: gateway_exe,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    let processes = !matches!(args.what, What::Replay | What::Fuzz);
    if processes {
        writeln!(
            out,
            "tollgate bench: {} rounds; each process separate (load: 1 thread; mock and gateway: their own runtimes); audit log {}",
            args.rounds,
            if args.no_audit { "off" } else { "on" }
        )?;
    }
    let mut ok = true;
    let audit = |name: &str| (!args.no_audit).then(|| dir.join(name));
    if matches!(args.what, What::Http | What::All) {
        ok &= runtime.block_on(http(
            args,
            &exe,
            &policy,
            audit("audit-http.jsonl"),
            &mut out,
        ))?;
    }
    if matches!(args.what, What::Stdio | What::All) {
        ok &= runtime.block_on(stdio(
            args,
            &exe,
            &policy,
            audit("audit-stdio.jsonl"),
            &mut out,
        ))?;
    }
    if matches!(args.what, What::Sessions | What::All) {
        runtime.block_on(sessions(
            args,
            &exe,
            &policy,
            audit("audit-sessions.jsonl"),
            &mut out,
        ))?;
    }
    if matches!(args.what, What::Replay | What::All) {
        ok &= replay(args, dir, &mut out)?;
    }
    if matches!(args.what, What::Fuzz | What::All) {
        ok &= fuzz(args, &mut out)?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The executables that run the mock and the gateway.
struct Exes {
    mock: PathBuf,
    gateway: PathBuf,
}

fn gateway_args(policy: &Path, audit: Option<&PathBuf>, extra: &[String]) -> Vec<String> {
    let mut a = vec![
        "gateway".to_owned(),
        "--policy".to_owned(),
        policy.display().to_string(),
        "--grant".to_owned(),
        "bench".to_owned(),
    ];
    if let Some(audit) = audit {
        a.push("--audit".to_owned());
        a.push(audit.display().to_string());
    }
    a.extend(extra.iter().cloned());
    a
}

/// User plus system CPU time of a process so far (from /proc; clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; here, after `)`, indices 11 and 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Resident memory of a process in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client: the load generator's own cost stays small and the same
// for both paths.

struct HttpConn {
    stream: BufReader<TcpStream>,
    host: String,
    path: String,
    session: Option<String>,
    request: Vec<u8>,
}

struct Answer {
    status: u16,
    session: Option<String>,
    body: Vec<u8>,
}

impl HttpConn {
    async fn connect(url: &str) -> anyhow::Result<HttpConn> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("not an http:// URL: {url}"))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let stream = TcpStream::connect(host)
            .await
            .with_context(|| format!("cannot connect to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream: BufReader::new(stream),
            host: host.to_owned(),
            path: format!("/{path}"),
            session: None,
            request: Vec::with_capacity(512),
        })
    }

    async fn post(&mut self, body: &[u8]) -> anyhow::Result<Answer> {
        let r = &mut self.request;
        r.clear();
        write!(
            r,
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.path,
            self.host,
            body.len()
        )?;
        if let Some(s) = &self.session {
            write!(r, "Mcp-Session-Id: {s}\r\n")?;
        }
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(body);
        self.stream.get_mut().write_all(r).await?;
        let mut status = 0u16;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut session = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("the server closed the connection");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if status == 0 {
                status = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("bad status line `{l}`"))?;
                continue;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                } else if k.eq_ignore_ascii_case("mcp-session-id") {
                    session = Some(v.to_owned());
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16).context("bad chunk size")?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok(Answer {
            status,
            session,
            body,
        })
    }

    /// Opens an MCP session on this connection.
    async fn initialize(&mut self) -> anyhow::Result<()> {
        let a = self.post(INIT.as_bytes()).await?;
        if a.status != 200 || a.session.is_none() {
            bail!(
                "initialize answered HTTP {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
        }
        self.session = a.session;
        self.post(INITIALIZED.as_bytes()).await?;
        Ok(())
    }

    /// One call; `Err` when the answer is not the mock's successful result.
    async fn call(&mut self, id: u64) -> anyhow::Result<()> {
        let a = self.post(call_body(id).as_bytes()).await?;
        if a.status != 200 || !answered_ok(&a.body) {
            bail!(
                "call {id} answered HTTP {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The floor: a relay that forwards bytes and does nothing else

/// `tollgate bench-relay`: the bench's floor, hidden from the help. It copies bytes between
/// its clients and an upstream without reading them: over TCP (`--listen ADDR --to URL`, one
/// upstream connection per client connection) or over stdio (`-- COMMAND ARGS...`, the command
/// its child). Any proxy process costs at least what this costs (a second process, a loopback
/// hop or a pipe each way, the wake-ups between them), so `bench http` and `bench stdio` measure
/// it side by side with the gateway: what the gateway adds beyond it is the gateway's own work.
/// Each direction of each connection is a thread blocked in `read`.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Listen on this address (TCP).
    #[arg(long, value_name = "ADDR", requires = "to")]
    listen: Option<String>,
    /// The upstream URL (`http://HOST:PORT/PATH`); the relay prints its own URL with the same path.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Relay stdio to this command instead.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn relay(args: RelayArgs) -> anyhow::Result<ExitCode> {
    match (args.listen, args.to, args.command.split_first()) {
        (Some(listen), Some(to), None) => relay_tcp(&listen, &to),
        (None, None, Some((program, rest))) => relay_stdio(program, rest),
        _ => {
            eprintln!("error: bench-relay takes `--listen ADDR --to URL` or `-- COMMAND ARGS...`");
            Ok(ExitCode::from(2))
        }
    }
}

/// Over TCP: two threads per connection, each blocked in `read` and writing what it read at
/// once (no event loop between the socket and the copy: the cheapest relay there is).
fn relay_tcp(listen: &str, to: &str) -> anyhow::Result<ExitCode> {
    let rest = to
        .strip_prefix("http://")
        .with_context(|| format!("not an http:// URL: {to}"))?;
    let (upstream, path) = rest.split_once('/').unwrap_or((rest, ""));
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("listening on http://{}/{path}", listener.local_addr()?);
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(server) = std::net::TcpStream::connect(upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client_back), Ok(server_back)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        std::thread::spawn(move || {
            let _ = relay_copy(&mut &client, &mut &server);
            let _ = server.shutdown(std::net::Shutdown::Write);
        });
        std::thread::spawn(move || {
            let _ = relay_copy(&mut &server_back, &mut &client_back);
            let _ = client_back.shutdown(std::net::Shutdown::Write);
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// Over stdio: one thread per direction, each blocked in `read` and writing what it read at
/// once (tokio's stdin would add a hand-off to its blocking pool for every read).
fn relay_stdio(program: &str, rest: &[String]) -> anyhow::Result<ExitCode> {
    let mut child = std::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{program}`"))?;
    let mut to_child = child.stdin.take().context("the child's stdin")?;
    let mut from_child = child.stdout.take().context("the child's stdout")?;
    std::thread::spawn(move || {
        let _ = relay_copy(&mut std::io::stdin().lock(), &mut to_child);
        // Dropping the pipe tells the child its input ended.
    });
    let copied = relay_copy(&mut from_child, &mut std::io::stdout().lock());
    let _ = child.wait();
    copied?;
    Ok(ExitCode::SUCCESS)
}

/// Copies until the end of `from`, writing each read as it comes (no buffering in between: a
/// line is passed on as soon as it is read).
fn relay_copy(from: &mut impl std::io::Read, to: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a slice of at most a few million"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return 0.0;
    }
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        f64::midpoint(xs[n / 2 - 1], xs[n / 2])
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One path's figures in one round.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    p50: f64,
    p99: f64,
    calls_per_s: f64,
    /// CPU time of the server processes per call in the throughput run, in µs: the gateway
    /// (0 for the direct path) and the mock.
    gateway_cpu: f64,
    mock_cpu: f64,
}

/// The paths of one measurement: the direct one first, then the paths through a middle process
/// (the relay, the gateway), each with the name the report gives it.
type Paths<'a> = Vec<(&'static str, RoundFn<'a>)>;
type RoundFn<'a> = Box<dyn FnMut() -> LocalBoxFuture<'a, anyhow::Result<Round>> + 'a>;

fn report(
    out: &mut impl Write,
    title: &str,
    calls: u64,
    load: &str,
    names: &[&str],
    rounds: &[Vec<Round>],
) -> anyhow::Result<()> {
    let m = |f: &dyn Fn(&[Round]) -> f64| median(rounds.iter().map(|r| f(r)).collect());
    writeln!(out, "{title}")?;
    writeln!(
        out,
        "  latency, 1 client, {calls} calls per path per round (median of {} rounds):",
        rounds.len()
    )?;
    for (i, name) in names.iter().enumerate() {
        writeln!(
            out,
            "    {:<22} p50 {:>7.1} us   p99 {:>7.1} us",
            format!("{name}:"),
            m(&|r| r[i].p50),
            m(&|r| r[i].p99)
        )?;
    }
    for (i, name) in names.iter().enumerate().skip(1) {
        writeln!(
            out,
            "    added by {:<13} p50 {:>7.1} us   p99 {:>7.1} us   (same round, over {})",
            format!("{name}:"),
            m(&|r| r[i].p50 - r[0].p50),
            m(&|r| r[i].p99 - r[0].p99),
            names[0]
        )?;
    }
    writeln!(
        out,
        "  throughput, {load}, {} calls per path per round:",
        calls * 2
    )?;
    for (i, name) in names.iter().enumerate() {
        let ratio = if i == 0 {
            String::new()
        } else {
            format!(
                "   ratio to {} (same round) {:.2}",
                names[0],
                m(&|r| r[i].calls_per_s / r[0].calls_per_s)
            )
        };
        writeln!(
            out,
            "    {:<22} {:>8.0} calls/s{ratio}",
            format!("{name}:"),
            m(&|r| r[i].calls_per_s)
        )?;
    }
    for (i, name) in names.iter().enumerate() {
        let middle = if i == 0 {
            String::new()
        } else {
            format!("middle process {:.1} us, ", m(&|r| r[i].gateway_cpu))
        };
        writeln!(
            out,
            "    CPU per call, {:<14} {middle}mock {:.1} us",
            format!("{name}:"),
            m(&|r| r[i].mock_cpu)
        )?;
    }
    for (k, round) in rounds.iter().enumerate() {
        let join = |f: &dyn Fn(&Round) -> f64, digits: usize| {
            round
                .iter()
                .map(|r| format!("{:.digits$}", f(r)))
                .collect::<Vec<_>>()
                .join("/")
        };
        writeln!(
            out,
            "    round {}: p50 {} us, p99 {} us, {} calls/s ({})",
            k + 1,
            join(&|r| r.p50, 1),
            join(&|r| r.p99, 1),
            join(&|r| r.calls_per_s, 0),
            names.join("/")
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTP

async fn http_latency(url: &str, calls: u64) -> anyhow::Result<(f64, f64)> {
    let mut c = HttpConn::connect(url).await?;
    c.initialize().await?;
    for i in 0..200 {
        c.call(i + 1).await?;
    }
    let mut took = Vec::with_capacity(usize::try_from(calls).unwrap_or(0));
    for i in 0..calls {
        let t = Instant::now();
        c.call(1000 + i).await?;
        took.push(t.elapsed());
    }
    took.sort();
    Ok((us(pct(&took, 0.5)), us(pct(&took, 0.99))))
}

async fn http_throughput(url: &str, calls: u64, clients: u64) -> anyhow::Result<f64> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        let mut c = HttpConn::connect(url).await?;
        c.initialize().await?;
        c.call(1).await?;
        conns.push(c);
    }
    let per = (calls / clients).max(1);
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut c in conns {
        set.spawn(async move {
            for i in 0..per {
                c.call(i + 2).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    #[expect(clippy::cast_precision_loss, reason = "call counts are small")]
    Ok((per * clients) as f64 / t.elapsed().as_secs_f64())
}

async fn http_round(
    url: &str,
    calls: u64,
    clients: u64,
    pids: (Option<u32>, u32),
) -> anyhow::Result<Round> {
    let (p50, p99) = http_latency(url, calls).await?;
    let cpu = |pid: Option<u32>| pid.map_or(Duration::ZERO, cpu_time);
    let (g0, m0) = (cpu(pids.0), cpu(Some(pids.1)));
    let calls_per_s = http_throughput(url, calls * 2, clients).await?;
    let (g1, m1) = (cpu(pids.0), cpu(Some(pids.1)));
    #[expect(clippy::cast_precision_loss, reason = "call counts are small")]
    let n = ((calls * 2 / clients).max(1) * clients) as f64;
    Ok(Round {
        p50,
        p99,
        calls_per_s,
        gateway_cpu: us(g1.saturating_sub(g0)) / n,
        mock_cpu: us(m1.saturating_sub(m0)) / n,
    })
}

/// `rounds` rounds of every path back to back, rotating which goes first so that a drift in
/// the machine's load favours none. `None` (the errors written to `out`) when a round failed.
async fn alternating(
    rounds: u64,
    paths: &mut Paths<'_>,
    out: &mut impl Write,
) -> anyhow::Result<Option<Vec<Vec<Round>>>> {
    let n = paths.len();
    let mut all = Vec::new();
    for r in 0..rounds {
        let mut got: Vec<Option<Round>> = vec![None; n];
        let first = usize::try_from(r).unwrap_or(0) % n;
        for k in 0..n {
            let i = (first + k) % n;
            match (paths[i].1)().await {
                Ok(round) => got[i] = Some(round),
                Err(e) => {
                    writeln!(out, "error: {}: {e:#}", paths[i].0)?;
                    return Ok(None);
                }
            }
        }
        all.push(got.into_iter().flatten().collect());
    }
    Ok(Some(all))
}

async fn http(
    args: &Args,
    exe: &Exes,
    policy: &Path,
    audit: Option<PathBuf>,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let (mock, mock_url) = spawn_listening(
        &exe.mock,
        &["mock-eks".into(), "--http".into(), "127.0.0.1:0".into()],
        Echo::Nothing,
    )?;
    let mut g = gateway_args(policy, audit.as_ref(), &args.gateway_arg);
    g.extend([
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--upstream-url".into(),
        mock_url.clone(),
    ]);
    let (gateway, gateway_url) = spawn_listening(&exe.gateway, &g, Echo::Nothing)?;
    let relay_args = [
        "bench-relay".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--to".into(),
        mock_url.clone(),
    ];
    let (relay, relay_url) = spawn_listening(&exe.mock, &relay_args, Echo::Errors)?;
    let (calls, clients) = (args.calls, args.clients);
    let (mock_pid, relay_pid, gateway_pid) = (mock.pid(), relay.pid(), gateway.pid());
    let mut paths: Paths = vec![
        (
            "direct",
            Box::new(|| http_round(&mock_url, calls, clients, (None, mock_pid)).boxed_local()),
        ),
        (
            "byte relay",
            Box::new(|| {
                http_round(&relay_url, calls, clients, (Some(relay_pid), mock_pid)).boxed_local()
            }),
        ),
        (
            "gateway",
            Box::new(|| {
                http_round(&gateway_url, calls, clients, (Some(gateway_pid), mock_pid))
                    .boxed_local()
            }),
        ),
    ];
    let Some(rounds) = alternating(args.rounds, &mut paths, out).await? else {
        return Ok(false);
    };
    drop(paths);
    report(
        out,
        "Streamable HTTP on loopback (JSON answers, keep-alive):",
        args.calls,
        &format!("{} concurrent clients", args.clients),
        &["direct", "byte relay", "gateway"],
        &rounds,
    )?;
    drop(relay);
    drop(gateway);
    drop(mock);
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// stdio

struct StdioConn {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: BufReader<tokio::process::ChildStdout>,
    line: String,
}

impl StdioConn {
    fn spawn(exe: &Path, args: &[String]) -> anyhow::Result<StdioConn> {
        let mut child = tokio::process::Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start `{} {}`", exe.display(), args.join(" ")))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(StdioConn {
            child,
            stdin,
            stdout,
            line: String::new(),
        })
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<&str> {
        self.line.clear();
        if self.stdout.read_line(&mut self.line).await? == 0 {
            bail!("the server closed its output");
        }
        Ok(&self.line)
    }

    async fn initialize(&mut self) -> anyhow::Result<()> {
        self.send(INIT).await?;
        self.recv().await?;
        self.send(INITIALIZED).await
    }

    async fn expect_ok(&mut self) -> anyhow::Result<()> {
        let line = self.recv().await?;
        if !answered_ok(line.as_bytes()) {
            bail!("unexpected answer: {line}");
        }
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// The pid of the first child of `pid` (the mock behind a stdio gateway).
fn child_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

async fn stdio_round(
    exe: &Path,
    args: &[String],
    calls: u64,
    window: u64,
    through: bool,
) -> anyhow::Result<Round> {
    let mut c = StdioConn::spawn(exe, args)?;
    c.initialize().await?;
    for i in 0..200 {
        c.send(&call_body(i + 1)).await?;
        c.expect_ok().await?;
    }
    let mut took = Vec::with_capacity(usize::try_from(calls).unwrap_or(0));
    for i in 0..calls {
        let t = Instant::now();
        c.send(&call_body(1000 + i)).await?;
        c.expect_ok().await?;
        took.push(t.elapsed());
    }
    took.sort();
    let (gateway_pid, mock_pid) = if through {
        (Some(c.pid()), child_of(c.pid()).unwrap_or(0))
    } else {
        (None, c.pid())
    };
    let cpu = |pid: Option<u32>| pid.map_or(Duration::ZERO, cpu_time);
    let (g0, m0) = (cpu(gateway_pid), cpu(Some(mock_pid)));
    // Throughput: `window` calls in flight; each answer lets one more go.
    let total = calls * 2;
    let t = Instant::now();
    let mut sent = 0u64;
    let mut batch = String::new();
    while sent < window.min(total) {
        batch.push_str(&call_body(1_000_000 + sent));
        batch.push('\n');
        sent += 1;
    }
    c.stdin.write_all(batch.as_bytes()).await?;
    let mut got = 0u64;
    while got < total {
        c.expect_ok().await?;
        got += 1;
        if sent < total {
            c.send(&call_body(1_000_000 + sent)).await?;
            sent += 1;
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "call counts are small")]
    let calls_per_s = total as f64 / t.elapsed().as_secs_f64();
    let (g1, m1) = (cpu(gateway_pid), cpu(Some(mock_pid)));
    #[expect(clippy::cast_precision_loss, reason = "call counts are small")]
    let n = total as f64;
    drop(c.stdin);
    let _ = tokio::time::timeout(Duration::from_secs(5), c.child.wait()).await;
    Ok(Round {
        p50: us(pct(&took, 0.5)),
        p99: us(pct(&took, 0.99)),
        calls_per_s,
        gateway_cpu: us(g1.saturating_sub(g0)) / n,
        mock_cpu: us(m1.saturating_sub(m0)) / n,
    })
}

async fn stdio(
    args: &Args,
    exe: &Exes,
    policy: &Path,
    audit: Option<PathBuf>,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let direct = vec!["mock-eks".to_owned()];
    let mut through = gateway_args(policy, audit.as_ref(), &args.gateway_arg);
    through.extend([
        "--".to_owned(),
        exe.mock.display().to_string(),
        "mock-eks".to_owned(),
    ]);
    let mut relayed = vec!["bench-relay".to_owned(), "--".to_owned()];
    relayed.extend([exe.mock.display().to_string(), "mock-eks".to_owned()]);
    let (calls, window) = (args.calls, args.clients);
    let mut paths: Paths = vec![
        (
            "direct",
            Box::new(|| stdio_round(&exe.mock, &direct, calls, window, false).boxed_local()),
        ),
        (
            "byte relay",
            Box::new(|| stdio_round(&exe.mock, &relayed, calls, window, true).boxed_local()),
        ),
        (
            "gateway",
            Box::new(|| stdio_round(&exe.gateway, &through, calls, window, true).boxed_local()),
        ),
    ];
    let Some(rounds) = alternating(args.rounds, &mut paths, out).await? else {
        return Ok(false);
    };
    drop(paths);
    report(
        out,
        "stdio (the mock a child process; behind the relay or the gateway, its child):",
        args.calls,
        &format!("{} calls in flight on the one connection", args.clients),
        &["direct", "byte relay", "gateway"],
        &rounds,
    )?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Idle sessions

async fn sessions(
    args: &Args,
    exe: &Exes,
    policy: &Path,
    audit: Option<PathBuf>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (mock, mock_url) = spawn_listening(
        &exe.mock,
        &["mock-eks".into(), "--http".into(), "127.0.0.1:0".into()],
        Echo::Nothing,
    )?;
    let mut g = gateway_args(policy, audit.as_ref(), &args.gateway_arg);
    g.extend([
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--upstream-url".into(),
        mock_url,
    ]);
    let (gateway, url) = spawn_listening(&exe.gateway, &g, Echo::Nothing)?;
    // Warm up: one session with calls, so the baseline holds the runtime's and the
    // allocator's steady state rather than a cold process.
    let mut conn = HttpConn::connect(&url).await?;
    conn.initialize().await?;
    for i in 0..100 {
        conn.call(i + 1).await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(gateway.pid());
    let mut conns = vec![conn];
    // Sessions over a few keep-alive connections (a session is not a connection).
    let mut c = HttpConn::connect(&url).await?;
    for _ in 0..args.sessions {
        c.session = None;
        c.initialize().await?;
    }
    conns.push(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(gateway.pid());
    #[expect(clippy::cast_precision_loss, reason = "memory sizes are small")]
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / args.sessions.max(1) as f64;
    writeln!(out, "idle HTTP sessions (initialized, nothing in flight):")?;
    writeln!(
        out,
        "  gateway RSS {} KiB before, {} KiB after {} sessions: {:.0} bytes per session",
        before, after, args.sessions, per
    )?;
    drop(conns);
    drop(gateway);
    drop(mock);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// In process: replay and fuzzing

/// This process's user and system CPU time so far.
fn own_cpu() -> Duration {
    cpu_time(std::process::id())
}

/// The replay benchmark's scenario: `calls` calls, half admitted, half mostly rate limited.
fn replay_scenario(calls: u64) -> String {
    let half = calls / 2;
    format!(
        "name: bench-replay\npolicy:\n  version: \"1\"\n  default: deny\n  tools:\n    GetAHOBatch: {{limits: [{{counter: r, window: minute, max: 1000000000}}]}}\n    CancelAHORunBatch: {{limits: [{{counter: c, window: minute, max: 10}}]}}\nupstream: {{allow_write: true}}\nagents: {{a: {{grant: g}}}}\nsteps:\n  - {{at: 0s, agent: a, call: GetAHOBatch, args: {{batchId: rb-0001}}, repeat: {half}, every: 1ms}}\n  - {{at: 0s, agent: a, call: CancelAHORunBatch, args: {{batchId: rb-0013}}, repeat: {half}, every: 1ms}}\n"
    )
}

fn replay(args: &Args, dir: &Path, out: &mut impl Write) -> anyhow::Result<bool> {
    let path = dir.join("bench-replay.yaml");
    std::fs::write(&path, replay_scenario(args.replay_calls))?;
    writeln!(
        out,
        "\nreplay in virtual time: {} calls per round through the session core and the in-process mock, transcript included",
        args.replay_calls
    )?;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    let mut ok = true;
    for round in 1..=args.rounds {
        let loaded = tollgate_scenario::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (t, c) = (Instant::now(), own_cpu());
        let outcome = tollgate_scenario::run(loaded);
        let (took, used) = (t.elapsed(), own_cpu().saturating_sub(c));
        let calls = outcome.calls as f64;
        // Every call answered: half allowed, the rest rate limited.
        let answered = outcome.calls == args.replay_calls / 2 * 2 && outcome.failures.is_empty();
        ok &= answered;
        wall.push(calls / took.as_secs_f64());
        cpu.push(calls / used.as_secs_f64().max(1e-3));
        writeln!(
            out,
            "  round {round}: {:.0} calls/s ({:.2} s wall), {:.0} calls per CPU second ({:.2} us a call){}",
            calls / took.as_secs_f64(),
            took.as_secs_f64(),
            calls / used.as_secs_f64().max(1e-3),
            used.as_secs_f64() * 1e6 / calls.max(1.0),
            if answered {
                ""
            } else {
                "  UNEXPECTED: not every call was answered"
            }
        )?;
    }
    writeln!(
        out,
        "  median: {:.0} calls/s wall, {:.0} calls per CPU second",
        median(wall),
        median(cpu)
    )?;
    Ok(ok)
}

const SEED_POLICY: &str = include_str!("../../../examples/policies/seed.json");

fn fuzz(args: &Args, out: &mut impl Write) -> anyhow::Result<bool> {
    use std::sync::Arc;
    use tollgate_policy::{CounterStore, MemoryStore, Policy};
    let path = Path::new("examples/policies/seed.json");
    let policy = Arc::new(
        Policy::parse("examples/policies/seed.json", SEED_POLICY)
            .map_err(|d| anyhow::anyhow!("the embedded seed policy: {}", d.render_plain()))?,
    );
    let store = || -> Arc<dyn CounterStore> { Arc::new(MemoryStore::new()) };
    let options = tollgate_scenario::fuzz::FuzzOptions {
        cases: args.fuzz_sessions,
        min_calls: 50,
        max_calls: 50,
        ..Default::default()
    };
    writeln!(
        out,
        "\nfuzzing the seed policy: {} sessions of 50 calls per round, each run twice, on {} threads",
        args.fuzz_sessions,
        options.threads()
    )?;
    let (mut rates, mut ok) = (Vec::new(), true);
    for round in 1..=args.rounds {
        let t = Instant::now();
        let report =
            tollgate_scenario::fuzz::fuzz(path, Arc::clone(&policy), &store, &options, |_| {});
        let took = t.elapsed().as_secs_f64();
        let held = report.violation.is_none() && report.cases == u64::from(args.fuzz_sessions);
        ok &= held;
        rates.push(report.cases as f64 / took);
        writeln!(
            out,
            "  round {round}: {} sessions ({} calls) in {took:.2} s = {:.0} sessions/s, {:.0} calls/s{}",
            report.cases,
            report.calls,
            report.cases as f64 / took,
            report.calls as f64 / took,
            match &report.violation {
                Some(v) => format!("  UNEXPECTED VIOLATION: {}", v.message),
                None => String::new(),
            }
        )?;
    }
    writeln!(
        out,
        "  median: {:.0} sessions of 50 calls per second",
        median(rates)
    )?;
    Ok(ok)
}
