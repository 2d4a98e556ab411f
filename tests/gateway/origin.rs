//! The `Origin` check of the HTTP front (DNS rebinding; docs/security.md, "Origin"): a request
//! without `Origin` or from this machine goes on, one from another site is 403 with a message
//! naming the origin and `--allow-origin`, and `--allow-origin` lets in exactly the origins it
//! names. `*` is refused without `--tokens` (exit 2).

use reqwest::StatusCode;
use serde_json::Value;

use super::{ALLOW_ALL, initialize, rt, start_gateway_http, write};
use crate::mock_eks::start_http;
use crate::util::tollgate;

/// `initialize` with this `Origin` (none: `None`): the status and the body.
async fn initialize_from(
    http: &reqwest::Client,
    url: &str,
    origin: Option<&str>,
) -> (StatusCode, Value) {
    let mut r = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(initialize(1).to_string());
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    let r = r.send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[test]
fn allow_origin_lets_in_exactly_the_origins_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    let (_mock, mock_url) = start_http(&[]);
    let (_default, default_url) =
        start_gateway_http(&["--policy", &policy, "--upstream-url", &mock_url]);
    let (_allowing, allowing_url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--allow-origin",
        "https://app.example.com",
        "--allow-origin",
        "http://192.168.1.5:8080",
        "--upstream-url",
        &mock_url,
    ]);
    rt().block_on(async {
        let http = reqwest::Client::new();
        for url in [&default_url, &allowing_url] {
            for origin in [
                None,
                Some("http://localhost:6274"),
                Some("http://127.0.0.1:3000"),
            ] {
                let (status, body) = initialize_from(&http, url, origin).await;
                assert_eq!(status, 200, "{origin:?} at {url}: {body}");
                assert!(body["result"]["serverInfo"].is_object(), "{body}");
            }
        }
        // Without --allow-origin, another site's page is refused, and told what would let it in.
        let (status, body) =
            initialize_from(&http, &default_url, Some("https://app.example.com")).await;
        assert_eq!(status, 403);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("Origin `https://app.example.com` is not a local address")
                && message.contains("--allow-origin"),
            "{message}"
        );
        // With it, the named origins go on (as a browser writes them), the others are refused.
        for ok in ["https://app.example.com", "http://192.168.1.5:8080"] {
            let (status, body) = initialize_from(&http, &allowing_url, Some(ok)).await;
            assert_eq!(status, 200, "{ok}: {body}");
        }
        for refused in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://evil.example",
            "http://192.168.1.5",
            "null",
        ] {
            let (status, _) = initialize_from(&http, &allowing_url, Some(refused)).await;
            assert_eq!(status, 403, "{refused}");
        }
    });
}

/// `--allow-origin *` without bearer tokens would let any web page call the tools through the
/// user's browser: exit 2, saying why and what to do instead; a value that is not an origin is
/// exit 2 too.
#[test]
fn allow_origin_star_without_tokens_and_a_bad_origin_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "allow.json", ALLOW_ALL);
    for (value, says) in [
        ("*", "DNS rebinding"),
        ("app.example.com", "is not an origin"),
        ("https://app.example.com/ui", "is not an origin"),
    ] {
        let out = tollgate()
            .args([
                "gateway",
                "--policy",
                &policy,
                "--listen",
                "127.0.0.1:0",
                "--allow-origin",
                value,
                "--upstream-url",
                "http://127.0.0.1:9/mcp",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{value}: {stderr}");
    }
}
