//! The wire fuzzer (crates/wire-fuzz) against the real gateway: generated traffic through its
//! HTTP front and its stdio session loop, in front of the naive upstream over HTTP and over
//! stdio (`tollgate naive-upstream` children, this binary), and the bypasses found so far as
//! fixed cases.
//!
//! The property and the cases named after a bypass FAIL on a gateway that forwards a
//! `tools/call` notification or a case variant of the method undecided, answers a batch's
//! `null`-id error to nobody, takes a client's `tollgate-` ids for its own, or matches answers
//! to requests by id alone across the requests of a session: they are the proof the fixes
//! come with. `clean_traffic_...` and the CLI tests hold now.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use tollgate_wire_fuzz::wire::Case;
use tollgate_wire_fuzz::{Env, Transport, Transports, WireOptions, fuzz_wire};

use Transport::{Http, Stdio as StdioT};

fn env() -> Env {
    Env::new(
        Some(env!("CARGO_BIN_EXE_tollgate").into()),
        Duration::from_secs(3),
    )
    .unwrap()
}

/// Every front (the gateway's HTTP front, its stdio session loop) with every upstream (the
/// naive server over HTTP in process, and over stdio as a child).
const PAIRS: [(Transport, Transport); 4] = [
    (Http, Http),
    (StdioT, StdioT),
    (Http, StdioT),
    (StdioT, Http),
];

/// Runs one hand-written case on every pair of transports; the broken invariants, one line
/// per pair.
fn broken_on_every_pair(clients: &[(usize, usize)], steps: &[(usize, bool, &str)]) -> Vec<String> {
    let env = env();
    PAIRS
        .iter()
        .filter_map(|&(front, upstream)| {
            let case = Case::by_hand_overlapping(front, upstream, clients, steps);
            env.run(&case).err().map(|e| {
                format!(
                    "{} front, {} upstream: {e}\n{}",
                    front.name(),
                    upstream.name(),
                    tollgate_wire_fuzz::transcript(&case)
                )
            })
        })
        .collect()
}

/// [`broken_on_every_pair`] tried `tries` times, for cases whose overlapping messages race:
/// the first try that breaks an invariant.
fn broken_in_tries(
    tries: usize,
    clients: &[(usize, usize)],
    steps: &[(usize, bool, &str)],
) -> Vec<String> {
    (0..tries)
        .map(|_| broken_on_every_pair(clients, steps))
        .find(|broken| !broken.is_empty())
        .unwrap_or_default()
}

/// One client (grant `ci-bot`, protocol `VERSIONS[version]`) sends `messages`, each waited
/// for, on every pair of transports: every invariant must hold.
fn holds(version: usize, messages: &[&str]) {
    let steps: Vec<(usize, bool, &str)> = messages.iter().map(|m| (0, true, *m)).collect();
    let broken = broken_on_every_pair(&[(0, version)], &steps);
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

const V2025_03_26: usize = 0;
const V2025_06_18: usize = 1;
const V2025_11_25: usize = 2;
const V2026_07_28: usize = 3;

/// The property: over generated traffic (every front with every upstream; method spellings,
/// notifications, batches in every protocol version, odd and colliding ids, duplicate keys,
/// odd arguments, cut and padded messages, overlapping requests, several clients and grants),
/// every execution at the naive upstream has its own audited allow record, the audit log
/// verifies, every request is answered (or its message refused whole) within 3 s with an id
/// its client sent and by the upstream's answer to that very request, and memory stays under
/// 512 MiB of growth. The shrunk counterexample is printed as the wire messages to replay.
#[test]
fn wire_fuzz_nothing_runs_at_the_upstream_without_its_own_allow_record_and_every_request_is_answered()
 {
    let options = WireOptions {
        cases: 96,
        seed: 0,
        transports: Transports::Both,
        naive_bin: Some(env!("CARGO_BIN_EXE_tollgate").into()),
        max_shrink_time: Duration::from_secs(20),
        ..WireOptions::default()
    };
    let report = fuzz_wire(&options, |_| {}).unwrap();
    if let Some(v) = report.violation {
        panic!(
            "after {} cases: {}\nthe minimal case, as the exact wire messages:\n{}",
            report.cases, v.message, v.transcript
        );
    }
    assert_eq!(report.cases, 96);
    assert!(report.executions > 0 && report.refused > 0, "{report:?}");
}

/// The same property with two naive upstreams behind the router of several upstreams (their
/// tools `u0__read_file`, `u1__read_file`, …, near misses of the prefixed names among the
/// generated ones): every execution has its own allow record *and* happened on the upstream its
/// call's name routes to (each upstream's executions carry its prefix when they are matched),
/// and every request is answered, over every pair of transports.
#[test]
fn wire_fuzz_through_the_router_each_execution_is_allowed_and_on_the_upstream_its_name_routes_to() {
    let options = WireOptions {
        cases: 48,
        seed: 0,
        transports: Transports::Both,
        naive_bin: Some(env!("CARGO_BIN_EXE_tollgate").into()),
        max_shrink_time: Duration::from_secs(20),
        upstreams: 2,
        ..WireOptions::default()
    };
    let report = fuzz_wire(&options, |_| {}).unwrap();
    if let Some(v) = report.violation {
        panic!(
            "after {} cases: {}\nthe minimal case, as the exact wire messages:\n{}",
            report.cases, v.message, v.transcript
        );
    }
    assert_eq!(report.cases, 48);
    assert!(report.executions > 0 && report.refused > 0, "{report:?}");
}

/// Plain calls to both upstreams behind the router, each by its exposed name, and the router's
/// look-alike names: every invariant holds on every pair of transports (the harness raises no
/// false alarm with several upstreams).
#[test]
fn clean_traffic_through_the_router_keeps_every_invariant() {
    let call = |id: u32, tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"op":"get","key":"k"}}}}}}"#
        )
    };
    let steps = [
        call(1, "u0__kv"),
        call(2, "u1__kv"),
        call(3, "u0__u1__kv"),
        call(4, "u1__"),
        call(5, "kv"),
        call(6, "u1__send_email"),
    ];
    let env = env();
    for (front, upstream) in PAIRS {
        let mut case = Case::by_hand(
            front,
            upstream,
            &[(0, V2025_06_18)],
            &steps.iter().map(|m| (0, m.as_str())).collect::<Vec<_>>(),
        );
        case.upstreams = 2;
        let stats = env.run(&case).unwrap_or_else(|e| {
            panic!(
                "{} front, {} upstream: {e}\n{}",
                front.name(),
                upstream.name(),
                tollgate_wire_fuzz::transcript(&case)
            )
        });
        assert_eq!(stats.executions, 2, "{stats:?}");
        assert_eq!(stats.allowed, 2, "{stats:?}");
    }
}

