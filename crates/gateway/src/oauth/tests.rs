//! Token validation with keys made here (RSA, P-256, Ed25519): every rejection, the leeway's
//! edges, the grant, and the JWKS fetch from a loopback server (timeout, size, refresh rate).

#![expect(clippy::unwrap_used, reason = "tests fail by panicking")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::*;

const ISS: &str = "https://idp.test";
const AUD: &str = "https://gateway.test/mcp";
const NOW: u64 = 1_800_000_000;

/// A signing key made in the test, with its public JWK.
#[derive(Clone)]
struct Signer {
    alg: Algorithm,
    kid: Option<String>,
    enc: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

/// One RSA key per test binary (2048-bit generation is the slow part).
fn rsa_key() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static KEY: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        use rsa::{Generate, PrivateKey};
        let key = PrivateKey::generate();
        let der = key.to_pkcs1_der().unwrap().as_bytes().to_vec();
        let public = key.to_public_key();
        (der, public.n_bytes().to_vec(), public.e_bytes().to_vec())
    })
}

fn rsa_signer(kid: &str) -> Signer {
    let (der, n, e) = rsa_key();
    Signer {
        alg: Algorithm::RS256,
        kid: Some(kid.into()),
        enc: EncodingKey::from_rsa_der(der),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(n), "e": b64(e)}),
    }
}

fn ec_signer(kid: &str) -> Signer {
    use p256::pkcs8::EncodePrivateKey;
    let sk = p256::ecdsa::SigningKey::from_slice(&random::<32>()).unwrap();
    let der = sk.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let point = sk.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    Signer {
        alg: Algorithm::ES256,
        kid: Some(kid.into()),
        enc: EncodingKey::from_ec_der(&der),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&bytes[1..33]), "y": b64(&bytes[33..65])}),
    }
}

fn ed_signer(kid: &str) -> Signer {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let sk = ed25519_dalek::SigningKey::from_bytes(&random::<32>());
    let der = sk.to_pkcs8_der().unwrap().as_bytes().to_vec();
    Signer {
        alg: Algorithm::EdDSA,
        kid: Some(kid.into()),
        enc: EncodingKey::from_ed_der(&der),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(sk.verifying_key().as_bytes())}),
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "exp": NOW + 300, "iat": NOW, "sub": "alice", "client_id": "agent-1", "scope": "openid eks:read"})
}

fn sign_with(s: &Signer, typ: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(s.alg);
    h.typ = typ.map(str::to_owned);
    h.kid = s.kid.clone();
    jsonwebtoken::encode(&h, claims, &s.enc).unwrap()
}

fn sign(s: &Signer, claims: &Value) -> String {
    sign_with(s, Some("at+jwt"), claims)
}

