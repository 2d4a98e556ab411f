//! The OAuth 2.1 resource server (docs/auth.md): JWT access tokens (RFC 9068) validated against
//! the authorization server's JWKS, the grant read from a claim or mapped from a scope, and the
//! protected-resource metadata (RFC 9728) a spec-following MCP client discovers the
//! authorization server from.
//!
//! What this module owns:
//! - [`OAuthConfig`], the settings (serde, so a config file's `[auth.oauth]` table can embed
//!   it; the single-upstream form fills it from `--oauth-*` flags);
//! - [`OAuth::validate`], one token checked in a fixed order: its size, its shape, its header
//!   (`alg` on the allow-list RS256/ES256/EdDSA, `typ` `at+jwt` or `JWT`, no `crit`), the key of
//!   its `kid` (the JWKS refetched on an unknown `kid` at most once per
//!   [`OAuthConfig::jwks_refresh_interval_secs`]), the signature (the `jsonwebtoken` crate's
//!   RustCrypto backend: nothing here is cryptography), then `iss`, `aud`, `exp` and `nbf` with
//!   the leeway, and finally the grant;
//! - [`AuthFailure`], what went wrong, as the status, the `error` code and the description a
//!   `WWW-Authenticate` challenge carries ([`AuthFailure::challenge`]);
//! - [`OAuth::metadata`], the protected-resource metadata document.
//!
//! Time is passed in: [`OAuth::validate`] takes the Unix time (seconds) it checks `exp` and
//! `nbf` against, so the leeway's edges are tested exactly; the JWKS refresh's rate limit reads
//! tokio's clock (paused in tests).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// The longest access token accepted, in bytes (larger ones are refused before any parsing).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The most keys a JWKS may list (the rest are ignored, with a warning).
pub const MAX_JWKS_KEYS: usize = 64;

/// A grant name read from a token: printable ASCII with no space, at most this long.
pub const MAX_GRANT_CHARS: usize = 128;

/// The algorithms accepted. HMAC (`HS*`) never: its key would be the JWKS's public key, which
/// anyone can read (the "HMAC with the public key" forgery); `none` never.
pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

fn default_leeway() -> u64 {
    60
}
fn default_refresh_interval() -> u64 {
    30
}
fn default_max_age() -> u64 {
    600
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_bytes() -> usize {
    256 * 1024
}

/// A scope (or group) that maps to a grant: `--grant-scope SCOPE=GRANT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeGrant {
    pub scope: String,
    pub grant: String,
}

/// The resource server's settings (`[auth.oauth]`; flags `--oauth-issuer`, `--oauth-audience`,
/// `--jwks`, `--grant-claim`, `--grant-scope`, `--oauth-leeway`, `--admin-oauth-scope`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The authorization server's issuer identifier: a token's `iss` must equal it exactly.
    pub issuer: String,
    /// This gateway's resource indicator (RFC 8707): a token's `aud` must contain it. An
    /// `http(s)` URL (the gateway's `/mcp` as clients reach it) also places the metadata URL.
    pub audience: String,
    /// Where the signing keys are: an `http://` or `https://` URL, or a file path.
    pub jwks: String,
    /// The claim that names the grant (a string), tried first.
    #[serde(default)]
    pub grant_claim: Option<String>,
    /// Scopes mapped to grants, tried in this order when the claim gives none (`scope`, a
    /// space-separated string, or `scp`, a list).
    #[serde(default)]
    pub grant_scopes: Vec<ScopeGrant>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// A token with this scope is an approver on the admin API (named by its `sub`).
    #[serde(default)]
    pub admin_scope: Option<String>,
    /// The least time between two fetches of the JWKS caused by an unknown `kid`, in seconds.
    #[serde(default = "default_refresh_interval")]
    pub jwks_refresh_interval_secs: u64,
    /// The JWKS is fetched again when a token arrives this long after the last fetch, in
    /// seconds (a failed fetch keeps the keys held).
    #[serde(default = "default_max_age")]
    pub jwks_max_age_secs: u64,
    /// The bound on one fetch of the JWKS (connect, send, read), in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// The largest JWKS document read, in bytes.
    #[serde(default = "default_max_bytes")]
    pub jwks_max_bytes: usize,
}

