//! The `kubernetes` capability: context-aware policies read cluster objects
//! through the policy-server's own client, limited to the resource types
//! their `contextAwareResources` list.
//!
//! Host functions are synchronous (they run inside a wasm call on a
//! blocking thread), so each call is spawned onto the server's runtime and
//! waited for, bounded by a timeout: a slow API server makes the call fail,
//! it cannot hold the evaluation past its deadline by much.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;

use crate::bindings::HostError;
use crate::metadata::ContextAwareResource;

/// Longest a single Kubernetes call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A Kubernetes client shared by every policy of a server.
pub struct KubernetesAccess {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    /// Kind → resource, found once by discovery.
    resources: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

impl std::fmt::Debug for KubernetesAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesAccess").finish_non_exhaustive()
    }
}

fn failed(what: impl std::fmt::Display) -> HostError {
    HostError::Failed(what.to_string())
}

impl KubernetesAccess {
    /// Uses `client`; calls run on `runtime`.
    pub fn new(client: kube::Client, runtime: tokio::runtime::Handle) -> Self {
        Self {
            client,
            runtime,
            resources: Mutex::new(HashMap::new()),
        }
    }

    /// One object as JSON text.
    pub(crate) fn get(
        &self,
        allowed: &[ContextAwareResource],
        api_version: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<String, HostError> {
        check_allowed(allowed, api_version, kind)?;
        let (resource, namespaced) = self.resource(api_version, kind)?;
        let api = self.api(&resource, namespaced, namespace);
        let wanted = name.to_owned();
        let object = self.run(async move { api.get_opt(&wanted).await })?;
        match object {
            Some(object) => serde_json::to_string(&object).map_err(failed),
            None => {
                let prefix = namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
                Err(failed(format!("{kind} `{prefix}{name}` not found")))
            }
        }
    }

    /// A List as JSON text; `namespace` none lists across all namespaces.
    pub(crate) fn list(
        &self,
        allowed: &[ContextAwareResource],
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<String, HostError> {
        check_allowed(allowed, api_version, kind)?;
        let (resource, namespaced) = self.resource(api_version, kind)?;
        let api = self.api(&resource, namespaced, namespace);
        let mut params = ListParams::default();
        if let Some(labels) = label_selector {
            params = params.labels(labels);
        }
        if let Some(fields) = field_selector {
            params = params.fields(fields);
        }
        let list = self.run(async move { api.list(&params).await })?;
        serde_json::to_string(&list).map_err(failed)
    }

    fn api(
        &self,
        resource: &ApiResource,
        namespaced: bool,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        match namespace.filter(|_| namespaced) {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    /// Finds (once) which resource serves `kind` and whether it is namespaced.
    fn resource(&self, api_version: &str, kind: &str) -> Result<(ApiResource, bool), HostError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self
            .resources
            .lock()
            .ok()
            .and_then(|r| r.get(&key).cloned())
        {
            return Ok(found);
        }
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let client = self.client.clone();
        let (resource, capabilities) =
            self.run(async move { kube::discovery::pinned_kind(&client, &gvk).await })?;
        let found = (
            resource,
            capabilities.scope == kube::discovery::Scope::Namespaced,
        );
        if let Ok(mut resources) = self.resources.lock() {
            resources.insert(key, found.clone());
        }
        Ok(found)
    }

    /// Runs `call` on the server's runtime and waits for it, within the timeout.
    fn run<T, F>(&self, call: F) -> Result<T, HostError>
    where
        F: std::future::Future<Output = Result<T, kube::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(CALL_TIMEOUT, call).await });
        match futures::executor::block_on(task) {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(failed(format!("Kubernetes API: {e}"))),
            Ok(Err(_)) => Err(failed(format!(
                "Kubernetes API: no answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))),
            Err(e) => Err(failed(format!("Kubernetes call failed: {e}"))),
        }
    }
}

/// Only the types the policy declared may be read.
fn check_allowed(
    allowed: &[ContextAwareResource],
    api_version: &str,
    kind: &str,
) -> Result<(), HostError> {
    if allowed
        .iter()
        .any(|r| r.api_version == api_version && r.kind == kind)
    {
        return Ok(());
    }
    Err(HostError::NotGranted(format!(
        "{api_version} {kind} is not in the policy's contextAwareResources"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_resource_types_may_be_read() {
        let allowed = [ContextAwareResource {
            api_version: "v1".into(),
            kind: "Namespace".into(),
        }];
        assert!(check_allowed(&allowed, "v1", "Namespace").is_ok());
        let refused = check_allowed(&allowed, "v1", "Secret").unwrap_err();
        assert!(
            matches!(&refused, HostError::NotGranted(m) if m.contains("v1 Secret")),
            "{refused:?}"
        );
        assert!(check_allowed(&[], "v1", "Namespace").is_err());
    }
}
