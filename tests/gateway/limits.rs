//! The gateway's bounds (docs/security.md, "Limits"), each held by a test that fails without
//! it: slow or silent HTTP clients are cut at the header, body and keep-alive timeouts; the
//! connection past the cap waits; bodies over the size limit get a JSON-RPC 413; sessions and
//! a command upstream's children are capped and idle sessions expire (withdrawing their held
//! calls); a GET stream that is never read and a stdio client that never reads stdout cost
//! bounded memory; an over-long stdio line is answered with the parse error without being held.
//! Memory is read from `/proc/PID/status` (VmRSS, VmHWM).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ALLOW_ALL, bin, call, http_session, initialize, rt, start_gateway_http, write};
use crate::mock_eks::{Guard, start_http, start_listening};
use crate::util::tollgate;

/// An upstream URL nothing listens on: for tests that never open a session.
const NO_UPSTREAM: &str = "http://127.0.0.1:9/mcp";

/// A gateway with an allow-all policy and `args`; its guard, URL and `host:port`.
fn gateway(args: &[&str], upstream: &[&str]) -> (Guard, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (gw, url) = start_gateway_http(&[&["--policy", &policy], args, upstream].concat());
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    (gw, url, addr, dir)
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The processes whose parent is `pid` (zombies included: a child not reaped still counts).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `PID (COMM) STATE PPID ...`: the command may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Whether the server closed `stream` within `within` (a read sees the end or a reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

/// Reads one HTTP response's head and body from a raw connection (`Content-Length` bodies).
fn read_response(stream: &mut TcpStream) -> (String, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "no answer: {head}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// A slow-loris client, trickling its headers a byte at a time, and a client that connects and
/// sends nothing are both disconnected at `--header-timeout`.
#[test]
fn slow_loris_clients_are_cut_at_the_header_timeout() {
    let (_gw, _url, addr, _dir) =
        gateway(&["--header-timeout", "1"], &["--upstream-url", NO_UPSTREAM]);
    let mut silent = TcpStream::connect(&addr).unwrap();
    let mut trickling = TcpStream::connect(&addr).unwrap();
    let mut writer = trickling.try_clone().unwrap();
    let start = Instant::now();
    std::thread::spawn(move || {
        let head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnopqrstuvwxyz";
        for b in head.iter().take(40) {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    assert!(
        closed_within(&mut trickling, Duration::from_secs(4)),
        "the trickling client is still connected"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(2)),
        "the silent client is still connected"
    );
}

/// Past `--max-connections`, a new connection waits (it is not accepted) until one closes:
/// with both slots held by silent clients, a third client's request is not answered; once one
/// of them leaves, it is. And silent clients holding every slot hold it only until the header
/// timeout: a real client is then served.
#[test]
fn the_connection_past_the_cap_waits_for_a_free_slot() {
    let (_gw, url, addr, _dir) = gateway(
        &["--max-connections", "2", "--header-timeout", "30"],
        &["--upstream-url", NO_UPSTREAM],
    );
    let first = TcpStream::connect(&addr).unwrap();
    let _second = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(&addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        third.read(&mut buf).is_err(),
        "the third connection was served while two were open"
    );
    drop(first);
    let (head, body) = read_response(&mut third);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
    drop((third, _second));

    // Silent clients fill every slot; the header timeout frees them for a real client.
    let (_gw, url2, addr2, _dir2) = gateway(
        &["--max-connections", "8", "--header-timeout", "1"],
        &["--upstream-url", NO_UPSTREAM],
    );
    let _silent: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&addr2).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let status = rt().block_on(async {
        reqwest::Client::new()
            .get(url2.replace("/mcp", "/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let _ = url;
}

/// A body that has not arrived `--body-timeout` after its headers is answered 408 with a
/// JSON-RPC error, and the connection is closed.
#[test]
fn a_body_that_does_not_arrive_in_time_is_408() {
    let (_gw, _url, addr, _dir) =
        gateway(&["--body-timeout", "1"], &["--upstream-url", NO_UPSTREAM]);
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"jsonrpc\":")
        .unwrap();
    let start = Instant::now();
    let (head, body) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], -32600, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--body-timeout"),
        "{error}"
    );
    assert!(closed_within(&mut stream, Duration::from_secs(3)));
}

/// A keep-alive connection waits for its next request for `--keep-alive-timeout`, not the
/// (shorter) header timeout, and is closed after it.
#[test]
fn an_idle_keep_alive_connection_is_closed_at_its_timeout() {
    let (_gw, _url, addr, _dir) = gateway(
        &["--header-timeout", "0.5", "--keep-alive-timeout", "2"],
        &["--upstream-url", NO_UPSTREAM],
    );
    let mut stream = TcpStream::connect(&addr).unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).unwrap();
    assert!(read_response(&mut stream).0.starts_with("HTTP/1.1 200"));
    // Idle longer than the header timeout: still open, and serves the next request.
    std::thread::sleep(Duration::from_millis(1200));
    stream.write_all(request).unwrap();
    assert!(read_response(&mut stream).0.starts_with("HTTP/1.1 200"));
    let idle_since = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(5)));
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_millis(1800), "closed after {idle:?}");
}

/// A body over `--max-message-bytes` is 413 with the JSON-RPC parse error the docs promise,
/// whether its length is declared or it comes in chunks.
#[test]
fn a_body_over_the_limit_is_413_with_a_json_rpc_error() {
    let (_gw, url, _addr, _dir) = gateway(
        &["--max-message-bytes", "1000"],
        &["--upstream-url", NO_UPSTREAM],
    );
    rt().block_on(async {
        let http = reqwest::Client::new();
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
        let chunks =
            futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b' '; 600])));
        for body in [reqwest::Body::from(big), reqwest::Body::wrap_stream(chunks)] {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 413);
            assert_eq!(r.headers()["content-type"], "application/json");
            let error: Value = r.json().await.unwrap();
            assert_eq!(error["error"]["code"], -32700, "{error}");
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("over the limit of 1000 bytes"),
                "{error}"
            );
        }
    });
}

