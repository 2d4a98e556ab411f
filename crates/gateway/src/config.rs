//! The gateway's config file (`tollgate gateway --config tollgate.toml`, docs/gateway.md,
//! "Config file"): the policy, audit log, recording, listener, store and upstreams in one TOML
//! file. Relative paths resolve against the file's folder. `tollgate check --config FILE`
//! reports what is wrong at file:line:col, as policy diagnostics do (unknown keys with a
//! did-you-mean, wrong types, bad values). docs/config.schema.json is generated from
//! [`ConfigFile`].
//!
//! Settings of later features plug in as new optional fields of these structs (a `[listen]`
//! key, an `[[upstream]]` key, a new table such as `[auth]`): `deny_unknown_fields` makes each
//! known only once it is added here.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use tollgate_policy::source::SourceFile;
use tollgate_policy::{Diagnostic, Diagnostics};
use toml::Spanned;

use crate::multi::default_prefix;
use crate::upstream::{NamedUpstream, UpstreamSpec};

/// The file as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The policy file (JSON), reloaded when it changes.
    #[schemars(with = "String")]
    pub policy: Spanned<String>,
    /// The hash-chained audit log (created if missing).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub audit: Option<Spanned<String>>,
    /// Append every message of every session to this file (JSON lines).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub record: Option<Spanned<String>>,
    /// The grant of the stdio client (and of HTTP clients when no tokens file is given).
    #[serde(default)]
    pub grant: Option<String>,
    /// Where the limits' counters live: `memory` or `redis://HOST:PORT[/DB]`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub store: Option<Spanned<String>>,
    /// This gateway's name among the replicas sharing a Redis store (as `--replica`; letters,
    /// digits, `.`, `_`, `-`, at most 64): their held calls are listed and decided from every
    /// replica (docs/approvals.md, "Several replicas").
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub replica: Option<Spanned<String>>,
    /// Serve Streamable HTTP; without it the gateway speaks stdio.
    #[serde(default)]
    pub listen: Option<ListenFile>,
    /// Pinned tool definitions (what `tollgate pin` printed; as `--lock`, docs/pinning.md).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub lock: Option<Spanned<String>>,
    /// What a tool that drifted from `lock` gets (as `--lock-mode`): `refuse` (the default) or
    /// `warn`. Only with `lock`.
    #[serde(default)]
    #[schemars(with = "Option<LockModeFile>")]
    pub lock_mode: Option<Spanned<LockModeFile>>,
    /// Who may call: the OAuth 2.1 resource server (`[auth.oauth]`, as the `--oauth-*` flags;
    /// docs/auth.md).
    #[serde(default)]
    pub auth: Option<AuthFile>,
    /// OpenTelemetry traces (as `--otlp-endpoint`; docs/observability.md).
    #[serde(default)]
    pub telemetry: Option<TelemetryFile>,
    /// The upstreams (at least one); with several, tool and prompt names are namespaced.
    #[schemars(length(min = 1))]
    pub upstream: Vec<UpstreamFile>,
}

/// `[auth]`: who may call.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// JWT access tokens of an OAuth 2.1 authorization server (the flags `--oauth-issuer`
    /// (`issuer`), `--oauth-audience` (`audience`), `--jwks` (`jwks`: an http(s) URL, or a file
    /// found from the config's folder), `--grant-claim` (`grant_claim`), `--grant-scope`
    /// (`grant_scopes = [{scope, grant}]`), `--oauth-leeway` (`leeway_secs`),
    /// `--admin-oauth-scope` (`admin_scope`)); needs `[listen]`.
    #[serde(default)]
    #[schemars(with = "Option<crate::oauth::OAuthConfig>")]
    pub oauth: Option<Spanned<crate::oauth::OAuthConfig>>,
}

/// `[telemetry]`: OpenTelemetry traces, a span per MCP request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// The OTLP/HTTP endpoint (protobuf): spans are posted to `<otlp_endpoint>/v1/traces`, e.g.
    /// `http://127.0.0.1:4318` (as `--otlp-endpoint`).
    #[schemars(with = "String")]
    pub otlp_endpoint: Spanned<String>,
    /// The spans' `service.name` (default `tollgate`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// The most finished spans held for export (default 2048); more are dropped and counted in
    /// `tollgate_trace_spans_dropped_total`.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_queue: Option<usize>,
}

