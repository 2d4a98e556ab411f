//! The router of several upstreams (`crates/gateway/src/multi.rs`) against a hostile client and
//! hostile upstreams (docs/security.md, "Several upstreams"). One stdio gateway in front of two
//! scriptable upstreams `a` and `b` (`tests/python/hostile_upstream.py`), each journaling every
//! message it reads before it acts on it, so each test proves where every message went and that
//! a refused one went nowhere. The client is this test, speaking raw JSON-RPC lines.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mock_eks::{Guard, python};
use crate::util::root;

/// How long any one wait of these tests lasts at most.
const WAIT: Duration = Duration::from_secs(20);

/// A stdio gateway in front of the upstreams `a` and `b`.
struct Gateway {
    _child: Guard,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    /// Messages read while waiting for another one, in order.
    backlog: Vec<Value>,
    dir: tempfile::TempDir,
}

/// The method a naive reader would run as `tools/call` (the naive upstream's loose compare).
fn looks_like_call(method: &str) -> bool {
    tollgate_wire_fuzz::naive::runs_as_tools_call(method)
}

impl Gateway {
    /// Starts a gateway (`args` added to its command line) whose upstream `a` also lists
    /// `a_extra` and `b` lists `b_extra`, and makes the handshake in `protocol`.
    fn start(protocol: &str, args: &[&str], a_extra: &[&str], b_extra: &[&str]) -> Gateway {
        Gateway::start_with(protocol, args, a_extra, b_extra, true)
    }

