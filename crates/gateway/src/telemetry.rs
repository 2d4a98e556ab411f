//! OpenTelemetry traces (docs/observability.md): one span per MCP request a client sends, with
//! the policy's decision on it, exported over OTLP/HTTP (protobuf) to `<endpoint>/v1/traces`.
//!
//! The spans are made with the OpenTelemetry API directly, not through `tracing`: a request's
//! span opens when the session core reads the request and closes when its answer leaves, often
//! in another call into the core (the upstream answers later), and its attributes become known
//! at different points (the decision, the answer). The core keeps each open span in a map by
//! the request's id ([`SessionTraces`]); nothing else of the gateway changes when telemetry is
//! off (the core holds no `SessionTraces` then).
//!
//! Trace context: a request continues the client's trace when it carries W3C trace context,
//! `params._meta.traceparent` (and `tracestate`: how MCP SDKs propagate it, the OpenTelemetry
//! MCP semantic conventions) or else the HTTP request's `traceparent` header. A forwarded request
//! carries the gateway span's context on to the upstream in its `params._meta` (what the MCP
//! SDKs read, over stdio and HTTP alike), and an HTTP upstream gets the `traceparent` and
//! `tracestate` headers too (crate::upstream).
//!
//! The export never holds a call up: a finished span is handed to the SDK's batch processor
//! (its own thread) or, when [`TelemetryConfig::max_queue`] spans are already waiting or being
//! sent, dropped and counted (`tollgate_trace_spans_dropped_total`), as are the spans of a batch
//! the endpoint refused or did not take within the export timeout. The batches are posted by the
//! gateway's own reqwest client (rustls) on the gateway's tokio runtime.
//!
//! No argument value is ever an attribute: the tool's name, the decision, the rule, the deciding
//! counter (its key is a grant, a session or `global`), the grant, the session and the outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;
use serde_json::{Map, Value};
use tollgate_policy::{CounterState, Decision};

use crate::core::Out;

/// The most finished spans waiting for export (or being sent) by default; more are dropped.
pub const DEFAULT_MAX_QUEUE: usize = 2048;
/// The bound on one export (connect, send, answer) by default.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most requests of one session with an open span; a request past it gets no span (the
/// core's own bounds on requests in flight are lower: this only bounds the map).
pub const MAX_OPEN_SPANS: usize = 4096;
/// The largest answer read from the OTLP endpoint (a collector answers a few bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The name the spans' instrumentation scope has.
const SCOPE: &str = "tollgate";

/// Where and how traces are exported (`[telemetry]`, `--otlp-endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP endpoint, e.g. `http://127.0.0.1:4318`: spans are posted to
    /// `<endpoint>/v1/traces`.
    pub otlp_endpoint: String,
    /// The `service.name` of the spans' resource.
    pub service_name: String,
    /// The most finished spans held for export; more are dropped and counted.
    pub max_queue: usize,
    /// The bound on one export.
    pub export_timeout: Duration,
}

impl TelemetryConfig {
    pub fn new(otlp_endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: otlp_endpoint.to_owned(),
            service_name: "tollgate".to_owned(),
            max_queue: DEFAULT_MAX_QUEUE,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }

    /// The URL the batches are posted to.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/'))
    }

    /// A setting that cannot work, said with what to write instead.
    pub fn check(&self) -> Result<(), String> {
        let e = &self.otlp_endpoint;
        let url = reqwest::Url::parse(e).map_err(|why| {
            format!("the OTLP endpoint `{e}` is not a URL ({why}): write the collector's OTLP/HTTP address, e.g. `http://127.0.0.1:4318`")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "the OTLP endpoint `{e}` is not an http(s) URL: write the collector's OTLP/HTTP address, e.g. `http://127.0.0.1:4318` (spans are posted to `<endpoint>/v1/traces`)"
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(
                "the telemetry `service_name` is empty: name the service, e.g. `tollgate`".into(),
            );
        }
        if self.max_queue == 0 {
            return Err("the telemetry `max_queue` is 0: give the number of spans held for export, e.g. 2048".into());
        }
        Ok(())
    }
}

