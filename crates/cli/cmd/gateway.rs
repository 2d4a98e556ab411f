//! `tollgate gateway (--config FILE | --policy FILE) [--audit FILE] [--audit-fsync] [--listen ADDR]
//! [--allow-origin ORIGIN]... [--tokens FILE] [--admin-tokens FILE] [--grant NAME]
//! [--oauth-issuer ISSUER --oauth-audience URI --jwks URL|FILE [--grant-claim NAME]
//! [--grant-scope SCOPE=GRANT]... [--oauth-leeway SECS] [--admin-oauth-scope SCOPE]]
//! [--call-timeout SECS] [--tool-timeout TOOL=SECS]... [--max-message-bytes N] [--queue-depth N]
//! [--max-connections N] [--header-timeout SECS] [--body-timeout SECS]
//! [--keep-alive-timeout SECS] [--max-sessions N] [--session-idle-timeout SECS]
//! [--max-upstream-processes N] [--tls-cert FILE --tls-key FILE] [--tls-handshake-timeout SECS]
//! [--upstream-ca-file FILE]
//! [--store memory|redis://HOST:PORT[/DB]] [--store-unavailable closed|open]
//! [--store-timeout-ms MS] [--store-connect-timeout-ms MS] [--replica NAME] [--time-scale F]
//! [--no-watch]
//! [--lock FILE [--lock-mode refuse|warn]] [--otlp-endpoint URL [--otlp-service-name NAME]]
//! (--upstream-url URL | -- COMMAND ARGS...)`: the enforcing MCP gateway.
//!
//! `--config FILE` (TOML, docs/gateway.md "Config file") gives the policy, audit log,
//! recording, listener, store and one or more upstreams instead of those flags; with several
//! upstreams each session speaks to all of them through `tollgate_gateway::multi`.
//!
//! Without `--listen` it speaks MCP on its own stdin/stdout for one client (grant `--grant`),
//! so a desktop client's `mcpServers` entry can wrap any stdio server with it. With `--listen`
//! it serves Streamable HTTP at `/mcp`; `--tokens` maps bearer tokens to grants, and the
//! `--oauth-*` flags make it an OAuth 2.1 resource server (JWT access tokens; docs/auth.md); with
//! `--tls-cert` and `--tls-key` it serves https (the admin API and console too). An `https://`
//! upstream is trusted by the system's authorities and `--upstream-ca-file`.
//!
//! Exit codes: 0 after a clean shutdown, 2 for bad flags, an invalid policy, an unusable audit
//! log, tokens, TLS certificate, key or CA file, and (stdio) an upstream command that never started (it could not be
//! run, or it exited before answering anything, `MAX_START_FAILURES` times in a row or the
//! last time before the client left).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::Digest;
use tokio::sync::{mpsc, watch};
use tollgate_gateway::approvals::replicas::SharedApprovals;
use tollgate_gateway::audit::{AuditLog, Rotation, system_wall_clock};
use tollgate_gateway::config::Config;
use tollgate_gateway::core::{Gateway, GatewayOptions, Recorder};
use tollgate_gateway::pin::{DEFAULT_UPSTREAM, Lock, LockMode, Pins};
use tollgate_gateway::telemetry::{Telemetry, TelemetryConfig};
use tollgate_gateway::tokens::Tokens;
use tollgate_gateway::transport::{
    AllowedOrigins, Auth, ClientInput, Clock, HttpFront, SessionEnd, TransportLimits, run_session,
    serve, serve_tls,
};
use tollgate_gateway::upstream::{UpstreamSpec, http_client};
use tollgate_mcp::Limits;
use tollgate_policy::{CounterStore, Engine, FailMode, MemoryStore, Policy};
use tollgate_store_redis::{RedisOptions, RedisStore};