async fn initialize_status(http: &reqwest::Client, url: &str) -> (u16, Option<String>, Value) {
    let r = http
        .post(url)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(initialize(7).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let session = r
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, session, r.json().await.unwrap())
}

async fn delete(http: &reqwest::Client, url: &str, session: &str) {
    let r = http
        .delete(url)
        .header("mcp-session-id", session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Past `--max-sessions`, `initialize` is refused with HTTP 503 and a JSON-RPC error that
/// answers it (its id) and names the flag; ending a session makes room.
#[test]
fn the_session_past_the_cap_is_refused_with_503() {
    let (_mock, mock_url) = start_http(&[]);
    let (_gw, url, _addr, _dir) = gateway(&["--max-sessions", "2"], &["--upstream-url", &mock_url]);
    rt().block_on(async {
        let http = reqwest::Client::new();
        let (s1, a, _) = initialize_status(&http, &url).await;
        let (s2, _, _) = initialize_status(&http, &url).await;
        assert_eq!((s1, s2), (200, 200));
        let (s3, none, error) = initialize_status(&http, &url).await;
        assert_eq!(s3, 503);
        assert_eq!(none, None);
        assert_eq!(error["id"], 7, "{error}");
        assert_eq!(error["error"]["code"], -32603, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--max-sessions"),
            "{error}"
        );
        delete(&http, &url, &a.unwrap()).await;
        assert_eq!(initialize_status(&http, &url).await.0, 200);
        let metrics = http
            .get(url.replace("/mcp", "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("tollgate_http_sessions_refused_total 1"),
            "{metrics}"
        );
        assert!(metrics.contains("tollgate_http_sessions 2"), "{metrics}");
        assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
        assert_eq!(metrics.matches("# EOF").count(), 1);
    });
}

/// Session ids carry 128 random bits (32 hex digits after the counter), and the header
/// `Mcp-Session-Id: stateless` does not reach the per-grant session of stateless requests.
#[test]
fn session_ids_are_random_and_stateless_is_not_an_id() {
    let (_mock, mock_url) = start_http(&[]);
    let (_gw, url, _addr, _dir) = gateway(&[], &["--upstream-url", &mock_url]);
    rt().block_on(async {
        let http = reqwest::Client::new();
        let (_, a, _) = initialize_status(&http, &url).await;
        let (_, b, _) = initialize_status(&http, &url).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a, b);
        for id in [&a, &b] {
            let (counter, nonce) = id.strip_prefix("tg-").unwrap().split_once('-').unwrap();
            assert!(counter.parse::<u64>().is_ok(), "{id}");
            assert_eq!(nonce.len(), 32, "{id}");
            assert!(nonce.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
        let stateless =
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}});
        let r = http
            .post(&url)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(stateless.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .post(&url)
            .header("mcp-session-id", "stateless")
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
    });
}

const APPROVAL_POLICY: &str = r#"{"version": "1", "default": "allow", "tools": {
    "add_inline_policy": {"action": "require_approval", "approval": {"timeout": "10m"}}}}"#;

