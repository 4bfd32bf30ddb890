//! What the controller derives from a policy resource: its id, its
//! `policies.yml` entry and its webhook configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::ByteString;
use serde_json::{json, Value};

use crate::crd::{ClusterAdmissionPolicy, PolicyMode};

/// Label put on every object the controller owns for a policy.
pub const POLICY_LABEL: &str = "kubewarden.io/policy";

/// How the API server reaches the policy-servers.
#[derive(Debug, Clone)]
pub enum WebhookEndpoint {
    /// In a cluster: the policy-server Service `policy-server-<name>` in the engine namespace.
    Service { namespace: String },
    /// Out of cluster (development, tests): `<base>/validate/<id>`.
    Url { base: String },
}

/// The id Kubewarden gives a cluster-wide policy.
pub fn cluster_policy_id(name: &str) -> String {
    format!("clusterwide-{name}")
}

/// The `policies.yml` entry of a cluster-wide policy.
pub fn policies_entry(policy: &ClusterAdmissionPolicy) -> Value {
    let spec = &policy.spec;
    let mut entry = json!({
        "module": spec.module,
        "settings": spec.settings,
        "policyMode": match spec.webhook.mode { PolicyMode::Protect => "protect", PolicyMode::Monitor => "monitor" },
        "allowedToMutate": spec.mutating,
        "contextAwareResources": spec.context_aware_resources,
        // Cluster-wide policies are trusted with every host capability, as in Kubewarden.
        "hostCapabilities": ["*"],
    });
    if let Some(object) = entry.as_object_mut() {
        if let Some(message) = &spec.message {
            object.insert("message".into(), json!(message));
        }
        if let Some(timeout) = spec.webhook.timeout_eval_seconds {
            object.insert("timeoutEvalSeconds".into(), json!(timeout));
        }
        object.insert(
            "namespacedName".into(),
            json!({"name": policy.metadata.name.clone().unwrap_or_default()}),
        );
    }
    entry
}

fn client_config(
    id: &str,
    policy_server: &str,
    endpoint: &WebhookEndpoint,
    ca_bundle: &[u8],
) -> WebhookClientConfig {
    let path = format!("/validate/{id}");
    let (url, service) = match endpoint {
        WebhookEndpoint::Url { base } => {
            (Some(format!("{}{path}", base.trim_end_matches('/'))), None)
        }
        WebhookEndpoint::Service { namespace } => (
            None,
            Some(ServiceReference {
                name: format!("policy-server-{policy_server}"),
                namespace: namespace.clone(),
                path: Some(path),
                port: Some(443),
            }),
        ),
    };
    WebhookClientConfig {
        ca_bundle: Some(ByteString(ca_bundle.to_vec())),
        service,
        url,
    }
}

/// Cluster-wide policies never see the engine's own namespace.
fn namespace_selector(policy: &ClusterAdmissionPolicy, engine_namespace: &str) -> LabelSelector {
    let mut selector = policy.spec.namespace_selector.clone().unwrap_or_default();
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(vec![engine_namespace.to_owned()]),
        });
    selector
}

fn metadata(id: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(id.to_owned()),
        labels: Some(BTreeMap::from([(POLICY_LABEL.to_owned(), name.to_owned())])),
        ..ObjectMeta::default()
    }
}

/// The webhook configuration of a policy: validating, or mutating when the
/// policy mutates.
#[derive(Debug)]
pub enum WebhookConfiguration {
    Validating(ValidatingWebhookConfiguration),
    Mutating(MutatingWebhookConfiguration),
}

