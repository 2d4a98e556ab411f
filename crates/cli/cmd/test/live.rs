//! `tollgate test --live`: one scenario against real processes, in real time (optionally
//! scaled). Returns each call's decision as the agent saw it, for comparison with the
//! virtual-time run.
//!
//! - One agent: a `tollgate gateway` (this binary) over stdio in front of a `tollgate mock-eks`
//!   child over stdio, its clock scaled as below.
//! - Several agents, or a policy reload: one `tollgate gateway --listen` over Streamable HTTP
//!   (on a copy of the policy; a reload writes over the copy and sends SIGHUP), each agent with its
//!   own bearer token for its grant and its own session (none for the stateless protocol), in
//!   front of a `tollgate mock-eks --http`: counters shared between agents need one gateway.
//!   Messages go in the virtual-time run's order, each answered before the next is sent (the
//!   order of messages due at one instant decides who gets a counter's last slot), and the
//!   gateway's clock runs 1/F times as fast as the wall clock, so windows span the scenario's
//!   time. A fault's latency in the mock stays real time.
//! - Approvers: the same HTTP gateway with an admin token per approver. A held call is seen in
//!   the pending list before the next message goes; an `approve` or `deny` step decides it on
//!   the admin API and waits for its answer. The decisions are returned with their request ids,
//!   so a held call's late outcome is compared with the same call's in virtual time.
//! - Several upstreams (`upstreams:`): the gateway is started with a config file of one
//!   `[[upstream]]` per mock, with its name and prefix (`several_config`): over stdio each mock
//!   is the gateway's child, over HTTP each is a `tollgate mock-eks --http` of its own reached by
//!   `url`; a `down` one is a `mock-eks` that cannot start. A stdio run starts the scenario's
//!   clock once `initialize` is answered (the router answers it after every upstream).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tollgate_scenario::format::{MockSpec, PolicySource, Upstream};
use tollgate_scenario::{Loaded, WirePlan, WireSend, WireStep};

use crate::cmd::agent_http::{open_session, post};
use crate::cmd::procs::{Echo, spawn_listening, spawn_listening_with_lines};

/// What the processes need from the scenario.
#[derive(Debug)]
pub struct Config {
    policy: PolicySource,
    base: PathBuf,
    grant: String,
    /// The scenario's upstreams: one mock, or several behind a config file's `[[upstream]]`
    /// tables (each a `tollgate mock-eks` of its own).
    mocks: Vec<MockSpec>,
    several: bool,
    timeout: Option<Duration>,
    tool_timeouts: Vec<(String, Duration)>,
    max_held_per_grant: Option<usize>,
    max_message_bytes: Option<usize>,
}

impl Config {
    pub fn of(loaded: &Loaded) -> Config {
        let s = &loaded.scenario;
        Config {
            policy: s.policy.clone(),
            base: loaded.path.parent().map(PathBuf::from).unwrap_or_default(),
            grant: s
                .agents
                .values()
                .next()
                .map(|a| a.grant.clone())
                .unwrap_or_default(),
            mocks: s.mocks(),
            several: s.several_upstreams(),
            timeout: s.gateway.timeout,
            tool_timeouts: s
                .gateway
                .tool_timeouts
                .iter()
                .map(|(tool, d)| (tool.clone(), d.0))
                .collect(),
            max_held_per_grant: s.gateway.max_held_per_grant.map(|n| n.get()),
            max_message_bytes: s.gateway.max_message_bytes.map(|n| n.get()),
        }
    }
}

