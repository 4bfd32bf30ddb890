//! Palisade's policy engine.
//!
//! Loads WebAssembly admission policies and evaluates admission requests in
//! a sandbox: a fresh instance per evaluation, a deadline, a memory cap and
//! only the host capabilities a policy was granted. The policy-server, the
//! `palisade` CLI, the controller and the audit scanner all evaluate through
//! this crate, so a policy behaves the same everywhere.
//!
//! ```no_run
//! use palisade_host::{EngineConfig, PolicyConfig, PolicyEngine, PolicyLoader, PolicyRequest};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let loader = PolicyLoader::new(PolicyEngine::new(EngineConfig::default())?);
//! let policy = loader.load_file("pod_privileged.wasm".as_ref(), PolicyConfig::new("pod-privileged"))?;
//! policy.validate_settings("{}")?;
//! let request = PolicyRequest::from_review_json(&std::fs::read("review.json")?)?;
//! let verdict = policy.validate(&request, "{}")?;
//! println!("{}", verdict.into_response(&request).into_review());
//! # Ok(())
//! # }
//! ```

mod bindings;
mod cache;
mod capabilities;
pub mod cli;
mod component_host;
mod core_module;
mod engine;
mod error;
pub mod fetch;
mod guest_output;
mod limits;
pub mod logs;
pub mod metadata;
mod policy;
mod raw_request;
mod request;
pub mod scaffold;
pub mod server;
mod verdict;

pub use cache::{module_digest, CompileCache, CompileOrigin};
pub use capabilities::{Capability, CapabilityCall, Grants, KubernetesAccess, OciAccess};
pub use engine::{EngineConfig, PolicyEngine, DEFAULT_EPOCH_TICK, MAX_POLICY_MEMORY};
pub use error::{EvalError, LoadError, SettingsError};
pub use limits::{PolicyLimits, DEFAULT_MEMORY_BYTES, DEFAULT_TIMEOUT};
pub use metadata::PolicyMetadata;
pub use policy::{LoadedPolicy, ModuleKind, PolicyConfig, PolicyKind, PolicyLoader};
pub use raw_request::RawRequest;
pub use request::PolicyRequest;
pub use verdict::{AdmissionResponse, Verdict, DEFAULT_REJECTION_CODE};