/// A session with no request in flight for `--session-idle-timeout` ends as a DELETE ends it:
/// its id is not found any more, and the call it held for approval (whose client gave up
/// waiting) is withdrawn and audited.
#[test]
fn an_idle_session_expires_and_its_held_calls_are_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.json", APPROVAL_POLICY);
    let admins = write(dir.path(), "admins", "alice-admin-token-0000 alice\n");
    let audit = dir.path().join("audit.jsonl");
    let (_mock, mock_url) = start_http(&["--allow-write"]);
    let (_gw, url) = start_listening(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--policy",
        &policy,
        "--admin-tokens",
        &admins,
        "--audit",
        audit.to_str().unwrap(),
        "--session-idle-timeout",
        "1",
        "--upstream-url",
        &mock_url,
    ]);
    let base = url.trim_end_matches("/mcp").to_owned();
    rt().block_on(async {
        let http = reqwest::Client::new();
        let s = http_session(&http, &url, "x").await;
        let held = call(
            2,
            "add_inline_policy",
            json!({"role_name": "r", "policy_name": "p", "permissions": {}}),
        );
        // The client gives up waiting after a moment: nothing of the session is in flight.
        let gave_up = http
            .post(&url)
            .header("mcp-session-id", &s)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .timeout(Duration::from_millis(700))
            .body(held.to_string())
            .send()
            .await;
        assert!(gave_up.is_err(), "the held call was answered: {gave_up:?}");
        let pending = |http: reqwest::Client| {
            let base = base.clone();
            async move {
                let list: Value = http
                    .get(format!("{base}/admin/approvals"))
                    .bearer_auth("alice-admin-token-0000")
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                list["pending"].as_array().unwrap().len()
            }
        };
        let deadline = Instant::now() + Duration::from_secs(8);
        while pending(http.clone()).await > 0 {
            assert!(Instant::now() < deadline, "the held call is still pending");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = http
            .post(&url)
            .header("mcp-session-id", &s)
            .header("content-type", "application/json")
            .body(json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("tollgate_http_sessions_expired_total 1"),
            "{metrics}"
        );
    });
    let records = super::lines_of(&audit);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "approval" && r["verdict"] == "withdrawn"),
        "{records:?}"
    );
}