/// The exporting side, shared by every session: the tracer, and the provider that flushes at
/// shutdown.
#[derive(Clone)]
pub struct Telemetry {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    /// What a span names as its upstream when the session has one upstream (its URL or
    /// command); with several, each call's own.
    upstream: Option<Arc<str>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Starts exporting: `client` posts the batches on `runtime`; `dropped` counts the spans
    /// that were not delivered.
    pub fn start(
        config: &TelemetryConfig,
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
        dropped: Counter,
    ) -> Result<Telemetry, String> {
        config.check()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime {
                client,
                runtime,
                timeout: config.export_timeout,
            })
            .with_endpoint(config.traces_url())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| format!("cannot export traces to `{}`: {e}", config.traces_url()))?;
        let held = Arc::new(AtomicUsize::new(0));
        let batch = BatchSpanProcessor::builder(Counted {
            inner: exporter,
            held: Arc::clone(&held),
            dropped: dropped.clone(),
            failing: AtomicBool::new(false),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(config.max_queue)
                .build(),
        )
        .build();
        let processor = Bounded {
            inner: batch,
            held,
            max: config.max_queue,
            dropped,
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Telemetry {
            tracer,
            provider,
            upstream: None,
        })
    }

    /// The same, naming `upstream` as every span's upstream (one upstream).
    pub fn with_upstream(mut self, upstream: &str) -> Telemetry {
        self.upstream = Some(Arc::from(upstream));
        self
    }

    /// Exports what is held and stops. Blocks (up to the export timeout): call it off the
    /// runtime's workers (`spawn_blocking`), which must keep running meanwhile.
    pub fn shutdown(&self) -> Result<(), String> {
        self.provider.shutdown().map_err(|e| e.to_string())
    }
}

/// A span processor that bounds what is held for export: a finished span is handed to the
/// batch processor only while fewer than `max` are waiting or being sent (`held`, which the
/// exporter lowers once a batch is sent or failed); otherwise it is dropped and counted. The
/// batch processor's own queue is as large, so it never drops one itself (its count of drops is
/// not public: this one is the gateway's metric).
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    held: Arc<AtomicUsize>,
    max: usize,
    dropped: Counter,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            self.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting the spans of each batch it could not deliver and releasing the
