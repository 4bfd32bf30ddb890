//! Host capabilities: which ones a policy is granted, and their single
//! implementation that every ABI reaches.
//!
//! Grants use Kubewarden's `hostCapabilities` patterns (`oci/v1/verify`,
//! `oci/*`, `*`; empty means none) so that existing configuration carries
//! over. Each capability call has a Kubewarden path (`net/v1/dns_lookup_host`)
//! checked against the grants at call time; an interface is linked into a
//! component only when at least one of its calls is granted.

use std::fmt;
use std::net::ToSocketAddrs;

use crate::bindings::HostError;

/// A capability interface of the `palisade:policy` package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    Kubernetes,
    Oci,
    Net,
    Crypto,
}

impl Capability {
    /// Every capability, in a stable order.
    pub const ALL: [Capability; 4] = [Self::Kubernetes, Self::Oci, Self::Net, Self::Crypto];

    /// The WIT interface name (`net`), also the first segment of its grant paths.
    pub fn interface(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::Oci => "oci",
            Self::Net => "net",
            Self::Crypto => "crypto",
        }
    }

    /// Looks a capability up by WIT interface name.
    pub fn from_interface(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.interface() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.interface())
    }
}

/// One capability call, named by its Kubewarden callback path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityCall {
    KubernetesGetResource,
    KubernetesListByNamespace,
    KubernetesListAll,
    KubernetesCanI,
    OciManifestDigest,
    OciManifest,
    OciVerify,
    OciVerifyV1,
    NetDnsLookupHost,
    CryptoIsCertificateTrusted,
}

impl CapabilityCall {
    /// The grant path, as written in `hostCapabilities`.
    pub fn path(self) -> &'static str {
        match self {
            Self::KubernetesGetResource => "kubernetes/get_resource",
            Self::KubernetesListByNamespace => "kubernetes/list_resources_by_namespace",
            Self::KubernetesListAll => "kubernetes/list_resources_all",
            Self::KubernetesCanI => "kubernetes/can_i",
            Self::OciManifestDigest => "oci/v1/manifest_digest",
            Self::OciManifest => "oci/v1/oci_manifest",
            Self::OciVerify => "oci/v2/verify",
            Self::OciVerifyV1 => "oci/v1/verify",
            Self::NetDnsLookupHost => "net/v1/dns_lookup_host",
            Self::CryptoIsCertificateTrusted => "crypto/v1/is_certificate_trusted",
        }
    }
}

/// The capability patterns granted to one policy. Deny by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    patterns: Vec<String>,
}

impl Grants {
    /// Grants nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Grants everything (`*`).
    pub fn all() -> Self {
        Self::new(["*"])
    }

    /// Grants the given `hostCapabilities` patterns.
    pub fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// The patterns as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether the call at `path` (e.g. `oci/v1/verify`) is granted.
    pub fn allows_path(&self, path: &str) -> bool {
        self.patterns.iter().any(|p| pattern_matches(p, path))
    }

    /// Whether one call is granted.
    pub fn allows(&self, call: CapabilityCall) -> bool {
        self.allows_path(call.path())
    }

    /// Whether any call of the interface is granted, i.e. whether the
    /// interface is linked at all.
    pub fn allows_interface(&self, capability: Capability) -> bool {
        let prefix = capability.interface();
        self.patterns.iter().any(|p| {
            p == "*"
                || p == prefix
                || p.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// `Err(not-granted)` unless the call is granted.
    pub(crate) fn check(&self, call: CapabilityCall) -> Result<(), HostError> {
        if self.allows(call) {
            Ok(())
        } else {
            Err(HostError::NotGranted(format!(
                "host capability `{}` is not granted to this policy",
                call.path()
            )))
        }
    }
}

fn pattern_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" || pattern == path {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) => path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/')),
        None => false,
    }
}

/// Resolves a host name with the system resolver.
pub(crate) fn dns_lookup_host(host: &str) -> Result<Vec<String>, HostError> {
    let addrs = (host, 0)
        .to_socket_addrs()
        .map_err(|e| HostError::Failed(format!("cannot resolve {host}: {e}")))?;
    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// The answer of capabilities whose backend is not wired into this host.
pub(crate) fn not_available(call: CapabilityCall) -> HostError {
    HostError::NotAvailable(format!(
        "host capability `{}` is not available in this host",
        call.path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_kubewarden_semantics() {
        let g = Grants::new(["oci/*", "net/v1/dns_lookup_host"]);
        assert!(g.allows(CapabilityCall::OciVerify));
        assert!(g.allows(CapabilityCall::OciManifestDigest));
        assert!(g.allows(CapabilityCall::NetDnsLookupHost));
        assert!(!g.allows(CapabilityCall::KubernetesCanI));
        assert!(g.allows_interface(Capability::Oci));
        assert!(g.allows_interface(Capability::Net));
        assert!(!g.allows_interface(Capability::Crypto));
        assert!(!g.allows_path("ocifake/v1/x"));
    }

    #[test]
    fn empty_grants_nothing_and_star_grants_all() {
        for cap in Capability::ALL {
            assert!(!Grants::none().allows_interface(cap));
            assert!(Grants::all().allows_interface(cap));
        }
        assert!(Grants::none()
            .check(CapabilityCall::NetDnsLookupHost)
            .is_err());
    }

    #[test]
    fn a_prefix_is_not_a_wildcard() {
        let g = Grants::new(["oci/v1/verify"]);
        assert!(!g.allows_path("oci/v1/verify_more"));
        assert!(
            !g.allows(CapabilityCall::OciVerify),
            "v2 is a different call"
        );
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        let ips = dns_lookup_host("localhost").expect("localhost resolves");
        assert!(
            ips.iter().any(|ip| ip == "127.0.0.1" || ip == "::1"),
            "{ips:?}"
        );
    }
}
