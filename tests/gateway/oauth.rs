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

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use super::{ALLOW_ALL, call, initialize, lines_of, rt, start_gateway_http, write};
use crate::mock_eks::{Guard, python, start_http, start_listening};
use crate::util::{root, tollgate};

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
    crate::util::assert_audit_verifies(&audit);
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

/// `[auth.oauth]` of a config file does what the flags do: its relative `jwks` file is found
/// from the config's folder; no token and a token for another audience are refused (401), a
/// token without a grant is 403, a valid one opens a session and calls under the claim's grant.
/// Given both ways (the table and `--oauth-issuer`), the gateway does not start (exit 2).
#[test]
fn the_config_table_refuses_and_admits_as_the_flags_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let (signing, jwk) = key("k1");
    write(
        &dir.path().join("keys"),
        "jwks.json",
        &json!({"keys": [jwk]}).to_string(),
    );
    write(dir.path(), "p.json", ALLOW_ALL);
    let audit = dir.path().join("audit.jsonl");
    let (_mock, mock_url) = start_http(&[]);
    let aud = "https://gateway.test/mcp";
    let config = write(
        dir.path(),
        "tollgate.toml",
        &format!(
            "policy = \"p.json\"\naudit = \"audit.jsonl\"\n[listen]\naddr = \"127.0.0.1:0\"\n[auth.oauth]\nissuer = \"{ISS}\"\naudience = \"{aud}\"\njwks = \"keys/jwks.json\"\ngrant_claim = \"tollgate_grant\"\n[[upstream]]\nname = \"eks\"\nurl = \"{mock_url}\"\n"
        ),
    );
    let (_gw, url) = start_listening(&["gateway", "--config", &config]);
    let claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = json!({"iss": ISS, "aud": aud, "sub": "alice", "exp": now() + 300, "iat": now(), "tollgate_grant": "analyst"});
        edit(&mut c);
        c
    };
    let good = token(&signing, "k1", &claims(&|_| {}));
    let other_audience = token(
        &signing,
        "k1",
        &claims(&|c| c["aud"] = json!("https://other.test/mcp")),
    );
    let no_grant = token(
        &signing,
        "k1",
        &claims(&|c| {
            c.as_object_mut().unwrap().remove("tollgate_grant");
        }),
    );
    rt().block_on(async {
        let http = reqwest::Client::new();
        for (t, status) in [
            (None, 401),
            (Some(other_audience.as_str()), 401),
            (Some(no_grant.as_str()), 403),
        ] {
            let r = post(&http, &url, t, &initialize(0)).await;
            assert_eq!(r.status(), status, "{t:?}");
        }
        let r = post(&http, &url, Some(&good), &initialize(0)).await;
        assert_eq!(r.status(), 200);
        let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let answer: Value = http
            .post(&url)
            .bearer_auth(&good)
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
    });
    let records = lines_of(&audit);
    let grants: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "decision")
        .map(|r| &r["grant"])
        .collect();
    assert_eq!(grants, [&json!("analyst")]);
    let out = tollgate()
        .args(["gateway", "--config", &config, "--oauth-issuer", ISS])
        .args([
            "--oauth-audience",
            aud,
            "--jwks",
            "j.json",
            "--grant-claim",
            "g",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`[auth.oauth]` both set it"), "{stderr}");
}

/// npm `oidc-provider` (pinned in .ci/node; scripts/test-all.sh installs it). A missing one
/// fails the test: nothing is skipped.
fn oidc_provider() -> String {
    std::env::var("TOLLGATE_TEST_OIDC_PROVIDER").unwrap_or_else(|_| {
        let dir = root().join(".ci/node/node_modules/oidc-provider");
        assert!(dir.exists(), "TOLLGATE_TEST_OIDC_PROVIDER is not set and .ci/node is not installed: run `bash scripts/test-all.sh`");
        dir.to_string_lossy().into_owned()
    })
}

/// tests/oauth/idp.mjs on an ephemeral loopback port, for `audience`: the process and its
/// issuer.
fn start_idp(audience: &str, alg: &str) -> (Guard, String) {
    let mut child = Command::new("node")
        .arg(root().join("tests/oauth/idp.mjs"))
        .args([&oidc_provider(), audience, alg])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("idp.mjs said {line:?}: {e}"));
    (Guard(child), started["issuer"].as_str().unwrap().to_owned())
}