mod oauth;
mod replicas;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (TOML: policy, audit, recording, listener, store, upstreams;
    /// docs/gateway.md, "Config file"). Replaces `--policy` and the upstream flags; a flag it
    /// also sets is an error.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["policy", "upstream_url", "command"])]
    config: Option<PathBuf>,
    /// The policy file.
    #[arg(long, value_name = "FILE", required_unless_present = "config")]
    policy: Option<PathBuf>,
    /// Append every decision and outcome to this hash-chained log (created if missing).
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Also fdatasync each audit record (survives power loss; a disk sync per call).
    #[arg(long)]
    audit_fsync: bool,
    /// Rotate the audit log when its file reaches this size (`500M`, `2G`, `100000K`, or
    /// bytes): the file is closed with a `rotate` record and renamed
    /// `STEM.<first seq>.EXT`; the chain goes on in a new file (docs/audit.md, "Rotation").
    #[arg(long, value_name = "SIZE", value_parser = byte_size, requires = "audit")]
    audit_rotate_size: Option<u64>,
    /// Rotate the audit log when its file is this old (wall-clock: `12h`, `1d`, `7d`).
    #[arg(long, value_name = "AGE", value_parser = age, requires = "audit")]
    audit_rotate_age: Option<Duration>,
    /// Keep this many closed audit files; remove older ones after each rotation (default:
    /// keep all).
    #[arg(long, value_name = "N", value_parser = count, requires = "audit")]
    audit_keep: Option<usize>,
    /// Compress closed audit files with gzip (`tollgate audit` reads them as they are).
    #[arg(long, requires = "audit")]
    audit_compress: bool,
    /// Append every message of every session to this file (JSON lines; headers never).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// HTTP: let web pages of this origin reach /mcp (`https://app.example.com`: scheme, host
    /// and port, exactly); repeat for more. Pages of this machine are always let in. `*` lets
    /// every page in and needs `--tokens` (DNS rebinding: docs/security.md, "Origin").
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Bearer tokens file (`TOKEN GRANT` per line; `sha256:HEX` tokens); HTTP only.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Approvers' tokens (`TOKEN NAME` per line, as `--tokens`): turns on held calls for
    /// approval, the admin API at /admin and the console at /ui; HTTP only.
    #[arg(long, value_name = "FILE")]
    admin_tokens: Option<PathBuf>,
    #[command(flatten)]
    oauth: oauth::OAuthArgs,
    /// The most calls one grant may have waiting for approval at once.
    #[arg(long, value_name = "N", default_value_t = GatewayOptions::default().max_held_per_grant)]
    max_held_per_grant: usize,
    /// The grant of the stdio client (and of HTTP clients when no tokens file is given).
    #[arg(long, default_value = "default")]
    grant: String,
    /// Seconds a forwarded call may wait for the upstream (a fraction allowed: `2.5`).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    call_timeout: Duration,
    /// A timeout for one tool (its exact name), overriding `--call-timeout`: `TOOL=SECS`,
    /// seconds may have a fraction (`get_pod_logs=2.5`). Repeat for more tools.
    #[arg(long, value_name = "TOOL=SECS", value_parser = tool_timeout)]
    tool_timeout: Vec<(String, Duration)>,
    /// The largest message accepted from the client or the upstream, in bytes; a longer one is
    /// thrown away as it is read (never held whole) and answered with a parse error.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_bytes, value_parser = message_bytes)]
    max_message_bytes: usize,
    /// Messages each queue between one session's tasks holds (client, upstream, stdout, an
    /// HTTP request's or GET stream's events). A full queue stops the reading of its source;
    /// an HTTP event stream left full by its client is closed.
    #[arg(long, value_name = "N", default_value_t = TransportLimits::default().queue, value_parser = count)]
    queue_depth: usize,
    /// HTTP: open connections at most; the next ones wait (in the kernel's backlog) until one
    /// closes.
    #[arg(long, value_name = "N", default_value_t = TransportLimits::default().max_connections, value_parser = count)]
    max_connections: usize,
    /// HTTP: seconds a request's headers may take, from the connection's opening or the first
    /// byte of the request; then the connection is closed.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    header_timeout: Duration,
    /// HTTP: seconds a request's body may take after its headers; then 408.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds)]
    body_timeout: Duration,
    /// HTTP: seconds a keep-alive connection may wait for its next request; then it is closed.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    keep_alive_timeout: Duration,
    /// HTTP: seconds a client may take no byte of an answer while the gateway has more to
    /// send (its socket full); then the connection is closed.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds)]
    write_timeout: Duration,
    /// HTTP: live sessions at most; past it `initialize` is refused (HTTP 503, a JSON-RPC
    /// error).
    #[arg(long, value_name = "N", default_value_t = TransportLimits::default().max_sessions, value_parser = count)]
    max_sessions: usize,
    /// HTTP: seconds a session may go without a request in flight or a GET stream open; then
    /// it ends as a DELETE ends it (its held calls withdrawn, its upstream stopped).
    #[arg(long, value_name = "SECS", default_value = "1800", value_parser = seconds)]
    session_idle_timeout: Duration,
    /// HTTP with a command upstream: child processes at most (one per session); past it
    /// `initialize` is refused (HTTP 503, a JSON-RPC error).
    #[arg(long, value_name = "N", default_value_t = TransportLimits::default().max_upstream_processes, value_parser = count)]
    max_upstream_processes: usize,
    /// Run the gateway's clock (limits, timeouts, audit times) F times as fast as the wall
    /// clock: for demos and live replays of scenarios, never for production.
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = positive_scale)]
    time_scale: f64,
    /// Worker threads of an HTTP gateway. Default: 1 with the memory store (every session on
    /// one thread: less CPU per call and more throughput on a machine where the gateway shares
    /// few cores with its upstream and clients, docs/PERFORMANCE.md), 2 with Redis (a store that
    /// blocks would stall every session of a single thread while it answers). A stdio gateway
    /// always runs on one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Do not watch the policy file: reload only on SIGHUP.
    #[arg(long)]
    no_watch: bool,
    /// Where the limits' counters live: `memory` (this process), or `redis://HOST:PORT[/DB]`,
    /// shared by every gateway replica that names the same Redis (docs/limits.md, "Stores").
    #[arg(long, value_name = "STORE", default_value = "memory")]
    store: String,
    /// When the Redis store cannot answer: `closed` refuses limited calls (the default),
    /// `open` lets them through uncounted; both are audited.
    #[arg(long, value_name = "MODE", default_value = "closed", value_parser = ["closed", "open"])]
    store_unavailable: String,
    /// The longest wait for one answer from the Redis store, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = duration_ms(tollgate_store_redis::DEFAULT_RESPONSE_TIMEOUT))]
    store_timeout_ms: u64,
    /// The longest wait to connect to the Redis store, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = duration_ms(tollgate_store_redis::DEFAULT_CONNECT_TIMEOUT))]
    store_connect_timeout_ms: u64,
    /// This replica's name among the gateways sharing a Redis store (letters, digits, `.`,
    /// `_`, `-`; default `HOSTNAME-PID`): with `--store redis://…` and the admin API, held calls
    /// are listed and decided from any replica, and other replicas name this one's calls
    /// `ID@NAME` (docs/approvals.md, "Several replicas").
    #[arg(long, value_name = "NAME")]
    replica: Option<String>,
    /// Pinned tool definitions (what `tollgate pin` printed): every `tools/list` answer is
    /// checked against it; a tool that changed or is not in it is hidden and its calls refused
    /// (docs/pinning.md).
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// What a tool that drifted from `--lock` gets: `refuse` (hidden, calls refused) or `warn`
    /// (listed and forwarded); both audit and count the drift.
    #[arg(long, value_name = "MODE", default_value = "refuse", value_parser = ["refuse", "warn"], requires = "lock")]
    lock_mode: String,
    /// HTTPS: the listener's certificate chain (PEM, its own certificate first); with
    /// `--tls-key`, `--listen` serves https (MCP, the admin API and the console).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// HTTPS: the private key of `--tls-cert` (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// HTTPS: seconds a connection's TLS handshake may take; then it is closed (and counted in
    /// `tollgate_tls_handshakes_timed_out_total`).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    tls_handshake_timeout: Duration,
    /// Export OpenTelemetry traces, a span per MCP request (its decision, rule, counter, grant,
    /// session, tool, upstream and outcome; never argument values), over OTLP/HTTP (protobuf)
    /// to this collector: posted to `URL/v1/traces`, e.g. `http://127.0.0.1:4318`
    /// (docs/observability.md).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// The traces' `service.name` (default `tollgate`).
    #[arg(long, value_name = "NAME", requires = "otlp_endpoint")]
    otlp_service_name: Option<String>,
    /// `[telemetry]` of the config file.
    #[arg(skip)]
    telemetry: Option<TelemetryConfig>,
    /// The upstream's Streamable HTTP URL (`http://` or `https://`).
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    upstream_url: Option<String>,
    /// An `https://` upstream: certificates (PEM) of the authorities to trust besides the
    /// system's (`/etc/ssl/certs`), e.g. the private CA that signed the upstream's certificate.
    #[arg(long, value_name = "FILE", requires = "upstream_url")]
    upstream_ca_file: Option<PathBuf>,
    /// The upstream as a command to run (after `--`), spoken to over stdio.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The counter store, and the Redis store behind it if it is one.
