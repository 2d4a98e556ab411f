//! Failures around the gateway that must be fast and clear (issue 18): an upstream command that
//! cannot be run, or that exits before it answers anything (a shell that exits, the real EKS
//! server without `AWS_REGION`). The client's requests get a JSON-RPC error quoting the
//! command's last stderr line and its exit status within seconds, the command is not started
//! again after `MAX_START_FAILURES` (3) failed starts, and the stdio gateway exits 2; over HTTP
//! the session gets the error and ends, and the server goes on.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ALLOW_ALL, initialize, rt, start_gateway_http, write};
use crate::util::{root, tollgate};

/// A stdio gateway in front of `upstream`, its stdin, and its answers as they arrive.
struct Stdio1 {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<Value>,
    stderr: std::thread::JoinHandle<String>,
    _dir: tempfile::TempDir,
}

impl Stdio1 {
    fn start(upstream: &[&str], env_remove: &[&str]) -> Stdio1 {
        let dir = tempfile::tempdir().unwrap();
        let policy = write(dir.path(), "allow.json", ALLOW_ALL);
        let mut cmd = tollgate();
        cmd.args(["gateway", "--policy", &policy, "--"])
            .args(upstream)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in env_remove {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
            text
        });
        Stdio1 {
            child,
            stdin,
            answers,
            stderr,
            _dir: dir,
        }
    }

    fn send(&mut self, m: &Value) {
        writeln!(self.stdin.as_mut().unwrap(), "{m}").unwrap();
    }

    fn next(&self, within: Duration) -> Value {
        self.answers
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("no answer within {within:?}"))
    }

    /// Closes stdin; the exit code (within 10 s) and the gateway's stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the gateway did not exit within 10 s of its stdin closing");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, self.stderr.join().unwrap())
    }
}

fn error_message(answer: &Value) -> &str {
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    answer["error"]["message"].as_str().unwrap()
}

/// A command that is not there: `initialize` gets an error naming the command and the OS's
/// reason within a second (three tries, 100 ms and 200 ms apart), a later request gets the same
/// at once, and the gateway exits 2 with the reason as its last stderr line.
#[test]
fn a_missing_upstream_command_is_an_error_and_exit_2() {
    let mut gw = Stdio1::start(&["/nonexistent/tollgate-no-such-server"], &[]);
    let started = Instant::now();
    gw.send(&initialize(1));
    let first = gw.next(Duration::from_secs(5));
    assert_eq!(first["id"], 1);
    let message = error_message(&first);
    assert!(
        message.contains("`/nonexistent/tollgate-no-such-server` could not be started")
            && message.contains("No such file or directory")
            && message.contains("PATH")
            && message.contains("stopped restarting it after 3 failed starts"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let asked = Instant::now();
    gw.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let second = gw.next(Duration::from_secs(2));
    assert_eq!(second["id"], 2);
    assert!(error_message(&second).contains("could not be started"));
    assert!(asked.elapsed() < Duration::from_secs(1));
    let (code, stderr) = gw.finish();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("error: the upstream command `/nonexistent/tollgate-no-such-server` could not be started"),
        "{stderr}"
    );
}

/// A command that writes to stderr and exits at once: the client's `initialize` gets an error
/// quoting its last stderr line and its exit status, the command is started 3 times in all (not
/// forever), every later request gets the error at once, and the gateway exits 2. The
/// command's stderr is passed on to the gateway's.
#[test]
fn an_upstream_that_exits_at_once_is_quoted_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let script = format!(
        "echo started >> '{}'; echo 'warming up' >&2; echo 'boom: no config' >&2; exit 3",
        starts.display()
    );
    let mut gw = Stdio1::start(&["sh", "-c", &script], &[]);
    let started = Instant::now();
    gw.send(&initialize(1));
    let first = gw.next(Duration::from_secs(5));
    assert_eq!(first["id"], 1);
    let message = error_message(&first);
    assert!(
        message.contains("exited with status 3 before it answered anything")
            && message.contains("its last stderr line: `boom: no config`")
            && message.contains("Run it by hand"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // After the third failed start the command is left alone; requests are answered at once.
    std::thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    gw.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let second = gw.next(Duration::from_secs(2));
    assert!(asked.elapsed() < Duration::from_secs(1));
    let message = error_message(&second);
    assert!(
        message.contains("`boom: no config`")
            && message.contains("stopped restarting it after 3 failed starts"),
        "{message}"
    );
    let (code, stderr) = gw.finish();
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&starts).unwrap().lines().count(),
        3,
        "started 3 times"
    );
    assert!(stderr.contains("boom: no config"), "{stderr}");
}

/// The real awslabs EKS MCP server without `AWS_REGION` exits at start; the client's
/// `initialize` gets an error quoting the server's own last words ("You must specify a
/// region") within seconds, and the gateway exits 2.
#[test]
fn the_real_eks_server_without_a_region_is_quoted_and_exit_2() {
    let server = std::env::var("TOLLGATE_TEST_EKS_SERVER").unwrap_or_else(|_| {
        let bin = root().join(".venv/bin/awslabs.eks-mcp-server");
        assert!(bin.exists(), "TOLLGATE_TEST_EKS_SERVER is not set and .venv has no awslabs.eks-mcp-server: run `bash scripts/test-all.sh`");
        bin.to_string_lossy().into_owned()
    });
    let mut gw = Stdio1::start(
        &[&server],
        &["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"],
    );
    gw.send(&initialize(1));
    // The server's Python start-up takes seconds on a loaded machine.
    let first = gw.next(Duration::from_secs(30));
    let message = error_message(&first);
    assert!(
        message
            .contains("awslabs.eks-mcp-server` exited with status 1 before it answered anything")
            && message.contains("You must specify a region")
            && message.contains("AWS_REGION"),
        "{message}"
    );
    let (code, stderr) = gw.finish();
    assert_eq!(code, Some(2), "{stderr}");
}

/// Over HTTP, a session whose command never starts gets the error as its `initialize` answer
/// within seconds, then ends (its id is not found: the client initializes again and gets the
/// error again); the server goes on serving.
#[test]
fn over_http_a_session_whose_upstream_never_starts_gets_the_error_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (_gw, url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--",
        "sh",
        "-c",
        "echo 'boom: no config' >&2; exit 3",
    ]);
    rt().block_on(async {
        let http = reqwest::Client::new();
        for attempt in 0..2 {
            let started = Instant::now();
            let r = http
                .post(&url)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .body(initialize(1).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
            let answer: Value = r.json().await.unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "attempt {attempt}: {:?}",
                started.elapsed()
            );
            assert!(
                error_message(&answer).contains("its last stderr line: `boom: no config`"),
                "{answer}"
            );
            // The session ends once its third start has failed.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = http
                    .post(&url)
                    .header("mcp-session-id", &session)
                    .header("accept", "application/json, text/event-stream")
                    .header("content-type", "application/json")
                    .body(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string())
                    .send()
                    .await
                    .unwrap();
                if r.status() == 404 {
                    break;
                }
                let answer: Value = r.json().await.unwrap();
                assert!(error_message(&answer).contains("boom"), "{answer}");
                assert!(Instant::now() < deadline, "the session did not end");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let health = http
            .get(url.replace("/mcp", "/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    });
}
