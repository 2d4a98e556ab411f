//! Prometheus metrics (`GET /metrics` on the HTTP front): decisions by tool, decision and rule;
//! upstream latency by tool; calls in flight; calls waiting for approval; how full each counter
//! is. Behind several upstreams, decisions and latencies also carry the tool's `upstream` (a
//! gateway of one upstream leaves the label out, so its series are as they were).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tollgate_mcp::Recent;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct DecisionLabels {
    pub tool: String,
    pub decision: String,
    pub rule: String,
    /// The upstream the tool is routed to; `None` (no label) for a gateway of one upstream.
    pub upstream: Option<String>,
}

impl EncodeLabelSet for DecisionLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("tool", self.tool.as_str()).encode(encoder.encode_label())?;
        ("decision", self.decision.as_str()).encode(encoder.encode_label())?;
        ("rule", self.rule.as_str()).encode(encoder.encode_label())?;
        encode_upstream(self.upstream.as_deref(), encoder)
    }
}

/// The `upstream` label, only when there is one to name.
fn encode_upstream(
    upstream: Option<&str>,
    encoder: &mut LabelSetEncoder,
) -> Result<(), std::fmt::Error> {
    match upstream {
        Some(name) => ("upstream", name).encode(encoder.encode_label()),
        None => Ok(()),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CounterLabels {
    pub counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A drift from the lock file (docs/pinning.md): `change` is `changed` or `added`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PinDriftLabels {
    pub upstream: String,
    pub tool: String,
    pub change: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ToolLabels {
    pub tool: String,
    /// As [`DecisionLabels::upstream`].
    pub upstream: Option<String>,
}

impl EncodeLabelSet for ToolLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("tool", self.tool.as_str()).encode(encoder.encode_label())?;
        encode_upstream(self.upstream.as_deref(), encoder)
    }
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub upstream_latency: Family<ToolLabels, Histogram>,
    pub in_flight: Gauge<i64, AtomicI64>,
    /// Calls held for a human's approval and not decided yet (all sessions).
    pub approvals_pending: Gauge<i64, AtomicI64>,
    /// Per counter: `used / max` of the key the latest decision measured (1 is full).
    pub counter_saturation: Family<CounterLabels, Gauge<f64, AtomicU64>>,
    /// Per counter: decisions that found it full (the call was rate limited by it).
    pub counter_full: Family<CounterLabels, Counter>,
    /// Client messages refused before any decision (a `tools/call` notification, a look-alike
    /// or malformed method name, an id in flight, a batch the protocol does not allow), by why.
    pub refused_messages: Family<ReasonLabels, Counter>,
    /// The audit log's size and rotations (docs/audit.md, "Rotation").
    pub audit: crate::audit::AuditMetrics,
    /// Listed tools that do not match the lock file, each drift counted once (the gateway
    /// audits it once): docs/pinning.md.
    pub pin_drift: Family<PinDriftLabels, Counter>,
    /// Finished spans that were not exported (docs/observability.md): the export queue was full,
    /// or the OTLP endpoint refused or did not take their batch in time. Telemetry never holds
    /// a call up; this says what it lost.
    pub trace_spans_dropped: Counter,
}

/// Handles to series of a [`Metrics`]' families (a handle shares its series' value), by a hash
/// of their labels: finding one costs a hash of the label values, where the family's own lookup
/// builds and hashes its owned labels on every call. Each session core keeps its own, so
/// sessions on different threads share no lock to count their decisions.
#[derive(Debug, Default)]
pub struct MetricHandles {
    hasher: foldhash::fast::FixedState,
    decisions: HashMap<u64, Vec<(DecisionLabels, Counter)>, foldhash::fast::FixedState>,
    counters: HashMap<u64, Vec<CounterHandles>, foldhash::fast::FixedState>,
    latencies: HashMap<u64, Vec<(String, Histogram)>, foldhash::fast::FixedState>,
    /// The decision series found last, by the very names (shared `Arc`s, kept alive here) of
    /// the tool and the rule: a replayed step's calls share them, and find their series with
    /// no hash and no comparison of text.
    recent_decisions: Recent<(Arc<str>, &'static str, Arc<str>, Counter)>,
    /// The counter series found last, by the counter's shared name.
    recent_counters: Recent<(Arc<str>, Gauge<f64, AtomicU64>, Counter)>,
    /// The latency series found last, by the tool's shared name.
    recent_latencies: Recent<(Arc<str>, Histogram)>,
}

/// The entry of `bucket` (the handles whose labels share a hash) that `is` picks, pushed from
/// `make` when there is none.
fn find_or_push<T>(
    bucket: &mut Vec<T>,
    is: impl FnMut(&T) -> bool,
    make: impl FnOnce() -> T,
) -> Option<&T> {
    match bucket.iter().position(is) {
        Some(i) => bucket.get(i),
        None => {
            bucket.push(make());
            bucket.last()
        }
    }
}

#[derive(Debug)]
struct CounterHandles {
    counter: String,
    saturation: Gauge<f64, AtomicU64>,
    full: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Tool calls decided, by tool, decision and rule",
            decisions.clone(),
        );
        let upstream_latency = Family::<ToolLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 52 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 20))
        });
        registry.register(
            "upstream_latency_seconds",
            "Time from forwarding a call to its answer",
            upstream_latency.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "calls_in_flight",
            "Calls forwarded and not answered yet",
            in_flight.clone(),
        );
        let approvals_pending = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "approvals_pending",
            "Calls held for a human's approval, not decided yet",
            approvals_pending.clone(),
        );
        let counter_saturation = Family::<CounterLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "counter_saturation_ratio",
            "Used over max of the counter key the latest decision measured (1 is full); keys are not labels, so sessions cannot blow up the series",
            counter_saturation.clone(),
        );
        let counter_full = Family::<CounterLabels, Counter>::default();
        registry.register(
            "counter_full",
            "Decisions that found the counter full",
            counter_full.clone(),
        );
        let refused_messages = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refused_messages",
            "Client messages refused before any decision, by reason (docs/security.md)",
            refused_messages.clone(),
        );
        let pin_drift = Family::<PinDriftLabels, Counter>::default();
        registry.register(
            "pin_drift",
            "Listed tools whose definition does not match the lock file (changed, or added), each drift once (docs/pinning.md)",
            pin_drift.clone(),
        );
        let audit = crate::audit::AuditMetrics::default();
        registry.register(
            "audit_log_bytes",
            "Bytes in the audit log's current file",
            audit.bytes.clone(),
        );
        registry.register(
            "audit_rotations",
            "Audit log rotations since the gateway started",
            audit.rotations.clone(),
        );
        registry.register(
            "audit_last_rotation_timestamp_seconds",
            "Unix time of the audit log's last rotation (0: none since the gateway started)",
            audit.last_rotation.clone(),
        );
        let trace_spans_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Finished spans not exported: the export queue was full, or the OTLP endpoint refused or did not take their batch in time",
            trace_spans_dropped.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Writes of the audit log that failed (full disk, file size limit...): the call each was for was refused",
            audit.write_failures.clone(),
        );
        registry.register(
            "audit_failing",
            "1 while the audit log cannot be written (every call is refused as audit_unavailable), else 0",
            audit.failing.clone(),
        );
        Metrics {
            trace_spans_dropped,
            audit,
            pin_drift,
            refused_messages,
            registry,
            counter_saturation,
            counter_full,
            approvals_pending,
            decisions,
            upstream_latency,
            in_flight,
        }
    }
}

