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
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;

use crate::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyServer,
};
use crate::kinds::PolicyResource;
use crate::objects::sources;
use crate::settings::{CheckError, SettingsChecker};
use crate::webhook::WebhookEndpoint;

/// Name of the controller's ValidatingWebhookConfiguration.
pub const WEBHOOK_NAME: &str = "palisade-controller";
/// The Service in front of the controller's webhook, in a cluster.
pub const SERVICE_NAME: &str = "palisade-controller";
/// Path the webhook is served on.
pub const WEBHOOK_PATH: &str = "/validate-policies";
const MAX_BODY: usize = 3 << 20;
/// How long the settings checks of one review may take, well within the
/// webhook's 10 s timeout.
const CHECK_BUDGET: std::time::Duration = std::time::Duration::from_secs(7);

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

/// Answers one AdmissionReview for a policy resource. A request that is not
/// a review still gets one, saying what was wrong (the API server shows it).
pub async fn handle(reviewer: Arc<Reviewer>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != WEBHOOK_PATH {
        return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found"));
    }
    let response = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => answer(&reviewer, &body.to_bytes()).await,
        Err(e) => AdmissionResponse::invalid(format!("cannot read the request body: {e}")),
    };
    match serde_json::to_vec(&response.into_review()) {
        Ok(json) => reply(StatusCode::OK, Bytes::from(json)),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from(e.to_string()),
        ),
    }
}

async fn answer(reviewer: &Reviewer, body: &[u8]) -> AdmissionResponse {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => return AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return AdmissionResponse::invalid(format!("the review has no request: {e}")),
    };
    match request.kind.kind.as_str() {
        ClusterAdmissionPolicy::KIND => {
            check_policy::<ClusterAdmissionPolicy>(reviewer, &request).await
        }
        AdmissionPolicy::KIND => check_policy::<AdmissionPolicy>(reviewer, &request).await,
        ClusterAdmissionPolicyGroup::KIND => {
            check_policy::<ClusterAdmissionPolicyGroup>(reviewer, &request).await
        }
        AdmissionPolicyGroup::KIND => {
            check_policy::<AdmissionPolicyGroup>(reviewer, &request).await
        }
        other => AdmissionResponse::from(&request).deny(format!(
            "this webhook reviews the policy kinds, not `{other}`"
        )),
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

/// Checks every module of the policy with its settings, fetching with the
/// sources of the PolicyServer the policy names.
async fn check_policy<K: PolicyResource>(
    reviewer: &Reviewer,
    request: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = &request.object else {
        return response;
    };
    let policy: K = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(policy) => policy,
        Err(e) => return response.deny(format!("not a valid {}: {e}", K::KIND)),
    };
    let server_name = &policy.webhook().policy_server;
    // A PolicyServer that does not exist yet is no error (the policy waits
    // for it); one that cannot be read is, rather than a guess at its sources.
    let sources = match Api::<PolicyServer>::all(reviewer.client.clone())
        .get_opt(server_name)
        .await
    {
        Ok(server) => server.as_ref().map(sources).unwrap_or_default(),
        Err(e) => {
            let mut response =
                response.deny(format!("cannot read PolicyServer `{server_name}`: {e}"));
            response.result.code = 500;
            return response;
        }
    };
    let mut warnings = Vec::new();
    // The API server gives up after the webhook's timeout (10 s) and then
    // refuses the policy (failurePolicy Fail): a registry that does not
    // answer must end in a warning before that, not in a refusal.
    let deadline = tokio::time::Instant::now() + CHECK_BUDGET;
    for module in policy.modules() {
        let label = module.label();
        let check =
            reviewer
                .checker
                .check_with(&request.name, module.module, module.settings, &sources);
        let Ok(checked) = tokio::time::timeout_at(deadline, check).await else {
            warnings.push(format!(
                "{label}settings not checked: fetching and checking the module took longer than {} s; the policy's status will say whether it is valid",
                CHECK_BUDGET.as_secs()
            ));
            continue;
        };
        match checked {
            Ok(()) => {}
            Err(CheckError::Settings(message)) => {
                return response.deny(format!("{label}invalid settings: {message}"));
            }
            // A registry outage must not block applying policies; the
            // policy's status says why it is not active yet.
            Err(problem) => warnings.push(format!(
                "{label}settings not checked ({}): {problem}",
                problem.reason()
            )),
        }
    }
    if !warnings.is_empty() {
        let mut response = response;
        response.warnings = Some(warnings);
        return response;
    }
    response
}

