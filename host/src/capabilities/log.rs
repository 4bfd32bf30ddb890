//! Policy logs, whichever way a policy writes them: the WIT `log` import,
//! waPC's `tracing/log` callback, or waPC's `__console_log`. All three end
//! in [`emit`]: target `policy`, the policy id, the message and the
//! policy's own fields.

use std::fmt;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::log::{self, Level};
use crate::component_host::HostState;

/// Longest log line kept from a policy; the rest is cut.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// Writes one policy log record into the host's logs.
pub(crate) fn emit(policy: &str, level: Level, message: &str, fields: &[(String, String)]) {
    let fields = Fields(fields);
    match level {
        Level::Trace => tracing::trace!(target: "policy", policy, %fields, "{message}"),
        Level::Debug => tracing::debug!(target: "policy", policy, %fields, "{message}"),
        Level::Info => tracing::info!(target: "policy", policy, %fields, "{message}"),
        Level::Warn => tracing::warn!(target: "policy", policy, %fields, "{message}"),
        Level::Error => tracing::error!(target: "policy", policy, %fields, "{message}"),
    }
}

/// A policy's fields as `k=v` pairs in one tracing field.
struct Fields<'a>(&'a [(String, String)]);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        Ok(())
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        emit(&self.context().policy_id, level, &message, &fields);
    }
}

/// Every policy may log: linked whatever the grants.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

/// Kubewarden's `tracing/log` record: `{level, message, ...fields}`. A
/// payload that is not such a record is logged as it is, at info.
pub(super) fn wapc(policy: &str, payload: &[u8]) {
    let record: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(payload).unwrap_or_default();
    let level = match record.get("level").and_then(|l| l.as_str()) {
        Some("trace") => Level::Trace,
        Some("debug") => Level::Debug,
        Some("warning" | "warn") => Level::Warn,
        Some("error" | "critical") => Level::Error,
        _ => Level::Info,
    };
    let message = match record.get("message").and_then(|m| m.as_str()) {
        Some(message) => message.to_owned(),
        None if record.is_empty() => String::from_utf8_lossy(payload).into_owned(),
        None => String::new(),
    };
    let fields: Vec<(String, String)> = record
        .iter()
        .filter(|(key, _)| *key != "level" && *key != "message")
        .map(|(key, value)| {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            (key.clone(), value)
        })
        .collect();
    emit(policy, level, &message, &fields);
}

/// waPC's `__console_log`: plain text, at info, cut at [`MAX_MESSAGE_BYTES`].
pub(crate) fn console(policy: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes.get(..MAX_MESSAGE_BYTES).unwrap_or(bytes));
    emit(policy, Level::Info, &text, &[]);
}
