//! `tollgate fuzz --policy FILE [--cases N] [--seed S] [--save DIR] [--time-budget D]`: property
//! fuzzing of a policy through the gateway's core and the mock in virtual time
//! (docs/fuzzing.md).
//!
//! Exit codes: 0 when every property held, 1 when one broke (the minimal session is saved as a
//! scenario under `--save`, or printed), 2 for a broken policy or bad flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tollgate_policy::{CounterStore, MemoryStore, Policy};
use tollgate_scenario::fuzz::{FuzzOptions, fuzz};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy to fuzz.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// How many sessions to generate.
    #[arg(long, value_name = "N", default_value_t = 256)]
    cases: u32,
    /// The seed: the same seed generates the same sessions.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Where to save the minimal failing session as a scenario file.
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    /// Stop generating sessions after this long (`30s`, `5m`).
    #[arg(long, value_name = "D", value_parser = duration)]
    time_budget: Option<std::time::Duration>,
    /// The shortest session, in calls.
    #[arg(long, value_name = "N", default_value_t = 1)]
    min_calls: usize,
    /// The longest session, in calls.
    #[arg(long, value_name = "N", default_value_t = 50)]
    max_calls: usize,
    /// Threads to fuzz on (default: one per core); the same seed gives the same report whatever
    /// the number.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    tollgate_scenario::format::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration: write e.g. `30s`, `5m`, `1h`"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.max_calls == 0 {
        eprintln!("error: --max-calls 0: a session needs at least one call; give 1 or more");
        return Ok(ExitCode::from(2));
    }
    if args.min_calls > args.max_calls {
        eprintln!(
            "error: --min-calls {} is more than --max-calls {}: the shortest session may not be longer than the longest",
            args.min_calls, args.max_calls
        );
        return Ok(ExitCode::from(2));
    }
    let policy = match Policy::load(&args.policy) {
        Ok(p) => Arc::new(p),
        Err(d) => {
            eprintln!("{}", d.render_plain());
            eprintln!("error: `{}` is not a valid policy", args.policy.display());
            return Ok(ExitCode::from(2));
        }
    };
    let options = FuzzOptions {
        cases: args.cases,
        seed: args.seed,
        time_budget: args.time_budget,
        min_calls: args.min_calls,
        max_calls: args.max_calls,
        jobs: args.jobs,
    };
    let store = || -> Arc<dyn CounterStore> { Arc::new(MemoryStore::new()) };
    // indicatif draws on stderr only when it is a terminal.
    let bar = indicatif::ProgressBar::new(u64::from(args.cases));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{bar:30}] {pos}/{len} sessions, {per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("#>-"),
    );
    // Shards report from several threads: count, rather than set a position that may arrive
    // out of order.
    let started = std::time::Instant::now();
    let report = fuzz(&args.policy, policy, &store, &options, |_| bar.inc(1));
    bar.finish_and_clear();
    // The timing goes to stderr: stdout is the same for the same seed, so two runs diff clean.
    let took = started.elapsed().as_secs_f64();
    let threads = options.threads();
    eprintln!(
        "took {took:.2} s: {:.0} sessions/s, {:.0} calls/s (each session run twice), on {threads} thread{}",
        report.cases as f64 / took.max(1e-6),
        report.calls as f64 / took.max(1e-6),
        if threads == 1 { "" } else { "s" }
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "fuzzed `{}` (seed {}): {} sessions, {} calls{}",
        args.policy.display(),
        args.seed,
        report.cases,
        report.calls,
        if report.skipped > 0 {
            format!(
                " ({} more not run: the time budget ran out)",
                report.skipped
            )
        } else {
            String::new()
        }
    )?;
    let decisions: Vec<String> = report
        .decisions
        .iter()
        .map(|(d, n)| format!("{d} {n}"))
        .collect();
    writeln!(out, "decisions: {}", decisions.join(", "))?;
    if report.never_fired.is_empty() {
        writeln!(out, "rules: every rule decided at least one call")?;
    } else {
        writeln!(
            out,
            "rules that never decided a call: {}",
            report.never_fired.join(", ")
        )?;
    }
    let Some(v) = report.violation else {
        writeln!(
            out,
            "every property held: strict and exact limits, nothing refused reached the upstream, default for unnamed tools, refusals name tool, rule and reason, argument rules, determinism"
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    writeln!(
        out,
        "VIOLATION (shrunk to {} calls): {}",
        v.calls, v.message
    )?;
    match &args.save {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            let file = dir.join(format!("fuzz-seed-{}.yaml", args.seed));
            std::fs::write(&file, &v.scenario)
                .with_context(|| format!("cannot write `{}`", file.display()))?;
            writeln!(
                out,
                "saved the minimal session as {}: replay it with `tollgate test {}`",
                file.display(),
                file.display()
            )?;
        }
        None => writeln!(out, "the minimal session, as a scenario:\n{}", v.scenario)?,
    }
    Ok(ExitCode::from(1))
}
