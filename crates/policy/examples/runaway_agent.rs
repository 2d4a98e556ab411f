//! A runaway agent against the seed policy's limit, in virtual time.
//!
//! The seed policy caps `CancelAHORunBatch` at 10 calls per minute per grant. Here `ci-bot`
//! loops, cancelling a run batch every 2 seconds for 3 minutes, while `analyst` makes one call
//! every 20 seconds under the same counter. Every line is one decision of the strict
//! sliding-window limiter; nothing sleeps, the clock is a number this program advances.
//!
//! Run it with `cargo run -p tollgate-policy --example runaway_agent`.

#![allow(clippy::print_stdout, reason = "an example prints its transcript")]

use std::collections::BTreeMap;
use std::time::Duration;

use tollgate_policy::limiter::{Acquire, CounterKey, CounterStore, LimitSpec, MemoryStore, Scope};

fn main() {
    let spec = LimitSpec {
        counter: "cancelahorunbatch_rate".into(),
        window: Duration::from_secs(60),
        max: 10,
        scope: Scope::Grant,
    };
    let store = MemoryStore::new();

    // (instant, grant): the runaway loop and the well-behaved analyst, merged in time order.
    let mut calls: Vec<(Duration, &str)> = (0..90)
        .map(|i| (Duration::from_secs(2 * i), "ci-bot"))
        .chain((0..9).map(|i| (Duration::from_secs(20 * i + 1), "analyst")))
        .collect();
    calls.sort();

    let mut totals: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for (at, grant) in calls {
        let limits = [(
            CounterKey {
                counter: spec.counter.clone(),
                scope_value: grant.into(),
            },
            spec.clone(),
        )];
        let (verdict, detail) = match store.acquire(&limits, at, false) {
            Acquire::Admitted { states } => {
                let s = &states[0];
                ("allow", format!("{} {}/{}", s.counter, s.used, s.max))
            }
            Acquire::Refused {
                retry_after,
                states,
                ..
            } => {
                let s = &states[0];
                (
                    "rate_limited",
                    format!(
                        "{} {}/{}, retry in {}s",
                        s.counter,
                        s.used,
                        s.max,
                        retry_after.as_secs_f64()
                    ),
                )
            }
        };
        *totals.entry((grant, verdict)).or_default() += 1;
        println!(
            "+{:>8.3}s grant={grant:<8} CancelAHORunBatch -> {verdict} ({detail})",
            at.as_secs_f64()
        );
    }
    println!();
    for ((grant, verdict), n) in totals {
        println!("total grant={grant:<8} {verdict:<13} {n}");
    }
}
