//! The gateway as an OAuth 2.1 resource server (docs/auth.md), with a key made here: the
//! protected-resource metadata, a 401 that points at it, JWT access tokens mapped to grants
//! beside a `--tokens` file, and every refused token answered with its reason and audited
//! without the token.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{ALLOW_ALL, call, initialize, lines_of, rt, start_gateway_http, write};
use crate::mock_eks::start_http;
use crate::util::tollgate;

const ISS: &str = "https://idp.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An Ed25519 key made here: its signing key and its public JWK.
fn key(kid: &str) -> (EncodingKey, Value) {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::try_from(i).unwrap() ^ kid.len() as u8 ^ 0x5a;
    }
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = sk.to_pkcs8_der().unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes())});
    (EncodingKey::from_ed_der(der.as_bytes()), jwk)
}

fn token(key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// A client with no token is told where the metadata is; the metadata names the audience and
/// the issuer; a JWT with a mapped scope opens a session and calls a tool under its grant, and
/// a `--tokens` token still works beside it; each bad token gets its status, its `error` and a
/// description, and is audited without the token; the log verifies.
#[test]
fn jwt_access_tokens_reach_tools_and_bad_ones_are_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.json", ALLOW_ALL);
    let (signing, jwk) = key("k1");
    let jwks = write(dir.path(), "jwks.json", &json!({"keys": [jwk]}).to_string());
    let tokens = write(dir.path(), "tokens", "ci-bot-token-000000 ci-bot\n");
    let audit = dir.path().join("audit.jsonl");
    let (_mock, mock_url) = start_http(&[]);
    let aud = "https://gateway.test/mcp";
    let (_gw, url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--audit",
        audit.to_str().unwrap(),
        "--tokens",
        &tokens,
        "--oauth-issuer",
        ISS,
        "--oauth-audience",
        aud,
        "--jwks",
        &jwks,
        "--grant-scope",
        "eks:read=analyst",
        "--upstream-url",
        &mock_url,
    ]);
    let base = url.trim_end_matches("/mcp").to_owned();
    let claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = json!({"iss": ISS, "aud": aud, "sub": "alice", "exp": now() + 300, "iat": now(), "scope": "openid eks:read"});
        edit(&mut c);
        c
    };
    let good = token(&signing, "k1", &claims(&|_| {}));
    rt().block_on(async {
        let http = reqwest::Client::new();
        // Discovery: the 401 names the metadata, which names the issuer.
        let r = post(&http, &url, None, &initialize(0)).await;
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer resource_metadata=\"https://gateway.test/.well-known/oauth-protected-resource/mcp\""
        );
        for path in ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"] {
            let m: Value = http.get(format!("{base}{path}")).send().await.unwrap().json().await.unwrap();
            assert_eq!(m["resource"], aud, "{path}");
            assert_eq!(m["authorization_servers"], json!([ISS]), "{path}");
            assert_eq!(m["scopes_supported"], json!(["eks:read"]), "{path}");
        }

        // A valid token: a session, and a call decided under the scope's grant.
        for t in [good.as_str(), "ci-bot-token-000000"] {
            let r = post(&http, &url, Some(t), &initialize(0)).await;
            assert_eq!(r.status(), 200, "{t}");
            let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
            let answer: Value = http
                .post(&url)
                .bearer_auth(t)
                .header("mcp-session-id", &session)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .body(call(1, "get_eks_insights", json!({"cluster_name": "prod-eks"})).to_string())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(answer["result"].is_object(), "{answer}");
        }

        // Bad tokens: each its status, error and description.
        let (other, _) = key("k2-other");
        let cases = [
            ("expired", token(&signing, "k1", &claims(&|c| c["exp"] = json!(now() - 120))), 401, "invalid_token", "expired at"),
            ("audience", token(&signing, "k1", &claims(&|c| c["aud"] = json!("https://other.test/mcp"))), 401, "invalid_token", "request a token with resource `https://gateway.test/mcp`"),
            ("issuer", token(&signing, "k1", &claims(&|c| c["iss"] = json!("https://evil.test"))), 401, "invalid_token", "issued by `https://evil.test`"),
            ("unknown kid", token(&other, "k9", &claims(&|_| {})), 401, "invalid_token", "key `k9` is not in"),
            ("signature", token(&other, "k1", &claims(&|_| {})), 401, "invalid_token", "signature does not verify"),
            ("malformed", "not-a-listed-token-nor-a-jwt".to_owned(), 401, "invalid_token", "not a JWT"),
            ("no grant", token(&signing, "k1", &claims(&|c| c["scope"] = json!("openid"))), 403, "insufficient_scope", "gives no grant"),
        ];
        for (what, t, status, error, says) in &cases {
            let r = post(&http, &url, Some(t), &initialize(0)).await;
            assert_eq!(r.status(), *status, "{what}");
            let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(challenge.starts_with("Bearer resource_metadata=\"https://gateway.test/.well-known/oauth-protected-resource/mcp\""), "{what}: {challenge}");
            assert!(challenge.contains(&format!("error=\"{error}\"")), "{what}: {challenge}");
            assert!(challenge.contains(says), "{what}: {challenge}");
            let body: Value = r.json().await.unwrap();
            assert!(body["error"]["message"].as_str().unwrap().contains(says), "{what}: {body}");
        }
        let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        for reason in ["missing", "expired", "audience", "issuer", "unknown_kid", "signature", "malformed", "no_grant"] {
            assert!(
                metrics.contains(&format!("tollgate_http_auth_refused_total{{reason=\"{reason}\"}} 1")),
                "{reason}: {metrics}"
            );
        }
        // Every refusal's audit record holds its reason, never the token.
        let records = lines_of(&audit);
        let refused: Vec<&Value> = records.iter().filter(|r| r["kind"] == "auth_refused").collect();
        assert_eq!(refused.len(), cases.len(), "{records:?}");
        for ((what, t, status, _, _), r) in cases.iter().zip(&refused) {
            assert_eq!(r["status"], *status, "{what}");
            assert!(!r.to_string().contains(t.as_str()), "{what}: the token is in the log");
        }
        let grants: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision").map(|r| &r["grant"]).collect();
        assert_eq!(grants, [&json!("analyst"), &json!("ci-bot")]);
    });
    let out = tollgate()
        .args(["audit", "verify", audit.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Flags that cannot work are exit 2 with what to do: no way to pick a grant, OAuth without
/// `--listen`, an unreadable JWKS file.
#[test]
fn oauth_flags_that_cannot_work_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.json", ALLOW_ALL);
    let jwks = write(
        dir.path(),
        "jwks.json",
        &json!({"keys": [key("k1").1]}).to_string(),
    );
    let base = [
        "gateway",
        "--policy",
        &policy,
        "--oauth-issuer",
        ISS,
        "--oauth-audience",
        "https://g.test/mcp",
    ];
    for (extra, says) in [
        (
            vec!["--listen", "127.0.0.1:0", "--jwks", &jwks],
            "--grant-claim NAME",
        ),
        (
            vec!["--jwks", &jwks, "--grant-claim", "g"],
            "add `--listen ADDR`",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--jwks",
                "/nonexistent/jwks.json",
                "--grant-claim",
                "g",
            ],
            "cannot read the JWKS file `/nonexistent/jwks.json`",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--jwks",
                &jwks,
                "--grant-scope",
                "nogrant",
            ],
            "expected SCOPE=GRANT",
        ),
    ] {
        let out = tollgate()
            .args(base)
            .args(&extra)
            .args(["--upstream-url", "http://127.0.0.1:9/mcp"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
}
