//! Palisade's controller library: the Kubewarden custom resources
//! (`policies.kubewarden.io/v1`) as Rust types, so that existing manifests
//! apply unchanged, and the CRDs generated from them.

pub mod crd;