/// batch's room in [`Bounded`].
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    held: Arc<AtomicUsize>,
    dropped: Counter,
    /// Whether the last export failed.
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.held.fetch_sub(n, Ordering::AcqRel);
        match &result {
            Err(e) => {
                self.dropped.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
                // Said once when exports start failing, not once per batch.
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        "traces: {n} span(s) not exported ({e}); spans are dropped and counted in tollgate_trace_spans_dropped_total until the OTLP endpoint takes them again (calls are not affected)"
                    );
                } else {
                    tracing::debug!("traces: {n} span(s) not exported: {e}");
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::warn!("traces: the OTLP endpoint takes spans again");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's HTTP client: the gateway's reqwest client, run on the gateway's tokio runtime
/// (the batch processor calls it from its own thread), each request bounded by `timeout`.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .timeout(timeout)
                .send()
                .await?;
            let mut answer = Response::builder().status(resp.status());
            if let Some(h) = answer.headers_mut() {
                *h = std::mem::take(resp.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(HttpError::from(format!(
                        "the OTLP endpoint's answer is over {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, HttpError>(answer.body(Bytes::from(body))?)
        });
        task.await?
    }
}

/// W3C trace context as a request carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carrier {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl Carrier {
    /// The context it names, if `traceparent` is valid W3C trace context.
    fn context(&self) -> Option<Context> {
        let mut map = HashMap::with_capacity(2);
        map.insert("traceparent".to_owned(), self.traceparent.clone());
        if let Some(s) = &self.tracestate {
            map.insert("tracestate".to_owned(), s.clone());
        }
        let cx = TraceContextPropagator::new().extract(&map);
        cx.span().span_context().is_valid().then_some(cx)
    }

    /// What `params._meta` carries, if it has a `traceparent` string.
    pub fn of_meta(params: Option<&Value>) -> Option<Carrier> {
        let meta = params?.get("_meta")?;
        Some(Carrier {
            traceparent: meta.get("traceparent")?.as_str()?.to_owned(),
            tracestate: meta
                .get("tracestate")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// What a span says of its request.
#[derive(Debug, Clone, Copy)]
pub struct McpRequest<'a> {
    pub id: &'a Value,
    pub method: &'a str,
    pub params: Option<&'a Value>,
    pub session: &'a str,
    pub grant: &'a str,
    pub protocol: Option<&'a str>,
}

/// How a request ended, for its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A result (not `isError`).
    Result,
    /// A tool result with `isError` from the upstream.
    ToolError,
    /// Refused by the gateway (the policy, or the gateway's own bounds): an `isError` result
    /// the gateway made.
    Refused,
    /// The upstream answered a JSON-RPC error, did not answer in time, or went away.
    UpstreamError,
    /// The gateway answered a JSON-RPC error itself (a malformed request).
    Error,
    /// The session ended before the answer.
    Abandoned,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Result => "result",
            Outcome::ToolError => "tool_error",
            Outcome::Refused => "refused",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Error => "error",
            Outcome::Abandoned => "abandoned",
        }
    }
}

#[derive(Debug)]
struct Open {
    span: opentelemetry_sdk::trace::Span,
    /// Whether the request was sent on to the upstream.
    forwarded: bool,
    decided: bool,
    /// Requests that reused this one's id while it was in flight, whose refusals are still to
    /// come out under the same id.
    duplicates: u32,
}

/// One session's open spans, by the request's id (its JSON text), and the HTTP request's trace
/// context while the transport hands the core that request's message.
#[derive(Debug)]
pub struct SessionTraces {
    telemetry: Telemetry,
    open: HashMap<String, Open>,
    header: Option<Carrier>,
}

impl SessionTraces {
    pub fn new(telemetry: Telemetry) -> SessionTraces {
        SessionTraces {
            telemetry,
            open: HashMap::new(),
            header: None,
        }
    }

    /// The trace context of the HTTP request whose message comes next (`None` after it).
    pub fn set_header(&mut self, carrier: Option<Carrier>) {
        self.header = carrier;
    }

    /// A request from the client: its span opens, a child of the client's span when the request
    /// (`_meta`) or its HTTP request (header) carries trace context. `reused`: its id is in
    /// flight, and the gateway refuses it at once (that answer does not end the first one's
    /// span). A request seen again that is not reused (a call that waited for the tool list)
    /// keeps its span.
    pub fn request(&mut self, key: String, r: &McpRequest<'_>, reused: bool) {
        let McpRequest {
            id,
            method,
            params,
            session,
            grant,
            protocol,
        } = *r;
        if let Some(open) = self.open.get_mut(&key) {
            if reused {
                open.duplicates += 1;
            }
            return;
        }
        if self.open.len() >= MAX_OPEN_SPANS {
            return;
        }
        let parent = Carrier::of_meta(params)
            .and_then(|c| c.context())
            .or_else(|| self.header.as_ref().and_then(Carrier::context))
            .unwrap_or_default();
        let tool = (method == "tools/call")
            .then(|| params?.get("name")?.as_str())
            .flatten();
        let name = match tool {
            Some(t) => format!("{method} {t}"),
            None => method.to_owned(),
        };
        let mut attributes = vec![
            KeyValue::new("mcp.method.name", method.to_owned()),
            KeyValue::new("jsonrpc.request.id", id_text(id)),
            KeyValue::new("mcp.session.id", session.to_owned()),
            KeyValue::new("tollgate.grant", grant.to_owned()),
        ];
        if let Some(t) = tool {
            attributes.push(KeyValue::new("gen_ai.tool.name", t.to_owned()));
            attributes.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        }
        if let Some(p) = protocol {
            attributes.push(KeyValue::new("mcp.protocol.version", p.to_owned()));
        }
        if let Some(u) = &self.telemetry.upstream {
            attributes.push(KeyValue::new("tollgate.upstream", u.to_string()));
        }
        let span = self
            .telemetry
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(SystemTime::now())
            .with_attributes(attributes)
            .start_with_context(&self.telemetry.tracer, &parent);
        self.open.insert(
            key,
            Open {
                span,
                forwarded: false,
                decided: false,
                duplicates: 0,
            },
        );
    }

    /// The policy's decision on the call `key`: its kind, rule, reason and deciding counter.
    pub fn decision(&mut self, key: &str, decision: &Decision, upstream: Option<&str>) {
        let Some(open) = self.open.get_mut(key) else {
            return;
        };
        open.decided = true;
        let span = &mut open.span;
        span.set_attribute(KeyValue::new("tollgate.decision", decision.kind.name()));
        span.set_attribute(KeyValue::new(
            "tollgate.rule",
            decision.rule.selector.to_string(),
        ));
        span.set_attribute(KeyValue::new(
            "tollgate.rule.pointer",
            decision.rule.pointer.to_string(),
        ));
        if let Some(reason) = &decision.reason {
            span.set_attribute(KeyValue::new("tollgate.reason", reason.to_string()));
        }
        if let Some(u) = upstream {
            span.set_attribute(KeyValue::new("tollgate.upstream", u.to_owned()));
        }
        if let Some(s) = deciding(&decision.limits) {
            span.set_attribute(KeyValue::new(
                "tollgate.limit.counter",
                s.counter.to_string(),
            ));
            span.set_attribute(KeyValue::new("tollgate.limit.key", s.key.to_string()));
            span.set_attribute(KeyValue::new("tollgate.limit.used", i64::from(s.used)));
            span.set_attribute(KeyValue::new("tollgate.limit.max", i64::from(s.max)));
            span.set_attribute(KeyValue::new(
                "tollgate.limit.window_seconds",
                s.window.as_secs_f64(),
            ));
        }
        if let Some(f) = &decision.store_unavailable {
            span.set_attribute(KeyValue::new(
                "tollgate.store_unavailable",
                f.store.to_string(),
            ));
        }
    }

    /// What leaves the core: a request forwarded upstream carries its span's context in
    /// `params._meta`; an answer to the client ends its span.
    pub fn outs(&mut self, outs: &mut [Out]) {
        if self.open.is_empty() {
            return;
        }
        for o in outs {
            match o {
                Out::Upstream(Value::Array(items)) => {
                    items.iter_mut().for_each(|m| self.forwarded(m));
                }
                Out::Upstream(m) => self.forwarded(m),
                Out::Client(Value::Array(items)) => items.iter().for_each(|m| self.answered(m)),
                Out::Client(m) => self.answered(m),
            }
        }
    }

    fn forwarded(&mut self, m: &mut Value) {
        if m.get("method").is_none() {
            return;
        }
        let Some(key) = m.get("id").and_then(crate::core::client_id_key) else {
            return;
        };
        let Some(open) = self.open.get_mut(&key) else {
            return;
        };
        open.forwarded = true;
        let cx = Context::new().with_remote_span_context(open.span.span_context().clone());
        let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        let Some(params) = m.as_object_mut().map(|o| {
            o.entry("params")
                .or_insert_with(|| Value::Object(Map::new()))
        }) else {
            return;
        };
        let Some(params) = params.as_object_mut() else {
            return;
        };
        let meta = params
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.remove("tracestate");
            for (k, v) in carrier {
                meta.insert(k, Value::String(v));
            }
        }
    }

    fn answered(&mut self, m: &Value) {
        if m.get("method").is_some() {
            return;
        }
        let Some(key) = m.get("id").map(crate::core::answer_id_key) else {
            return;
        };
        if let Some(open) = self.open.get_mut(&key)
            && open.duplicates > 0
        {
            open.duplicates -= 1;
            return;
        }
        let Some(mut open) = self.open.remove(&key) else {
            return;
        };
        let span = &mut open.span;
        let outcome = if let Some(e) = m.get("error") {
            let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
            span.set_attribute(KeyValue::new("rpc.response.status_code", code.to_string()));
            span.set_attribute(KeyValue::new("error.type", code.to_string()));
            if open.forwarded {
                Outcome::UpstreamError
            } else {
                Outcome::Error
            }
        } else {
            let result = m.get("result");
            let own = result
                .and_then(|r| r.get("_meta"))
                .and_then(|meta| meta.get(crate::refusal::META_KEY))
                .and_then(|d| d.get("decision"))
                .and_then(Value::as_str);
            let is_error = result
                .and_then(|r| r.get("isError"))
                .and_then(Value::as_bool)
                == Some(true);
            match own {
                Some(d @ ("upstream_timeout" | "upstream_failed")) => {
                    span.set_attribute(KeyValue::new("error.type", d.to_owned()));
                    Outcome::UpstreamError
                }
                Some(d) if is_error => {
                    if !open.decided {
                        span.set_attribute(KeyValue::new("tollgate.decision", d.to_owned()));
                    }
                    Outcome::Refused
                }
                _ if is_error => {
                    span.set_attribute(KeyValue::new("error.type", "tool_error"));
                    Outcome::ToolError
                }
                _ => Outcome::Result,
            }
        };
        end(span, outcome);
    }
}

