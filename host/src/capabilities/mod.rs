//! Host capabilities: which ones a policy is granted, and their single
//! implementation that every ABI reaches.
//!
//! Grants use Kubewarden's `hostCapabilities` patterns (`oci/v1/verify`,
//! `oci/*`, `*`; empty means none) so that existing configuration carries
//! over. Each capability call has a Kubewarden path (`net/v1/dns_lookup_host`)
//! checked against the grants at call time; an interface is linked into a
//! component only when at least one of its calls is granted.
//!
//! One file per capability holds all of it: the backend, the WIT `Host`
//! implementation, the waPC answer and the linking. Adding a capability is
//! adding a file, a [`Capability`] and its [`CapabilityCall`]s here.

mod answers;
mod crypto;
mod kubernetes;
pub(crate) mod log;
mod net;
mod oci;
mod watches;

use std::fmt;
use std::sync::Arc;

use wasmtime::component::Linker;

use crate::bindings::HostError;
use crate::component_host::HostState;
use crate::metadata::ContextAwareResource;

pub use kubernetes::KubernetesAccess;
pub use oci::OciAccess;

/// What every evaluation of one policy shares: who it is and what it may reach.
#[derive(Debug)]
pub(crate) struct PolicyContext {
    pub policy_id: String,
    pub grants: Grants,
    /// The cluster, for context-aware policies (none: "not available").
    pub kubernetes: Option<Arc<KubernetesAccess>>,
    pub context_aware: Vec<ContextAwareResource>,
    /// The registries, for the `oci` look-ups (none: "not available").
    pub oci: Option<Arc<OciAccess>>,
}

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
    OciManifestConfig,
    OciVerify,
    OciVerifyV1,
    NetDnsLookupHost,
    CryptoIsCertificateTrusted,
}

impl CapabilityCall {
    /// Every call, in a stable order.
    pub const ALL: [CapabilityCall; 11] = [
        Self::KubernetesGetResource,
        Self::KubernetesListByNamespace,
        Self::KubernetesListAll,
        Self::KubernetesCanI,
        Self::OciManifestDigest,
        Self::OciManifest,
        Self::OciManifestConfig,
        Self::OciVerify,
        Self::OciVerifyV1,
        Self::NetDnsLookupHost,
        Self::CryptoIsCertificateTrusted,
    ];

    /// The call at a grant path; a waPC callback's path is its
    /// `namespace/operation`.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|call| call.path() == path)
    }

    /// The interface the call belongs to.
    pub fn capability(self) -> Capability {
        match self {
            Self::KubernetesGetResource
            | Self::KubernetesListByNamespace
            | Self::KubernetesListAll
            | Self::KubernetesCanI => Capability::Kubernetes,
            Self::OciManifestDigest
            | Self::OciManifest
            | Self::OciManifestConfig
            | Self::OciVerify
            | Self::OciVerifyV1 => Capability::Oci,
            Self::NetDnsLookupHost => Capability::Net,
            Self::CryptoIsCertificateTrusted => Capability::Crypto,
        }
    }

    /// The grant path, as written in `hostCapabilities`.
    pub fn path(self) -> &'static str {
        match self {
            Self::KubernetesGetResource => "kubernetes/get_resource",
            Self::KubernetesListByNamespace => "kubernetes/list_resources_by_namespace",
            Self::KubernetesListAll => "kubernetes/list_resources_all",
            Self::KubernetesCanI => "kubernetes/can_i",
            Self::OciManifestDigest => "oci/v1/manifest_digest",
            Self::OciManifest => "oci/v1/oci_manifest",
            Self::OciManifestConfig => "oci/v1/oci_manifest_config",
            Self::OciVerify => "oci/v2/verify",
            Self::OciVerifyV1 => "oci/v1/verify",
            Self::NetDnsLookupHost => "net/v1/dns_lookup_host",
            Self::CryptoIsCertificateTrusted => "crypto/v1/is_certificate_trusted",
        }
    }
}

