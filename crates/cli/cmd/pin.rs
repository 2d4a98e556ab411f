//! `tollgate pin [--check --lock FILE] [--timeout SECS] (--config FILE | --upstream-url URL |
//! -- COMMAND ARGS...)`: pinned tool definitions (docs/pinning.md). Connects to the upstream as
//! the gateway would, lists every tool (following `nextCursor`), and prints the lock file
//! (`tollgate pin -- CMD > tollgate.lock`); with `--check`, compares the listing with the lock
//! and names every tool that changed (with the fields that changed), was added or was removed.
//! With `--config`, every upstream of the gateway's config file, each under its name (the
//! tools as the upstream names them, without the prefix the gateway exposes them with).
//!
//! Exit codes: 0 (printed, or nothing drifted), 1 (drift), 2 (bad flags, an unreadable lock,
//! an upstream that cannot be listed).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tollgate_gateway::core::{MAX_LIST_PAGES, MAX_LISTED_TOOLS};
use tollgate_gateway::pin::{DEFAULT_UPSTREAM, Lock};
use tollgate_gateway::upstream::{FromUpstream, Upstream, UpstreamSpec, http_client};
use tollgate_mcp::{Limits, ProtocolVersion};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Compare the upstream's tools with `--lock` instead of printing a lock: exit 1 on drift.
    #[arg(long, requires = "lock")]
    check: bool,
    /// The lock file to check against (what `tollgate pin` printed).
    #[arg(long, value_name = "FILE", requires = "check")]
    lock: Option<PathBuf>,
    /// Seconds the upstream may take to start and answer everything (a fraction allowed).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    timeout: Duration,
    /// The gateway's config file (`tollgate gateway --config`): pins every upstream it names,
    /// each under its name.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["upstream_url", "command"])]
    config: Option<PathBuf>,
    /// The upstream's Streamable HTTP URL (`http://` or `https://`).
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    upstream_url: Option<String>,
    /// An `https://` upstream: certificates (PEM) of the authorities to trust besides the
    /// system's, as `tollgate gateway --upstream-ca-file` takes them.
    #[arg(long, value_name = "FILE", requires = "upstream_url")]
    upstream_ca_file: Option<PathBuf>,
    /// The upstream as a command to run (after `--`), spoken to over stdio.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| (0.001..=86_400.0).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!("`{text}` is not a timeout: give seconds from 0.001 to 86400, e.g. 60")
        })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The upstreams to list, each with the name the lock pins it under.
    let targets: Vec<(String, UpstreamSpec)> =
        match (&args.config, &args.upstream_url, args.command.split_first()) {
            (Some(path), _, _) => {
                let Some(config) = super::load_config(path, "; nothing was pinned")? else {
                    return Ok(ExitCode::from(2));
                };
                config
                    .upstreams
                    .iter()
                    .map(|u| (u.name.clone(), u.spec.clone()))
                    .collect()
            }
            (None, Some(url), _) => vec![(
                DEFAULT_UPSTREAM.to_owned(),
                UpstreamSpec::Url {
                    url: url.clone(),
                    client: http_client(args.upstream_ca_file.as_deref())?,
                },
            )],
            (None, None, Some((program, rest))) => vec![(
                DEFAULT_UPSTREAM.to_owned(),
                UpstreamSpec::Command {
                    program: program.clone(),
                    args: rest.to_vec(),
                },
            )],
            (None, None, None) => anyhow::bail!(
                "no upstream: give `--config FILE`, `--upstream-url URL` or `-- COMMAND ARGS...`"
            ),
        };
    // Read first: a broken lock is bad input whatever the upstream says.
    let lock = args
        .lock
        .as_ref()
        .map(|p| Lock::from_path(p))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let path = args.lock.as_deref().unwrap_or(std::path::Path::new(""));
    if let Some(lock) = &lock
        && let Some((name, _)) = targets
            .iter()
            .find(|(name, _)| !lock.upstreams.contains_key(name))
    {
        let how = if args.config.is_some() {
            "an upstream of the config"
        } else {
            "the name of the upstream given on the command line"
        };
        anyhow::bail!(
            "`{}` pins no upstream named `{name}` ({how}): pin it with `tollgate pin`",
            path.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut listed = Vec::with_capacity(targets.len());
    for (name, spec) in &targets {
        let tools = runtime
            .block_on(list_tools(spec, args.timeout))
            .with_context(|| format!("upstream `{name}`"))?;
        listed.push((name.as_str(), tools));
    }
    let mut stdout = std::io::stdout().lock();
    let Some(lock) = lock else {
        let mut lock = Lock::new();
        for (name, tools) in &listed {
            lock.pin(name, tools);
        }
        stdout.write_all(lock.to_text().as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    let mut drifted = false;
    for (name, tools) in &listed {
        let drift = lock.compare(name, tools);
        if drift.is_empty() {
            writeln!(
                stdout,
                "ok: upstream `{name}`: its {} tools match `{}`",
                tools.len(),
                path.display()
            )?;
            continue;
        }
        drifted = true;
        stdout.write_all(drift.render().as_bytes())?;
        writeln!(
            stdout,
            "drift: upstream `{name}`: {} changed, {} added, {} removed since `{}` was written; review the changes, then pin again (`tollgate pin ... > {}`)",
            drift.changed.len(),
            drift.added.len(),
            drift.removed.len(),
            path.display(),
            path.display()
        )?;
    }
    // An upstream the lock pins and the config no longer has: its tools are gone.
    if args.config.is_some() {
        for (name, tools) in &lock.upstreams {
            if !targets.iter().any(|(t, _)| t == name) {
                drifted = true;
                writeln!(
                    stdout,
                    "drift: upstream `{}` ({} tools) is pinned in `{}` but the config has no such upstream; pin again (`tollgate pin --config ... > {}`)",
                    tollgate_mcp::display::ident(name),
                    tools.len(),
                    path.display(),
                    path.display()
                )?;
            }
        }
    }
    Ok(ExitCode::from(if drifted { 1 } else { 0 }))
}

/// Every tool the upstream lists: `initialize`, `notifications/initialized`, then `tools/list`
/// page by page (at most [`MAX_LIST_PAGES`] pages and [`MAX_LISTED_TOOLS`] tools, as the
/// gateway reads), all within `timeout`.
async fn list_tools(spec: &UpstreamSpec, timeout: Duration) -> anyhow::Result<Vec<Value>> {
    let mut upstream = Upstream::connect(spec, Limits::default().max_bytes, 64)
        .with_context(|| format!("cannot start the upstream {}", describe(spec)))?;
    let listed = tokio::time::timeout(timeout, conversation(&mut upstream)).await;
    let ended = upstream.shutdown().await;
    match listed {
        Ok(Ok(tools)) => Ok(tools),
        Ok(Err(e)) => {
            let said = if ended.stderr.is_empty() {
                String::new()
            } else {
                format!(
                    "; its last words on stderr:\n  {}",
                    ended.stderr.join("\n  ")
                )
            };
            Err(anyhow::anyhow!("upstream {}: {e}{said}", describe(spec)))
        }
        Err(_) => anyhow::bail!(
            "upstream {} did not list its tools within {:?}; give it longer with `--timeout SECS`",
            describe(spec),
            timeout
        ),
    }
}

fn describe(spec: &UpstreamSpec) -> String {
    match spec {
        UpstreamSpec::Url { url, .. } => format!("`{url}`"),
        UpstreamSpec::Several(parts) => parts
            .iter()
            .map(|p| format!("{}: {}", p.name, describe(&p.spec)))
            .collect::<Vec<_>>()
            .join(", "),
        UpstreamSpec::Command { program, args } => {
            let mut words = vec![program.as_str()];
            words.extend(args.iter().map(String::as_str));
            format!("`{}`", words.join(" "))
        }
    }
}

async fn conversation(upstream: &mut Upstream) -> anyhow::Result<Vec<Value>> {
    let tx = upstream.sender();
    let send = |v: Value| {
        let tx = tx.clone();
        async move {
            tx.send(v)
                .await
                .map_err(|_| anyhow::anyhow!("it went away before it was listed"))
        }
    };
    send(json!({
        "jsonrpc": "2.0", "id": "tollgate-pin-0", "method": "initialize",
        "params": {
            "protocolVersion": ProtocolVersion::LATEST_SESSIONFUL.as_str(),
            "capabilities": {},
            "clientInfo": {"name": "tollgate-pin", "version": env!("CARGO_PKG_VERSION")},
        },
    }))
    .await?;
    answer(upstream, "tollgate-pin-0", &send).await?;
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 1..=MAX_LIST_PAGES {
        let id = format!("tollgate-pin-{page}");
        let mut params = json!({});
        if let Some(c) = &cursor {
            params["cursor"] = json!(c);
        }
        send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})).await?;
        let result = answer(upstream, &id, &send).await?;
        let Some(listed) = result.get("tools").and_then(Value::as_array) else {
            anyhow::bail!("its `tools/list` answer has no `tools` array");
        };
        tools.extend(listed.iter().cloned());
        if tools.len() > MAX_LISTED_TOOLS {
            anyhow::bail!(
                "it lists more than {MAX_LISTED_TOOLS} tools, more than the gateway reads"
            );
        }
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(tools),
        }
    }
    anyhow::bail!("its tool list goes on past {MAX_LIST_PAGES} pages, more than the gateway reads")
}