type Stores = (Arc<dyn CounterStore>, Option<Arc<RedisStore>>);

/// The counter store named by `--store` and its options (and the Redis store itself, which
/// also shares the replicas' approvals).
fn counter_store(args: &Args) -> anyhow::Result<Stores> {
    if args.store == "memory" {
        if args.replica.is_some() {
            anyhow::bail!(
                "`--replica` names this gateway among replicas sharing a Redis store: add `--store redis://HOST:PORT`"
            );
        }
        return Ok((Arc::new(MemoryStore::new()), None));
    }
    if args.store_timeout_ms == 0 || args.store_connect_timeout_ms == 0 {
        anyhow::bail!(
            "`--store-timeout-ms` and `--store-connect-timeout-ms` must be at least 1: a store call without a bound could hang"
        );
    }
    let options = RedisOptions {
        response_timeout: Duration::from_millis(args.store_timeout_ms),
        connect_timeout: Duration::from_millis(args.store_connect_timeout_ms),
        on_unavailable: if args.store_unavailable == "open" {
            FailMode::Open
        } else {
            FailMode::Closed
        },
        ..RedisOptions::default()
    };
    let store = RedisStore::open(&args.store, options)
        .map_err(|e| anyhow::anyhow!("--store: {e}, or `memory`"))?;
    // A Redis that is down at start is not fatal (calls are unavailable until it is up), but
    // the operator should know at once.
    if let Err(e) = store.ping() {
        tracing::warn!(
            "the counter store {} does not answer ({e}); limited calls are {} until it does",
            store.name(),
            if args.store_unavailable == "open" {
                "let through uncounted (--store-unavailable open)"
            } else {
                "refused"
            }
        );
    }
    let store = Arc::new(store);
    Ok((Arc::clone(&store) as Arc<dyn CounterStore>, Some(store)))
}

