//! Palisade's controller library: the Kubewarden custom resources
//! (`policies.kubewarden.io/v1`) as Rust types, so that existing manifests
//! apply unchanged; the CRDs generated from them; and the reconciliation of
//! policies into policy-server configuration and webhook registrations,
//! with settings checked through the same host crate the policy-server runs.

pub mod activation;
pub mod admission;
pub mod certs;
pub mod conditions;
pub mod crd;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod pki_secrets;
pub mod reconcile;
pub mod rollout;
pub mod settings;
pub mod uninstall;
pub mod webhook;