/// Registers (or updates) the controller's webhook for the policy kinds,
/// served by the Service [`SERVICE_NAME`] or under a base URL.
pub async fn register(
    client: &kube::Client,
    endpoint: &WebhookEndpoint,
    ca_bundle: &[u8],
) -> Result<(), kube::Error> {
    let config = ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(WEBHOOK_NAME.to_owned()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: "policies.palisade.admission".to_owned(),
            client_config: endpoint.client_config(SERVICE_NAME, "", WEBHOOK_PATH, ca_bundle),
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

/// The webhook's own serving certificate, issued by the engine's CA (the
/// one the policy-servers' certificates come from) and kept in the Secret
/// `secret`: no certificate to hand the controller, nothing for Helm to
/// generate. Written to `dir` as `tls.crt` and `tls.key` for the TLS server.
#[derive(Debug, Clone)]
pub struct OwnCertificate {
    pub secret: String,
    /// The host of an out-of-cluster URL, which the certificate must name.
    pub url_host: Option<String>,
    pub dir: std::path::PathBuf,
}

impl OwnCertificate {
    pub fn cert_path(&self) -> std::path::PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key_path(&self) -> std::path::PathBuf {
        self.dir.join("tls.key")
    }

    /// Issues or renews what is due and writes the files; returns the CA
    /// bundle to register the webhook with.
    pub async fn ensure(
        &self,
        context: &crate::reconcile::Context,
    ) -> Result<String, crate::reconcile::Error> {
        use crate::reconcile::pki::{ensure_authority, ensure_serving, ServingSecret};
        let now = time::OffsetDateTime::now_utc();
        let ca = ensure_authority(context, now).await?;
        let serving = ensure_serving(
            context,
            &ca,
            &ServingSecret {
                name: self.secret.clone(),
                names: crate::certs::serving_names(
                    SERVICE_NAME,
                    &context.namespace,
                    self.url_host.as_deref(),
                ),
                labels: std::collections::BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    SERVICE_NAME.to_owned(),
                )]),
                owner: None,
            },
            now,
        )
        .await?;
        // The key first: a reload never pairs a new certificate with an old
        // key for longer than one check.
        write_if_changed(&self.key_path(), &serving.key_pem)?;
        write_if_changed(&self.cert_path(), &serving.cert_pem)?;
        Ok(ca.bundle_pem)
    }

    /// Keeps the certificate current until `stopped`: renews it when due
    /// (checked hourly), reloads it into the TLS server, and registers the
    /// webhook again when the CA bundle changed (a renewed CA).
    pub async fn keep_current(
        self,
        context: Arc<crate::reconcile::Context>,
        endpoint: WebhookEndpoint,
        certificate: Arc<palisade_host::server::tls::ReloadingCertificate>,
        mut bundle: String,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                _ = stopped.changed() => return,
            }
            let now = match self.ensure(&context).await {
                Ok(now) => now,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the admission certificate");
                    continue;
                }
            };
            if let Err(e) = certificate.reload_if_changed() {
                tracing::warn!(error = %e, "cannot reload the admission certificate");
            }
            if now != bundle {
                match register(&context.client, &endpoint, now.as_bytes()).await {
                    Ok(()) => bundle = now,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register the admission webhook with the renewed CA")
                    }
                }
            }
        }
    }
}

/// Writes `text` to `path` unless it is there already: the TLS server
/// reloads on a new modification time.
fn write_if_changed(path: &std::path::Path, text: &str) -> Result<(), crate::reconcile::Error> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, text))
        .map_err(|e| {
            crate::reconcile::Error::Certificate(crate::certs::CertError::Io(format!(
                "{}: {e}",
                path.display()
            )))
        })
}