    /// [`Gateway::start`]; `list`: the handshake ends with a `tools/list`.
    fn start_with(
        protocol: &str,
        args: &[&str],
        a_extra: &[&str],
        b_extra: &[&str],
        list: bool,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("policy.json"), r#"{"version": "1", "default": "allow", "tools": {"b__twice": {"action": "deny", "reason": "not twice"}}}"#).unwrap();
        let script = root().join("tests/python/hostile_upstream.py");
        let upstream = |name: &str, extra: &[&str]| {
            let mut command = vec![
                python(),
                script.display().to_string(),
                name.to_owned(),
                d.join(format!("{name}.journal")).display().to_string(),
            ];
            command.extend(extra.iter().map(|s| (*s).to_owned()));
            format!(
                "[[upstream]]\nname = \"{name}\"\ncommand = {}\n",
                json!(command)
            )
        };
        let config = format!(
            "policy = \"policy.json\"\naudit = \"audit.jsonl\"\n\n{}\n{}",
            upstream("a", a_extra),
            upstream("b", b_extra)
        );
        std::fs::write(d.join("tollgate.toml"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["gateway", "--config"])
            .arg(d.join("tollgate.toml"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    panic!("the gateway wrote a line that is not JSON: {line}");
                };
                // A batch's answers are read one by one.
                let items = match v {
                    Value::Array(items) => items,
                    v => vec![v],
                };
                for item in items {
                    if tx.send(item).is_err() {
                        return;
                    }
                }
            }
        });
        let mut gw = Gateway {
            _child: Guard(child),
            stdin,
            rx,
            backlog: Vec::new(),
            dir,
        };
        gw.send(
            json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": protocol, "capabilities": {"sampling": {}, "roots": {}},
            "clientInfo": {"name": "hostile-test", "version": "0"}}}),
        );
        let init = gw.answer(&json!("init"));
        assert!(init["result"].is_object(), "{init}");
        gw.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        if list {
            gw.send(json!({"jsonrpc": "2.0", "id": "list", "method": "tools/list"}));
            let list = gw.answer(&json!("list"));
            assert!(list["result"]["tools"].is_array(), "{list}");
        }
        gw
    }

    fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string());
    }

    fn send_raw(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next message that `pred` accepts (earlier ones stay in the backlog).
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let start = Instant::now();
        loop {
            let left = WAIT.saturating_sub(start.elapsed());
            match self.rx.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(v) => self.backlog.push(v),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no {what} from the gateway within {WAIT:?}; read meanwhile: {:?}",
                    self.backlog
                ),
            }
        }
    }

    /// The answer (a result or an error) to the request `id`.
    fn answer(&mut self, id: &Value) -> Value {
        let what = format!("answer to {id}");
        self.wait_for(&what, |v| {
            v.get("method").is_none() && v.get("id") == Some(id)
        })
    }

    /// A tools/call request.
    fn call(&mut self, id: Value, tool: &str, arguments: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}));
    }

    /// Calls `tool` and returns the text of its answer.
    fn call_text(&mut self, id: Value, tool: &str, arguments: Value) -> String {
        self.call(id.clone(), tool, arguments);
        text(&self.answer(&id))
    }

    /// Everything read until now and for `quiet` more (a time in which nothing is expected).
    fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let start = Instant::now();
        while let Some(left) = quiet.checked_sub(start.elapsed()) {
            match self.rx.recv_timeout(left) {
                Ok(v) => self.backlog.push(v),
                Err(_) => break,
            }
        }
        std::mem::take(&mut self.backlog)
    }

    /// Every message upstream `name` has read.
    fn journal(&self, name: &str) -> Vec<Value> {
        read_journal(&self.dir.path().join(format!("{name}.journal")))
    }

    /// The messages upstream `name` read that a naive server runs as a tool call (items of a
    /// batch included): the tool names.
    fn calls(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for got in self.journal(name) {
            let items = match got {
                Value::Array(items) => items,
                v => vec![v],
            };
            for item in items {
                if item["method"].as_str().is_some_and(looks_like_call) {
                    out.push(item["params"]["name"].as_str().unwrap_or("?").to_owned());
                }
            }
        }
        out
    }

    /// The messages of upstream `name`'s journal that `pred` accepts, waiting up to [`WAIT`]
    /// until there are `n` (and returning them all then).
    fn journal_wait(&self, name: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let found: Vec<Value> = self.journal(name).into_iter().filter(&pred).collect();
            if found.len() >= n {
                return found;
            }
            assert!(
                start.elapsed() < WAIT,
                "upstream `{name}` got {} of {n} expected messages: {:?}",
                found.len(),
                self.journal(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One call to each upstream answered: what was sent before it to that upstream has been
    /// read by it (each upstream reads its messages in order).
    fn sync(&mut self, tag: &str) {
        for up in ["a", "b"] {
            let id = json!(format!("sync-{tag}-{up}"));
            let text = self.call_text(id, &format!("{up}__echo"), json!({}));
            assert!(text.starts_with(&format!("{up}:echo")), "{text}");
        }
    }
}

fn read_journal(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["got"].clone())
        .collect()
}

/// The text of a tool result (or the message of an error).
fn text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .or_else(|| answer["error"]["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A `tools/call` as a notification, with `id: null`, in a batch where batches are not allowed,
/// and under every odd spelling of the method: each is answered by the gateway (a request) or
/// dropped (a notification), and no upstream reads any of them.
#[test]
fn call_shaped_messages_reach_no_upstream() {
    let mut gw = Gateway::start("2025-06-18", &[], &[], &[]);
    let params = json!({"name": "a__echo", "arguments": {}});
    gw.send(json!({"jsonrpc": "2.0", "method": "tools/call", "params": params}));
    gw.send(json!({"jsonrpc": "2.0", "id": null, "method": "tools/call", "params": params}));
    let spellings = [
        "Tools/Call",
        "TOOLS/CALL",
        " tools/call",
        "tools/call ",
        "tools/call\n",
        "tools.call",
        "tools_call",
        "toolscall",
        "tools//call",
        "tools/call\u{200b}",
        "tools/\u{0441}all",
        "t\u{043e}ols/call",
        "\u{ff54}ools/call",
    ];
    for (n, method) in spellings.iter().enumerate() {
        gw.send(
            json!({"jsonrpc": "2.0", "id": format!("odd-{n}"), "method": method, "params": params}),
        );
        gw.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }
    // A batch in a version without batches: refused whole.
    gw.send(json!([
        {"jsonrpc": "2.0", "id": "batch-a", "method": "tools/call", "params": params},
        {"jsonrpc": "2.0", "id": "batch-b", "method": "tools/call", "params": {"name": "b__echo", "arguments": {}}},
    ]));
    for (n, method) in spellings.iter().enumerate() {
        let answer = gw.answer(&json!(format!("odd-{n}")));
        assert!(answer["error"].is_object(), "{method:?}: {answer}");
    }
    for id in ["batch-a", "batch-b"] {
        let answer = gw.answer(&json!(id));
        assert!(
            text(&answer).contains("batches are allowed only"),
            "{answer}"
        );
    }
    gw.sync("end");
    assert_eq!(gw.calls("a"), ["echo"], "{:?}", gw.journal("a"));
    assert_eq!(gw.calls("b"), ["echo"], "{:?}", gw.journal("b"));
}

/// In 2025-03-26, where batches are allowed: a batch of calls to both upstreams is decided call
/// by call, each call reaches only the upstream its name routes to, and the call-shaped items
/// that are not requests named `tools/call` reach neither.
#[test]
fn a_batch_is_split_between_the_upstreams_and_its_odd_items_reach_none() {
    let mut gw = Gateway::start("2025-03-26", &[], &[], &[]);
    gw.send(json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a__echo", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "b__echo", "arguments": {}}},
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "a__echo", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 3, "method": "Tools/Call", "params": {"name": "b__echo", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "b__twice", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "c__echo", "arguments": {}}},
    ]));
    assert!(text(&gw.answer(&json!(1))).starts_with("a:echo"));
    assert!(text(&gw.answer(&json!(2))).starts_with("b:echo"));
    assert!(gw.answer(&json!(3))["error"].is_object());
    let denied = gw.answer(&json!(4));
    assert!(text(&denied).contains("not twice"), "{denied}");
    // The refusal's machine-readable detail names the upstream.
    assert_eq!(
        denied["result"]["_meta"]["dev.tollgate/decision"]["upstream"],
        "b"
    );
    assert!(text(&gw.answer(&json!(5))).contains("does not offer"));
    gw.sync("end");
    assert_eq!(gw.calls("a"), ["echo", "echo"]);
    assert_eq!(gw.calls("b"), ["echo", "echo"]);
}

