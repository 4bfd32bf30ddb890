//! What differs between the four policy kinds, behind one trait, so that a
//! single reconciler serves them all.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::{Api, Client, ResourceExt};
use palisade_host::server::config::{
    self, Entry, GroupSpec, ModuleSpec, NamespacedName, PolicySpec,
};
use serde_json::Value;

use crate::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    ContextAwareResource, GroupFields, PolicyFields, PolicyMode, PolicyStatus, WebhookFields,
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

impl Module<'_> {
    /// How messages about this module start: `policy `name`: ` for a group
    /// member, nothing for a single policy.
    pub fn label(&self) -> String {
        self.member
            .map(|m| format!("policy `{m}`: "))
            .unwrap_or_default()
    }
}

/// What a policy resource runs: one module, or a group of them.
#[derive(Debug, Clone, Copy)]
pub enum Runs<'a> {
    Single {
        policy: &'a PolicyFields,
        /// What the policy may read from the cluster (cluster-wide kinds only).
        context_aware: &'a [ContextAwareResource],
    },
    Group(&'a GroupFields),
}

/// A policy resource of any kind. The four kinds differ in two ways only:
/// namespaced or cluster-wide, and one module or a group; everything else
/// is derived here once.
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
    /// The kind's name, for logs and metric labels.
    const KIND: &'static str;
    /// Namespaced policies see only their namespace and get the host
    /// capabilities their PolicyServer allows; cluster-wide ones get all.
    const NAMESPACED: bool;

    fn webhook(&self) -> &WebhookFields;
    fn runs(&self) -> Runs<'_>;
    fn status(&self) -> Option<&PolicyStatus>;
    /// The user's namespace selector (cluster-wide kinds only).
    fn user_namespace_selector(&self) -> Option<&LabelSelector>;

    /// The id the policy is served under (`/validate/<id>`), as Kubewarden names it.
    fn id(&self) -> String {
        let group = if matches!(self.runs(), Runs::Group(_)) {
            "group-"
        } else {
            ""
        };
        if Self::NAMESPACED {
            format!(
                "namespaced-{group}{}-{}",
                self.namespace().unwrap_or_default(),
                self.name_any()
            )
        } else {
            format!("clusterwide-{group}{}", self.name_any())
        }
    }

    /// Whether the webhook is a mutating one; a group never mutates.
    fn mutating(&self) -> bool {
        match self.runs() {
            Runs::Single { policy, .. } => policy.mutating,
            Runs::Group(_) => false,
        }
    }

    /// The modules, with their settings, in member order.
    fn modules(&self) -> Vec<Module<'_>> {
        match self.runs() {
            Runs::Single { policy, .. } => vec![Module {
                member: None,
                module: &policy.module,
                settings: &policy.settings,
            }],
            Runs::Group(group) => group
                .policies
                .iter()
                .map(|(name, member)| Module {
                    member: Some(name),
                    module: &member.module,
                    settings: &member.settings,
                })
                .collect(),
        }
    }

    /// The `policies.yml` entry. Cluster-wide policies may use every host
    /// capability; namespaced ones get what their PolicyServer allows.
    fn entry(&self, namespaced_capabilities: &[String]) -> Entry {
        let capabilities = if Self::NAMESPACED {
            namespaced_capabilities.to_vec()
        } else {
            vec!["*".to_owned()]
        };
        let webhook = self.webhook();
        let namespaced_name = Some(NamespacedName {
            namespace: self.namespace(),
            name: self.name_any(),
        });
        match self.runs() {
            Runs::Single {
                policy,
                context_aware,
            } => Entry::Policy(PolicySpec {
                module: ModuleSpec {
                    module: policy.module.clone(),
                    settings: policy.settings.clone(),
                    context_aware_resources: context_aware.iter().map(host_resource).collect(),
                    timeout_eval_seconds: seconds(webhook.timeout_eval_seconds),
                    host_capabilities: capabilities,
                },
                policy_mode: mode(webhook.mode),
                allowed_to_mutate: policy.mutating,
                message: policy.message.clone(),
                namespaced_name,
            }),
            Runs::Group(group) => Entry::Group(GroupSpec {
                policy_mode: mode(webhook.mode),
                policies: group
                    .policies
                    .iter()
                    .map(|(name, member)| {
                        let spec = ModuleSpec {
                            module: member.module.clone(),
                            settings: member.settings.clone(),
                            context_aware_resources: member
                                .context_aware_resources
                                .iter()
                                .map(host_resource)
                                .collect(),
                            timeout_eval_seconds: seconds(member.timeout_eval_seconds),
                            host_capabilities: capabilities.clone(),
                        };
                        (name.clone(), spec)
                    })
                    .collect(),
                expression: group.expression.clone(),
                message: group.message.clone(),
                namespaced_name,
            }),
        }
    }

    /// The namespaces the webhook sees. Cluster-wide policies never see the
    /// engine's own namespace (a broken policy must not lock the operator
    /// out of fixing it); namespaced policies see only their own.
    fn namespace_selector(&self, engine_namespace: &str) -> LabelSelector {
        if Self::NAMESPACED {
            return LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: NAMESPACE_NAME_LABEL.into(),
                    operator: "In".into(),
                    values: Some(vec![self.namespace().unwrap_or_default()]),
                }]),
                match_labels: None,
            };
        }
        let mut selector = self.user_namespace_selector().cloned().unwrap_or_default();
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

    /// An Api that can get, patch and finalize this object.
    fn object_api(&self, client: Client) -> Api<Self>;
}

