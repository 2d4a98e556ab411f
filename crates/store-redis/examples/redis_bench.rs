//! The Redis counter store's cost, side by side with the in-memory store in one run:
//! 1. one `Engine::decide` (a rule with a limit) with the Redis store on loopback (its own
//!    `redis-server`), and with the in-memory store; per-call median and p99;
//! 2. the same decision under `tokio::task::block_in_place` on a 2-worker runtime (what the
//!    gateway's transport does for a blocking store);
//! 3. gateway throughput: one `tollgate gateway` with `--store memory` against two replicas
//!    sharing Redis (`--store redis://…`), each in front of the same `tollgate mock-eks`,
//!    loaded by CLIENTS concurrent HTTP clients (round-robin over the replicas).
//!
//! Run: `cargo build --release --bin tollgate && cargo run --release -p tollgate-store-redis
//! --example redis_bench [DECISIONS] [CALLS] [CLIENTS]` (defaults 20000, 8000, 32). The
//! gateway binary is `target/release/tollgate`, or `$TOLLGATE_BIN`. Needs `redis-server`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark program"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_policy::{Call, CounterStore, Engine, MemoryStore, Policy, ToolMeta};
use tollgate_store_redis::testing::RedisServer;
use tollgate_store_redis::{RedisOptions, RedisStore};

const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
  "GetAHOBatch": {"limits": [{"counter": "reads", "window": "minute", "max": 100000000, "scope": "grant"}]}}}"#;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn call(grant: usize) -> Call {
    Call {
        tool: "GetAHOBatch".into(),
        arguments: json!({"batchId": "rb-0001"}).into(),
        grant: format!("g{grant}").into(),
        session: "s".into(),
        meta: ToolMeta::default(),
    }
}

/// Times `n` decisions one by one; returns (median, p99).
fn decisions(engine: &Engine, n: usize, wrap: &dyn Fn(&dyn Fn())) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n + 500 {
        let c = call(i % 100);
        let t = Instant::now();
        wrap(&|| {
            let d = engine.decide(&c, start.elapsed());
            assert!(d.admits(), "{d:?}");
        });
        if i >= 500 {
            times.push(t.elapsed());
        }
    }
    times.sort_unstable();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_listening(bin: &str, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run the tollgate binary (cargo build --release --bin tollgate)");
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    (Proc(child), url)
}

async fn session(http: &reqwest::Client, url: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    let r = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

/// CLIENTS sessions spread over `urls`, CALLS calls in all; calls per second.
async fn throughput(urls: &[String], calls: usize, clients: usize) -> f64 {
    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    for c in 0..clients {
        let url = urls[c % urls.len()].clone();
        let s = session(&http, &url).await;
        sessions.push((url, s));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, (url, s)) in sessions.into_iter().enumerate() {
        let http = http.clone();
        let n = calls / clients + usize::from(c < calls % clients);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let msg = json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": "GetAHOBatch", "arguments": {"batchId": "rb-0001"}}});
                let v: Value = http
                    .post(&url)
                    .header("mcp-session-id", &s)
                    .header("accept", "application/json, text/event-stream")
                    .header("content-type", "application/json")
                    .body(msg.to_string())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(v["result"]["_meta"]["dev.tollgate/decision"].is_null(), "{v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n = arg(1, 20_000);
    let calls = arg(2, 8_000);
    let clients = arg(3, 32);
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let policy = Arc::new(Policy::parse("bench.json", POLICY).unwrap());
    let redis_store: Arc<dyn CounterStore> =
        Arc::new(RedisStore::open(&redis.url(), RedisOptions::default()).unwrap());
    let on_redis = Engine::new(Arc::clone(&policy), redis_store);
    let in_memory = Engine::new(Arc::clone(&policy), Arc::new(MemoryStore::new()));

    println!("decisions, {n} each (after 500 warm-up), one thread:");
    let direct = |f: &dyn Fn()| f();
    let (m_med, m_p99) = decisions(&in_memory, n, &direct);
    println!("  memory store:           median {m_med:>10.1?}  p99 {m_p99:>10.1?}");
    let (r_med, r_p99) = decisions(&on_redis, n, &direct);
    println!("  redis store (loopback): median {r_med:>10.1?}  p99 {r_p99:>10.1?}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (b_med, b_p99) = rt.block_on(async {
        let engine = on_redis.clone();
        tokio::spawn(async move {
            let wrapped = |f: &dyn Fn()| tokio::task::block_in_place(f);
            decisions(&engine, n, &wrapped)
        })
        .await
        .unwrap()
    });
    println!("  redis, block_in_place:  median {b_med:>10.1?}  p99 {b_p99:>10.1?}");

    let bin = std::env::var("TOLLGATE_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/tollgate").to_owned()
    });
    let policy_file = dir.path().join("bench.json");
    std::fs::write(&policy_file, POLICY).unwrap();
    let (_mock, mock_url) = start_listening(&bin, &["mock-eks", "--http", "127.0.0.1:0"]);
    let gateway = |store: &str| {
        start_listening(
            &bin,
            &[
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--policy",
                policy_file.to_str().unwrap(),
                "--store",
                store,
                "--upstream-url",
                &mock_url,
            ],
        )
    };
    println!("gateway throughput, {calls} calls, {clients} concurrent HTTP clients:");
    let (memory_gw, memory_url) = gateway("memory");
    let one = rt.block_on(throughput(&[memory_url], calls, clients));
    drop(memory_gw);
    println!("  1 gateway, memory store:     {one:>8.0} calls/s");
    let (a, url_a) = gateway(&redis.url());
    let (b, url_b) = gateway(&redis.url());
    let two = rt.block_on(throughput(&[url_a, url_b], calls, clients));
    drop((a, b));
    println!(
        "  2 replicas sharing redis:    {two:>8.0} calls/s  (ratio {:.2})",
        two / one
    );
    let (c, url_c) = gateway(&redis.url());
    let single = rt.block_on(throughput(&[url_c], calls, clients));
    drop(c);
    println!(
        "  1 gateway, redis store:      {single:>8.0} calls/s  (ratio {:.2})",
        single / one
    );
}