/// The calls a non-empty `contextAwareResources` grants.
const CONTEXT_AWARE_READS: [CapabilityCall; 3] = [
    CapabilityCall::KubernetesGetResource,
    CapabilityCall::KubernetesListByNamespace,
    CapabilityCall::KubernetesListAll,
];

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

    /// These grants, plus the Kubernetes read calls when `context_aware`
    /// lists any resource type: as in Kubewarden, declaring
    /// `contextAwareResources` is itself the grant to read those types (the
    /// reads stay limited to them). `kubernetes/can_i` and every other
    /// capability still need `hostCapabilities`; nothing declared grants
    /// nothing.
    pub fn with_context_aware_reads(mut self, context_aware: &[ContextAwareResource]) -> Self {
        if !context_aware.is_empty() {
            for call in CONTEXT_AWARE_READS {
                if !self.allows(call) {
                    self.patterns.push(call.path().to_owned());
                }
            }
        }
        self
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

/// Runs `call` on `runtime` and waits for it, at most `timeout`: host
/// functions are synchronous (they run inside a wasm call on a blocking
/// thread), the clients they use are async. `remote` names what was called
/// in the errors the policy gets.
pub(crate) fn wait_for<T, E, F>(
    runtime: &tokio::runtime::Handle,
    timeout: std::time::Duration,
    remote: &str,
    call: F,
) -> Result<T, HostError>
where
    F: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    let task = runtime.spawn(async move { tokio::time::timeout(timeout, call).await });
    match futures::executor::block_on(task) {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => Err(HostError::Failed(format!("{remote}: {e}"))),
        Ok(Err(_)) => Err(HostError::Failed(format!(
            "{remote}: no answer within {} s",
            timeout.as_secs()
        ))),
        Err(e) => Err(HostError::Failed(format!("{remote} call failed: {e}"))),
    }
}

/// The answer of capabilities whose backend is not wired into this host.
pub(crate) fn not_available(call: CapabilityCall) -> HostError {
    HostError::NotAvailable(format!(
        "host capability `{}` is not available in this host",
        call.path()
    ))
}

/// Links `log` and every interface with at least one granted call.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    grants: &Grants,
) -> wasmtime::Result<()> {
    log::add_to_linker(linker)?;
    for capability in Capability::ALL {
        if !grants.allows_interface(capability) {
            continue;
        }
        match capability {
            Capability::Kubernetes => kubernetes::add_to_linker(linker)?,
            Capability::Oci => oci::add_to_linker(linker)?,
            Capability::Net => net::add_to_linker(linker)?,
            Capability::Crypto => crypto::add_to_linker(linker)?,
        }
    }
    Ok(())
}

/// The waPC binding every Kubewarden host callback uses.
const WAPC_BINDING: &str = "kubewarden";

/// Answers a waPC host callback `(binding, namespace, operation, payload)`:
/// the response payload, or the error text the guest receives through
/// `__host_error`. `tracing/log` is always allowed; every other callback is
/// a [`CapabilityCall`] at path `namespace/operation`, subject to the grants.
pub(crate) fn answer_wapc(
    context: &PolicyContext,
    binding: &str,
    namespace: &str,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    if binding != WAPC_BINDING {
        return Err(format!("unknown host callback binding `{binding}`"));
    }
    if (namespace, operation) == ("tracing", "log") {
        log::wapc(&context.policy_id, payload);
        return Ok(Vec::new());
    }
    let path = format!("{namespace}/{operation}");
    let call = CapabilityCall::from_path(&path)
        .ok_or_else(|| format!("unknown host capability `{path}`"))?;
    context.grants.check(call).map_err(message)?;
    match call.capability() {
        Capability::Kubernetes => kubernetes::wapc(call, context, payload),
        Capability::Oci => oci::wapc(call, context, payload),
        Capability::Net => net::wapc(call, payload),
        Capability::Crypto => crypto::wapc(payload),
    }
}

/// The text a waPC guest receives for a host error.
fn message(error: HostError) -> String {
    match error {
        HostError::NotGranted(m) | HostError::NotAvailable(m) | HostError::Failed(m) => m,
    }
}

