//! `tollgate test --live`: one scenario against real processes, a `tollgate gateway` (this
//! binary) in front of a `tollgate mock-eks` child over stdio, in real time (optionally
//! scaled). Returns each call's decision as the agent saw it, for comparison with the
//! virtual-time run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tollgate_scenario::format::PolicySource;
use tollgate_scenario::{Loaded, WireSend};

/// What the processes need from the scenario.
#[derive(Debug)]
pub struct Config {
    policy: PolicySource,
    base: PathBuf,
    grant: String,
    tools: String,
    allow_write: bool,
    allow_sensitive: bool,
    page_size: Option<usize>,
    faults: Option<String>,
    timeout: Option<Duration>,
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
            tools: s.upstream.tools.spec(),
            allow_write: s.upstream.allow_write,
            allow_sensitive: s.upstream.allow_sensitive_data_access,
            page_size: s.upstream.page_size,
            faults: s
                .upstream
                .faults
                .as_ref()
                .and_then(|f| serde_json::to_string(f).ok()),
            timeout: s.gateway.timeout,
        }
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

pub fn run(
    config: &Config,
    init: Option<&str>,
    sends: &[WireSend],
    scale: f64,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        scale.is_finite() && scale >= 0.0,
        "--time-scale must be a number of at least 0"
    );
    let exe = std::env::current_exe().context("cannot find this program to start it")?;
    let mut temps = Vec::new();
    let policy = match &config.policy {
        PolicySource::Path(p) => config.base.join(p),
        PolicySource::Inline(v) => {
            let t = TempFile::new("policy.json", &serde_json::to_string(v)?)?;
            let p = t.0.clone();
            temps.push(t);
            p
        }
    };
    let mut mock: Vec<String> = vec!["mock-eks".into(), "--tools".into(), config.tools.clone()];
    if config.allow_write {
        mock.push("--allow-write".into());
    }
    if config.allow_sensitive {
        mock.push("--allow-sensitive-data-access".into());
    }
    if let Some(n) = config.page_size {
        mock.extend(["--page-size".into(), n.to_string()]);
    }
    if let Some(f) = &config.faults {
        let t = TempFile::new("faults.json", f)?;
        mock.extend(["--faults".into(), t.0.display().to_string()]);
        temps.push(t);
    }
    let timeout = config.timeout.unwrap_or(Duration::from_secs(60));
    let mut child = Command::new(&exe)
        .arg("gateway")
        .arg("--policy")
        .arg(&policy)
        .args(["--grant", &config.grant])
        .args(["--call-timeout", &timeout.as_secs().max(1).to_string()])
        .arg("--")
        .arg(&exe)
        .args(&mock)
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
    let start = Instant::now();
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
    for s in sends {
        let due = start + s.at.mul_f64(scale);
        while let Some(left) = due.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(v) => take(v, &mut answers, &mut idless),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        writeln!(stdin, "{}", s.message)?;
    }
    // Wait for every answer, bounded by the gateway's own timeout.
    let wanted: usize =
        sends.iter().map(|s| s.ids.len()).sum::<usize>() + usize::from(init.is_some());
    let deadline = Instant::now() + timeout + Duration::from_secs(5);
    while answers.len() + idless.len() < wanted {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left) {
            Ok(v) => take(v, &mut answers, &mut idless),
            Err(_) => break,
        }
    }
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
            decisions.push(match answer {
                Some(v) => tollgate_scenario::describe(&v).0,
                None => "unanswered".to_owned(),
            });
        }
    }
    Ok(decisions)
}