/// Ids of every JSON type the protocol allows, in flight at once on both upstreams and answered
/// out of order: each answer comes back under its own request's id, from the upstream its tool
/// routes to; ids the protocol does not allow (floats, null, objects) reach no upstream.
#[test]
fn ids_of_every_type_come_back_to_their_own_request() {
    let mut gw = Gateway::start("2025-06-18", &[], &[], &[]);
    let ids = [
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(9_007_199_254_740_993_u64),
        json!("7"),
        json!(""),
        json!("1"),
        json!("a-1"),
        json!("b-1"),
        json!("tollgate-list-1"),
        json!("tollgate-x-3"),
        json!("\u{1f600}"),
    ];
    for (n, id) in ids.iter().enumerate() {
        let up = if n % 2 == 0 { "a" } else { "b" };
        // Later calls answer sooner.
        let ms = 40 * (ids.len() - n);
        gw.call(id.clone(), &format!("{up}__sleep"), json!({"ms": ms}));
    }
    for bad in [
        json!(1.5),
        json!(1.0),
        json!(1e300),
        json!({"x": 1}),
        json!([1]),
        json!(true),
    ] {
        gw.send_raw(&format!(
            r#"{{"jsonrpc": "2.0", "id": {bad}, "method": "tools/call", "params": {{"name": "a__echo", "arguments": {{}}}}}}"#
        ));
    }
    for (n, id) in ids.iter().enumerate() {
        let up = if n % 2 == 0 { "a" } else { "b" };
        let answer = gw.answer(id);
        assert!(
            text(&answer).starts_with(&format!("{up}:sleep:")),
            "{id}: {answer}"
        );
    }
    gw.sync("end");
    let refused = gw
        .drain(Duration::from_millis(200))
        .into_iter()
        .filter(|v| v["error"]["code"] == -32600)
        .count();
    assert_eq!(refused, 6, "each invalid id is refused");
    assert_eq!(gw.calls("a").len(), 7 + 1);
    assert_eq!(gw.calls("b").len(), 6 + 1);
}

