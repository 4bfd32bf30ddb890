//! Typed errors of the host library.
//!
//! A policy's *decision* (reject) is never an error: it is a
//! [`crate::Verdict`]. Errors are what went wrong around the decision, split
//! so that callers can answer each case differently (a timeout is a 500 with
//! a clear message, bad settings keep a policy from being registered...).

use std::path::PathBuf;
use std::time::Duration;

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine itself could not be configured or started.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The module file could not be read.
    #[error("cannot read policy module {path}: {error}")]
    Read {
        path: PathBuf,
        /// Displayed in the message, not chained as a source: `{:#}`
        /// would print it twice.
        error: std::io::Error,
    },
    /// The bytes do not start with the WebAssembly magic number.
    #[error(
        "{source_name} is not a WebAssembly module (it does not start with the `\\0asm` magic bytes)"
    )]
    NotWasm { source_name: String },
    /// A core module that is neither a waPC policy nor marked as a WASI one.
    #[error("{source_name} is a core WebAssembly module but not a waPC policy (it exports no `__guest_call`) nor marked `executionMode: wasi` in its metadata; build component policies with `cargo component build`")]
    NotAPolicy { source_name: String },
    /// The metadata asks for an execution mode this host does not run.
    #[error("{source_name} needs execution mode `{mode}`, which this host does not run")]
    UnsupportedExecutionMode { source_name: String, mode: String },
    /// The module failed validation or compilation (truncated, corrupted...).
    #[error("{source_name} is not a valid policy module: {reason}")]
    InvalidModule { source_name: String, reason: String },
    /// The metadata custom section is present but is not valid JSON of the
    /// expected shape.
    #[error("policy metadata in {source_name} is invalid: {reason}")]
    InvalidMetadata { source_name: String, reason: String },
    /// The component imports a host capability that its configuration does not grant.
    #[error("policy {policy} imports `{interface}`, which is not granted; grant it in the policy's hostCapabilities (e.g. `{grant}`)")]
    CapabilityNotGranted {
        policy: String,
        interface: String,
        grant: String,
    },
    /// The component imports something this host does not provide at all.
    #[error("policy {policy} imports `{import}`, which this host does not provide")]
    UnknownImport { policy: String, import: String },
    /// The component does not export the functions of the `policy` world
    /// (or of the `raw-policy` world).
    #[error("policy {policy} does not implement the palisade:policy `policy` or `raw-policy` world: {reason}")]
    WrongWorld { policy: String, reason: String },
    /// The precompiled-artifact cache could not be used.
    #[error("precompiled cache at {path}: {error}")]
    Cache {
        path: PathBuf,
        /// Displayed in the message, not chained as a source: `{:#}`
        /// would print it twice.
        error: std::io::Error,
    },
}

/// Why an evaluation did not produce a decision.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The policy ran past its deadline and was interrupted.
    #[error("policy evaluation exceeded its time limit of {} ms", .deadline.as_millis())]
    Timeout { deadline: Duration },
    /// The policy tried to grow its memory beyond its cap.
    #[error("policy exceeded its memory limit of {} MiB", .limit_bytes >> 20)]
    MemoryExhausted { limit_bytes: usize },
    /// The policy trapped (panic, unreachable, out-of-bounds access...).
    #[error("policy trapped: {message}")]
    Trap {
        /// The trap code when wasmtime reported one.
        code: Option<wasmtime::Trap>,
        message: String,
    },
    /// Too many evaluations are running at once; the caller may retry.
    #[error("too many concurrent policy evaluations: {0}")]
    Busy(String),
    /// The request given to the policy could not be prepared.
    #[error("invalid admission request: {0}")]
    InvalidRequest(String),
    /// The policy does not evaluate this kind of request (a raw document
    /// given to a Kubernetes component, or the reverse).
    #[error("the policy cannot evaluate this request: {0}")]
    WrongInput(String),
    /// The policy answered something the host cannot use (invalid mutated object...).
    #[error("policy returned an invalid response: {0}")]
    InvalidResponse(String),
    /// The policy reported an error instead of a decision (waPC `__guest_error`,
    /// a WASI policy's non-zero exit).
    #[error("the policy reported an error: {0}")]
    PolicyError(String),
    /// Anything else the runtime reported.
    #[error("policy evaluation failed: {0}")]
    Runtime(String),
}

impl EvalError {
    /// A stable, low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::MemoryExhausted { .. } => "memory",
            Self::Trap { .. } => "trap",
            Self::Busy(_) => "busy",
            Self::InvalidRequest(_) => "invalid_request",
            Self::WrongInput(_) => "wrong_input",
            Self::InvalidResponse(_) => "invalid_response",
            Self::PolicyError(_) => "policy_error",
            Self::Runtime(_) => "runtime",
        }
    }
}

/// Settings were not accepted by the policy's `validate-settings`.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings text is not JSON.
    #[error("settings are not valid JSON: {0}")]
    NotJson(String),
    /// The policy rejected the settings, with its own message.
    #[error("settings rejected by the policy: {0}")]
    Rejected(String),
    /// `validate-settings` itself failed to run.
    #[error(transparent)]
    Eval(#[from] EvalError),
}
