//! Wire fuzzing (`tollgate fuzz --wire`): generated MCP traffic through the real gateway, over
//! both of its client transports, in front of a deliberately naive upstream over both upstream
//! transports, checked after every case for the gateway's first promise: nothing reaches the
//! upstream that the policy did not allow.
//!
//! # Layout
//! - [`naive`]: the naive upstream MCP server (stdio and Streamable HTTP), which runs every
//!   message that looks like `tools/call` and logs each execution;
//! - [`wire`]: the generated cases (clients, messages, spellings, ids, damage) and their
//!   rendering to bytes;
//! - [`harness`]: running one case through a fresh gateway (HTTP front or stdio session loop)
//!   and a fresh naive upstream (HTTP in process or a stdio child);
//! - [`check`]: the invariants checked on what a case left behind;
//! - [`fuzz_wire`] (here): proptest's runner over the cases, the memory bound, shrinking and
//!   the report.

pub mod check;
pub mod harness;
pub mod naive;
pub mod wire;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

pub use harness::{Env, transcript};
pub use wire::{Case, Transport};

/// Which transports to fuzz (`--transport`): both sides of the gateway take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transports {
    /// HTTP front over the HTTP upstream.
    Http,
    /// stdio front over the stdio upstream.
    Stdio,
    /// Every front with every upstream.
    Both,
}

impl Transports {
    /// The (front, upstream) pairs a case is drawn from.
    pub fn pairs(self) -> Vec<(Transport, Transport)> {
        use Transport::{Http, Stdio};
        match self {
            Transports::Http => vec![(Http, Http)],
            Transports::Stdio => vec![(Stdio, Stdio)],
            Transports::Both => vec![(Http, Http), (Stdio, Stdio), (Http, Stdio), (Stdio, Http)],
        }
    }
}

/// How to fuzz.
#[derive(Debug, Clone)]
pub struct WireOptions {
    pub cases: u32,
    pub seed: u64,
    pub transports: Transports,
    /// The `tollgate` binary (its `naive-upstream` subcommand is the stdio upstream); needed
    /// for stdio upstreams.
    pub naive_bin: Option<PathBuf>,
    /// The most messages of a case (handshakes and barriers not counted).
    pub max_steps: usize,
    /// How long a client waits for an answer before the gateway counts as hung.
    pub answer_timeout: Duration,
    /// How long shrinking a failure may take.
    pub max_shrink_time: Duration,
    /// How long a client waits for an answer while a failure is shrunk (shorter: a hang costs
    /// this much each time it is tried). The shrunk case is run again with `answer_timeout`
    /// before it is reported.
    pub shrink_answer_timeout: Duration,
    /// The most the process's resident memory may grow over the run.
    pub rss_ceiling_bytes: u64,
    /// Plain traffic only (`--plain`): well-formed requests with valid ids, no notifications,
    /// spellings, batches, odd ids or values, duplicate keys or damage; several clients and
    /// grants, overlapping requests. A baseline of what checking costs, and a run that can
    /// pass while an odd case still breaks an invariant.
    pub plain: bool,
    /// How many naive upstreams stand behind the gateway (`--upstreams`): 1 as it is, more
    /// behind the router of several upstreams (each a naive server of the same transport,
    /// `u0`, `u1`, …, with the policy's tool rules copied per prefix,
    /// [`harness::routed_policy`]). The invariant then also says where: each execution
    /// happened on the upstream its call's name routes to.
    pub upstreams: usize,
}

