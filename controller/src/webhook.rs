//! The webhook configuration the controller registers for a policy.

use std::collections::BTreeMap;

use crate::kinds::PolicyResource;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

/// Label put on every webhook configuration: the policy id.
pub const POLICY_LABEL: &str = "kubewarden.io/policy";
/// Label put on every object derived from a PolicyServer: its name.
pub const POLICY_SERVER_LABEL: &str = "kubewarden.io/policy-server";

/// How the API server reaches the policy-servers.
#[derive(Debug, Clone)]
pub enum WebhookEndpoint {
    /// In a cluster: the policy-server Service `policy-server-<name>` in the engine namespace.
    Service { namespace: String },
    /// Out of cluster (development, tests): `<base>/validate/<id>`, where
    /// `{policy-server}` in `base` is replaced by the PolicyServer's name.
    Url { base: String },
}

impl WebhookEndpoint {
    /// Out of cluster under `url` when one is given, else the Services of
    /// the engine's `namespace`.
    pub fn new(url: Option<String>, namespace: &str) -> Self {
        match url {
            Some(base) => Self::Url { base },
            None => Self::Service {
                namespace: namespace.to_owned(),
            },
        }
    }

    /// The out-of-cluster base URL of one policy-server.
    pub fn base_url(&self, policy_server: &str) -> Option<String> {
        match self {
            Self::Url { base } => Some(
                base.replace("{policy-server}", policy_server)
                    .trim_end_matches('/')
                    .to_owned(),
            ),
            Self::Service { .. } => None,
        }
    }

    /// The host of the out-of-cluster URL, which the serving certificate must name.
    pub fn url_host(&self, policy_server: &str) -> Option<String> {
        let base = self.base_url(policy_server)?;
        let uri: hyper::Uri = base.parse().ok()?;
        uri.host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
    }
}

impl WebhookEndpoint {
    /// How the API server reaches `path`: on the Service `service` in a
    /// cluster, or under the base URL of `policy_server` out of it.
    pub fn client_config(
        &self,
        service: &str,
        policy_server: &str,
        path: &str,
        ca_bundle: &[u8],
    ) -> WebhookClientConfig {
        let (url, service) = match self {
            Self::Url { .. } => (
                self.base_url(policy_server)
                    .map(|base| format!("{base}{path}")),
                None,
            ),
            Self::Service { namespace } => (
                None,
                Some(ServiceReference {
                    name: service.to_owned(),
                    namespace: namespace.clone(),
                    path: Some(path.to_owned()),
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
}

fn metadata(id: &str, policy_server: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(id.to_owned()),
        labels: Some(BTreeMap::from([
            (POLICY_LABEL.to_owned(), id.to_owned()),
            (POLICY_SERVER_LABEL.to_owned(), policy_server.to_owned()),
        ])),
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
    policy: &impl PolicyResource,
    endpoint: &WebhookEndpoint,
    engine_namespace: &str,
    ca_bundle: &[u8],
) -> WebhookConfiguration {
    let id = policy.id();
    let fields = policy.webhook();
    let server = &fields.policy_server;
    // The two API types differ only by the reinvocation policy: one list of
    // fields builds either.
    macro_rules! webhook {
        ($type:ident { $($extra:tt)* }) => {
            $type {
                name: format!("{id}.kubewarden.admission"),
                client_config: endpoint.client_config(
                    &crate::objects::object_name(server),
                    server,
                    &format!("/validate/{id}"),
                    ca_bundle,
                ),
                rules: Some(fields.rules.clone()),
                failure_policy: fields.failure_policy.clone(),
                match_policy: fields.match_policy.clone(),
                match_conditions: Some(fields.match_conditions.clone()).filter(|m| !m.is_empty()),
                namespace_selector: Some(policy.namespace_selector(engine_namespace)),
                object_selector: fields.object_selector.clone(),
                side_effects: fields.side_effects.clone().unwrap_or_else(|| "None".into()),
                timeout_seconds: Some(fields.timeout_seconds),
                admission_review_versions: vec!["v1".to_owned()],
                $($extra)*
            }
        };
    }
    if policy.mutating() {
        WebhookConfiguration::Mutating(MutatingWebhookConfiguration {
            metadata: metadata(&id, server),
            webhooks: Some(vec![webhook!(MutatingWebhook {
                reinvocation_policy: None,
            })]),
        })
    } else {
        WebhookConfiguration::Validating(ValidatingWebhookConfiguration {
            metadata: metadata(&id, server),
            webhooks: Some(vec![webhook!(ValidatingWebhook {})]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ClusterAdmissionPolicy;
    use serde_json::json;

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
        let entry = serde_json::to_value(policy(true).entry(&[])).unwrap();
        assert_eq!(entry["module"], "registry://r/p:1");
        assert_eq!(entry["policyMode"], "monitor");
        assert_eq!(entry["allowedToMutate"], true);
        assert_eq!(entry["message"], "m");
        assert_eq!(entry["hostCapabilities"], json!(["*"]));
        assert_eq!(entry["settings"], json!({}));
    }

    #[test]
    fn out_of_cluster_urls_name_the_policy_server_and_the_certificate_host() {
        let endpoint = WebhookEndpoint::Url {
            base: "https://127.0.0.1:8443/{policy-server}/".into(),
        };
        assert_eq!(
            endpoint.base_url("default").as_deref(),
            Some("https://127.0.0.1:8443/default")
        );
        assert_eq!(endpoint.url_host("default").as_deref(), Some("127.0.0.1"));
        let WebhookConfiguration::Validating(config) =
            webhook_configuration(&policy(false), &endpoint, "kubewarden", b"CA")
        else {
            panic!("expected a validating configuration");
        };
        let hook = &config.webhooks.unwrap()[0];
        assert_eq!(
            hook.client_config.url.as_deref(),
            Some("https://127.0.0.1:8443/default/validate/clusterwide-p")
        );
        let labels = config.metadata.labels.unwrap();
        assert_eq!(labels[POLICY_SERVER_LABEL], "default");
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