/// A payload that is not the JSON the call expects.
fn payload_error(call: CapabilityCall, error: &serde_json::Error) -> String {
    format!("{}: unexpected payload: {error}", call.path())
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
    fn context_aware_resources_grant_the_kubernetes_reads_and_nothing_else() {
        let namespaces = [ContextAwareResource {
            api_version: "v1".into(),
            kind: "Namespace".into(),
        }];
        let g = Grants::none().with_context_aware_reads(&namespaces);
        for call in [
            CapabilityCall::KubernetesGetResource,
            CapabilityCall::KubernetesListByNamespace,
            CapabilityCall::KubernetesListAll,
        ] {
            assert!(g.allows(call), "{call:?}");
        }
        assert!(g.allows_interface(Capability::Kubernetes));
        assert!(!g.allows(CapabilityCall::KubernetesCanI));
        assert!(!g.allows_interface(Capability::Oci));
        // Nothing declared grants nothing; declared grants are kept, once.
        assert_eq!(Grants::none().with_context_aware_reads(&[]), Grants::none());
        let star = Grants::all().with_context_aware_reads(&namespaces);
        assert_eq!(star.patterns(), ["*"]);
        let oci = Grants::new(["oci/*"]).with_context_aware_reads(&namespaces);
        assert!(oci.allows(CapabilityCall::OciVerify));
        assert!(oci.allows(CapabilityCall::KubernetesGetResource));
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

    /// Kubewarden's host callbacks, as its reference lists them
    /// (namespace, operation).
    const KUBEWARDEN_CALLBACKS: [(&str, &str); 11] = [
        ("kubernetes", "list_resources_by_namespace"),
        ("kubernetes", "list_resources_all"),
        ("kubernetes", "get_resource"),
        ("kubernetes", "can_i"),
        ("oci", "v1/manifest_digest"),
        ("oci", "v1/oci_manifest"),
        ("oci", "v1/oci_manifest_config"),
        ("oci", "v1/verify"),
        ("oci", "v2/verify"),
        ("net", "v1/dns_lookup_host"),
        ("crypto", "v1/is_certificate_trusted"),
    ];

    pub(super) fn context(grants: Grants) -> PolicyContext {
        PolicyContext {
            policy_id: "p".into(),
            grants,
            kubernetes: None,
            context_aware: Vec::new(),
            oci: None,
        }
    }

    #[test]
    fn every_kubewarden_callback_is_one_call_and_every_call_is_one_callback() {
        let mut seen = Vec::new();
        for (namespace, operation) in KUBEWARDEN_CALLBACKS {
            let call = CapabilityCall::from_path(&format!("{namespace}/{operation}"))
                .unwrap_or_else(|| panic!("{namespace}/{operation} has no call"));
            assert_eq!(call.capability().interface(), namespace);
            assert!(!seen.contains(&call), "{call:?} answers two callbacks");
            seen.push(call);
        }
        for call in CapabilityCall::ALL {
            assert!(seen.contains(&call), "{call:?} is no Kubewarden callback");
        }
    }

    #[test]
    fn wapc_callbacks_are_routed_by_binding_and_path() {
        let all = context(Grants::all());
        assert_eq!(
            answer_wapc(
                &all,
                "kubewarden",
                "tracing",
                "log",
                br#"{"level":"info","message":"hi"}"#
            ),
            Ok(Vec::new())
        );
        let unknown = answer_wapc(&all, "kubewarden", "net", "v9/x", b"").unwrap_err();
        assert!(
            unknown.contains("unknown host capability `net/v9/x`"),
            "{unknown}"
        );
        let binding = answer_wapc(&all, "other", "tracing", "log", b"").unwrap_err();
        assert!(binding.contains("binding `other`"), "{binding}");
        let refused = answer_wapc(
            &context(Grants::none()),
            "kubewarden",
            "net",
            "v1/dns_lookup_host",
            b"\"localhost\"",
        )
        .unwrap_err();
        assert!(
            refused.contains("net/v1/dns_lookup_host") && refused.contains("not granted"),
            "{refused}"
        );
        let oci = answer_wapc(&all, "kubewarden", "oci", "v2/verify", b"{}").unwrap_err();
        assert!(oci.contains("not available"), "{oci}");
    }
}
