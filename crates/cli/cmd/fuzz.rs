//! `tollgate fuzz --policy FILE [--config FILE] [--cases N] [--seed S] [--save DIR]
//! [--time-budget D]`: property fuzzing of a policy through the gateway's core and the mock in
//! virtual time (docs/fuzzing.md); with `--config`, behind the config's upstreams (a mock for
//! each, names drawn from the union of their exposed names).
//!
//! `tollgate fuzz --wire [--cases N] [--seed S] [--transport http|stdio|both] [--upstreams N]
//! [--answer-timeout D]`:
//! wire fuzzing of the real gateway (both fronts) in front of a deliberately naive upstream (both
//! upstream transports; or several behind the router; crates/wire-fuzz), with its fixed policy (docs/fuzzing.md, "Wire fuzzing"). The
//! hidden `tollgate naive-upstream [--log FILE] [--http ADDR]` is that upstream as a process.
//!
//! Exit codes: 0 when every property held, 1 when one broke (the minimal session is saved as a
//! scenario under `--save`, or printed; for `--wire`, the minimal case's wire messages are
//! printed), 2 for a broken policy or bad flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tollgate_policy::{CounterStore, MemoryStore, Policy};
use tollgate_scenario::fuzz::FuzzOptions;
use tollgate_wire_fuzz::naive::{self, ExecLog};
use tollgate_wire_fuzz::{Transports, WireOptions, fuzz_wire};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy to fuzz.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "wire",
        conflicts_with = "wire"
    )]
    policy: Option<PathBuf>,
    /// A gateway config file of several upstreams: the sessions run behind them (a mock for
    /// each under its name and prefix), drawing tool names from the union of their exposed
    /// names, with `upstream:` rules decided and checked.
    #[arg(long, value_name = "FILE", conflicts_with = "wire")]
    config: Option<PathBuf>,
    /// Fuzz the gateway's wire instead: generated MCP traffic through the real gateway (HTTP
    /// and stdio) in front of a naive upstream that runs anything looking like a call, with
    /// the wire fuzzer's own policy.
    #[arg(long)]
    wire: bool,
    /// With `--wire`: the transports on both sides of the gateway.
    #[arg(long, value_name = "T", requires = "wire", value_parser = ["http", "stdio", "both"])]
    transport: Option<String>,
    /// With `--wire`: plain traffic only (well-formed requests with valid ids from several
    /// clients), the baseline of what checking costs.
    #[arg(long, requires = "wire")]
    plain: bool,
    /// With `--wire`: how many naive upstreams stand behind the gateway (1 to 8); more than one
    /// puts the router of several upstreams between them (their tools `u0__read_file`, …), and
    /// each execution must also have happened on the upstream its name routes to.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "wire", value_parser = clap::value_parser!(u8).range(1..=8))]
    upstreams: u8,
    /// With `--wire`: how long a client waits for an answer before the gateway counts as hung
    /// (`3s`, the default; longer on a loaded machine, where starting stdio upstreams is slow).
    #[arg(long, value_name = "D", value_parser = duration, requires = "wire")]
    answer_timeout: Option<std::time::Duration>,
    /// How many sessions to generate.
    #[arg(long, value_name = "N", default_value_t = 256)]
    cases: u32,
    /// The seed: the same seed generates the same sessions.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Where to save the minimal failing session as a scenario file.
    #[arg(long, value_name = "DIR", conflicts_with = "wire")]
    save: Option<PathBuf>,
    /// Stop generating sessions after this long (`30s`, `5m`).
    #[arg(long, value_name = "D", value_parser = duration, conflicts_with = "wire")]
    time_budget: Option<std::time::Duration>,
    /// The shortest session, in calls.
    #[arg(long, value_name = "N", default_value_t = 1)]
    min_calls: usize,
    /// The longest session, in calls.
    #[arg(long, value_name = "N", default_value_t = 50)]
    max_calls: usize,
    /// Threads to fuzz on (default: one per core); the same seed gives the same report whatever
    /// the number.
    #[arg(long, value_name = "N", conflicts_with = "wire")]
    jobs: Option<usize>,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    tollgate_scenario::format::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration: write e.g. `30s`, `5m`, `1h`"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.wire {
        return run_wire(&args);
    }
    let Some(policy_path) = args.policy.clone() else {
        eprintln!("error: give `--policy FILE` (or `--wire` to fuzz the gateway's wire)");
        return Ok(ExitCode::from(2));
    };
    if args.max_calls == 0 {
        eprintln!("error: --max-calls 0: a session needs at least one call; give 1 or more");
        return Ok(ExitCode::from(2));
    }
    if args.min_calls > args.max_calls {
        eprintln!(
            "error: --min-calls {} is more than --max-calls {}: the shortest session may not be longer than the longest",
            args.min_calls, args.max_calls
        );
        return Ok(ExitCode::from(2));
    }
    let upstreams: Vec<(String, String)> = match &args.config {
        Some(path) => match super::load_config(path, "; nothing was fuzzed")? {
            Some(c) => c
                .upstreams
                .iter()
                .map(|u| (u.name.clone(), u.prefix.clone()))
                .collect(),
            None => return Ok(ExitCode::from(2)),
        },
        None => Vec::new(),
    };
    let policy = match Policy::load(&policy_path) {
        Ok(p) => Arc::new(p),
        Err(d) => {
            eprintln!("{}", d.render_plain());
            eprintln!("error: `{}` is not a valid policy", policy_path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let options = FuzzOptions {
        cases: args.cases,
        seed: args.seed,
        time_budget: args.time_budget,
        min_calls: args.min_calls,
        max_calls: args.max_calls,
        jobs: args.jobs,
    };
    let store = || -> Arc<dyn CounterStore> { Arc::new(MemoryStore::new()) };
    // indicatif draws on stderr only when it is a terminal.
    let bar = indicatif::ProgressBar::new(u64::from(args.cases));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{bar:30}] {pos}/{len} sessions, {per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("#>-"),
    );
    // Shards report from several threads: count, rather than set a position that may arrive
    // out of order.
    let started = std::time::Instant::now();
    let report = tollgate_scenario::fuzz::fuzz_several(
        &policy_path,
        policy,
        &store,
        &options,
        &upstreams,
        |_| bar.inc(1),
    );
    bar.finish_and_clear();
    // The timing goes to stderr: stdout is the same for the same seed, so two runs diff clean.
    let took = started.elapsed().as_secs_f64();
    let threads = options.threads();
    eprintln!(
        "took {took:.2} s: {:.0} sessions/s, {:.0} calls/s (each session run twice), on {threads} thread{}",
        report.cases as f64 / took.max(1e-6),
        report.calls as f64 / took.max(1e-6),
        if threads == 1 { "" } else { "s" }
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "fuzzed `{}` (seed {}): {} sessions, {} calls{}",
        policy_path.display(),
        args.seed,
        report.cases,
        report.calls,
        if report.skipped > 0 {
            format!(
                " ({} more not run: the time budget ran out)",
                report.skipped
            )
        } else {
            String::new()
        }
    )?;
    let decisions: Vec<String> = report
        .decisions
        .iter()
        .map(|(d, n)| format!("{d} {n}"))
        .collect();
    writeln!(out, "decisions: {}", decisions.join(", "))?;
    if report.never_fired.is_empty() {
        writeln!(out, "rules: every rule decided at least one call")?;
    } else {
        writeln!(
            out,
            "rules that never decided a call: {}",
            report.never_fired.join(", ")
        )?;
    }
    let Some(v) = report.violation else {
        writeln!(
            out,
            "every property held: strict and exact limits, nothing refused reached the upstream, default for unnamed tools, refusals name tool, rule and reason, argument rules, determinism"
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    writeln!(
        out,
        "VIOLATION (shrunk to {} calls): {}",
        v.calls, v.message
    )?;
    match &args.save {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            let file = dir.join(format!("fuzz-seed-{}.yaml", args.seed));
            std::fs::write(&file, &v.scenario)
                .with_context(|| format!("cannot write `{}`", file.display()))?;
            writeln!(
                out,
                "saved the minimal session as {}: replay it with `tollgate test {}`",
                file.display(),
                file.display()
            )?;
        }
        None => writeln!(out, "the minimal session, as a scenario:\n{}", v.scenario)?,
    }
    Ok(ExitCode::from(1))
}

/// `tollgate fuzz --wire`.
fn run_wire(args: &Args) -> anyhow::Result<ExitCode> {
    let transports = match args.transport.as_deref() {
        None | Some("both") => Transports::Both,
        Some("http") => Transports::Http,
        Some(_) => Transports::Stdio,
    };
    let options = WireOptions {
        cases: args.cases,
        seed: args.seed,
        transports,
        // The stdio upstream is this binary's `naive-upstream`.
        naive_bin: Some(std::env::current_exe().context("cannot find the tollgate binary")?),
        plain: args.plain,
        upstreams: usize::from(args.upstreams),
        answer_timeout: args
            .answer_timeout
            .unwrap_or(WireOptions::default().answer_timeout),
        ..WireOptions::default()
    };
    let bar = indicatif::ProgressBar::new(u64::from(args.cases));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{bar:30}] {pos}/{len} cases, {per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("#>-"),
    );
    let report = fuzz_wire(&options, |n| bar.set_position(n)).map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    let took = report.elapsed.as_secs_f64().max(1e-6);
    eprintln!(
        "took {took:.2} s (shrinking excluded): {:.0} wire messages/s, {:.0} JSON-RPC messages/s checked",
        report.messages as f64 / took,
        report.items as f64 / took,
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wire-fuzzed the gateway (seed {}, transports {}{}{}): {} cases, {} wire messages ({} JSON-RPC messages), {} executions at the naive upstream, {} decisions allowed and {} refused",
        args.seed,
        args.transport.as_deref().unwrap_or("both"),
        if args.plain { ", plain traffic" } else { "" },
        if args.upstreams > 1 {
            format!(", {} upstreams behind the router", args.upstreams)
        } else {
            String::new()
        },
        report.cases,
        report.messages,
        report.items,
        report.executions,
        report.allowed,
        report.refused,
    )?;
    writeln!(
        out,
        "memory: resident size grew by at most {} MiB from {} MiB (ceiling {} MiB)",
        report.rss_growth_bytes >> 20,
        report.rss_start_bytes >> 20,
        options.rss_ceiling_bytes >> 20,
    )?;
    let Some(v) = report.violation else {
        writeln!(
            out,
            "every invariant held: each execution at the upstream had its own allow record, the audit log verified, every request was answered within {} s with an id its client sent, memory stayed under the ceiling",
            options.answer_timeout.as_secs()
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    writeln!(out, "VIOLATION: {}", v.message)?;
    writeln!(
        out,
        "the minimal case (shrunk), as the exact wire messages:\n{}",
        v.transcript
    )?;
    Ok(ExitCode::from(1))
}

/// `tollgate naive-upstream [--log FILE] [--http ADDR]` (hidden): the wire fuzzer's naive
/// upstream as a process.
#[derive(Debug, clap::Args)]
pub struct NaiveArgs {
    /// Append every execution to this file (JSON lines); without it, to stderr.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Over stdio: the name of the one client behind this process, for its log (otherwise
    /// the first `initialize` names it).
    #[arg(long, value_name = "NAME", conflicts_with = "http")]
    client: Option<String>,
}

/// Runs the naive upstream until stdin closes (stdio) or ctrl-c (HTTP).
pub fn naive_upstream(args: NaiveArgs) -> anyhow::Result<ExitCode> {
    let log = match &args.log {
        Some(path) => {
            ExecLog::file(path).with_context(|| format!("cannot open `{}`", path.display()))?
        }
        None => ExecLog::Stderr,
    };
    let Some(addr) = args.http else {
        naive::serve_stdio(&log, args.client.clone())?;
        return Ok(ExitCode::SUCCESS);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!("listening on http://{}/mcp", listener.local_addr()?);
        naive::serve_http(listener, naive::NaiveHttp::new(log), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