impl OAuthConfig {
    /// The settings with every optional one at its default.
    pub fn new(issuer: &str, audience: &str, jwks: &str) -> OAuthConfig {
        OAuthConfig {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            jwks: jwks.to_owned(),
            grant_claim: None,
            grant_scopes: Vec::new(),
            leeway_secs: default_leeway(),
            admin_scope: None,
            jwks_refresh_interval_secs: default_refresh_interval(),
            jwks_max_age_secs: default_max_age(),
            jwks_timeout_ms: default_timeout_ms(),
            jwks_max_bytes: default_max_bytes(),
        }
    }

    /// A setting that cannot work, said as the flag's user should fix it.
    pub fn check(&self) -> Result<(), String> {
        if self.issuer.trim().is_empty() {
            return Err("`--oauth-issuer` is empty: give the authorization server's issuer identifier (its `iss`)".into());
        }
        if self.audience.trim().is_empty() {
            return Err("`--oauth-audience` is empty: give this gateway's resource indicator (the URL clients reach `/mcp` at)".into());
        }
        if self.grant_claim.is_none() && self.grant_scopes.is_empty() {
            return Err("OAuth needs a way to pick a grant: `--grant-claim NAME` (a claim naming the grant) or `--grant-scope SCOPE=GRANT` (repeatable)".into());
        }
        for m in &self.grant_scopes {
            if m.scope.is_empty() || m.scope.contains(char::is_whitespace) {
                return Err(format!(
                    "`--grant-scope {}={}`: a scope is one word with no spaces",
                    m.scope, m.grant
                ));
            }
            if !valid_grant(&m.grant) {
                return Err(format!(
                    "`--grant-scope {}={}`: a grant is 1 to {MAX_GRANT_CHARS} printable ASCII characters with no space",
                    m.scope, m.grant
                ));
            }
        }
        if self.jwks_max_bytes == 0 || self.jwks_timeout_ms == 0 {
            return Err("the JWKS fetch needs a timeout and a size above zero".into());
        }
        Ok(())
    }
}

/// Parses one `--grant-scope SCOPE=GRANT`.
pub fn parse_scope_grant(text: &str) -> Result<ScopeGrant, String> {
    match text.split_once('=') {
        Some((scope, grant)) if !scope.is_empty() && !grant.is_empty() => Ok(ScopeGrant {
            scope: scope.to_owned(),
            grant: grant.to_owned(),
        }),
        _ => Err(format!(
            "`{text}`: expected SCOPE=GRANT, e.g. `--grant-scope eks:read=analyst`"
        )),
    }
}

fn valid_grant(g: &str) -> bool {
    !g.is_empty() && g.len() <= MAX_GRANT_CHARS && g.bytes().all(|b| b.is_ascii_graphic())
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The grant its calls are decided under.
    pub grant: String,
    /// Its `sub`, if any.
    pub subject: Option<String>,
    /// Its `client_id` (or `azp`), if any.
    pub client_id: Option<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
}

/// Why a token was refused: the HTTP status, the RFC 6750 `error` code, a short reason for the
/// audit log and metrics, and the description the client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("present a bearer token (Authorization: Bearer TOKEN)")]
    Missing,
    #[error("the access token is {0} bytes long; at most {MAX_TOKEN_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the access token is not a JWT: {0}")]
    Malformed(String),
    #[error("the access token's `typ` is {0}; an access token is `at+jwt` (RFC 9068) or `JWT`")]
    Type(String),
    #[error("the access token's `alg` is `{0}`; accepted: RS256, ES256, EdDSA")]
    Algorithm(String),
    #[error("the access token's header has `crit` ({0}); no critical extension is understood here")]
    Critical(String),
    #[error(
        "the access token's key `{0}` is not in the authorization server's JWKS (refetched at most every few seconds); get a new token"
    )]
    UnknownKey(String),
    #[error("the access token's signature does not verify with the authorization server's key")]
    Signature,
    #[error("the access token expired at {exp} (Unix time; now {now}, leeway {leeway} s)")]
    Expired { exp: u64, now: u64, leeway: u64 },
    #[error("the access token is not valid before {nbf} (Unix time; now {now}, leeway {leeway} s)")]
    NotYetValid { nbf: u64, now: u64, leeway: u64 },
    #[error("the access token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error(
        "the access token was issued by `{found}`; this gateway accepts tokens of `{expected}`"
    )]
    Issuer { found: String, expected: String },
    #[error(
        "the access token is for audience {found}, not this gateway (`{expected}`): request a token with resource `{expected}`"
    )]
    Audience { found: String, expected: String },
    #[error("{0}")]
    NoGrant(String),
    #[error(
        "the access token has the admin scope `{0}`: it works on /admin and /ui only; an agent needs a token without it"
    )]
    AdminToken(String),
    #[error("the gateway cannot check access tokens: {0}")]
    KeysUnavailable(String),
}