impl Metrics {
    /// Counts a drift from the lock file (once per drift: the caller knows which are new).
    pub fn observe_pin_drift(&self, upstream: &str, tool: &str, change: &str) {
        self.pin_drift
            .get_or_create(&PinDriftLabels {
                upstream: upstream.to_owned(),
                tool: tool.to_owned(),
                change: change.to_owned(),
            })
            .inc();
    }

    /// Counts a client message refused before any decision (`reason`: a fixed name).
    pub fn observe_refused_message(&self, reason: &str) {
        self.refused_messages
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one decision, and records how full its counters are (`handles`: the caller's
    /// handles to these metrics' series).
    pub fn observe_decision(
        &self,
        handles: &mut MetricHandles,
        tool: &Arc<str>,
        upstream: Option<&str>,
        decision: &tollgate_policy::Decision,
    ) {
        let MetricHandles {
            hasher,
            decisions,
            counters,
            recent_decisions,
            recent_counters,
            ..
        } = handles;
        let (kind, rule) = (decision.kind.name(), &decision.rule.selector);
        let recent = recent_decisions
            .find(|(t, k, r, _)| Arc::ptr_eq(t, tool) && Arc::ptr_eq(r, rule) && *k == kind);
        if let Some((.., counter)) = recent {
            counter.inc();
        } else {
            let (tool_name, rule_name) = (&**tool, &**rule);
            let bucket = decisions
                .entry(hasher.hash_one((tool_name, kind, rule_name)))
                .or_default();
            let found = find_or_push(
                bucket,
                |(l, _)| {
                    (l.tool.as_str(), l.decision.as_str(), l.rule.as_str())
                        == (tool_name, kind, rule_name)
                },
                || {
                    let labels = DecisionLabels {
                        tool: tool_name.to_owned(),
                        decision: kind.to_owned(),
                        rule: rule_name.to_owned(),
                        upstream: upstream.map(str::to_owned),
                    };
                    let counter = self.decisions.get_or_create(&labels).clone();
                    (labels, counter)
                },
            );
            if let Some((_, counter)) = found {
                counter.inc();
                let kept = (Arc::clone(tool), kind, Arc::clone(rule), counter.clone());
                recent_decisions.keep(kept);
            }
        }
        let limited = matches!(
            decision.kind,
            tollgate_policy::DecisionKind::RateLimited { .. }
                | tollgate_policy::DecisionKind::ErrorLimited { .. }
        );
        for state in &decision.limits {
            let ratio = f64::from(state.used) / f64::from(state.max.max(1));
            let full = limited && state.used >= state.max;
            if let Some((_, saturation, counter)) =
                recent_counters.find(|(c, ..)| Arc::ptr_eq(c, &state.counter))
            {
                saturation.set(ratio);
                if full {
                    counter.inc();
                }
                continue;
            }
            let name = &*state.counter;
            let bucket = counters.entry(hasher.hash_one(name)).or_default();
            let found = find_or_push(
                bucket,
                |h| h.counter == name,
                || {
                    let labels = CounterLabels {
                        counter: name.to_owned(),
                    };
                    CounterHandles {
                        counter: name.to_owned(),
                        saturation: self.counter_saturation.get_or_create(&labels).clone(),
                        full: self.counter_full.get_or_create(&labels).clone(),
                    }
                },
            );
            let Some(h) = found else {
                continue;
            };
            h.saturation.set(ratio);
            if full {
                h.full.inc();
            }
            let kept = (
                Arc::clone(&state.counter),
                h.saturation.clone(),
                h.full.clone(),
            );
            recent_counters.keep(kept);
        }
    }

    /// Records how long an upstream took to answer a call of `tool` (`handles`: as for
    /// [`Metrics::observe_decision`]).
    pub fn observe_latency(
        &self,
        handles: &mut MetricHandles,
        tool: &Arc<str>,
        upstream: Option<&str>,
        took: std::time::Duration,
    ) {
        let MetricHandles {
            hasher,
            latencies,
            recent_latencies,
            ..
        } = handles;
        if let Some((_, histogram)) = recent_latencies.find(|(t, _)| Arc::ptr_eq(t, tool)) {
            histogram.observe(took.as_secs_f64());
            return;
        }
        let bucket = latencies.entry(hasher.hash_one(&**tool)).or_default();
        let found = find_or_push(
            bucket,
            |(t, _)| **t == **tool,
            || {
                let labels = ToolLabels {
                    tool: tool.to_string(),
                    upstream: upstream.map(str::to_owned),
                };
                let histogram = self.upstream_latency.get_or_create(&labels).clone();
                (tool.to_string(), histogram)
            },
        );
        if let Some((_, histogram)) = found {
            histogram.observe(took.as_secs_f64());
            recent_latencies.keep((Arc::clone(tool), histogram.clone()));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tollgate_policy::{CounterState, Decision, DecisionKind, RuleRef};

    use super::{MetricHandles, Metrics};

    /// Sessions count into the same series through their own handles: the exposition shows
    /// every session's decisions, latencies and full counters together.
    #[test]
    fn handles_of_several_sessions_share_the_series() {
        let metrics = Metrics::default();
        let decision = Decision {
            kind: DecisionKind::RateLimited {
                retry_after: Duration::from_secs(5),
            },
            rule: RuleRef {
                selector: Arc::from("Cancel*"),
                pointer: Arc::from("/tools/Cancel*"),
                line: 1,
                column: 1,
            },
            reason: None,
            limits: vec![CounterState {
                counter: Arc::from("cancels"),
                key: Arc::from("ci-bot"),
                used: 2,
                max: 2,
                window: Duration::from_secs(60),
                oldest_leaves_at: None,
                counts: tollgate_policy::Counts::Calls,
            }],
            store_unavailable: None,
            on_error: Vec::new(),
        };
        let (mut a, mut b) = (MetricHandles::default(), MetricHandles::default());
        let tool: Arc<str> = Arc::from("CancelRun");
        metrics.observe_decision(&mut a, &tool, None, &decision);
        metrics.observe_decision(&mut b, &tool, None, &decision);
        metrics.observe_decision(&mut a, &tool, None, &decision);
        // Equal names in other allocations find the same series.
        let mut alike = decision.clone();
        alike.rule.selector = Arc::from("Cancel*");
        alike.limits[0].counter = Arc::from("cancels");
        metrics.observe_decision(&mut a, &Arc::from("CancelRun"), None, &alike);
        let read: Arc<str> = Arc::from("GetRun");
        metrics.observe_latency(&mut a, &read, None, Duration::from_millis(3));
        metrics.observe_latency(&mut b, &read, None, Duration::from_millis(5));
        metrics.observe_latency(&mut a, &read, None, Duration::from_millis(4));
        metrics.observe_latency(&mut a, &Arc::from("GetRun"), None, Duration::from_millis(4));
        let text = metrics.encode();
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            line("tollgate_decisions_total{"),
            r#"tollgate_decisions_total{tool="CancelRun",decision="rate_limited",rule="Cancel*"} 4"#
        );
        assert_eq!(
            line("tollgate_counter_full_total{"),
            r#"tollgate_counter_full_total{counter="cancels"} 4"#
        );
        assert_eq!(
            line("tollgate_upstream_latency_seconds_count{"),
            r#"tollgate_upstream_latency_seconds_count{tool="GetRun"} 4"#
        );
        // Behind several upstreams the series name the tool's upstream too.
        let routed: Arc<str> = Arc::from("eks__list_k8s_resources");
        metrics.observe_decision(&mut a, &routed, Some("eks"), &decision);
        metrics.observe_latency(&mut a, &routed, Some("eks"), Duration::from_millis(2));
        let text = metrics.encode();
        assert!(
            text.contains(r#"tollgate_decisions_total{tool="eks__list_k8s_resources",decision="rate_limited",rule="Cancel*",upstream="eks"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tollgate_upstream_latency_seconds_count{tool="eks__list_k8s_resources",upstream="eks"} 1"#),
            "{text}"
        );
    }
}
