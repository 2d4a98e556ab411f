//! Virtual-time replay throughput: one scenario of N calls (GetAHOBatch, admitted by a limit
//! high enough never to refuse, and CancelAHORunBatch mostly rate limited) through the gateway's
//! session core and the in-process mock, transcript included.
//!
//! Run: `cargo run --release -p tollgate-scenario --example replay_bench [N]` (default 200,000).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark program"
)]

use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = std::env::temp_dir().join(format!("tollgate-replay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench.yaml");
    std::fs::write(
        &path,
        format!(
            "name: bench\npolicy:\n  version: \"1\"\n  default: deny\n  tools:\n    GetAHOBatch: {{limits: [{{counter: r, window: minute, max: 1000000000}}]}}\n    CancelAHORunBatch: {{limits: [{{counter: c, window: minute, max: 10}}]}}\nupstream: {{allow_write: true}}\nagents: {{a: {{grant: g}}}}\nsteps:\n  - {{at: 0s, agent: a, call: GetAHOBatch, args: {{batchId: rb-0001}}, repeat: {half}, every: 1ms}}\n  - {{at: 0s, agent: a, call: CancelAHORunBatch, args: {{batchId: rb-0013}}, repeat: {half}, every: 1ms}}\n",
            half = n / 2
        ),
    )
    .unwrap();
    let loaded = tollgate_scenario::load(&path).unwrap();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let outcome = tollgate_scenario::run(loaded);
    let (took, cpu) = (t.elapsed(), cpu_seconds() - cpu);
    println!(
        "{} calls replayed in {:.2} s = {:.0} calls/s (virtual time spans {} s; transcript {} bytes)",
        outcome.calls,
        took.as_secs_f64(),
        outcome.calls as f64 / took.as_secs_f64(),
        n / 2 / 1000,
        outcome.transcript.len()
    );
    // On a shared machine the wall clock includes time other processes had the core: the
    // process's own CPU time says what a call costs.
    println!(
        "CPU time {cpu:.2} s = {:.0} calls per CPU second ({:.1} us a call)",
        outcome.calls as f64 / cpu,
        cpu * 1e6 / outcome.calls as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// This process's user and system CPU time so far (from /proc; 10 ms ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}
