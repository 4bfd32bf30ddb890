//! The `kubernetes` capability: context-aware policies read cluster objects
//! through the policy-server's own client, limited to the resource types
//! their `contextAwareResources` list.
//!
//! Host functions are synchronous (they run inside a wasm call on a
//! blocking thread), so each call is spawned onto the server's runtime and
//! waited for, bounded by a timeout: a slow API server makes the call fail,
//! it cannot hold the evaluation past its deadline by much.
//!
//! Reads are cached, as in Kubewarden: lists come from watches started on
//! first use ([`super::watches`]), objects from a 5 s cache of successful
//! gets (`disable_cache` in the waPC payload skips it).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, ListParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use wasmtime::component::{HasSelf, Linker};

use super::answers::Answers;
use super::watches::{WatchKey, Watches};
use super::{message, not_available, payload_error, CapabilityCall, PolicyContext};
use crate::bindings::{kubernetes, HostError};
use crate::component_host::HostState;
use crate::metadata::ContextAwareResource;

/// Longest a single Kubernetes call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a `can_i` answer is reused, as in Kubewarden.
const CAN_I_TTL: Duration = Duration::from_secs(5);

/// How long a `get_resource` answer is reused, as in Kubewarden.
const GET_TTL: Duration = Duration::from_secs(5);

