//! What differs between the four policy kinds, behind one trait, so that a
//! single reconciler serves them all.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Map, Value};

use crate::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyGroupMember, PolicyMode, PolicyStatus, WebhookFields,
};

/// The label every Kubernetes namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// One module a policy runs, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Module<'a> {
    /// The group member's name; `None` for a single policy.
    pub member: Option<&'a str>,
    pub module: &'a str,
    pub settings: &'a Value,
}

/// A policy resource of any kind.
pub trait PolicyResource:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The id the policy is served under (`/validate/<id>`), as Kubewarden names it.
    fn id(&self) -> String;
    fn webhook(&self) -> &WebhookFields;
    fn mutating(&self) -> bool;
    fn modules(&self) -> Vec<Module<'_>>;
    fn status(&self) -> Option<&PolicyStatus>;
    /// The `policies.yml` entry. Cluster-wide policies may use every host
    /// capability; namespaced ones get what their PolicyServer allows.
    fn entry(&self, namespaced_capabilities: &[String]) -> Value;
    /// The namespaces the webhook sees.
    fn namespace_selector(&self, engine_namespace: &str) -> LabelSelector;
    /// An Api that can get, patch and finalize this object.
    fn object_api(&self, client: Client) -> Api<Self>;
}

fn mode(mode: PolicyMode) -> &'static str {
    match mode {
        PolicyMode::Protect => "protect",
        PolicyMode::Monitor => "monitor",
    }
}

fn namespaced_name(resource: &impl kube::Resource) -> Value {
    match resource.meta().namespace.as_deref() {
        Some(namespace) => json!({"namespace": namespace, "name": resource.meta().name}),
        None => json!({"name": resource.meta().name}),
    }
}

fn insert_optional(entry: &mut Value, key: &str, value: Option<Value>) {
    if let (Some(object), Some(value)) = (entry.as_object_mut(), value) {
        object.insert(key.to_owned(), value);
    }
}

/// What a single (not group) policy puts into its entry.
struct Single<'a> {
    module: &'a str,
    settings: &'a Value,
    mutating: bool,
    webhook: &'a WebhookFields,
    message: Option<&'a String>,
    context_aware: Value,
}

fn single_entry(
    resource: &impl kube::Resource,
    single: Single<'_>,
    capabilities: &[String],
) -> Value {
    let mut entry = json!({
        "module": single.module,
        "settings": single.settings,
        "policyMode": mode(single.webhook.mode),
        "allowedToMutate": single.mutating,
        "contextAwareResources": single.context_aware,
        "hostCapabilities": capabilities,
        "namespacedName": namespaced_name(resource),
    });
    insert_optional(&mut entry, "message", single.message.map(|m| json!(m)));
    insert_optional(
        &mut entry,
        "timeoutEvalSeconds",
        single.webhook.timeout_eval_seconds.map(|t| json!(t)),
    );
    entry
}

fn group_entry(
    resource: &impl kube::Resource,
    members: &std::collections::BTreeMap<String, PolicyGroupMember>,
    expression: &str,
    message: &str,
    webhook: &WebhookFields,
    capabilities: &[String],
) -> Value {
    let policies: Map<String, Value> = members
        .iter()
        .map(|(name, member)| {
            let mut value = json!({
                "module": member.module,
                "settings": member.settings,
                "contextAwareResources": member.context_aware_resources,
                "hostCapabilities": capabilities,
            });
            insert_optional(
                &mut value,
                "timeoutEvalSeconds",
                member.timeout_eval_seconds.map(|t| json!(t)),
            );
            (name.clone(), value)
        })
        .collect();
    json!({
        "policies": policies,
        "expression": expression,
        "message": message,
        "policyMode": mode(webhook.mode),
        "namespacedName": namespaced_name(resource),
    })
}

fn group_modules(
    members: &std::collections::BTreeMap<String, PolicyGroupMember>,
) -> Vec<Module<'_>> {
    members
        .iter()
        .map(|(name, member)| Module {
            member: Some(name),
            module: &member.module,
            settings: &member.settings,
        })
        .collect()
}

/// Cluster-wide policies never see the engine's own namespace (a broken
/// policy must not lock the operator out of fixing it).
fn cluster_selector(user: Option<&LabelSelector>, engine_namespace: &str) -> LabelSelector {
    let mut selector = user.cloned().unwrap_or_default();
    selector
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "NotIn".into(),
            values: Some(vec![engine_namespace.to_owned()]),
        });
    selector
}

/// Namespaced policies see only their own namespace.
fn own_namespace_selector(resource: &impl kube::Resource) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "In".into(),
            values: Some(vec![resource.meta().namespace.clone().unwrap_or_default()]),
        }]),
        match_labels: None,
    }
}

/// The trait methods that read the same fields in both single-policy kinds.
macro_rules! single_policy_fields {
    () => {
        fn webhook(&self) -> &WebhookFields {
            &self.spec.webhook
        }
        fn mutating(&self) -> bool {
            self.spec.mutating
        }
        fn modules(&self) -> Vec<Module<'_>> {
            vec![Module {
                member: None,
                module: &self.spec.module,
                settings: &self.spec.settings,
            }]
        }
        fn status(&self) -> Option<&PolicyStatus> {
            self.status.as_ref()
        }
    };
}

/// The same for both group kinds; a group never mutates.
macro_rules! group_policy_fields {
    () => {
        fn webhook(&self) -> &WebhookFields {
            &self.spec.webhook
        }
        fn mutating(&self) -> bool {
            false
        }
        fn modules(&self) -> Vec<Module<'_>> {
            group_modules(&self.spec.policies)
        }
        fn status(&self) -> Option<&PolicyStatus> {
            self.status.as_ref()
        }
    };
}

