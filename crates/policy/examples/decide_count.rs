//! `decide` on the policy of `benches/decide.rs` (1,000 exact rules and 100 patterns, each with
//! a limit), N times in a row, for an instruction count that a loaded machine cannot skew:
//! `valgrind --tool=callgrind target/release/examples/decide_count exact 100000`, then
//! `callgrind_annotate --inclusive=yes` and read `Engine::decide`'s instructions per call.
//! The first argument picks the call (`exact`, `pattern`, `deny`), the second how many.

#![allow(clippy::print_stdout, reason = "a profiling driver prints what it ran")]
#![allow(clippy::unwrap_used, reason = "a profiling driver fails by panicking")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tollgate_policy::{Call, Engine, MemoryStore, Policy, ToolMeta};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "exact".into());
    let n: u32 = args.next().map_or(100_000, |a| a.parse().unwrap());
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
    let text =
        serde_json::to_string(&json!({"version": "1", "default": "deny", "tools": tools})).unwrap();
    let policy = Arc::new(Policy::parse("big.json", &text).unwrap());
    let engine = Engine::new(policy, Arc::new(MemoryStore::new()));
    let tool = match which.as_str() {
        "pattern" => "Pattern050Thing",
        "deny" => "NoSuchTool",
        _ => "Tool0500Operation",
    };
    let call = Call {
        tool: tool.into(),
        arguments: json!({"clusterName": "prod-eks"}).into(),
        grant: "ci-bot".into(),
        session: "s1".into(),
        meta: ToolMeta::default(),
    };
    let mut now = Duration::ZERO;
    let mut admitted = 0u32;
    for _ in 0..n {
        now += Duration::from_micros(100);
        admitted += u32::from(black_box(engine.decide(black_box(&call), now)).admits());
    }
    println!("{n} decisions of `{tool}`, {admitted} admitted");
}