impl Default for WireOptions {
    fn default() -> Self {
        WireOptions {
            cases: 256,
            seed: 0,
            transports: Transports::Both,
            naive_bin: None,
            max_steps: 12,
            answer_timeout: Duration::from_secs(3),
            max_shrink_time: Duration::from_secs(120),
            shrink_answer_timeout: Duration::from_secs(1),
            rss_ceiling_bytes: 512 << 20,
            plain: false,
            upstreams: 1,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct WireReport {
    pub cases: u64,
    /// Wire messages sent (handshakes and barriers included).
    pub messages: u64,
    /// JSON-RPC messages in them (each batch item counts).
    pub items: u64,
    /// Executions at the naive upstream, each matched to its allow record.
    pub executions: u64,
    /// Decisions the gateway audited: allowed and refused.
    pub allowed: u64,
    pub refused: u64,
    /// The process's resident memory at the start and its largest growth after a case.
    pub rss_start_bytes: u64,
    pub rss_growth_bytes: u64,
    /// Time spent running cases (shrinking excluded).
    pub elapsed: Duration,
    pub violation: Option<WireViolation>,
}

/// A broken invariant, shrunk.
#[derive(Debug)]
pub struct WireViolation {
    /// Which invariant broke, and how.
    pub message: String,
    /// The minimal case's wire messages (see [`transcript`]).
    pub transcript: String,
    pub case: Case,
}

/// The process's resident memory, from /proc/self/status (0 where there is none).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs the wire fuzzer; `progress` is told the number of cases done after each.
pub fn fuzz_wire(options: &WireOptions, progress: impl Fn(u64)) -> Result<WireReport, String> {
    let env = Env::new(options.naive_bin.clone(), options.answer_timeout)?;
    let pairs = options.transports.pairs();
    if options.naive_bin.is_none() && pairs.iter().any(|(_, u)| *u == Transport::Stdio) {
        return Err(
            "a stdio upstream runs `tollgate naive-upstream`: give the `tollgate` binary".into(),
        );
    }
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&options.seed.to_le_bytes());
    seed[8..16].copy_from_slice(b"wirefuzz");
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: options.cases,
            failure_persistence: None,
            max_shrink_iters: 1024,
            max_shrink_time: u32::try_from(options.max_shrink_time.as_millis()).unwrap_or(u32::MAX),
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let odds = wire::Odds(if options.plain { 0.0 } else { 1.0 });
    let strategy = wire::cases(pairs, options.max_steps, odds, options.upstreams.max(1));
    let report = std::cell::RefCell::new(WireReport {
        rss_start_bytes: rss_bytes(),
        ..WireReport::default()
    });
    let shrinking = std::cell::Cell::new(false);
    let first_failure: std::cell::RefCell<Option<(Case, String)>> = Default::default();
    let result = runner.run(&strategy, |case| {
        let started = Instant::now();
        let wait = if shrinking.get() {
            options.shrink_answer_timeout
        } else {
            options.answer_timeout
        };
        let outcome = env.run_waiting(&case, wait);
        tracing::debug!(
            front = case.front.name(),
            upstream = case.upstream.name(),
            steps = case.steps.len(),
            shrinking = shrinking.get(),
            seconds = started.elapsed().as_secs_f64(),
            "case: {}",
            outcome.as_ref().err().map_or("held", String::as_str)
        );
        let mut r = report.borrow_mut();
        let growth = rss_bytes().saturating_sub(r.rss_start_bytes);
        if !shrinking.get() {
            r.elapsed += started.elapsed();
            r.rss_growth_bytes = r.rss_growth_bytes.max(growth);
        }
        let outcome = outcome.and_then(|stats| {
            if growth > options.rss_ceiling_bytes {
                Err(format!(
                    "memory: the process's resident memory grew by {} MiB over the run, over the ceiling of {} MiB",
                    growth >> 20,
                    options.rss_ceiling_bytes >> 20
                ))
            } else {
                Ok(stats)
            }
        });
        match outcome {
            Ok(stats) => {
                if !shrinking.get() {
                    r.cases += 1;
                    r.messages += stats.messages;
                    r.items += stats.items;
                    r.executions += stats.executions;
                    r.allowed += stats.allowed;
                    r.refused += stats.refused;
                    progress(r.cases);
                }
                Ok(())
            }
            Err(e) => {
                if !shrinking.get() {
                    *first_failure.borrow_mut() = Some((case.clone(), e.clone()));
                }
                shrinking.set(true);
                Err(TestCaseError::fail(e))
            }
        }
    });
    let mut report = report.into_inner();
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            // Shrinking waited less for answers, and overlapping messages can race: the shrunk
            // case must fail again with the full wait, or the case first found is reported.
            let again = env.run(&case);
            let (case, message) = match (again, first_failure.into_inner()) {
                (Err(e), _) => (case, e),
                (Ok(_), Some((first, e))) => (
                    first,
                    format!(
                        "{e} (the shrunk case did not fail again: this is the case as first found)"
                    ),
                ),
                (Ok(_), None) => (case, reason.message().to_owned()),
            };
            report.violation = Some(WireViolation {
                message,
                transcript: transcript(&case),
                case,
            });
        }
        Err(TestError::Abort(why)) => return Err(format!("the fuzzer stopped: {why}")),
    }
    Ok(report)
}