const ALL_CAPABILITIES: &[&str] = &["*"];

fn all_capabilities() -> Vec<String> {
    ALL_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()
}

impl PolicyResource for ClusterAdmissionPolicy {
    fn object_api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
    fn id(&self) -> String {
        format!("clusterwide-{}", self.name_any())
    }
    single_policy_fields!();
    fn entry(&self, _: &[String]) -> Value {
        let single = Single {
            module: &self.spec.module,
            settings: &self.spec.settings,
            mutating: self.spec.mutating,
            webhook: &self.spec.webhook,
            message: self.spec.message.as_ref(),
            context_aware: json!(self.spec.context_aware_resources),
        };
        single_entry(self, single, &all_capabilities())
    }
    fn namespace_selector(&self, engine_namespace: &str) -> LabelSelector {
        cluster_selector(self.spec.namespace_selector.as_ref(), engine_namespace)
    }
}

impl PolicyResource for AdmissionPolicy {
    fn object_api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
    fn id(&self) -> String {
        format!(
            "namespaced-{}-{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }
    single_policy_fields!();
    fn entry(&self, namespaced_capabilities: &[String]) -> Value {
        let single = Single {
            module: &self.spec.module,
            settings: &self.spec.settings,
            mutating: self.spec.mutating,
            webhook: &self.spec.webhook,
            message: self.spec.message.as_ref(),
            context_aware: json!([]),
        };
        single_entry(self, single, namespaced_capabilities)
    }
    fn namespace_selector(&self, _: &str) -> LabelSelector {
        own_namespace_selector(self)
    }
}

impl PolicyResource for ClusterAdmissionPolicyGroup {
    fn object_api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
    fn id(&self) -> String {
        format!("clusterwide-group-{}", self.name_any())
    }
    group_policy_fields!();
    fn entry(&self, _: &[String]) -> Value {
        group_entry(
            self,
            &self.spec.policies,
            &self.spec.expression,
            &self.spec.message,
            &self.spec.webhook,
            &all_capabilities(),
        )
    }
    fn namespace_selector(&self, engine_namespace: &str) -> LabelSelector {
        cluster_selector(self.spec.namespace_selector.as_ref(), engine_namespace)
    }
}

impl PolicyResource for AdmissionPolicyGroup {
    fn object_api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
    fn id(&self) -> String {
        format!(
            "namespaced-group-{}-{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }
    group_policy_fields!();
    fn entry(&self, namespaced_capabilities: &[String]) -> Value {
        group_entry(
            self,
            &self.spec.policies,
            &self.spec.expression,
            &self.spec.message,
            &self.spec.webhook,
            namespaced_capabilities,
        )
    }
    fn namespace_selector(&self, _: &str) -> LabelSelector {
        own_namespace_selector(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn ids_follow_kubewardens_naming() {
        let cap: ClusterAdmissionPolicy = from(
            json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
            "metadata": {"name": "p"}, "spec": {"module": "m"}}),
        );
        let ap: AdmissionPolicy = from(
            json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "AdmissionPolicy",
            "metadata": {"name": "p", "namespace": "team"}, "spec": {"module": "m"}}),
        );
        let group =
            json!({"policies": {"a": {"module": "m"}}, "expression": "a()", "message": "no"});
        let capg: ClusterAdmissionPolicyGroup = from(
            json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicyGroup",
            "metadata": {"name": "g"}, "spec": group}),
        );
        let apg: AdmissionPolicyGroup = from(
            json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "AdmissionPolicyGroup",
            "metadata": {"name": "g", "namespace": "team"}, "spec": group}),
        );
        assert_eq!(cap.id(), "clusterwide-p");
        assert_eq!(ap.id(), "namespaced-team-p");
        assert_eq!(capg.id(), "clusterwide-group-g");
        assert_eq!(apg.id(), "namespaced-group-team-g");
    }

    #[test]
    fn namespaced_policies_see_only_their_namespace_and_get_the_servers_capabilities() {
        let ap: AdmissionPolicy = from(
            json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "AdmissionPolicy",
            "metadata": {"name": "p", "namespace": "team"}, "spec": {"module": "m", "mode": "monitor"}}),
        );
        let selector = ap.namespace_selector("kubewarden");
        let requirement = &selector.match_expressions.unwrap()[0];
        assert_eq!(requirement.operator, "In");
        assert_eq!(
            requirement.values.as_deref(),
            Some(&["team".to_owned()][..])
        );
        let entry = ap.entry(&["net/*".to_owned()]);
        assert_eq!(entry["hostCapabilities"], json!(["net/*"]));
        assert_eq!(entry["policyMode"], "monitor");
        assert_eq!(
            entry["namespacedName"],
            json!({"namespace": "team", "name": "p"})
        );
    }

    #[test]
    fn group_entries_are_in_the_policy_servers_group_format() {
        let capg: ClusterAdmissionPolicyGroup = from(
            json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicyGroup",
            "metadata": {"name": "g"},
            "spec": {"policies": {"a": {"module": "m1", "settings": {"x": 1}}, "b": {"module": "m2"}},
                     "expression": "a() && !b()", "message": "no"}}),
        );
        let entry = capg.entry(&[]);
        let config = palisade_host::server::config::PoliciesConfig::parse(
            &serde_json::to_string(&json!({"g": entry})).unwrap(),
            "test",
        )
        .unwrap();
        assert_eq!(config.modules(), vec!["m1".to_owned(), "m2".to_owned()]);
        assert_eq!(capg.modules().len(), 2);
        assert_eq!(capg.modules()[0].member, Some("a"));
        let excluded = &capg
            .namespace_selector("kubewarden")
            .match_expressions
            .unwrap()[0];
        assert_eq!(excluded.operator, "NotIn");
    }
}