impl AuthFailure {
    /// 401 for a missing or invalid token, 403 for a valid one without a grant, 503 when the
    /// gateway has no keys to check with.
    pub fn status(&self) -> u16 {
        match self {
            AuthFailure::NoGrant(_) => 403,
            AuthFailure::KeysUnavailable(_) => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 `error` code (none when no token was presented, as §3.1 says).
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            AuthFailure::Missing | AuthFailure::KeysUnavailable(_) => None,
            AuthFailure::NoGrant(_) => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// A short name for the audit log and the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::TooLarge(_) => "too_large",
            AuthFailure::Malformed(_) => "malformed",
            AuthFailure::Type(_) => "type",
            AuthFailure::Algorithm(_) => "algorithm",
            AuthFailure::Critical(_) => "critical",
            AuthFailure::UnknownKey(_) => "unknown_kid",
            AuthFailure::Signature => "signature",
            AuthFailure::Expired { .. } => "expired",
            AuthFailure::NotYetValid { .. } => "not_yet_valid",
            AuthFailure::MissingClaim(_) => "missing_claim",
            AuthFailure::Issuer { .. } => "issuer",
            AuthFailure::Audience { .. } => "audience",
            AuthFailure::NoGrant(_) => "no_grant",
            AuthFailure::AdminToken(_) => "admin_token",
            AuthFailure::KeysUnavailable(_) => "keys_unavailable",
        }
    }

    /// The `WWW-Authenticate` value: `Bearer resource_metadata="…"`, then `error`,
    /// `error_description` and (403) the `scope` that would do.
    pub fn challenge(&self, metadata_url: &str, scopes: &[String]) -> String {
        let mut v = format!("Bearer resource_metadata=\"{}\"", quoted(metadata_url));
        if let Some(code) = self.error_code() {
            v.push_str(&format!(", error=\"{code}\""));
            v.push_str(&format!(
                ", error_description=\"{}\"",
                quoted(&self.to_string())
            ));
        }
        if matches!(self, AuthFailure::NoGrant(_)) && !scopes.is_empty() {
            v.push_str(&format!(", scope=\"{}\"", quoted(&scopes.join(" "))));
        }
        v
    }
}

/// Text made safe inside a quoted-string of a header: printable ASCII except `"` and `\`, at
/// most 300 characters.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .take(300)
        .collect()
}

/// Whether a presented bearer token has a JWT's shape (three base64url parts), so that a
/// token of a `--tokens` file, which does not, is never mistaken for one.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One usable signing key.
#[derive(Clone)]
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?})", self.alg)
    }
}

/// The keys of one JWKS document.
#[derive(Debug, Default)]
struct KeySet {
    by_kid: BTreeMap<String, Key>,
    /// Keys without a `kid`: tried in turn for a token without one.
    anonymous: Vec<Key>,
    /// When these keys were fetched.
    fetched_at: Option<Instant>,
}

impl KeySet {
    fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.anonymous.is_empty()
    }
}

/// A JWKS document read into usable keys: signing keys of an accepted algorithm; the others
/// (encryption keys, symmetric keys, other curves) are skipped and counted.
fn parse_jwks(bytes: &[u8]) -> Result<(KeySet, usize), String> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<Value>,
    }
    let doc: Doc = serde_json::from_slice(bytes)
        .map_err(|e| format!("the JWKS is not a JSON object with a `keys` list: {e}"))?;
    let mut set = KeySet::default();
    let mut skipped = 0;
    for raw in doc.keys.into_iter().take(MAX_JWKS_KEYS) {
        let Some((kid, key)) = usable_key(raw) else {
            skipped += 1;
            continue;
        };
        match kid {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.anonymous.push(key),
        }
    }
    if set.by_kid.is_empty() && set.anonymous.is_empty() {
        return Err(format!(
            "the JWKS has no RS256, ES256 (P-256) or EdDSA (Ed25519) signing key ({skipped} skipped)"
        ));
    }
    Ok((set, skipped))
}

