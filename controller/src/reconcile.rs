//! ClusterAdmissionPolicy reconciliation: check the settings through the
//! host crate, put the policy into its policy-server's `policies.yml`
//! ConfigMap, register its webhook, and keep the status true.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::crd::{ClusterAdmissionPolicy, PolicyServer, PolicyStatusPhase};
use crate::policy::{
    cluster_policy_id, policies_entry, webhook_configuration, WebhookConfiguration, WebhookEndpoint,
};
use crate::settings::SettingsChecker;

const FINALIZER: &str = "kubewarden.io/cleanup";
const MANAGER: &str = "palisade-controller";
/// The ConfigMap key the policy-server reads.
pub const POLICIES_KEY: &str = "policies.yml";

/// What every reconciliation needs.
pub struct Context {
    pub client: Client,
    /// The engine's namespace: policy-server ConfigMaps live here and
    /// cluster-wide webhooks never see it.
    pub namespace: String,
    pub endpoint: WebhookEndpoint,
    /// PEM of the CA that signed the policy-servers' serving certificates.
    pub ca_bundle: Vec<u8>,
    pub checker: SettingsChecker,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A reconciliation failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Json(_) => "json",
        }
    }
}

/// The name of the ConfigMap holding a policy-server's `policies.yml`.
pub fn config_map_name(policy_server: &str) -> String {
    format!("policy-server-{policy_server}")
}

/// Runs the ClusterAdmissionPolicy controller until the stream ends.
pub async fn run(context: Arc<Context>) {
    let policies: Api<ClusterAdmissionPolicy> = Api::all(context.client.clone());
    Controller::new(policies, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(policy = %object.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

fn error_policy(policy: Arc<ClusterAdmissionPolicy>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), error = %error, kind = error.metric_label(), "retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Reconciles one ClusterAdmissionPolicy.
#[tracing::instrument(skip_all, fields(policy = %policy.name_any()))]
pub async fn reconcile(
    policy: Arc<ClusterAdmissionPolicy>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let api: Api<ClusterAdmissionPolicy> = Api::all(context.client.clone());
    finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Event::Apply(policy) => apply(&policy, &context).await,
            Event::Cleanup(policy) => cleanup(&policy, &context).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

async fn apply(policy: &ClusterAdmissionPolicy, context: &Context) -> Result<Action, Error> {
    let name = policy.name_any();
    let id = cluster_policy_id(&name);
    let server = policy.spec.webhook.policy_server.clone();
    if server.is_empty() {
        set_status(context, &name, PolicyStatusPhase::Unscheduled, policy, None).await?;
        return Ok(Action::await_change());
    }
    let servers: Api<PolicyServer> = Api::all(context.client.clone());
    if servers.get_opt(&server).await?.is_none() {
        set_status(context, &name, PolicyStatusPhase::Scheduled, policy, None).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    if let Err(problem) = context
        .checker
        .check(&id, &policy.spec.module, &policy.spec.settings)
        .await
    {
        tracing::info!(%id, reason = problem.reason(), %problem, "policy not activated");
        remove_webhooks(context, &id).await?;
        set_entry(context, &server, &id, None).await?;
        let condition = (problem.reason(), problem.to_string());
        set_status(
            context,
            &name,
            PolicyStatusPhase::Pending,
            policy,
            Some(condition),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    set_entry(context, &server, &id, Some(policies_entry(policy))).await?;
    let params = PatchParams::apply(MANAGER).force();
    match webhook_configuration(
        policy,
        &context.endpoint,
        &context.namespace,
        &context.ca_bundle,
    ) {
        WebhookConfiguration::Validating(config) => {
            Api::<ValidatingWebhookConfiguration>::all(context.client.clone())
                .patch(&id, &params, &Patch::Apply(&config))
                .await?;
            delete_if_present(
                Api::<MutatingWebhookConfiguration>::all(context.client.clone()),
                &id,
            )
            .await?;
        }
        WebhookConfiguration::Mutating(config) => {
            Api::<MutatingWebhookConfiguration>::all(context.client.clone())
                .patch(&id, &params, &Patch::Apply(&config))
                .await?;
            delete_if_present(
                Api::<ValidatingWebhookConfiguration>::all(context.client.clone()),
                &id,
            )
            .await?;
        }
    }
    set_status(context, &name, PolicyStatusPhase::Active, policy, None).await?;
    // Re-applying reverts drift on the webhook configuration.
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn cleanup(policy: &ClusterAdmissionPolicy, context: &Context) -> Result<Action, Error> {
    let id = cluster_policy_id(&policy.name_any());
    remove_webhooks(context, &id).await?;
    set_entry(context, &policy.spec.webhook.policy_server, &id, None).await?;
    Ok(Action::await_change())
}

async fn remove_webhooks(context: &Context, id: &str) -> Result<(), Error> {
    delete_if_present(
        Api::<ValidatingWebhookConfiguration>::all(context.client.clone()),
        id,
    )
    .await?;
    delete_if_present(
        Api::<MutatingWebhookConfiguration>::all(context.client.clone()),
        id,
    )
    .await
}

async fn delete_if_present<K>(api: Api<K>, name: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sets (or removes, with `None`) one policy's entry in its policy-server's
/// ConfigMap. A concurrent change makes the replace fail; the retry reads again.
async fn set_entry(
    context: &Context,
    server: &str,
    id: &str,
    entry: Option<serde_json::Value>,
) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), &context.namespace);
    let name = config_map_name(server);
    let current = api.get_opt(&name).await?;
    let mut policies: BTreeMap<String, serde_json::Value> = current
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(POLICIES_KEY))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let changed = match entry {
        Some(entry) => policies.insert(id.to_owned(), entry.clone()) != Some(entry),
        None => policies.remove(id).is_some(),
    };
    if !changed && current.is_some() {
        return Ok(());
    }
    let data = BTreeMap::from([(
        POLICIES_KEY.to_owned(),
        serde_json::to_string_pretty(&policies)?,
    )]);
    match current {
        Some(mut config_map) => {
            config_map.data = Some(data);
            api.replace(&name, &PostParams::default(), &config_map)
                .await?;
        }
        None => {
            let config_map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(context.namespace.clone()),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            api.create(&PostParams::default(), &config_map).await?;
        }
    }
    Ok(())
}

async fn set_status(
    context: &Context,
    name: &str,
    phase: PolicyStatusPhase,
    policy: &ClusterAdmissionPolicy,
    problem: Option<(&str, String)>,
) -> Result<(), Error> {
    let active = phase == PolicyStatusPhase::Active;
    let (reason, message) = match &problem {
        Some((reason, message)) => ((*reason).to_owned(), message.clone()),
        None if active => (
            "PolicyActive".to_owned(),
            "the webhook is registered".to_owned(),
        ),
        None => (
            format!("{phase:?}"),
            format!("the policy is {phase:?}").to_lowercase(),
        ),
    };
    let previous = policy.status.as_ref();
    let unchanged = previous.is_some_and(|s| {
        s.policy_status == Some(phase)
            && s.conditions
                .iter()
                .any(|c| c.type_ == "PolicyActive" && c.message == message && c.reason == reason)
    });
    if unchanged {
        return Ok(());
    }
    let status = json!({
        "status": {
            "policyStatus": phase,
            "mode": policy.spec.webhook.mode,
            "conditions": [{
                "type": "PolicyActive",
                "status": if active { "True" } else { "False" },
                "reason": reason,
                "message": message,
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            }],
        }
    });
    Api::<ClusterAdmissionPolicy>::all(context.client.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}
