//! The admin HTTP API and the approvals console, on the gateway's HTTP listener
//! (docs/approvals.md):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/approvals` | `{"approver", "now_ms", "pending": [...], "recent": [...]}` |
//! | `GET /admin/approvals/{id}` | one approval, pending or recently decided |
//! | `POST /admin/approvals/{id}/approve` | body optional: `{"reason": "..."}` |
//! | `POST /admin/approvals/{id}/deny` | body optional: `{"reason": "..."}` |
//! | `GET /admin/approvals/events` | server-sent events: `held` and `decided`, as they happen |
//! | `GET /ui` | the console (one HTML page; it asks for the token) |
//!
//! With approvals shared across replicas (`approvals/replicas.rs`), the list adds every other
//! running replica's pending calls (ids `ID@REPLICA`), and a verdict on one is carried to the
//! replica holding it and answered with its answer (or 410, 503, 504: docs/approvals.md).
//!
//! Every `/admin` request needs `Authorization: Bearer TOKEN` with a token of `--admin-tokens`
//! (the token's NAME is the approver the audit log records) or a JWT access token with the
//! `--admin-oauth-scope` scope (the approver is `oauth:SUB`; docs/auth.md). An agent's token (from `--tokens`)
//! is refused with 403: an agent cannot approve its own calls. Errors are `{"error": "..."}`
//! with 401 (no or unknown token), 403 (an agent's token), 404 (no such approval, or the admin
//! API is off), 409 (no longer pending, or asked of the client's user), 400 (a bad body) and
//! 503 (the audit log cannot record an approval).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::approvals::{ApprovalError, VerdictKind, replicas};
use crate::transport::HttpFront;

/// The console: one self-contained page (inline CSS and JS, no build step).
const CONSOLE: &str = include_str!("console.html");

/// The longest reason an approver may give, in characters.
pub const MAX_REASON: usize = 1000;

/// The routes, merged into the HTTP front.
pub fn router() -> Router<Arc<HttpFront>> {
    Router::new()
        .route("/admin/approvals", get(list))
        .route("/admin/approvals/events", get(events))
        .route("/admin/approvals/{id}", get(one))
        .route("/admin/approvals/{id}/approve", post(approve))
        .route("/admin/approvals/{id}/deny", post(deny))
        .route("/ui", get(console))
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": message}).to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The approver a request speaks for, or the response refusing it: a token of
/// `--admin-tokens` (its NAME), or a JWT access token with `--admin-oauth-scope` (`oauth:SUB`).
async fn approver(front: &HttpFront, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let oauth = front
        .oauth
        .as_ref()
        .filter(|o| o.config().admin_scope.is_some());
    if front.admin_tokens.is_none() && oauth.is_none() {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "the admin API is off: start the gateway with `--admin-tokens FILE` (`TOKEN NAME` per line) or `--admin-oauth-scope SCOPE`",
        )));
    }
    let unauthorized = |message: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, message);
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Box::new(r)
    };
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::tokens::bearer)
    else {
        return Err(unauthorized(
            "present an admin token: `Authorization: Bearer TOKEN`, a token of the gateway's `--admin-tokens` file or an access token with its `--admin-oauth-scope`",
        ));
    };
    if let Some(name) = front
        .admin_tokens
        .as_ref()
        .and_then(|a| a.lookup(presented))
    {
        return Ok(name.to_owned());
    }
    if let Some(grant) = front.tokens.as_ref().and_then(|t| t.lookup(presented)) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            &format!(
                "this is an agent's token (grant `{grant}`): agents cannot approve or deny calls. Use an admin token from the gateway's `--admin-tokens` file"
            ),
        )));
    }
    if let Some(oauth) = oauth
        && crate::oauth::looks_like_jwt(presented)
    {
        return match oauth
            .validate_admin(presented, crate::oauth::http::unix_now())
            .await
        {
            Ok(name) => Ok(name),
            Err(failure) => {
                crate::oauth::http::record(front, &failure);
                let status =
                    StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::UNAUTHORIZED);
                let mut r = error(status, &failure.to_string());
                let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
                if let Ok(v) = HeaderValue::from_str(
                    &failure.challenge(&oauth.metadata_url(host), &oauth.mapped_scopes()),
                ) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                Err(Box::new(r))
            }
        };
    }
    Err(unauthorized(
        "this token is not in the gateway's `--admin-tokens` file",
    ))
}

