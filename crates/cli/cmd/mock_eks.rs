//! `tollgate mock-eks [--http ADDR] [--tools SPEC] [--page-size N] [--allow-write]
//! [--allow-sensitive-data-access] [--fixture FILE] [--faults FILE] [--journal FILE]
//! [--faults-switch FILE] [--max-message-bytes N] [--sse] [--tls-cert FILE --tls-key FILE]`:
//! the mock Amazon EKS MCP server, over stdio by default or Streamable HTTP at
//! `http://ADDR/mcp` (`https://` with `--tls-cert` and `--tls-key`).
//!
//! Exit codes: 0 after stdin closes (stdio) or on SIGTERM/ctrl-c (HTTP), 2 on bad flags or
//! files, 70 when a `crash` fault fires.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tollgate_mcp::Limits;
use tollgate_mock_eks::faults::FaultPlan;
use tollgate_mock_eks::transport::{HttpOptions, Shared, serve_http, serve_https, serve_stdio};
use tollgate_mock_eks::world::{Fixture, Flags};
use tollgate_mock_eks::{MockConfig, MockEks};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve Streamable HTTP on this address (e.g. 127.0.0.1:8080, or port 0 for any);
    /// prints `listening on http://ADDR/mcp` on stderr.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// With `--http`: serve https with this certificate chain (PEM, its own certificate first).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "http"])]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Which tools: `default` (the 16 real tools and the HealthOmics batch tools), `real`,
    /// `full`, or names and globs separated by commas.
    #[arg(long, default_value = "default")]
    tools: String,
    /// Page size of `tools/list` (default: everything in one page).
    #[arg(long, value_name = "N")]
    page_size: Option<usize>,
    /// Allow tools that change the world (the real server's flag).
    #[arg(long)]
    allow_write: bool,
    /// Allow pod logs, CloudWatch logs and Secrets (the real server's flag).
    #[arg(long)]
    allow_sensitive_data_access: bool,
    /// The world's starting state (JSON); the built-in fixture otherwise.
    #[arg(long, value_name = "FILE")]
    fixture: Option<PathBuf>,
    /// Fault rules (JSON; see docs/mock-eks.md).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Switch the fault rules on and off from outside: a file holding `on` or `off`, read
    /// before each message (missing, or anything else: the faults stay as they are; they start
    /// on). What `tollgate test --live` uses for a scenario's `faults: on|off` steps; the
    /// switch survives a crash and restart, since the file does.
    #[arg(long, value_name = "FILE")]
    faults_switch: Option<PathBuf>,
    /// Append every request received to this file, one JSON line each.
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    /// The largest message accepted, in bytes.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_bytes)]
    max_message_bytes: usize,
    /// Over HTTP, answer with SSE streams even when the client accepts JSON.
    #[arg(long)]
    sse: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let fixture = match &args.fixture {
        Some(path) => Fixture::from_path(path)?,
        None => Fixture::default(),
    };
    let faults = match &args.faults {
        Some(path) => FaultPlan::from_path(path).map_err(anyhow::Error::msg)?,
        None => FaultPlan::default(),
    };
    let journal = args
        .journal
        .as_ref()
        .map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open journal `{}`", p.display()))
        })
        .transpose()?;
    let limits = Limits {
        max_bytes: args.max_message_bytes,
    };
    let mock = MockEks::new(MockConfig {
        tools: args.tools.clone(),
        page_size: args.page_size,
        flags: Flags {
            allow_write: args.allow_write,
            allow_sensitive_data_access: args.allow_sensitive_data_access,
        },
        fixture,
        faults,
        limits,
    })
    .context("--tools")?;
    let shared = Shared::new(mock, journal, args.faults_switch.clone());
    // Read before listening: a certificate or key that cannot serve is bad input (exit 2).
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tollgate_mcp::tls::server_config(cert, key)?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.http {
            None => serve_stdio(shared, args.max_message_bytes).await?,
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                let local = listener.local_addr()?;
                let scheme = if tls.is_some() { "https" } else { "http" };
                let mut stderr = std::io::stderr().lock();
                writeln!(stderr, "listening on {scheme}://{local}/mcp")?;
                drop(stderr);
                let options = HttpOptions {
                    max_body: args.max_message_bytes,
                    always_sse: args.sse,
                };
                match tls {
                    Some(config) => {
                        serve_https(listener, config, shared, options, shutdown_signal()).await?
                    }
                    None => serve_http(listener, shared, options, shutdown_signal()).await?,
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
