//! waPC host callbacks: `(binding, namespace, operation, payload)` decoded
//! once into a typed call and answered by the same capability
//! implementations the WIT imports use.

use crate::bindings::HostError;
use crate::capabilities::{dns_lookup_host, not_available, CapabilityCall};
use crate::state::PolicyContext;

/// A decoded host callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Callback {
    /// `kubewarden/tracing/log`: always allowed.
    Log,
    /// A capability call, subject to the policy's grants.
    Capability(CapabilityCall),
}

impl Callback {
    /// Decodes the routing triple; unknown ones are an error for the guest.
    pub(crate) fn decode(binding: &str, namespace: &str, operation: &str) -> Result<Self, String> {
        if binding != "kubewarden" {
            return Err(format!("unknown host callback binding `{binding}`"));
        }
        let call = match (namespace, operation) {
            ("tracing", "log") => return Ok(Self::Log),
            ("kubernetes", "get_resource") => CapabilityCall::KubernetesGetResource,
            ("kubernetes", "list_resources_by_namespace") => {
                CapabilityCall::KubernetesListByNamespace
            }
            ("kubernetes", "list_resources_all") => CapabilityCall::KubernetesListAll,
            ("kubernetes", "can_i") => CapabilityCall::KubernetesCanI,
            ("oci", "v1/manifest_digest") => CapabilityCall::OciManifestDigest,
            ("oci", "v1/oci_manifest") => CapabilityCall::OciManifest,
            ("oci", "v1/verify") => CapabilityCall::OciVerifyV1,
            ("oci", "v2/verify") => CapabilityCall::OciVerify,
            ("net", "v1/dns_lookup_host") => CapabilityCall::NetDnsLookupHost,
            ("crypto", "v1/is_certificate_trusted") => CapabilityCall::CryptoIsCertificateTrusted,
            _ => return Err(format!("unknown host capability `{namespace}/{operation}`")),
        };
        Ok(Self::Capability(call))
    }
}

/// Answers a capability call: the response payload, or the error text the
/// guest receives through `__host_error`.
pub(crate) fn answer(
    call: CapabilityCall,
    context: &PolicyContext,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    context.grants.check(call).map_err(message)?;
    let parse_error = |e: serde_json::Error| format!("{}: unexpected payload: {e}", call.path());
    match call {
        CapabilityCall::NetDnsLookupHost => {
            let host: String = serde_json::from_slice(payload)
                .map_err(|e| format!("{}: the payload must be a JSON string: {e}", call.path()))?;
            let ips = dns_lookup_host(&host).map_err(message)?;
            serde_json::to_vec(&serde_json::json!({ "ips": ips })).map_err(|e| e.to_string())
        }
        CapabilityCall::KubernetesGetResource => {
            let request: GetResource = serde_json::from_slice(payload).map_err(parse_error)?;
            let kubernetes = context.kubernetes(call).map_err(message)?;
            kubernetes
                .get(
                    &context.context_aware,
                    &request.api_version,
                    &request.kind,
                    &request.name,
                    request.namespace.as_deref(),
                )
                .map(String::into_bytes)
                .map_err(message)
        }
        CapabilityCall::KubernetesListByNamespace | CapabilityCall::KubernetesListAll => {
            let request: ListResources = serde_json::from_slice(payload).map_err(parse_error)?;
            let namespace = match call {
                CapabilityCall::KubernetesListByNamespace => Some(
                    request
                        .namespace
                        .ok_or_else(|| format!("{}: `namespace` is required", call.path()))?,
                ),
                _ => None,
            };
            let kubernetes = context.kubernetes(call).map_err(message)?;
            kubernetes
                .list(
                    &context.context_aware,
                    &request.api_version,
                    &request.kind,
                    namespace.as_deref(),
                    request.label_selector.as_deref(),
                    request.field_selector.as_deref(),
                )
                .map(String::into_bytes)
                .map_err(message)
        }
        other => Err(message(not_available(other))),
    }
}

/// Kubewarden's `kubernetes/get_resource` payload.
#[derive(serde::Deserialize)]
struct GetResource {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
}

/// Kubewarden's `kubernetes/list_resources_*` payloads.
#[derive(serde::Deserialize)]
struct ListResources {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
}

fn message(error: HostError) -> String {
    match error {
        HostError::NotGranted(m) | HostError::NotAvailable(m) | HostError::Failed(m) => m,
    }
}

/// Writes a `tracing/log` record from the guest into the host's logs.
pub(crate) fn log(policy: &str, payload: &[u8]) {
    let record: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let message = record
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned());
    match record
        .get("level")
        .and_then(|l| l.as_str())
        .unwrap_or("info")
    {
        "trace" => tracing::trace!(target: "policy", policy, "{message}"),
        "debug" => tracing::debug!(target: "policy", policy, "{message}"),
        "warning" | "warn" => tracing::warn!(target: "policy", policy, "{message}"),
        "error" | "critical" => tracing::error!(target: "policy", policy, "{message}"),
        _ => tracing::info!(target: "policy", policy, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::Grants;

    fn context(grants: Grants) -> PolicyContext {
        PolicyContext {
            policy_id: "p".into(),
            grants,
            kubernetes: None,
            context_aware: Vec::new(),
        }
    }

    #[test]
    fn decodes_every_kubewarden_callback_and_refuses_others() {
        assert_eq!(
            Callback::decode("kubewarden", "tracing", "log"),
            Ok(Callback::Log)
        );
        assert_eq!(
            Callback::decode("kubewarden", "net", "v1/dns_lookup_host"),
            Ok(Callback::Capability(CapabilityCall::NetDnsLookupHost))
        );
        assert!(Callback::decode("kubewarden", "net", "v9/x").is_err());
        assert!(Callback::decode("other", "tracing", "log").is_err());
    }

    #[test]
    fn ungranted_calls_get_kubewardens_kind_of_error() {
        let err = answer(
            CapabilityCall::NetDnsLookupHost,
            &context(Grants::none()),
            b"\"localhost\"",
        )
        .unwrap_err();
        assert!(
            err.contains("net/v1/dns_lookup_host") && err.contains("not granted"),
            "{err}"
        );
        let ok = answer(
            CapabilityCall::NetDnsLookupHost,
            &context(Grants::all()),
            b"\"localhost\"",
        )
        .unwrap();
        assert!(String::from_utf8(ok).unwrap().contains("127.0.0.1"));
        assert!(answer(
            CapabilityCall::NetDnsLookupHost,
            &context(Grants::all()),
            b"not json"
        )
        .is_err());
    }

    #[test]
    fn kubernetes_payloads_are_kubewardens_and_need_a_cluster() {
        let granted = context(Grants::all());
        let get = br#"{"api_version":"v1","kind":"Namespace","name":"team","disable_cache":false}"#;
        let err = answer(CapabilityCall::KubernetesGetResource, &granted, get).unwrap_err();
        assert!(err.contains("not available"), "{err}");
        let err = answer(CapabilityCall::KubernetesGetResource, &granted, b"{}").unwrap_err();
        assert!(err.contains("unexpected payload"), "{err}");
        let list = br#"{"api_version":"v1","kind":"Pod"}"#;
        let err = answer(CapabilityCall::KubernetesListByNamespace, &granted, list).unwrap_err();
        assert!(err.contains("`namespace` is required"), "{err}");
        let err = answer(
            CapabilityCall::KubernetesGetResource,
            &context(Grants::none()),
            get,
        )
        .unwrap_err();
        assert!(err.contains("not granted"), "{err}");
    }
}