/// The same id twice in flight (to tools of two upstreams, or twice to one) is refused the
/// second time and reaches no upstream; once the first is answered the id may be used again.
#[test]
fn a_duplicate_id_in_flight_is_refused_and_never_crossed() {
    let mut gw = Gateway::start("2025-06-18", &[], &[], &[]);
    gw.call(json!(7), "a__sleep", json!({"ms": 1500}));
    gw.call(json!(7), "b__echo", json!({}));
    let second = gw.answer(&json!(7));
    assert!(text(&second).contains("already used"), "{second}");
    gw.call(json!(7), "a__echo", json!({}));
    let third = gw.answer(&json!(7));
    assert!(text(&third).contains("already used"), "{third}");
    let first = gw.answer(&json!(7));
    assert!(text(&first).starts_with("a:sleep"), "{first}");
    assert!(
        gw.call_text(json!(7), "b__echo", json!({}))
            .starts_with("b:echo")
    );
    assert_eq!(gw.calls("a"), ["sleep"]);
    assert_eq!(gw.calls("b"), ["echo"]);
}

/// Requests of two upstreams under the same id reach the client under distinct ids; each
/// answer of the client goes back to the upstream that asked, under that upstream's own id;
/// an answer to an id nobody asked, a forged one naming the other upstream's request, and a
/// second answer to an answered request reach no upstream.
#[test]
fn answers_to_upstream_requests_go_back_to_the_upstream_that_asked() {
    let mut gw = Gateway::start("2025-06-18", &[], &[], &[]);
    for up in ["a", "b"] {
        let text = gw.call_text(
            json!(format!("ask-{up}")),
            &format!("{up}__ask"),
            json!({"id": 1}),
        );
        assert!(text.starts_with(&format!("{up}:ask")), "{text}");
    }
    let mut asked = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let request = gw.wait_for("sampling request", |v| {
            v["method"] == "sampling/createMessage"
        });
        let from = request["params"]["messages"][0]["content"]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        asked.insert(from, request["id"].clone());
    }
    let (to_a, to_b) = (asked["from a"].clone(), asked["from b"].clone());
    assert_ne!(
        to_a, to_b,
        "two upstreams' requests never share an id at the client"
    );
    let answer = |id: &Value, tag: &str| json!({"jsonrpc": "2.0", "id": id, "result": {"role": "assistant", "content": {"type": "text", "text": tag}, "model": "m"}});
    // Forged answers first: to the upstream's own id, to ids nobody gave, to a made-up
    // upstream's id.
    for forged in [
        json!(1),
        json!("1"),
        json!("a-999"),
        json!("b-0"),
        json!("c-1"),
        json!(format!("{}x", to_a.as_str().unwrap())),
    ] {
        gw.send(answer(&forged, "forged"));
    }
    gw.send(answer(&to_a, "for a"));
    gw.send(answer(&to_b, "for b"));
    // The same answers again, and each upstream's id answered with the other's text.
    gw.send(answer(&to_a, "again"));
    gw.send(answer(&to_b, "again"));
    gw.sync("end");
    for (up, tag) in [("a", "for a"), ("b", "for b")] {
        let answers: Vec<Value> = gw
            .journal(up)
            .into_iter()
            .filter(|m| m.get("method").is_none())
            .collect();
        assert_eq!(answers.len(), 1, "{up}: {answers:?}");
        assert_eq!(answers[0]["id"], json!(1), "under its own id");
        assert_eq!(answers[0]["result"]["content"]["text"], tag);
    }
}