fn now(front: &HttpFront) -> Duration {
    front.clock.now()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An approval's id in a path: `ID`, or `ID@REPLICA` with approvals shared across replicas
/// (`Some(replica)` only for another replica's).
fn parse_id<'a>(front: &HttpFront, text: &'a str) -> Result<(u64, Option<&'a str>), Box<Response>> {
    let Some((id, replica)) = replicas::parse_ref(text) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            &format!(
                "no approval has the id `{text}`: ids are numbers (`ID@REPLICA` for another replica's), as `GET /admin/approvals` lists them"
            ),
        )));
    };
    let here = front.gateway.approvals().replica_name();
    match replica {
        Some(r) if Some(r) == here => Ok((id, None)),
        Some(r) if here.is_none() => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            &format!(
                "no approval has the id `{text}`: this gateway shares no approvals with replicas (such as `{r}`): start every replica with the same `--store redis://…` and `--admin-tokens`"
            ),
        ))),
        other => Ok((id, other)),
    }
}

/// Every other running replica's pending approvals (blocking on the store, so off the
/// runtime's workers), or why the store could not list them.
async fn other_replicas(front: &HttpFront, now_ms: u64) -> Option<Result<Vec<Value>, String>> {
    let bus = Arc::clone(&front.gateway.approvals().sharing()?.bus);
    let listed = tokio::task::spawn_blocking(move || {
        let me = bus.replica().to_owned();
        bus.list().map(|all| {
            all.into_iter()
                .filter(|l| l.replica != me)
                .collect::<Vec<_>>()
        })
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    Some(listed.map(|all| {
        let mut entries: Vec<Value> = all
            .iter()
            .filter_map(|l| replicas::listed_entry(l, now_ms))
            .collect();
        // By replica, each oldest first (its ids count up); the store lists them in no order.
        entries.sort_by_key(|v| {
            let id = v["id"].as_str().unwrap_or_default();
            let (n, replica) = id.split_once('@').unwrap_or((id, ""));
            (replica.to_owned(), n.parse::<u64>().unwrap_or(0))
        });
        entries
    }))
}

async fn list(State(front): State<Arc<HttpFront>>, headers: HeaderMap) -> Response {
    let name = match approver(&front, &headers).await {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let now = now(&front);
    let (pending, recent) = front.gateway.list_approvals(now);
    let mut body =
        json!({"approver": name, "now_ms": ms(now), "pending": pending, "recent": recent});
    if let Some(me) = front.gateway.approvals().replica_name() {
        body["replica"] = json!(me);
        let mut all: Vec<Value> = pending
            .iter()
            .map(|p| {
                let mut v = json!(p);
                v["replica"] = json!(me);
                v
            })
            .collect();
        match other_replicas(&front, ms(now)).await {
            Some(Ok(others)) => all.extend(others),
            Some(Err(e)) => {
                body["replicas_error"] = json!(format!(
                    "the shared store cannot list the other replicas' approvals ({e}): only this replica's are shown"
                ));
            }
            None => {}
        }
        body["pending"] = json!(all);
    }
    ok(body)
}

async fn one(
    State(front): State<Arc<HttpFront>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = approver(&front, &headers).await {
        return *r;
    }
    let (id, replica) = match parse_id(&front, &id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if let Some(replica) = replica {
        let wanted = format!("{id}@{replica}");
        return match other_replicas(&front, ms(now(&front))).await {
            Some(Ok(others)) => match others.into_iter().find(|v| v["id"] == wanted.as_str()) {
                Some(v) => ok(v),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "approval {wanted} is not pending on a running replica: it was decided, expired or withdrawn, or replica `{replica}` stopped (its own log has the record)"
                    ),
                ),
            },
            Some(Err(e)) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the shared store cannot list the other replicas' approvals ({e})"),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                &ApprovalError::NotFound { id }.to_string(),
            ),
        };
    }
    match front.gateway.approvals().get(id) {
        Some(v) => ok(v),
        None => error(
            StatusCode::NOT_FOUND,
            &ApprovalError::NotFound { id }.to_string(),
        ),
    }
}

async fn approve(
    State(front): State<Arc<HttpFront>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(front, headers, id, body, true).await
}

async fn deny(
    State(front): State<Arc<HttpFront>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(front, headers, id, body, false).await
}

async fn decide(
    front: Arc<HttpFront>,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    approve: bool,
) -> Response {
    let name = match approver(&front, &headers).await {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let (id, replica) = match parse_id(&front, &id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let reason = match reason_of(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if let (Some(replica), Some(sharing)) = (replica, front.gateway.approvals().sharing()) {
        // Another replica holds the call: the verdict goes there, and its answer comes back.
        let bus = Arc::clone(&sharing.bus);
        let replica = replica.to_owned();
        let kind = if approve {
            VerdictKind::Approved
        } else {
            VerdictKind::Denied
        };
        let reason = reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        let relayed = tokio::task::spawn_blocking(move || {
            replicas::relay(&*bus, &replica, id, kind, &name, reason.as_deref())
        })
        .await;
        return match relayed {
            Ok((200, body)) => ok(body),
            Ok((status, body)) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
    }
    let now = now(&front);
    let result = if approve {
        front.gateway.approve(id, &name, reason.as_deref(), now)
    } else {
        front.gateway.deny(id, &name, reason.as_deref(), now)
    };
    match result {
        Ok(decided) => ok(json!(decided)),
        Err(e) => error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::CONFLICT),
            &e.to_string(),
        ),
    }
}

/// The optional `{"reason": "..."}` body.
fn reason_of(body: &[u8]) -> Result<Option<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!("the body must be empty or a JSON object such as {{\"reason\": \"...\"}}: {e}")
    })?;
    let Some(obj) = v.as_object() else {
        return Err("the body must be a JSON object such as {\"reason\": \"...\"}".into());
    };
    if let Some(k) = obj.keys().find(|k| *k != "reason") {
        return Err(format!(
            "unknown field `{k}` in the body: the only field is `reason`"
        ));
    }
    match obj.get("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(r)) if r.chars().count() > MAX_REASON => Err(format!(
            "`reason` is {} characters long; the most is {MAX_REASON}",
            r.chars().count()
        )),
        Some(Value::String(r)) => Ok(Some(r.clone())),
        Some(_) => Err("`reason` must be a string".into()),
    }
}

