//! `subscriptions/listen` for the stateless protocol (2026-07-28) over HTTP: the one way that
//! protocol delivers change notifications, since it has no GET stream. The gateway answers it
//! itself (it is not forwarded): the POST's answer is an SSE stream that starts with
//! `notifications/subscriptions/acknowledged` and then carries the grant's stateless session's
//! `notifications/tools/list_changed` (a reload that changes what the client may see), each
//! tagged with the subscription's id (the listen request's own id). Only `toolsListChanged` is
//! honoured: the acknowledgment says so, and no other notification reaches the stream (the
//! specification forbids types the client did not ask for). The stream takes the place of the
//! session's GET stream: one per grant session, a new listen replaces the old. On shutdown the
//! listen request gets its completion result, then the stream ends.

use std::sync::{Arc, PoisonError};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::{GetStream, InUse, SessionHandle, stopped};

/// The `_meta` key that names the subscription a message belongs to.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The id and filter of a `subscriptions/listen` request, if `body` is one (a single request
/// with a string or integer id, `jsonrpc: "2.0"`, read by the strict parser: a body it refuses,
/// a duplicated key for one, goes on to the session, which answers it with its error).
pub(super) fn listen_request(body: &[u8]) -> Option<(Value, bool)> {
    if !super::may_contain(body, b"subscriptions/listen") {
        return None;
    }
    let v = tollgate_mcp::strict::parse_strict(std::str::from_utf8(body).ok()?).ok()?;
    if v.get("jsonrpc").and_then(Value::as_str) != Some("2.0")
        || v.get("method").and_then(Value::as_str) != Some("subscriptions/listen")
    {
        return None;
    }
    let id = v.get("id")?;
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return None;
    }
    let tools = v["params"]["notifications"]["toolsListChanged"] == true;
    Some((id.clone(), tools))
}

/// What a listen stream carries of `v`, a server-to-client message of its session: a
/// `tools/list_changed` when the client asked for it, tagged with the subscription's id;
/// nothing else.
pub(super) fn on_stream(subscription: &Value, tools: bool, v: &Value) -> Option<Value> {
    if !tools || v.get("method").and_then(Value::as_str) != Some("notifications/tools/list_changed")
    {
        return None;
    }
    let mut v = v.clone();
    v["params"]["_meta"][SUBSCRIPTION_ID] = subscription.clone();
    Some(v)
}

/// Opens the listen stream `id` on the stateless session `handle` and answers the POST with it.
pub(super) fn open(
    handle: &SessionHandle,
    in_use: InUse,
    id: Value,
    tools: bool,
    queue: usize,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(queue.max(1));
    let overflowed = Arc::new(Notify::new());
    let honoured = if tools {
        json!({"toolsListChanged": true})
    } else {
        json!({})
    };
    let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
        "params": {"_meta": {SUBSCRIPTION_ID: id}, "notifications": honoured}});
    let done = json!({"jsonrpc": "2.0", "id": id,
        "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID: id}}});
    *handle.stream.lock().unwrap_or_else(PoisonError::into_inner) = Some(GetStream {
        tx,
        overflowed: Arc::clone(&overflowed),
        listen: Some((id, tools)),
    });
    let event = |v: &Value| Bytes::from(tollgate_mcp::sse::encode_event(&v.to_string(), None));
    let first = event(&ack);
    let last = event(&done);
    // The acknowledgment, then the session's events until the client leaves, the stream is
    // replaced or overflows (an error: the client sees it break), or the gateway stops (the
    // completion result, then the end).
    let state = (Some(first), rx, overflowed, shutdown, in_use, Some(last));
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let (first, mut rx, overflowed, mut shutdown, in_use, last) = state?;
        if let Some(first) = first {
            return Some((
                Ok(first),
                Some((None, rx, overflowed, shutdown, in_use, last)),
            ));
        }
        tokio::select! {
            biased;
            () = overflowed.notified() => Some((
                Err(std::io::Error::other("the client left its stream's queue full")),
                None,
            )),
            event = rx.recv() => {
                event.map(|e| (Ok(e), Some((None, rx, overflowed, shutdown, in_use, last))))
            }
            () = stopped(&mut shutdown) => last.map(|l| (Ok(l), None)),
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listen_request_with_a_valid_id_is_taken() {
        let listen = br#"{"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen", "params": {"notifications": {"toolsListChanged": true}}}"#;
        assert_eq!(listen_request(listen), Some((json!(7), true)));
        let no_tools =
            br#"{"jsonrpc": "2.0", "id": "a", "method": "subscriptions/listen", "params": {}}"#;
        assert_eq!(listen_request(no_tools), Some((json!("a"), false)));
        let null_id = br#"{"jsonrpc": "2.0", "id": null, "method": "subscriptions/listen"}"#;
        assert_eq!(listen_request(null_id), None);
        let batch = br#"[{"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen"}]"#;
        assert_eq!(listen_request(batch), None);
        let other = br#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": "subscriptions/listen"}}"#;
        assert_eq!(listen_request(other), None);
        // The session's strict parser refuses these; they are left to it.
        let twice = br#"{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "method": "subscriptions/listen"}"#;
        assert_eq!(listen_request(twice), None);
        let old = br#"{"jsonrpc": "1.0", "id": 1, "method": "subscriptions/listen"}"#;
        assert_eq!(listen_request(old), None);
    }

    #[test]
    fn a_listen_stream_carries_only_tagged_tools_list_changed() {
        let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        assert_eq!(
            on_stream(&json!(3), true, &changed),
            Some(
                json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                "params": {"_meta": {SUBSCRIPTION_ID: 3}}})
            )
        );
        assert_eq!(on_stream(&json!(3), false, &changed), None);
        let other = json!({"jsonrpc": "2.0", "method": "notifications/resources/list_changed"});
        assert_eq!(on_stream(&json!(3), true, &other), None);
    }
}
