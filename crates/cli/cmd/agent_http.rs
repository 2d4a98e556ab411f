//! The agent's side of Streamable HTTP, for the commands that play agents against a real
//! gateway (`demo`, `test --live`): one JSON-RPC message per POST, JSON answers.

use anyhow::Context;
use serde_json::Value;

/// POSTs one message as the agent holding `token` (in `session`, if it has one); returns the
/// session id the gateway gave (on `initialize`) and the answer (`null` for none: a
/// notification). The agent accepts JSON answers only, so the gateway waits for the answer
/// itself rather than streaming server messages before it.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    body: String,
) -> anyhow::Result<(Option<String>, Value)> {
    let mut request = http
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = session {
        request = request.header("mcp-session-id", s);
    }
    let r = request
        .send()
        .await
        .context("the gateway cannot be reached")?;
    let sid = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("the gateway's answer is not JSON: {text}"))?
    };
    Ok((sid, value))
}

/// Opens a session: `initialize` (the message given), then `notifications/initialized`;
/// returns the session id.
pub async fn open_session(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    initialize: String,
    agent: &str,
) -> anyhow::Result<String> {
    let (sid, _) = post(http, url, token, None, initialize).await?;
    let sid = sid.with_context(|| format!("the gateway opened no session for agent `{agent}`"))?;
    post(
        http,
        url,
        token,
        Some(&sid),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned(),
    )
    .await?;
    Ok(sid)
}