/// The live feed: every `held` and `decided` event as a server-sent event (`event: held`,
/// `data: {...}`), with a comment every 15 s to keep proxies from closing it; it ends when
/// the gateway shuts down.
async fn events(State(front): State<Arc<HttpFront>>, headers: HeaderMap) -> Response {
    if let Err(r) = approver(&front, &headers).await {
        return *r;
    }
    let rx = front.gateway.approvals().subscribe();
    let shutdown = front.shutdown.clone();
    let first = Some(": tollgate approvals feed\n\n".to_owned());
    let stream = futures::stream::unfold(
        (rx, shutdown, first),
        |(mut rx, mut shutdown, first)| async move {
            if let Some(f) = first {
                return Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(f)),
                    (rx, shutdown, None),
                ));
            }
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                let chunk = tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(v) => {
                            let kind = v["type"].as_str().unwrap_or("message").to_owned();
                            format!("event: {kind}\ndata: {}\n\n", v["approval"])
                        }
                        // A slow reader missed events: tell it to fetch the list again.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            format!("event: lagged\ndata: {n}\n\n")
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                    () = tokio::time::sleep(Duration::from_secs(15)) => ": keep-alive\n\n".to_owned(),
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                        continue;
                    }
                };
                return Some((Ok(Bytes::from(chunk)), (rx, shutdown, None)));
            }
        },
    );
    let mut r = Response::new(axum::body::Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn console() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page loads nothing from elsewhere; framing it is refused.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        CONSOLE,
    )
        .into_response()
}
