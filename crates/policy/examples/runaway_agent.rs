//! A runaway agent against the seed policy, in virtual time.
//!
//! The seed policy (examples/policies/seed.json) caps `CancelAHORunBatch` at 10 calls per
//! minute per grant and denies everything else. Here `ci-bot` loops, cancelling a run batch
//! every 2 seconds for 3 minutes, while `analyst` cancels one every 20 seconds and once tries a
//! tool the policy never names. Every line is one `Engine::decide`; nothing sleeps, the clock
//! is a number this program advances.
//!
//! Run it with `cargo run -p tollgate-policy --example runaway_agent`.

#![allow(clippy::print_stdout, reason = "an example prints its transcript")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tollgate_policy::{Call, DecisionKind, Engine, MemoryStore, Policy, ToolMeta};

fn main() -> std::process::ExitCode {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policies/seed.json"
    );
    let policy = match Policy::load(std::path::Path::new(path)) {
        Ok(p) => p,
        Err(diags) => {
            eprintln!("{diags}");
            return std::process::ExitCode::from(2);
        }
    };
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));

    // (instant, grant, tool): the runaway loop and the well-behaved analyst, in time order.
    let mut calls: Vec<(Duration, &str, &str)> = (0..90)
        .map(|i| (Duration::from_secs(2 * i), "ci-bot", "CancelAHORunBatch"))
        .chain((0..9).map(|i| {
            (
                Duration::from_secs(20 * i + 1),
                "analyst",
                "CancelAHORunBatch",
            )
        }))
        .chain([(Duration::from_secs(95), "analyst", "DeleteEKSCluster")])
        .collect();
    calls.sort();

    let mut totals: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for (i, (at, grant, tool)) in calls.into_iter().enumerate() {
        let call = Call {
            tool: tool.into(),
            arguments: serde_json::json!({ "batchId": format!("rb-{:04}", i + 1) }).into(),
            grant: grant.into(),
            session: format!("{grant}-session").into(),
            meta: ToolMeta::default(),
        };
        let decision = engine.decide(&call, at);
        let detail = match &decision.kind {
            DecisionKind::RateLimited { retry_after } => {
                let s = &decision.limits[0];
                format!(
                    "{} {}/{}, retry in {}s",
                    s.counter,
                    s.used,
                    s.max,
                    retry_after.as_secs_f64()
                )
            }
            DecisionKind::Deny => decision.reason.as_deref().unwrap_or_default().to_owned(),
            _ => decision
                .limits
                .first()
                .map(|s| format!("{} {}/{}", s.counter, s.used, s.max))
                .unwrap_or_default(),
        };
        let name = decision.kind.name();
        *totals.entry((grant, name)).or_default() += 1;
        println!(
            "+{:>8.3}s grant={grant:<8} {tool} -> {name} ({detail})",
            at.as_secs_f64()
        );
    }
    println!();
    for ((grant, decision), n) in totals {
        println!("total grant={grant:<8} {decision:<13} {n}");
    }
    std::process::ExitCode::SUCCESS
}