/// Progress and cancellation keep their upstream: an upstream's progress naming a token of a
/// request sent to the other upstream, and its cancellation naming the other's request, do not
/// reach the client; the client's cancellation and progress reach only the upstream whose
/// request they name.
#[test]
fn progress_and_cancellation_never_cross_upstreams() {
    let mut gw = Gateway::start("2025-06-18", &[], &[], &[]);
    // b's call in flight with its progress token.
    gw.send(
        json!({"jsonrpc": "2.0", "id": "slow-b", "method": "tools/call", "params": {
        "name": "b__sleep", "arguments": {"ms": 3000}, "_meta": {"progressToken": "tok-b"}}}),
    );
    gw.journal_wait("b", 1, |m| m["method"] == "tools/call");
    // a sends progress for b's token and for a token nobody gave; b for its own.
    gw.call_text(json!("p-a"), "a__progress", json!({"token": "tok-b"}));
    gw.call_text(json!("p-a2"), "a__progress", json!({"token": "tok-nobody"}));
    gw.call_text(json!("p-b"), "b__progress", json!({"token": "tok-b"}));
    // b asks the client something; a cancels it (under b's id and under the id the client
    // saw), then b does.
    gw.call_text(
        json!("ask-b"),
        "b__ask",
        json!({"id": 1, "token": "tok-ask"}),
    );
    let request = gw.wait_for("sampling request", |v| {
        v["method"] == "sampling/createMessage"
    });
    let seen = request["id"].clone();
    gw.call_text(json!("c-a"), "a__cancel", json!({"requestId": 1}));
    gw.call_text(json!("c-a2"), "a__cancel", json!({"requestId": seen}));
    // The client's progress on b's request, and on a token nobody gave.
    gw.send(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "tok-ask", "progress": 1}}));
    gw.send(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "tok-none", "progress": 1}}));
    gw.call_text(json!("c-b"), "b__cancel", json!({"requestId": 1}));
    // The client cancels b's slow call.
    gw.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow-b", "reason": "enough"}}));
    gw.sync("end");
    let seen_msgs = gw.drain(Duration::from_millis(300));
    let progress: Vec<&Value> = seen_msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 1, "only b's own progress: {progress:?}");
    assert_eq!(progress[0]["params"]["progressToken"], "tok-b");
    assert_eq!(progress[0]["params"]["message"], "from b");
    let cancels: Vec<&Value> = seen_msgs
        .iter()
        .filter(|m| m["method"] == "notifications/cancelled")
        .collect();
    assert_eq!(cancels.len(), 1, "only b's own cancellation: {cancels:?}");
    assert_eq!(cancels[0]["params"]["requestId"], seen);
    assert_eq!(cancels[0]["params"]["reason"], "from b");
    // What each upstream read of the client's notifications.
    let notes = |up: &str| -> Vec<Value> {
        gw.journal(up)
            .into_iter()
            .filter(|m| m.get("id").is_none() && m["method"] != "notifications/initialized")
            .collect()
    };
    assert_eq!(notes("a"), Vec::<Value>::new());
    let b = notes("b");
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[0]["method"], "notifications/progress");
    assert_eq!(b[0]["params"]["progressToken"], "tok-ask");
    assert_eq!(b[1]["method"], "notifications/cancelled");
    // Under b's own id of the slow call.
    let slow_id = gw
        .journal("b")
        .into_iter()
        .find(|m| m["params"]["name"] == "sleep")
        .unwrap()["id"]
        .clone();
    assert_eq!(b[1]["params"]["requestId"], slow_id);
}

