//! `tollgate approvals --url URL [--token TOKEN] list [--format table|json] | approve ID
//! [--reason R] | deny ID [--reason R]`: the calls a gateway holds for a human's approval,
//! through its admin API (docs/approvals.md). The token is an admin token (a line of the
//! gateway's `--admin-tokens` file); it may come from `TOLLGATE_ADMIN_TOKEN` instead. Its name
//! is the approver the audit log records.
//!
//! Exit codes: 0 done; 1 the gateway did not take the decision (no approval has that id, it
//! is no longer pending, or it is asked of the client's user; with several replicas, `ID@REPLICA`
//! is gone or its replica did not take the verdict); 2 bad input or configuration
//! (no token, a token the gateway refuses, an agent's token, a URL that does not answer, the
//! admin API off).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's HTTP address (`http://127.0.0.1:8787`; a trailing `/mcp` is ignored).
    #[arg(long, value_name = "URL")]
    url: String,
    /// An admin token (from the gateway's `--admin-tokens` file).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ApprovalsCommand {
    /// The calls waiting for approval, oldest first.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Approve a held call: the gateway forwards it (taking its limits now).
    Approve {
        /// `ID`, or `ID@REPLICA` for a call another replica holds (as the list shows it).
        #[arg(value_parser = approval_ref)]
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long, value_name = "R")]
        reason: Option<String>,
    },
    /// Deny a held call: the agent is told who denied it and why.
    Deny {
        /// `ID`, or `ID@REPLICA` for a call another replica holds (as the list shows it).
        #[arg(value_parser = approval_ref)]
        id: String,
        /// Why (shown to the agent and recorded in the audit log).
        #[arg(long, value_name = "R")]
        reason: Option<String>,
    },
}