impl Drop for SessionTraces {
    /// The session ended: the requests still open end as `abandoned`.
    fn drop(&mut self) {
        for (_, mut open) in self.open.drain() {
            end(&mut open.span, Outcome::Abandoned);
        }
    }
}

fn end(span: &mut opentelemetry_sdk::trace::Span, outcome: Outcome) {
    span.set_attribute(KeyValue::new("tollgate.outcome", outcome.name()));
    match outcome {
        Outcome::Result | Outcome::Refused => {}
        Outcome::ToolError => span.set_status(Status::error("the tool answered an error")),
        Outcome::UpstreamError => span.set_status(Status::error("the upstream failed")),
        Outcome::Error => span.set_status(Status::error("the request was refused as invalid")),
        Outcome::Abandoned => span.set_status(Status::error("the session ended first")),
    }
    span.end_with_timestamp(SystemTime::now());
}

/// The counter that decided: the first full one, or else the fullest.
fn deciding(limits: &[CounterState]) -> Option<&CounterState> {
    limits.iter().find(|s| s.used >= s.max).or_else(|| {
        limits.iter().max_by(|a, b| {
            let ratio = |s: &CounterState| f64::from(s.used) / f64::from(s.max.max(1));
            ratio(a).total_cmp(&ratio(b))
        })
    })
}

