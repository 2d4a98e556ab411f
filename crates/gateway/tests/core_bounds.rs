//! The session core's own bounds (docs/security.md, "Limits"): an upstream that never lists its
//! tools, or lists them forever, and a client that keeps calls in flight without end. Driven
//! by hand (no mock): the test plays the upstream.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_gateway::core::{
    Gateway, GatewayOptions, MAX_LIST_PAGES, MIN_LIST_TIMEOUT, Out, SessionCore,
};
use tollgate_policy::{Engine, MemoryStore, Policy};

const POLICY: &str = r#"{"version": "1", "default": "allow"}"#;

fn core(options: GatewayOptions) -> SessionCore {
    let policy = Policy::parse("policy.json", POLICY).unwrap_or_else(|d| panic!("{d}"));
    let engine = Engine::new(Arc::new(policy), Arc::new(MemoryStore::new()));
    Gateway::new(engine, None, options).session("ci-bot", "s1")
}

fn call(id: u64) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "t", "arguments": {}}})
        .to_string()
        .into_bytes()
}

fn upstream(outs: &[Out]) -> Vec<&Value> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Upstream(v) => Some(v),
            Out::Client(_) => None,
        })
        .collect()
}

fn client(outs: &[Out]) -> Vec<&Value> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Client(v) => Some(v),
            Out::Upstream(_) => None,
        })
        .collect()
}

/// The hang: a call made before the tool list was known waited for the gateway's own
/// `tools/list`, and an upstream that never answered it left the call unanswered forever. Now
/// the listing has a deadline (the call timeout, at least `MIN_LIST_TIMEOUT`, since the first
/// listing also waits for the upstream to start): the waiting calls get an error, nothing is
/// forwarded.
#[test]
fn calls_waiting_for_a_tool_list_that_never_comes_are_answered() {
    let mut core = core(GatewayOptions {
        call_timeout: Duration::from_secs(5),
        ..GatewayOptions::default()
    });
    let outs = core.from_client(&call(1), Duration::ZERO);
    assert_eq!(upstream(&outs)[0]["method"], "tools/list");
    let deadline = MIN_LIST_TIMEOUT;
    assert_eq!(core.next_deadline(), Some(deadline));
    assert!(core.tick(deadline - Duration::from_secs(1)).is_empty());
    let outs = core.tick(deadline);
    let answers = client(&outs);
    assert_eq!(answers.len(), 1, "{outs:?}");
    assert_eq!(answers[0]["id"], 1);
    assert_eq!(answers[0]["error"]["code"], -32603);
    assert!(upstream(&outs).is_empty());
    // The next call lists again.
    let outs = core.from_client(&call(2), deadline + Duration::from_secs(1));
    assert_eq!(upstream(&outs)[0]["method"], "tools/list");
}

/// An upstream that answers every page of `tools/list` with another `nextCursor` is listed at
/// most `MAX_LIST_PAGES` times; the waiting call is then decided on what was listed.
#[test]
fn a_tool_list_without_end_is_read_for_a_bounded_number_of_pages() {
    let mut core = core(GatewayOptions::default());
    let mut outs = core.from_client(&call(1), Duration::ZERO);
    let mut pages = 0;
    while let Some(id) = upstream(&outs)
        .into_iter()
        .find(|m| m["method"] == "tools/list")
        .map(|m| m["id"].clone())
    {
        pages += 1;
        assert!(pages <= MAX_LIST_PAGES, "listed past the bound");
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": {
            "tools": [{"name": "t", "inputSchema": {"type": "object"}}],
            "nextCursor": format!("page-{pages}"),
        }});
        outs = core.from_upstream(answer.to_string().as_bytes(), Duration::ZERO);
    }
    assert_eq!(pages, MAX_LIST_PAGES);
    let forwarded = upstream(&outs);
    assert_eq!(forwarded.len(), 1, "the call went on: {outs:?}");
    assert_eq!(forwarded[0]["method"], "tools/call");
}

/// A client that keeps calls in flight against a slow upstream made the session hold state
/// for each without end. Past `max_in_flight` the next call is refused as a tool error (the
/// agent reads why) and nothing more is forwarded; an answer frees a place.
#[test]
fn calls_in_flight_per_session_are_bounded() {
    let mut core = core(GatewayOptions {
        max_in_flight: 3,
        ..GatewayOptions::default()
    });
    let outs = core.from_client(&call(1), Duration::ZERO);
    let list = upstream(&outs)[0].clone();
    let answer = json!({"jsonrpc": "2.0", "id": list["id"], "result": {"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}});
    core.from_upstream(answer.to_string().as_bytes(), Duration::ZERO);
    for id in 2..=3 {
        let outs = core.from_client(&call(id), Duration::ZERO);
        assert_eq!(upstream(&outs).len(), 1);
    }
    let outs = core.from_client(&call(4), Duration::ZERO);
    assert!(upstream(&outs).is_empty());
    let refusal = client(&outs)[0];
    assert_eq!(refusal["result"]["isError"], true);
    assert_eq!(
        refusal["result"]["_meta"]["dev.tollgate/decision"]["decision"],
        "too_many_in_flight"
    );
    let done = json!({"jsonrpc": "2.0", "id": 2, "result": {"content": []}});
    core.from_upstream(done.to_string().as_bytes(), Duration::ZERO);
    let outs = core.from_client(&call(5), Duration::ZERO);
    assert_eq!(upstream(&outs).len(), 1, "{outs:?}");
}
