//! `tollgate gateway`'s OAuth flags (docs/auth.md): they fill the gateway crate's
//! [`OAuthConfig`], the struct a config file's `[auth.oauth]` table deserialises into.

use std::sync::Arc;

use tollgate_gateway::oauth::{OAuth, OAuthConfig, ScopeGrant, parse_scope_grant};

#[derive(Debug, clap::Args)]
pub struct OAuthArgs {
    /// OAuth 2.1 resource server: the authorization server's issuer identifier (a token's
    /// `iss` must equal it). Needs `--oauth-audience` and `--jwks`, and `--grant-claim` or
    /// `--grant-scope`; HTTP only (docs/auth.md).
    #[arg(long, value_name = "ISSUER", requires_all = ["oauth_audience", "jwks"])]
    oauth_issuer: Option<String>,
    /// This gateway's resource indicator (RFC 8707), usually the URL clients reach /mcp at:
    /// a token's `aud` must contain it; the protected-resource metadata names it.
    #[arg(long, value_name = "URI", requires = "oauth_issuer")]
    oauth_audience: Option<String>,
    /// The authorization server's signing keys (JWKS): an http(s) URL or a file.
    #[arg(long, value_name = "URL|FILE", requires = "oauth_issuer")]
    jwks: Option<String>,
    /// The access-token claim that names the grant (a string).
    #[arg(long, value_name = "NAME", requires = "oauth_issuer")]
    grant_claim: Option<String>,
    /// A scope that gives a grant, when the token has no `--grant-claim`: `SCOPE=GRANT`;
    /// repeat for more (the first one the token has wins).
    #[arg(long, value_name = "SCOPE=GRANT", requires = "oauth_issuer", value_parser = parse_scope_grant)]
    grant_scope: Vec<ScopeGrant>,
    /// Seconds of clock skew allowed on a token's `exp` and `nbf`.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        requires = "oauth_issuer"
    )]
    oauth_leeway: u64,
    /// A scope that makes a valid access token an approver on the admin API (named
    /// `oauth:SUB`); turns on held calls, /admin and /ui as `--admin-tokens` does.
    #[arg(long, value_name = "SCOPE", requires = "oauth_issuer")]
    admin_oauth_scope: Option<String>,
    /// The config file's `[auth.oauth]`, which stands for the flags.
    #[arg(skip)]
    pub from_config: Option<OAuthConfig>,
}

impl OAuthArgs {
    /// Whether the flags set anything (every other OAuth flag needs `--oauth-issuer`).
    pub fn given(&self) -> bool {
        self.oauth_issuer.is_some()
    }

    /// The settings the flags give, if `--oauth-issuer` is there.
    pub fn config(&self) -> Option<OAuthConfig> {
        if let Some(c) = &self.from_config {
            return Some(c.clone());
        }
        let (Some(issuer), Some(audience), Some(jwks)) =
            (&self.oauth_issuer, &self.oauth_audience, &self.jwks)
        else {
            return None;
        };
        let mut c = OAuthConfig::new(issuer, audience, jwks);
        c.grant_claim = self.grant_claim.clone();
        c.grant_scopes = self.grant_scope.clone();
        c.leeway_secs = self.oauth_leeway;
        c.admin_scope = self.admin_oauth_scope.clone();
        Some(c)
    }
}

/// The resource server of `config`, its keys fetched once at start: a JWKS file that cannot
/// be read is bad input (exit 2); an authorization server that does not answer yet is said on
/// stderr, and its keys are fetched again when the first token arrives.
pub async fn start(config: OAuthConfig) -> anyhow::Result<Arc<OAuth>> {
    let is_url = config.jwks.starts_with("http://") || config.jwks.starts_with("https://");
    let oauth = OAuth::new(config).map_err(anyhow::Error::msg)?;
    match oauth.refresh().await {
        Ok(n) => tracing::info!("OAuth: {n} signing key(s) from {}", oauth.config().jwks),
        Err(e) if is_url => {
            tracing::warn!("{e}; fetched again when the first token arrives");
        }
        Err(e) => anyhow::bail!("{e}"),
    }
    Ok(Arc::new(oauth))
}
