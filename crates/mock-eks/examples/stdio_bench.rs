//! The mock EKS server over stdio, as a client sees it: start-up to the first `tools/list`
//! answer, the full catalogue's `tools/list` (time and bytes), and `tools/call` throughput over
//! one connection with the requests pipelined.
//!
//! Run: `cargo build --release --bin tollgate && cargo run --release -p tollgate-mock-eks
//! --example stdio_bench -- target/release/tollgate [CALLS]` (default 50,000 calls).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark program"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(bin: &str, args: &[&str]) -> std::process::Child {
    Command::new(bin)
        .arg("mock-eks")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// Start-up to the answer of the first `tools/list`, and that answer's size.
fn first_list(bin: &str, tools: &str) -> (Duration, usize) {
    let t = Instant::now();
    let mut child = spawn(bin, &["--tools", tools]);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{INIT}").unwrap();
    writeln!(stdin, "{LIST}").unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _init = lines.next().unwrap().unwrap();
    let list = lines.next().unwrap().unwrap();
    let took = t.elapsed();
    drop(stdin);
    child.wait().unwrap();
    (took, list.len())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin = args
        .first()
        .map_or("target/release/tollgate", String::as_str)
        .to_owned();
    let calls: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);

    for tools in ["default", "full"] {
        let mut runs: Vec<(Duration, usize)> = (0..11).map(|_| first_list(&bin, tools)).collect();
        runs.sort();
        let (median, bytes) = runs[runs.len() / 2];
        println!(
            "start to first tools/list answer, --tools {tools}: median {:.1} ms over 11 runs ({bytes} bytes)",
            median.as_secs_f64() * 1e3
        );
    }

    let mut child = spawn(&bin, &[]);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    writeln!(stdin, "{INIT}").unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _init = lines.next();
        let mut n = 0u64;
        let mut errors = 0u64;
        for line in lines {
            let line = line.unwrap();
            if line.contains("\"isError\":true") {
                errors += 1;
            }
            n += 1;
            if n == calls {
                break;
            }
        }
        (n, errors)
    });
    let t = Instant::now();
    {
        let mut w = std::io::BufWriter::new(&mut stdin);
        for i in 0..calls {
            writeln!(w, r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"GetAHOBatch","arguments":{{"batchId":"rb-0001"}}}}}}"#, i + 10).unwrap();
        }
        w.flush().unwrap();
    }
    let (n, errors) = reader.join().unwrap();
    let took = t.elapsed();
    drop(stdin);
    child.wait().unwrap();
    println!(
        "tools/call GetAHOBatch over one stdio connection, pipelined: {n} calls in {:.2} s = {:.0} calls/s ({errors} isError)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
