//! The controller's own admission webhook for the policy resources:
//! settings are validated by the policy itself at `kubectl apply` time, so
//! an operator sees the policy's message at once (Kubewarden only finds out
//! when the policy-server boots). Defaults, enums, ranges and immutability
//! are enforced by the CRD schema.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;

use crate::crd::PolicyServer;
use crate::settings::{CheckError, SettingsChecker};
use palisade_host::fetch::Sources;

/// Name of the controller's ValidatingWebhookConfiguration.
pub const WEBHOOK_NAME: &str = "palisade-controller";
/// Path the webhook is served on.
pub const WEBHOOK_PATH: &str = "/validate-policies";
const MAX_BODY: usize = 3 << 20;

/// What the webhook needs: the checker, and a client to read the
/// PolicyServer whose module sources apply.
#[derive(Clone)]
pub struct Reviewer {
    pub checker: SettingsChecker,
    pub client: kube::Client,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer")
            .field("checker", &self.checker)
            .finish_non_exhaustive()
    }
}

/// Answers one AdmissionReview for a policy resource.
pub async fn handle(reviewer: Arc<Reviewer>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != WEBHOOK_PATH {
        return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found"));
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, Bytes::from(e.to_string())),
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                Bytes::from(format!("not an AdmissionReview: {e}")),
            )
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"no request")),
    };
    let response = review_policy(&reviewer, &request).await;
    match serde_json::to_vec(&response.into_review()) {
        Ok(json) => reply(StatusCode::OK, Bytes::from(json)),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from(e.to_string()),
        ),
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

/// Every (name, module, settings) a policy resource runs.
fn modules(object: &DynamicObject) -> Vec<(String, String, serde_json::Value)> {
    let Some(spec) = object.data.get("spec") else {
        return Vec::new();
    };
    let settings = |v: &serde_json::Value| {
        v.get("settings")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}))
    };
    if let Some(members) = spec.get("policies").and_then(|p| p.as_object()) {
        return members
            .iter()
            .filter_map(|(name, m)| {
                Some((
                    name.clone(),
                    m.get("module")?.as_str()?.to_owned(),
                    settings(m),
                ))
            })
            .collect();
    }
    match spec.get("module").and_then(|m| m.as_str()) {
        Some(module) => vec![(String::new(), module.to_owned(), settings(spec))],
        None => Vec::new(),
    }
}

/// The module sources of the PolicyServer the policy names (the defaults
/// when it does not exist yet or cannot be read).
async fn sources(client: &kube::Client, object: &DynamicObject) -> Sources {
    let name = object
        .data
        .pointer("/spec/policyServer")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    match Api::<PolicyServer>::all(client.clone()).get_opt(name).await {
        Ok(Some(server)) => crate::policy_server::sources(&server),
        _ => Sources::default(),
    }
}

async fn review_policy(
    reviewer: &Reviewer,
    request: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(request);
    let Some(object) = &request.object else {
        return response;
    };
    let sources = sources(&reviewer.client, object).await;
    let mut warnings = Vec::new();
    for (member, module, settings) in modules(object) {
        let label = if member.is_empty() {
            String::new()
        } else {
            format!("policy `{member}`: ")
        };
        match reviewer
            .checker
            .check_with(&request.name, &module, &settings, &sources)
            .await
        {
            Ok(()) => {}
            Err(CheckError::Settings(message)) => {
                return response.deny(format!("{label}invalid settings: {message}"));
            }
            // A registry outage must not block applying policies; the
            // policy's status says why it is not active yet.
            Err(CheckError::Module(reason)) => warnings.push(format!(
                "{label}settings not checked, the module could not be loaded: {reason}"
            )),
        }
    }
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

/// How the API server reaches this webhook.
#[derive(Debug, Clone)]
pub enum AdmissionEndpoint {
    Url(String),
    Service { namespace: String, name: String },
}

/// Registers (or updates) the controller's webhook for the policy kinds.
pub async fn register(
    client: &kube::Client,
    endpoint: &AdmissionEndpoint,
    ca_bundle: &[u8],
) -> Result<(), kube::Error> {
    let (url, service) = match endpoint {
        AdmissionEndpoint::Url(base) => (
            Some(format!("{}{WEBHOOK_PATH}", base.trim_end_matches('/'))),
            None,
        ),
        AdmissionEndpoint::Service { namespace, name } => (
            None,
            Some(ServiceReference {
                name: name.clone(),
                namespace: namespace.clone(),
                path: Some(WEBHOOK_PATH.to_owned()),
                port: Some(443),
            }),
        ),
    };
    let config = ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(WEBHOOK_NAME.to_owned()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: "policies.palisade.admission".to_owned(),
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(ca_bundle.to_vec())),
                service,
                url,
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![crate::crd::GROUP.to_owned()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                resources: Some(
                    [
                        "clusteradmissionpolicies",
                        "admissionpolicies",
                        "clusteradmissionpolicygroups",
                        "admissionpolicygroups",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                ),
                scope: Some("*".to_owned()),
            }]),
            failure_policy: Some("Fail".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(10),
            admission_review_versions: vec!["v1".to_owned()],
            match_policy: None,
            match_conditions: None,
            namespace_selector: None,
            object_selector: None,
        }]),
    };
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(
            WEBHOOK_NAME,
            &PatchParams::apply("palisade-controller").force(),
            &Patch::Apply(&config),
        )
        .await?;
    Ok(())
}