/// Names that only resemble a routed name (an empty tool, a doubled prefix, an unknown or
/// case-changed prefix, look-alike characters, an upstream selector, over 128 characters) are
/// refused as unknown tools and reach no upstream; a tool of `a` whose own name carries `b`'s
/// prefix is exposed under `a`'s and reaches `a` only; names outside the spec are not listed.
#[test]
fn names_that_resemble_routed_names_are_refused_and_reach_no_upstream() {
    let long = format!("a__{}", "x".repeat(126));
    let mut gw = Gateway::start(
        "2025-06-18",
        &[],
        &["b__echo", "with space", &long, "echo.v2"],
        &[],
    );
    gw.send(json!({"jsonrpc": "2.0", "id": "l2", "method": "tools/list"}));
    let listed: Vec<String> = gw.answer(&json!("l2"))["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(listed.contains(&"a__b__echo".to_owned()), "{listed:?}");
    assert!(listed.contains(&"a__echo.v2".to_owned()), "{listed:?}");
    assert!(
        !listed.iter().any(|n| n.contains(' ') || n.len() > 128),
        "{listed:?}"
    );
    let names = [
        "a__".to_owned(),
        "a__a__echo".to_owned(),
        "c__echo".to_owned(),
        "a_echo".to_owned(),
        "a___echo".to_owned(),
        "A__echo".to_owned(),
        "a__Echo".to_owned(),
        "a__echo ".to_owned(),
        " a__echo".to_owned(),
        "a__ech\u{043e}".to_owned(),
        "\u{0430}__echo".to_owned(),
        "a__echo\u{200b}".to_owned(),
        "a\u{ff3f}\u{ff3f}echo".to_owned(),
        "echo".to_owned(),
        "__echo".to_owned(),
        "upstream:a".to_owned(),
        "upstream:a:echo".to_owned(),
        "a:echo".to_owned(),
        "a/echo".to_owned(),
        "a__*".to_owned(),
        "a__with space".to_owned(),
        format!("a__{long}"),
        format!("a__{}", "x".repeat(127)),
        "b__b__echo".to_owned(),
        "a__echo.v2.".to_owned(),
    ];
    for (n, name) in names.iter().enumerate() {
        let answer = text(&{
            gw.call(json!(n), name, json!({}));
            gw.answer(&json!(n))
        });
        assert!(answer.contains("does not offer"), "{name:?}: {answer}");
    }
    assert!(
        gw.call_text(json!("ab"), "a__b__echo", json!({}))
            .starts_with("a:b__echo")
    );
    assert!(
        gw.call_text(json!("v2"), "a__echo.v2", json!({}))
            .starts_with("a:echo.v2")
    );
    gw.sync("end");
    assert_eq!(gw.calls("a"), ["b__echo", "echo.v2", "echo"]);
    assert_eq!(gw.calls("b"), ["echo"]);
}

/// Upstreams that misbehave: an answer under ids of other requests (b's call in flight
/// included) reaches no other request, a second answer to one request is dropped, an answer
/// over the size limit is dropped (its call times out); the gateway goes on serving both.
#[test]
fn a_misbehaving_upstreams_answers_reach_no_other_request() {
    let mut gw = Gateway::start(
        "2025-06-18",
        &[
            "--tool-timeout",
            "b__hang=2",
            "--tool-timeout",
            "a__huge=2",
            "--max-message-bytes",
            "65536",
        ],
        &[],
        &[],
    );
    gw.call(json!("hang-b"), "b__hang", json!({}));
    gw.journal_wait("b", 1, |m| m["params"]["name"] == "hang");
    let ids: Vec<Value> = (0..64)
        .map(Value::from)
        .chain((0..64).map(|n| Value::from(n.to_string())))
        .chain(["hang-b", "wrong", "a-1", "b-1"].map(Value::from))
        .collect();
    gw.call(json!("wrong"), "a__wrong_id", json!({"ids": ids}));
    // One of the ids is the router's own for this call (a session's ids are small numbers):
    // that one answers it; every other reaches nobody.
    assert_eq!(text(&gw.answer(&json!("wrong"))), "a:wrong_id");
    let hang = gw.answer(&json!("hang-b"));
    assert!(text(&hang).contains("did not answer"), "times out: {hang}");
    assert_eq!(
        gw.call_text(json!("twice"), "a__twice", json!({})),
        "a:first"
    );
    gw.call(json!("huge"), "a__huge", json!({"bytes": 100_000}));
    let huge = gw.answer(&json!("huge"));
    assert!(text(&huge).contains("did not answer"), "times out: {huge}");
    gw.sync("end");
    let rest = gw.drain(Duration::from_millis(300));
    assert!(
        !rest
            .iter()
            .any(|m| m.to_string().contains("wrong_id") || m.to_string().contains("a:second")),
        "a stray answer reached the client: {rest:?}"
    );
    assert_eq!(gw.calls("a"), ["wrong_id", "twice", "huge", "echo"]);
    assert_eq!(gw.calls("b"), ["hang", "echo"]);
}

/// An upstream that never answers cannot starve the other: the calls it leaves unanswered time
/// out at the gateway (which cancels them), and the router forgets cancelled calls when its
/// bound of requests in flight (4096) is reached, so more calls than that to the silent
/// upstream still leave the other upstream callable.
#[test]
fn a_silent_upstream_does_not_use_up_the_routers_requests_in_flight() {
    // Only the silent tool's calls time out at once.
    let mut gw = Gateway::start("2025-06-18", &["--tool-timeout", "a__hang=0.001"], &[], &[]);
    // In rounds of 512 (under the session's own bound of 1024 calls in flight).
    let n = tollgate_gateway::multi::MAX_IN_FLIGHT + 512;
    for round in (0..n).step_by(512) {
        let mut lines = String::new();
        for k in round..round + 512 {
            lines.push_str(&json!({"jsonrpc": "2.0", "id": k, "method": "tools/call", "params": {"name": "a__hang", "arguments": {}}}).to_string());
            lines.push('\n');
        }
        gw.stdin.write_all(lines.as_bytes()).unwrap();
        gw.stdin.flush().unwrap();
        for k in round..round + 512 {
            let answer = gw.answer(&json!(k));
            assert!(text(&answer).contains("did not answer"), "{answer}");
        }
    }
    assert!(
        gw.call_text(json!("after"), "b__echo", json!({}))
            .starts_with("b:echo")
    );
    assert!(
        gw.call_text(json!("after-a"), "a__echo", json!({}))
            .starts_with("a:echo")
    );
}

/// An upstream that dies mid-call: the call is answered with an error, the client hears
/// `notifications/tools/list_changed`, the dead upstream's tools leave the list while the other's
/// stay callable, a call to a gone tool reaches nobody; when it has started again the client hears
/// `list_changed` once more and its tools are back and callable.
#[test]
fn a_dead_upstream_leaves_the_list_with_list_changed_and_comes_back() {
    let mut gw = Gateway::start("2025-06-18", &[], &[], &[]);
    let names = |gw: &mut Gateway, id: &str| -> Vec<String> {
        gw.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}));
        gw.answer(&json!(id))["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let died = gw.call_text(json!("die"), "b__die", json!({}));
    assert!(died.contains("went away"), "{died}");
    gw.wait_for("list_changed", |v| {
        v["method"] == "notifications/tools/list_changed"
    });
    let gone = names(&mut gw, "l-gone");
    assert!(!gone.iter().any(|n| n.starts_with("b__")), "{gone:?}");
    assert!(gone.contains(&"a__echo".to_owned()), "{gone:?}");
    assert!(
        gw.call_text(json!("a1"), "a__echo", json!({}))
            .starts_with("a:echo")
    );
    let refused = gw.call_text(json!("b1"), "b__echo", json!({}));
    assert!(refused.contains("does not offer"), "{refused}");
    // Restarted after a second's backoff.
    gw.wait_for("list_changed again", |v| {
        v["method"] == "notifications/tools/list_changed"
    });
    let back = names(&mut gw, "l-back");
    assert!(back.contains(&"b__echo".to_owned()), "{back:?}");
    assert!(
        gw.call_text(json!("b2"), "b__echo", json!({}))
            .starts_with("b:echo")
    );
    assert_eq!(gw.calls("b"), ["die", "echo"]);
    assert_eq!(gw.calls("a"), ["echo"]);
}