pub fn webhook_configuration(
    policy: &ClusterAdmissionPolicy,
    endpoint: &WebhookEndpoint,
    engine_namespace: &str,
    ca_bundle: &[u8],
) -> WebhookConfiguration {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let id = cluster_policy_id(&name);
    let spec = &policy.spec;
    let webhook = ValidatingWebhook {
        name: format!("{id}.kubewarden.admission"),
        client_config: client_config(&id, &spec.webhook.policy_server, endpoint, ca_bundle),
        rules: Some(spec.webhook.rules.clone()),
        failure_policy: spec.webhook.failure_policy.clone(),
        match_policy: spec.webhook.match_policy.clone(),
        match_conditions: Some(spec.webhook.match_conditions.clone()).filter(|m| !m.is_empty()),
        namespace_selector: Some(namespace_selector(policy, engine_namespace)),
        object_selector: spec.webhook.object_selector.clone(),
        side_effects: spec
            .webhook
            .side_effects
            .clone()
            .unwrap_or_else(|| "None".into()),
        timeout_seconds: Some(spec.webhook.timeout_seconds),
        admission_review_versions: vec!["v1".to_owned()],
    };
    if spec.mutating {
        WebhookConfiguration::Mutating(MutatingWebhookConfiguration {
            metadata: metadata(&id, &name),
            webhooks: Some(vec![mutating(webhook)]),
        })
    } else {
        WebhookConfiguration::Validating(ValidatingWebhookConfiguration {
            metadata: metadata(&id, &name),
            webhooks: Some(vec![webhook]),
        })
    }
}

/// The same webhook, registered as mutating (the two API types differ only
/// by the reinvocation policy).
fn mutating(webhook: ValidatingWebhook) -> MutatingWebhook {
    let ValidatingWebhook {
        name,
        client_config,
        rules,
        failure_policy,
        match_policy,
        match_conditions,
        namespace_selector,
        object_selector,
        side_effects,
        timeout_seconds,
        admission_review_versions,
    } = webhook;
    MutatingWebhook {
        name,
        client_config,
        rules,
        failure_policy,
        match_policy,
        match_conditions,
        namespace_selector,
        object_selector,
        side_effects,
        timeout_seconds,
        admission_review_versions,
        reinvocation_policy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mutating: bool) -> ClusterAdmissionPolicy {
        serde_json::from_value(json!({
            "apiVersion": "policies.kubewarden.io/v1",
            "kind": "ClusterAdmissionPolicy",
            "metadata": {"name": "p"},
            "spec": {"module": "registry://r/p:1", "mutating": mutating, "mode": "monitor", "message": "m",
                     "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}]}
        }))
        .unwrap()
    }

    #[test]
    fn policies_entry_is_in_the_policy_servers_format() {
        let entry = policies_entry(&policy(true));
        assert_eq!(entry["module"], "registry://r/p:1");
        assert_eq!(entry["policyMode"], "monitor");
        assert_eq!(entry["allowedToMutate"], true);
        assert_eq!(entry["message"], "m");
        assert_eq!(entry["hostCapabilities"], json!(["*"]));
        assert_eq!(entry["settings"], json!({}));
    }

    #[test]
    fn mutating_policies_get_a_mutating_webhook_with_the_same_fields() {
        let endpoint = WebhookEndpoint::Service {
            namespace: "kubewarden".into(),
        };
        let WebhookConfiguration::Mutating(config) =
            webhook_configuration(&policy(true), &endpoint, "kubewarden", b"CA")
        else {
            panic!("expected a mutating configuration");
        };
        assert_eq!(config.metadata.name.as_deref(), Some("clusterwide-p"));
        let hook = &config.webhooks.unwrap()[0];
        assert_eq!(hook.name, "clusterwide-p.kubewarden.admission");
        let service = hook.client_config.service.as_ref().unwrap();
        assert_eq!(
            (service.name.as_str(), service.path.as_deref()),
            ("policy-server-default", Some("/validate/clusterwide-p"))
        );
        assert_eq!(hook.timeout_seconds, Some(10));
        assert_eq!(hook.side_effects, "None");
        assert!(matches!(
            webhook_configuration(&policy(false), &endpoint, "kubewarden", b"CA"),
            WebhookConfiguration::Validating(_)
        ));
    }
}
