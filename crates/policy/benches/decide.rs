//! Decision latency on a large policy (1,000 exact rules and 100 patterns, each with a
//! limit) and the cost of loading such a policy. Run:
//! `cargo bench -p tollgate-policy --bench decide`.

#![allow(clippy::unwrap_used, reason = "benchmarks fail by panicking")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tollgate_policy::{Call, Engine, MemoryStore, Policy, ToolMeta};

fn big_policy() -> String {
    let mut tools = serde_json::Map::new();
    for i in 0..1_000 {
        tools.insert(
            format!("Tool{i:04}Operation"),
            json!({"limits": [{"counter": format!("c{i}"), "window": "minute", "max": 1_000_000}]}),
        );
    }
    for i in 0..100 {
        tools.insert(
            format!("Pattern{i:03}*"),
            json!({"rate_limit": {"max": 1_000_000, "window": "minute"}}),
        );
    }
    serde_json::to_string_pretty(&json!({"version": "1", "default": "deny", "tools": tools}))
        .unwrap()
}

fn call(tool: &str) -> Call {
    Call {
        tool: tool.into(),
        arguments: json!({"clusterName": "prod-eks"}).into(),
        grant: "ci-bot".into(),
        session: "s1".into(),
        meta: ToolMeta::default(),
    }
}

fn bench(c: &mut Criterion) {
    let text = big_policy();
    let policy = Arc::new(Policy::parse("big.json", &text).unwrap());
    let engine = Engine::new(policy, Arc::new(MemoryStore::new()));
    let mut group = c.benchmark_group("decide");
    for (name, tool) in [
        ("exact_with_limit", "Tool0500Operation"),
        ("pattern_with_limit", "Pattern050Thing"),
        ("default_deny", "NoSuchTool"),
    ] {
        let call = call(tool);
        let mut now = Duration::ZERO;
        group.bench_function(name, |b| {
            b.iter(|| {
                // Time moves on so the window slides as in real traffic.
                now += Duration::from_micros(100);
                black_box(engine.decide(black_box(&call), now))
            })
        });
    }
    group.finish();
    c.bench_function("load_1100_rule_policy", |b| {
        b.iter(|| black_box(Policy::parse("big.json", black_box(&text)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