/// A token from raw header and claims, with a signature of `sig` bytes.
fn raw(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

fn config(jwks: &str) -> OAuthConfig {
    let mut c = OAuthConfig::new(ISS, AUD, jwks);
    c.grant_scopes = vec![
        ScopeGrant {
            scope: "eks:admin".into(),
            grant: "operator".into(),
        },
        ScopeGrant {
            scope: "eks:read".into(),
            grant: "analyst".into(),
        },
    ];
    c.grant_claim = Some("tollgate_grant".into());
    c
}

/// A resource server reading `keys` from a JWKS file.
fn server_with(keys: &[&Signer]) -> (OAuth, tempfile::TempDir) {
    server_config(keys, |_| {})
}

fn server_config(
    keys: &[&Signer],
    edit: impl FnOnce(&mut OAuthConfig),
) -> (OAuth, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let jwks = json!({"keys": keys.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(&path, jwks.to_string()).unwrap();
    let mut c = config(&path.to_string_lossy());
    edit(&mut c);
    (OAuth::new(c).unwrap(), dir)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn check(server: &OAuth, token: &str, now: u64) -> Result<Principal, AuthFailure> {
    rt().block_on(server.validate(token, now))
}

#[test]
fn each_accepted_algorithm_verifies_and_maps_its_scope_to_a_grant() {
    for s in [rsa_signer("r1"), ec_signer("e1"), ed_signer("d1")] {
        let (server, _dir) = server_with(&[&s]);
        let p = check(&server, &sign(&s, &claims()), NOW).unwrap();
        assert_eq!(p.grant, "analyst", "{:?}", s.alg);
        assert_eq!(p.subject.as_deref(), Some("alice"));
        assert_eq!(p.client_id.as_deref(), Some("agent-1"));
        // `typ: JWT` is accepted as well as RFC 9068's `at+jwt`.
        assert!(check(&server, &sign_with(&s, Some("JWT"), &claims()), NOW).is_ok());
    }
}

/// The claim names the grant when present; otherwise the first mapped scope the token has (in
/// the order configured); a valid token with neither gets 403 `insufficient_scope`.
#[test]
fn the_grant_comes_from_the_claim_then_the_scopes_in_order() {
    let s = ed_signer("d1");
    let (server, _dir) = server_with(&[&s]);
    let mut c = claims();
    c["tollgate_grant"] = json!("ci-bot");
    assert_eq!(check(&server, &sign(&s, &c), NOW).unwrap().grant, "ci-bot");
    let mut c = claims();
    c["scope"] = json!("eks:read eks:admin");
    assert_eq!(
        check(&server, &sign(&s, &c), NOW).unwrap().grant,
        "operator"
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["eks:read"]);
    assert_eq!(check(&server, &sign(&s, &c), NOW).unwrap().grant, "analyst");

    let mut c = claims();
    c["scope"] = json!("openid profile");
    let e = check(&server, &sign(&s, &c), NOW).unwrap_err();
    assert_eq!(
        (e.status(), e.error_code()),
        (403, Some("insufficient_scope"))
    );
    assert!(
        e.to_string()
            .contains("`tollgate_grant` claim or one of the scopes eks:admin, eks:read"),
        "{e}"
    );
    let challenge = e.challenge(
        "http://g/.well-known/oauth-protected-resource/mcp",
        &server.mapped_scopes(),
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"eks:admin eks:read\""),
        "{challenge}"
    );

    for bad in [json!(["a", "b"]), json!("has space"), json!(""), json!(7)] {
        let mut c = claims();
        c["tollgate_grant"] = bad.clone();
        let e = check(&server, &sign(&s, &c), NOW).unwrap_err();
        assert_eq!(e.reason(), "no_grant", "{bad}");
        assert!(e.to_string().contains("a grant is a string"), "{e}");
    }
}

/// Every kind of bad token: its status, its `error` code and its reason, and never a panic.
#[test]
fn each_bad_token_is_refused_with_its_own_reason() {
    let rsa = rsa_signer("r1");
    let ec = ec_signer("e1");
    let (server, _dir) = server_with(&[&rsa, &ec]);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        sign(&ec, &c)
    };
    let good = sign(&ec, &claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, sig) = rest.split_once('.').unwrap();
    // Claims of another subject under the original signature.
    let mut forged_claims = claims();
    forged_claims["tollgate_grant"] = json!("operator");
    let tampered = format!("{h}.{}.{sig}", b64(forged_claims.to_string().as_bytes()));
    let other_key = ec_signer("e1"); // the same kid, another key
    let (_, n, _) = rsa_key();
    let hs_header = Header {
        kid: Some("r1".into()),
        typ: Some("at+jwt".into()),
        ..Header::new(Algorithm::HS256)
    };
    // The HMAC-with-public-key trick: the RSA modulus, and the JWK text, as the shared secret.
    let hmac_with_n =
        jsonwebtoken::encode(&hs_header, &claims(), &EncodingKey::from_secret(n).unwrap()).unwrap();
    let hmac_with_jwk = jsonwebtoken::encode(
        &hs_header,
        &claims(),
        &EncodingKey::from_secret(rsa.jwk.to_string().as_bytes()).unwrap(),
    )
    .unwrap();
    let none = raw(&json!({"alg": "none", "typ": "at+jwt"}), &claims(), b"");
    let none_caps = raw(
        &json!({"alg": "NONE", "typ": "at+jwt", "kid": "r1"}),
        &claims(),
        b"",
    );
    // An RS256 token checked against the EC key of its kid: the algorithm does not suit the key.
    let rsa_as_ec = {
        let mut h = Header::new(Algorithm::RS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some("e1".into());
        jsonwebtoken::encode(&h, &claims(), &rsa.enc).unwrap()
    };
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(NOW - 61)),
            401,
            "expired",
            "expired at",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(NOW + 61)),
            401,
            "not_yet_valid",
            "not valid before",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("https://other.test/mcp")),
            401,
            "audience",
            "request a token with resource `https://gateway.test/mcp`",
        ),
        (
            "audience list without ours",
            with(&|c| c["aud"] = json!(["a", "b"])),
            401,
            "audience",
            "not this gateway",
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            401,
            "missing_claim",
            "no `aud` claim",
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
            401,
            "issuer",
            "issued by `https://evil.test`",
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            401,
            "missing_claim",
            "no `exp` claim",
        ),
        (
            "exp not a number",
            with(&|c| c["exp"] = json!("soon")),
            401,
            "malformed",
            "`exp` is not a number",
        ),
        (
            "tampered claims",
            tampered,
            401,
            "signature",
            "does not verify",
        ),
        (
            "another key, same kid",
            sign(&other_key, &claims()),
            401,
            "signature",
            "does not verify",
        ),
        (
            "rs256 against an ec key",
            rsa_as_ec,
            401,
            "signature",
            "does not verify",
        ),
        (
            "unknown kid",
            sign(&ec_signer("e9"), &claims()),
            401,
            "unknown_kid",
            "`e9` is not in",
        ),
        ("alg none", none, 401, "algorithm", "`none`"),
        ("alg NONE", none_caps, 401, "algorithm", "`NONE`"),
        (
            "hs256 with the modulus",
            hmac_with_n,
            401,
            "algorithm",
            "`HS256`",
        ),
        (
            "hs256 with the jwk",
            hmac_with_jwk,
            401,
            "algorithm",
            "`HS256`",
        ),
        (
            "typ dpop",
            sign_with(&ec, Some("dpop+jwt"), &claims()),
            401,
            "type",
            "`dpop+jwt`",
        ),
        (
            "typ id token",
            sign_with(&ec, None, &claims()),
            401,
            "type",
            "`typ` is missing",
        ),
        (
            "crit",
            raw(
                &json!({"alg": "ES256", "typ": "at+jwt", "kid": "e1", "crit": ["exp"]}),
                &claims(),
                b"x",
            ),
            401,
            "critical",
            "`crit`",
        ),
        (
            "two parts",
            "abc.def".into(),
            401,
            "malformed",
            "three base64url parts",
        ),
        (
            "not base64",
            format!("{h}.{p}.{sig}!"),
            401,
            "malformed",
            "three base64url parts",
        ),
        (
            "header not json",
            format!("{}.{p}.{sig}", b64(b"[1,2")),
            401,
            "malformed",
            "header is not a JSON object",
        ),
        (
            "claims not json",
            format!("{h}.{}.{sig}", b64(b"nope")),
            401,
            "signature",
            "does not verify",
        ),
        (
            "too large",
            format!("{h}.{}.{sig}", "A".repeat(MAX_TOKEN_BYTES)),
            401,
            "too_large",
            "at most 8192",
        ),
    ];
    for (what, token, status, reason, says) in cases {
        let e = check(&server, &token, NOW).unwrap_err();
        assert_eq!((e.status(), e.reason()), (status, reason), "{what}: {e}");
        assert_eq!(e.error_code(), Some("invalid_token"), "{what}");
        assert!(e.to_string().contains(says), "{what}: {e}");
        let c = e.challenge("http://g/.well-known/oauth-protected-resource/mcp", &[]);
        assert!(c.starts_with("Bearer resource_metadata=\"http://g/.well-known/oauth-protected-resource/mcp\", error=\"invalid_token\", error_description=\""), "{what}: {c}");
        assert!(!c[7..].contains('\\') && c.is_ascii(), "{what}: {c}");
    }
}