/// A loopback port free a moment ago: the audience (the URL clients reach `/mcp` at) must be
/// known before the gateway starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn python_client(url: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(root().join("tests/oauth/oauth_client.py"))
        .args(["--url", url])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oauth_client.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A real authorization server (oidc-provider) issues JWT access tokens for the gateway's
/// resource: one from the client_credentials grant carries the Python SDK's calls through the
/// gateway under the scope's grant; then the SDK's own OAuth client, given nothing but the URL,
/// follows the 401 to the protected-resource metadata and the authorization server, registers,
/// completes the authorization-code flow with PKCE and the resource indicator, and calls the
/// tool. A token for another resource is refused for its audience.
#[test]
fn oidc_provider_tokens_work_through_the_gateway_and_the_sdk_logs_in_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.json", ALLOW_ALL);
    let audit = dir.path().join("audit.jsonl");
    let port = free_port();
    let audience = format!("http://127.0.0.1:{port}/mcp");
    let (_idp, issuer) = start_idp(&audience, "ES256");
    let (_other_idp, other_issuer) = start_idp("http://127.0.0.1:1/mcp", "RS256");
    let (_mock, mock_url) = start_http(&[]);
    let (_gw, url) = start_listening(&[
        "gateway",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--policy",
        &policy,
        "--audit",
        audit.to_str().unwrap(),
        "--oauth-issuer",
        &issuer,
        "--oauth-audience",
        &audience,
        "--jwks",
        &format!("{issuer}/jwks"),
        "--grant-scope",
        "eks:admin=operator",
        "--grant-scope",
        "eks:read=analyst",
        "--upstream-url",
        &mock_url,
    ]);
    assert_eq!(url, audience);
    let token = |issuer: &str, resource: &str| -> Value {
        rt().block_on(async {
            reqwest::Client::new()
                .post(format!("{issuer}/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "agent"),
                    ("client_secret", "agent-secret-0000000000"),
                    ("scope", "eks:read"),
                    ("resource", resource),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };
    let issued = token(&issuer, &audience);
    let access = issued["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{issued}"));
    let seen = python_client(&url, &["--token", access]);
    assert_eq!(seen["is_error"], false, "{seen}");

    // The SDK's own OAuth client, from nothing but the URL.
    let seen = python_client(&url, &["--login"]);
    assert_eq!(seen["is_error"], false, "{seen}");
    assert_eq!(seen["resource"], audience, "{seen}");
    assert_eq!(
        seen["authorization_servers"],
        json!([issuer.clone()]),
        "{seen}"
    );
    let authorize = seen["authorization_url"].as_str().unwrap();
    assert!(
        authorize.contains("code_challenge_method=S256") && authorize.contains("resource="),
        "{authorize}"
    );
    let login_token = seen["access_token"].as_str().unwrap();
    assert_eq!(
        login_token.split('.').count(),
        3,
        "a JWT access token: {login_token}"
    );

    // A token of another authorization server, for another resource: refused, audited.
    let foreign = token(&other_issuer, "http://127.0.0.1:1/mcp");
    let foreign = foreign["access_token"].as_str().unwrap().to_owned();
    rt().block_on(async {
        let r = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&foreign)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(initialize(0).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        // Its `kid` (rsa-1) is also the other server's: the signature is what fails.
        assert!(
            challenge.contains("does not verify")
                || challenge.contains("not in the authorization server"),
            "{challenge}"
        );
    });
    let records = lines_of(&audit);
    let grants: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "decision")
        .map(|r| &r["grant"])
        .collect();
    // client_credentials asked for eks:read; the login asked for every scope the metadata
    // lists, so the first mapping it has (eks:admin) names its grant.
    assert_eq!(
        grants,
        [&json!("analyst"), &json!("operator")],
        "{records:?}"
    );
    assert!(records.iter().any(|r| r["kind"] == "auth_refused"));
    assert!(!std::fs::read_to_string(&audit).unwrap().contains(&foreign));
}

/// `--admin-oauth-scope`: an access token with the scope is an approver (`oauth:SUB`) on the
/// admin API, and makes no calls at /mcp; an agent's access token is refused at /admin with
/// what scope it lacks. A held call is approved with an access token and reaches the tool.
#[test]
fn an_access_token_with_the_admin_scope_approves_held_calls() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "p.json",
        r#"{"version": "1", "default": "allow", "tools": {"get_eks_insights": {"action": "require_approval", "approval": {"timeout": "30s"}}}}"#,
    );
    let (signing, jwk) = key("k1");
    let jwks = write(dir.path(), "jwks.json", &json!({"keys": [jwk]}).to_string());
    let audit = dir.path().join("audit.jsonl");
    let (_mock, mock_url) = start_http(&[]);
    let aud = "https://gateway.test/mcp";
    let (_gw, url) = start_gateway_http(&[
        "--policy",
        &policy,
        "--audit",
        audit.to_str().unwrap(),
        "--oauth-issuer",
        ISS,
        "--oauth-audience",
        aud,
        "--jwks",
        &jwks,
        "--grant-scope",
        "eks:read=analyst",
        "--admin-oauth-scope",
        "tollgate:admin",
        "--upstream-url",
        &mock_url,
    ]);
    let base = url.trim_end_matches("/mcp").to_owned();
    let with_scope = |sub: &str, scope: &str| {
        token(
            &signing,
            "k1",
            &json!({"iss": ISS, "aud": aud, "sub": sub, "exp": now() + 300, "scope": scope}),
        )
    };
    let agent = with_scope("agent-7", "eks:read");
    let admin = with_scope("ops-bob", "tollgate:admin");
    rt().block_on(async {
        let http = reqwest::Client::new();
        // The approver's token makes no calls.
        let r = post(&http, &url, Some(&admin), &initialize(0)).await;
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("works on /admin and /ui only")
        );
        // The agent's token approves nothing.
        let r = http
            .get(format!("{base}/admin/approvals"))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("needs the scope `tollgate:admin`"),
            "{body}"
        );

        let r = post(&http, &url, Some(&agent), &initialize(0)).await;
        assert_eq!(r.status(), 200);
        let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let held = {
            let (http, url, agent, session) =
                (http.clone(), url.clone(), agent.clone(), session.clone());
            tokio::spawn(async move {
                http.post(&url)
                    .bearer_auth(&agent)
                    .header("mcp-session-id", &session)
                    .header("accept", "application/json, text/event-stream")
                    .header("content-type", "application/json")
                    .body(
                        call(1, "get_eks_insights", json!({"cluster_name": "prod-eks"}))
                            .to_string(),
                    )
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        };
        let mut id = None;
        for _ in 0..200 {
            let list: Value = http
                .get(format!("{base}/admin/approvals"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(list["approver"], "oauth:ops-bob", "{list}");
            if let Some(p) = list["pending"].as_array().and_then(|p| p.first()) {
                id = Some(p["id"].as_u64().unwrap());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let id = id.unwrap_or_else(|| panic!("the call is not held within 10 s"));
        let r = http
            .post(format!("{base}/admin/approvals/{id}/approve"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let answer = tokio::time::timeout(std::time::Duration::from_secs(20), held)
            .await
            .unwrap()
            .unwrap();
        assert!(answer["result"].is_object(), "{answer}");
    });
    let records = lines_of(&audit);
    let approval = records.iter().find(|r| r["kind"] == "approval").unwrap();
    assert_eq!(approval["approver"], "oauth:ops-bob");
    assert_eq!(approval["verdict"], "approved");
}
