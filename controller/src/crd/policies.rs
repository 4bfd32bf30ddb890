//! ClusterAdmissionPolicy, AdmissionPolicy and their groups.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MatchCondition, RuleWithOperations};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::{
    default_policy_server, default_timeout_seconds, default_true, empty_settings, free_form_object,
    ContextAwareResource, PolicyMode, PolicyStatus,
};

/// The webhook-facing fields every policy kind has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookFields {
    /// The PolicyServer that runs the policy. Immutable.
    #[serde(default = "default_policy_server")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "policyServer is immutable"}]))]
    pub policy_server: String,
    /// `protect` or `monitor`; a policy cannot go from protect to monitor.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "oldSelf != 'protect' || self == 'protect'", "message": "mode cannot change from protect to monitor"}]))]
    pub mode: PolicyMode,
    /// The requests the webhook receives.
    #[serde(default)]
    pub rules: Vec<RuleWithOperations>,
    /// `Fail` or `Ignore`.
    #[schemars(extend("enum" = ["Fail", "Ignore"]))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<String>,
    /// `Exact` or `Equivalent`.
    #[schemars(extend("enum" = ["Exact", "Equivalent"]))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_conditions: Vec<MatchCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,
    /// `None` or `NoneOnDryRun`.
    #[schemars(extend("enum" = ["None", "NoneOnDryRun", "Some", "Unknown"]))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effects: Option<String>,
    /// Webhook timeout, 2 to 30 seconds.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_seconds: i32,
    /// Deadline of one evaluation in the policy server.
    #[schemars(range(min = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_eval_seconds: Option<i32>,
    /// Whether the audit scanner evaluates existing resources.
    #[serde(default = "default_true")]
    pub background_audit: bool,
}

/// What a single policy runs, the same in both single-policy kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFields {
    /// Where the module is (`registry://...`, `https://...`, `file://...`).
    pub module: String,
    /// The policy's settings, checked by the policy before its webhook is registered.
    #[serde(default = "empty_settings")]
    #[schemars(schema_with = "free_form_object")]
    pub settings: serde_json::Value,
    /// Whether the policy may change the objects it admits.
    #[serde(default)]
    pub mutating: bool,
    /// Replaces the policy's rejection message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a policy group runs, the same in both group kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupFields {
    /// The members, by the name the expression calls them with.
    pub policies: BTreeMap<String, PolicyGroupMember>,
    /// Boolean expression over member calls: `a() && (b() || !c())`.
    #[schemars(length(min = 1))]
    pub expression: String,
    /// The rejection message.
    #[schemars(length(min = 1))]
    pub message: String,
}

/// A cluster-wide policy (id `clusterwide-<name>`).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1",
    kind = "ClusterAdmissionPolicy",
    shortname = "cap",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Policy Server","type":"string","jsonPath":".spec.policyServer"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.policyStatus"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAdmissionPolicySpec {
    #[serde(flatten)]
    pub policy: PolicyFields,
    #[serde(flatten)]
    pub webhook: WebhookFields,
    /// The namespaces the policy sees (the engine's own is always excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The resource types the policy may read from the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
}

/// A policy confined to its namespace (id `namespaced-<ns>-<name>`).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1",
    kind = "AdmissionPolicy",
    namespaced,
    shortname = "ap",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Policy Server","type":"string","jsonPath":".spec.policyServer"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.policyStatus"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionPolicySpec {
    #[serde(flatten)]
    pub policy: PolicyFields,
    #[serde(flatten)]
    pub webhook: WebhookFields,
}

/// A member of a policy group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroupMember {
    /// Where the module is (`registry://...`, `https://...`, `file://...`).
    pub module: String,
    #[serde(default = "empty_settings")]
    #[schemars(schema_with = "free_form_object")]
    pub settings: serde_json::Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
    #[schemars(range(min = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_eval_seconds: Option<i32>,
}

/// A cluster-wide group of policies combined by an expression (id `clusterwide-group-<name>`).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1",
    kind = "ClusterAdmissionPolicyGroup",
    shortname = "capg",
    status = "PolicyStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAdmissionPolicyGroupSpec {
    #[serde(flatten)]
    pub group: GroupFields,
    #[serde(flatten)]
    pub webhook: WebhookFields,
    /// The namespaces the group sees (the engine's own is always excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// A namespaced group of policies (id `namespaced-group-<ns>-<name>`).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policies.kubewarden.io",
    version = "v1",
    kind = "AdmissionPolicyGroup",
    namespaced,
    shortname = "apg",
    status = "PolicyStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionPolicyGroupSpec {
    #[serde(flatten)]
    pub group: GroupFields,
    #[serde(flatten)]
    pub webhook: WebhookFields,
}