/// Takes the config file's settings into `args`: a setting given both ways is an error (exit
/// 2), naming the flag and the key.
fn apply_config(args: &mut Args, config: &Config) -> anyhow::Result<()> {
    fn set<T>(flag: &mut Option<T>, value: Option<T>, name: &str, key: &str) -> anyhow::Result<()> {
        match (flag.is_some(), value) {
            (true, Some(_)) => anyhow::bail!(
                "`--{name}` and the config's `{key}` both set it: keep one (the config file is read with `--config`)"
            ),
            (false, Some(v)) => *flag = Some(v),
            (_, None) => {}
        }
        Ok(())
    }
    args.policy = Some(config.policy.clone());
    set(&mut args.audit, config.audit.clone(), "audit", "audit")?;
    set(&mut args.record, config.record.clone(), "record", "record")?;
    if let Some(listen) = &config.listen {
        set(
            &mut args.listen,
            Some(listen.addr),
            "listen",
            "[listen] addr",
        )?;
        set(
            &mut args.tokens,
            listen.tokens.clone(),
            "tokens",
            "[listen] tokens",
        )?;
        set(
            &mut args.admin_tokens,
            listen.admin_tokens.clone(),
            "admin-tokens",
            "[listen] admin_tokens",
        )?;
        set(
            &mut args.tls_cert,
            listen.tls_cert.clone(),
            "tls-cert",
            "[listen] tls_cert",
        )?;
        set(
            &mut args.tls_key,
            listen.tls_key.clone(),
            "tls-key",
            "[listen] tls_key",
        )?;
        if !listen.allow_origin.is_empty() {
            if !args.allow_origin.is_empty() {
                anyhow::bail!(
                    "`--allow-origin` and the config's `[listen] allow_origin` both set it: keep one"
                );
            }
            args.allow_origin = listen.allow_origin.clone();
        }
    }
    set(&mut args.lock, config.lock.clone(), "lock", "lock")?;
    if let Some(mode) = config.lock_mode {
        if args.lock_mode != "refuse" && args.lock_mode != mode.as_str() {
            anyhow::bail!(
                "`--lock-mode` and the config's `lock_mode` both set it: keep one (the config file is read with `--config`)"
            );
        }
        args.lock_mode = mode.as_str().to_owned();
    }
    if let Some(oauth) = &config.oauth {
        if args.oauth.given() {
            anyhow::bail!(
                "`--oauth-issuer` (and the other `--oauth-*` flags) and the config's `[auth.oauth]` both set it: keep one (the config file is read with `--config`)"
            );
        }
        args.oauth.from_config = Some(oauth.clone());
    }
    if let Some(telemetry) = &config.telemetry {
        if args.otlp_endpoint.is_some() {
            anyhow::bail!(
                "`--otlp-endpoint` and the config's `[telemetry] otlp_endpoint` both set it: keep one (the config file is read with `--config`)"
            );
        }
        args.telemetry = Some(telemetry.clone());
    }
    if let Some(grant) = &config.grant {
        args.grant = grant.clone();
    }
    if let Some(store) = &config.store {
        args.store = store.clone();
    }
    set(
        &mut args.replica,
        config.replica.clone(),
        "replica",
        "replica",
    )?;
    Ok(())
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let mut configured = None;
    // The config's upstreams (name, prefix): what a lock pins them under.
    let mut pinned_as: Vec<(String, String)> = vec![(DEFAULT_UPSTREAM.to_owned(), String::new())];
    if let Some(path) = args.config.clone() {
        let Some(config) = super::load_config(&path, "; the gateway does not start")? else {
            return Ok(ExitCode::from(2));
        };
        apply_config(&mut args, &config)?;
        configured = Some(config.spec());
        pinned_as = config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.prefix.clone()))
            .collect();
    }
    let Some(policy_path) = args.policy.clone() else {
        anyhow::bail!("no policy: give `--policy FILE` or `--config FILE`");
    };
    let Some(policy) = super::load_policy(&policy_path, "; the gateway does not start")? else {
        return Ok(ExitCode::from(2));
    };
    let pins = args
        .lock
        .as_ref()
        .map(|path| {
            let lock = Lock::from_path(path).map_err(anyhow::Error::msg)?;
            let mode = LockMode::parse(&args.lock_mode).unwrap_or(LockMode::Refuse);
            let upstreams: Vec<(&str, &str)> = pinned_as
                .iter()
                .map(|(n, p)| (n.as_str(), p.as_str()))
                .collect();
            let pins = Pins::several(&lock, &upstreams, mode)
                .map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?;
            let hash = file_hash(path).unwrap_or_default();
            anyhow::Ok((Arc::new(pins), path.display().to_string(), hash))
        })
        .transpose()?;
    let (store, redis) = counter_store(&args)?;
    let shared = redis
        .map(|r| replicas::Shared::new(r, args.replica.as_deref()))
        .transpose()?;
    let spec = match (configured, &args.upstream_url, args.command.split_first()) {
        (Some(spec), _, _) => spec,
        (None, Some(url), _) => UpstreamSpec::Url {
            url: url.clone(),
            client: http_client(args.upstream_ca_file.as_deref())?,
        },
        (None, None, Some((program, rest))) => UpstreamSpec::Command {
            program: program.clone(),
            args: rest.to_vec(),
        },
        (None, None, None) => {
            anyhow::bail!("no upstream: give `--upstream-url URL` or `-- COMMAND ARGS...`")
        }
    };
    // An https upstream whose certificate does not verify is a configuration to fix, which no
    // retry mends: the gateway does not start (exit 2), naming the upstream and the problem.
    check_upstream_certificates(&spec)?;
    let tokens = args
        .tokens
        .as_ref()
        .map(|p| Tokens::from_path(p))
        .transpose()?;
    if args.tls_cert.is_some() && args.listen.is_none() {
        anyhow::bail!(
            "`--tls-cert` and `--tls-key` apply to the HTTP listener: add `--listen ADDR` (a stdio gateway has no connection to encrypt)"
        );
    }
    // Read before anything is opened: a certificate or key that cannot serve is bad input.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tollgate_mcp::tls::server_config(cert, key)?),
        _ => None,
    };
    if tokens.is_some() && args.listen.is_none() {
        anyhow::bail!(
            "`--tokens` applies to HTTP clients: add `--listen ADDR`, or use `--grant NAME` for the stdio client"
        );
    }
    if !args.allow_origin.is_empty() && args.listen.is_none() {
        anyhow::bail!(
            "`--allow-origin` applies to the HTTP listener (web pages reach it through a browser): add `--listen ADDR`"
        );
    }
    let telemetry_config = match (&args.telemetry, &args.otlp_endpoint) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(endpoint)) => {
            let mut c = TelemetryConfig::new(endpoint);
            if let Some(name) = &args.otlp_service_name {
                c.service_name = name.clone();
            }
            Some(c)
        }
        (None, None) => None,
    };
    if let Some(c) = &telemetry_config {
        c.check().map_err(anyhow::Error::msg)?;
    }
    let oauth_config = args.oauth.config();
    if let Some(c) = &oauth_config {
        if args.listen.is_none() {
            anyhow::bail!(
                "`--oauth-issuer` checks the access tokens of HTTP clients: add `--listen ADDR`, or use `--grant NAME` for the stdio client"
            );
        }
        c.check().map_err(anyhow::Error::msg)?;
    }
    let allowed_origins = AllowedOrigins::parse(
        &args.allow_origin,
        tokens.is_some() || oauth_config.is_some(),
    )
    .map_err(anyhow::Error::msg)?;
    let admin_tokens = args
        .admin_tokens
        .as_ref()
        .map(|p| Tokens::from_path(p))
        .transpose()?;
    if admin_tokens.is_some() && args.listen.is_none() {
        anyhow::bail!(
            "`--admin-tokens` serves the admin API on the HTTP listener: add `--listen ADDR`"
        );
    }
    if let (Some(admins), Some(agents)) = (&admin_tokens, &tokens)
        && let Some((admin, grant)) = admins.shared_with(agents)
    {
        anyhow::bail!(
            "the same token is approver `{admin}` in `--admin-tokens` and grant `{grant}` in `--tokens`: an agent could approve its own calls; give approvers tokens of their own"
        );
    }
    // The gateway creates the log, never its folder: a typo in the path should not make a
    // folder nobody reads. Said with what to do.
    if let Some(path) = &args.audit
        && let Some(folder) = path.parent()
        && !folder.as_os_str().is_empty()
        && !folder.is_dir()
    {
        anyhow::bail!(
            "cannot open audit log `{}`: No such file or directory (os error 2): its folder `{}` does not exist; create it (`mkdir -p {}`) or give `--audit` a path in a folder that exists",
            path.display(),
            folder.display(),
            folder.display()
        );
    }
    let audit = args
        .audit
        .as_ref()
        .map(|p| {
            let rotation = Rotation {
                max_bytes: args.audit_rotate_size,
                max_age: args.audit_rotate_age,
                keep: args.audit_keep,
                compress: args.audit_compress,
            };
            AuditLog::open_rotating(p, args.audit_fsync, rotation, system_wall_clock())
        })
        .transpose()?;
    let policy_hash = hex::encode(sha2::Sha256::digest(policy.source.text.as_bytes()));
    let engine = Engine::new(Arc::new(policy), store);
    let options = GatewayOptions {
        limits: Limits {
            max_bytes: args.max_message_bytes,
        },
        call_timeout: args.call_timeout,
        tool_timeouts: args.tool_timeout.iter().cloned().collect(),
        approvals: admin_tokens.is_some()
            || oauth_config
                .as_ref()
                .is_some_and(|c| c.admin_scope.is_some()),
        max_held_per_grant: args.max_held_per_grant.max(1),
        pins: pins.as_ref().map(|(p, ..)| Arc::clone(p)),
        upstreams: match &spec {
            UpstreamSpec::Several(parts) => Arc::clone(parts),
            _ => Arc::default(),
        },
        ..GatewayOptions::default()
    };
    let gateway = match &args.record {
        None => Gateway::new(engine, audit, options),
        Some(path) => {
            let recorder = Recorder::create(path)
                .with_context(|| format!("cannot open recording `{}`", path.display()))?;
            Gateway::new_recording(engine, audit, options, recorder)
        }
    };
    let clock = Clock::scaled(Instant::now(), args.time_scale);
    let mut opened = serde_json::json!({"policy": policy_path.display().to_string(), "policy_sha256": policy_hash, "version": env!("CARGO_PKG_VERSION"), "store": store_name(&args), "time_scale": clock.scale()});
    if let Some((pins, path, hash)) = &pins {
        opened["lock"] = serde_json::json!(path);
        opened["lock_sha256"] = serde_json::json!(hash);
        opened["lock_mode"] = serde_json::json!(pins.mode().as_str());
    }
    gateway
        .open(clock.now(), opened)
        .map_err(anyhow::Error::msg)
        .context("writing the audit log")?;
    // A stdio gateway serves one session: one thread runs it without waking another thread
    // for each message it passes on (a thread still reads stdin). HTTP serves many sessions.
    let threads = args
        .threads
        .unwrap_or(if args.store == "memory" { 1 } else { 2 });
    let runtime = match (args.listen, threads) {
        (None, _) | (Some(_), 1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        (Some(_), n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build()?,
    };
    let limits = TransportLimits {
        max_message_bytes: args.max_message_bytes,
        queue: args.queue_depth,
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        idle_timeout: args.keep_alive_timeout,
        write_timeout: args.write_timeout,
        max_connections: args.max_connections,
        max_sessions: args.max_sessions,
        session_idle: args.session_idle_timeout,
        max_upstream_processes: args.max_upstream_processes,
        handshake_timeout: args.tls_handshake_timeout,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let end = runtime.block_on(async {
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        // Spans are posted on this runtime, by the gateway's own HTTP client (rustls).
        let telemetry = match &telemetry_config {
            Some(c) => {
                let t = Telemetry::start(
                    c,
                    http_client(None)?,
                    tokio::runtime::Handle::current(),
                    gateway.metrics.trace_spans_dropped.clone(),
                )
                .map_err(anyhow::Error::msg)?;
                let t = match &spec {
                    UpstreamSpec::Url { url, .. } => t.with_upstream(url),
                    UpstreamSpec::Command { program, .. } => t.with_upstream(program),
                    UpstreamSpec::Several(_) => t,
                };
                gateway.set_telemetry(t.clone());
                Some(t)
            }
            None => None,
        };
        let end = async {
        // Outcome records are deferred (written with the next decision record); this writes
        // the rest within 20 ms (docs/audit.md, "Durability"). Without a log, nothing to do.
        if args.audit.is_some() {
            let flusher = Arc::clone(&gateway);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(20));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    every.tick().await;
                    flusher.flush_audit();
                }
            });
        }
        // SIGHUP and (unless --no-watch) a change of the policy file reload the policy:
        // validated first; a broken one is refused with its diagnostics and the running one
        // stays. One task does every reload, so they never race each other.
        let (reload_tx, reload_rx) = mpsc::unbounded_channel::<ReloadCause>();
        let hup_tx = reload_tx.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                if hup_tx.send(ReloadCause::Signal).is_err() {
                    return;
                }
            }
        });
        let _watcher = if args.no_watch {
            None
        } else {
            watch_policy(&policy_path, reload_tx)
        };
        tokio::spawn(reloads(
            Arc::clone(&gateway),
            policy_path.clone(),
            clock,
            // The text that was loaded, not a second read: a save between the two would
            // otherwise count as seen and never be reloaded.
            Some(policy_hash.clone()),
            reload_rx,
        ));
        match args.listen {
            None => {
                // Bounded both ways: a client that does not read stdout fills `out`, the
                // session stops taking input, `tx` fills and stdin is not read any more.
                let (tx, rx) = mpsc::channel::<ClientInput>(limits.queue);
                let (sink, out) = mpsc::channel::<serde_json::Value>(limits.queue);
                read_stdin(tx, limits.max_message_bytes);
                let writer = write_stdout(out);
                let core = gateway.session(&args.grant, "stdio");
                let end = run_session(core, spec, rx, sink, clock, limits, stop_rx).await;
                // The session dropped its sink: the writer ends once it has written the rest.
                let _ = writer.await;
                return anyhow::Ok(end);
            }
            Some(addr) => {
                let oauth = match oauth_config {
                    Some(c) => Some(oauth::start(c).await?),
                    None => None,
                };
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let local = listener.local_addr()?;
                // One write: tests read the first line and may close the pipe after it.
                let scheme = if tls.is_some() { "https" } else { "http" };
                let mut banner = format!("listening on {scheme}://{local}/mcp\n");
                if admin_tokens.is_some()
                    || oauth
                        .as_ref()
                        .is_some_and(|o| o.config().admin_scope.is_some())
                {
                    banner.push_str(&format!(
                        "approvals: console at {scheme}://{local}/ui, API at {scheme}://{local}/admin/approvals\n"
                    ));
                }
                // Held calls are listed and decided from every replica sharing the store.
                let _replica = match shared {
                    Some(shared) if gateway.options().approvals => {
                        banner.push_str(&format!(
                            "approvals: shared with the replicas of {} as replica `{}`\n",
                            SharedApprovals::store(&shared),
                            SharedApprovals::replica(&shared)
                        ));
                        Some(tollgate_gateway::approvals::replicas::start(
                            &gateway,
                            Arc::new(shared),
                            clock,
                        ))
                    }
                    _ => None,
                };
                std::io::stderr().lock().write_all(banner.as_bytes())?;
                let front = HttpFront::with_origins(
                    Arc::clone(&gateway),
                    spec,
                    Auth {
                        tokens,
                        admin_tokens,
                        default_grant: args.grant.clone(),
                        oauth,
                    },
                    clock,
                    limits,
                    stop_rx,
                    allowed_origins,
                );
                match tls {
                    Some(config) => serve_tls(listener, front, config).await?,
                    None => serve(listener, front).await?,
                }
                // Let session tasks drain their calls in flight.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        anyhow::Ok(SessionEnd::Closed)
        }
        .await;
        // What is held for export is sent (bounded by the export timeout) while the runtime
        // still runs: the batch processor posts on it.
        if let Some(t) = telemetry {
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
        end
    })?;
    gateway
        .close(clock.now())
        .map_err(anyhow::Error::msg)
        .context("writing the audit log")?;
    match end {
        SessionEnd::Closed => Ok(ExitCode::SUCCESS),
        // The stdio client's upstream never started: a configuration to fix, as a broken
        // policy is (exit 2). Said last, so it is the line a desktop client's log ends with.
        SessionEnd::UpstreamNotStarted(why) => {
            writeln!(std::io::stderr(), "error: {why}")?;
            Ok(ExitCode::from(2))
        }
    }
}