/// A command upstream runs one child per session, at most `--max-upstream-processes`: the
/// next `initialize` is refused (503, a JSON-RPC error naming the flag), the count of the
/// gateway's children never passes the cap, and a session's end frees its slot.
#[test]
fn child_processes_past_the_cap_are_refused() {
    let (gw, url, _addr, _dir) = gateway(
        &["--max-upstream-processes", "2"],
        &["--", bin(), "mock-eks"],
    );
    let pid = gw.0.id();
    rt().block_on(async {
        let http = reqwest::Client::new();
        let (s1, a, _) = initialize_status(&http, &url).await;
        let (s2, _, _) = initialize_status(&http, &url).await;
        assert_eq!((s1, s2), (200, 200));
        assert_eq!(children_of(pid).len(), 2);
        for _ in 0..3 {
            let (status, _, error) = initialize_status(&http, &url).await;
            assert_eq!(status, 503, "{error}");
            assert_eq!(error["id"], 7);
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("--max-upstream-processes"),
                "{error}"
            );
            assert!(children_of(pid).len() <= 2);
        }
        delete(&http, &url, &a.unwrap()).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _, _) = initialize_status(&http, &url).await;
            assert!(children_of(pid).len() <= 2);
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the ended session's slot was not freed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(children_of(pid).len(), 2);
    });
}

/// A child upstream that keeps crashing is restarted (with backoff), one at a time: the stdio
/// gateway never has more than one child.
#[test]
fn a_restarting_child_does_not_multiply() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    // Answers nothing: exits soon after its first line (the gateway's re-initialize, after a
    // restart).
    let script = write(dir.path(), "crash.sh", "read -r line\nsleep 0.2\nexit 3\n");
    let mut child = tollgate()
        .args(["gateway", "--policy", &policy, "--", "sh", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", initialize(1)).unwrap();
    let pid = child.id();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        most = most.max(children_of(pid).len());
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(stdin);
    let _ = child.wait();
    assert_eq!(most, 1, "the gateway ran {most} children at once");
}

/// A session's `GET /mcp` stream that its client never reads, under a flood of upstream
/// notifications (128 MB of them), is closed once `--queue-depth` (64) events wait (counted in
/// `tollgate_get_streams_closed_total`), and the gateway's memory stays bounded.
#[test]
fn a_never_read_get_stream_is_closed_at_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let event = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x".repeat(16_000)}});
    let script = write(
        dir.path(),
        "flood.sh",
        &format!(
            "read -r init\nprintf '%s\\n' '{}'\nread -r initialized\nsleep 1\nyes '{event}' | head -n 8000\ncat > /dev/null\n",
            json!({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "flood", "version": "1"}}})
        ),
    );
    let (gw, url, _addr, _dir) = gateway(&[], &["--", "sh", &script]);
    let pid = gw.0.id();
    let before = status_kib(pid, "VmRSS");
    rt().block_on(async {
        let http = reqwest::Client::new();
        let s = http_session(&http, &url, "x").await;
        let get = http
            .get(&url)
            .header("mcp-session-id", &s)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 200);
        let r = http
            .post(&url)
            .header("mcp-session-id", &s)
            .header("content-type", "application/json")
            .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        // The flood: 8000 events of 16 kB, none read by the client.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metrics = http
                .get(url.replace("/mcp", "/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if metrics.contains("tollgate_get_streams_closed_total 1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the GET stream was not closed: {metrics}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Let the rest of the flood pass through (it has no stream to go to now).
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(get);
    });
    let peak = status_kib(pid, "VmHWM");
    eprintln!("gateway VmRSS before the flood {before} KiB, peak {peak} KiB");
    assert!(
        peak < before + 48 * 1024,
        "the gateway grew from {before} KiB to {peak} KiB"
    );
}

