//! What Palisade's tests share, in one crate instead of files included by
//! path: where the built sample policies, the fixtures and the test tools
//! are ([`paths`]), a test PKI ([`pki`]), a loopback registry
//! ([`registry`]), a loopback Kubernetes API server ([`apiserver`]), an
//! in-process policy-server ([`server`]), a real single-node cluster
//! ([`node`]), policy loading ([`policies`]) and waiting ([`wait`]).
//!
//! Everything here panics on failure: it runs inside tests, where a panic
//! is the failure report.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_debug_implementations
)]

pub mod apiserver;
pub mod node;
pub mod paths;
pub mod pki;
pub mod policies;
pub mod registry;
pub mod server;
pub mod wait;

pub use apiserver::{
    create_namespace, create_namespaces, create_yaml, install_crds,
    kubewarden_privileged_pods_manifest, lease_holder, mark_pods_ready, ApiServer,
};
pub use paths::{fixture_path, policy_path, tool_bin};
pub use policies::{fixture, load, load_default, loader};
pub use wait::{eventually, free_port};
