//! Removing Palisade without leaving the cluster bricked: what the Helm
//! chart's pre-delete hook runs (`controller --uninstall`). Webhooks that
//! point at policy-servers about to disappear would reject every request
//! they match (failurePolicy Fail), so they go first, and the controller is
//! stopped before that so that it does not register them again.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::admission::WEBHOOK_NAME;
use crate::crd::PolicyServer;
use crate::reconcile::{delete_if_present, Error};
use crate::webhook::POLICY_LABEL;

/// What to remove.
#[derive(Debug, Clone)]
pub struct Uninstall {
    /// The engine's namespace.
    pub namespace: String,
    /// The controller's Deployment, scaled to zero first.
    pub deployment: String,
    /// PolicyServers to delete (the chart's default one); their objects go
    /// with them (owner references). Users' PolicyServers and policies stay.
    pub policy_servers: Vec<String>,
}

/// What was removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub webhooks: Vec<String>,
    pub policy_servers: Vec<String>,
}

/// Stops the controller, deletes every webhook configuration Palisade
/// registered (the policies' and the controller's own), then the named
/// PolicyServers, whose finalizer nobody would run any more.
pub async fn uninstall(client: &Client, plan: &Uninstall) -> Result<Removed, Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &plan.namespace);
    if deployments.get_opt(&plan.deployment).await?.is_some() {
        deployments
            .patch_scale(
                &plan.deployment,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}})),
            )
            .await?;
        tracing::info!(deployment = %plan.deployment, "controller scaled to zero");
        wait_stopped(&deployments, &plan.deployment).await?;
    }

    let mut removed = Removed::default();
    let labelled = ListParams::default().labels(POLICY_LABEL);
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for config in validating.list_metadata(&labelled).await?.items {
        delete_if_present(validating.clone(), &config.name_any()).await?;
        removed.webhooks.push(config.name_any());
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for config in mutating.list_metadata(&labelled).await?.items {
        delete_if_present(mutating.clone(), &config.name_any()).await?;
        removed.webhooks.push(config.name_any());
    }
    if validating.get_opt(WEBHOOK_NAME).await?.is_some() {
        delete_if_present(validating, WEBHOOK_NAME).await?;
        removed.webhooks.push(WEBHOOK_NAME.to_owned());
    }
    for name in &removed.webhooks {
        tracing::info!(webhook = %name, "webhook configuration deleted");
    }

    let servers: Api<PolicyServer> = Api::all(client.clone());
    for name in &plan.policy_servers {
        if servers.get_opt(name).await?.is_none() {
            continue;
        }
        servers
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await?;
        delete_if_present(servers.clone(), name).await?;
        removed.policy_servers.push(name.clone());
        tracing::info!(policy_server = %name, "PolicyServer deleted");
    }
    Ok(removed)
}

/// Waits (up to two minutes) until the Deployment has no pod left.
async fn wait_stopped(deployments: &Api<Deployment>, name: &str) -> Result<(), kube::Error> {
    for _ in 0..240 {
        let left = deployments
            .get_opt(name)
            .await?
            .and_then(|d| d.status)
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::warn!(deployment = %name, "controller pods still running after 2 minutes; removing the webhooks anyway");
    Ok(())
}