/// Two upstreams whose lists each fit in a message but together do not: the router answers the
/// merged list in pages of its own (each under the message limit, `nextCursor` to the next), the
/// client gets every tool of both, and the gateway's own listing follows the pages too, so a
/// tool listed on a later page is callable (before, the merged answer was over the limit and
/// dropped: the list was never answered and no call could be decided).
#[test]
fn a_merged_list_over_the_message_limit_is_answered_in_pages() {
    let mut gw = Gateway::start_with(
        "2025-06-18",
        &["--max-message-bytes", "65536"],
        &["big:20:2000"],
        &["big:20:2000"],
        false,
    );
    let mut names: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..10 {
        let id = json!(format!("page-{page}"));
        let mut list = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
        if let Some(c) = &cursor {
            list["params"] = json!({"cursor": c});
        }
        gw.send(list);
        let answer = gw.answer(&id);
        assert!(answer.to_string().len() <= 65536, "a page over the limit");
        names.extend(
            answer["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned()),
        );
        cursor = answer["result"]["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "the pages end");
    for up in ["a", "b"] {
        for k in 0..20 {
            assert!(
                names.contains(&format!("{up}__big{k}")),
                "{up}__big{k}: {names:?}"
            );
        }
        assert!(names.contains(&format!("{up}__echo")), "{names:?}");
    }
    // The gateway lists on its own before the first call, following the pages.
    assert!(
        gw.call_text(json!("last"), "b__big19", json!({}))
            .starts_with("b:big19")
    );
    assert!(
        gw.call_text(json!("first"), "a__big0", json!({}))
            .starts_with("a:big0")
    );
}