/// `lock_mode`: what a drifted tool gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LockModeFile {
    /// Hidden from the list, its calls refused.
    Refuse,
    /// Listed and forwarded; the drift is audited and counted.
    Warn,
}

impl LockModeFile {
    pub fn as_str(self) -> &'static str {
        match self {
            LockModeFile::Refuse => "refuse",
            LockModeFile::Warn => "warn",
        }
    }
}

/// `[listen]`: the HTTP listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    /// `HOST:PORT`, e.g. `127.0.0.1:8080`.
    #[schemars(with = "String")]
    pub addr: Spanned<String>,
    /// Bearer tokens file (`TOKEN GRANT` per line).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tokens: Option<Spanned<String>>,
    /// Approvers' tokens file: turns on approvals, the admin API and the console.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub admin_tokens: Option<Spanned<String>>,
    /// Origins of web pages let in (as `--allow-origin`).
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// HTTPS: the listener's certificate chain (PEM; as `--tls-cert`), with `tls_key`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tls_cert: Option<Spanned<String>>,
    /// HTTPS: the private key of `tls_cert` (PEM; as `--tls-key`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tls_key: Option<Spanned<String>>,
}

/// `[[upstream]]`: one MCP server.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// Its name: letters, digits, `_` and `-`, at most 64; unique.
    #[schemars(with = "String", regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub name: Spanned<String>,
    /// The command to run, spoken to over stdio: the program and its arguments.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub command: Option<Spanned<Vec<String>>>,
    /// Its Streamable HTTP URL.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// The prefix of its exposed tool and prompt names (default `<name>__`; several upstreams
    /// only).
    #[serde(default)]
    #[schemars(with = "Option<String>", regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub prefix: Option<Spanned<String>>,
    /// An `https://` upstream: certificates (PEM) of the authorities to trust besides the
    /// system's (as `--upstream-ca-file`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
}

/// The config as the gateway uses it: paths resolved, values checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub policy: PathBuf,
    pub audit: Option<PathBuf>,
    pub record: Option<PathBuf>,
    pub grant: Option<String>,
    pub store: Option<String>,
    pub replica: Option<String>,
    pub listen: Option<Listen>,
    pub upstreams: Vec<NamedUpstream>,
    pub lock: Option<PathBuf>,
    pub lock_mode: Option<LockModeFile>,
    /// `[auth.oauth]`, its `jwks` file (not a URL) resolved against the config's folder.
    pub oauth: Option<crate::oauth::OAuthConfig>,
    pub telemetry: Option<crate::telemetry::TelemetryConfig>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tokens: Option<PathBuf>,
    pub admin_tokens: Option<PathBuf>,
    pub allow_origin: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Config {
    /// What the gateway connects each session to: the one upstream, or the router of several.
    pub fn spec(&self) -> UpstreamSpec {
        match self.upstreams.as_slice() {
            [one] => one.spec.clone(),
            _ => UpstreamSpec::Several(Arc::new(self.upstreams.clone())),
        }
    }
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::about_file(
            &name,
            "config::unreadable",
            format!("cannot read the config file `{name}`: {e}"),
        )])
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    parse(&name, &text, base).map(|mut c| {
        c.path = path.to_owned();
        c
    })
}

