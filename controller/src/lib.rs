//! Palisade's controller library: the Kubewarden custom resources
//! (`policies.kubewarden.io/v1`) as Rust types, so that existing manifests
//! apply unchanged; the CRDs generated from them; and the reconciliation of
//! policies into policy-server configuration and webhook registrations,
//! with settings checked through the same host crate the policy-server runs.

pub mod admission;
pub mod crd;
pub mod policy;
pub mod reconcile;
pub mod settings;
