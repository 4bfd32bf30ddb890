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

    /// Returns the manifest or image index of `image` as JSON text.
    pub fn manifest(image: &str) -> Result<String, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::oci::manifest(image).map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = image;
            Err(super::native("oci/v1/oci_manifest"))
        }
    }

    /// `{"manifest", "digest", "config"}` of `image` as JSON text: its
    /// manifest (an index resolved for the host's platform), the manifest's
    /// digest and the image configuration.
    pub fn manifest_config(image: &str) -> Result<String, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::oci::manifest_config(image).map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = image;
            Err(super::native("oci/v1/oci_manifest_config"))
        }
    }

    /// Verifies an image's signatures: `request` and the answer are the JSON
    /// of Kubewarden's `oci/v2/verify` callback.
    pub fn verify(request: &str) -> Result<String, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::oci::verify(request).map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err(super::native("oci/v2/verify"))
        }
    }
}

/// Cryptographic checks (`crypto/*`).
pub mod crypto {
    use super::HostError;

    /// Checks a certificate: `request` and the answer are the JSON of
    /// Kubewarden's `crypto/v1/is_certificate_trusted` callback.
    pub fn is_certificate_trusted(request: &str) -> Result<String, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::crypto::is_certificate_trusted(request)
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = request;
            Err(super::native("crypto/v1/is_certificate_trusted"))
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

    /// Returns a Kubernetes List as JSON text; `namespace` none lists across
    /// all namespaces (`list_resources_all`, otherwise
    /// `list_resources_by_namespace`).
    pub fn list_resources(
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<String, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::kubernetes::list_resources(
            api_version,
            kind,
            namespace,
            label_selector,
            field_selector,
        )
        .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (api_version, kind, label_selector, field_selector);
            Err(super::native(if namespace.is_some() {
                "kubernetes/list_resources_by_namespace"
            } else {
                "kubernetes/list_resources_all"
            }))
        }
    }

    /// Runs a SubjectAccessReview (the JSON of its spec) and returns its
    /// status as JSON text.
    pub fn can_i(subject_access_review: &str) -> Result<String, HostError> {
        #[cfg(target_arch = "wasm32")]
        return crate::__wit::palisade::policy::kubernetes::can_i(subject_access_review)
            .map_err(Into::into);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = subject_access_review;
            Err(super::native("kubernetes/can_i"))
        }
    }
}
