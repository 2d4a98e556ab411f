//! Server-Sent Events framing for Streamable HTTP answers: `event: message` and one `data:`
//! line per line of the JSON text, ended by a blank line; and the reverse, for clients.

/// One SSE event carrying a JSON-RPC message.
pub fn encode_event(json: &str, id: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: message\n");
    for line in json.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The `data` payloads of every `message` event in an SSE stream (comments and other events
/// are skipped).
pub fn decode_events(stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in stream.replace("\r\n", "\n").split("\n\n") {
        let mut event = "message";
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        // An event with an empty `data` carries no message: servers send one first to prime
        // resumption (an `id` to reconnect from), and some send keep-alives.
        let joined = data.join("\n");
        if event == "message" && !joined.trim().is_empty() {
            out.push(joined);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let a = encode_event("{\"a\":1}", Some("7"));
        let b = encode_event("{\n\"b\":2\n}", None);
        assert_eq!(
            decode_events(&format!(": comment\n\n{a}{b}")),
            ["{\"a\":1}", "{\n\"b\":2\n}"]
        );
    }
}