/// Checks the certificate of every `https://` upstream of `spec` at once (each bounded by
/// `TLS_CHECK_TIMEOUT`): an error naming the first that fails, with what to do. An upstream
/// that does not answer now is left to the usual retries (said on stderr).
fn check_upstream_certificates(spec: &UpstreamSpec) -> anyhow::Result<()> {
    use tollgate_gateway::upstream::{TLS_CHECK_TIMEOUT, TlsCheck, check_tls};
    let named: Vec<(Option<String>, String, reqwest::Client)> = match spec {
        UpstreamSpec::Url { url, client } => vec![(None, url.clone(), client.clone())],
        UpstreamSpec::Several(parts) => parts
            .iter()
            .filter_map(|p| match &p.spec {
                UpstreamSpec::Url { url, client } => {
                    Some((Some(p.name.clone()), url.clone(), client.clone()))
                }
                _ => None,
            })
            .collect(),
        UpstreamSpec::Command { .. } => Vec::new(),
    };
    let named: Vec<_> = named
        .into_iter()
        .filter(|(_, url, _)| url.starts_with("https://"))
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let checks = runtime.block_on(async {
        let mut pending = Vec::new();
        for (name, url, client) in &named {
            let (url, client) = (url.clone(), client.clone());
            pending.push((
                name.clone(),
                tokio::spawn(async move { check_tls(&url, &client, TLS_CHECK_TIMEOUT).await }),
            ));
        }
        let mut out = Vec::new();
        for (name, task) in pending {
            out.push((name, task.await.unwrap_or(TlsCheck::Verified)));
        }
        out
    });
    for (name, check) in checks {
        let who = name
            .map(|n| format!("upstream `{n}`: "))
            .unwrap_or_default();
        match check {
            TlsCheck::Verified => {}
            TlsCheck::Failed(why) => anyhow::bail!("{who}{why}; the gateway does not start"),
            TlsCheck::Unreachable(why) => {
                tracing::warn!("{who}{why}; the gateway starts and tries it again when needed");
            }
        }
    }
    Ok(())
}