/// A JSON-RPC id as a span attribute: a string's text, a number's digits.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// A valid `traceparent` names a remote parent; a malformed one is no context at all (the
    /// span starts a trace of its own).
    #[test]
    fn only_valid_trace_context_is_a_parent() {
        let good = Carrier {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("k=v".into()),
        };
        let cx = good.context().unwrap();
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote() && sc.is_sampled());
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "not trace context",
        ] {
            let c = Carrier {
                traceparent: bad.into(),
                tracestate: None,
            };
            assert!(c.context().is_none(), "{bad}");
        }
    }

    /// `_meta` carries trace context as strings; anything else is none.
    #[test]
    fn meta_carries_trace_context_as_strings() {
        let p = serde_json::json!({"_meta": {"traceparent": "x", "tracestate": "a=b"}});
        assert_eq!(
            Carrier::of_meta(Some(&p)),
            Some(Carrier {
                traceparent: "x".into(),
                tracestate: Some("a=b".into())
            })
        );
        let p = serde_json::json!({"_meta": {"traceparent": 7}});
        assert_eq!(Carrier::of_meta(Some(&p)), None);
        assert_eq!(Carrier::of_meta(None), None);
    }

    /// The deciding counter is the first full one, else the fullest.
    #[test]
    fn the_deciding_counter_is_the_full_one_else_the_fullest() {
        let s = |c: &str, used, max| CounterState {
            counter: Arc::from(c),
            key: Arc::from("g"),
            used,
            max,
            window: Duration::from_secs(60),
            oldest_leaves_at: None,
            counts: Default::default(),
        };
        let limits = [s("a", 1, 10), s("b", 5, 10), s("c", 3, 3)];
        assert_eq!(&*deciding(&limits).unwrap().counter, "c");
        assert_eq!(&*deciding(&limits[..2]).unwrap().counter, "b");
        assert!(deciding(&[]).is_none());
    }

    /// The spans a test's session ends, exported as they end.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<std::sync::Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    impl Collect {
        /// `(name, outcome, decision)` of each span ended so far.
        fn ended(&self) -> Vec<(String, String, String)> {
            let attr = |s: &SpanData, k: &str| {
                s.attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == k)
                    .map(|kv| kv.value.to_string())
                    .unwrap_or_default()
            };
            let spans = self.0.lock().unwrap();
            spans
                .iter()
                .map(|s| {
                    let outcome = attr(s, "tollgate.outcome");
                    (s.name.to_string(), outcome, attr(s, "tollgate.decision"))
                })
                .collect()
        }
    }

    fn session() -> (SessionTraces, Collect) {
        let collect = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collect.clone())
            .build();
        let telemetry = Telemetry {
            tracer: provider.tracer(SCOPE),
            provider,
            upstream: None,
        };
        (SessionTraces::new(telemetry), collect)
    }

    fn request_reused(t: &mut SessionTraces, id: u64, method: &str, reused: bool) {
        let params = serde_json::json!({"name": "echo", "arguments": {"text": "x"}});
        let id_value = Value::from(id);
        let r = McpRequest {
            id: &id_value,
            method,
            params: Some(&params),
            session: "s",
            grant: "g",
            protocol: None,
        };
        t.request(id.to_string(), &r, reused);
    }

    fn request(t: &mut SessionTraces, id: u64, method: &str) {
        request_reused(t, id, method, false);
    }

    /// Each answer ends its request's span with its outcome: a result, the gateway's refusal
    /// (its decision named), a JSON-RPC error after forwarding (the upstream's) or before (the
    /// gateway's); a forwarded request carries the span's context in `_meta`; the refusal of a
    /// second request reusing an id in flight does not end the first one's span; the session's
    /// end ends what is still open.
    #[test]
    fn answers_end_spans_with_their_outcome() {
        let (mut t, spans) = session();
        request(&mut t, 1, "tools/call");
        let mut out = [Out::Upstream(
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}),
        )];
        t.outs(&mut out);
        let Out::Upstream(sent) = &out[0] else {
            panic!()
        };
        let open = &t.open["1"].span;
        let expected = format!(
            "00-{}-{}-01",
            open.span_context().trace_id(),
            open.span_context().span_id()
        );
        assert_eq!(sent["params"]["_meta"]["traceparent"], expected.as_str());
        // The same request again, after waiting for the tool list: the same span.
        request(&mut t, 1, "tools/call");
        // The same id again while in flight: refused at once, the first still open.
        request_reused(&mut t, 1, "tools/call", true);
        t.outs(&mut [Out::Client(serde_json::json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "in flight"}}))]);
        assert!(spans.ended().is_empty());
        t.outs(&mut [Out::Client(serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": false}}))]);
        request(&mut t, 2, "tools/call");
        let refusal = crate::refusal::gateway("echo", "g", "unknown_tool", "no".into());
        t.outs(&mut [Out::Client(
            serde_json::json!({"jsonrpc": "2.0", "id": 2, "result": refusal}),
        )]);
        request(&mut t, 3, "tools/call");
        t.outs(&mut [Out::Upstream(
            serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {}}),
        )]);
        t.outs(&mut [Out::Client(serde_json::json!([{"jsonrpc": "2.0", "id": 3, "error": {"code": -32000, "message": "boom"}}]))]);
        request(&mut t, 4, "tools/list");
        t.outs(&mut [Out::Client(serde_json::json!({"jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": "bad"}}))]);
        request(&mut t, 5, "tools/call");
        request(&mut t, 6, "tools/call");
        t.outs(&mut [Out::Client(serde_json::json!({"jsonrpc": "2.0", "id": 6, "result": {"content": [], "isError": true}}))]);
        drop(t);
        let ended = spans.ended();
        let of = |name: &str, outcome: &str, decision: &str| {
            (name.to_owned(), outcome.to_owned(), decision.to_owned())
        };
        assert_eq!(
            ended,
            [
                of("tools/call echo", "result", ""),
                of("tools/call echo", "refused", "unknown_tool"),
                of("tools/call echo", "upstream_error", ""),
                of("tools/list", "error", ""),
                of("tools/call echo", "tool_error", ""),
                of("tools/call echo", "abandoned", ""),
            ]
        );
    }

    /// An endpoint must be an http(s) URL; spans go to its `/v1/traces`.
    #[test]
    fn endpoints_are_http_urls_and_traces_go_to_v1_traces() {
        let c = TelemetryConfig::new("http://127.0.0.1:4318/");
        assert_eq!(c.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert!(c.check().is_ok());
        for bad in ["127.0.0.1:4318", "ftp://x", "http://"] {
            let e = TelemetryConfig::new(bad).check().unwrap_err();
            assert!(e.contains("OTLP endpoint"), "{e}");
        }
    }
}
