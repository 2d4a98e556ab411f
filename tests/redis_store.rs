//! Limits across replicas: several `tollgate gateway` processes sharing one `redis-server`
//! (each test starts its own on a free loopback port, without persistence, and kills it at the
//! end), each in front of its own `tollgate mock-eks`. Under concurrent load they never admit
//! more than `max` together in any window: counted from the mocks' journals and the audit logs,
//! and checked for strictness over the admission instants Redis itself recorded (its `MONITOR`
//! stream shows every `ZADD` the script makes). Then a Redis restart mid-run and a Redis that
//! stalls (SIGSTOP): limited calls are refused fast with a clear message and audited (fail
//! closed), or let through and audited as such with `--store-unavailable open`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_store_redis::testing::RedisServer;

use crate::mock_eks::{Guard, start_http, start_listening};
use crate::util::json_lines;

const WINDOW_US: u64 = 1_000_000;
const MAX: usize = 5;

/// `GetAHOBatch`: 5 per second for everybody; `ListAHOBatch`: no limit.
const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
    "GetAHOBatch": {"limits": [{"counter": "reads", "window": "second", "max": 5, "scope": "global"}]},
    "ListAHOBatch": {}}}"#;

/// A mock and a gateway in front of it, sharing the store `redis`, with `extra` flags.
struct Replica {
    _mock: Guard,
    _gateway: Guard,
    url: String,
    journal: std::path::PathBuf,
    audit: std::path::PathBuf,
}

fn replica(dir: &Path, n: usize, redis: &str, extra: &[&str]) -> Replica {
    let journal = dir.join(format!("journal-{n}.jsonl"));
    let audit = dir.join(format!("audit-{n}.jsonl"));
    let policy = dir.join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let (mock, mock_url) = start_http(&["--journal", journal.to_str().unwrap()]);
    let args = [
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy.to_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
            "--store",
            redis,
            "--upstream-url",
            &mock_url,
        ][..],
        extra,
    ]
    .concat();
    let (gateway, url) = start_listening(&args);
    Replica {
        _mock: mock,
        _gateway: gateway,
        url,
        journal,
        audit,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: Value,
) -> (Option<String>, Value) {
    let mut r = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    let r = r.body(body.to_string()).send().await.unwrap();
    let session = r
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (session, r.json().await.unwrap())
}

async fn open_session(http: &reqwest::Client, url: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    post(http, url, None, init).await.0.unwrap()
}

async fn call(http: &reqwest::Client, url: &str, session: &str, id: u64, tool: &str) -> Value {
    let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"batchId": "rb-0001"}}});
    post(http, url, Some(session), msg).await.1
}

/// `forwarded`, or the refusal's decision.
fn outcome(answer: &Value) -> String {
    answer["result"]["_meta"]["dev.tollgate/decision"]["decision"]
        .as_str()
        .unwrap_or("forwarded")
        .to_owned()
}

fn text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The audit log's decision records for `tool`.
fn decisions(audit: &Path, tool: &str) -> Vec<Value> {
    json_lines(audit)
        .into_iter()
        .filter(|r| r["kind"] == "decision" && r["tool"] == tool)
        .map(|r| r["decision"].clone())
        .collect()
}

fn journal_count(journal: &Path, tool: &str) -> usize {
    json_lines(journal)
        .iter()
        .filter(|e| e["tool"] == tool)
        .count()
}