/// `exp`: accepted until `exp + leeway` (exclusive); `nbf`: from `nbf - leeway` (inclusive).
#[test]
fn leeway_edges_are_exact() {
    let s = ed_signer("d1");
    let (server, _dir) = server_config(&[&s], |c| c.leeway_secs = 60);
    let mut c = claims();
    c["exp"] = json!(NOW);
    c["nbf"] = json!(NOW);
    let t = sign(&s, &c);
    assert!(check(&server, &t, NOW + 59).is_ok());
    assert_eq!(
        check(&server, &t, NOW + 60).unwrap_err().reason(),
        "expired"
    );
    assert!(check(&server, &t, NOW - 60).is_ok());
    assert_eq!(
        check(&server, &t, NOW - 61).unwrap_err().reason(),
        "not_yet_valid"
    );
    let (strict, _dir2) = server_config(&[&s], |c| c.leeway_secs = 0);
    let mut c = claims();
    c["exp"] = json!(NOW + 1);
    let t = sign(&s, &c);
    assert!(check(&strict, &t, NOW).is_ok());
    assert_eq!(check(&strict, &t, NOW + 1).unwrap_err().reason(), "expired");
    // A fractional NumericDate counts by its whole seconds.
    let mut c = claims();
    c["exp"] = json!(NOW as f64 + 0.5);
    assert!(check(&strict, &sign(&s, &c), NOW - 1).is_ok());
}

