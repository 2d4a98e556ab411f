//! `tollgate demo [--time-scale F] [--keep DIR]`: the main job on the embedded defaults.
//!
//! The mock Amazon EKS MCP server runs in this process (Streamable HTTP on loopback, in-memory
//! state, a journal file); a real `tollgate gateway` process enforces the seed's policy in front
//! of it with the in-memory counter store, an audit log and a recording. Two agents then replay
//! the embedded scenario `scenarios/runaway-burst.yaml` live, over HTTP with their own bearer
//! tokens, on a gateway clock running `--time-scale` times as fast as the wall clock (20 by
//! default: a minute of the incident takes three seconds). The demo prints what each agent read,
//! the audit log's summary and verification, and what reached the upstream; then replays the
//! same scenario in virtual time and checks that both runs decided every call alike.
//!
//! Exit codes: 0 when the live run and the virtual-time run agree and the audit log verifies,
//! 1 when they do not, 2 when the demo cannot run (a port, a process, a file).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tollgate_mock_eks::transport::{HttpOptions, Shared, serve_http};
use tollgate_mock_eks::world::Flags;
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_scenario::TimedCall;

use super::agent_http::{open_session, post};
use super::procs::{Echo, Proc, listening_url};

const SEED_POLICY: &str = include_str!("../../../examples/policies/seed.json");
const SCENARIO: &str = include_str!("../../../scenarios/runaway-burst.yaml");
const SCENARIO_PATH: &str = "scenarios/runaway-burst.yaml";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How much faster than the wall clock the gateway's clock runs during the replay.
    #[arg(long, value_name = "F", default_value_t = 20.0)]
    time_scale: f64,
    /// Keep the policy, audit log, recording and journal in DIR (created) instead of a
    /// temporary folder removed at the end.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(args.time_scale.is_finite() && args.time_scale > 0.0 && args.time_scale <= 1000.0) {
        bail!(
            "`--time-scale {}` is not usable: give a number above 0 and at most 1000",
            args.time_scale
        );
    }
    let (dir, temporary) = match &args.keep {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the folder `{}`", dir.display()))?;
    let result = demo(&args, &dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn demo(args: &Args, dir: &Path) -> anyhow::Result<ExitCode> {
    let policy = dir.join("seed.json");
    let audit = dir.join("audit.jsonl");
    let recording = dir.join("recording.jsonl");
    let journal = dir.join("journal.jsonl");
    let tokens = dir.join("tokens.txt");
    let scenario_file = dir.join("runaway-burst.yaml");
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))
    };
    write(&policy, SEED_POLICY)?;
    // The scenario names the policy relative to itself: here it sits beside it.
    write(
        &scenario_file,
        &SCENARIO.replace("../examples/policies/seed.json", "seed.json"),
    )?;
    let loaded = tollgate_scenario::load(&scenario_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let schedule = tollgate_scenario::plain_calls(&loaded.scenario)
        .map_err(|e| anyhow::anyhow!("the demo scenario: {e}"))?;
    let agents: BTreeMap<String, String> = loaded
        .scenario
        .agents
        .iter()
        .map(|(name, a)| (name.clone(), a.grant.clone()))
        .collect();
    let token_of = |agent: &str| format!("demo-token-{agent}");
    let token_lines: String = agents
        .iter()
        .map(|(agent, grant)| format!("{} {grant}\n", token_of(agent)))
        .collect();
    write(&tokens, &format!("# TOKEN GRANT\n{token_lines}"))?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "== the policy: the seed's (examples/policies/seed.json): CancelAHORunBatch 10 per minute per grant; default deny"
    )?;
    writeln!(
        out,
        "== the scenario: {SCENARIO_PATH}, live, on a gateway clock {}x the wall clock",
        args.time_scale
    )?;
    if let Some(d) = &loaded.scenario.description {
        writeln!(out, "   {}", d.trim())?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let live = runtime.block_on(async {
        // The mock EKS server, in this process.
        let upstream = loaded.scenario.upstream.clone().unwrap_or_default();
        let mock = MockEks::new(MockConfig {
            tools: upstream.tools.spec(),
            flags: Flags {
                allow_write: upstream.allow_write,
                allow_sensitive_data_access: upstream.allow_sensitive_data_access,
            },
            ..MockConfig::default()
        })
        .map_err(|e| anyhow::anyhow!("the mock EKS server cannot start: {e}"))?;
        let journal_file = std::fs::File::create(&journal)
            .with_context(|| format!("cannot create `{}`", journal.display()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on a loopback port for the mock EKS server")?;
        let mock_url = format!("http://{}/mcp", listener.local_addr()?);
        let (stop_mock, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Shared::new(mock, Some(journal_file), None);
        let options = HttpOptions {
            max_body: 4 << 20,
            always_sse: false,
        };
        tokio::spawn(serve_http(listener, shared, options, async move {
            let _ = stopped.await;
        }));

        // The gateway, a real process of this binary.
        let exe = std::env::current_exe().context("cannot find this program's own path")?;
        let scale = args.time_scale.to_string();
        let mut gateway = Proc(
            Command::new(&exe)
                .arg("gateway")
                .arg("--policy")
                .arg(&policy)
                .arg("--audit")
                .arg(&audit)
                .arg("--record")
                .arg(&recording)
                .arg("--tokens")
                .arg(&tokens)
                .args(["--listen", "127.0.0.1:0", "--time-scale", &scale])
                .args(["--upstream-url", &mock_url])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot start `{} gateway`", exe.display()))?,
        );
        let url = listening_url(&mut gateway.0, "gateway", Echo::Everything)?;
        writeln!(
            std::io::stdout(),
            "== tollgate gateway --policy seed.json --tokens tokens.txt --audit audit.jsonl --record recording.jsonl --listen {} --time-scale {scale} --upstream-url {mock_url}\n",
            url.trim_start_matches("http://").trim_end_matches("/mcp"),
        )?;

        let http = reqwest::Client::new();
        let mut sessions = BTreeMap::new();
        for agent in agents.keys() {
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": agent, "version": "demo"}}});
            let sid = open_session(&http, &url, &token_of(agent), init.to_string(), agent).await?;
            sessions.insert(agent.clone(), sid);
        }
        let wall_start = Instant::now();
        let mut live = Vec::new();
        // Calls due at the same instant are sent together, as the agents would: their order
        // among themselves is not defined, live or in virtual time.
        for group in groups(&schedule) {
            let first = group.start;
            let due = wall_start + schedule[first].at.div_f64(args.time_scale);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            let answers = futures::future::join_all(group.clone().map(|i| {
                let call = &schedule[i];
                let msg = json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                    "params": {"name": call.tool, "arguments": call.args}});
                let (http, url) = (&http, &url);
                let (token, session) = (token_of(&call.agent), sessions[&call.agent].clone());
                async move {
                    post(http, url, &token, Some(&session), msg.to_string())
                        .await
                        .map(|(_, answer)| answer)
                }
            }))
            .await;
            for (i, answer) in group.zip(answers) {
                let call = &schedule[i];
                let answer = answer.with_context(|| {
                    format!("the call to `{}` at {:?} failed", call.tool, call.at)
                })?;
                let (decision, detail, message) = tollgate_scenario::describe(&answer);
                let mut line = format!(
                    "+{:>10.3}s grant={} {} -> {decision}",
                    call.at.as_secs_f64(),
                    agents[&call.agent],
                    call.tool
                );
                if !detail.is_empty() {
                    line.push_str(&format!(" ({detail})"));
                }
                writeln!(std::io::stdout(), "{line}")?;
                if decision != "allow"
                    && let Some(m) = &message
                {
                    writeln!(std::io::stdout(), "    {m}")?;
                }
                live.push(decision.into_owned());
            }
        }
        stop_gateway(&mut gateway.0);
        let _ = stop_mock.send(());
        anyhow::Ok(live)
    })?;

    // The audit log.
    writeln!(out, "\n== the audit log (audit.jsonl):")?;
    let records: Vec<Value> = std::fs::read_to_string(&audit)
        .with_context(|| format!("cannot read `{}`", audit.display()))?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_decision: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        *by_kind
            .entry(r["kind"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        if r["kind"] == "decision" {
            *by_decision
                .entry(r["decision"]["decision"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    writeln!(out, "   records by kind:     {}", counts(&by_kind))?;
    writeln!(out, "   decisions:           {}", counts(&by_decision))?;
    let report = tollgate_gateway::audit::verify(&audit, None)
        .with_context(|| format!("cannot read `{}`", audit.display()))?;
    let verified = report.problems.is_empty();
    if verified {
        writeln!(
            out,
            "   tollgate audit verify: {} records, the hash chain is intact{}",
            report.records,
            if report.closed {
                ", closed cleanly"
            } else {
                ""
            }
        )?;
    } else {
        writeln!(
            out,
            "   tollgate audit verify: BROKEN: {:?}",
            report.problems
        )?;
    }

    // What reached the upstream.
    let mut reached: BTreeMap<String, u64> = BTreeMap::new();
    for line in std::fs::read_to_string(&journal)
        .with_context(|| format!("cannot read `{}`", journal.display()))?
        .lines()
    {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if e["method"] == "tools/call" {
            *reached
                .entry(e["tool"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    writeln!(
        out,
        "\n== what reached the mock EKS server (its journal): {}",
        counts(&reached)
    )?;
    let allowed = live.iter().filter(|d| *d == "allow").count() as u64;
    let reached_total: u64 = reached.values().sum();

    // The same scenario in virtual time.
    let virtual_run = tollgate_scenario::run(
        tollgate_scenario::load(&scenario_file).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let virtual_decisions: Vec<String> = virtual_run
        .decisions
        .iter()
        .map(|d| d.decision.to_string())
        .collect();
    // Compared per instant: which of several simultaneous calls is admitted is not defined.
    let mut differ = Vec::new();
    if live.len() != virtual_decisions.len() {
        differ.push(format!(
            "{} calls live, {} in virtual time",
            live.len(),
            virtual_decisions.len()
        ));
    } else {
        for group in groups(&schedule) {
            let sorted = |d: &[String]| {
                let mut d = d.to_vec();
                d.sort();
                d
            };
            let (a, b) = (
                sorted(&live[group.clone()]),
                sorted(&virtual_decisions[group.clone()]),
            );
            if a != b {
                differ.push(format!(
                    "at {:.3}s: live {a:?}, virtual {b:?}",
                    schedule[group.start].at.as_secs_f64()
                ));
            }
        }
    }
    writeln!(
        out,
        "\n== the same scenario in virtual time (no waiting): {} calls, {}",
        virtual_decisions.len(),
        if differ.is_empty() {
            "every decision the same as live".to_owned()
        } else {
            format!("decisions differ from live: {}", differ.join("; "))
        }
    )?;
    writeln!(
        out,
        "\n== to keep this incident as a regression test (virtual time, snapshot-checked):\n   tollgate test {SCENARIO_PATH}"
    )?;
    if args.keep.is_some() {
        writeln!(
            out,
            "   the live run's files are in {}: seed.json, audit.jsonl, recording.jsonl, journal.jsonl",
            dir.display()
        )?;
        writeln!(
            out,
            "   or keep the live run itself, as recorded (each call expects its recorded decision):\n   tollgate scenario from-recording {} --policy ../examples/policies/seed.json > scenarios/incident.yaml\n   tollgate test scenarios/incident.yaml --update",
            recording.display()
        )?;
    }
    let ok = differ.is_empty()
        && verified
        && virtual_run.failures.is_empty()
        && allowed == reached_total;
    if allowed != reached_total {
        writeln!(
            out,
            "error: {allowed} calls were allowed but {reached_total} reached the upstream"
        )?;
    }
    for f in &virtual_run.failures {
        writeln!(out, "error: {f}")?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The index ranges of calls due at the same instant.
fn groups(schedule: &[TimedCall]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, call) in schedule.iter().enumerate() {
        match out.last_mut() {
            Some(g) if schedule[g.start].at == call.at => g.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SIGTERM, so the gateway drains and writes its closing audit record; SIGKILL if that fails
/// or takes over 5 s.
fn stop_gateway(child: &mut Child) {
    let termed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if termed {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