/// Checks a config file's text; relative paths resolve against `base`.
pub fn parse(name: &str, text: &str, base: &Path) -> Result<Config, Diagnostics> {
    let file = SourceFile::new(name, text);
    let raw: ConfigFile =
        toml::from_str(text).map_err(|e| Diagnostics(vec![serde_error(&file, &e)]))?;
    let mut errors = Vec::new();
    let mut err = |span: Range<usize>, code: &'static str, message: String, help: &str| {
        errors.push(
            Diagnostic::error(&file, code, message)
                .with_label(span, "here")
                .with_help(help),
        );
    };
    let path_of = |s: &Spanned<String>| base.join(s.get_ref());
    let listen = raw.listen.as_ref().and_then(|l| {
        let addr = match l.addr.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                err(
                    l.addr.span(),
                    "config::bad_value",
                    format!("`{}` is not an address", l.addr.get_ref()),
                    "write HOST:PORT with an IP address, e.g. \"127.0.0.1:8080\"",
                );
                None
            }
        };
        match (&l.tls_cert, &l.tls_key) {
            (Some(one), None) | (None, Some(one)) => err(
                one.span(),
                "config::missing_field",
                "`tls_cert` and `tls_key` go together".into(),
                "give both (the certificate chain and its key, PEM) to serve https, or neither",
            ),
            _ => {}
        }
        addr.map(|addr| Listen {
            addr,
            tokens: l.tokens.as_ref().map(path_of),
            admin_tokens: l.admin_tokens.as_ref().map(path_of),
            allow_origin: l.allow_origin.clone(),
            tls_cert: l.tls_cert.as_ref().map(path_of),
            tls_key: l.tls_key.as_ref().map(path_of),
        })
    });
    if let Some(store) = &raw.store
        && store.get_ref() != "memory"
        && !store.get_ref().starts_with("redis://")
    {
        err(
            store.span(),
            "config::bad_value",
            format!("`{}` is not a store", store.get_ref()),
            "write \"memory\" or \"redis://HOST:PORT[/DB]\"",
        );
    }
    let oauth = raw.auth.as_ref().and_then(|a| a.oauth.as_ref()).map(|o| {
        let mut c = o.get_ref().clone();
        if !c.jwks.starts_with("http://") && !c.jwks.starts_with("https://") {
            c.jwks = base.join(&c.jwks).display().to_string();
        }
        if let Err(why) = c.check() {
            err(
                o.span(),
                "config::bad_value",
                why,
                "see docs/auth.md, \"OAuth 2.1\": `[auth.oauth]` takes the `--oauth-*` flags' settings",
            );
        }
        if raw.listen.is_none() {
            err(
                o.span(),
                "config::missing_field",
                "`[auth.oauth]` checks the access tokens of HTTP clients, and the config has no `[listen]`".into(),
                "add a `[listen]` table with an `addr`, or remove `[auth.oauth]`",
            );
        }
        c
    });
    let telemetry = raw.telemetry.as_ref().map(|t| {
        let mut c = crate::telemetry::TelemetryConfig::new(t.otlp_endpoint.get_ref());
        if let Some(name) = &t.service_name {
            c.service_name = name.clone();
        }
        if let Some(n) = t.max_queue {
            c.max_queue = n;
        }
        if let Err(why) = c.check() {
            err(
                t.otlp_endpoint.span(),
                "config::bad_value",
                why,
                "see docs/observability.md, \"Traces\"",
            );
        }
        c
    });
    if let Some(replica) = &raw.replica {
        let name = replica.get_ref();
        // The rule of `tollgate-store-redis`'s `valid_replica_name` (the `ID@NAME` ids and the
        // store's keys need it).
        let valid = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            err(
                replica.span(),
                "config::bad_value",
                format!("`{name}` cannot name a replica"),
                "use 1 to 64 letters, digits, `.`, `_` or `-`",
            );
        } else if raw.store.as_ref().is_none_or(|s| s.get_ref() == "memory") {
            err(
                replica.span(),
                "config::bad_value",
                "`replica` names this gateway among replicas sharing a Redis store, and the store is memory".into(),
                "add `store = \"redis://HOST:PORT\"`, or remove `replica`",
            );
        }
    }
    if raw.upstream.is_empty() {
        err(
            0..0,
            "config::no_upstream",
            "the config names no upstream".into(),
            "add an [[upstream]] table with a `name` and a `command = [...]` or a `url`",
        );
    }
    let several = raw.upstream.len() > 1;
    let mut upstreams: Vec<(NamedUpstream, Range<usize>)> = Vec::new();
    for u in &raw.upstream {
        let name = u.name.get_ref();
        if !valid_upstream_name(name) {
            err(
                u.name.span(),
                "config::bad_value",
                format!("`{name}` is not an upstream name"),
                "use letters, digits, `_` and `-` (at most 64), e.g. \"eks\"",
            );
        }
        if let Some((first, _)) = upstreams.iter().find(|(n, _)| n.name == *name) {
            err(
                u.name.span(),
                "config::duplicate_upstream",
                format!("two upstreams are named `{}`", first.name),
                "give each upstream a name of its own",
            );
        }
        let spec = match (&u.command, &u.url) {
            (Some(c), None) => match c.get_ref().split_first() {
                Some((program, args)) => {
                    // A program given as a path (`./server`) is found from the config's
                    // folder; a bare name is looked up in PATH.
                    let program = if program.contains('/') {
                        base.join(program).display().to_string()
                    } else {
                        program.clone()
                    };
                    Some(UpstreamSpec::Command {
                        program,
                        args: args.to_vec(),
                    })
                }
                None => {
                    err(
                        c.span(),
                        "config::bad_value",
                        format!("the upstream `{name}` has an empty command"),
                        "write the program and its arguments, e.g. command = [\"tollgate\", \"mock-eks\"]",
                    );
                    None
                }
            },
            (None, Some(url)) => {
                let text = url.get_ref();
                if text.starts_with("http://") || text.starts_with("https://") {
                    let ca_file = u.ca_file.as_ref().map(&path_of);
                    match crate::upstream::http_client(ca_file.as_deref()) {
                        Ok(client) => Some(UpstreamSpec::Url {
                            url: text.clone(),
                            client,
                        }),
                        Err(e) => {
                            let span = u.ca_file.as_ref().map_or(url.span(), |c| c.span());
                            err(
                                span,
                                "config::bad_value",
                                e.to_string(),
                                "give a PEM file of CA certificates, e.g. ca_file = \"ca.pem\"",
                            );
                            None
                        }
                    }
                } else {
                    err(
                        url.span(),
                        "config::bad_value",
                        format!("`{text}` is not an http(s) URL"),
                        "write the upstream's Streamable HTTP endpoint, e.g. \"http://127.0.0.1:8000/mcp\"",
                    );
                    None
                }
            }
            (Some(c), Some(_)) => {
                err(
                    c.span(),
                    "config::conflict",
                    format!("the upstream `{name}` has both a `command` and a `url`"),
                    "keep one: `command` runs it over stdio, `url` reaches it over HTTP",
                );
                None
            }
            (None, None) => {
                err(
                    u.name.span(),
                    "config::missing_field",
                    format!("the upstream `{name}` has neither a `command` nor a `url`"),
                    "add `command = [\"PROGRAM\", \"ARG\"...]` or `url = \"http://HOST:PORT/mcp\"`",
                );
                None
            }
        };
        if let Some(p) = &u.prefix {
            if !several {
                err(
                    p.span(),
                    "config::bad_value",
                    "a `prefix` applies only with several upstreams (one upstream's names are exposed as they are)".into(),
                    "remove the `prefix`",
                );
            } else if !valid_prefix(p.get_ref()) {
                err(
                    p.span(),
                    "config::bad_value",
                    format!("`{}` is not a prefix", p.get_ref()),
                    "use 1 to 64 of letters, digits, `_`, `.` and `-` (tool names allow no others)",
                );
            }
        }
        let prefix = exposed_prefix(
            name,
            u.prefix.as_ref().map(|p| p.get_ref().as_str()),
            several,
        );
        let span = u
            .prefix
            .as_ref()
            .map_or_else(|| u.name.span(), Spanned::span);
        if let Some(spec) = spec {
            upstreams.push((
                NamedUpstream {
                    name: name.clone(),
                    prefix,
                    spec,
                },
                span,
            ));
        }
    }
    let named: Vec<(&str, &str)> = upstreams
        .iter()
        .map(|(u, _)| (u.name.as_str(), u.prefix.as_str()))
        .collect();
    for (a, b) in overlapping_prefixes(&named) {
        err(
            upstreams[b].1.clone(),
            "config::prefix_collision",
            prefix_overlap_message(named[a], named[b]),
            "give each upstream a prefix that does not start another's, e.g. `eks__` and `omics__`",
        );
    }
    // A mode for pins nobody checks would be silently ignored.
    if let (Some(mode), None) = (&raw.lock_mode, &raw.lock) {
        err(
            mode.span(),
            "config::lock_mode_without_lock",
            "`lock_mode` is given but `lock` is not: there are no pinned tool definitions to check"
                .into(),
            "add `lock = \"tollgate.lock\"` (what `tollgate pin --config FILE` printed, docs/pinning.md), or remove `lock_mode`",
        );
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    Ok(Config {
        path: PathBuf::from(name),
        policy: path_of(&raw.policy),
        audit: raw.audit.as_ref().map(path_of),
        record: raw.record.as_ref().map(path_of),
        grant: raw.grant.clone(),
        store: raw.store.as_ref().map(|s| s.get_ref().clone()),
        replica: raw.replica.as_ref().map(|s| s.get_ref().clone()),
        listen,
        upstreams: upstreams.into_iter().map(|(u, _)| u).collect(),
        lock: raw.lock.as_ref().map(path_of),
        lock_mode: raw.lock_mode.map(Spanned::into_inner),
        oauth,
        telemetry,
    })
}

