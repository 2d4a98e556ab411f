//! Benchmarks of the in-memory counter store, run in release mode:
//! `cargo run --release -p tollgate-policy --example limiter_bench`.
//!
//! Prints the median time of one `acquire` on a hot key and on a million distinct keys (medians
//! of 21 batches measured side by side in one run), and the resident memory that a million
//! active keys at `max: 10` per minute cost (VmRSS from /proc/self/status, before and after).
//! Figures go into docs/PERFORMANCE.md with this command; nothing here is a pass/fail test.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_policy::limiter::{CounterKey, CounterStore, Counts, LimitSpec, MemoryStore, Scope};

const BATCH: u32 = 100_000;
const BATCHES: usize = 21;
const KEYS: usize = 1_000_000;

fn spec() -> LimitSpec {
    LimitSpec {
        counter: "rate".into(),
        window: Duration::from_secs(60),
        max: 10,
        scope: Scope::Grant,
        counts: Counts::Calls,
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let spec = spec();

    // A hot key: every call draws on one counter; the clock moves 1 ms per call, so the ring
    // stays full and every path (refusals and admissions) is exercised.
    let store = MemoryStore::new();
    let hot = [(
        CounterKey {
            counter: spec.counter.clone(),
            scope_value: "ci-bot".into(),
        },
        spec.clone(),
    )];
    let mut now = Duration::ZERO;
    let mut hot_ns = Vec::new();
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..BATCH {
            now += Duration::from_millis(1);
            black_box(store.acquire(&hot, now, false));
        }
        hot_ns.push(start.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }

    // A million distinct keys, each filled to max: 10 within the minute.
    let names: Vec<Arc<str>> = (0..KEYS).map(|i| Arc::from(format!("grant-{i}"))).collect();
    let before = rss_kib();
    let wide = MemoryStore::new();
    let start = Instant::now();
    for round in 0..10u64 {
        for name in &names {
            let limits = [(
                CounterKey {
                    counter: spec.counter.clone(),
                    scope_value: name.clone(),
                },
                spec.clone(),
            )];
            black_box(wide.acquire(&limits, Duration::from_millis(round), false));
        }
    }
    let fill = start.elapsed();
    let after = rss_kib();
    let wide_ns = fill.as_nanos() as f64 / (10 * KEYS) as f64;

    println!(
        "acquire, hot key:          median {:.0} ns/call ({} batches of {})",
        median(hot_ns),
        BATCHES,
        BATCH
    );
    println!(
        "acquire, 1,000,000 keys:   mean {wide_ns:.0} ns/call over {} calls",
        10 * KEYS
    );
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "memory, 1,000,000 active keys at max 10/min: {:.1} MiB resident ({:.0} bytes/key, key names excluded: {} keys held)",
            (a.saturating_sub(b)) as f64 / 1024.0,
            (a.saturating_sub(b)) as f64 * 1024.0 / KEYS as f64,
            wide.len()
        ),
        _ => println!("memory: /proc/self/status is not readable here"),
    }
    println!(
        "keys whose admissions spilled from their slot to the heap: {}",
        wide.wide_keys()
    );
}