fn tool_timeout(text: &str) -> Result<(String, Duration), String> {
    let Some((tool, secs)) = text.split_once('=') else {
        return Err(format!(
            "`{text}` is not TOOL=SECS: give a tool's name and its timeout in seconds, e.g. get_pod_logs=5"
        ));
    };
    let tool = tool.trim();
    if tool.is_empty() {
        return Err(format!(
            "`{text}` names no tool: write TOOL=SECS, e.g. get_pod_logs=5"
        ));
    }
    match timeout_secs(secs) {
        Some(d) => Ok((tool.to_owned(), d)),
        None => Err(format!(
            "`{secs}` is not a timeout for `{tool}`: give seconds from 0.001 to 86400, e.g. {tool}=5"
        )),
    }
}

/// `--call-timeout`: seconds from 0.001 to 86400, a fraction allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    timeout_secs(text).ok_or_else(|| {
        format!("`{text}` is not a timeout: give seconds from 0.001 to 86400, e.g. 60 or 2.5")
    })
}

/// A timeout in seconds, from 0.001 to 86400 (a day), a fraction allowed.
fn timeout_secs(text: &str) -> Option<Duration> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| (0.001..=86_400.0).contains(s))
        .map(Duration::from_secs_f64)
}

/// `--max-message-bytes`: from 256 bytes to 64 MiB (an audit record holds a message, and
/// `tollgate audit verify` reads lines of at most 256 MiB).
fn message_bytes(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (256..=64 << 20).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a message size: give bytes from 256 to 67108864 (64 MiB)"
        )),
    }
}

