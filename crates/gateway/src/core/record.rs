//! The `--record FILE` writer, and what a session writes to it (every message both ways,
//! redacted as the audit log is).

use super::*;

/// The `--record FILE` writer: every message of every session, one JSON line each
/// (docs/gateway.md, "Recordings"): `{"t_ms", "session", "grant", "dir", "message"}` where `dir`
/// is `client` (from the client), `to_client`, `to_upstream` or `upstream` (from the upstream).
/// Messages only: HTTP headers (and so bearer tokens) are never recorded.
#[derive(Debug)]
pub struct Recorder {
    pub(super) file: std::fs::File,
}

impl Recorder {
    pub fn create(path: &std::path::Path) -> std::io::Result<Recorder> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Recorder { file })
    }

    pub(super) fn write(&mut self, line: &Value) {
        use std::io::Write;
        // A recording is a debugging aid: a failed write must not stop the gateway.
        let _ = writeln!(self.file, "{line}");
    }
}

impl SessionCore {
    pub(super) fn record_in(&self, dir: &str, bytes: &[u8], now: Duration) {
        if self.gateway.recorder.is_some() {
            let message = match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => self.redacted_for_record(v),
                // Text that is not JSON cannot be searched for the arguments to redact: under
                // a policy that redacts, only its size is written.
                Err(_) if self.gateway.engine().policy().redacts_anything() => json!({
                    "unparsed": format!("[redacted: {} bytes that are not JSON]", bytes.len())
                }),
                Err(_) => json!({"unparsed": String::from_utf8_lossy(bytes)}),
            };
            self.gateway
                .record(now, &self.session, &self.grant, dir, message);
        }
    }

    /// What every batch of outputs goes through before it leaves: the spans of the requests
    /// (trace context added to what is forwarded, answers ending theirs), the stateless
    /// protocol's `resultType` on each result the client gets, then the recording.
    pub(super) fn record_out(&mut self, outs: &mut [Out], now: Duration) {
        if let Some(t) = &mut self.traces {
            t.outs(outs);
        }
        if self.stateless {
            for o in outs.iter_mut() {
                if let Out::Client(v) = o {
                    complete(v);
                }
            }
        }
        if self.gateway.recorder.is_some() {
            for o in outs {
                let (dir, v) = match o {
                    Out::Client(v) => ("to_client", v),
                    Out::Upstream(v) => ("to_upstream", v),
                };
                let v = self.redacted_for_record(v.clone());
                self.gateway.record(now, &self.session, &self.grant, dir, v);
            }
        }
    }

    /// A message as a recording keeps it: the arguments of every call in it (any message with
    /// `params.name` and `params.arguments`, whatever its method) redacted as the policy's rule
    /// for that tool says, exactly as the audit log redacts them.
    pub(super) fn redacted_for_record(&self, mut v: Value) -> Value {
        if let Value::Array(items) = &mut v {
            for item in items.iter_mut() {
                *item = self.redacted_for_record(item.take());
            }
            return v;
        }
        let Some(params) = v.get_mut("params") else {
            return v;
        };
        let Some(name) = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return v;
        };
        let Some(arguments) = params.get_mut("arguments").filter(|a| a.is_object()) else {
            return v;
        };
        let info = self
            .advertised
            .as_ref()
            .and_then(|a| a.get(&name))
            .cloned()
            .unwrap_or_else(|| {
                tool_info(&json!({ "name": name }), &self.gateway.options.classifiers)
            });
        let mut meta = meta_of(arguments, &info);
        meta.upstream = upstream_name(&self.gateway.options, &name);
        let names = self.gateway.engine().policy().redactions(&name, &meta);
        if !names.is_empty() {
            *arguments = redact(arguments, &names);
        }
        v
    }
}