/// Waits for the answer to request `id` and returns its result. Requests from the upstream
/// meanwhile get an answer (`ping` an empty result, anything else "method not found"), so a
/// server that asks something before it lists is not left waiting; notifications are skipped.
async fn answer<F, Fut>(upstream: &mut Upstream, id: &str, send: &F) -> anyhow::Result<Value>
where
    F: Fn(Value) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    loop {
        let bytes = match upstream.rx.recv().await {
            Some(FromUpstream::Message(bytes)) => bytes,
            Some(FromUpstream::Closed(why)) => anyhow::bail!("it went away: {why}"),
            None => anyhow::bail!("it went away"),
        };
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            anyhow::bail!(
                "it sent something that is not JSON: {}",
                tollgate_mcp::display::text(&String::from_utf8_lossy(
                    &bytes[..bytes.len().min(200)]
                ))
            );
        };
        let messages = match value {
            Value::Array(items) => items,
            v => vec![v],
        };
        for m in messages {
            let method = m.get("method").and_then(Value::as_str);
            match (method, m.get("id")) {
                (Some("ping"), Some(rid)) => {
                    send(json!({"jsonrpc": "2.0", "id": rid, "result": {}})).await?;
                }
                (Some(other), Some(rid)) => {
                    send(json!({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": format!("tollgate pin does not answer `{other}`")}})).await?;
                }
                (Some(_), None) => {}
                (None, Some(rid)) if rid.as_str() == Some(id) => {
                    if let Some(e) = m.get("error") {
                        anyhow::bail!("it answered with an error: {e}");
                    }
                    return Ok(m.get("result").cloned().unwrap_or(Value::Null));
                }
                (None, _) => {}
            }
        }
    }
}