/// A size in bytes for `--audit-rotate-size`: a whole number, optionally with `K`, `M` or `G`
/// (powers of 1024), at least 1 KiB.
fn byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n >= 1024)
        .ok_or_else(|| {
            format!("`{text}` is not a size: give bytes (at least 1024), or a number with K, M or G, e.g. 500M")
        })
}

/// An age for `--audit-rotate-age`: a number with `s`, `m`, `h` or `d`, at least a minute.
fn age(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let parsed = match t.strip_suffix('d') {
        Some(days) => days
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && *d >= 0.0)
            .and_then(|d| Duration::try_from_secs_f64(d * 86_400.0).ok()),
        None if t.ends_with(['s', 'm', 'h']) => tollgate_scenario::format::parse_duration(t),
        None => None,
    };
    parsed
        .filter(|d| *d >= Duration::from_secs(60))
        .ok_or_else(|| {
            format!("`{text}` is not an age: give at least a minute with a unit, e.g. 30m, 12h, 1d")
        })
}

/// A count of the `--queue-depth`, `--max-*` flags: from 1 to 1,000,000.
fn count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a count: give a whole number from 1 to 1000000"
        )),
    }
}

fn positive_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 10_000.0 => Ok(f),
        _ => Err(format!(
            "`{text}` is not a time scale: give a number above 0 and at most 10000, e.g. 30"
        )),
    }
}

/// Why the policy is loaded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReloadCause {
    /// SIGHUP: always reloads.
    Signal,
    /// The file changed on disk: reloads only when its content did.
    FileChanged,
}

impl ReloadCause {
    fn name(self) -> &'static str {
        match self {
            ReloadCause::Signal => "sighup",
            ReloadCause::FileChanged => "file_watch",
        }
    }
}

/// How long a file change settles before it is read: editors write in several steps
/// (truncate, write, rename), and one save should be one reload.
const WATCH_SETTLE: Duration = Duration::from_millis(150);

/// The SHA-256 of the file's bytes, in hex (the form the audit log's `policy_sha256` takes).
fn file_hash(path: &std::path::Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|bytes| hex::encode(sha2::Sha256::digest(&bytes)))
}

/// Feeds the stdio session its client's lines (blank ones skipped, a trailing `\r` dropped),
/// each read with its size bounded by `max` (`tollgate_mcp::stdio::read_line`): a longer line
/// is thrown away as it arrives and answered with the parse error. A full queue to the session
/// makes the reader wait, so stdin is not read while the client does not read stdout.
/// A pipe (what MCP clients give a stdio server) is read on the session's own thread, through
/// the runtime's event loop; anything else (a terminal, a file) by a thread of its own, since
/// reading it blocks. The first saves a thread wake-up a message (docs/PERFORMANCE.md). Not
/// `tollgate_mcp::stdio::stdin()`'s fallback: tokio's stdin reads a terminal on its blocking
/// pool, where the read cannot be cancelled and would hold up the runtime's shutdown until a
/// line is typed; a detached thread does not.
fn read_stdin(tx: mpsc::Sender<ClientInput>, max: usize) {
    use tollgate_mcp::stdio::Line;
    // The input for a line read, if any: blank lines are skipped.
    let input = |read: Line, line: &mut Vec<u8>| match read {
        Line::Message if line.iter().all(u8::is_ascii_whitespace) => None,
        Line::Message => Some(ClientInput::Message {
            bytes: std::mem::take(line),
            reply: None,
            trace: None,
        }),
        Line::TooLarge { size } => Some(ClientInput::TooLarge { size }),
        Line::End => None,
    };
    #[cfg(unix)]
    if let Some(pipe) = tollgate_mcp::stdio::stdin_pipe() {
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                let read = match tollgate_mcp::stdio::read_line(&mut reader, &mut line, max).await {
                    Ok(Line::End) | Err(_) => break,
                    Ok(read) => read,
                };
                if let Some(input) = input(read, &mut line)
                    && tx.send(input).await.is_err()
                {
                    break;
                }
            }
        });
        return;
    }
    std::thread::spawn(move || {
        let mut reader = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            let read = match tollgate_mcp::stdio::read_line_blocking(&mut reader, &mut line, max) {
                Ok(Line::End) | Err(_) => break,
                Ok(read) => read,
            };
            if let Some(input) = input(read, &mut line)
                && tx.blocking_send(input).is_err()
            {
                break;
            }
        }
    });
}