fn mode(mode: PolicyMode) -> config::PolicyMode {
    match mode {
        PolicyMode::Protect => config::PolicyMode::Protect,
        PolicyMode::Monitor => config::PolicyMode::Monitor,
    }
}

/// The CRDs hold seconds as Kubernetes integers (at least 1, by schema).
fn seconds(value: Option<i32>) -> Option<u64> {
    value.and_then(|s| u64::try_from(s).ok())
}

fn host_resource(resource: &ContextAwareResource) -> config::ContextAwareResource {
    config::ContextAwareResource {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    }
}

/// The trait for one kind: its scope (`cluster` or `namespaced`), what it
/// runs and its user namespace selector, read from its spec.
macro_rules! policy_kind {
    ($kind:ident, $scope:ident, runs: |$spec:ident| $runs:expr, selector: |$s:ident| $selector:expr) => {
        impl PolicyResource for $kind {
            const KIND: &'static str = stringify!($kind);
            const NAMESPACED: bool = policy_kind!(@namespaced $scope);
            fn webhook(&self) -> &WebhookFields {
                &self.spec.webhook
            }
            fn runs(&self) -> Runs<'_> {
                let $spec = &self.spec;
                $runs
            }
            fn status(&self) -> Option<&PolicyStatus> {
                self.status.as_ref()
            }
            fn user_namespace_selector(&self) -> Option<&LabelSelector> {
                let $s = &self.spec;
                $selector
            }
            fn object_api(&self, client: Client) -> Api<Self> {
                policy_kind!(@api $scope, self, client)
            }
        }
    };
    (@namespaced cluster) => { false };
    (@namespaced namespaced) => { true };
    (@api cluster, $self:ident, $client:ident) => { Api::all($client) };
    (@api namespaced, $self:ident, $client:ident) => {
        Api::namespaced($client, &$self.namespace().unwrap_or_default())
    };
}

policy_kind!(ClusterAdmissionPolicy, cluster,
    runs: |spec| Runs::Single {
        policy: &spec.policy,
        context_aware: &spec.context_aware_resources,
    },
    selector: |spec| spec.namespace_selector.as_ref());
policy_kind!(AdmissionPolicy, namespaced,
    runs: |spec| Runs::Single {
        policy: &spec.policy,
        context_aware: &[],
    },
    selector: |_spec| None);
policy_kind!(ClusterAdmissionPolicyGroup, cluster,
    runs: |spec| Runs::Group(&spec.group),
    selector: |spec| spec.namespace_selector.as_ref());
policy_kind!(AdmissionPolicyGroup, namespaced,
    runs: |spec| Runs::Group(&spec.group),
    selector: |_spec| None);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let entry = serde_json::to_value(ap.entry(&["net/*".to_owned()])).unwrap();
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
        let config = config::PoliciesConfig {
            entries: [("g".to_owned(), capg.entry(&[]))].into(),
        };
        let config = config::PoliciesConfig::parse(&config.to_text(), "test").unwrap();
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