/// Keys the JWKS lists that cannot verify an accepted token are skipped: encryption keys,
/// symmetric keys, a key whose `alg` is not the one its type gives, P-384.
#[test]
fn unusable_jwks_keys_are_skipped() {
    let ec = ec_signer("e1");
    let mut enc = ed_signer("enc").jwk;
    enc["use"] = json!("enc");
    let mut wrong_alg = ec_signer("ps").jwk;
    wrong_alg["alg"] = json!("RS256");
    let oct = json!({"kty": "oct", "kid": "hmac", "k": b64(b"0123456789abcdef0123456789abcdef")});
    let doc = json!({"keys": [enc, wrong_alg, oct, {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}, {"kty": "weird"}, ec.jwk]});
    let (set, skipped) = parse_jwks(doc.to_string().as_bytes()).unwrap();
    assert_eq!(skipped, 5);
    assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), ["e1"]);
    let e = parse_jwks(br#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#).unwrap_err();
    assert!(
        e.contains("no RS256, ES256 (P-256) or EdDSA (Ed25519) signing key"),
        "{e}"
    );
    assert!(parse_jwks(b"[]").unwrap_err().contains("`keys` list"));
    // An HS256 token naming the symmetric key is refused for its algorithm, before any key.
    let hs = {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some("hmac".into());
        jsonwebtoken::encode(
            &h,
            &claims(),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
        )
        .unwrap()
    };
    let (server, _dir) = server_with(&[&ec]);
    assert_eq!(check(&server, &hs, NOW).unwrap_err().reason(), "algorithm");
}

/// A token without `kid` is checked against the keys of its algorithm.
#[test]
fn a_token_without_kid_is_tried_against_the_keys_of_its_algorithm() {
    let mut a = ed_signer("a");
    a.kid = None;
    let b = ed_signer("b");
    let mut b_no_kid = b.clone();
    b_no_kid.kid = None;
    let (server, _dir) = server_with(&[&a, &b]);
    assert!(check(&server, &sign(&a, &claims()), NOW).is_ok());
    assert!(check(&server, &sign(&b_no_kid, &claims()), NOW).is_ok());
    let mut c = ed_signer("c");
    c.kid = None;
    assert_eq!(
        check(&server, &sign(&c, &claims()), NOW)
            .unwrap_err()
            .reason(),
        "signature"
    );
}

#[test]
fn metadata_names_the_audience_and_the_issuer() {
    let s = ed_signer("d1");
    let (server, _dir) = server_config(&[&s], |c| c.admin_scope = Some("tollgate:admin".into()));
    let m = server.metadata();
    assert_eq!(m["resource"], AUD);
    assert_eq!(m["authorization_servers"], json!([ISS]));
    assert_eq!(
        m["scopes_supported"],
        json!(["eks:admin", "eks:read", "tollgate:admin"])
    );
    assert_eq!(
        server.metadata_url(Some("ignored:1")),
        "https://gateway.test/.well-known/oauth-protected-resource/mcp"
    );
    for (aud, host, url) in [
        (
            "http://127.0.0.1:8080/mcp",
            None,
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp",
        ),
        (
            "https://g.example/",
            None,
            "https://g.example/.well-known/oauth-protected-resource",
        ),
        (
            "api://tollgate",
            Some("127.0.0.1:9"),
            "http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp",
        ),
        (
            "api://tollgate",
            Some("evil\"host"),
            "http://localhost/.well-known/oauth-protected-resource/mcp",
        ),
    ] {
        let (server, _dir) = server_config(&[&s], |c| c.audience = aud.into());
        assert_eq!(server.metadata_url(host), url, "{aud}");
    }
}

