//! The resource server on the HTTP front: the protected-resource metadata routes, the
//! `WWW-Authenticate` challenge of a refused token, and the audit of refusals (bounded, so a
//! flood of bad tokens cannot fill the disk).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::time::Instant;

use super::AuthFailure;
use crate::transport::HttpFront;

/// The most refusals audited per second; the others are counted in the metrics and in the
/// `suppressed` field of the next refusal audited.
pub const AUDITED_REFUSALS_PER_SECOND: u32 = 20;

/// The well-known paths (RFC 9728 §3): the bare one and the one suffixed with `/mcp`, the
/// path of the resource.
pub fn router() -> Router<Arc<HttpFront>> {
    Router::new()
        .route("/.well-known/oauth-protected-resource", get(metadata))
        .route("/.well-known/oauth-protected-resource/mcp", get(metadata))
}

async fn metadata(State(front): State<Arc<HttpFront>>) -> Response {
    let Some(oauth) = &front.oauth else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": "this gateway is not an OAuth resource server: start it with `--oauth-issuer`, `--oauth-audience` and `--jwks`"}).to_string(),
        )
            .into_response();
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            // A public document: browser-based clients read it across origins.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        oauth.metadata().to_string(),
    )
        .into_response()
}

/// The wall clock's Unix time in seconds, for `exp` and `nbf` (tokens are issued in real
/// time, whatever `--time-scale` does to the limits).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A refused token's answer: the status, `WWW-Authenticate` (RFC 6750 §3 with RFC 9728's
/// `resource_metadata`) and a JSON-RPC error whose message says what to do.
pub fn refusal(front: &HttpFront, headers: &HeaderMap, failure: &AuthFailure) -> Response {
    let Some(oauth) = &front.oauth else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let status = StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let prefix = match failure.status() {
        403 => "Forbidden",
        503 => "Service Unavailable",
        _ => "Unauthorized",
    };
    let body = tollgate_mcp::error_response(
        None,
        tollgate_mcp::ErrorCode::InvalidRequest,
        &format!("{prefix}: {failure}"),
        None,
    );
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let challenge = failure.challenge(&oauth.metadata_url(host), &oauth.mapped_scopes());
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if failure.status() == 503 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}

/// Counts a refused token in the metrics and audits it (an `auth_refused` record: the reason,
/// status and description, the method and path; never the token), within the budget.
pub fn record(front: &HttpFront, failure: &AuthFailure) {
    front
        .metrics
        .auth_refused
        .get_or_create(&vec![("reason".to_owned(), failure.reason().to_owned())])
        .inc();
    // A client that sends no token is asking where to log in (the spec's discovery step):
    // counted, not audited.
    if matches!(failure, AuthFailure::Missing) {
        return;
    }
    let Some(suppressed) = front.auth_refusals.admit(Instant::now()) else {
        return;
    };
    let fields = json!({
        "reason": failure.reason(),
        "status": failure.status(),
        "error_description": failure.to_string(),
        "suppressed": suppressed,
    });
    if let Err(e) = front.gateway.auth_refused(front.clock.now(), fields) {
        tracing::error!("cannot audit a refused token: {e}");
    }
}

/// How many refusals may still be audited this second.
#[derive(Debug)]
pub struct RefusalBudget {
    state: Mutex<Budget>,
}

#[derive(Debug)]
struct Budget {
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        RefusalBudget {
            state: Mutex::new(Budget {
                window: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }
}

impl RefusalBudget {
    /// `Some(n)` when this refusal is audited (`n` refusals were left out since the last
    /// one audited); `None` when the second's budget is spent.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if b.window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            b.window = Some(now);
            b.used = 0;
        }
        if b.used >= AUDITED_REFUSALS_PER_SECOND {
            b.suppressed += 1;
            return None;
        }
        b.used += 1;
        Some(std::mem::take(&mut b.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At most the budget per second is audited; what was left out is counted into the next
    /// record audited.
    #[test]
    fn refusals_are_audited_within_a_budget_per_second() {
        let b = RefusalBudget::default();
        let t0 = Instant::now();
        for _ in 0..AUDITED_REFUSALS_PER_SECOND {
            assert_eq!(b.admit(t0), Some(0));
        }
        for _ in 0..7 {
            assert_eq!(b.admit(t0 + Duration::from_millis(999)), None);
        }
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), Some(7));
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), Some(0));
    }
}