impl Config {
    /// The gateway options the scenario sets besides `--call-timeout`: `--tool-timeout
    /// TOOL=SECS` for each of its `gateway.tool_timeouts`, `--max-held-per-grant`,
    /// `--max-message-bytes`.
    fn tool_timeout_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .tool_timeouts
            .iter()
            .flat_map(|(tool, d)| {
                [
                    "--tool-timeout".to_owned(),
                    format!("{tool}={}", d.as_secs_f64()),
                ]
            })
            .collect();
        if let Some(n) = self.max_held_per_grant {
            args.extend(["--max-held-per-grant".to_owned(), n.to_string()]);
        }
        if let Some(n) = self.max_message_bytes {
            args.extend(["--max-message-bytes".to_owned(), n.to_string()]);
        }
        args
    }
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> anyhow::Result<TempFile> {
        let path =
            std::env::temp_dir().join(format!("tollgate-live-{}-{name}", std::process::id()));
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One call's decision as the agent saw it, with the call's request id as JSON text (none for
/// a raw message without a usable id).
pub type LiveDecision = (Option<String>, String);

/// Runs the plan: over stdio for one agent, over HTTP for several (or reloads, or approvals).
/// Returns the decisions in the plan's order of calls.
pub fn run(config: &Config, plan: &WirePlan, scale: f64) -> anyhow::Result<Vec<LiveDecision>> {
    anyhow::ensure!(
        scale.is_finite() && scale >= 0.0,
        "--time-scale must be a number of at least 0"
    );
    // Fault switches go through a file the mock reads before each message (it outlives a
    // crashed and restarted mock, as the switch does in virtual time).
    let switch = if plan.switches_faults() {
        Some(TempFile::new("faults-switch", "on")?)
    } else {
        None
    };
    match plan.agents.as_slice() {
        [one] if !plan.needs_http() => {
            run_stdio(config, one.init.as_deref(), plan, switch.as_ref(), scale)
        }
        _ => run_http(config, plan, switch.as_ref(), scale),
    }
}

/// The gateway's `--time-scale`: its clock runs 1/F times the wall clock, so a scenario's
/// windows and timeouts span its time when its steps are played F times as fast.
fn scale_args(scale: f64) -> Vec<String> {
    if scale > 0.0 && scale != 1.0 {
        vec!["--time-scale".into(), (1.0 / scale).to_string()]
    } else {
        Vec::new()
    }
}

/// A fault switch step: the mock reads the file before its next message.
fn switch_faults(switch: Option<&TempFile>, on: bool) -> anyhow::Result<()> {
    let file = switch.context("a fault switch without the mock's switch file")?;
    std::fs::write(&file.0, if on { "on" } else { "off" })
        .with_context(|| format!("cannot write `{}`", file.0.display()))
}

/// A mock's arguments (`tag` names its temporary files apart from another mock's), and the
/// temporary files they name.
fn mock_args(
    up: &Upstream,
    tag: &str,
    switch: Option<&TempFile>,
) -> anyhow::Result<(Vec<String>, Vec<TempFile>)> {
    let mut temps = Vec::new();
    let mut mock: Vec<String> = vec!["mock-eks".into(), "--tools".into(), up.tools.spec()];
    if up.allow_write {
        mock.push("--allow-write".into());
    }
    if up.allow_sensitive_data_access {
        mock.push("--allow-sensitive-data-access".into());
    }
    if let Some(n) = up.page_size {
        mock.extend(["--page-size".into(), n.to_string()]);
    }
    if let Some(f) = &up.faults {
        let t = TempFile::new(&format!("faults{tag}.json"), &serde_json::to_string(f)?)?;
        mock.extend(["--faults".into(), t.0.display().to_string()]);
        temps.push(t);
    }
    if let Some(s) = switch {
        mock.extend(["--faults-switch".into(), s.0.display().to_string()]);
    }
    Ok((mock, temps))
}

/// The arguments of a scenario's only mock.
fn single_mock_args(
    config: &Config,
    switch: Option<&TempFile>,
) -> anyhow::Result<(Vec<String>, Vec<TempFile>)> {
    let up = config
        .mocks
        .first()
        .map(|m| m.upstream.clone())
        .unwrap_or_default();
    mock_args(&up, "", switch)
}

/// A TOML string (a JSON string's escapes are TOML's basic string's).
fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Several upstreams: a config file (`tollgate gateway --config`) naming `policy` and one
/// `[[upstream]]` per mock with its name and prefix. Over HTTP (`http`) each mock that is up
/// is started here with `--http` and reached by its URL (every session of the gateway meets
/// the same mock, as in virtual time); over stdio it is the gateway's child. A mock that is
/// `down` is a `tollgate mock-eks` that cannot start (a tool selection that names nothing):
/// the gateway's router sees it exit, and lists none of its tools.
fn several_config(
    config: &Config,
    policy: &std::path::Path,
    switch: Option<&TempFile>,
    http: bool,
) -> anyhow::Result<(TempFile, Vec<TempFile>, Vec<crate::cmd::procs::Proc>)> {
    let exe = std::env::current_exe().context("cannot find this program to start it")?;
    let mut temps = Vec::new();
    let mut procs = Vec::new();
    let mut text = format!("policy = {}\n", toml_string(&policy.display().to_string()));
    for (i, m) in config.mocks.iter().enumerate() {
        text.push_str(&format!(
            "\n[[upstream]]\nname = {}\nprefix = {}\n",
            toml_string(&m.name),
            toml_string(&m.prefix)
        ));
        let (mut args, mut t) = if m.down {
            let args = ["mock-eks", "--tools", "tollgate-live-down-upstream"];
            (args.map(str::to_owned).to_vec(), Vec::new())
        } else {
            mock_args(&m.upstream, &format!("-{i}"), switch)?
        };
        temps.append(&mut t);
        if http && !m.down {
            args.extend(["--http".into(), "127.0.0.1:0".into()]);
            let (proc, url) = spawn_listening(&exe, &args, Echo::Errors)?;
            procs.push(proc);
            text.push_str(&format!("url = {}\n", toml_string(&url)));
        } else {
            let mut command = vec![toml_string(&exe.display().to_string())];
            command.extend(args.iter().map(|a| toml_string(a)));
            text.push_str(&format!("command = [{}]\n", command.join(", ")));
        }
    }
    let file = TempFile::new("config.toml", &text)?;
    Ok((file, temps, procs))
}

/// The policy file to start the gateway with (a temporary one for an inline policy).
fn policy_file(config: &Config, temps: &mut Vec<TempFile>) -> anyhow::Result<PathBuf> {
    Ok(match &config.policy {
        PolicySource::Path(p) => config.base.join(p),
        PolicySource::Inline(v) => {
            let t = TempFile::new("policy.json", &serde_json::to_string(v)?)?;
            let p = t.0.clone();
            temps.push(t);
            p
        }
    })
}

/// The decisions of the calls of `send`, from the answer the agent got (`null`: none).
fn decisions_of(send: &WireSend, body: Option<&Value>) -> Vec<LiveDecision> {
    let items: Vec<&Value> = match body {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(v) => vec![v],
    };
    send.ids
        .iter()
        .map(|id| {
            let answer = items.iter().find(|a| {
                a.get("id").unwrap_or(&Value::Null) == id
                    && (a.get("result").is_some() || a.get("error").is_some())
            });
            (
                (!id.is_null()).then(|| id.to_string()),
                answer.map_or_else(
                    || "unanswered".to_owned(),
                    |v| tollgate_scenario::describe(v).0.into_owned(),
                ),
            )
        })
        .collect()
}

/// The admin token a live run gives approver `name`.
fn admin_token_of(name: &str) -> String {
    format!("tollgate-live-approver-{name}")
}

/// The gateway's pending approvals (`GET /admin/approvals`).
async fn pending_approvals(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> anyhow::Result<Vec<Value>> {
    let list: Value = http
        .get(format!("{base}/admin/approvals"))
        .bearer_auth(token)
        .send()
        .await
        .context("the gateway's admin API cannot be reached")?
        .error_for_status()
        .context("the gateway's admin API refused to list approvals")?
        .json()
        .await?;
    Ok(list["pending"].as_array().cloned().unwrap_or_default())
}

/// A call whose answer has not come: held for approval.
struct Held {
    /// Which of the plan's sends it is.
    send: usize,
    answer: tokio::task::JoinHandle<anyhow::Result<(Option<String>, Value)>>,
}

fn run_http(
    config: &Config,
    plan: &WirePlan,
    switch: Option<&TempFile>,
    scale: f64,
) -> anyhow::Result<Vec<LiveDecision>> {
    let exe = std::env::current_exe().context("cannot find this program to start it")?;
    // The gateway runs on a copy of the policy: a reload step writes the new policy there (and
    // sends SIGHUP), never into the scenario's own files.
    let source = config
        .policy
        .text(&config.base)
        .map_err(anyhow::Error::msg)?;
    let policy_copy = TempFile::new("policy-live.json", &source)?;
    let policy = policy_copy.0.clone();
    // The upstream(s): one `mock-eks --http`, or a config file of several.
    let (upstream_args, temps, _mocks) = if config.several {
        let (file, temps, procs) = several_config(config, &policy, switch, true)?;
        let args = vec!["--config".to_owned(), file.0.display().to_string()];
        (args, (temps, Some(file)), procs)
    } else {
        let (mut mock, temps) = single_mock_args(config, switch)?;
        mock.extend(["--http".into(), "127.0.0.1:0".into()]);
        let (proc, mock_url) = spawn_listening(&exe, &mock, Echo::Errors)?;
        let args = vec![
            "--policy".to_owned(),
            policy.display().to_string(),
            "--upstream-url".to_owned(),
            mock_url,
        ];
        (args, (temps, None), vec![proc])
    };
    let token_of = |agent: &str| format!("tollgate-live-run-{agent}");
    let tokens: String = plan
        .agents
        .iter()
        .map(|a| format!("{} {}\n", token_of(&a.name), a.grant))
        .collect();
    let tokens = TempFile::new("tokens.txt", &tokens)?;
    let admins: String = plan
        .approvers
        .iter()
        .map(|a| format!("{} {a}\n", admin_token_of(a)))
        .collect();
    let admins = TempFile::new("admins.txt", &admins)?;
    let timeout = config.timeout.unwrap_or(Duration::from_secs(60));
    let mut gateway: Vec<String> = vec![
        "gateway".into(),
        "--tokens".into(),
        tokens.0.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--call-timeout".into(),
        timeout.as_secs_f64().to_string(),
        "--no-watch".into(),
    ];
    gateway.extend(config.tool_timeout_args());
    gateway.extend(upstream_args);
    gateway.extend(scale_args(scale));
    // Approvers get the admin API (and with it the approval channel); without them a call that
    // needs approval is refused at once, as in the virtual-time run.
    let approvals = !plan.approvers.is_empty();
    if approvals {
        gateway.extend(["--admin-tokens".into(), admins.0.display().to_string()]);
    }
    let (said_tx, said) = std::sync::mpsc::channel::<String>();
    let (gateway_proc, url) =
        spawn_listening_with_lines(&exe, &gateway, Echo::ErrorsButRefusedReloads, Some(said_tx))?;
    let gateway_pid = gateway_proc.pid();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answers = runtime.block_on(async {
        let http = reqwest::Client::new();
        let mut sessions: HashMap<&str, Option<String>> = HashMap::new();
        for agent in &plan.agents {
            let session = match &agent.init {
                None => None,
                Some(init) => Some(
                    open_session(
                        &http,
                        &url,
                        &token_of(&agent.name),
                        init.clone(),
                        &agent.name,
                    )
                    .await?,
                ),
            };
            sessions.insert(&agent.name, session);
        }
        let base = url.strip_suffix("/mcp").unwrap_or(&url).to_owned();
        // Any approver can list what is pending.
        let lister = plan.approvers.first().map(|a| admin_token_of(a));
        let sends: Vec<&WireSend> = plan.sends().collect();
        let mut answers: Vec<Option<Value>> = vec![None; sends.len()];
        let mut held: Vec<Held> = Vec::new();
        let mut next = 0;
        let start = tokio::time::Instant::now();
        for step in &plan.steps {
            match step {
                WireStep::Reload { at, policy: text } => {
                    tokio::time::sleep_until(start + at.mul_f64(scale)).await;
                    reload(&policy, text, gateway_pid, &said)?;
                }
                WireStep::Faults { at, on } => {
                    tokio::time::sleep_until(start + at.mul_f64(scale)).await;
                    switch_faults(switch, *on)?;
                }
                WireStep::Decide {
                    at,
                    approve,
                    decide,
                } => {
                    tokio::time::sleep_until(start + at.mul_f64(scale)).await;
                    let token = admin_token_of(&decide.by);
                    let pending = pending_approvals(&http, &base, &token).await?;
                    // The same choice as the virtual-time run: the oldest pending call of the
                    // tool, or the approval with that id.
                    let found = pending.iter().find(|p| match (&decide.tool, decide.held) {
                        (Some(tool), _) => p["tool"].as_str() == Some(tool.as_str()),
                        (None, Some(n)) => p["id"].as_u64() == Some(n),
                        (None, None) => false,
                    });
                    // Nothing pending matches: the virtual-time run reports it; a live run has
                    // nothing to decide.
                    let Some(p) = found else { continue };
                    let verb = if *approve { "approve" } else { "deny" };
                    let body = match &decide.reason {
                        Some(r) => serde_json::json!({ "reason": r }),
                        None => serde_json::json!({}),
                    };
                    http.post(format!("{base}/admin/approvals/{}/{verb}", p["id"]))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .context("the gateway's admin API cannot be reached")?
                        .error_for_status()
                        .with_context(|| {
                            format!("the gateway refused to {verb} approval {}", p["id"])
                        })?;
                    // The held call goes on now: wait for its answer, so what comes next
                    // happens after it, as in the virtual-time run.
                    if let Some(i) = held
                        .iter()
                        .position(|h| sends[h.send].ids.contains(&p["request_id"]))
                    {
                        let h = held.swap_remove(i);
                        let (_, body) = tokio::time::timeout(timeout + Duration::from_secs(5), h.answer)
                            .await
                            .context("no answer to an approved or denied call")???;
                        answers[h.send] = Some(body);
                    }
                }
                WireStep::Send(s) => {
                    tokio::time::sleep_until(start + s.at.mul_f64(scale)).await;
                    let session = sessions.get(s.agent.as_str()).cloned().flatten();
                    let (http2, url2, token) = (http.clone(), url.clone(), token_of(&s.agent));
                    let message = s.message.clone();
                    let mut answer = tokio::spawn(async move {
                        post(&http2, &url2, &token, session.as_deref(), message).await
                    });
                    // Each message is answered (or held for approval) before the next goes.
                    let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(5);
                    let is_held = loop {
                        tokio::select! {
                            got = &mut answer => {
                                answers[next] = Some(got??.1);
                                break false;
                            }
                            () = tokio::time::sleep(Duration::from_millis(5)), if lister.is_some() => {
                                let token = lister.as_deref().unwrap_or_default();
                                let pending = pending_approvals(&http, &base, token).await?;
                                if pending.iter().any(|p| s.ids.contains(&p["request_id"])) {
                                    break true;
                                }
                            }
                            () = tokio::time::sleep_until(deadline) => {
                                anyhow::bail!("no answer to agent `{}` within {timeout:?}", s.agent);
                            }
                        }
                    };
                    if is_held {
                        held.push(Held { send: next, answer });
                    }
                    next += 1;
                }
            }
        }
        // Calls still held: their approval times out (in the gateway's scaled time).
        let wait = timeout + Duration::from_secs(5) + Duration::from_secs(3600).mul_f64(scale);
        for h in held {
            let (_, body) = tokio::time::timeout(wait, h.answer)
                .await
                .with_context(|| format!("a held call was not answered within {wait:?}"))???;
            answers[h.send] = Some(body);
        }
        anyhow::Ok(answers)
    })?;
    drop(gateway_proc);
    drop((temps, policy_copy, admins));
    Ok(plan
        .sends()
        .zip(&answers)
        .flat_map(|(s, body)| decisions_of(s, body.as_ref()))
        .collect())
}

/// A reload step: writes the new policy over the gateway's copy, sends SIGHUP, and waits (at
/// most 10 s) for the gateway to say it reloaded or refused it.
fn reload(
    policy: &std::path::Path,
    text: &str,
    pid: u32,
    said: &std::sync::mpsc::Receiver<String>,
) -> anyhow::Result<()> {
    // Lines from before this reload are not its answer.
    while said.try_recv().is_ok() {}
    std::fs::write(policy, text).with_context(|| format!("cannot write `{}`", policy.display()))?;
    let sent = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    anyhow::ensure!(sent, "cannot send SIGHUP to the gateway (pid {pid})");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .context("the gateway did not say within 10 s whether it reloaded the policy")?;
        let line = said
            .recv_timeout(left)
            .context("the gateway did not say within 10 s whether it reloaded the policy")?;
        if line.starts_with("reloaded `")
            || line.contains("is not a valid policy")
            || line.contains("reload of")
        {
            return Ok(());
        }
    }
}

fn run_stdio(
    config: &Config,
    init: Option<&str>,
    plan: &WirePlan,
    switch: Option<&TempFile>,
    scale: f64,
) -> anyhow::Result<Vec<LiveDecision>> {
    let sends: Vec<&WireSend> = plan.sends().collect();
    let exe = std::env::current_exe().context("cannot find this program to start it")?;
    let mut temps = Vec::new();
    let policy = policy_file(config, &mut temps)?;
    // The upstream(s): the one mock as the gateway's child, or a config file of several.
    let (upstream_args, _config_file) = if config.several {
        let (file, mut t, _) = several_config(config, &policy, switch, false)?;
        temps.append(&mut t);
        let args = vec!["--config".to_owned(), file.0.display().to_string()];
        (args, Some(file))
    } else {
        let (mock, mut t) = single_mock_args(config, switch)?;
        temps.append(&mut t);
        let mut args = vec![
            "--policy".to_owned(),
            policy.display().to_string(),
            "--".into(),
        ];
        args.push(exe.display().to_string());
        args.extend(mock);
        (args, None)
    };
    let timeout = config.timeout.unwrap_or(Duration::from_secs(60));
    let mut child = Command::new(&exe)
        .arg("gateway")
        .args(["--grant", &config.grant])
        .args(["--call-timeout", &timeout.as_secs_f64().to_string()])
        .args(config.tool_timeout_args())
        .args(scale_args(scale))
        .args(&upstream_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start `tollgate gateway`")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let items = match v {
                    Value::Array(items) => items,
                    v => vec![v],
                };
                for item in items {
                    if tx.send(item).is_err() {
                        return;
                    }
                }
            }
        }
    });
    if let Some(init) = init {
        writeln!(stdin, "{init}")?;
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )?;
    }
    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut idless: Vec<Value> = Vec::new();
    let take = |v: Value, answers: &mut HashMap<String, Value>, idless: &mut Vec<Value>| {
        if v.get("result").is_none() && v.get("error").is_none() {
            return;
        }
        match v.get("id") {
            Some(id) if !id.is_null() => {
                answers.insert(id.to_string(), v);
            }
            _ => idless.push(v),
        }
    };
    // Takes answers until `wanted` have come, bounded by the gateway's own timeout.
    let wait_for =
        |wanted: usize, answers: &mut HashMap<String, Value>, idless: &mut Vec<Value>| {
            let deadline = Instant::now() + timeout + Duration::from_secs(5);
            while answers.len() + idless.len() < wanted {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                match rx.recv_timeout(left) {
                    Ok(v) => take(v, answers, idless),
                    Err(_) => break,
                }
            }
        };
    let mut sent = usize::from(init.is_some());
    // The scenario's time starts once `initialize` is answered (as in virtual time, where it
    // is answered at once): a gateway that starts several upstreams answers it only when they
    // have, and a call sent meanwhile would wait for them and come late.
    wait_for(sent, &mut answers, &mut idless);
    let start = Instant::now();
    for step in &plan.steps {
        let at = match step {
            WireStep::Send(s) => s.at,
            WireStep::Faults { at, .. } => *at,
            // A plan with either goes over HTTP.
            WireStep::Reload { .. } | WireStep::Decide { .. } => continue,
        };
        let due = start + at.mul_f64(scale);
        while let Some(left) = due.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(v) => take(v, &mut answers, &mut idless),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        match step {
            WireStep::Send(s) => {
                writeln!(stdin, "{}", s.message)?;
                sent += s.ids.len();
            }
            WireStep::Faults { on, .. } => {
                // Everything sent before the switch is answered before it (bounded by the
                // gateway's timeout), as in virtual time, where the switch comes after them.
                wait_for(sent, &mut answers, &mut idless);
                switch_faults(switch, *on)?;
            }
            WireStep::Reload { .. } | WireStep::Decide { .. } => {}
        }
    }
    // Wait for every answer, bounded by the gateway's own timeout.
    let wanted: usize =
        sends.iter().map(|s| s.ids.len()).sum::<usize>() + usize::from(init.is_some());
    wait_for(wanted, &mut answers, &mut idless);
    drop(stdin);
    let stop = Instant::now() + Duration::from_secs(15);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > stop {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = reader.join();
    drop(temps);
    let mut idless = idless.into_iter();
    let mut decisions = Vec::new();
    for s in sends {
        for id in &s.ids {
            let answer = if id.is_null() {
                idless.next()
            } else {
                answers.remove(&id.to_string())
            };
            decisions.push((
                (!id.is_null()).then(|| id.to_string()),
                match answer {
                    Some(v) => tollgate_scenario::describe(&v).0.into_owned(),
                    None => "unanswered".to_owned(),
                },
            ));
        }
    }
    Ok(decisions)
}