/// Whether `name` is an upstream name: 1 to 64 of letters, digits, `_` and `-`.
pub fn valid_upstream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Whether `prefix` is a prefix of exposed names: 1 to 64 of the characters tool names allow.
pub fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len()) && crate::multi::valid_tool_name(prefix)
}

/// The prefix of an upstream's exposed tool and prompt names, by the gateway's rule: the one
/// given, else [`default_prefix`] with several upstreams; one upstream's names are exposed as
/// they are (no prefix). The config file and the scenario runner both name upstreams' tools by
/// it.
pub fn exposed_prefix(name: &str, given: Option<&str>, several: bool) -> String {
    match given {
        _ if !several => String::new(),
        Some(p) => p.to_owned(),
        None => default_prefix(name),
    }
}

/// The pairs `(a, b)` (`a < b`, indices into `upstreams`: name and prefix) whose prefixes
/// overlap. Prefixes that are prefix-free make exposed names unique (`p1 + t1 == p2 + t2`
/// needs one prefix to start the other), so a config (or a scenario) with an overlap is
/// refused.
pub fn overlapping_prefixes(upstreams: &[(&str, &str)]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (a, (_, pa)) in upstreams.iter().enumerate() {
        for (b, (_, pb)) in upstreams.iter().enumerate().skip(a + 1) {
            if pb.starts_with(pa) || pa.starts_with(pb) {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

/// What an overlap of two upstreams' prefixes is said as (each given as name and prefix).
pub fn prefix_overlap_message((na, pa): (&str, &str), (nb, pb): (&str, &str)) -> String {
    format!(
        "the prefixes `{pa}` (upstream `{na}`) and `{pb}` (upstream `{nb}`) overlap: a tool of one could have the exposed name of a tool of the other"
    )
}

/// A TOML or type error as a diagnostic: its span, and for an unknown key what the keys here
/// are, with the closest one.
fn serde_error(file: &SourceFile, e: &toml::de::Error) -> Diagnostic {
    let message = e.message().trim().to_owned();
    let span = e.span().unwrap_or(0..0);
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((bad, expected)) = rest.split_once('`')
    {
        let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let help = tollgate_policy::selector::suggest_help(bad, &names, "the keys here are");
        return Diagnostic::error(file, "config::unknown_key", format!("unknown key `{bad}`"))
            .with_label(span, "not a key of this table")
            .with_help(help);
    }
    if message == "missing field `upstream`" {
        return Diagnostic::error(file, "config::no_upstream", "the config names no upstream")
            .with_label(0..0, "here")
            .with_help(
                "add an [[upstream]] table with a `name` and a `command = [...]` or a `url`",
            );
    }
    let code = if message.starts_with("invalid type") {
        "config::wrong_type"
    } else if message.starts_with("missing field") {
        "config::missing_field"
    } else {
        "config::syntax"
    };
    Diagnostic::error(file, code, message)
        .with_label(span, "here")
        .with_help("see docs/gateway.md, \"Config file\", and docs/config.schema.json")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse("t.toml", text, Path::new("/cfg")) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(Diagnostic::render_plain).collect(),
        }
    }

    /// Relative paths resolve against the config's folder; two upstreams get `<name>__`.
    #[test]
    fn paths_resolve_against_the_folder_and_names_get_default_prefixes() {
        let c = parse(
            "t.toml",
            "policy = \"p.json\"\naudit = \"/abs/a.jsonl\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"./srv\", \"-x\"]\n[[upstream]]\nname = \"omics\"\nurl = \"http://127.0.0.1:1/mcp\"\n",
            Path::new("/cfg"),
        )
        .unwrap();
        assert_eq!(c.policy, Path::new("/cfg/p.json"));
        assert_eq!(c.audit.as_deref(), Some(Path::new("/abs/a.jsonl")));
        assert_eq!(c.upstreams[0].prefix, "eks__");
        assert_eq!(c.upstreams[1].prefix, "omics__");
        assert_eq!(
            c.upstreams[0].spec,
            UpstreamSpec::Command {
                program: "/cfg/./srv".into(),
                args: vec!["-x".into()]
            }
        );
        assert!(c.listen.is_none());
    }

    /// The https listener's files and the lock resolve against the folder like every path; a
    /// certificate without its key is an error.
    #[test]
    fn tls_files_and_the_lock_resolve_against_the_folder() {
        let c = parse(
            "t.toml",
            "policy = \"p.json\"\nlock = \"tollgate.lock\"\nlock_mode = \"warn\"\n[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"/k.pem\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
            Path::new("/cfg"),
        )
        .unwrap();
        assert_eq!(c.lock.as_deref(), Some(Path::new("/cfg/tollgate.lock")));
        assert_eq!(c.lock_mode, Some(LockModeFile::Warn));
        let listen = c.listen.unwrap();
        assert_eq!(listen.tls_cert.as_deref(), Some(Path::new("/cfg/c.pem")));
        assert_eq!(listen.tls_key.as_deref(), Some(Path::new("/k.pem")));
        let e = parse(
            "t.toml",
            "policy = \"p.json\"\n[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
            Path::new("/cfg"),
        )
        .unwrap_err();
        assert!(format!("{e:?}").contains("go together"), "{e:?}");
    }

    /// `[auth.oauth]` takes the OAuth flags' settings; a relative `jwks` file is found from the
    /// config's folder, a URL is kept; `[telemetry]` names the OTLP endpoint.
    #[test]
    fn oauth_and_telemetry_tables_resolve_and_default() {
        let c = parse(
            "t.toml",
            "policy = \"p.json\"\n[listen]\naddr = \"127.0.0.1:0\"\n[auth.oauth]\nissuer = \"https://idp\"\naudience = \"https://gw/mcp\"\njwks = \"keys/jwks.json\"\ngrant_claim = \"tollgate_grant\"\nleeway_secs = 5\ngrant_scopes = [{scope = \"eks:read\", grant = \"analyst\"}]\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
            Path::new("/cfg"),
        )
        .unwrap();
        let o = c.oauth.unwrap();
        assert_eq!(o.jwks, "/cfg/keys/jwks.json");
        assert_eq!(o.grant_claim.as_deref(), Some("tollgate_grant"));
        assert_eq!(o.leeway_secs, 5);
        assert_eq!(o.grant_scopes[0].grant, "analyst");
        assert_eq!(
            o.jwks_timeout_ms,
            crate::oauth::OAuthConfig::new("i", "a", "j").jwks_timeout_ms
        );
        let t = c.telemetry.unwrap();
        assert_eq!(t.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.service_name, "tollgate");
        let c = parse(
            "t.toml",
            "policy = \"p.json\"\n[listen]\naddr = \"127.0.0.1:0\"\n[auth.oauth]\nissuer = \"https://idp\"\naudience = \"https://gw/mcp\"\njwks = \"https://idp/jwks\"\ngrant_claim = \"g\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
            Path::new("/cfg"),
        )
        .unwrap();
        assert_eq!(c.oauth.unwrap().jwks, "https://idp/jwks");
    }

    /// An `[auth.oauth]` without a way to pick a grant, or without `[listen]`, and a
    /// `[telemetry]` endpoint that is not a URL are errors at their place.
    #[test]
    fn bad_oauth_and_telemetry_tables_are_located() {
        let e = errors(
            "policy = \"p\"\n[auth.oauth]\nissuer = \"https://idp\"\naudience = \"a\"\njwks = \"j\"\n[telemetry]\notlp_endpoint = \"localhost:4318\"\n[[upstream]]\nname = \"a\"\ncommand = [\"x\"]\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].contains("pick a grant") && e[0].contains("t.toml:2:1"),
            "{}",
            e[0]
        );
        assert!(e[1].contains("no `[listen]`"), "{}", e[1]);
        assert!(
            e[2].contains("OTLP endpoint") && e[2].contains("t.toml:7:17"),
            "{}",
            e[2]
        );
        let e = errors(
            "policy = \"p\"\n[auth.oauth]\nissuer = \"i\"\naudience = \"a\"\njwks = \"j\"\ngrant_claim = \"g\"\nleway_secs = 3\n[[upstream]]\nname = \"a\"\ncommand = [\"x\"]\n",
        );
        assert!(
            e[0].contains("unknown key `leway_secs`")
                && e[0].contains("did you mean `leeway_secs`?"),
            "{}",
            e[0]
        );
    }

    /// One upstream is exposed without a prefix.
    #[test]
    fn one_upstream_has_no_prefix() {
        let c = parse(
            "t.toml",
            "policy = \"p.json\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
            Path::new("/cfg"),
        )
        .unwrap();
        assert_eq!(c.upstreams[0].prefix, "");
        assert!(matches!(c.spec(), UpstreamSpec::Command { .. }));
    }

    /// `replica` needs a Redis store and a plain name; a bad one is located.
    #[test]
    fn a_replica_name_is_plain_and_needs_a_redis_store() {
        let c = parse(
            "t.toml",
            "policy = \"p.json\"\nstore = \"redis://127.0.0.1:6379\"\nreplica = \"gw-1\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
            Path::new("/cfg"),
        )
        .unwrap();
        assert_eq!(c.replica.as_deref(), Some("gw-1"));
        let e = errors(
            "policy = \"p.json\"\nstore = \"redis://127.0.0.1:6379\"\nreplica = \"gw@1\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
        );
        assert!(
            e.iter()
                .any(|e| e.contains("`gw@1` cannot name a replica") && e.contains("t.toml:3:")),
            "{e:?}"
        );
        let e = errors(
            "policy = \"p.json\"\nreplica = \"gw-1\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
        );
        assert!(e.iter().any(|e| e.contains("the store is memory")), "{e:?}");
    }

    /// `lock_mode` without `lock` is an error at `lock_mode` that says what to add.
    #[test]
    fn lock_mode_without_lock_is_an_error() {
        let e = errors(
            "policy = \"p.json\"\nlock_mode = \"warn\"\n[[upstream]]\nname = \"eks\"\ncommand = [\"srv\"]\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("`lock_mode` is given but `lock` is not"),
            "{}",
            e[0]
        );
        assert!(e[0].contains("t.toml:2:13"), "{}", e[0]);
        assert!(e[0].contains("add `lock = \"tollgate.lock\"`"), "{}", e[0]);
    }

    /// An unknown key is reported at its line and column, with the closest key.
    #[test]
    fn unknown_keys_are_located_with_a_suggestion() {
        let e = errors("policy = \"p.json\"\n[listen]\nadr = \"127.0.0.1:1\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("unknown key `adr`"), "{}", e[0]);
        assert!(e[0].contains("t.toml:3:1"), "{}", e[0]);
        assert!(e[0].contains("did you mean `addr`?"), "{}", e[0]);
    }

    /// Overlapping prefixes are refused, naming both upstreams.
    #[test]
    fn overlapping_prefixes_name_both_upstreams() {
        let e = errors(
            "policy = \"p\"\n[[upstream]]\nname = \"a\"\ncommand = [\"x\"]\nprefix = \"k_\"\n[[upstream]]\nname = \"b\"\ncommand = [\"y\"]\nprefix = \"k_v_\"\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("upstream `a`") && e[0].contains("upstream `b`"),
            "{}",
            e[0]
        );
    }

    /// Wrong types and bad values are errors at their place.
    #[test]
    fn wrong_types_and_bad_values_are_errors() {
        let e = errors("policy = 3\n[[upstream]]\nname = \"a\"\ncommand = [\"x\"]\n");
        assert!(e[0].contains("invalid type"), "{}", e[0]);
        let e = errors(
            "policy = \"p\"\nstore = \"mem\"\n[listen]\naddr = \"nowhere\"\n[[upstream]]\nname = \"a b\"\nurl = \"ftp://x\"\n",
        );
        assert_eq!(e.len(), 4, "{e:?}");
        let e = errors("policy = \"p\"\n");
        assert!(e[0].contains("names no upstream"), "{}", e[0]);
    }

    /// The exposed-name rule: one upstream has no prefix (even when one is given), several get
    /// the given one or `<name>__`; two prefixes overlap exactly when one starts the other.
    #[test]
    fn exposed_prefixes_and_overlaps_follow_one_rule() {
        assert_eq!(exposed_prefix("eks", None, false), "");
        assert_eq!(exposed_prefix("eks", Some("k."), false), "");
        assert_eq!(exposed_prefix("eks", None, true), "eks__");
        assert_eq!(exposed_prefix("eks", Some("k."), true), "k.");
        assert_eq!(
            overlapping_prefixes(&[("a", "eks__"), ("b", "omics__"), ("c", "eks__x")]),
            vec![(0, 2)]
        );
        assert!(overlapping_prefixes(&[("a", "a__"), ("b", "b__")]).is_empty());
    }
}