/// Ordinary traffic keeps every invariant on every transport (the harness itself raises no
/// false alarm): a handshake, a listing, allowed calls, refused ones (policy, arguments, an
/// unknown tool, a limit), a batch in 2025-03-26, a stateless client with its `_meta`, and two
/// clients of different grants interleaved.
#[test]
fn clean_traffic_keeps_every_invariant_on_every_transport() {
    let call = |id: u32, tool: &str, args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        )
    };
    let c0 = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_owned(),
        call(2, "read_file", r#"{"path":"/srv/a.txt"}"#),
        call(3, "read_file", r#"{"path":"/etc/passwd"}"#),
        call(4, "delete_file", r#"{"path":"/srv/a.txt"}"#),
        call(5, "format_disk", "{}"),
        call(6, "kv", r#"{"op":"put","key":"k","value":1}"#),
        call(7, "kv", r#"{"op":"put","key":"k","value":2}"#),
        call(8, "kv", r#"{"op":"put","key":"k","value":3}"#),
        format!(
            "[{},{},{}]",
            call(9, "deploy", r#"{"env":"dev","replicas":2}"#),
            r#"{"jsonrpc":"2.0","id":10,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#
        ),
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":99}}"#
            .to_owned(),
    ];
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"fuzz-c1","version":"1"}}"#;
    let c1 = [
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"search","arguments":{{"query":"q"}},{meta}}}}}"#
        ),
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{{meta}}}}}"#),
    ];
    let c2 = [call(
        1,
        "write_file",
        r#"{"path":"/tmp/a.txt","content":"hi"}"#,
    )];
    let mut steps: Vec<(usize, bool, &str)> = Vec::new();
    for (k, m) in c0.iter().enumerate() {
        steps.push((0, true, m));
        if let Some(m) = c1.get(k) {
            steps.push((1, true, m));
        }
        if let Some(m) = c2.get(k) {
            steps.push((2, true, m));
        }
    }
    let broken = broken_on_every_pair(
        &[(0, V2025_03_26), (1, V2026_07_28), (2, V2025_11_25)],
        &steps,
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Bypass: a `tools/call` sent as a notification (no `id`) reaches the upstream undecided and
/// unaudited, alone or inside a 2025-03-26 batch.
#[test]
fn a_tools_call_notification_never_runs_undecided() {
    holds(
        V2025_06_18,
        &[
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/srv/a.txt"}}}"#,
        ],
    );
    holds(
        V2025_03_26,
        &[
            r#"[{"jsonrpc":"2.0","method":"tools/call","params":{"name":"run_command","arguments":{"command":"rm -rf /"}}},{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        ],
    );
}

/// Bypass: a method that differs from `tools/call` only in case or surrounding whitespace
/// (`Tools/Call`, `TOOLS/CALL`, `tools/call `) is passed through undecided; an upstream that
/// compares methods loosely runs it.
#[test]
fn a_case_or_whitespace_variant_of_tools_call_never_runs_undecided() {
    holds(
        V2025_06_18,
        &[
            r#"{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"delete_file","arguments":{"path":"/srv/a.txt"}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"TOOLS/CALL","params":{"name":"run_command","arguments":{"command":"id"}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call ","params":{"name":"send_email","arguments":{"to":"x@example.com"}}}"#,
        ],
    );
}

/// Hang: a batch in a 2025-06-18 HTTP session whose answers include an error with a `null` id
/// (an item whose id is not a string or an integer; a duplicate key anywhere in the batch,
/// which the gateway refuses whole) never completes its POST: the gateway waits for answers
/// with the item's own id, which never come (an upstream that refuses the batch with a
/// `null`-id error does the same).
#[test]
fn a_batch_in_a_2025_06_18_session_is_answered_or_refused() {
    holds(
        V2025_06_18,
        &[
            r#"[{"jsonrpc":"2.0","id":1.5,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        ],
    );
    holds(
        V2025_06_18,
        &[r#"[{"jsonrpc":"2.0","id":1,"method":"ping","method":"ping"}]"#],
    );
}

/// Mix-up: a client request whose id looks like the gateway's own is taken for the gateway's
/// answer. `tollgate-internal-1` sent just before the session's first call: its answer is
/// taken as the gateway's tool listing (so the call is refused as an unknown tool) and the
/// listing goes to the client as the answer to its `ping`. `tollgate-reinit-1`: the answer is
/// dropped as the answer to a restart's `initialize`, and the request hangs. (The first pair
/// of messages overlaps: three tries.)
#[test]
fn a_client_id_like_the_gateways_own_gets_its_own_answer() {
    let broken = broken_in_tries(
        3,
        &[(0, V2025_06_18)],
        &[
            (
                0,
                false,
                r#"{"jsonrpc":"2.0","id":"tollgate-internal-1","method":"ping"}"#,
            ),
            (
                0,
                true,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a.txt"}}}"#,
            ),
        ],
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    holds(
        V2025_06_18,
        &[r#"{"jsonrpc":"2.0","id":"tollgate-reinit-1","method":"ping"}"#],
    );
}

/// Found by the fuzzer: over HTTP, the `null`-id error that answers a message the gateway
/// cannot read goes to the oldest request in flight in the session (here a call waiting for
/// the tool listing), whose own answer is then dropped. The POSTs race: three tries.
#[test]
fn an_error_for_an_unreadable_message_reaches_that_messages_post() {
    let broken = broken_in_tries(
        3,
        &[(0, V2025_03_26)],
        &[
            (
                0,
                false,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a.txt"}}}"#,
            ),
            (0, true, r#"{"jsonrpc":"2.0","id":2,"method":"ping""#),
        ],
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Found by the fuzzer: in a batch with a call held for the tool listing and another request
/// with the same id, the held call's forwarding replaces the other request's pending entry, so
/// the batch's own answers (here the refusal of a call without a name) are never sent.
#[test]
fn a_batch_with_a_repeated_id_keeps_the_gateways_own_answers() {
    holds(
        V2025_03_26,
        &[
            r#"[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}},{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"kv","arguments":{"op":"get","key":"k"}}},{"jsonrpc":"2.0","id":4,"method":"tools/list"}]"#,
        ],
    );
}

/// `tollgate fuzz --wire` takes no policy and `--transport` only with `--wire`: bad flags are
/// exit 2.
#[test]
fn fuzz_wire_flags() {
    let run = |args: &[&str]| {
        crate::util::tollgate()
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(
        run(&["fuzz", "--wire", "--policy", "examples/policies/seed.json"]),
        Some(2)
    );
    assert_eq!(
        run(&["fuzz", "--transport", "http", "--policy", "x.json"]),
        Some(2)
    );
    assert_eq!(
        run(&["fuzz", "--wire", "--transport", "carrier-pigeon"]),
        Some(2)
    );
    assert_eq!(run(&["fuzz"]), Some(2));
    assert_eq!(run(&["fuzz", "--wire", "--upstreams", "0"]), Some(2));
    assert_eq!(run(&["fuzz", "--wire", "--upstreams", "9"]), Some(2));
    assert_eq!(
        run(&["fuzz", "--answer-timeout", "5s", "--policy", "x.json"]),
        Some(2)
    );
    assert_eq!(
        run(&["fuzz", "--upstreams", "2", "--policy", "x.json"]),
        Some(2)
    );
}

/// `tollgate naive-upstream --log FILE` over stdio runs (and logs) every message that looks
/// like `tools/call`, a notification and a case variant included, and answers the rest.
#[test]
fn naive_upstream_runs_whatever_looks_like_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("naive.jsonl");
    let mut child = crate::util::tollgate()
        .args(["naive-upstream", "--log", log.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":"i","method":"initialize","params":{{"protocolVersion":"2025-06-18","clientInfo":{{"name":"me"}}}}}}"#
    )
    .unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"Tools/Call","params":{{"name":"delete_file","arguments":{{"path":"/x"}}}}}}"#
    )
    .unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"ping"}}"#).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let answers = String::from_utf8(out.stdout).unwrap();
    assert_eq!(answers.lines().count(), 2, "{answers}");
    let ran = tollgate_wire_fuzz::naive::read_log(&log).unwrap();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].tool, "delete_file");
    assert_eq!(ran[0].id, None);
    assert_eq!(ran[0].facts.client.as_deref(), Some("me"));
}

/// Found with the fuzzer's answer check: stateless (2026-07-28) clients of one grant share one
/// gateway session over HTTP, and its answers go to the first request in flight with the same
/// id, whichever client sent it: one client gets the other's answer (here a `ping`'s), and the
/// other gets the first one's tool result. (It depends on which POST reaches the session
/// first, so the case runs five times.)
#[test]
fn stateless_clients_of_one_grant_get_their_own_answers() {
    let meta = |n: usize| {
        format!(
            r#""_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{{"name":"fuzz-c{n}","version":"1"}}}}"#
        )
    };
    let call = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{"path":"/srv/a.txt"}},{}}}}}"#,
        meta(0)
    );
    let ping = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{{}}}}}"#,
        meta(1)
    );
    // The two POSTs race to the session: a few tries catch the order that crosses them.
    let broken = broken_in_tries(
        5,
        &[(0, V2026_07_28), (0, V2026_07_28)],
        &[(0, false, &call), (1, true, &ping)],
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Found by the million-message run: a batch none of whose items is an object (`[[]]`) is
/// answered at once with errors without an id; that answer went to another request in flight
/// of the session (here the call waiting for the tool listing), whose own answer was lost. The
/// POSTs race: three tries.
#[test]
fn a_batch_of_non_objects_is_answered_on_its_own_post() {
    let broken = broken_in_tries(
        3,
        &[(0, V2025_03_26)],
        &[
            (
                0,
                false,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a.txt"}}}"#,
            ),
            (0, true, "[[]]"),
        ],
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Found by the million-message run: a 2025-03-26 batch with a call held for the tool listing
/// and an item that is not a valid message is answered at once with that item's error without
/// an id; the error went to another request in flight rather than waiting with the batch for
/// the held call's answer. The POSTs race: three tries.
#[test]
fn a_batchs_error_without_an_id_stays_with_its_batch() {
    let broken = broken_in_tries(
        3,
        &[(0, V2025_03_26)],
        &[
            (
                0,
                false,
                r#"[{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"send_email","arguments":{}}},{"jsonrpc":null,"method":"tools//call","params":{"name":"send_email"}}]"#,
            ),
            (0, true, r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#),
        ],
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Found by the million-message run: a batch whose request id 3 was answered at once (refused)
/// while its other requests waited, and a later request reusing id 3: the later request's
/// answer went to the batch (which already had its answer for 3), and the later POST hung.
#[test]
fn a_reused_id_answered_already_does_not_take_a_later_answer() {
    let broken = broken_in_tries(
        3,
        &[(0, V2025_03_26)],
        &[
            (
                0,
                false,
                r#"[{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":""}},{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":null}},{"jsonrpc":"2.0","id":0,"method":"tools/call","params":{"name":"list_dir","arguments":null}}]"#,
            ),
            (0, true, r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#),
        ],
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Found by the million-message run: two 2025-03-26 batches in flight that share a reused id
/// (1); the second's answers, which come together, went to the first batch's request because
/// it also waited for an id 1.
#[test]
fn a_batchs_answers_go_to_the_batch_they_answer() {
    let broken = broken_in_tries(
        3,
        &[(0, V2025_03_26)],
        &[
            (
                0,
                false,
                r#"[{"id":1,"method":"tools/call","params":null},{"jsonrpc":"2.0","id":"a","method":"completion/complete"}]"#,
            ),
            (
                0,
                true,
                r#"[{"jsonrpc":"2.0","id":1e3,"method":"tools/call"},{"jsonrpc":"2.0","id":1,"method":"notifications/cancelled"},{"jsonrpc":"2.0","id":4,"method":"ping"}]"#,
            ),
        ],
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