/// Writes the stdio session's messages to stdout, one per line, everything already queued (up
/// to about a megabyte) in one write. A pipe is written through the runtime's event loop
/// (`tollgate_mcp::stdio`). The handle ends once the session dropped its sink and everything
/// was written.
fn write_stdout(mut out: mpsc::Receiver<serde_json::Value>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut stdout = tollgate_mcp::stdio::stdout();
        let mut buf = Vec::new();
        while let Some(first) = out.recv().await {
            buf.clear();
            let mut next = Some(first);
            while let Some(v) = next.take() {
                // A `Value` always serializes.
                let _ = serde_json::to_writer(&mut buf, &v);
                buf.push(b'\n');
                if buf.len() <= 1 << 20 {
                    next = out.try_recv().ok();
                }
            }
            if stdout.write_all(&buf).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    })
}

/// Keeps the policy watch alive while it is held.
#[cfg(not(target_os = "linux"))]
type PolicyWatch = notify::RecommendedWatcher;
/// The Linux watch runs on its own thread until the process ends; nothing to hold.
#[cfg(target_os = "linux")]
type PolicyWatch = ();

/// Watches the policy's folder (so a save by rename is seen too) and reports changes of the
/// policy file. `None`, with a warning, when the platform cannot watch: SIGHUP still works.
///
/// On Linux the watch is inotify's, asked only for the events that end a save (a file closed
/// after writing, moved in, created, deleted or moved out): writes to other files of the folder,
/// such as an audit log or a recording kept next to the policy, do not wake it (the `notify`
/// crate always asks for every write and open, and its thread woke on each audit record:
/// docs/PERFORMANCE.md). Elsewhere, `notify`.
fn watch_policy(
    path: &std::path::Path,
    tx: mpsc::UnboundedSender<ReloadCause>,
) -> Option<PolicyWatch> {
    let absolute = std::path::absolute(path).ok()?;
    let folder = absolute.parent()?.to_path_buf();
    let name = absolute.file_name()?.to_os_string();
    match watch_folder(&folder, name, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch `{}` for changes ({e}); reload with SIGHUP instead",
                path.display()
            );
            None
        }
    }
}

#[cfg(target_os = "linux")]
fn watch_folder(
    folder: &std::path::Path,
    name: std::ffi::OsString,
    tx: mpsc::UnboundedSender<ReloadCause>,
) -> std::io::Result<PolicyWatch> {
    use inotify::{Inotify, WatchMask};
    let mut inotify = Inotify::init()?;
    inotify.watches().add(
        folder,
        WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM,
    )?;
    std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let Ok(events) = inotify.read_events_blocking(&mut buffer) else {
                    return;
                };
                let ours = events
                    .into_iter()
                    .any(|e| e.name.is_some_and(|n| n == name.as_os_str()));
                if ours && tx.send(ReloadCause::FileChanged).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn watch_folder(
    folder: &std::path::Path,
    name: std::ffi::OsString,
    tx: mpsc::UnboundedSender<ReloadCause>,
) -> notify::Result<PolicyWatch> {
    use notify::Watcher;
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.send(ReloadCause::FileChanged);
        }
    };
    let mut w = notify::recommended_watcher(handler)?;
    w.watch(folder, notify::RecursiveMode::NonRecursive)?;
    Ok(w)
}

/// Does every reload, one at a time, in the order asked.
async fn reloads(
    gateway: Arc<Gateway>,
    path: PathBuf,
    clock: Clock,
    mut last_seen: Option<String>,
    mut rx: mpsc::UnboundedReceiver<ReloadCause>,
) {
    while let Some(mut cause) = rx.recv().await {
        if cause == ReloadCause::FileChanged {
            tokio::time::sleep(WATCH_SETTLE).await;
        }
        // Changes that arrived meanwhile are covered by this reload; a SIGHUP among them
        // makes it unconditional.
        while let Ok(more) = rx.try_recv() {
            if more == ReloadCause::Signal {
                cause = ReloadCause::Signal;
            }
        }
        let hash = file_hash(&path);
        if cause == ReloadCause::FileChanged && (hash.is_none() || hash == last_seen) {
            // Unchanged content (a touch, our own read) or a file gone mid-save: nothing to do.
            continue;
        }
        last_seen = hash;
        reload(&gateway, &path, clock.now(), cause);
    }
}

/// The store as the audit log's opening record names it (no password).
fn store_name(args: &Args) -> String {
    if args.store == "memory" {
        return "memory".to_owned();
    }
    RedisStore::open(&args.store, RedisOptions::default())
        .map(|s| {
            format!(
                "{} (unavailable: fail {})",
                s.name(),
                args.store_unavailable
            )
        })
        .unwrap_or_default()
}

/// Loads the policy file again and swaps it in if it is valid.
fn reload(gateway: &Gateway, path: &std::path::Path, now: Duration, cause: ReloadCause) {
    let mut stderr = std::io::stderr().lock();
    match Policy::load(path) {
        Ok(policy) => {
            let hash = hex::encode(sha2::Sha256::digest(policy.source.text.as_bytes()));
            let fields = serde_json::json!({"policy": path.display().to_string(), "policy_sha256": hash, "cause": cause.name()});
            match gateway.reload(policy, now, fields) {
                Ok(()) => {
                    let _ = writeln!(
                        stderr,
                        "reloaded `{}` (sha256 {}, {})",
                        path.display(),
                        &hash[..16],
                        cause.name()
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        stderr,
                        "error: reload of `{}` refused: the audit log cannot record it ({e}); the running policy stays",
                        path.display()
                    );
                }
            }
        }
        Err(diags) => {
            let _ = writeln!(stderr, "{}", diags.render_plain());
            let _ = writeln!(
                stderr,
                "error: `{}` is not a valid policy; the running policy stays",
                path.display()
            );
            let errors = diags.errors().count();
            let _ = gateway.reload_refused(
                now,
                serde_json::json!({"policy": path.display().to_string(), "errors": errors, "cause": cause.name()}),
            );
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
