//! The data of one evaluation's `Store`, and the WIT imports implemented on it.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{crypto, kubernetes, log, net, oci, HostError};
use crate::capabilities::{dns_lookup_host, not_available, CapabilityCall, Grants};
use crate::kubernetes::KubernetesAccess;
use crate::limits::MemoryLimiter;
use crate::metadata::ContextAwareResource;

/// What every evaluation of one policy shares.
#[derive(Debug)]
pub(crate) struct PolicyContext {
    pub policy_id: String,
    pub grants: Grants,
    /// The cluster, for context-aware policies (none: "not available").
    pub kubernetes: Option<Arc<KubernetesAccess>>,
    pub context_aware: Vec<ContextAwareResource>,
}

impl PolicyContext {
    /// The cluster client, or the "not available" error for `call`.
    pub(crate) fn kubernetes(&self, call: CapabilityCall) -> Result<&KubernetesAccess, HostError> {
        self.kubernetes
            .as_deref()
            .ok_or_else(|| not_available(call))
    }
}

/// Per-evaluation state: created with the store, dropped with it, so nothing
/// a policy does survives its evaluation.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    context: Arc<PolicyContext>,
}

impl HostState {
    pub(crate) fn new(context: Arc<PolicyContext>, memory_cap: usize) -> Self {
        // No arguments, no environment, no preopened directories, no sockets,
        // standard streams discarded: WASI is there only because std needs it.
        let wasi = WasiCtxBuilder::new().build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_cap),
            context,
        }
    }

    fn check(&self, call: CapabilityCall) -> Result<(), HostError> {
        self.context.grants.check(call)
    }
}

impl crate::limits::Limited for HostState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::palisade::policy::types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let policy = self.context.policy_id.as_str();
        let fields = FieldsDisplay(&fields);
        match level {
            log::Level::Trace => tracing::trace!(target: "policy", policy, %fields, "{message}"),
            log::Level::Debug => tracing::debug!(target: "policy", policy, %fields, "{message}"),
            log::Level::Info => tracing::info!(target: "policy", policy, %fields, "{message}"),
            log::Level::Warn => tracing::warn!(target: "policy", policy, %fields, "{message}"),
            log::Level::Error => tracing::error!(target: "policy", policy, %fields, "{message}"),
        }
    }
}

/// Renders a policy's log fields as `k=v` pairs in one tracing field.
struct FieldsDisplay<'a>(&'a [(String, String)]);

impl std::fmt::Display for FieldsDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        Ok(())
    }
}

impl net::Host for HostState {
    fn dns_lookup_host(&mut self, host: String) -> Result<Vec<String>, HostError> {
        self.check(CapabilityCall::NetDnsLookupHost)?;
        dns_lookup_host(&host)
    }
}

impl kubernetes::Host for HostState {
    fn get_resource(
        &mut self,
        api_version: String,
        kind: String,
        name: String,
        namespace: Option<String>,
    ) -> Result<String, HostError> {
        let call = CapabilityCall::KubernetesGetResource;
        self.check(call)?;
        let context = &self.context;
        context.kubernetes(call)?.get(
            &context.context_aware,
            &api_version,
            &kind,
            &name,
            namespace.as_deref(),
        )
    }

    fn list_resources(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        label_selector: Option<String>,
        field_selector: Option<String>,
    ) -> Result<String, HostError> {
        let call = if namespace.is_some() {
            CapabilityCall::KubernetesListByNamespace
        } else {
            CapabilityCall::KubernetesListAll
        };
        self.check(call)?;
        let context = &self.context;
        context.kubernetes(call)?.list(
            &context.context_aware,
            &api_version,
            &kind,
            namespace.as_deref(),
            label_selector.as_deref(),
            field_selector.as_deref(),
        )
    }

    fn can_i(&mut self, _subject_access_review: String) -> Result<String, HostError> {
        let call = CapabilityCall::KubernetesCanI;
        self.check(call)?;
        Err(not_available(call))
    }
}

impl oci::Host for HostState {
    fn manifest_digest(&mut self, _image: String) -> Result<String, HostError> {
        let call = CapabilityCall::OciManifestDigest;
        self.check(call)?;
        Err(not_available(call))
    }

    fn manifest(&mut self, _image: String) -> Result<String, HostError> {
        let call = CapabilityCall::OciManifest;
        self.check(call)?;
        Err(not_available(call))
    }

    fn verify(&mut self, _request: String) -> Result<String, HostError> {
        let call = CapabilityCall::OciVerify;
        self.check(call)?;
        Err(not_available(call))
    }
}

impl crypto::Host for HostState {
    fn is_certificate_trusted(&mut self, _request: String) -> Result<String, HostError> {
        let call = CapabilityCall::CryptoIsCertificateTrusted;
        self.check(call)?;
        Err(not_available(call))
    }
}