/// A stdio client that never reads stdout stops being read: the gateway's queues fill, it
/// stops reading stdin (the client's writes block), and its memory stays bounded, although
/// the client asked for some 380 MB of answers.
#[test]
fn a_stdio_client_that_never_reads_stdout_stops_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let child = tollgate()
        .args(["gateway", "--policy", &policy, "--", bin(), "mock-eks"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gw = Guard(child);
    let pid = gw.0.id();
    std::thread::sleep(Duration::from_millis(300));
    let before = status_kib(pid, "VmRSS");
    let mut stdin = gw.0.stdin.take().unwrap();
    let _stdout = gw.0.stdout.take().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&written);
    std::thread::spawn(move || {
        let _ = writeln!(stdin, "{}", initialize(1));
        let _ = writeln!(
            stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        );
        // Each `tools/list` answer is about 19 kB.
        for i in 0..20_000u64 {
            let m = json!({"jsonrpc": "2.0", "id": i + 2, "method": "tools/list"});
            if writeln!(stdin, "{m}").is_err() {
                return;
            }
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    let stuck_at = written.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        written.load(Ordering::Relaxed),
        stuck_at,
        "the gateway still reads stdin"
    );
    assert!(stuck_at < 20_000, "the gateway read every request");
    let now = status_kib(pid, "VmRSS");
    eprintln!(
        "gateway VmRSS {before} KiB before, {now} KiB with stdout unread; {stuck_at} requests written"
    );
    assert!(
        now < before + 48 * 1024,
        "the gateway grew from {before} KiB to {now} KiB"
    );
}

/// An over-long line on stdio (64 MiB, no newline until its end) is answered with the
/// parse error the docs promise and never held whole; the next message is served.
#[test]
fn a_huge_stdio_line_is_answered_with_the_parse_error_and_the_next_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let child = tollgate()
        .args(["gateway", "--policy", &policy, "--", bin(), "mock-eks"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gw = Guard(child);
    let pid = gw.0.id();
    let mut stdin = gw.0.stdin.take().unwrap();
    let stdout = gw.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    writeln!(stdin, "{}", initialize(1)).unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["id"], 1, "{first}");
    let before = status_kib(pid, "VmRSS");
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        stdin.write_all(&chunk).unwrap();
    }
    stdin.write_all(b"\n").unwrap();
    writeln!(
        stdin,
        "{}",
        call(2, "GetAHOBatch", json!({"batchId": "rb-0001"}))
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !got.iter().any(|a: &Value| a["id"] == 2) {
        let left = deadline.saturating_duration_since(Instant::now());
        got.push(
            rx.recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to call 2: {got:?}")),
        );
    }
    let parse_error = got.iter().find(|a| a["error"]["code"] == -32700).unwrap();
    assert_eq!(
        parse_error["error"]["message"],
        format!(
            "message of {} bytes is over the limit of 4194304 bytes",
            64 << 20
        )
    );
    assert_eq!(parse_error["id"], Value::Null);
    assert_eq!(
        got.iter().find(|a| a["id"] == 2).unwrap()["result"]["isError"],
        false
    );
    let peak = status_kib(pid, "VmHWM");
    eprintln!("gateway VmRSS {before} KiB before a 64 MiB line, peak {peak} KiB");
    assert!(
        peak < before + 32 * 1024,
        "the gateway's peak RSS was {peak} KiB"
    );
}

/// An HTTP upstream's answer over `--max-message-bytes` (a JSON body, or one SSE event) is
/// refused as it is read: the call gets a JSON-RPC error naming the limit.
#[test]
fn an_http_upstreams_answer_over_the_limit_gets_the_call_an_error() {
    use wiremock::ResponseTemplate;
    let runtime = rt();
    let huge = json!({"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "x".repeat(300_000)}]}});
    for template in [
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_string(huge.to_string()),
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/event-stream")
            .set_body_string(tollgate_mcp::sse::encode_event(&huge.to_string(), None)),
    ] {
        let server = super::misbehaving_upstream(&runtime, template);
        let dir = tempfile::tempdir().unwrap();
        let policy = write(dir.path(), "allow.json", ALLOW_ALL);
        let answers = super::stdio_gateway(
            &[
                "--policy",
                &policy,
                "--max-message-bytes",
                "100000",
                "--upstream-url",
                &server.uri(),
            ],
            &[
                initialize(1),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                call(2, "t", json!({})),
            ],
            Duration::from_millis(1500),
        );
        let answer = answers.iter().find(|a| a["id"] == 2).unwrap();
        let text = answer.to_string();
        assert!(text.contains("over the limit of 100000 bytes"), "{text}");
    }
}