/// An approval's id: `ID` or `ID@REPLICA`.
fn approval_ref(text: &str) -> Result<String, String> {
    tollgate_gateway::approvals::replicas::parse_ref(text)
        .map(|_| text.to_owned())
        .ok_or_else(|| {
            format!("`{text}` is not an approval id: write a number, or `ID@REPLICA` as the list shows it")
        })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// What the gateway answered.
struct Answer {
    status: u16,
    body: Value,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(token) = args.token.as_deref().filter(|t| !t.trim().is_empty()) else {
        anyhow::bail!(
            "no admin token: give `--token TOKEN` or set TOLLGATE_ADMIN_TOKEN (a token of the gateway's `--admin-tokens` file)"
        );
    };
    let base = args.url.trim_end_matches('/');
    let base = base.strip_suffix("/mcp").unwrap_or(base).to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        anyhow::bail!("`--url {}` is not an http:// or https:// URL", args.url);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (path, body) = match &args.command {
        ApprovalsCommand::List { .. } => ("/admin/approvals".to_owned(), None),
        ApprovalsCommand::Approve { id, reason } => (
            format!("/admin/approvals/{id}/approve"),
            Some(json!({"reason": reason})),
        ),
        ApprovalsCommand::Deny { id, reason } => (
            format!("/admin/approvals/{id}/deny"),
            Some(json!({"reason": reason})),
        ),
    };
    let url = format!("{base}{path}");
    let answer = runtime.block_on(request(&url, token, body))?;
    let message = answer.body["error"].as_str().unwrap_or_default().to_owned();
    match answer.status {
        200 => {}
        401 | 403 => anyhow::bail!("the gateway at {base} refused the token: {message}"),
        404 if message.starts_with("the admin API is off") => {
            anyhow::bail!("{base}: {message}")
        }
        // 410 and 504: another replica's call is gone, or its replica did not take the verdict.
        404 | 409 | 410 | 503 | 504 => {
            writeln!(std::io::stderr().lock(), "error: {message}")?;
            return Ok(ExitCode::from(1));
        }
        status => anyhow::bail!("the gateway at {base} answered {status}: {}", answer.body),
    }
    let mut out = std::io::stdout().lock();
    match args.command {
        ApprovalsCommand::List {
            format: Format::Json,
        } => {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&answer.body["pending"])?
            )?;
        }
        ApprovalsCommand::List {
            format: Format::Table,
        } => write_table(&mut out, &answer.body)?,
        ApprovalsCommand::Approve { id, .. } => {
            writeln!(
                out,
                "approved {id} (`{}` from grant `{}`) as {}",
                answer.body["tool"].as_str().unwrap_or("?"),
                answer.body["grant"].as_str().unwrap_or("?"),
                answer.body["approver"].as_str().unwrap_or("?")
            )?;
        }
        ApprovalsCommand::Deny { id, .. } => {
            writeln!(
                out,
                "denied {id} (`{}` from grant `{}`) as {}",
                answer.body["tool"].as_str().unwrap_or("?"),
                answer.body["grant"].as_str().unwrap_or("?"),
                answer.body["approver"].as_str().unwrap_or("?")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn request(url: &str, token: &str, body: Option<Value>) -> anyhow::Result<Answer> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let builder = match body {
        Some(b) => client.post(url).json(&b),
        None => client.get(url),
    };
    let response = builder
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": text.trim()}));
    Ok(Answer { status, body })
}

/// The pending calls as a table for people.
fn write_table(out: &mut impl Write, body: &Value) -> std::io::Result<()> {
    use tollgate_mcp::display::{ident, text};
    let now = body["now_ms"].as_u64().unwrap_or(0);
    let pending = body["pending"].as_array().cloned().unwrap_or_default();
    if pending.is_empty() {
        return writeln!(out, "no call is waiting for approval");
    }
    let secs = |ms: u64| tollgate_policy::engine::duration_text(Duration::from_secs(ms / 1000));
    let rows: Vec<[String; 7]> = pending
        .iter()
        .map(|p| {
            let created = p["created_at_ms"].as_u64().unwrap_or(0);
            let deadline = p["deadline_ms"].as_u64().unwrap_or(0);
            // The approver decides on what this table shows: client-chosen strings are escaped
            // (a line feed cannot forge a row, a zero-width or look-alike letter cannot hide).
            let mut args = text(&p["arguments"].to_string()).to_string();
            if args.chars().count() > 60 {
                args = args.chars().take(57).collect::<String>() + "...";
            }
            [
                p["id"]
                    .as_str()
                    .map_or_else(|| p["id"].to_string(), str::to_owned),
                ident(p["tool"].as_str().unwrap_or_default()).to_string(),
                ident(p["grant"].as_str().unwrap_or_default()).to_string(),
                ident(p["session"].as_str().unwrap_or_default()).to_string(),
                secs(now.saturating_sub(created)),
                format!(
                    "{} then {}",
                    secs(deadline.saturating_sub(now)),
                    p["on_timeout"].as_str().unwrap_or("deny")
                ),
                args,
            ]
        })
        .collect();
    let header = [
        "ID",
        "TOOL",
        "GRANT",
        "SESSION",
        "AGE",
        "TIMES OUT IN",
        "ARGUMENTS (REDACTED)",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use serde_json::json;

    /// The approvals table is where an operator decides: a tool name with a zero-width space,
    /// a grant with a line feed and arguments with a bidi override must show as escapes, never
    /// as a name that reads like an allowed one or a forged row.
    #[test]
    fn the_approvals_table_escapes_what_clients_chose() {
        let body = json!({"now_ms": 1000, "pending": [{
            "id": 1, "tool": "delete\u{200b}_cluster", "grant": "bot\nfake row",
            "session": "s\u{1b}[2J", "created_at_ms": 0, "deadline_ms": 60000,
            "on_timeout": "deny", "arguments": {"name": "prod\u{202e}dorp"},
        }]});
        let mut out = Vec::new();
        super::write_table(&mut out, &body).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        for hidden in ['\u{200b}', '\u{1b}', '\u{202e}'] {
            assert!(!text.contains(hidden), "{text:?}");
        }
        assert!(text.contains(r"delete\u{200b}_cluster"), "{text}");
    }
}