/// Three gateway processes, one Redis, nine sessions calling as fast as they can for three
/// seconds: the admissions Redis recorded (its MONITOR stream) are exactly the calls the mocks'
/// journals hold and the audit logs allow, and no interval of one second holds more than 5.
#[test]
fn replicas_sharing_redis_never_admit_more_than_max_in_any_window() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let monitor_file = dir.path().join("monitor.txt");
    let monitor = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "monitor"])
        .stdout(std::fs::File::create(&monitor_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let monitor = Guard(monitor);
    let replicas: Vec<Replica> = (0..3)
        .map(|n| replica(dir.path(), n, &redis.url(), &[]))
        .collect();
    // MONITOR is on once it echoes a command.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&monitor_file)
        .unwrap_or_default()
        .contains("PING")
        && Instant::now() < deadline
    {
        let _ = Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "ping"])
            .output();
        std::thread::sleep(Duration::from_millis(50));
    }
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let outcomes = rt().block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for t in 0..9 {
            let (http, url) = (http.clone(), urls[t % urls.len()].clone());
            tasks.push(tokio::spawn(async move {
                let s = open_session(&http, &url).await;
                let end = Instant::now() + Duration::from_secs(3);
                let mut seen = Vec::new();
                // Bounded in count and in time.
                for i in 0..2_000u64 {
                    if Instant::now() >= end {
                        break;
                    }
                    seen.push(outcome(&call(&http, &url, &s, i + 1, "GetAHOBatch").await));
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    drop(monitor);
    let forwarded = outcomes.iter().filter(|o| *o == "forwarded").count();
    let limited = outcomes.iter().filter(|o| *o == "rate_limited").count();
    assert_eq!(forwarded + limited, outcomes.len(), "{outcomes:?}");
    assert!(limited > 0, "the load must exceed the limit");
    let journaled: usize = replicas
        .iter()
        .map(|r| journal_count(&r.journal, "GetAHOBatch"))
        .sum();
    let allowed: usize = replicas
        .iter()
        .map(|r| {
            decisions(&r.audit, "GetAHOBatch")
                .iter()
                .filter(|d| d["decision"] == "allow")
                .count()
        })
        .sum();
    // Every admission Redis recorded, in time order (microseconds on the server's clock).
    let mut admitted: Vec<u64> = std::fs::read_to_string(&monitor_file)
        .unwrap()
        .lines()
        .filter(|l| l.contains("[0 lua] \"ZADD\""))
        .map(|l| {
            let fields: Vec<&str> = l.split('"').collect();
            fields[5].parse().unwrap()
        })
        .collect();
    admitted.sort_unstable();
    assert_eq!(
        (journaled, allowed, admitted.len()),
        (forwarded, forwarded, forwarded)
    );
    // Three seconds at 5 per second over the three of them: one shared budget (three budgets
    // of their own would have admitted about three times as many). Each replica decided calls
    // of its own against that budget; which of them wins each admission is a race (under a
    // loaded machine one can lose every one), so it is not asserted.
    assert!((10..=25).contains(&forwarded), "{forwarded}");
    for r in &replicas {
        assert!(!decisions(&r.audit, "GetAHOBatch").is_empty());
    }
    // Strict: any MAX + 1 consecutive admissions span at least a whole window, so no interval
    // (t - window, t] holds more than MAX.
    for w in admitted.windows(MAX + 1) {
        assert!(
            w[MAX] - w[0] >= WINDOW_US,
            "{} admissions within {} µs: {w:?}",
            MAX + 1,
            w[MAX] - w[0]
        );
    }
}

/// Redis killed mid-run: calls during the outage are refused at once with a message naming
/// the store and what to do, audited as `store_unavailable` / `fail_closed`, and never reach
/// the mock; calls without limits go on; after Redis is back, admission resumes.
#[test]
fn a_redis_restart_mid_run_fails_closed_then_admission_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path()).unwrap();
    let replicas: Vec<Replica> = (0..2)
        .map(|n| replica(dir.path(), n, &redis.url(), &[]))
        .collect();
    let rt = rt();
    let http = reqwest::Client::new();
    let sessions: Vec<String> = replicas
        .iter()
        .map(|r| rt.block_on(open_session(&http, &r.url)))
        .collect();
    let calls = |tool: &str, id: u64| -> Vec<Value> {
        replicas
            .iter()
            .zip(&sessions)
            .map(|(r, s)| rt.block_on(call(&http, &r.url, s, id, tool)))
            .collect()
    };
    assert_eq!(
        calls("GetAHOBatch", 1)
            .iter()
            .map(outcome)
            .collect::<Vec<_>>(),
        ["forwarded", "forwarded"]
    );
    redis.kill();
    for id in 2..5 {
        for a in calls("GetAHOBatch", id) {
            assert_eq!(outcome(&a), "store_unavailable", "{a}");
            let t = text(&a);
            assert!(
                t.contains(&format!(
                    "the counter store that enforces the limit ({}) is unavailable",
                    redis.url()
                )),
                "{t}"
            );
            assert!(
                t.contains("Retry in a few seconds; if this persists, tell the gateway's operator"),
                "{t}"
            );
        }
        // A tool without limits does not need the store.
        for a in calls("ListAHOBatch", 100 + id) {
            assert_eq!(outcome(&a), "forwarded", "{a}");
        }
    }
    redis.restart().unwrap();
    for a in calls("GetAHOBatch", 9) {
        assert_eq!(outcome(&a), "forwarded", "{a}");
    }
    for r in &replicas {
        assert_eq!(journal_count(&r.journal, "GetAHOBatch"), 2);
        let d = decisions(&r.audit, "GetAHOBatch");
        let closed: Vec<&Value> = d
            .iter()
            .filter(|d| d["decision"] == "store_unavailable")
            .collect();
        assert_eq!(closed.len(), 3);
        assert_eq!(closed[0]["store_unavailable"]["outcome"], "fail_closed");
        assert_eq!(closed[0]["store_unavailable"]["store"], redis.url());
        assert_eq!(d.iter().filter(|d| d["decision"] == "allow").count(), 2);
    }
}

/// Redis stalled by SIGSTOP: a gateway failing closed answers limited calls within its store
/// timeouts (200 ms per request, 300 ms per connection here) as `store_unavailable`, while a
/// tool without limits on other sessions is answered before any of them (the blocked decisions
/// do not hold up the runtime); a gateway started with `--store-unavailable open` lets the same
/// calls through and audits them as `fail_open`.
#[test]
fn a_stalled_redis_is_answered_within_the_timeout_fail_closed_then_open() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let timeouts = [
        "--store-timeout-ms",
        "200",
        "--store-connect-timeout-ms",
        "300",
    ];
    let closed = replica(dir.path(), 0, &redis.url(), &timeouts);
    let open = replica(
        dir.path(),
        1,
        &redis.url(),
        &[&timeouts[..], &["--store-unavailable", "open"]].concat(),
    );
    let rt = rt();
    let http = reqwest::Client::new();
    // Warm both: each has a pooled connection to Redis.
    for r in [&closed, &open] {
        let s = rt.block_on(open_session(&http, &r.url));
        assert_eq!(
            outcome(&rt.block_on(call(&http, &r.url, &s, 1, "GetAHOBatch"))),
            "forwarded"
        );
    }
    let pid = redis.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );

    let (limited, unlimited) = rt.block_on(async {
        let mut limited = Vec::new();
        for i in 0..4u64 {
            let (http, url) = (http.clone(), closed.url.clone());
            limited.push(tokio::spawn(async move {
                let s = open_session(&http, &url).await;
                let started = Instant::now();
                let a = call(&http, &url, &s, 10 + i, "GetAHOBatch").await;
                (a, started.elapsed(), Instant::now())
            }));
        }
        // Let the limited calls reach the gateway first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = open_session(&http, &closed.url).await;
        let a = call(&http, &closed.url, &s, 20, "ListAHOBatch").await;
        let unlimited = (a, Instant::now());
        let mut out = Vec::new();
        for t in limited {
            out.push(t.await.unwrap());
        }
        (out, unlimited)
    });
    assert_eq!(outcome(&unlimited.0), "forwarded");
    for (a, took, done) in &limited {
        assert_eq!(outcome(a), "store_unavailable", "{a}");
        assert!(text(a).contains("timed out after"), "{}", text(a));
        // Bounded: the store timeouts, not the HTTP answer timeout (300 s) or a hang.
        assert!(*took < Duration::from_secs(5), "{took:?}");
        assert!(
            unlimited.1 < *done,
            "a call without limits waited for the stalled store"
        );
    }

    let s = rt.block_on(open_session(&http, &open.url));
    for id in 30..33 {
        assert_eq!(
            outcome(&rt.block_on(call(&http, &open.url, &s, id, "GetAHOBatch"))),
            "forwarded"
        );
    }
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(journal_count(&closed.journal, "GetAHOBatch"), 1);
    assert_eq!(journal_count(&open.journal, "GetAHOBatch"), 4);
    let failed_open: Vec<Value> = decisions(&open.audit, "GetAHOBatch")
        .into_iter()
        .filter(|d| d["store_unavailable"]["outcome"] == "fail_open")
        .collect();
    assert_eq!(failed_open.len(), 3);
    assert_eq!(failed_open[0]["decision"], "allow");
    let failed_closed = decisions(&closed.audit, "GetAHOBatch")
        .into_iter()
        .filter(|d| d["store_unavailable"]["outcome"] == "fail_closed")
        .count();
    assert_eq!(failed_closed, 4);
}

/// A `--store` that is not a usable Redis URL is a configuration error: exit 2, saying what to
/// write.
#[test]
fn a_bad_store_url_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.json");
    std::fs::write(&policy, POLICY).unwrap();
    for (store, says) in [
        (
            "redis://127.0.0.1",
            "has no port: write `redis://HOST:PORT`",
        ),
        ("mysql://x:1", "is not a Redis URL"),
    ] {
        let out = crate::util::tollgate()
            .args([
                "gateway",
                "--policy",
                policy.to_str().unwrap(),
                "--store",
                store,
                "--upstream-url",
                "http://127.0.0.1:1/mcp",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}
