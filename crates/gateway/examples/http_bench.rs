//! Side-by-side load: the same `tools/call` made directly to the mock EKS server and through the
//! gateway (policy: one allow rule with a limit high enough never to refuse), both over
//! Streamable HTTP on loopback, in one process, one after the other in the same run.
//!
//! Run: `cargo run --release -p tollgate-gateway --example http_bench [CALLS] [CLIENTS]`
//! (defaults 4000 and 64). Prints p50/p99 latency with one client, throughput with CLIENTS
//! concurrent clients, and the gateway's added latency and throughput ratio.
//!
//! All three parties share one 2-thread runtime here; `tollgate bench` (crates/cli/cmd/bench.rs)
//! runs them as separate processes, and docs/PERFORMANCE.md quotes that one.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark program"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tollgate_gateway::core::{Gateway, GatewayOptions};
use tollgate_gateway::transport::{Auth, HttpFront, TransportLimits, serve};
use tollgate_gateway::upstream::UpstreamSpec;
use tollgate_mock_eks::transport::{HttpOptions, Shared, serve_http};
use tollgate_mock_eks::{MockConfig, MockEks};
use tollgate_policy::{Engine, MemoryStore, Policy};

const POLICY: &str = r#"{"version": "1", "default": "deny", "tools": {
  "GetAHOBatch": {"limits": [{"counter": "reads", "window": "minute", "max": 100000000, "scope": "grant"}]}}}"#;

async fn start_mock() -> String {
    let mock = MockEks::new(MockConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared::new(mock, None, None);
    let options = HttpOptions {
        max_body: 4 << 20,
        always_sse: false,
    };
    tokio::spawn(serve_http(
        listener,
        shared,
        options,
        std::future::pending(),
    ));
    format!("http://{addr}/mcp")
}

async fn start_gateway(upstream: String) -> String {
    let policy = Policy::parse("bench.json", POLICY).unwrap();
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    let gateway = Gateway::new(engine, None, GatewayOptions::default());
    let (_tx, rx) = watch::channel(false);
    std::mem::forget(_tx);
    let front = HttpFront::new(
        gateway,
        UpstreamSpec::url(upstream),
        Auth {
            default_grant: "bench".into(),
            ..Auth::default()
        },
        tollgate_gateway::clock::Clock::start(),
        TransportLimits::default(),
        rx,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, front));
    format!("http://{addr}/mcp")
}

async fn session(http: &reqwest::Client, url: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.bytes().await;
    sid
}

async fn one_call(http: &reqwest::Client, url: &str, sid: &str, id: u64) -> Duration {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "GetAHOBatch", "arguments": {"batchId": "rb-0001"}}}).to_string();
    let t = Instant::now();
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", sid)
        .body(body)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let took = t.elapsed();
    assert!(v["result"]["isError"] == false, "{v}");
    took
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency(url: &str, calls: u64) -> (Duration, Duration) {
    let http = reqwest::Client::new();
    let sid = session(&http, url).await;
    for i in 0..200 {
        one_call(&http, url, &sid, i).await; // warm-up
    }
    let mut took = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        took.push(one_call(&http, url, &sid, 1000 + i).await);
    }
    took.sort();
    (pct(&took, 0.5), pct(&took, 0.99))
}

async fn throughput(url: &str, calls: u64, clients: u64) -> f64 {
    let http = reqwest::Client::new();
    let mut sids = Vec::new();
    for _ in 0..clients {
        sids.push(session(&http, url).await);
    }
    let per = calls / clients;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for sid in sids {
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                one_call(&http, &url, &sid, i + 1).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (per * clients) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let calls = args.first().copied().unwrap_or(4000);
    let clients = args.get(1).copied().unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mock = start_mock().await;
        let gateway = start_gateway(mock.clone()).await;
        let (d50, d99) = latency(&mock, calls).await;
        let (g50, g99) = latency(&gateway, calls).await;
        println!("latency, 1 client, {calls} calls each (same run):");
        println!(
            "  direct to the mock:   p50 {:>7.1} us   p99 {:>7.1} us",
            d50.as_secs_f64() * 1e6,
            d99.as_secs_f64() * 1e6
        );
        println!(
            "  through the gateway:  p50 {:>7.1} us   p99 {:>7.1} us",
            g50.as_secs_f64() * 1e6,
            g99.as_secs_f64() * 1e6
        );
        println!(
            "  added by the gateway: p50 {:>7.1} us   p99 {:>7.1} us",
            (g50.as_secs_f64() - d50.as_secs_f64()) * 1e6,
            (g99.as_secs_f64() - d99.as_secs_f64()) * 1e6
        );
        let dt = throughput(&mock, calls * 2, clients).await;
        let gt = throughput(&gateway, calls * 2, clients).await;
        println!(
            "throughput, {clients} concurrent clients, {} calls each run:",
            calls * 2
        );
        println!(
            "  direct: {dt:>8.0} calls/s   through the gateway: {gt:>8.0} calls/s   ratio {:.2}",
            gt / dt
        );
    });
}