fn usable_key(raw: Value) -> Option<(Option<String>, Key)> {
    let jwk: Jwk = serde_json::from_value(raw).ok()?;
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| !matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature))
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        // Symmetric keys never verify anything here; other curves are not on the list.
        _ => return None,
    };
    // A key that names its algorithm is used for that one only.
    if let Some(named) = common.key_algorithm {
        let same = matches!(
            (named, alg),
            (jsonwebtoken::jwk::KeyAlgorithm::RS256, Algorithm::RS256)
                | (jsonwebtoken::jwk::KeyAlgorithm::ES256, Algorithm::ES256)
                | (jsonwebtoken::jwk::KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !same {
            return None;
        }
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((common.key_id.clone(), Key { alg, key }))
}

/// Where the JWKS comes from.
#[derive(Debug, Clone)]
enum Source {
    Url(reqwest::Url),
    File(PathBuf),
}

/// When a fetch of the keys was last tried.
#[derive(Debug, Default)]
struct Fetches {
    last_attempt: Option<Instant>,
}

/// The resource server: settings, the JWKS cache and its fetcher.
#[derive(Debug)]
pub struct OAuth {
    config: OAuthConfig,
    source: Source,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching, so that concurrent requests with an unknown `kid` fetch once.
    fetches: tokio::sync::Mutex<Fetches>,
}

impl OAuth {
    /// The resource server for `config` (checked); the keys are fetched by [`OAuth::refresh`]
    /// or on the first token.
    pub fn new(config: OAuthConfig) -> Result<OAuth, String> {
        config.check()?;
        let source = if config.jwks.starts_with("http://") || config.jwks.starts_with("https://") {
            Source::Url(
                reqwest::Url::parse(&config.jwks)
                    .map_err(|e| format!("`--jwks {}`: not a URL: {e}", config.jwks))?,
            )
        } else {
            Source::File(PathBuf::from(&config.jwks))
        };
        let timeout = Duration::from_millis(config.jwks_timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot make the JWKS client: {e}"))?;
        Ok(OAuth {
            config,
            source,
            client,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetches: tokio::sync::Mutex::new(Fetches::default()),
        })
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// Fetches the JWKS now (at start, or when asked); the keys held are kept on failure.
    /// Returns the number of usable keys.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut fetches = self.fetches.lock().await;
        self.fetch_locked(&mut fetches).await
    }

    async fn fetch_locked(&self, fetches: &mut Fetches) -> Result<usize, String> {
        fetches.last_attempt = Some(Instant::now());
        let bytes = self.read_jwks().await?;
        let (set, skipped) =
            parse_jwks(&bytes).map_err(|e| format!("{}: {e}", self.config.jwks))?;
        if skipped > 0 {
            tracing::debug!(
                "{}: {skipped} key(s) skipped (not an accepted signing key)",
                self.config.jwks
            );
        }
        let n = set.by_kid.len() + set.anonymous.len();
        let set = KeySet {
            fetched_at: Some(Instant::now()),
            ..set
        };
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        Ok(n)
    }

    /// The JWKS document's bytes, within the size and time bounds.
    async fn read_jwks(&self) -> Result<Vec<u8>, String> {
        let max = self.config.jwks_max_bytes;
        match &self.source {
            Source::File(path) => {
                let name = path.display();
                let len = std::fs::metadata(path)
                    .map_err(|e| format!("cannot read the JWKS file `{name}`: {e}"))?
                    .len();
                if len > max as u64 {
                    return Err(format!(
                        "the JWKS file `{name}` is {len} bytes; at most {max} are read (jwks_max_bytes)"
                    ));
                }
                std::fs::read(path).map_err(|e| format!("cannot read the JWKS file `{name}`: {e}"))
            }
            Source::Url(url) => {
                let timeout = Duration::from_millis(self.config.jwks_timeout_ms);
                let fetch = async {
                    let mut resp = self
                        .client
                        .get(url.clone())
                        .header("accept", "application/json, application/jwk-set+json")
                        .send()
                        .await
                        .map_err(|e| fetch_error(url, timeout, &e))?;
                    if !resp.status().is_success() {
                        return Err(format!(
                            "the JWKS at {url} answered HTTP {}",
                            resp.status().as_u16()
                        ));
                    }
                    if resp.content_length().is_some_and(|n| n > max as u64) {
                        return Err(format!(
                            "the JWKS at {url} is larger than {max} bytes (jwks_max_bytes)"
                        ));
                    }
                    let mut body = Vec::new();
                    while let Some(chunk) = resp
                        .chunk()
                        .await
                        .map_err(|e| fetch_error(url, timeout, &e))?
                    {
                        if body.len() + chunk.len() > max {
                            return Err(format!(
                                "the JWKS at {url} is larger than {max} bytes (jwks_max_bytes)"
                            ));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(body)
                };
                // The client's own timeout bounds each step; this bounds the whole, a slow
                // trickle included.
                tokio::time::timeout(timeout, fetch).await.map_err(|_| {
                    format!(
                        "the JWKS at {url} did not arrive within {} ms",
                        timeout.as_millis()
                    )
                })?
            }
        }
    }

    fn held(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The keys, fetched first if none is held or they are older than `jwks_max_age_secs`
    /// (at most once per refresh interval). Fresh keys are read without waiting on anything;
    /// stale ones are refetched by the one request that finds the fetcher free (the others
    /// use the keys held), and a failed refetch keeps them.
    async fn current_keys(&self) -> Result<Arc<KeySet>, AuthFailure> {
        let held = self.held();
        let max_age = Duration::from_secs(self.config.jwks_max_age_secs);
        if !held.is_empty() {
            if held.fetched_at.is_some_and(|t| t.elapsed() < max_age) {
                return Ok(held);
            }
            if let Ok(mut fetches) = self.fetches.try_lock()
                && self.may_fetch(&fetches)
                && let Err(e) = self.fetch_locked(&mut fetches).await
            {
                tracing::warn!("{e}; the keys fetched before are kept");
            }
            return Ok(self.held());
        }
        let mut fetches = self.fetches.lock().await;
        // Another request may have fetched while this one waited.
        let held = self.held();
        if !held.is_empty() {
            return Ok(held);
        }
        if !self.may_fetch(&fetches) {
            return Err(AuthFailure::KeysUnavailable(
                "the authorization server's JWKS could not be fetched (retried at most every few seconds)".into(),
            ));
        }
        match self.fetch_locked(&mut fetches).await {
            Ok(_) => Ok(self.held()),
            Err(e) => {
                tracing::warn!("{e}");
                Err(AuthFailure::KeysUnavailable(e))
            }
        }
    }

    fn may_fetch(&self, fetches: &Fetches) -> bool {
        let interval = Duration::from_secs(self.config.jwks_refresh_interval_secs);
        fetches.last_attempt.is_none_or(|t| t.elapsed() >= interval)
    }

    /// The key for `kid`, refetching the JWKS once if it is unknown and the last fetch is
    /// older than the refresh interval.
    async fn key_for(&self, kid: &str) -> Result<Key, AuthFailure> {
        let keys = self.current_keys().await?;
        if let Some(k) = keys.by_kid.get(kid) {
            return Ok(k.clone());
        }
        let mut fetches = self.fetches.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(k) = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_kid
            .get(kid)
        {
            return Ok(k.clone());
        }
        if self.may_fetch(&fetches)
            && let Err(e) = self.fetch_locked(&mut fetches).await
        {
            tracing::warn!("{e}");
        }
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_kid
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthFailure::UnknownKey(quoted(kid)))
    }

    /// Checks one access token at Unix time `now` (seconds) and names its grant.
    pub async fn validate(&self, token: &str, now: u64) -> Result<Principal, AuthFailure> {
        let claims = self.verified_claims(token, now).await?;
        // An approver's credential never makes calls (as an `--admin-tokens` token at /mcp).
        if let Some(scope) = &self.config.admin_scope
            && scopes_of(&claims).contains(scope)
        {
            return Err(AuthFailure::AdminToken(scope.clone()));
        }
        self.principal(&claims)
    }

    /// The claims of a token whose shape, header, signature, issuer, audience and times are
    /// right, checked in that order (a forged token is refused before its claims are read).
    async fn verified_claims(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Map<String, Value>, AuthFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::TooLarge(token.len()));
        }
        if !looks_like_jwt(token) {
            return Err(AuthFailure::Malformed(
                "a JWT is three base64url parts separated by dots".into(),
            ));
        }
        let header = read_header(token)?;
        let alg = check_header(&header)?;
        let candidates: Vec<Key> = match header.get("kid").and_then(Value::as_str) {
            Some(kid) => vec![self.key_for(kid).await?],
            None => {
                let keys = self.current_keys().await?;
                keys.anonymous
                    .iter()
                    .chain(keys.by_kid.values())
                    .filter(|k| k.alg == alg)
                    .cloned()
                    .collect()
            }
        };
        let claims = verify(token, alg, &candidates)?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<(), AuthFailure> {
        let leeway = self.config.leeway_secs;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(AuthFailure::MissingClaim("iss"))?;
        if iss != self.config.issuer {
            return Err(AuthFailure::Issuer {
                found: quoted(iss),
                expected: self.config.issuer.clone(),
            });
        }
        let expected = &self.config.audience;
        match claims.get("aud") {
            Some(Value::String(a)) if a == expected => {}
            Some(Value::Array(list)) if list.iter().any(|a| a.as_str() == Some(expected)) => {}
            Some(found) => {
                return Err(AuthFailure::Audience {
                    found: quoted(&found.to_string()),
                    expected: expected.clone(),
                });
            }
            None => return Err(AuthFailure::MissingClaim("aud")),
        }
        let exp = numeric_date(claims, "exp")?.ok_or(AuthFailure::MissingClaim("exp"))?;
        // RFC 7519 §4.1.4: not accepted on or after `exp` (plus the leeway).
        if now >= exp.saturating_add(leeway) {
            return Err(AuthFailure::Expired { exp, now, leeway });
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now.saturating_add(leeway) < nbf
        {
            return Err(AuthFailure::NotYetValid { nbf, now, leeway });
        }
        Ok(())
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, AuthFailure> {
        let scopes = scopes_of(claims);
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let grant = match self
            .config
            .grant_claim
            .as_deref()
            .and_then(|c| claims.get(c))
        {
            Some(Value::String(g)) if valid_grant(g) => Some(g.clone()),
            Some(other) => {
                return Err(AuthFailure::NoGrant(format!(
                    "the access token's `{}` claim is {}; a grant is a string of 1 to {MAX_GRANT_CHARS} printable ASCII characters with no space",
                    self.config.grant_claim.as_deref().unwrap_or_default(),
                    quoted(&other.to_string())
                )));
            }
            None => self
                .config
                .grant_scopes
                .iter()
                .find(|m| scopes.contains(&m.scope))
                .map(|m| m.grant.clone()),
        };
        let Some(grant) = grant else {
            let mut ways = Vec::new();
            if let Some(c) = &self.config.grant_claim {
                ways.push(format!("a `{c}` claim"));
            }
            if !self.config.grant_scopes.is_empty() {
                ways.push(format!(
                    "one of the scopes {}",
                    self.mapped_scopes().join(", ")
                ));
            }
            return Err(AuthFailure::NoGrant(format!(
                "the access token is valid but gives no grant: it needs {}",
                ways.join(" or ")
            )));
        };
        Ok(Principal {
            grant,
            subject: text("sub"),
            client_id: text("client_id").or_else(|| text("azp")),
            scopes,
        })
    }

    /// The scopes that map to a grant, in order.
    pub fn mapped_scopes(&self) -> Vec<String> {
        self.config
            .grant_scopes
            .iter()
            .map(|m| m.scope.clone())
            .collect()
    }

    /// Checks a token for the admin API: valid, and with the admin scope (no grant needed).
    pub async fn validate_admin(&self, token: &str, now: u64) -> Result<String, AuthFailure> {
        let Some(scope) = self.config.admin_scope.clone() else {
            return Err(AuthFailure::NoGrant(
                "the admin API takes no OAuth token: start the gateway with `--admin-oauth-scope SCOPE`".into(),
            ));
        };
        let claims = self.verified_claims(token, now).await?;
        let scopes = scopes_of(&claims);
        if !scopes.contains(&scope) {
            return Err(AuthFailure::NoGrant(format!(
                "the admin API needs the scope `{scope}`"
            )));
        }
        let name = claims
            .get("sub")
            .or_else(|| claims.get("client_id"))
            .and_then(Value::as_str)
            .filter(|n| valid_grant(n))
            .ok_or(AuthFailure::MissingClaim("sub"))?;
        Ok(format!("oauth:{name}"))
    }

    /// The protected-resource metadata (RFC 9728 §2).
    pub fn metadata(&self) -> Value {
        let mut scopes = self.mapped_scopes();
        if let Some(s) = &self.config.admin_scope {
            scopes.push(s.clone());
        }
        json!({
            "resource": self.config.audience,
            "authorization_servers": [self.config.issuer],
            "bearer_methods_supported": ["header"],
            "resource_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            "scopes_supported": scopes,
            "resource_name": "Tollgate MCP gateway",
        })
    }

    /// The metadata's URL for a 401's `resource_metadata`: RFC 9728 §3.1's well-known path
    /// inserted into the audience when it is an `http(s)` URL, else on the request's `Host`.
    pub fn metadata_url(&self, host: Option<&str>) -> String {
        if let Ok(url) = reqwest::Url::parse(&self.config.audience)
            && matches!(url.scheme(), "http" | "https")
            && let Some(h) = url.host_str()
        {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            let host = if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_owned()
            };
            let path = url.path().trim_end_matches('/');
            return format!(
                "{}://{host}{port}/.well-known/oauth-protected-resource{path}",
                url.scheme()
            );
        }
        let host = host
            .filter(|h| {
                h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
            })
            .unwrap_or("localhost");
        format!("http://{host}/.well-known/oauth-protected-resource/mcp")
    }
}

/// A failed fetch, said with its cause (reqwest's own message names only the URL).
fn fetch_error(url: &reqwest::Url, timeout: Duration, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!(
            "the JWKS at {url} did not arrive within {} ms",
            timeout.as_millis()
        );
    }
    let mut text = format!("cannot fetch the JWKS at {url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The token's header as JSON (read without trusting it: only to pick the algorithm and key).
fn read_header(token: &str) -> Result<Map<String, Value>, AuthFailure> {
    let first = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| AuthFailure::Malformed("its header is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| AuthFailure::Malformed("its header is not a JSON object".into()))
}

/// `alg` on the allow-list, `typ` an access token's, no `crit`.
fn check_header(header: &Map<String, Value>) -> Result<Algorithm, AuthFailure> {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let alg = match alg {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        other => return Err(AuthFailure::Algorithm(quoted(other))),
    };
    match header.get("typ").and_then(Value::as_str) {
        Some(t)
            if t.eq_ignore_ascii_case("at+jwt")
                || t.eq_ignore_ascii_case("application/at+jwt")
                || t.eq_ignore_ascii_case("JWT") => {}
        Some(t) => return Err(AuthFailure::Type(format!("`{}`", quoted(t)))),
        None => return Err(AuthFailure::Type("missing".into())),
    }
    if let Some(crit) = header.get("crit") {
        return Err(AuthFailure::Critical(quoted(&crit.to_string())));
    }
    Ok(alg)
}

/// The claims of a token whose signature verifies with one of `keys` (the crate checks the
/// signature and that `alg` suits the key; the claims are checked by the caller, with time
/// passed in).
fn verify(token: &str, alg: Algorithm, keys: &[Key]) -> Result<Map<String, Value>, AuthFailure> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let mut failure = AuthFailure::Signature;
    for key in keys.iter().filter(|k| k.alg == alg) {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                failure = match e.kind() {
                    K::InvalidSignature | K::InvalidAlgorithm | K::InvalidKeyFormat => {
                        AuthFailure::Signature
                    }
                    K::Json(_) | K::Utf8(_) | K::Base64(_) => {
                        AuthFailure::Malformed("its claims are not a base64url JSON object".into())
                    }
                    _ => AuthFailure::Signature,
                };
                if matches!(failure, AuthFailure::Malformed(_)) {
                    return Err(failure);
                }
            }
        }
    }
    Err(failure)
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional); negative or absurd
/// values are malformed.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, AuthFailure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| AuthFailure::Malformed(format!("its `{name}` is not a time"))),
        Some(_) => Err(AuthFailure::Malformed(format!(
            "its `{name}` is not a number"
        ))),
    }
}

/// `scope` (space-separated, RFC 9068 §2.2.3) and `scp` (a list, as some servers write it).
fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    if let Some(Value::Array(list)) = claims.get("scp") {
        out.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    out
}

pub mod http;

#[cfg(test)]
mod tests;
