//! Host capabilities a policy may call.
//!
//! A component imports a capability interface only if its code calls one of
//! these functions, and the host refuses to load a policy that imports a
//! capability its configuration does not grant: calling `net` here means the
//! operator must grant `net/*` (or `net/v1/dns_lookup_host`).
//!
//! Natively (unit tests) every call returns [`HostError::NotAvailable`].

use std::fmt;

/// Why a capability call failed. Always a value, never a trap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The policy's configuration does not grant this call.
    NotGranted(String),
    /// The host cannot serve this call.
    NotAvailable(String),
    /// The call failed.
    Failed(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted(m) | Self::NotAvailable(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HostError {}

#[cfg(target_arch = "wasm32")]
impl From<crate::__wit::palisade::policy::types::HostError> for HostError {
    fn from(e: crate::__wit::palisade::policy::types::HostError) -> Self {
        use crate::__wit::palisade::policy::types::HostError as W;
        match e {
            W::NotGranted(m) => Self::NotGranted(m),
            W::NotAvailable(m) => Self::NotAvailable(m),
            W::Failed(m) => Self::Failed(m),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn native(call: &str) -> HostError {
    HostError::NotAvailable(format!("`{call}` is only available inside a Palisade host"))
}

/// Network look-ups (`net/*`).
pub mod net {
    use super::HostError;

    /// Resolves `host` to its IP addresses.
    pub fn dns_lookup_host(host: &str) -> Result<Vec<String>, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::net::dns_lookup_host(host).map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = host;
            Err(super::native("net/v1/dns_lookup_host"))
        }
    }
}

/// Container registry look-ups (`oci/*`).
pub mod oci {
    use super::HostError;

    /// Resolves an image reference to its manifest digest.
    pub fn manifest_digest(image: &str) -> Result<String, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::oci::manifest_digest(image).map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = image;
            Err(super::native("oci/v1/manifest_digest"))
        }
    }
}

/// Cluster reads (`kubernetes/*`), limited to the policy's context-aware resources.
pub mod kubernetes {
    use super::HostError;

    /// Returns one object as JSON text.
    pub fn get_resource(
        api_version: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<String, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::kubernetes::get_resource(
            api_version,
            kind,
            name,
            namespace,
        )
        .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (api_version, kind, name, namespace);
            Err(super::native("kubernetes/get_resource"))
        }
    }
}