#[test]
fn config_reads_from_serde_with_defaults_and_refuses_unknown_keys() {
    let c: OAuthConfig = serde_json::from_value(json!({
        "issuer": ISS, "audience": AUD, "jwks": "/x.json", "grant_claim": "g",
        "grant_scopes": [{"scope": "a", "grant": "b"}]
    }))
    .unwrap();
    assert_eq!(c.leeway_secs, 60);
    assert_eq!(c.jwks_refresh_interval_secs, 30);
    assert_eq!(c.jwks_max_bytes, 256 * 1024);
    let e = serde_json::from_value::<OAuthConfig>(
        json!({"issuer": ISS, "audience": AUD, "jwks": "x", "leway_secs": 1}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `leway_secs`"), "{e}");
    let e = OAuth::new(OAuthConfig::new(ISS, AUD, "x")).unwrap_err();
    assert!(
        e.contains("--grant-claim NAME") && e.contains("--grant-scope SCOPE=GRANT"),
        "{e}"
    );
    assert_eq!(
        parse_scope_grant("eks:read=analyst").unwrap().grant,
        "analyst"
    );
    assert!(
        parse_scope_grant("eks:read")
            .unwrap_err()
            .contains("expected SCOPE=GRANT")
    );
}

#[test]
fn the_admin_scope_names_an_approver() {
    let s = ed_signer("d1");
    let (server, _dir) = server_config(&[&s], |c| c.admin_scope = Some("tollgate:admin".into()));
    let mut c = claims();
    c["scope"] = json!("tollgate:admin");
    assert_eq!(
        rt().block_on(server.validate_admin(&sign(&s, &c), NOW))
            .unwrap(),
        "oauth:alice"
    );
    let e = rt()
        .block_on(server.validate_admin(&sign(&s, &claims()), NOW))
        .unwrap_err();
    assert_eq!((e.status(), e.reason()), (403, "no_grant"));
    assert!(
        e.to_string().contains("needs the scope `tollgate:admin`"),
        "{e}"
    );
}

// --- The JWKS over HTTP, from a loopback server. ---

#[derive(Clone, Default)]
struct Idp {
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

/// Serves `/jwks` (the current document, counting fetches), `/slow` (never within the test's
/// timeout), `/big` (a declared length over the bound) and `/trickle` (no length, too long).
async fn start_idp(idp: Idp) -> String {
    use axum::routing::get;
    let router = axum::Router::new()
        .route(
            "/jwks",
            get(
                |axum::extract::State(idp): axum::extract::State<Idp>| async move {
                    idp.hits.fetch_add(1, Ordering::SeqCst);
                    idp.jwks.lock().unwrap().to_string()
                },
            ),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        )
        .route("/big", get(|| async { "x".repeat(4096) }))
        .route(
            "/trickle",
            get(|| async {
                let chunks = futures::stream::iter(
                    (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 256]))),
                );
                axum::body::Body::from_stream(chunks)
            }),
        )
        .route(
            "/status",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down") }),
        )
        .with_state(idp);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn http_server(base: &str, path: &str, edit: impl FnOnce(&mut OAuthConfig)) -> OAuth {
    let mut c = config(&format!("{base}{path}"));
    edit(&mut c);
    OAuth::new(c).unwrap()
}

/// A fetch that does not finish within `jwks_timeout_ms`, one larger than `jwks_max_bytes`
/// (declared or not) and an error status each fail with what happened; a token meanwhile gets
/// 503 (the gateway cannot check it), not 401.
#[test]
fn jwks_fetch_is_bounded_in_time_and_size() {
    rt().block_on(async {
        let base = start_idp(Idp::default()).await;
        let started = std::time::Instant::now();
        let slow = http_server(&base, "/slow", |c| c.jwks_timeout_ms = 300);
        let e = slow.refresh().await.unwrap_err();
        assert!(
            e.contains("/slow") && (e.contains("300 ms") || e.contains("timed out")),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        let s = ed_signer("d1");
        let e = slow.validate(&sign(&s, &claims()), NOW).await.unwrap_err();
        assert_eq!(
            (e.status(), e.reason(), e.error_code()),
            (503, "keys_unavailable", None)
        );

        for path in ["/big", "/trickle"] {
            let big = http_server(&base, path, |c| c.jwks_max_bytes = 1024);
            let e = big.refresh().await.unwrap_err();
            assert!(
                e.contains("larger than 1024 bytes (jwks_max_bytes)"),
                "{path}: {e}"
            );
        }
        let down = http_server(&base, "/status", |_| {});
        assert!(
            down.refresh()
                .await
                .unwrap_err()
                .contains("answered HTTP 500")
        );
    });
}

/// An unknown `kid` refetches the JWKS (a rotated key is found), but at most once per refresh
/// interval: a flood of tokens with made-up kids costs the authorization server one fetch.
#[test]
fn an_unknown_kid_refetches_at_most_once_per_interval() {
    rt().block_on(async {
        let old = ed_signer("old");
        let new = ed_signer("new");
        let idp = Idp::default();
        *idp.jwks.lock().unwrap() = json!({"keys": [old.jwk]});
        let base = start_idp(idp.clone()).await;
        let server = http_server(&base, "/jwks", |c| c.jwks_refresh_interval_secs = 1);
        assert_eq!(server.refresh().await.unwrap(), 1);
        assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
        assert!(server.validate(&sign(&old, &claims()), NOW).await.is_ok());

        // The authorization server rotates its key; within the interval the gateway does not
        // ask again.
        *idp.jwks.lock().unwrap() = json!({"keys": [old.jwk, new.jwk]});
        for i in 0..20 {
            let e = server
                .validate(&sign(&ed_signer(&format!("x{i}")), &claims()), NOW)
                .await
                .unwrap_err();
            assert_eq!(e.reason(), "unknown_kid");
        }
        assert_eq!(
            server
                .validate(&sign(&new, &claims()), NOW)
                .await
                .unwrap_err()
                .reason(),
            "unknown_kid"
        );
        assert_eq!(idp.hits.load(Ordering::SeqCst), 1);

        // After the interval, one unknown kid fetches once and finds the new key.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(server.validate(&sign(&new, &claims()), NOW).await.is_ok());
        assert_eq!(idp.hits.load(Ordering::SeqCst), 2);
        for i in 0..20 {
            let _ = server
                .validate(&sign(&ed_signer(&format!("y{i}")), &claims()), NOW)
                .await;
        }
        assert_eq!(idp.hits.load(Ordering::SeqCst), 2);
    });
}

/// The keys are fetched on the first token when none were fetched at start, and refetched when
/// older than `jwks_max_age_secs`; a failed refetch keeps the keys held.
#[test]
fn keys_are_fetched_lazily_and_kept_when_a_refetch_fails() {
    rt().block_on(async {
        let s = ed_signer("d1");
        let idp = Idp::default();
        *idp.jwks.lock().unwrap() = json!({"keys": [s.jwk]});
        let base = start_idp(idp.clone()).await;
        let server = http_server(&base, "/jwks", |c| {
            c.jwks_max_age_secs = 1;
            c.jwks_refresh_interval_secs = 1;
        });
        assert!(server.validate(&sign(&s, &claims()), NOW).await.is_ok());
        assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
        *idp.jwks.lock().unwrap() = json!("broken");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(server.validate(&sign(&s, &claims()), NOW).await.is_ok());
        assert_eq!(idp.hits.load(Ordering::SeqCst), 2);
    });
}

/// A token with the admin scope is an approver's: refused at /mcp even when it also has a
/// grant, as an `--admin-tokens` token is.
#[test]
fn an_admin_scoped_token_makes_no_calls() {
    let s = ed_signer("d1");
    let (server, _dir) = server_config(&[&s], |c| c.admin_scope = Some("tollgate:admin".into()));
    let mut c = claims();
    c["scope"] = json!("eks:read tollgate:admin");
    let e = check(&server, &sign(&s, &c), NOW).unwrap_err();
    assert_eq!((e.status(), e.reason()), (401, "admin_token"));
    assert!(
        e.to_string().contains("works on /admin and /ui only"),
        "{e}"
    );
}