/// A Kubernetes client shared by every policy of a server.
pub struct KubernetesAccess {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    /// Kind → resource, found once by discovery.
    resources: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
    /// SubjectAccessReview spec (as JSON) → its status (as JSON).
    can_i: Answers,
    /// Object reference (as JSON) → the object (as JSON).
    gets: Answers,
    /// The watches lists are answered from.
    watches: Watches,
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
    /// A client for `config` without kube's retries; calls run on `runtime`.
    ///
    /// kube retries 429, 503 and 504 answers up to 15 times with a growing
    /// pause. Inside an evaluation that only spends the policy's deadline (an
    /// API server answering 503 made every evaluation time out): the policy
    /// gets the failure as a value at once and decides what it means.
    pub fn from_config(
        mut config: kube::Config,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, kube::Error> {
        config.default_retry = false;
        let client = {
            let _entered = runtime.enter();
            kube::Client::try_from(config)?
        };
        Ok(Self::new(client, runtime))
    }

    /// Uses `client` as it is; calls run on `runtime`.
    pub fn new(client: kube::Client, runtime: tokio::runtime::Handle) -> Self {
        Self {
            client,
            runtime,
            resources: Mutex::new(HashMap::new()),
            can_i: Answers::new(CAN_I_TTL),
            gets: Answers::new(GET_TTL),
            watches: Watches::default(),
        }
    }

    /// The client, for the server's own reads (its policies ConfigMap).
    pub(crate) fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Runs a SubjectAccessReview and returns its status as JSON text;
    /// answers are reused for 5 s unless `disable_cache`.
    pub(crate) fn can_i(
        &self,
        spec: SubjectAccessReviewSpec,
        disable_cache: bool,
    ) -> Result<String, HostError> {
        if disable_cache {
            return self.subject_access_review(spec);
        }
        let question = serde_json::to_string(&spec).map_err(failed)?;
        self.can_i
            .get_or_ask(question, || self.subject_access_review(spec))
    }

    /// Creates a SubjectAccessReview; its status as JSON text.
    fn subject_access_review(&self, spec: SubjectAccessReviewSpec) -> Result<String, HostError> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec,
            ..SubjectAccessReview::default()
        };
        let created = self.run(async move { api.create(&PostParams::default(), &review).await })?;
        let status = created
            .status
            .ok_or_else(|| failed("Kubernetes API: the SubjectAccessReview has no status"))?;
        serde_json::to_string(&status).map_err(failed)
    }

    /// One object as JSON text; answers are reused for 5 s unless
    /// `disable_cache`.
    pub(crate) fn get(
        &self,
        allowed: &[ContextAwareResource],
        request: &GetResource,
    ) -> Result<String, HostError> {
        check_allowed(allowed, &request.api_version, &request.kind)?;
        if request.disable_cache {
            return self.get_uncached(request);
        }
        let key = serde_json::to_string(&(
            &request.api_version,
            &request.kind,
            &request.namespace,
            &request.name,
        ))
        .map_err(failed)?;
        self.gets.get_or_ask(key, || self.get_uncached(request))
    }

    fn get_uncached(&self, request: &GetResource) -> Result<String, HostError> {
        let GetResource {
            api_version,
            kind,
            name,
            namespace,
            disable_cache: _,
        } = request;
        let namespace = namespace.as_deref();
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
    /// Answered from a watch once it has listed; from the API server until
    /// then, or when the server already runs as many watches as it may.
    pub(crate) fn list(
        &self,
        allowed: &[ContextAwareResource],
        request: &ListResources,
    ) -> Result<String, HostError> {
        check_allowed(allowed, &request.api_version, &request.kind)?;
        let (resource, namespaced) = self.resource(&request.api_version, &request.kind)?;
        let namespace = request.namespace.as_deref().filter(|_| namespaced);
        let key = WatchKey {
            api_version: request.api_version.clone(),
            kind: request.kind.clone(),
            label_selector: request.label_selector.clone(),
            field_selector: request.field_selector.clone(),
        };
        if let Some(answer) = self.watches.list(
            &key,
            &resource,
            &self.client,
            &self.runtime,
            namespace,
            CALL_TIMEOUT,
        ) {
            return answer;
        }
        let api = self.api(&resource, namespaced, namespace);
        let mut params = ListParams::default();
        if let Some(labels) = &request.label_selector {
            params = params.labels(labels);
        }
        if let Some(fields) = &request.field_selector {
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
        if let Some(found) = self.resources().get(&key).cloned() {
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
        self.resources().insert(key, found.clone());
        Ok(found)
    }

    /// The discovery cache (a panic elsewhere cannot leave it half-written:
    /// inserts are single calls).
    fn resources(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), (ApiResource, bool)>> {
        self.resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `call` on the server's runtime and waits for it, within the timeout.
    fn run<T, F>(&self, call: F) -> Result<T, HostError>
    where
        F: std::future::Future<Output = Result<T, kube::Error>> + Send + 'static,
        T: Send + 'static,
    {
        super::wait_for(&self.runtime, CALL_TIMEOUT, "Kubernetes API", call)
    }
}

impl PolicyContext {
    /// The cluster client, or the "not available" error for `call`.
    fn kubernetes(&self, call: CapabilityCall) -> Result<&KubernetesAccess, HostError> {
        self.kubernetes
            .as_deref()
            .ok_or_else(|| not_available(call))
    }

    /// `get_resource`, for either ABI: grant, cluster, then the read.
    fn get_resource(&self, request: &GetResource) -> Result<String, HostError> {
        let call = CapabilityCall::KubernetesGetResource;
        self.grants.check(call)?;
        self.kubernetes(call)?.get(&self.context_aware, request)
    }

    /// `can_i`, for either ABI.
    fn can_i(
        &self,
        spec: SubjectAccessReviewSpec,
        disable_cache: bool,
    ) -> Result<String, HostError> {
        let call = CapabilityCall::KubernetesCanI;
        self.grants.check(call)?;
        self.kubernetes(call)?.can_i(spec, disable_cache)
    }

    /// `list_resources_by_namespace` with a namespace, `list_resources_all`
    /// without, for either ABI.
    fn list_resources(&self, request: &ListResources) -> Result<String, HostError> {
        let call = if request.namespace.is_some() {
            CapabilityCall::KubernetesListByNamespace
        } else {
            CapabilityCall::KubernetesListAll
        };
        self.grants.check(call)?;
        self.kubernetes(call)?.list(&self.context_aware, request)
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
        self.context().get_resource(&GetResource {
            api_version,
            kind,
            name,
            namespace,
            disable_cache: false,
        })
    }

    fn list_resources(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        label_selector: Option<String>,
        field_selector: Option<String>,
    ) -> Result<String, HostError> {
        self.context().list_resources(&ListResources {
            api_version,
            kind,
            namespace,
            label_selector,
            field_selector,
        })
    }

    /// The argument is the JSON of a `SubjectAccessReviewSpec`, as the
    /// Kubernetes API writes it.
    fn can_i(&mut self, subject_access_review: String) -> Result<String, HostError> {
        let spec = serde_json::from_str(&subject_access_review).map_err(|e| {
            HostError::Failed(format!(
                "kubernetes/can_i: not a SubjectAccessReviewSpec: {e}"
            ))
        })?;
        self.context().can_i(spec, false)
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    kubernetes::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

/// Kubewarden's `kubernetes/get_resource` payload.
#[derive(serde::Deserialize)]
pub(crate) struct GetResource {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    /// Read the object from the API server, not from the 5 s cache.
    #[serde(default)]
    disable_cache: bool,
}

/// Kubewarden's `kubernetes/can_i` payload: its SDK's own field names,
/// not the Kubernetes API's.
#[derive(serde::Deserialize)]
struct CanI {
    subject_access_review: CanISubject,
    #[serde(default)]
    disable_cache: bool,
}

#[derive(serde::Deserialize)]
struct CanISubject {
    groups: Option<Vec<String>>,
    resource_attributes: CanIResource,
    user: String,
}

#[derive(serde::Deserialize)]
struct CanIResource {
    group: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    resource: String,
    subresource: Option<String>,
    verb: String,
    version: Option<String>,
}

impl From<CanISubject> for SubjectAccessReviewSpec {
    fn from(subject: CanISubject) -> Self {
        let r = subject.resource_attributes;
        SubjectAccessReviewSpec {
            user: Some(subject.user),
            groups: subject.groups,
            resource_attributes: Some(ResourceAttributes {
                group: r.group,
                name: r.name,
                namespace: r.namespace,
                resource: Some(r.resource),
                subresource: r.subresource,
                verb: Some(r.verb),
                version: r.version,
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        }
    }
}

/// Kubewarden's `kubernetes/list_resources_*` payloads.
#[derive(serde::Deserialize)]
pub(crate) struct ListResources {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
}

/// Answers a waPC call with Kubewarden's payloads.
pub(super) fn wapc(
    call: CapabilityCall,
    context: &PolicyContext,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let answer = match call {
        CapabilityCall::KubernetesGetResource => {
            let request = serde_json::from_slice(payload).map_err(|e| payload_error(call, &e))?;
            context.get_resource(&request)
        }
        CapabilityCall::KubernetesListByNamespace | CapabilityCall::KubernetesListAll => {
            let mut request: ListResources =
                serde_json::from_slice(payload).map_err(|e| payload_error(call, &e))?;
            if call == CapabilityCall::KubernetesListAll {
                request.namespace = None;
            } else if request.namespace.is_none() {
                return Err(format!("{}: `namespace` is required", call.path()));
            }
            context.list_resources(&request)
        }
        CapabilityCall::KubernetesCanI => {
            let request: CanI =
                serde_json::from_slice(payload).map_err(|e| payload_error(call, &e))?;
            context.can_i(request.subject_access_review.into(), request.disable_cache)
        }
        other => Err(not_available(other)),
    };
    answer.map(String::into_bytes).map_err(message)
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
    use crate::capabilities::tests::context;
    use crate::capabilities::{answer_wapc, Grants};

    #[test]
    fn wapc_payloads_are_kubewardens_and_need_a_cluster() {
        let granted = context(Grants::all());
        let call = |operation: &str, payload: &[u8]| {
            answer_wapc(&granted, "kubewarden", "kubernetes", operation, payload).unwrap_err()
        };
        let get = br#"{"api_version":"v1","kind":"Namespace","name":"team","disable_cache":false}"#;
        let err = call("get_resource", get);
        assert!(err.contains("not available"), "{err}");
        let err = call("get_resource", b"{}");
        assert!(err.contains("unexpected payload"), "{err}");
        let list = br#"{"api_version":"v1","kind":"Pod"}"#;
        let err = call("list_resources_by_namespace", list);
        assert!(err.contains("`namespace` is required"), "{err}");
        let err = answer_wapc(
            &context(Grants::none()),
            "kubewarden",
            "kubernetes",
            "get_resource",
            get,
        )
        .unwrap_err();
        assert!(err.contains("not granted"), "{err}");
    }

    /// A loopback API server that answers every request with 503 and
    /// counts them.
    fn unavailable_api_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line == "\r\n" {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let answer =
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
                        if writer.write_all(answer.as_bytes()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        (url, requests)
    }

    #[test]
    fn an_unavailable_api_server_is_a_failure_value_after_one_request() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (url, requests) = unavailable_api_server();
        let access = KubernetesAccess::from_config(
            kube::Config::new(url.parse().unwrap()),
            runtime.handle().clone(),
        )
        .unwrap();
        let allowed = [ContextAwareResource {
            api_version: "v1".into(),
            kind: "Namespace".into(),
        }];
        let request: GetResource =
            serde_json::from_str(r#"{"api_version": "v1", "kind": "Namespace", "name": "team"}"#)
                .unwrap();
        let error = access.get(&allowed, &request).unwrap_err();
        assert!(
            matches!(&error, HostError::Failed(m) if m.contains("Kubernetes API")),
            "{error:?}"
        );
        // kube's default retry policy would have asked up to 16 times.
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn kubewardens_can_i_payload_becomes_a_subject_access_review_spec() {
        let payload = br#"{"subject_access_review": {"groups": ["dev"], "user": "alice",
            "resource_attributes": {"namespace": "team", "resource": "pods", "verb": "create",
            "subresource": null, "group": null, "name": null, "version": null}}}"#;
        let request: CanI = serde_json::from_slice(payload).unwrap();
        assert!(!request.disable_cache);
        let spec = SubjectAccessReviewSpec::from(request.subject_access_review);
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"user": "alice", "groups": ["dev"],
                "resourceAttributes": {"namespace": "team", "resource": "pods", "verb": "create"}})
        );
        // `user`, `resource` and `verb` are required, as in Kubewarden's SDK.
        assert!(serde_json::from_slice::<CanI>(
            br#"{"subject_access_review": {"resource_attributes": {"resource": "pods", "verb": "get"}}}"#
        )
        .is_err());
    }

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
